"""``flowvoice bench e2e`` measures each graph in a process of its own, as it would be served."""

from __future__ import annotations

from flowvoice.bench import e2e
from flowvoice.chat import ChatTurn


def test_a_graph_is_measured_in_its_own_process(own_resources):
    answered, rss_mb = e2e.measure_apart("default", e2e.QUESTIONS[:1])
    assert answered and answered[0].assistant.strip()
    assert "first_audio_sent" in answered[0].latency_ms
    assert rss_mb > 100 and len(own_resources) == 0  # its engines loaded over there


def test_the_comparison_shows_the_first_sentence_synthesis_of_longer_replies():
    def turn(reply: str, sentence_ms: float, audio_ms: float) -> ChatTurn:
        stages = {"first_sentence": sentence_ms, "first_audio": audio_ms, "first_audio_sent": 600}
        return ChatTurn(1, "Tell me about the moon.", reply, stages)

    turns = {
        "old.yaml": [turn("It is round. It is grey.", 400, 800), turn("Yes.", 400, 450)],
        "new.yaml": [turn("It is round. It is grey.", 400, 550), turn("Yes.", 400, 450)],
    }
    table = e2e.compare_table(turns, 2, "test machine", markdown=True)
    row = next(line for line in table.splitlines() if "2+ sentence replies" in line)
    assert row.split("|")[2:4] == [" 400 ", " 150 "], table
