"""``flowvoice bench runtime``: 20 ms audio frames through an 8-node passthrough chain.

Two phases on the same graph shape:
- throughput: the source pushes frames as fast as the chain takes them (backpressure on);
- latency: one frame at a time, so the per-hop figure is the runtime's hand-off cost, not
  queueing (end-to-end latency divided by the number of hops).
"""

from __future__ import annotations

import platform
import time

import anyio
import numpy as np
from pydantic import Field

from flowvoice.frames import AudioFrame, Frame
from flowvoice.graph.registry import register
from flowvoice.graph.spec import load_graph
from flowvoice.node import Node, NodeParams, Port
from flowvoice.runtime.session import Session
from flowvoice.testing import register_nodes

STAGES = 8
HOPS = STAGES + 1  # edges between source, 8 passthrough nodes and the sink


class BenchSourceParams(NodeParams):
    frames: int = Field(1000, ge=1)
    one_at_a_time: bool = Field(False, description="Wait for each frame to reach the sink.")


@register("bench.source")
class BenchSource(Node):
    """Pushes 20 ms 16 kHz frames, back to back or one at a time."""

    outputs = {"audio": Port(AudioFrame)}
    Params = BenchSourceParams
    params: BenchSourceParams

    async def run(self) -> None:
        samples = np.zeros(320, np.int16)
        sink = self.context.service(_Probe)
        for _ in range(self.params.frames):
            await self.emit("audio", AudioFrame(samples=samples, sample_rate=16000))
            if self.params.one_at_a_time:
                await sink.arrived.wait()
                sink.arrived = anyio.Event()


@register("bench.sink")
class BenchSink(Node):
    """Records each frame's age on arrival."""

    inputs = {"audio": Port(Frame)}

    async def process(self, port: str, frame: Frame) -> None:
        probe = self.context.service(_Probe)
        probe.latencies_ns.append(time.monotonic_ns() - frame.t_ns)
        probe.arrived.set()


class _Probe:
    def __init__(self) -> None:
        self.latencies_ns: list[int] = []
        self.arrived = anyio.Event()


def chain_yaml(frames: int, one_at_a_time: bool) -> str:
    names = [f"p{i}" for i in range(STAGES)]
    flag = str(one_at_a_time).lower()
    nodes = [f"  src: {{type: bench.source, params: {{frames: {frames}, one_at_a_time: {flag}}}}}"]
    nodes += [f"  {n}: {{type: test.passthrough}}" for n in names]
    nodes.append("  sink: {type: bench.sink}")
    chain = ["src", *names, "sink"]
    edges = [f"  - {a}.audio -> {b}.audio" for a, b in zip(chain, chain[1:], strict=False)]
    return "name: bench-chain\nnodes:\n" + "\n".join(nodes) + "\nedges:\n" + "\n".join(edges) + "\n"


async def _run_chain(frames: int, one_at_a_time: bool) -> tuple[float, list[int]]:
    register_nodes()  # test.passthrough
    graph = load_graph("<bench>", text=chain_yaml(frames, one_at_a_time))
    probe = _Probe()
    session = Session(graph, services=[probe])
    start = time.perf_counter()
    await session.run()
    return time.perf_counter() - start, probe.latencies_ns


def measure(frames: int = 20000, latency_frames: int = 2000) -> dict[str, float]:
    """Throughput (frames/s through the chain) and per-hop latency percentiles (µs)."""
    anyio.run(_run_chain, 500, False)  # warm-up
    elapsed, _ = anyio.run(_run_chain, frames, False)
    _, latencies = anyio.run(_run_chain, latency_frames, True)
    per_hop_us = np.array(latencies) / HOPS / 1000
    return {
        "frames": frames,
        "frames_per_s": frames / elapsed,
        "hop_p50_us": float(np.percentile(per_hop_us, 50)),
        "hop_p99_us": float(np.percentile(per_hop_us, 99)),
    }


def main(frames: int = 20000, markdown: bool = False) -> int:
    result = measure(frames)
    machine = (
        f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    )
    rows = [
        ("throughput through the 8-node chain", f"{result['frames_per_s']:,.0f} frames/s"),
        ("per-hop latency p50", f"{result['hop_p50_us']:.1f} µs"),
        ("per-hop latency p99", f"{result['hop_p99_us']:.1f} µs"),
    ]
    if markdown:
        print(f"| runtime ({frames} frames of 20 ms, {machine}) | value |\n|---|---|")
        for name, value in rows:
            print(f"| {name} | {value} |")
    else:
        print(f"runtime benchmark: {frames} frames of 20 ms, 8 passthrough stages ({machine})")
        for name, value in rows:
            print(f"  {name:<38} {value}")
    return 0
