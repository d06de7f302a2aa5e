"""The text form of a graph: one line per node, `%out: type = op(%in, ..., attr=value)`."""

from __future__ import annotations

from typing import Any

from .graph import Graph, Node

_HIDDEN_ATTRS = ("type", "body")


def _attr(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(_attr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return str(value)


def format_node(node: Node, comment_layer: bool = True) -> str:
    lhs = ", ".join(f"%{v.name}: {v.type}" for v in node.outputs)
    args = [str(v) for v in node.inputs]
    args += [f"{k}={_attr(v)}" for k, v in node.attrs.items() if k not in _HIDDEN_ATTRS]
    line = f"{lhs} = {node.op}({', '.join(args)})"
    if (comment_layer and node.layer and node.op not in ("input", "parameter") and "body" not in node.attrs
            and not node.outputs[0].name.startswith(node.layer)):
        line += f"  # {node.layer}"
    return line


def format_graph(graph: Graph, indent: str = "") -> str:
    args = ", ".join(f"%{v.name}: {v.type}" for v in graph.inputs)
    lines = [f"{indent}graph {graph.name}({args}) {{"]
    for node in graph.nodes:
        if node.op == "input":
            continue
        line = f"{indent}  {format_node(node, comment_layer=not indent)}"
        if "body" in node.attrs:
            line += " " + format_graph(node.attrs["body"], indent + "  ").lstrip()
        lines.append(line)
    lines.append(f"{indent}  return {', '.join(str(v) for v in graph.outputs)}")
    lines.append(f"{indent}}}")
    return "\n".join(lines)
