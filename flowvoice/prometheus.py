"""Server metrics in the Prometheus text exposition format (written by hand, no dependency)."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable

from flowvoice.runtime.trace import STAGES

#: Histogram bucket upper bounds, in seconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class Histogram:
    """Cumulative-bucket histogram of one series."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1


class ServerMetrics:
    """Counters of one server: sessions, turns, stage latencies, drops, errors.

    Per-session counters (edge drops, protocol errors) are added when a session ends; live
    sessions are passed to :meth:`render` so a scrape also sees their current values.
    """

    def __init__(self) -> None:
        self.sessions_active = 0
        self.sessions_total = 0
        self.turns_total = 0
        self.latency = {stage: Histogram() for stage in STAGES[1:]}
        self.edge_drops: Counter[str] = Counter()
        self.input_drops = 0
        self.protocol_errors: Counter[str] = Counter()
        self.session_errors: Counter[str] = Counter()

    def observe_event(self, event: dict) -> None:
        """Count a session event (turns, per-turn latencies)."""
        kind = event.get("type")
        if kind == "user_turn":
            self.turns_total += 1
        elif kind == "metrics":
            for stage, ms in event.get("latency_ms", {}).items():
                if stage in self.latency:
                    self.latency[stage].observe(ms / 1000)

    def render(self, live: Iterable[tuple[dict[str, int], int, Counter[str]]] = ()) -> str:
        """The exposition text; ``live`` holds (edge drops, input drops, protocol errors)."""
        edge_drops, protocol_errors = Counter(self.edge_drops), Counter(self.protocol_errors)
        input_drops = self.input_drops
        for drops, dropped_input, errors in live:
            edge_drops.update(drops)
            input_drops += dropped_input
            protocol_errors.update(errors)
        out: list[str] = []
        _metric(out, "sessions_active", "gauge", "WebSocket sessions running now.")
        out.append(f"flowvoice_sessions_active {self.sessions_active}")
        _metric(out, "sessions_total", "counter", "WebSocket sessions started.")
        out.append(f"flowvoice_sessions_total {self.sessions_total}")
        _metric(out, "turns_total", "counter", "User turns committed.")
        out.append(f"flowvoice_turns_total {self.turns_total}")
        name = "flowvoice_stage_latency_seconds"
        _metric(out, "stage_latency_seconds", "histogram", "Time from speech end to each stage.")
        for stage, hist in self.latency.items():
            cumulative = 0
            for bound, count in zip((*hist.buckets, float("inf")), hist.counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                out.append(f'{name}_bucket{{stage="{stage}",le="{le}"}} {cumulative}')
            out.append(f'{name}_sum{{stage="{stage}"}} {hist.sum:.6f}')
            out.append(f'{name}_count{{stage="{stage}"}} {hist.count}')
        _metric(out, "edge_dropped_frames_total", "counter", "Frames dropped by edge overflow.")
        _labelled(out, "edge_dropped_frames_total", "edge", edge_drops)
        _metric(out, "input_dropped_chunks_total", "counter", "Client audio dropped (slow source).")
        out.append(f"flowvoice_input_dropped_chunks_total {input_drops}")
        _metric(out, "protocol_errors_total", "counter", "Malformed client messages by code.")
        _labelled(out, "protocol_errors_total", "code", protocol_errors)
        _metric(out, "session_errors_total", "counter", "Sessions ended by a failing node.")
        _labelled(out, "session_errors_total", "node", self.session_errors)
        return "\n".join(out) + "\n"


def _metric(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP flowvoice_{name} {help_text}")
    out.append(f"# TYPE flowvoice_{name} {kind}")


def _labelled(out: list[str], name: str, label: str, values: Counter[str]) -> None:
    for key, value in sorted(values.items()):
        out.append(f'flowvoice_{name}{{{label}="{escape_label(key)}"}} {value}')


def escape_label(value: str) -> str:
    """Escape a label value: backslash, double quote and newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
