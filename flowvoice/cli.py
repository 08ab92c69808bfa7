"""The ``flowvoice`` command: run, chat, viz, validate, nodes, bench."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from flowvoice import __version__, tls
from flowvoice.graph.shipped import shipped_graphs
from flowvoice.run_options import add_server_options, apply_server_options

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

EXAMPLES = """\
GRAPH is a graph YAML file, or the name of a graph shipped in flowvoice/graphs/ (works
from any folder): {names}.

examples:
  flowvoice run default                                  serve the browser chat on 127.0.0.1:8000
  flowvoice chat default --input q.wav --output reply.wav
  flowvoice run default --set llm.params.temperature=0.2
  flowvoice run graphs/default.yaml                      a path works too (here: in the repository)
  flowvoice run default --host 0.0.0.0 --tls-self-signed  HTTPS for phones and laptops on the LAN
  flowvoice viz default -o graph.svg                     (.svg/.png need Graphviz's dot)
  flowvoice validate default light my_graph.yaml
  flowvoice nodes stt.whisper                            ports and params of one node type
  flowvoice bench runtime
  flowvoice bench turns --utterances 30 --markdown     end-of-turn and barge-in, per turn policy
  flowvoice bench turn-scores                          calibrate turn.smart's thresholds
  flowvoice bench backchannels                         are hums heard as backchannels?
  flowvoice bench e2e --graph old.yaml --graph default --rounds 3   compare graphs' latency
  flowvoice bench realtime --rounds 2                   voice-to-voice: /ws against /v1/realtime
"""


class CliError(Exception):
    """A user error: print the message, exit with ``code``, no traceback."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


def _graph_help() -> str:
    return (
        "graph YAML file, or the name of a shipped graph "
        f"({', '.join(shipped_graphs())}), e.g. default"
    )


def _add_graph_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", help=_graph_help())
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NODE.params.KEY=VALUE",
        help="override a value of the graph (repeatable), e.g. --set stt.params.beam_size=5",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowvoice",
        description="Real-time AI voice chat where the whole agent is a YAML graph.",
        epilog=EXAMPLES.format(names=", ".join(shipped_graphs())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"flowvoice {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="serve a graph (browser chat when it has WebSocket nodes)",
        epilog="With the webrtc extra the page may use WebRTC (open it with ?transport=webrtc); "
        "$FLOWVOICE_ICE_SERVERS (JSON list of STUN/TURN servers) and "
        "$FLOWVOICE_WEBRTC_MAX_PEERS (default 16) set it up.",
    )
    _add_graph_args(run)
    run.add_argument("--host", help="bind address (default: the graph's server.host, 127.0.0.1)")
    run.add_argument("--port", type=int, help="port (default: the graph's server.port, 8000)")
    run.add_argument(
        "--token",
        default=os.environ.get("FLOWVOICE_TOKEN"),
        help="require ?token=... on the WebSocket and the WebRTC offer (default: $FLOWVOICE_TOKEN)",
    )
    add_server_options(run)
    tls.add_arguments(run)

    chat = sub.add_parser("chat", help="run a graph headless with a WAV file as the microphone")
    _add_graph_args(chat)
    chat.add_argument("--input", "-i", required=True, help="PCM16 WAV with the user's speech")
    chat.add_argument("--output", "-o", default="", help="write the assistant's audio to this WAV")
    chat.add_argument(
        "--fast",
        action="store_true",
        help="feed the file as fast as possible instead of in real time "
        "(for single questions; later questions would barge in on earlier replies)",
    )

    viz = sub.add_parser("viz", help="render a graph as .dot, .mmd, .svg or .png")
    _add_graph_args(viz)
    viz.add_argument("-o", "--output", help="output file (default: print Graphviz dot to stdout)")

    validate = sub.add_parser("validate", help="check graph files without loading any model")
    validate.add_argument(
        "graphs", nargs="+", metavar="GRAPH", help="graph YAML file(s) or shipped graph name(s)"
    )
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")

    nodes = sub.add_parser("nodes", help="list node types, or show one type's ports and params")
    nodes.add_argument("type", nargs="?", help="a node type, e.g. stt.whisper")

    bench = sub.add_parser("bench", help="run a benchmark and print its table")
    bench.add_argument(
        "name",
        choices=[
            "runtime",
            "e2e",
            "bargein",
            "load",
            "pipecat",
            "whisper",
            "turns",
            "turn-scores",
            "backchannels",
            "transports",
            "realtime",
            "soak",
        ],
        help="which benchmark",
    )
    bench.add_argument("--frames", type=int, default=20000, help="runtime, pipecat: frames")
    bench.add_argument(
        "--repeats",
        type=int,
        help="pipecat: interrupts to time (20); transports: sessions per transport (3)",
    )
    bench.add_argument(
        "--plot", metavar="PNG", help="pipecat, load, turns: also save plots (matplotlib)"
    )
    bench.add_argument(
        "--graph",
        action="append",
        help="graph file or shipped name (e2e, bargein, turns: default; load: default and "
        "light); e2e compares several given in turn",
    )
    bench.add_argument("--sessions", type=int, nargs="+", help="load: session counts to sweep")
    bench.add_argument("--json", help="load, turns, turn-scores: keep results in this JSON file")
    bench.add_argument("--questions", type=int, default=5, help="e2e, bargein: questions")
    bench.add_argument(
        "--requests",
        action="store_true",
        help="e2e: ask three requests the default LLM answers in two sentences instead",
    )
    bench.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="e2e with several --graph: rounds taking them in turn; realtime: times each "
        "question is asked through each protocol",
    )
    bench.add_argument(
        "--interruptions", type=int, default=10, help="bargein: replies to interrupt"
    )
    bench.add_argument(
        "--windows",
        type=float,
        nargs="+",
        help="whisper: fixed encoder windows in s compared besides 15 s and the default (30)",
    )
    bench.add_argument("--threads", type=int, default=0, help="whisper: CPU threads (0: auto)")
    bench.add_argument(
        "--retries",
        type=int,
        default=3,
        help="load: reruns of a point other processes disturbed (over 10%% CPU); 0 when model "
        "servers on this machine do part of the graph's work (graphs/remote_speech.yaml)",
    )
    bench.add_argument(
        "--turn",
        action="append",
        default=[],
        metavar="TYPE[:KEY=VALUE,...]",
        help="turns: another turn policy to compare (repeatable), e.g. "
        "--turn turn.silence:silence_ms=500",
    )
    bench.add_argument(
        "--no-default-turns",
        action="store_true",
        help="turns: run only the --turn policies (default: turn.silence, the graph's "
        "turn.dynamic and turn.smart when it exists, then the --turn ones)",
    )
    bench.add_argument(
        "--utterances", type=int, help="turns: speak about this many (default: the whole corpus)"
    )
    bench.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NODE.params.KEY=VALUE",
        help="turns: override a value of the graph (repeatable)",
    )
    bench.add_argument("--turns", type=int, default=200, help="soak: real-time turns to speak")
    bench.add_argument("--window", type=int, default=20, help="soak: turns per measured row")
    bench.add_argument(
        "--scores",
        metavar="JSON",
        help="turn-scores: replay the scores an earlier --json run kept instead of scoring again",
    )
    bench.add_argument("--markdown", action="store_true", help="print a Markdown table")
    return parser


