"""The fusion report: per kernel, the nodes it fused and the bytes it moves against running them
unfused; what did not fuse and why; launches and bytes saved for the whole forward (analytic)."""

from __future__ import annotations

from ..ir import Graph, Node
from ..ir.cost import graph_traffic, minimum_bytes, node_traffic
from ..ir.ops import has_trait
from ..ir.ops.scan import scan_steps
from ..ir.schedule import schedule
from .fuse import Decision
from .kernel_names import kernel_name


def _mb(n: int) -> str:
    return f"{n / 1e6:.3f} MB"


def _members(node: Node) -> list[Node]:
    return list(node.attrs["body"].compute_nodes) if node.op == "fused" else [node]


def _kernel_lines(graph: Graph, batch: int, indent: str, only: set[str] | None = None) -> list[str]:
    """Each kernel (scan bodies step by step) with the nodes it fused and its analytic bytes; `only`: the
    names of the top-level nodes to list."""
    lines = []
    used = {v.name for n in graph.nodes for v in n.inputs} | {v.name for v in graph.outputs}
    for step in schedule(graph).launched:
        node = step.node
        if only is not None and node.name not in only:
            continue
        if node.op == "scan" and node.attrs.get("persistent", False):
            time = scan_steps(node)
            (cell,) = node.attrs["body"].compute_nodes
            what = (f"scan %{node.name}: all {time} steps{' (reversed)' if node.attrs.get('reverse') else ''} in one "
                    "persistent kernel, the carries in registers; each step: ")
            lines += _entry(node.attrs["kernel"], node, _members(cell), node_traffic(node, batch, used), batch, indent,
                            what, steps=time)
        elif step.kind == "loop":
            time = scan_steps(node)
            traffic = node_traffic(node, batch, used)
            lines.append(f"{indent}scan %{node.name} over {time} steps ({'reversed, ' if node.attrs.get('reverse') else ''}"
                         f"{traffic.launches} launches, {_mb(traffic.total)}); each step runs:")
            lines += _kernel_lines(node.attrs["body"], batch, indent + "    ")
        else:
            name = kernel_name(node)
            lines += _entry(name, node, _members(node), node_traffic(node, batch, used), batch, indent, "nodes: ")
    return lines


def _entry(name: str, node: Node, members: list[Node], fused, batch: int, indent: str, what: str,
           steps: int = 1) -> list[str]:
    """One kernel: its name and layer, the nodes it runs (`steps` times), its bytes against running
    those nodes one kernel each."""
    unfused = steps * sum(node_traffic(m, batch).total for m in members)
    launches = steps * sum(node_traffic(m, batch).launches for m in members)
    pattern = node.attrs.get("pattern") or ("persistent_scan" if node.op == "scan" else "")
    return [f"{indent}{name}  [layer {node.layer}]" + (f"  ({pattern})" if pattern else ""),
            f"{indent}    {what}" + ", ".join(f"%{m.name} ({m.op})" for m in members),
            f"{indent}    reads {_mb(fused.read)}, writes {_mb(fused.written)}; unfused {_mb(unfused)} in "
            f"{launches} launch{'es' if launches != 1 else ''}"]


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
    lines += _folded(fused)
    lines += _layouts(fused)
    lines += _refusals(decisions)
    return "\n".join(lines)


def _folded(graph: Graph) -> list[str]:
    """The batch norms folded into the conv or dense before them (passes/fold_batch_norms.py)."""
    layers = list(dict.fromkeys(n.layer for n in graph.param_nodes if n.attrs.get("folded", ("",))[0] == "bias"))
    if not layers:
        return []
    return ["", f"Batch norms folded into the weights and bias of the layer before them (no kernel of their own): "
                f"{', '.join(layers)}"]


def _layouts(graph: Graph) -> list[str]:
    """Where the graph keeps activations channels-last, and which convs convert at its edges."""
    values = [v for n in _flat(graph) if n.op not in ("input", "parameter") for v in n.outputs if v.type.rank == 4]
    stored = [v.name for v in values if v.type.channels_last]
    if not stored:
        return []
    packed = [n.name for n in graph.param_nodes if n.outputs[0].type.channels_last]
    edges = [f"%{n.name} reads {_layout(n.inputs[0])}, writes {_layout(n.outputs[0])}" for n in _flat(graph)
             if has_trait(n, "layout_free") and n.inputs[0].type.rank == 4 and n.outputs[0].type.rank == 4
             and n.inputs[0].type.layout != n.outputs[0].type.layout]
    lines = ["", f"Stored channels-last (NHWC): {len(stored)} of {len(values)} rank-4 activations "
                 f"(%{stored[0]} ... %{stored[-1]}); {len(packed)} conv weights packed (O, KH, KW, C)"]
    if edges:
        lines.append("  layout changes inside a kernel, no copy: " + "; ".join(edges))
    return lines


