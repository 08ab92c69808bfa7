"""Runtime semantics: backpressure, overflow policies, preemption, errors, fan-out/fan-in."""

from __future__ import annotations

import asyncio
import time

import anyio
import numpy as np
import pytest
from pydantic import Field

from flowvoice.frames import AudioFrame, Frame, Sentence
from flowvoice.graph.registry import register
from flowvoice.graph.spec import load_graph
from flowvoice.node import Node, NodeParams, Port
from flowvoice.runtime.channel import Channel, Overflow
from flowvoice.runtime.session import Session, SessionError


class CountParams(NodeParams):
    frames: int = Field(10, ge=0)


@register("t.counter")
class CounterSource(Node):
    """Emits numbered frames (the index is in ``samples[0]``) as fast as it may."""

    outputs = {"audio": Port(AudioFrame)}
    Params = CountParams
    params: CountParams

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sent = 0

    async def run(self) -> None:
        for i in range(self.params.frames):
            await self.emit("audio", AudioFrame(samples=np.array([i], np.int16), sample_rate=16000))
            self.sent += 1


@register("t.gated")
class GatedSink(Node):
    """A sink that holds each frame until the test opens its gate."""

    inputs = {"audio": Port(AudioFrame)}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = anyio.Event()
        self.received: list[int] = []

    async def process(self, port: str, frame: Frame) -> None:
        await self.gate.wait()
        assert isinstance(frame, AudioFrame)
        self.received.append(int(frame.samples[0]))


@register("t.slow")
class SlowSpeaker(Node):
    """Preemptible: for each sentence, emits a sentence every 10 ms for a long time."""

    inputs = {"text": Port(Sentence)}
    outputs = {"text": Port(Sentence)}
    preemptible = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.started = anyio.Event()
        self.cancelled_at: float | None = None

    async def process(self, port: str, frame: Frame) -> None:
        self.started.set()
        try:
            for _ in range(1000):
                await self.emit("text", Sentence(text="old"))
                await anyio.sleep(0.01)
        except anyio.get_cancelled_exc_class():
            self.cancelled_at = time.perf_counter()
            raise


@register("t.fail")
class Failing(Node):
    """Raises on its third frame."""

    inputs = {"audio": Port(AudioFrame)}

    async def process(self, port: str, frame: Frame) -> None:
        assert isinstance(frame, AudioFrame)
        if frame.samples[0] == 2:
            raise ValueError("boom on frame 2")


def session_of(yaml_text: str) -> Session:
    return Session(load_graph("test.yaml", text=yaml_text))


async def wait_until(predicate, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


# -- channels ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overflow", "kept", "dropped"),
    [("drop_oldest", [6, 7, 8, 9], 6), ("drop_newest", [0, 1, 2, 3], 6)],
)
def test_channel_overflow_policies_drop_and_count(overflow, kept, dropped):
    async def main():
        channel: Channel[int] = Channel(4, Overflow(overflow))
        for i in range(10):
            await channel.send(i)
        assert channel.dropped == dropped
        return channel.drain()

    assert anyio.run(main) == kept


def test_channel_block_waits_for_room():
    async def main():
        channel: Channel[int] = Channel(2)
        sent = []

        async def produce():
            for i in range(5):
                await channel.send(i)
                sent.append(i)

        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            await anyio.sleep(0.05)
            assert sent == [0, 1]  # blocked on the third
            received = [await channel.receive() for _ in range(5)]
        assert received == [0, 1, 2, 3, 4]
        assert channel.dropped == 0

    anyio.run(main)


# -- sessions ----------------------------------------------------------------------------------
def test_backpressure_blocks_fast_producer_at_buffer_size():
    session = session_of(
        """
nodes:
  src: {type: t.counter, params: {frames: 100}}
  sink: {type: t.gated}
edges:
  - {from: src.audio, to: sink.audio, buffer: 4, overflow: block}
"""
    )
    src, sink = session.nodes["src"], session.nodes["sink"]

    async def main():
        async with anyio.create_task_group() as tg:
            tg.start_soon(session.run)
            await wait_until(lambda: src.sent >= 4)
            await anyio.sleep(0.1)
            # 4 queued + 1 held by the sink; the producer waits for room.
            assert src.sent == 5
            assert len(session.edges[0].channel) == 4
            sink.gate.set()
        assert sink.received == list(range(100))

    anyio.run(main)


