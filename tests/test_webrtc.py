"""The WebRTC transport (``POST /webrtc/offer``) against an aiortc peer on 127.0.0.1.

Every candidate and all media stay on 127.0.0.1: the server answers an offer that came in on
loopback with the loopback candidate only, the peer offers only 127.0.0.1, and the tests
check both SDPs.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("aiortc")

from aiortc import RTCPeerConnection  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from json_strategies import json_values  # noqa: E402
from serving import running_server  # noqa: E402
from test_browser import ECHO_WITH_TAP  # noqa: E402
from webrtc_peer import Peer, connect, post_offer, wait_for  # noqa: E402

from flowvoice.conversation import Conversation  # noqa: E402
from flowvoice.graph.spec import load_graph  # noqa: E402
from flowvoice.server import create_app  # noqa: E402
from flowvoice.webrtc import (  # noqa: E402
    FRAME_SAMPLES,
    TRACK_RATE,
    PacedAudioTrack,
    WebRTCSettings,
    WebRTCTransport,
    mono_samples,
    parse_ice_servers,
)

ROOT = Path(__file__).resolve().parents[1]


def tone(seconds: float, hz: float = 440.0, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(int(TRACK_RATE * seconds)) / TRACK_RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def candidate_addresses(sdp: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"a=candidate:\S+ \d+ \w+ \d+ (\S+) \d+", sdp)}


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean((samples / 32768.0) ** 2))) if len(samples) else 0.0


def heard_seconds(session) -> float:
    """The most of any turn's reply the session counts as heard."""
    playback = Conversation.of_session(session).playback
    return max((playback.heard_seconds(t) for t in range(0, session.turn + 1)), default=0.0)


def echo_server():
    return running_server(create_app(load_graph("echo-tap.yaml", text=ECHO_WITH_TAP)))


def settle(server, what: str, timeout: float = 15) -> None:
    """Wait until the server holds no session, peer connection or session task."""
    gateway = server.voice.webrtc
    deadline = time.monotonic() + timeout
    while server.voice.live or gateway.peers or gateway.tasks:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: still {len(server.voice.live)} sessions, {len(gateway.peers)} peers, "
                f"{len(gateway.tasks)} tasks after {timeout} s"
            )
        time.sleep(0.05)


def test_audio_both_ways_and_events_over_loopback() -> None:
    with echo_server() as server:
        tasks_before = len(server.task_names())

        async def talk() -> tuple[Peer, list, float]:
            peer = await connect(server.url, tone(1.5))
            assert isinstance(peer, Peer), peer.text
            await wait_for(lambda: server.voice.live, 10, "the session")
            await wait_for(lambda: len(peer.heard) > 100, 20, "2 s of the server's audio")
            ((session, transport),) = server.voice.live.values()
            peer.channel.send("{not json")
            peer.channel.send('{"type": "hello", "sample_rate": 3}')
            errors = lambda: [e for e in peer.events if e["type"] == "error"]  # noqa: E731
            await wait_for(lambda: len(errors()) >= 2, 10, "the error events")
            frames = list(session.nodes["tap"].frames)
            played = heard_seconds(session)
            await peer.close()
            return peer, frames, played

        peer, frames, played = asyncio.run(talk())
        settle(server, "after the peer closed")
        tasks_after = len(server.task_names())
    # Candidates on both sides: 127.0.0.1 only.
    assert candidate_addresses(peer.answer_sdp) == {"127.0.0.1"}
    assert candidate_addresses(peer.pc.localDescription.sdp) == {"127.0.0.1"}
    # The microphone reached the graph resampled to its 16 kHz, 20 ms frames, tone and all.
    assert {(len(f.samples), f.sample_rate) for f in frames} == {(320, 16000)}
    assert max(rms(f.samples) for f in frames) > 0.1
    # The echo came back over the track: the tone, then silence once the tone ended.
    heard = peer.audio()
    levels = [rms(heard[i : i + FRAME_SAMPLES]) for i in range(0, len(heard), FRAME_SAMPLES)]
    print(f"levels heard: {[round(lv, 3) for lv in levels[::10]]}")
    assert max(levels) > 0.05 and sum(lv > 0.03 for lv in levels) >= 30
    # Bad messages on the data channel get the /ws error events; the session went on.
    codes = [e["code"] for e in peer.events if e["type"] == "error"]
    assert codes[:2] == ["bad_json", "bad_message"]
    assert any(e["type"] == "track_sent" for e in peer.events)
    assert played > 0.5  # estimated from what left over the track (this peer reports none)
    assert server.voice.metrics.sessions_total == 1 and server.voice.metrics.sessions_active == 0
    assert tasks_after <= tasks_before


