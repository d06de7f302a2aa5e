"""A kernel's worth of IR: an anchor (or none, for elementwise chains), the nodes after it, and the
values it reads and stores. A plain node is a group of one; a `fused` node unpacks its body."""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import Node, Value
from ..ir.ops import channel_inputs, get_op, has_trait
from ..passes.templates import CHAIN, anchor_of
from .expr import Names, local_name, to_triton


@dataclass(frozen=True)
class Group:
    anchor: Node | None
    nodes: tuple[Node, ...]  # after the anchor (or the whole chain when there is no anchor)
    inputs: tuple[Value, ...]  # the kernel's pointer arguments, in order
    outputs: tuple[Value, ...]  # pointer arguments after the inputs, in order (no duplicates)
    prologue: tuple[Node, ...] = ()  # unary ops applied to the anchor's data input as it is loaded

    @property
    def data_input(self) -> Value:
        """What the kernel loads for the anchor's data operand: the prologue's input, if any."""
        return self.prologue[0].inputs[0] if self.prologue else self.anchor.inputs[0]

    def input_index(self, value: Value) -> int:
        return next(i for i, v in enumerate(self.inputs) if v.name == value.name)

    @property
    def bias_gradient(self) -> Node | None:
        """A bias gradient computed alongside the anchor (a weight gradient) from the same rows."""
        return next((n for n in self.nodes if n.op == "bias_grad"), None)

    @property
    def elementwise(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.op != "bias_grad")

    @property
    def channel_vectors(self) -> set[str]:
        """Inputs read per channel (bias vectors) rather than element by element."""
        return {n.inputs[i].name for n in self.nodes for i in channel_inputs(n)}


def group_of(node: Node) -> Group:
    if node.op == "fused":
        body = node.attrs["body"]
        compute = body.compute_nodes
        outputs = tuple(dict.fromkeys(body.outputs))
        if anchor_of(node.attrs["anchor"]) is not None and node.attrs["anchor"] != CHAIN:
            at = next(i for i, n in enumerate(compute) if anchor_of(n.op) is not None)
            before = compute[:at]
            siblings = tuple(n for n in before if n.op == "bias_grad")  # computed alongside, not before
            prologue = tuple(n for n in before if n.op != "bias_grad")
            return Group(compute[at], siblings + tuple(compute[at + 1:]), tuple(body.inputs), outputs, prologue)
        return Group(None, tuple(compute), tuple(body.inputs), outputs)
    if anchor_of(node.op) is not None:
        return Group(node, (), node.inputs, node.outputs)
    return Group(None, (node,), node.inputs, node.outputs)


def argument_roles(group: Group) -> dict[str, str]:
    """Kernel arguments named for their role: the anchor's operands `x` and `w` (a pool gradient's
    `dy` and its saved `x` or `positions`), per-channel vectors `bias`, a single output `out`."""
    roles: dict[str, str] = {}
    anchor = group.anchor
    if anchor is not None:
        if has_trait(anchor, "pool_gradient"):
            operands = ("dy", "positions" if has_trait(anchor, "from_positions") else "x")
        elif has_trait(anchor, "conv_anchor") or has_trait(anchor, "matmul_anchor"):
            operands = ("x", "w")
        else:
            operands = ()
        roles.update(zip((group.data_input.name, *(v.name for v in anchor.inputs[1:2])), operands))  # avg: dy only
    roles.update({name: "bias" for name in group.channel_vectors})
    if len(group.outputs) == 1:
        roles[group.outputs[0].name] = "out"
    return roles


def prologue_lines(group: Group, var: str, mask: str, indent: str, names: Names) -> list[str]:
    """Statements applying the group's prologue to the loaded tile `var` (masked lanes stay zero)."""
    if not group.prologue:
        return []
    lines = [f"{indent}{var} = {var}.to(tl.float32)"]

    def assign(text: str, hint: str) -> str:
        name = names.fresh(hint)
        lines.append(f"{indent}{name} = {text}")
        return name

    for node in group.prologue:
        hint = local_name(node.outputs[0].name)
        expression = to_triton(get_op(node.op).math, [var], node.attrs, lambda text, h=hint: assign(text, h))
        lines.append(f"{indent}{var} = {expression}")
    lines.append(f"{indent}{var} = tl.where({mask}, {var}, 0.0).to({names.argument(group.data_input)}_ptr.dtype.element_ty)")
    return lines
