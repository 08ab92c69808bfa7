"""Reading a graph file: YAML with line numbers, ``${VAR:-default}`` interpolation, ``--set``."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flowvoice.graph.errors import GraphError, Problem

Loc = tuple[str | int, ...]
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class GraphSource:
    """The parsed file: plain data plus the line of every key and list item."""

    path: str
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    def line(self, loc: Loc) -> int | None:
        """Line of ``loc``, or of its nearest located parent."""
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return None

    def problem(self, loc: Loc, where: str, message: str) -> Problem:
        return Problem(self.path, self.line(loc), where, message)


def read_graph_source(path: str | Path, text: str | None = None) -> GraphSource:
    """Parse a graph file; YAML syntax errors and duplicate keys raise :class:`GraphError`."""
    path = str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise GraphError(
                [Problem(path, None, "file", f"cannot read: {exc.strerror}")]
            ) from None
        except UnicodeDecodeError:
            raise GraphError([Problem(path, None, "file", "is not UTF-8 text")]) from None
    try:
        tree = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        what = getattr(exc, "problem", None) or str(exc)
        raise GraphError([Problem(path, line, "YAML", f"syntax error: {what}")]) from None
    source = GraphSource(path, data)
    problems: list[Problem] = []
    if tree is not None:
        _collect_lines(tree, (), source.lines, problems, path)
    if problems:
        raise GraphError(problems)
    return source


def _collect_lines(
    node: yaml.Node, loc: Loc, lines: dict[Loc, int], problems: list[Problem], path: str
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = (*loc, key)
            line = key_node.start_mark.line + 1
            if key in seen:
                where = ".".join(map(str, child))
                problems.append(
                    Problem(path, line, where, "duplicate key (the earlier one would be lost)")
                )
            seen.add(key)
            lines[child] = line
            _collect_lines(value_node, child, lines, problems, path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*loc, index)] = item.start_mark.line + 1
            _collect_lines(item, (*loc, index), lines, problems, path)


def expand(text: str, env: Mapping[str, str], missing: Callable[[str], None]) -> str:
    """``text`` with its ``${VAR}`` / ``${VAR:-default}`` replaced; ``missing(name)`` is
    called for a variable without a value or default (which is then kept as written)."""
    out: list[str] = []
    done = 0
    while (start := text.find("${", done)) >= 0:
        name = _NAME.match(text, start + 2)
        after = name.end() if name else start + 2
        if name and text.startswith("}", after):
            default, end = None, after + 1
        elif name and text.startswith(":-", after) and (close := _closing(text, after + 2)) > 0:
            default, end = text[after + 2 : close], close + 1
        else:  # not a variable reference: keep the text
            out.append(text[done:after])
            done = after
            continue
        out.append(text[done:start])
        value = env.get(name.group())
        if value or (value == "" and default is None):
            out.append(value)
        elif default is not None:
            out.append(expand(default, env, missing))
        else:
            missing(name.group())
            out.append(text[start:end])
        done = end
    return "".join(out) + text[done:]


def _closing(text: str, start: int) -> int:
    """Index of the ``}`` closing a ``${`` whose default begins at ``start``, or -1."""
    depth = 0
    for i in range(start, len(text)):
        if text.startswith("${", i):
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return i
            depth -= 1
    return -1


def interpolate(source: GraphSource, environ: dict[str, str] | None = None) -> list[Problem]:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string value, in place.

    As in a shell and in compose files, the default stands in for a variable that is unset
    or empty, and may itself hold variables: ``${LLM_MODEL:-${OLLAMA_MODEL:-llama3.2:3b}}``.
    """
    env = os.environ if environ is None else environ
    problems: list[Problem] = []

    def substitute(value: str, loc: Loc) -> str:
        def missing(name: str) -> None:
            problems.append(
                source.problem(
                    loc,
                    ".".join(map(str, loc)),
                    f"environment variable {name} is not set (write ${{{name}:-default}} "
                    "to give a default)",
                )
            )

        return expand(value, env, missing)

    def walk(value: Any, loc: Loc) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, (*loc, str(k))) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*loc, i)) for i, v in enumerate(value)]
        if isinstance(value, str):
            return substitute(value, loc)
        return value

    source.data = walk(source.data, ())
    return problems


def apply_overrides(source: GraphSource, overrides: list[str]) -> list[Problem]:
    """Apply ``--set node.params.key=value`` (or ``server.port=9000``) overrides in place.

    Values are parsed as YAML scalars (``3`` is an int, ``true`` a bool); the node's params
    model types them during validation.
    """
    problems: list[Problem] = []
    data = source.data if isinstance(source.data, dict) else {}
    for override in overrides:
        where = f"--set {override}"
        key, sep, raw = override.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            problems.append(
                Problem(source.path, None, where, "expected KEY=VALUE, e.g. stt.params.beam_size=5")
            )
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        nodes = data.get("nodes") if isinstance(data.get("nodes"), dict) else {}
        if parts[0] in nodes:
            target = nodes
        elif parts[0] in ("name", "description", "server"):
            target = data
        else:
            known = ", ".join(nodes) or "none"
            problems.append(
                Problem(source.path, None, where, f"no node named '{parts[0]}' (nodes: {known})")
            )
            continue
        for part in parts[:-1]:
            nxt = target.get(part)
            if nxt is None:
                nxt = target[part] = {}
            if not isinstance(nxt, dict):
                problems.append(Problem(source.path, None, where, f"'{part}' is not a mapping"))
                break
            target = nxt
        else:
            target[parts[-1]] = value
    return problems
