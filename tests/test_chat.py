"""``flowvoice chat`` as a user runs it: two spoken questions in, two spoken replies out."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from harness import final_texts, transcribe
from speech_audio import conversation, read_wav, wer, write_wav

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ("What is the capital of France?", "What is the capital of Germany?")


def test_chat_answers_two_questions_with_history_and_writes_the_replies(tmp_path: Path):
    question_wav, reply_wav = tmp_path / "questions.wav", tmp_path / "reply.wav"
    samples, _ = conversation(list(QUESTIONS), gap_s=6.0, sample_rate=16000)
    write_wav(question_wav, samples, 16000)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowvoice",
            "chat",
            str(ROOT / "graphs" / "default.yaml"),
            "--input",
            str(question_wav),
            "--output",
            str(reply_wav),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    users = re.findall(r"^you \[\d+\]: (.+)$", out, re.M)
    replies = re.findall(r"^assistant: (.+)$", out, re.M)
    assert len(users) == 2 and len(replies) == 2, out
    for question, heard in zip(QUESTIONS, users, strict=True):
        assert wer(question, heard) <= 0.15, (question, heard)
    assert all(reply.strip() for reply in replies)
    assert "latency from end of speech (ms)" in out
    assert re.search(r"^\s+latency: final_transcript \d+ ms", out, re.M)

    audio, rate = read_wav(reply_wav)
    assert len(audio) / rate > 1.0
    heard_back = " ".join(final_texts(anyio.run(transcribe, audio, rate)))
    assert wer(" ".join(replies), heard_back) <= 0.25, (replies, heard_back)


def test_latency_line_follows_the_reply_text_even_when_metrics_come_first(capsys):
    from flowvoice.console import EventPrinter

    printer = EventPrinter()
    latency = {"first_audio_sent": 512.0}
    printer({"type": "user_turn", "turn": 3, "text": "Hi?"})
    printer({"type": "assistant_text", "turn": 3, "text": "Hello", "final": False})
    printer({"type": "metrics", "turn": 3, "latency_ms": latency})  # first audio went out
    printer({"type": "assistant_text", "turn": 3, "text": " there.", "final": False})
    printer({"type": "assistant_text", "turn": 3, "text": "", "final": True})
    printer({"type": "metrics", "turn": 2, "latency_ms": latency})  # no open reply: at once
    assert capsys.readouterr().out == (
        "\nyou [3]: Hi?\nassistant: Hello there.\n"
        "  latency: first_audio_sent 512 ms\n  latency: first_audio_sent 512 ms\n"
    )


IO_GRAPH = """\
name: io
nodes:
  mic: {type: test.tone}
  p: {type: test.passthrough}
  out: {type: websocket.sink}
edges:
  - mic.audio -> p.audio
  - p.audio -> out.audio
"""


def test_replace_io_finds_the_audio_source_and_sink_by_what_they_are():
    from flowvoice.chat import with_file_io
    from flowvoice.graph.spec import load_graph

    graph = with_file_io(load_graph("<test>", text=IO_GRAPH), "in.wav", "out.wav")
    types = {name: node.type_name for name, node in graph.nodes.items()}
    assert types == {"mic": "audio.file_source", "p": "test.passthrough", "out": "audio.file_sink"}
    assert graph.nodes["mic"].params.path == "in.wav"


def test_replace_io_says_what_it_needs_and_what_it_found():
    from flowvoice.chat import with_file_io
    from flowvoice.graph.spec import load_graph

    text = IO_GRAPH.replace("{type: websocket.sink}", "{type: test.collect}")
    text = text.replace("p.audio -> out.audio", "p.audio -> out.frames")
    with pytest.raises(ValueError) as error:
        with_file_io(load_graph("<test>", text=text), "in.wav")
    message = str(error.value)
    assert "needs exactly one audio source" in message
    assert "websocket.source" in message and "audio.file_sink or websocket.sink" in message
    assert message.endswith("found sources: mic (test.tone); sinks: none")