def _flat(graph: Graph) -> list[Node]:
    return [m for n in graph.nodes for m in (n.attrs["body"].nodes if n.op == "fused" else [n])]


def _layout(value) -> str:
    return "NHWC" if value.type.channels_last else "NCHW"


def _refusals(decisions: list[Decision]) -> list[str]:
    refused = list(dict.fromkeys((d.nodes[0], d.scope, d.kernel, d.reason, d.pattern) for d in decisions
                                 if not d.fused))
    if not refused:
        return []
    lines = ["", "Not fused, and why:"]
    for node, scope, kernel, reason, pattern in refused:
        where = f" (in the body of scan %{scope})" if scope else ""
        lines.append(f"  %{node}{where} stays out of {kernel}{f' ({pattern})' if pattern else ''}: {reason}")
    return lines


def backward_nodes(train: Graph) -> set[str]:
    """Names of the nodes of a training graph that run after the loss (everything that depends on it)."""
    later = {v.name for n in train.nodes if has_trait(n, "loss")
             for v in n.outputs}
    names = set()
    for node in train.nodes:
        emitted_by_autodiff = node.role.backward or (node.op == "fused" and any(
            n.role.backward for n in node.attrs["body"].compute_nodes))
        if has_trait(node, "loss") or emitted_by_autodiff or \
                any(v.name in later for v in node.inputs):
            later |= {v.name for v in node.outputs}
            names.add(node.name)
    return names


def saved_activations(train: Graph) -> list:
    """Values the forward computes and the backward reads: what a training step keeps alive between them."""
    from ..ir.cost import nbytes

    backward = backward_nodes(train)
    arguments = {v.name for n in train.nodes if n.op in ("input", "parameter") for v in n.outputs}
    produced = {v.name: v for n in train.nodes if n.name not in backward for v in n.outputs}
    saved = {}
    for node in train.nodes:
        if node.name in backward:
            for v in node.inputs:
                if v.name in produced and v.name not in arguments:
                    saved[v.name] = v
    return [(v, lambda batch, v=v: nbytes(v.type, batch)) for v in saved.values()]


def explain_training(train: Graph, batch: int = 64, decisions: list[Decision] | None = None) -> str:
    """The training step: its forward kernels (those of the training graph, which also keep what the
    backward reads), the loss, what is saved, the backward kernels, and what did not fuse."""
    backward = backward_nodes(train)
    traffic = {t.node.name: t for t in graph_traffic(train, batch)}
    losses = {n.name for n in train.nodes if has_trait(n, "loss")}
    forward_launches = sum(t.launches for name, t in traffic.items() if name not in backward)
    loss_launches = sum(t.launches for name, t in traffic.items() if name in losses)
    backward_launches = sum(t.launches for name, t in traffic.items() if name in backward and name not in losses)
    saved = saved_activations(train)
    lines = [f"Training step at batch {batch} (analytic): {forward_launches} forward launches, {loss_launches} loss "
             f"launch (loss and its gradient), {backward_launches} backward launches "
             f"({backward_launches / max(forward_launches, 1):.1f} per forward launch)",
             f"  saved between forward and backward: {_mb(sum(size(batch) for _, size in saved))} "
             "(store: every value below; recompute: each RNN cell's gates, from its stored carries; max pools keep "
             "1-byte window positions, not their input)"]
    lines += [f"    %{v.name}: {v.type}  {_mb(size(batch))}  store" for v, size in saved]
    forward = {n.name for n in train.nodes} - backward
    lines += ["", "Forward kernels, in launch order:", *_kernel_lines(train, batch, "  ", only=forward)]
    lines += ["", "Backward kernels, in launch order:", *_kernel_lines(train, batch, "  ", only=backward - losses)]
    lines += _layouts(train)
    lines += _refusals(decisions or [])
    return "\n".join(lines)
