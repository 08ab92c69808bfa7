"""The page over WebRTC in a real browser against a real ``flowvoice run`` server.

Server and chromium share a network namespace made for the test (``unshare -rn``) in which
only ``lo`` is up: every ICE candidate and every media packet is on 127.0.0.1 by construction
(the page also reports the candidate pair ICE chose). Chromium gathers loopback candidates
only with ``--allow-loopback-in-peer-connection``; the server offers 127.0.0.1 because the
offer reached it on loopback. Playwright talks to chromium over a pipe, so it stays outside.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import test_browser
from serving import speech_graph
from speech_audio import conversation, wer, write_wav
from test_browser import (  # noqa: F401 (browser_for: a fixture, used by name)
    BARGE_IN_GAP_S,
    SECOND,
    SLOW_TTS,
    STORY,
    barge_in_page,
    browser_for,
    open_page,
    spoken_wav,
    state,
)

from flowvoice.testing.browser import (
    WEBRTC_LOOPBACK_ARGS,
    chromium_in,
    namespaces_work,
    page_url,
    server_in_namespace,
)

pytest.importorskip("aiortc")
ROOT = Path(__file__).resolve().parents[1]
URL = page_url("webrtc")

pytestmark = [
    *test_browser.pytestmark,  # chromium, espeak-ng and sox
    pytest.mark.skipif(
        not namespaces_work(), reason="needs unshare -rn (a loopback-only network namespace)"
    ),
]


@pytest.fixture
def browser_in(browser_for, tmp_path: Path):  # noqa: F811 (the fixture imported above)
    """``browser_in(proc, wav)``: chromium inside ``proc``'s network namespace, its
    microphone playing ``wav``."""

    def launch(proc: subprocess.Popen, wav: Path | str):
        wrapper = chromium_in(proc, tmp_path)
        return browser_for(wav, executable=wrapper, extra_args=tuple(WEBRTC_LOOPBACK_ARGS))

    return launch


def test_echo_over_webrtc_in_the_browser(browser_in, tmp_path: Path) -> None:
    wav = spoken_wav(tmp_path / "question.wav", "Hello, can you hear me?")
    with server_in_namespace(ROOT / "graphs" / "echo.yaml", [], tmp_path / "server.log") as proc:
        page = open_page(browser_in(proc, wav), URL)
        page.click("#start")
        page.wait_for_function("window.flowvoice.audibleMs > 1500", timeout=30_000)
        seen = state(page)
        shown = page.locator("#transport").inner_text()
        page.click("#start")  # Stop
        page.wait_for_function("window.flowvoice.state === 'idle'", timeout=5_000)
    assert shown == "WebRTC" and seen["transport"] == "webrtc" and seen["fallback"] is None
    assert seen["iceRoute"] == {"local": "127.0.0.1", "remote": "127.0.0.1", "protocol": "udp"}
    assert seen["framesSent"] == 0 and seen["audioMessages"] == 0  # nothing over a WebSocket
    assert seen["errors"] == [] and page.problems == []


def test_page_falls_back_to_the_websocket(browser_in, tmp_path: Path) -> None:
    wav = spoken_wav(tmp_path / "question.wav", "Hello?")
    log = tmp_path / "server.log"
    env = {"FLOWVOICE_WEBRTC_MAX_PEERS": "0"}  # every offer is refused as busy
    with server_in_namespace(ROOT / "graphs" / "echo.yaml", [], log, env) as proc:
        page = open_page(browser_in(proc, wav), URL)
        page.click("#start")
        page.wait_for_function("window.flowvoice.audioMessages > 50", timeout=20_000)
        seen = state(page)
        shown = page.locator("#transport").inner_text()
        notice = page.locator("#notice").inner_text()
    assert seen["transport"] == "websocket" and shown == "WebSocket"
    assert seen["fallback"].startswith("503") and "0 peer connections" in seen["fallback"]
    assert "WebRTC unavailable" in notice and "using the WebSocket" in notice
    assert seen["framesSent"] > 50 and seen["errors"] == []


def test_conversation_and_barge_in_over_webrtc(browser_in, tmp_path: Path) -> None:
    speech_graph()  # skips when the speech nodes are not installed
    samples, bounds = conversation(
        [STORY, SECOND], gap_s=BARGE_IN_GAP_S, sample_rate=48000, lead_s=1.0, tail_s=6.0
    )
    wav = tmp_path / "barge-in.wav"
    write_wav(wav, samples, 48000)
    args = [arg for setting in SLOW_TTS for arg in ("--set", setting)]
    log = tmp_path / "server.log"
    with server_in_namespace(ROOT / "graphs" / "default.yaml", args, log) as proc:
        page = open_page(browser_in(proc, f"{wav}%noloop"), URL)
        seen, questions, replies, cut_replies = barge_in_page(page, "browser-webrtc-barge-in.png")
    print(f"\npage state: {seen}\nserver log tail: {log.read_text()[-2000:]}")
    print(f"pause -> quiet: {[t - seen['voicePausedAt'][0] for t in seen['quietAt']]} ms")
    assert seen["transport"] == "webrtc" and seen["fallback"] is None
    assert seen["iceRoute"]["local"] == seen["iceRoute"]["remote"] == "127.0.0.1"
    # The story was asked and answered over the track: the page heard it (how much of it
    # before the barge-in depends on the machine's load).
    assert wer(STORY, seen["userTurns"][0]) <= 0.35
    assert seen["audibleMs"] > 1000
    # The second question barged in. The server held the voice at the speech onset (the
    # track sends silence) and the page muted what its jitter buffer still held, so it went
    # quiet at once, as the WebSocket page does; the interrupt then dropped the story for
    # good: no more of it left the server.
    assert len(seen["bargeIns"]) == 1, seen["bargeIns"]
    interrupted = str(seen["bargeIns"][0]["turn"])
    first = seen["interruptLog"][0]
    paused_at = seen["voicePausedAt"][0]
    assert first["turn"] > int(interrupted) and paused_at <= first["at"]
    assert first["silentAt"] is not None and first["silentAt"] - first["at"] < 500
    # Quiet within a meter tick of the pause, or already quiet then (a gap between sentences
    # on a slow machine): no sound began between the pause and the interrupt.
    quiet = [t for t in seen["quietAt"] if t >= paused_at - 50]
    sounded_before = [t for t in seen["soundAt"] if t <= paused_at]
    quiet_before = [t for t in seen["quietAt"] if t <= paused_at]
    already_quiet = bool(quiet_before) and (
        not sounded_before or quiet_before[-1] >= sounded_before[-1]
    )
    assert already_quiet or (quiet and quiet[0] - paused_at < 150), (
        paused_at,
        seen["soundAt"],
        seen["quietAt"],
    )
    assert not [t for t in seen["soundAt"] if paused_at < t < first["at"]], "sound while held"
    assert seen["lastPlayedAt"][interrupted] <= paused_at + 150  # one track_sent interval
    # (how much of the story came before the barge-in depends on the machine's load)
    assert 200 < seen["playedMs"][interrupted] < 12_000, "the story was heard in part"
    assert seen["staleAudioMessages"] == 0
    # The second question was answered, and its reply heard.
    assert wer(SECOND, seen["userTurns"][-1]) <= 0.35, seen["userTurns"]
    assert any("germany" in q.lower() for q in questions)
    assert cut_replies == 1 and replies[-1].strip() and seen["assistantTexts"][-1].strip()
    # ... and its reply sounded in the page after the barge-in.
    assert any(t > seen["voiceResumedAt"][-1] for t in seen["soundAt"])
    assert seen["errors"] == [] and page.problems == []