def _load(path: str, overrides: list[str]) -> Any:
    from flowvoice.graph.errors import GraphError
    from flowvoice.graph.spec import load_graph

    try:
        return load_graph(path, overrides)
    except GraphError as exc:
        raise CliError(str(exc)) from None


def cmd_validate(args: argparse.Namespace) -> int:
    from flowvoice.graph.errors import GraphError
    from flowvoice.graph.spec import load_graph

    failed = False
    for path in args.graphs:
        try:
            graph = load_graph(path, args.overrides)
        except GraphError as exc:
            failed = True
            print(exc, file=sys.stderr)
            continue
        print(f"{path}: OK ({len(graph.nodes)} nodes, {len(graph.edges)} edges)")
    return EXIT_BAD_INPUT if failed else EXIT_OK


def cmd_nodes(args: argparse.Namespace) -> int:
    from flowvoice.graph.describe import describe_node_type, node_type_summary
    from flowvoice.graph.registry import close_matches, get_node_type, node_types

    if args.type is None:
        print(node_type_summary(node_types()))
        return EXIT_OK
    node_type = get_node_type(args.type)
    if node_type is None:
        matches = close_matches(args.type)
        hint = f"; did you mean {' or '.join(matches)}?" if matches else ""
        raise CliError(f"unknown node type '{args.type}'{hint} (`flowvoice nodes` lists them)")
    print(describe_node_type(node_type))
    return EXIT_OK


def cmd_viz(args: argparse.Namespace) -> int:
    from flowvoice.graph.viz import VizError, render, to_dot

    graph = _load(args.graph, args.overrides)
    if not args.output:
        sys.stdout.write(to_dot(graph))
        return EXIT_OK
    try:
        path = render(graph, args.output)
    except VizError as exc:
        raise CliError(str(exc)) from None
    print(f"wrote {path}")
    return EXIT_OK


