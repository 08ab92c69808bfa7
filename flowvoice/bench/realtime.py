"""``flowvoice bench realtime``: voice-to-voice over ``/ws`` and ``/v1/realtime``, one server.

One ``flowvoice run GRAPH`` on 127.0.0.1 serves both. For every question (espeak-ng speech at
24 kHz, streamed in real time in 20 ms messages, then silence), a fresh connection of each
protocol asks it, alternating so both see the same load: the browser protocol through a
WebSocket client (``hello`` at 24 kHz, binary PCM), the Realtime API through the ``openai``
SDK (``input_audio_buffer.append``). Each client times the end of the streamed speech to the
first reply audio it receives (a binary message; the first ``response.output_audio.delta``).

On a busy machine those times vary by seconds (Whisper, Smart Turn, the LLM and TTS share
the CPU), which hides what the protocol itself costs. So the server's own voice-to-voice of
each exchange (speech end -> first audio sent, the ``first_audio_sent`` stage, read from
``/metrics`` before and after) is subtracted from the client's: what is left is the way
from the sink to the client (and the constant gap between the two ends of speech), the
same pipeline for both protocols, so its p50 difference is what the Realtime path adds.
The benchmark also times the protocol's own work: encoding one 40 ms slice of the sink's
audio (22.05 kHz Piper) as a ``/ws`` binary message and as a
``response.output_audio.delta`` event (resampled to 24 kHz, base64, JSON).
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import platform
import re
import tempfile
import time
import timeit
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from flowvoice.bench.e2e import QUESTIONS, speak
from flowvoice.graph.spec import load_graph
from flowvoice.nodes.audio import Resampler
from flowvoice.realtime_api.driver import RealtimeDriver
from flowvoice.runtime.session import Session
from flowvoice.testing.server_process import running_server
from flowvoice.transport import encode_audio

RATE = 24000
CHUNK = RATE // 50  # 20 ms
#: Silence streamed after the question: time for the turn to commit and the reply to start.
TAIL_S = 6.0
REPLY_TIMEOUT_S = 120.0
#: The sink sends audio in slices of this many ms (``flowvoice.nodes.speaker.SLICE_MS``).
SLICE_MS = 40


def question_audio(text: str) -> tuple[np.ndarray, int]:
    """The question at 24 kHz with 0.3 s of silence before it and ``TAIL_S`` after it, and
    the index of the sample where its speech ends."""
    speech = Resampler(16000, RATE)(speak(text), last=True)
    lead, tail = np.zeros(int(0.3 * RATE), np.int16), np.zeros(int(TAIL_S * RATE), np.int16)
    return np.concatenate([lead, speech, tail]), len(lead) + len(speech)


async def _stream(send, samples: np.ndarray, speech_end: int) -> float:
    """Send ``samples`` in real time; returns when the end of the speech was sent."""
    start, spoken_at = time.monotonic(), 0.0
    for index, offset in enumerate(range(0, len(samples), CHUNK)):
        await send(samples[offset : offset + CHUNK])
        if offset < speech_end <= offset + CHUNK:
            spoken_at = time.monotonic()
        await asyncio.sleep(max(0.0, start + (index + 1) * 0.02 - time.monotonic()))
    return spoken_at


async def ws_voice_to_voice(port: int, samples: np.ndarray, speech_end: int) -> float:
    """End of speech -> first reply audio over ``/ws``, in ms."""
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{port}/ws", proxy=None) as socket:
        await socket.send(json.dumps({"type": "hello", "sample_rate": RATE}))

        async def send(chunk: np.ndarray) -> None:
            await socket.send(chunk.astype("<i2").tobytes())

        async def first_audio() -> float:
            while True:
                if isinstance(await socket.recv(), bytes):
                    return time.monotonic()

        waiting = asyncio.create_task(first_audio())
        spoken_at = await _stream(send, samples, speech_end)
        return (await asyncio.wait_for(waiting, REPLY_TIMEOUT_S) - spoken_at) * 1000


async def realtime_voice_to_voice(port: int, samples: np.ndarray, speech_end: int) -> float:
    """End of speech -> first ``response.output_audio.delta`` over ``/v1/realtime``, in ms."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(
        api_key="not-needed",
        base_url=f"http://127.0.0.1:{port}/v1",
        websocket_base_url=f"ws://127.0.0.1:{port}/v1",
    )
    async with client.realtime.connect(
        model="flowvoice", websocket_connection_options={"proxy": None}
    ) as connection:

        async def send(chunk: np.ndarray) -> None:
            audio = base64.b64encode(chunk.astype("<i2").tobytes()).decode()
            await connection.input_audio_buffer.append(audio=audio)

        async def first_audio() -> float:
            while True:  # the raw events, as cheap to read as /ws's binary messages
                if (
                    json.loads(await connection.recv_bytes())["type"]
                    == "response.output_audio.delta"
                ):
                    return time.monotonic()

        waiting = asyncio.create_task(first_audio())
        spoken_at = await _stream(send, samples, speech_end)
        return (await asyncio.wait_for(waiting, REPLY_TIMEOUT_S) - spoken_at) * 1000


