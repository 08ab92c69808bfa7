"""The conversation layer: what makes a session a spoken conversation.

Between the runtime (channels, turns, preemption) and the nodes. One :class:`Conversation`
per session holds the playback ledger (what was said and heard), the assistant's voice gate
and the speculative turns whose output is held; the policies that decide about turns are
small objects beside it: :mod:`~flowvoice.conversation.bargein` (does speech during the
reply interrupt it?) and :mod:`~flowvoice.conversation.speculation` (start the reply before
the turn commits). End-of-turn detection is a node (``flowvoice.nodes.turn``) that uses them.
"""

from flowvoice.conversation.state import Conversation

__all__ = ["Conversation"]