@pytest.mark.parametrize(
    ("overflow", "expect_first"),
    [("drop_oldest", False), ("drop_newest", True)],
)
def test_overflow_policy_in_a_session_drops_and_counts(overflow, expect_first):
    session = session_of(
        f"""
nodes:
  src: {{type: t.counter, params: {{frames: 50}}}}
  sink: {{type: t.gated}}
edges:
  - {{from: src.audio, to: sink.audio, buffer: 4, overflow: {overflow}}}
"""
    )
    src, sink = session.nodes["src"], session.nodes["sink"]

    async def main():
        async with anyio.create_task_group() as tg:
            tg.start_soon(session.run)
            await wait_until(lambda: src.sent == 50)  # never blocked
            sink.gate.set()

    anyio.run(main)
    drops = session.drops()["src.audio->sink.audio"]
    assert drops == 50 - len(sink.received)
    assert drops >= 40
    assert (sink.received[1] == 1) is expect_first  # frame 0 is held by the sink either way
    if overflow == "drop_oldest":  # the newest four survive
        assert sink.received[-4:] == [46, 47, 48, 49]
    else:  # the first frames the full buffer held survive; the newest are gone
        assert sink.received == list(range(len(sink.received))) and 49 not in sink.received


def test_fan_out_and_fan_in_deliver_every_frame():
    session = session_of(
        """
nodes:
  a: {type: t.counter, params: {frames: 200}}
  b: {type: t.counter, params: {frames: 200}}
  p1: {type: test.passthrough}
  p2: {type: test.passthrough}
  sink: {type: test.collect}
edges:
  - a.audio -> p1.audio
  - a.audio -> p2.audio
  - b.audio -> p2.audio
  - p1.audio -> sink.frames
  - p2.audio -> sink.frames
"""
    )
    anyio.run(session.run)
    values = sorted(int(f.samples[0]) for f in session.nodes["sink"].frames)
    # a's frames reach the sink twice (via p1 and p2), b's once.
    assert values == sorted(list(range(200)) * 3)


def test_node_error_ends_session_naming_node_and_leaves_no_task():
    session = session_of(
        """
nodes:
  src: {type: t.counter, params: {frames: 1000}}
  bad: {type: t.fail}
edges:
  - src.audio -> bad.audio
"""
    )

    async def main():
        before = len(asyncio.all_tasks())
        with pytest.raises(SessionError) as info:
            await session.run()
        await anyio.sleep(0)
        return before, len(asyncio.all_tasks()), info.value

    before, after, error = anyio.run(main)
    assert error.node == "bad"
    assert error.node_type == "t.fail"
    assert "boom on frame 2" in str(error)
    assert after == before


def test_interrupt_cancels_in_flight_work_and_drops_old_turn_frames():
    session = session_of(
        """
nodes:
  src: {type: test.text, params: {sentences: ["hello"]}}
  slow: {type: t.slow}
  sink: {type: test.collect}
edges:
  - src.sentence -> slow.text
  - {from: slow.text, to: sink.frames, buffer: 64}
"""
    )
    slow, sink = session.nodes["slow"], session.nodes["sink"]

    async def main():
        async with anyio.create_task_group() as tg:
            tg.start_soon(session.run)
            await slow.started.wait()
            await anyio.sleep(0.1)
            interrupted_at = time.perf_counter()
            new_turn = await session.new_turn("barge-in")
            await wait_until(lambda: slow.cancelled_at is not None, timeout=5.0)
            count_after_interrupt = len(sink.frames)
            await anyio.sleep(0.2)
            return new_turn, slow.cancelled_at - interrupted_at, count_after_interrupt

    new_turn, cancel_delay, count = anyio.run(main)
    assert new_turn == 1
    assert cancel_delay < 1.0  # at once (uncancelled, the node would go on for 10 s)
    assert 0 < len(sink.frames) <= count  # nothing of turn 0 reached the sink afterwards
    assert all(f.turn == 0 for f in sink.frames)


