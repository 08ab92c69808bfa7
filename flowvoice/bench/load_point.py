"""One point of ``flowvoice bench load`` (a graph at a session count) and its percentiles;
shared by the benchmark (load) and its charts (load_plot)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from flowvoice.bench.load_client import Exchange
from flowvoice.runtime.trace import STAGES


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile by nearest rank (the smallest value with at least ``q`` % of
    the values at or below it; never interpolated, so an infinite value may be it)."""
    return float(np.percentile(values, q, method="inverted_cdf")) if len(values) else float("nan")


@dataclass
class Point:
    """One graph at one session count."""

    graph: str
    sessions: int
    questions: int
    exchanges: list[Exchange] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rss_idle_mb: float = 0.0
    rss_peak_mb: float = 0.0
    server_cpu: float = 0.0
    """Share of the machine's CPU (all cores) the server used during the run."""
    client_cpu: float = 0.0
    """Share the load clients (this process) used."""
    other_cpu: float = 0.0
    """Share every other process used: a disturbed run when high."""
    load_avg: float = 0.0
    """1-minute load average at the end of the run."""
    seconds: float = 0.0

    @property
    def answered(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.client_ms is not None]

    def client_ms(self) -> list[float]:
        """Client voice-to-voice per question asked, unanswered ones as infinity."""
        asked = self.sessions * self.questions
        found = [e.client_ms for e in self.exchanges if e.client_ms is not None]
        return found + [float("inf")] * (asked - len(found))

    def server_ms(self) -> list[float]:
        return [e.latency_ms["first_audio_sent"] for e in self.answered if e.latency_ms]

    def client_percentile(self, q: float) -> float:
        return percentile(self.client_ms(), q)

    def p95_ms(self) -> float:
        return self.client_percentile(95)

    def stage_p50(self) -> dict[str, float]:
        """p50 ms from end of speech to each stage of the server's trace."""
        found = {s: [e.latency_ms[s] for e in self.answered if s in e.latency_ms] for s in STAGES}
        return {stage: percentile(values, 50) for stage, values in found.items() if values}
