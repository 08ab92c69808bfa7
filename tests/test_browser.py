"""End to end in a real browser: Debian chromium with a WAV file as its microphone.

Playwright drives the system chromium (never ``playwright install``); the fake audio device
plays a spoken question, the page streams it to the server over ``/ws`` and plays what
comes back. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from serving import running_server, speech_graph
from speech_audio import wer

from flowvoice.graph.spec import load_graph
from flowvoice.server import create_app, prewarm

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium"),
    pytest.mark.skipif(
        not (shutil.which("espeak-ng") and shutil.which("sox")),
        reason="needs espeak-ng and sox to make the spoken question",
    ),
]


def spoken_wav(path: Path, text: str, rate: int = 48000) -> Path:
    """``text`` spoken by espeak-ng at ``rate``, with 1 s of silence before and 3 s after."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True, timeout=30
    )
    subprocess.run(
        ["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(path), "pad", "1", "3"],
        check=True,
        timeout=30,
    )
    return path


@pytest.fixture
def browser_for(tmp_path: Path) -> Iterator:
    """``browser_for(wav)``: a chromium whose microphone plays ``wav`` (looping unless the
    path ends with ``%noloop``)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        launched = []

        def launch(wav: Path | str, allow_mic: bool = True):
            args = [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--autoplay-policy=no-user-gesture-required",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}",
            ]
            if allow_mic:  # else the permission prompt is dismissed: access denied
                args.append("--use-fake-ui-for-media-stream")
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
            launched.append(browser)
            return browser

        yield launch
        for browser in launched:
            browser.close()


def open_page(browser, url: str):
    """A page at ``url`` whose console errors and page errors are collected in ``page.problems``."""
    page = browser.new_page()
    page.problems = []
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.goto(url)
    return page


def state(page) -> dict:
    return page.evaluate("JSON.parse(JSON.stringify(window.flowvoice))")


ECHO_WITH_TAP = """
name: echo-tap
nodes:
  mic: {type: websocket.source}
  speaker: {type: websocket.sink}
  tap: {type: test.collect}
edges:
  - mic.audio -> speaker.audio
  - mic.audio -> tap.frames
"""


def test_echo_capture_server_playback(browser_for, tmp_path: Path) -> None:
    wav = spoken_wav(tmp_path / "question.wav", "Hello, can you hear me?")
    app = create_app(load_graph("echo-tap.yaml", text=ECHO_WITH_TAP))
    with running_server(app) as server:
        page = open_page(browser_for(wav), server.url + "/")
        page.click("#start")
        page.wait_for_function("window.flowvoice.samplesPlayed > 3 * 16000", timeout=20_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-echo.png"))
        seen = state(page)
        ((session, _),) = server.voice.live.values()
        heard = list(session.nodes["tap"].frames)
        page.click("#start")  # Stop
        page.wait_for_function("window.flowvoice.state === 'idle'", timeout=5_000)
    assert seen["connected"] and seen["framesSent"] >= 150 and seen["audioMessages"] >= 150
    assert seen["errors"] == [] and page.problems == []
    assert sum(session.drops().values()) == 0
    # The server got 16 kHz 20 ms frames carrying the spoken WAV: speech, then silence.
    assert {(len(f.samples), f.sample_rate) for f in heard} == {(320, 16000)}
    levels = np.array([np.sqrt(np.mean((f.samples / 32768.0) ** 2)) for f in heard])
    assert levels.max() > 0.05 and np.mean(levels > 0.02) > 0.1 and np.mean(levels < 0.01) > 0.2


def test_page_reconnects_after_connection_loss(browser_for, tmp_path: Path) -> None:
    wav = spoken_wav(tmp_path / "question.wav", "Hello?")
    with running_server(create_app(load_graph(ROOT / "graphs" / "echo.yaml"))) as server:
        page = open_page(browser_for(wav), server.url + "/")
        page.click("#start")
        page.wait_for_function("window.flowvoice.samplesPlayed > 8000", timeout=20_000)
        ((_, transport),) = server.voice.live.values()

        async def drop_connection() -> None:
            transport.close(1012)  # "service restart"

        server.call(drop_connection())
        page.wait_for_function(
            "window.flowvoice.reconnects === 1 && window.flowvoice.state !== 'reconnecting'",
            timeout=15_000,
        )
        notice_shown = page.locator("#notice").is_visible()
        before = state(page)["audioMessages"]
        page.wait_for_function(f"window.flowvoice.audioMessages > {before + 25}", timeout=10_000)
        divider = page.locator(".divider").inner_text()
    assert server.voice.metrics.sessions_total == 2
    assert not notice_shown and "Reconnected" in divider
    assert page.problems == [] or all("WebSocket" in p for p in page.problems)


def test_denied_microphone_gets_a_clear_message(browser_for, tmp_path: Path) -> None:
    wav = spoken_wav(tmp_path / "question.wav", "Hello?")
    with running_server(create_app(load_graph(ROOT / "graphs" / "echo.yaml"))) as server:
        page = open_page(browser_for(wav, allow_mic=False), server.url + "/")
        page.click("#start")
        page.wait_for_selector("#notice:not([hidden])", timeout=10_000)
        notice = page.locator("#notice").inner_text()
        seen = state(page)
    assert "Microphone access was denied" in notice
    assert seen["state"] == "idle" and not seen["connected"]
    assert server.voice.metrics.sessions_total == 0


def test_spoken_conversation_in_the_browser(browser_for, tmp_path: Path) -> None:
    graph = speech_graph()
    wav = spoken_wav(tmp_path / "question.wav", "What is the capital of France?")
    with running_server(create_app(graph)) as server:
        server.call(prewarm(graph), timeout=300)
        page = open_page(browser_for(f"{wav}%noloop"), server.url + "/")
        page.click("#start")
        page.wait_for_function(
            "window.flowvoice.assistantTexts.some(t => t.trim())"
            " && window.flowvoice.samplesPlayed > 8000",
            timeout=120_000,
        )
        page.wait_for_function("window.flowvoice.metrics.length > 0", timeout=30_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-conversation.png"))
        seen = state(page)
        bubbles = page.locator(".bubble").all_inner_texts()
        latency_rows = page.locator("#latency li").count()
    print(f"\npage state: {seen}")
    assert wer("What is the capital of France?", " ".join(seen["userTurns"])) <= 0.35
    assert any("capital" in b.lower() for b in bubbles)
    assert seen["assistantTexts"][0] in bubbles[1]
    assert latency_rows >= 1
    assert seen["errors"] == [] and page.problems == []
