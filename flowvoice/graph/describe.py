"""Human-readable descriptions of node types for ``flowvoice nodes``."""

from __future__ import annotations

import inspect

from pydantic_core import PydanticUndefined

from flowvoice.node import Node


def _first_line(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.splitlines()[0] if doc else ""


def node_type_summary(types: dict[str, type[Node]]) -> str:
    """One line per node type: name and the first line of its docstring."""
    width = max((len(name) for name in types), default=0)
    return "\n".join(f"{name:<{width}}  {_first_line(cls)}" for name, cls in types.items())


def _type_name(annotation: object) -> str:
    name = getattr(annotation, "__name__", None)
    return (
        name
        if name and not str(annotation).startswith("typing.")
        else str(annotation).replace("typing.", "")
    )


def describe_node_type(cls: type[Node]) -> str:
    """Docstring, ports with frame types, and params with types, defaults and descriptions."""
    lines = [cls.type_name, "", inspect.getdoc(cls) or "(no description)", ""]
    if cls.preemptible:
        lines += ["Preemptible: in-flight work is cancelled when the user barges in.", ""]
    for title, ports in (("Inputs", cls.inputs), ("Outputs", cls.outputs)):
        lines.append(f"{title}:")
        if not ports:
            lines.append("  (none)")
        for name, port in ports.items():
            optional = "" if port.required or title == "Outputs" else " (optional)"
            doc = f"  {port.doc}" if port.doc else ""
            lines.append(f"  {name}: {port.frame_type.__name__}{optional}{doc}")
        lines.append("")
    lines.append("Params:")
    fields = cls.Params.model_fields
    if not fields:
        lines.append("  (none)")
    for name, field in fields.items():
        if field.default is not PydanticUndefined:
            default = f" = {field.default!r}"
        elif field.default_factory is not None:
            default = f" = {field.default_factory()!r}"  # type: ignore[call-arg]
        else:
            default = " (required)"
        lines.append(f"  {name}: {_type_name(field.annotation)}{default}")
        if field.description:
            lines.append(f"      {field.description}")
    return "\n".join(lines)
