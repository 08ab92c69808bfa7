"""flowvoice bench backchannels: what barge-in takes for a backchannel, and a tiny real run."""

from __future__ import annotations

import pytest

from flowvoice.bench.backchannels import heard_as_backchannel, measure
from flowvoice.bench.turns_corpus import Voice


@pytest.mark.parametrize(
    "text",
    ["", "Mm-hmm.", "Yeah, yeah.", "Uh-huh, I see.", "MMM.", "Mm-h-n.", "M-H-M", "Mm-h and Mm-h."],
)
def test_backchannels_and_nothing_are_taken_for_a_backchannel(text):
    assert heard_as_backchannel(text)


@pytest.mark.parametrize(
    "text", ["Amen.", "Stop.", "No.", "yeah but what about Rome", "And then what?"]
)
def test_words_and_interrupt_words_are_not(text):
    assert not heard_as_backchannel(text)


def test_a_tiny_real_run_counts_each_clip_with_each_prompt():
    groups = (("worded backchannels", ("yeah",), True), ("interruptions", ("stop",), False))
    rows = measure(groups, (Voice("piper-joe", "piper"),), progress=False)
    assert [(r.group, r.clips) for r in rows] == [("worded backchannels", 1), ("interruptions", 1)]
    assert rows[0].backchannels == [1, 1], "Piper's 'yeah' is heard as one, prompted or not"
    assert rows[1].backchannels == [0, 0], "and 'stop' is an interruption either way"