def encoding_us(graph_path: str, slices: int = 2000) -> dict[str, float]:
    """Microseconds to encode one 40 ms slice of 22.05 kHz audio for each protocol (the best
    of five runs of ``slices``)."""
    rate = 22050
    rng = np.random.default_rng(0)
    samples = rng.normal(0, 3000, rate * SLICE_MS // 1000).astype(np.int16)
    driver = RealtimeDriver(Session(load_graph(graph_path)), [].append, _no_input, _no_input, "")
    driver.session_event({"type": "user_turn", "turn": 1, "text": "hello"})  # a response

    def realtime() -> None:
        json.dumps(driver.audio(1, rate, samples))

    def ws() -> None:
        encode_audio(1, rate, samples)

    return {
        name: min(timeit.repeat(fn, number=slices, repeat=5)) / slices * 1e6
        for name, fn in (("/ws", ws), ("/v1/realtime", realtime))
    }


async def _no_input(*_: object) -> None:
    """The encoding benchmark's driver gets no client audio."""


_FIRST_AUDIO_SENT = re.compile(
    r'^flowvoice_stage_latency_seconds_(sum|count)\{stage="first_audio_sent"\} (\S+)$', re.M
)


def server_first_audio(port: int) -> tuple[float, int]:
    """The server's ``first_audio_sent`` latency histogram: (sum in ms, count)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    found = dict(_FIRST_AUDIO_SENT.findall(text))
    return float(found["sum"]) * 1000, int(found["count"])


@dataclass
class Results:
    """Per protocol: client-measured voice-to-voice, and what is left after the server's."""

    client_ms: dict[str, list[float]] = field(default_factory=dict)
    delivery_ms: dict[str, list[float]] = field(default_factory=dict)


async def measure(port: int, rounds: int) -> Results:
    """Voice-to-voice ms per protocol, every question ``rounds`` times, protocols alternating
    (an exchange with no reply audio within ``REPLY_TIMEOUT_S`` is reported and left out)."""
    results = Results({"/ws": [], "/v1/realtime": []}, {"/ws": [], "/v1/realtime": []})
    clients = {"/ws": ws_voice_to_voice, "/v1/realtime": realtime_voice_to_voice}
    audio = [question_audio(q) for q in QUESTIONS]
    for round_index in range(rounds):
        for index, (samples, speech_end) in enumerate(audio):
            order = list(clients) if (round_index + index) % 2 == 0 else list(clients)[::-1]
            for name in order:
                before = server_first_audio(port)
                try:
                    ms = await clients[name](port, samples, speech_end)
                except TimeoutError:
                    print(f"  {name:<13} {QUESTIONS[index]!r}: no reply audio", flush=True)
                    continue
                await asyncio.sleep(0.2)  # the server's trace of the reply is recorded
                after = server_first_audio(port)
                results.client_ms[name].append(ms)
                server = ""
                if after[1] - before[1] == 1:  # exactly this exchange's reply
                    server_ms = after[0] - before[0]
                    results.delivery_ms[name].append(ms - server_ms)
                    server = f", server {server_ms:.0f} ms"
                print(f"  {name:<13} {QUESTIONS[index]!r}: {ms:.0f} ms{server}", flush=True)
    return results


def _p(values: list[float], q: int) -> float:
    return float(np.percentile(values, q))


def main(graph_path: str = "graphs/default.yaml", rounds: int = 2, markdown: bool = False) -> int:
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(graph_path, Path(tmp) / "server.log") as server,
    ):
        results = asyncio.run(measure(server.port, rounds))
    encoding = encoding_us(graph_path)
    if not all(results.client_ms.values()) or not all(results.delivery_ms.values()):
        print("too few answered exchanges to compare the protocols")
        return 1
    machine = f"{platform.machine()}, Python {platform.python_version()}"
    print(
        f"realtime benchmark: {graph_path}, {rounds} x {len(QUESTIONS)} questions per "
        f"protocol, {machine}, {date.today()}\n"
    )
    rows = [
        (f"{name}: client voice-to-voice", results.client_ms[name]) for name in results.client_ms
    ] + [
        (f"{name}: client minus server voice-to-voice", results.delivery_ms[name])
        for name in results.delivery_ms
    ]
    delivery = {name: _p(values, 50) for name, values in results.delivery_ms.items()}
    added = delivery["/v1/realtime"] - delivery["/ws"]
    if markdown:
        print("| ms | p50 | p90 | max | n |\n|---|---|---|---|---|")
        for label, values in rows:
            print(
                f"| {label} | {_p(values, 50):.0f} | {_p(values, 90):.0f} | {max(values):.0f} "
                f"| {len(values)} |"
            )
        print(f"\nThe Realtime path adds {added:+.0f} ms at p50 (client minus server).")
        print("\n| encoding one 40 ms audio slice | µs |\n|---|---|")
        for name, us in encoding.items():
            print(f"| {name} | {us:.0f} |")
    else:
        for label, values in rows:
            print(f"  {label:<45} p50 {_p(values, 50):6.0f}   p90 {_p(values, 90):6.0f}")
        print(f"  the Realtime path adds {added:+.0f} ms at p50 (client minus server)")
        for name, us in encoding.items():
            print(f"  encoding one 40 ms slice for {name}: {us:.0f} µs")
    return 0
