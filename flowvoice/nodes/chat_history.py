"""Conversation history shared by the LLM nodes: chat messages or a few-shot completion prompt.

Only what the assistant actually said is kept: a reply cut short by an interruption is
recorded as far as it got (or as far as the user heard it) and rendered with a trailing
"..." so the model can tell it was cut off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Default system prompt: short spoken answers.
SYSTEM_PROMPT = (
    "The following is a conversation with a friendly voice assistant. "
    "The assistant answers in one short sentence."
)
#: Example exchanges that open a completion prompt (a base model needs them to answer).
FEW_SHOT: tuple[tuple[str, str], ...] = (
    ("What is the capital of Germany?", "The capital of Germany is Berlin."),
    ("Can you set an alarm for seven?", "Sure, your alarm is set for seven o'clock."),
)
CUT = "..."


@dataclass
class ChatMessage:
    role: Literal["user", "assistant"]
    content: str
    interrupted: bool = False
    #: The session turn of an assistant reply (to look up what of it the user heard).
    turn: int | None = None

    @property
    def rendered(self) -> str:
        """The content as the model sees it (an interrupted reply ends in "...")."""
        if not self.interrupted:
            return self.content
        return self.content.rstrip(" ,.;:!?") + CUT if self.content.strip() else CUT


class ChatHistory:
    """A system prompt and alternating user / assistant messages (the last ``max_turns``)."""

    def __init__(self, system_prompt: str = SYSTEM_PROMPT, max_turns: int = 8):
        self.system_prompt = system_prompt
        self.max_turns = max_turns
        self.messages: list[ChatMessage] = []

    def add_user(self, text: str) -> None:
        self.messages.append(ChatMessage("user", text.strip()))
        users = [i for i, m in enumerate(self.messages) if m.role == "user"]
        if len(users) > self.max_turns:
            del self.messages[: users[-self.max_turns]]

    def add_assistant(self, text: str, interrupted: bool = False, turn: int | None = None) -> None:
        self.messages.append(ChatMessage("assistant", text.strip(), interrupted, turn))

    def cut_last_reply(self, heard: str) -> None:
        """The user interrupted the last reply after hearing ``heard`` of it."""
        if self.messages and self.messages[-1].role == "assistant":
            self.cut_reply(len(self.messages) - 1, heard)

    def cut_reply(self, index: int, heard: str) -> None:
        """The reply at ``index`` was heard as far as ``heard``."""
        message = self.messages[index]
        self.messages[index] = ChatMessage("assistant", heard.strip(), True, message.turn)

    def drop_last_exchange(self) -> None:
        """Forget the last user message and the reply after it (a cancelled speculation)."""
        while self.messages:
            if self.messages.pop().role == "user":
                break

    def chat_messages(self) -> list[dict[str, str]]:
        """OpenAI-style messages: the system prompt, then the conversation."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return system + [{"role": m.role, "content": m.rendered} for m in self.messages]

    def completion_prompt(
        self,
        examples: tuple[tuple[str, str], ...] = FEW_SHOT,
        user: str = "User",
        assistant: str = "Assistant",
    ) -> str:
        """A transcript prompt for a base model, ending with ``"Assistant:"`` to complete."""
        lines = [self.system_prompt, ""] if self.system_prompt else []
        for question, answer in examples:
            lines += [f"{user}: {question}", f"{assistant}: {answer}"]
        for message in self._completion_messages():
            speaker = user if message.role == "user" else assistant
            lines.append(f"{speaker}: {' '.join(message.rendered.split())}")
        lines.append(f"{assistant}:")
        return "\n".join(lines)

    def completion_opening(self, words: str) -> str:
        """:meth:`completion_prompt` as it will open once the user has said ``words`` (their
        words so far, closing punctuation dropped), before the assistant's cue."""
        ahead = ChatHistory(self.system_prompt, self.max_turns)
        ahead.messages = list(self.messages)
        ahead.add_user(words.rstrip(" .?!,"))
        prompt = ahead.completion_prompt()
        return prompt[: prompt.rindex("\n")]

    def _completion_messages(self) -> list[ChatMessage]:
        """The messages a completion prompt shows: an interrupted exchange only if it is the
        latest and part of the reply was heard. A small base model takes cut replies as the
        pattern to follow (after two, gemma3-270m answers "The capital of..." itself)."""
        messages = self.messages
        replies = [index for index, m in enumerate(messages) if m.role == "assistant"]
        latest = replies[-1] if replies else None
        hidden: set[int] = set()
        for index, message in enumerate(messages):
            if message.interrupted and (index != latest or not message.content):
                hidden.add(index)
                if index and messages[index - 1].role == "user":
                    hidden.add(index - 1)
        return [m for index, m in enumerate(messages) if index not in hidden]

    @staticmethod
    def completion_stop(user: str = "User") -> list[str]:
        """Stop strings for :meth:`completion_prompt`: the next user line or a newline."""
        return [f"\n{user}:", "\n"]