def cmd_chat(args: argparse.Namespace) -> int:
    import anyio

    from flowvoice.chat import run_chat, with_file_io
    from flowvoice.console import EventPrinter, print_turn_table

    if not os.path.isfile(args.input):
        raise CliError(f"{args.input}: no such file (expected a PCM16 WAV)")
    graph = _load(args.graph, args.overrides)
    try:
        graph = with_file_io(graph, args.input, args.output, realtime=not args.fast)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    result = anyio.run(run_chat, graph, EventPrinter())
    print_turn_table(result.turns)
    if args.output:
        print(
            f"wrote {args.output} ({len(result.audio) / result.sample_rate:.1f} s of reply audio)"
        )
    return EXIT_OK if result.turns else EXIT_FAILED


def cmd_run(args: argparse.Namespace) -> int:
    graph = _load(args.graph, args.overrides)
    try:
        apply_server_options(args, graph)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    host = args.host or graph.server.host
    port = args.port if args.port is not None else graph.server.port
    if graph.has_node_type("websocket."):
        from flowvoice.server import serve

        try:
            tls_files = tls.from_arguments(args)
        except tls.TLSError as exc:
            raise CliError(str(exc)) from None
        if tls_files and args.tls_self_signed and not args.tls_cert:
            print(f"flowvoice: {tls.trust_hint(tls_files)}", file=sys.stderr)
        try:
            serve(graph, host, port, token=args.token, tls=tls_files)
        except OSError as exc:
            raise CliError(str(exc), EXIT_FAILED) from None
        except ValueError as exc:  # a bad server setting in the environment
            raise CliError(str(exc)) from None
        return EXIT_OK
    import anyio

    from flowvoice.console import EventPrinter
    from flowvoice.runtime.session import Session

    session = Session(graph)
    session.subscribe(EventPrinter())
    anyio.run(session.run)
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    if args.name == "runtime":
        from flowvoice.bench.runtime import main as bench_runtime

        return bench_runtime(frames=args.frames, markdown=args.markdown)
    if args.name == "pipecat":
        from flowvoice.bench.pipecat_compare import main as bench_pipecat

        return bench_pipecat(
            markdown=args.markdown,
            frames=args.frames,
            repeats=args.repeats or 20,
            plot_path=args.plot,
        )
    if args.name == "load":
        from flowvoice.bench.load import main as bench_load

        graphs = args.graph or ["default", "light"]
        return bench_load(
            graphs, args.sessions, args.questions, args.markdown, args.plot, args.json,
            retries=args.retries,
        )  # fmt: skip
    graph = (args.graph or ["default"])[0]
    if args.name == "transports":
        from flowvoice.bench.transports import main as bench_transports

        return bench_transports(graph, args.repeats or 3, args.markdown)
    if args.name == "bargein":
        from flowvoice.bench.bargein import main as bench_bargein

        return bench_bargein(graph, args.interruptions, args.questions, args.markdown)
    if args.name == "turns":
        from flowvoice.bench.turns import main as bench_turns

        _load(graph, args.overrides)  # a bad graph or override: a clear error, no traceback
        return bench_turns(
            graph,
            extra=args.turn,
            utterances=args.utterances,
            markdown=args.markdown,
            json_path=args.json,
            plot_path=args.plot,
            defaults=not args.no_default_turns,
            overrides=args.overrides,
        )
    if args.name == "soak":
        from flowvoice.bench.soak import main as bench_soak

        _load(graph, [])  # a bad graph: a clear error, no traceback
        return bench_soak(graph, args.turns, args.window, args.markdown)
    if args.name == "turn-scores":
        from flowvoice.bench.turn_scores import main as bench_turn_scores

        return bench_turn_scores(args.json, args.markdown, args.scores)
    if args.name == "realtime":
        from flowvoice.bench.realtime import main as bench_realtime

        _load(graph, [])  # a bad graph: a clear error, no traceback
        return bench_realtime(graph, args.rounds, args.markdown)
    if args.name == "backchannels":
        from flowvoice.bench.backchannels import main as bench_backchannels

        return bench_backchannels(args.markdown)
    if args.name == "whisper":
        from flowvoice.bench.whisper import main as bench_whisper

        return bench_whisper(args.windows, args.threads, args.markdown)
    from flowvoice.bench.e2e import main as bench_e2e

    return bench_e2e(
        args.graph or ["default"], args.questions, args.markdown, args.rounds, args.requests
    )


COMMANDS = {
    "run": cmd_run,
    "chat": cmd_chat,
    "viz": cmd_viz,
    "validate": cmd_validate,
    "nodes": cmd_nodes,
    "bench": cmd_bench,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="flowvoice: %(message)s",
        stream=sys.stderr,
    )
    from flowvoice.node import NodeSetupError
    from flowvoice.runtime.session import SessionError

    try:
        return COMMANDS[args.command](args)
    except CliError as exc:
        print(f"error: {exc}" if "\n" not in str(exc) else str(exc), file=sys.stderr)
        return exc.code
    except SessionError as exc:
        code = EXIT_BAD_INPUT if isinstance(exc.error, NodeSetupError) else EXIT_FAILED
        print(f"error: {exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
