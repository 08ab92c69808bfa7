"""An aiortc peer that plays the browser against ``POST /webrtc/offer`` on 127.0.0.1.

It sends a microphone track (given samples at 48 kHz, then silence), opens the ``events``
data channel, and records what comes back. Run as a script (``python webrtc_peer.py URL``)
it connects, prints ``connected``, and then stays until it is killed (the vanished peer).
"""

from __future__ import annotations

import asyncio
import fractions
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import av
import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from flowvoice.webrtc import FRAME_SAMPLES, TRACK_RATE, mono_samples, offered_hosts


class SignalTrack(MediaStreamTrack):
    """A microphone playing ``samples`` (48 kHz int16) in real time, then silence."""

    kind = "audio"

    def __init__(self, samples: np.ndarray | None = None):
        super().__init__()
        self.samples = samples if samples is not None else np.zeros(0, np.int16)
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self._pts / TRACK_RATE - time.monotonic()))
        chunk = np.zeros(FRAME_SAMPLES, np.int16)
        piece = self.samples[self._pts : self._pts + FRAME_SAMPLES]
        chunk[: len(piece)] = piece
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = TRACK_RATE, self._pts
        frame.time_base = fractions.Fraction(1, TRACK_RATE)
        self._pts += FRAME_SAMPLES
        return frame


@dataclass
class Peer:
    pc: RTCPeerConnection
    channel: Any
    answer_sdp: str
    events: list[dict] = field(default_factory=list)
    heard: list[np.ndarray] = field(default_factory=list)  # received 48 kHz mono frames
    reader: asyncio.Task | None = None

    def audio(self) -> np.ndarray:
        return np.concatenate(self.heard) if self.heard else np.zeros(0, np.int16)

    async def close(self) -> None:
        await self.pc.close()
        if self.reader is not None:  # (it may wait on a track that never started)
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)


async def post_offer(
    base_url: str, body: Any, headers: dict[str, str] | None = None, query: str = ""
) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        content = body if isinstance(body, bytes | str) else json.dumps(body)
        return await client.post(
            f"{base_url}/webrtc/offer{query}", content=content, headers=headers
        )


async def connect(
    base_url: str,
    samples: np.ndarray | None = None,
    audio: bool = True,
    headers: dict[str, str] | None = None,
    query: str = "",
) -> Peer | httpx.Response:
    """A connected peer, or the refusal's response when the server does not answer 200."""
    pc = RTCPeerConnection()
    if audio:
        pc.addTrack(SignalTrack(samples))
    channel = pc.createDataChannel("events")
    with offered_hosts(("127.0.0.1",)):
        await pc.setLocalDescription(await pc.createOffer())
    offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
    response = await post_offer(base_url, offer, headers, query)
    if response.status_code != 200:
        await pc.close()
        return response
    answer = response.json()
    peer = Peer(pc, channel, answer["sdp"])
    channel.on("message", lambda m: peer.events.append(json.loads(m)))

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        async def read() -> None:
            while True:
                try:
                    peer.heard.append(mono_samples(await track.recv()))
                except MediaStreamError:
                    return

        peer.reader = asyncio.ensure_future(read())

    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
    return peer


async def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)


async def _stay_connected(base_url: str) -> None:
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(TRACK_RATE * 60) / TRACK_RATE)).astype(
        np.int16
    )
    peer = await connect(base_url, tone)
    assert isinstance(peer, Peer), peer.text
    await wait_for(lambda: len(peer.heard) > 10, 20, "the server's audio")
    print("connected", flush=True)
    await asyncio.sleep(120)


if __name__ == "__main__":
    asyncio.run(_stay_connected(sys.argv[1]))
