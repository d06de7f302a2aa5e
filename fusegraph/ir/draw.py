"""Graphviz drawings of graphs: DOT text, rendered to PNG / SVG by `dot` when it is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .graph import Graph


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot_cluster(graph: Graph, key: str, title: str) -> list[str]:
    """One graph as a DOT cluster; node ids are prefixed with `key` so clusters can share a file."""
    lines = [f"  subgraph cluster_{key} {{", f"    label={_quote(title)}; fontsize=18;"]
    producer = {}
    for i, node in enumerate(graph.nodes):
        if node.op == "parameter":
            continue
        ident = f"{key}_{i}"
        for v in node.outputs:
            producer[v.name] = ident
        if node.op == "input":
            label, style = node.name, "shape=oval"
        elif node.op == "fused":
            members = ", ".join(n.op for n in node.attrs["body"].compute_nodes)
            label, style = f"{node.attrs['kernel']}\n[{members}]", "shape=box, style=filled, fillcolor=lightblue"
        elif node.op == "scan":
            body = ", ".join(n.attrs.get("kernel", n.op) if n.op == "fused" else n.op
                             for n in node.attrs["body"].compute_nodes)
            label, style = f"scan {node.name}\nbody: {body}", "shape=box3d"
        else:
            label, style = f"{node.op}\n%{node.name}", "shape=box"
        lines.append(f"    {ident} [label={_quote(label + chr(10) + str(node.outputs[0].type))}, {style}];")
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            if v.name in producer:
                lines.append(f"    {producer[v.name]} -> {key}_{i};")
    lines.append("  }")
    return lines


def before_after_dot(before: Graph, after: Graph) -> str:
    lines = ["digraph fusegraph {", "  rankdir=TB; node [fontname=Helvetica, fontsize=10];"]
    lines += dot_cluster(before, "before", f"{before.name}: before fusion ({len(before.compute_nodes)} nodes)")
    lines += dot_cluster(after, "after", f"{after.name}: after fusion ({len(after.compute_nodes)} nodes)")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_text: str, path: str | Path) -> tuple[Path, str]:
    """Write `path` (.png or .svg through graphviz's `dot`; .dot as text). Without `dot`, writes the
    .dot file next to it instead. Returns (the path written, a note for the user)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt == "dot":
        path.write_text(dot_text)
        return path, f"wrote {path}"
    dot = shutil.which("dot")
    if dot is None or fmt not in ("png", "svg", "pdf"):
        fallback = path.with_suffix(".dot")
        fallback.write_text(dot_text)
        why = "graphviz's `dot` is not installed (apt-get install graphviz)" if dot is None else \
            f"'{fmt}' is not png, svg or pdf"
        return fallback, f"{why}: wrote {fallback} instead"
    subprocess.run([dot, f"-T{fmt}", "-o", str(path)], input=dot_text, text=True, check=True)
    return path, f"wrote {path}"
