"""``flowvoice bench transports``: the page over the WebSocket and over WebRTC, in one run.

Headless chromium (Playwright, the system ``/usr/bin/chromium``) and a ``flowvoice run``
server share a loopback-only network namespace (:mod:`flowvoice.testing.browser`); the fake
microphone asks a question that gets a long reply, then barges in with a second one. The
page's own level meter on what it plays gives, per transport:

- voice-to-voice heard: end of a question's speech -> the reply sounding in the page;
- speech onset -> silence: the barge-in starts -> the voice last sounded in the page (the
  server pauses the voice at the onset; the WebSocket page holds its buffer, the WebRTC
  page still plays its jitter buffer);
- server CPU: per second of an echo session (what the transport itself costs), and for the
  whole scripted conversation.

Sessions alternate between the transports so that load on the machine falls on both.
"""

from __future__ import annotations

import platform
import re
import statistics
import subprocess
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from flowvoice.bench.e2e import RATE, speak
from flowvoice.nodes.audio import Resampler, write_wav
from flowvoice.testing.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    WEBRTC_LOOPBACK_ARGS,
    chromium_in,
    namespaces_work,
    page_url,
    server_in_namespace,
)
from flowvoice.testing.server_process import psutil_module

TRANSPORTS = ("websocket", "webrtc")
STORY = "Tell me a story about a dragon."
SECOND = "What is the capital of Germany?"
GAP_S = 9.0  # the story's reply is still playing 9 s after the question (tests/test_browser)
SLOW_VOICE = ["--set", "tts.params.length_scale=3.5"]  # the story outlasts the gap
ECHO_S = 15.0
MIC_RATE = 48000
SPEECH_LEVEL = 500  # |sample| above this is speech, for the questions' bounds
#: The server's line at the end of a WebRTC session (flowvoice.webrtc).
LATE_LINE = re.compile(r"voice frames late by over \d+ ms: (\d+) \(at most (\d+) ms\)")


def spoken_script(folder: Path) -> tuple[Path, list[tuple[float, float]]]:
    """The microphone file (STORY, a gap, SECOND, a tail) and each question's (start, end) s."""
    parts, bounds, t = [np.zeros(RATE, np.int16)], [], 1.0
    for text, after_s in ((STORY, GAP_S), (SECOND, 8.0)):
        speech = speak(text)
        loud = np.flatnonzero(np.abs(speech.astype(np.int32)) > SPEECH_LEVEL)
        bounds.append((t + loud[0] / RATE, t + loud[-1] / RATE))
        parts += [speech, np.zeros(int(after_s * RATE), np.int16)]
        t += (len(speech) + int(after_s * RATE)) / RATE
    path = folder / "script.wav"
    write_wav(path, Resampler(RATE, MIC_RATE)(np.concatenate(parts), last=True), MIC_RATE)
    return path, bounds


def conversation_timings(seen: dict[str, Any], bounds: list[tuple[float, float]]) -> dict:
    """Page-clock timings (ms) of one scripted conversation from the page's state."""
    at = [seen["micStartedAt"] + 1000 * end for _, end in bounds]
    onset = seen["micStartedAt"] + 1000 * bounds[1][0]
    heard = [next((s - t for s in seen["soundAt"] if s > t), None) for t in at]
    quiet = next((q - onset for q in seen["quietAt"] if q > onset - 50), None)
    return {"v2v_ms": [h for h in heard if h is not None], "onset_to_quiet_ms": quiet}


def _cpu_s(pid: int) -> float:
    times = psutil_module().Process(pid).cpu_times()
    return times.user + times.system


def run_page(browser: Any, transport: str, pid: int, until: str, timeout_s: float) -> dict:
    """One session: open the page, Start, wait for ``until`` (JS), Stop; the page's state
    plus the server's CPU seconds and the session's wall seconds."""
    page = browser.new_page()
    page.goto(page_url(transport))
    cpu, start = _cpu_s(pid), time.monotonic()
    page.click("#start")
    try:
        try:
            page.wait_for_function(until, timeout=timeout_s * 1000)
        finally:
            seen = page.evaluate("JSON.parse(JSON.stringify(window.flowvoice))")
    except Exception as exc:
        keys = ("transport", "fallback", "userTurns", "assistantTexts", "soundAt", "errors")
        page_state = {k: seen[k] for k in keys}
        raise RuntimeError(f"{transport} session: {exc}; page: {page_state}") from None
    finally:
        page.click("#start")  # Stop
        page.close()
    seen["cpu_s"], seen["wall_s"] = _cpu_s(pid) - cpu, time.monotonic() - start
    time.sleep(1.0)  # the server ends the session
    return seen