def test_bad_offers_get_clear_errors_and_leave_nothing_behind() -> None:
    with echo_server() as server:
        gateway = server.voice.webrtc
        tasks_before = len(server.task_names())

        async def offers() -> dict[str, tuple[int, dict]]:
            results = {}
            for name, body in {
                "not json": b"{sdp",
                "no sdp": {"type": "offer"},
                "an answer": {"sdp": "v=0\r\n", "type": "answer"},
                "garbage sdp": {"sdp": "v=0\r\nm=application nonsense\r\n", "type": "offer"},
                "too large": {"sdp": "v=0" + "x" * 70_000, "type": "offer"},
            }.items():
                response = await post_offer(server.url, body)
                results[name] = (response.status_code, response.json())
            no_audio = await connect(server.url, audio=False)
            results["no audio"] = (no_audio.status_code, no_audio.json())
            foreign = await connect(server.url, headers={"origin": "http://evil.example"})
            results["foreign origin"] = (foreign.status_code, foreign.json())
            return results

        results = asyncio.run(offers())
        assert not gateway.peers and not gateway.tasks and not server.voice.live
        tasks_after = len(server.task_names())
    for name, (status, body) in results.items():
        assert body["type"] == "error" and body["message"], name
        if name == "foreign origin":
            assert (status, body["code"]) == (403, "refused")
            assert "evil.example" in body["message"]
        else:
            assert (status, body["code"]) == (400, "bad_offer"), name
    assert "no audio track" in results["no audio"][1]["message"]
    assert "not JSON" in results["not json"][1]["message"]
    assert "exceeds" in results["too large"][1]["message"]
    assert server.voice.metrics.sessions_total == 0
    assert tasks_after <= tasks_before


def test_token_and_peer_cap() -> None:
    app = create_app(load_graph("echo-tap.yaml", text=ECHO_WITH_TAP), token="s3cret")
    app.state.server.webrtc.settings = WebRTCSettings(max_peers=1)
    with running_server(app) as server:

        async def offers() -> tuple[int, int, bool]:
            no_token = await connect(server.url)
            first = await connect(server.url, query="?token=s3cret")
            assert isinstance(first, Peer), first.text
            await wait_for(lambda: first.heard, 20, "the first peer's connection")
            second = await connect(server.url, query="?token=s3cret")
            await first.close()
            return no_token.status_code, second.status_code, "holds 1 peer" in second.text

        no_token, second, named = asyncio.run(offers())
        settle(server, "after the peer closed")
    assert no_token == 403 and second == 503 and named


def test_vanished_peer_ends_its_session_and_connection(tmp_path: Path) -> None:
    with echo_server() as server:
        server.voice.webrtc.settings = WebRTCSettings(peer_timeout_s=1.0)
        tasks_before = len(server.task_names())
        peer = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "webrtc_peer.py"), server.url],
            stdout=subprocess.PIPE,
            text=True,
            env={"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "PATH": "/usr/bin:/bin"},
        )
        try:
            assert peer.stdout.readline().strip() == "connected"
            ((_, transport),) = server.voice.live.values()
            assert transport.track.queued_s > 0 or transport.pc.connectionState == "connected"
        finally:
            peer.kill()
            peer.wait(10)
        settle(server, "after the peer was killed mid-reply")
        tasks_after = len(server.task_names())
    assert server.voice.metrics.sessions_total == 1
    assert tasks_after <= tasks_before


# -- the paced track on its own ---------------------------------------------------------------
def test_paced_track_paces_discards_at_once_holds_and_rewinds() -> None:
    sent: list[tuple[int, float]] = []

    async def run() -> dict:
        track = PacedAudioTrack(lambda turn, s: sent.append((turn, s)), queue_s=0.4)
        await track.put(1, 22050, tone(0.3)[: int(22050 * 0.3)])  # resampled to 48 kHz
        start = time.monotonic()
        frames = [mono_samples(await track.recv()) for _ in range(10)]  # 200 ms
        elapsed = time.monotonic() - start
        queued_before = track.queued_s
        dropped = track.discard(before_turn=2)
        after_discard = mono_samples(await track.recv())
        await track.put(2, TRACK_RATE, tone(0.1))
        track.held = True
        held = mono_samples(await track.recv())
        queued_while_held = track.queued_s
        track.held = False
        released = mono_samples(await track.recv())
        # A pause the listener heard only in part: the unheard tail is sent again first.
        for _ in range(4):
            await track.recv()  # the rest of turn 2: 100 ms sent in all
        track.held = True
        silent = mono_samples(await track.recv())
        put_back = track.rewind(2, heard_s=0.04)
        track.held = False
        replayed = mono_samples(await track.recv())
        track.stop()
        return {
            "frames": frames,
            "elapsed": elapsed,
            "queued_before": queued_before,
            "dropped": dropped,
            "after_discard": after_discard,
            "held": held,
            "queued_while_held": queued_while_held,
            "released": released,
            "silent": silent,
            "put_back": put_back,
            "replayed": replayed,
            "sent_turn2": track._sent[2] / TRACK_RATE,
        }

    r = asyncio.run(run())
    assert all(len(f) == FRAME_SAMPLES for f in r["frames"])
    assert min(rms(f) for f in r["frames"][1:]) > 0.1
    assert r["elapsed"] > 0.15  # paced: ten 20 ms frames take about 180 ms, not 0
    assert 0.05 < r["queued_before"] < 0.15 and r["dropped"] > 0
    assert rms(r["after_discard"]) == 0.0  # the interrupt silenced the very next frame
    assert rms(r["held"]) == 0.0 and r["queued_while_held"] == pytest.approx(0.1)
    assert rms(r["released"]) > 0.1
    # (turn 2 is a 100 ms tone: 100 ms sent, 40 ms heard, 60 ms put back, 20 ms sent again)
    assert rms(r["silent"]) == 0.0 and r["put_back"] == pytest.approx(0.06)
    expected = tone(0.1)[int(0.04 * TRACK_RATE) :][:FRAME_SAMPLES]
    assert np.array_equal(r["replayed"], expected)
    assert r["sent_turn2"] == pytest.approx(0.06)
    turn1 = [s for t, s in sent if t == 1]
    assert turn1 == sorted(turn1) and 0.15 < turn1[-1] < 0.25


