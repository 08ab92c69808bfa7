"""``flowvoice bench e2e`` measures each graph in a process of its own, as it would be served."""

from __future__ import annotations

from flowvoice.bench import e2e


def test_a_graph_is_measured_in_its_own_process(own_resources):
    answered, rss_mb = e2e.measure_apart("default", 1)
    assert answered and answered[0].assistant.strip()
    assert "first_audio_sent" in answered[0].latency_ms
    assert rss_mb > 100 and len(own_resources) == 0  # its engines loaded over there