def launch(playwright: Any, proc: subprocess.Popen, folder: Path, wav: str) -> Any:
    """Chromium in the server's namespace, its microphone playing ``wav``."""
    args = [*CHROMIUM_ARGS, *WEBRTC_LOOPBACK_ARGS, f"--use-file-for-fake-audio-capture={wav}"]
    return playwright.chromium.launch(executable_path=str(chromium_in(proc, folder)), args=args)


SECOND_REPLY_HEARD = """() => {
  const fv = window.flowvoice;
  return fv.userTurns.length >= 2 && fv.assistantTexts.length >= 2
    && fv.soundAt.some((t) => t > fv.micStartedAt + %d);
}"""


def measure(graph: str, repeats: int) -> dict[str, dict[str, list[float]]]:
    from playwright.sync_api import sync_playwright

    keys = ("v2v_ms", "onset_to_quiet_ms", "jitter_ms", "late_frames", "max_late_ms",
            "echo_cores", "conversation_cpu_s")  # fmt: skip
    results = {t: {k: [] for k in keys} for t in TRANSPORTS}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        folder = Path(tmp)
        wav, bounds = spoken_script(folder)
        second_end_ms = round(1000 * bounds[1][1])
        until_second = SECOND_REPLY_HEARD % second_end_ms
        with server_in_namespace("echo", [], folder / "echo.log") as proc:
            browser = launch(p, proc, folder, f"{wav}")
            for _ in range(repeats):
                for transport in TRANSPORTS:
                    until = f"window.flowvoice.connected && performance.now() > {ECHO_S * 1000}"
                    seen = run_page(browser, transport, proc.pid, until, ECHO_S + 30)
                    results[transport]["echo_cores"].append(seen["cpu_s"] / seen["wall_s"])
            browser.close()
        with server_in_namespace(graph, SLOW_VOICE, folder / "server.log") as proc:
            browser = launch(p, proc, folder, f"{wav}%noloop")
            for _ in range(repeats):
                for transport in TRANSPORTS:
                    try:
                        seen = run_page(browser, transport, proc.pid, until_second, 150)
                    except RuntimeError as exc:
                        tail = (folder / "server.log").read_text(errors="replace")[-4000:]
                        raise RuntimeError(f"{exc}\nserver log:\n{tail}") from None
                    if seen["transport"] != transport:
                        raise RuntimeError(f"the page fell back: {seen['fallback']}")
                    timings = conversation_timings(seen, bounds)
                    row = results[transport]
                    row["v2v_ms"] += timings["v2v_ms"]
                    if timings["onset_to_quiet_ms"] is not None:
                        row["onset_to_quiet_ms"].append(timings["onset_to_quiet_ms"])
                    if seen.get("jitterBufferMs") is not None:
                        row["jitter_ms"].append(seen["jitterBufferMs"])
                    row["conversation_cpu_s"].append(seen["cpu_s"])
            browser.close()
        log = (folder / "server.log").read_text(errors="replace")
        for late, worst in LATE_LINE.findall(log):
            results["webrtc"]["late_frames"].append(int(late))
            results["webrtc"]["max_late_ms"].append(float(worst))
    return results


def _cell(values: list[float], digits: int = 0) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.{digits}f} (max {max(values):.{digits}f})"


def main(graph: str = "default", repeats: int = 3, markdown: bool = False) -> int:
    if not CHROMIUM.exists() or not namespaces_work():
        print("bench transports needs /usr/bin/chromium and unshare -rn (a network namespace)")
        return 1
    try:
        import aiortc  # noqa: F401
        import playwright  # noqa: F401
    except ImportError as exc:
        print(f"bench transports needs the webrtc and test extras: {exc}")
        return 1
    results = measure(graph, repeats)
    machine = f"{platform.machine()}, {platform.node()}, Python {platform.python_version()}"
    print(
        f"transports benchmark: {graph}, {repeats} sessions per transport, {machine}, "
        f"{date.today()}\n"
    )
    columns = [
        ("voice-to-voice heard, ms", "v2v_ms", 0),
        ("speech onset -> silence, ms", "onset_to_quiet_ms", 0),
        ("jitter buffer, ms", "jitter_ms", 0),
        ("voice frames sent >40 ms late", "late_frames", 0),
        ("latest voice frame, ms late", "max_late_ms", 0),
        ("server CPU, echo session (cores)", "echo_cores", 3),
        ("server CPU, conversation (CPU-s)", "conversation_cpu_s", 1),
    ]
    if markdown:
        print("| transport | " + " | ".join(c[0] for c in columns) + " |")
        print("|---" * (len(columns) + 1) + "|")
    for transport in TRANSPORTS:
        cells = [_cell(results[transport][key], digits) for _, key, digits in columns]
        if markdown:
            print(f"| {transport} | " + " | ".join(cells) + " |")
        else:
            print(transport)
            for (label, _, _), cell in zip(columns, cells, strict=True):
                print(f"  {label:<34} {cell}")
    return 0
