"""The fusion report: per kernel, the nodes it fused and the bytes it moves against running them
unfused; what did not fuse and why; launches and bytes saved for the whole forward (analytic)."""

from __future__ import annotations

from ..ir import Graph, Node
from ..ir.cost import VIEW_OPS, graph_traffic, minimum_bytes, node_traffic
from ..ir.ops.scan import scan_steps
from .fuse import Decision


def _mb(n: int) -> str:
    return f"{n / 1e6:.3f} MB"


def _members(node: Node) -> list[Node]:
    return list(node.attrs["body"].compute_nodes) if node.op == "fused" else [node]


def _kernel_lines(graph: Graph, batch: int, indent: str, steps: int = 1) -> list[str]:
    lines = []
    used = {v.name for n in graph.nodes for v in n.inputs} | {v.name for v in graph.outputs}
    for node in graph.compute_nodes:
        if node.op in VIEW_OPS:
            continue
        if node.op == "scan":
            time = scan_steps(node)
            traffic = node_traffic(node, batch, used)
            lines.append(f"{indent}scan %{node.name} over {time} steps ({'reversed, ' if node.attrs.get('reverse') else ''}"
                         f"{traffic.launches} launches, {_mb(traffic.total)}); each step runs:")
            lines += _kernel_lines(node.attrs["body"], batch, indent + "    ", time)
            continue
        members = _members(node)
        fused = node_traffic(node, batch, used)
        unfused = sum(node_traffic(m, batch).total for m in members)
        unfused_launches = sum(node_traffic(m, batch).launches for m in members)
        name = node.attrs["kernel"] if node.op == "fused" else f"{node.op}_fwd"
        lines.append(f"{indent}{name}  [layer {node.layer}]")
        lines.append(f"{indent}    nodes: " + ", ".join(f"%{m.name} ({m.op})" for m in members))
        lines.append(f"{indent}    reads {_mb(fused.read)}, writes {_mb(fused.written)}; unfused {_mb(unfused)} in "
                     f"{unfused_launches} launch{'es' if unfused_launches != 1 else ''}")
    return lines


def explain(source: Graph, fused: Graph, decisions: list[Decision], batch: int = 64) -> str:
    before, after = graph_traffic(source, batch), graph_traffic(fused, batch)
    launches_before, launches_after = sum(t.launches for t in before), sum(t.launches for t in after)
    bytes_before, bytes_after = sum(t.total for t in before), sum(t.total for t in after)
    minimum = minimum_bytes(source, batch)
    lines = [
        f"Fusion report for '{source.name}' at batch {batch} (analytic):",
        f"  launches per forward: {launches_after} fused, {launches_before} unfused "
        f"({launches_before - launches_after} saved)",
        f"  bytes moved: {_mb(bytes_after)} fused, {_mb(bytes_before)} unfused; minimum {_mb(minimum)} "
        f"(inputs + weights + outputs): {bytes_after / minimum:.2f}x the minimum",
        "", "Kernels, in launch order:",
    ]
    lines += _kernel_lines(fused, batch, "  ")
    refused = [d for d in decisions if not d.fused]
    if refused:
        lines += ["", "Not fused, and why:"]
        for d in refused:
            where = f" (in the body of scan %{d.scope})" if d.scope else ""
            lines.append(f"  %{d.nodes[0]}{where} stays out of {d.kernel}: {d.reason}")
    return "\n".join(lines)