def test_preemptible_node_drops_frames_of_older_turns_on_read():
    session = session_of(
        """
nodes:
  src: {type: test.text, params: {sentences: ["a", "b", "c"]}}
  sink: {type: audio.file_sink}
  collect: {type: test.collect}
  slow: {type: t.slow}
edges:
  - src.sentence -> slow.text
  - slow.text -> collect.frames
""".replace("  sink: {type: audio.file_sink}\n", "")
    )
    slow = session.nodes["slow"]

    async def main():
        async with anyio.create_task_group() as tg:
            tg.start_soon(session.run)
            await slow.started.wait()
            await session.new_turn()
            await anyio.sleep(0.05)

    anyio.run(main)
    # "b" and "c" (turn 0) were queued when the turn moved on: dropped, never processed.
    assert session.stale_dropped == 2


def test_resource_cache_loads_once_for_concurrent_sessions():
    from flowvoice.runtime.resources import ResourceCache

    cache = ResourceCache()
    calls = []

    def load():
        calls.append(1)
        time.sleep(0.05)
        return object()

    async def main():
        results = []

        async def get():
            results.append(await cache.get(("model", "x"), load, label="x"))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(get)
        return results

    results = anyio.run(main)
    assert len(calls) == 1
    assert all(r is results[0] for r in results)


def test_third_party_nodes_register_through_entry_points(monkeypatch):
    from flowvoice.graph import registry

    class PluginNode(Node):
        """A node from another package."""

        inputs = {"audio": Port(AudioFrame)}

    class FakeEntryPoint:
        name, value = "plugin.sink", "other_pkg:PluginNode"

        def load(self):
            return PluginNode

    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: [FakeEntryPoint()])
    assert registry.get_node_type("plugin.sink") is PluginNode
    graph = load_graph(
        "plugin.yaml",
        text="nodes:\n  s: {type: test.tone}\n  p: {type: plugin.sink}\n"
        "edges:\n  - s.audio -> p.audio\n",
    )
    assert graph.nodes["p"].node_type is PluginNode


def test_runtime_benchmark_runs():
    from flowvoice.bench.runtime import measure

    result = measure(frames=300, latency_frames=30)
    assert result["frames_per_s"] > 0
    assert 0 < result["hop_p50_us"] <= result["hop_p99_us"]


@register("t.hang")
class Hang(Node):
    """Emits once per frame, then hangs forever."""

    inputs = {"audio": Port(AudioFrame)}
    outputs = {"audio": Port(AudioFrame)}

    async def process(self, port: str, frame: Frame) -> None:
        await self.emit("audio", frame)
        await anyio.sleep_forever()


def test_stall_timeout_fails_a_node_that_stops_making_progress():
    session = session_of(
        """
nodes:
  src: {type: t.counter, params: {frames: 3}}
  hang: {type: t.hang, stall_timeout_s: 0.2}
  sink: {type: test.collect}
edges:
  - src.audio -> hang.audio
  - hang.audio -> sink.frames
"""
    )
    start = time.perf_counter()
    with pytest.raises(SessionError) as info:
        anyio.run(session.run)
    assert 0.2 <= time.perf_counter() - start < 5
    assert info.value.node == "hang"
    assert "no progress for 0.2 s while processing AudioFrame" in str(info.value)
    assert len(session.nodes["sink"].frames) == 1


def test_stall_timeout_is_pushed_back_by_each_emit():
    session = session_of(
        """
nodes:
  src: {type: test.text, params: {sentences: ["go"]}}
  slow: {type: t.slow, stall_timeout_s: 0.1}
  sink: {type: test.collect}
edges:
  - src.sentence -> slow.text
  - {from: slow.text, to: sink.frames, buffer: 2000}
"""
    )

    async def main():
        async with anyio.create_task_group() as tg:
            tg.start_soon(session.run)
            await anyio.sleep(0.5)  # 50 emits, 10 ms apart: never stalled
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert len(session.nodes["sink"].frames) >= 20