def test_ice_servers_setting() -> None:
    (stun, turn) = parse_ice_servers(
        '[{"urls": "stun:stun.example.org:3478"},'
        ' {"urls": ["turn:t.example.org"], "username": "u", "credential": "p"}]'
    )
    assert stun.urls == "stun:stun.example.org:3478" and turn.username == "u"
    with pytest.raises(ValueError, match="FLOWVOICE_ICE_SERVERS must be a JSON list"):
        parse_ice_servers('{"urls": "stun:x"}')


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("FLOWVOICE_ICE_SERVERS", "{bad", "FLOWVOICE_ICE_SERVERS must be a JSON list"),
        ("FLOWVOICE_WEBRTC_MAX_PEERS", "many", "FLOWVOICE_WEBRTC_MAX_PEERS must be a whole"),
    ],
)
def test_bad_webrtc_setting_is_a_clear_cli_error(monkeypatch, capsys, name, value, says) -> None:
    from flowvoice.cli import EXIT_BAD_INPUT, main

    monkeypatch.setenv(name, value)
    assert main(["run", "echo", "--port", "0"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_resumed_voice_replays_what_the_page_muted() -> None:
    """voice_paused holds the track; voice_resumed sends again, first, what the page had
    not yet played when it muted its jitter buffer (its last played report)."""

    async def run() -> dict:
        pc = RTCPeerConnection()
        transport = WebRTCTransport(pc, None, WebRTCSettings())
        await transport.send_audio(1, TRACK_RATE, tone(0.2))
        for _ in range(5):
            await transport.track.recv()  # 100 ms sent
        transport.receive_text('{"type": "played", "turn": 1, "ms": 40}')
        transport.send_event({"type": "voice_paused"})
        held = mono_samples(await transport.track.recv())
        transport.send_event({"type": "voice_resumed"})
        resumed = mono_samples(await transport.track.recv())
        await pc.close()
        events = [json.loads(e)["type"] for e in transport._pending]
        return {"held": held, "resumed": resumed, "events": events}

    r = asyncio.run(run())
    assert rms(r["held"]) == 0.0
    assert np.array_equal(r["resumed"], tone(0.2)[int(0.04 * TRACK_RATE) :][:FRAME_SAMPLES])
    # Events wait for the data channel, in order (track_sent reports among them).
    assert [e for e in r["events"] if e != "track_sent"] == ["voice_paused", "voice_resumed"]


OFFER_BODIES = st.one_of(
    st.binary(max_size=300),
    json_values,
    st.fixed_dictionaries(
        {"sdp": st.one_of(st.text(max_size=200), json_values), "type": st.sampled_from(["offer"])}
    ),
)


def test_fuzzed_offers_get_a_clear_error_and_leave_nothing_behind() -> None:
    """Arbitrary bodies at /webrtc/offer: a 4xx JSON error each, never a 5xx or a traceback,
    and no peer connection or session left over."""
    with echo_server() as server:
        gateway = server.voice.webrtc

        @settings(max_examples=40, deadline=None)
        @given(body=OFFER_BODIES)
        def post(body) -> None:
            response = asyncio.run(post_offer(server.url, body))
            assert 400 <= response.status_code < 500, (body, response.text)
            error = response.json()
            assert error["type"] == "error" and error["message"]
            assert "Traceback" not in response.text

        post()
        done = wait_for(lambda: not gateway.peers and not gateway.tasks, 10, "peers closed")
        asyncio.run(done)
        assert not server.voice.live
