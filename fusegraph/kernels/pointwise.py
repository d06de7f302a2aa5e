"""Elementwise kernels generated from a chain of elementwise nodes (one node, unfused).

Each outside operand is either a full tensor (indexed like the output) or a per-channel vector
broadcast along one axis (indexed by `(offset // inner) % channels`, inner the axis's stride in
storage: every operand of a chain is stored alike, so a channels-last chain differs only there); every value the chain makes
that is used outside it is stored."""

from __future__ import annotations

from math import prod

import triton

from ..ir import GraphError
from ..ir.ops import OPS, channel_inputs, has_trait
from ..passes.kernel_names import kernel_name
from ..passes.templates import CHAIN, Anchor, register_anchor
from .epilogue import Emitter, Tile
from .expr import Names, helpers_for
from .group import argument_roles, group_of
from .registry import INTERPRETER_TILE_ELEMENTS, KernelSource, module_source, register_template

POINTWISE_SOURCE = '''
@triton.jit
def {name}({pointers}, NUMEL, {vector_args}BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < NUMEL
{gate_offsets}{body}
'''

# a chain split into gates runs over one gate's elements; gate g of a full-width row sits at g * GATE_W
GATE_OFFSETS = """    row = offs // GATE_W
    col = offs % GATE_W
"""


def gating(group) -> tuple[int, tuple] | None:
    """(gates, one gate's shape) when the chain splits values into gates or joins them back."""
    for node in group.nodes:
        if node.op == "split":
            return len(node.outputs), node.outputs[0].type.shape
        if node.op == "concat":
            return len(node.inputs), node.inputs[0].type.shape
    return None


def render(node):
    group = group_of(node)
    for member in group.nodes:
        if OPS[member.op].math is None and not has_trait(member, "gates"):
            raise GraphError(f"{member.where}: no elementwise kernel for {member.op}")
    vectors = [i for i, v in enumerate(group.inputs) if v.name in group.channel_vectors]
    gates, gate_shape = gating(group) or (1, None)

    def full_width(v) -> bool:
        return gate_shape is not None and v.type.shape != gate_shape

    def address(v, g: int) -> str:
        return f"row * {gates} * GATE_W + {g} * GATE_W + col" if full_width(v) else "offs"

    names = Names(POINTWISE_SOURCE + GATE_OFFSETS)
    names.roles.update(argument_roles(group))
    ins, outs = names.arguments(group.inputs), names.arguments(group.outputs)
    tile = Tile(
        load_full=lambda i, v, g: f"tl.load({ins[i]}_ptr + {address(v, g)}, mask=mask, other=0.0).to(tl.float32)",
        load_channel=lambda i, v, g: (f"tl.load({ins[i]}_ptr + (offs // {ins[i]}_inner) % {ins[i]}_channels, mask=mask, "
                                      "other=0.0).to(tl.float32)"),
        gates=gates,
        gate_width=lambda v: gates if full_width(v) else 1,
    )
    emitter = Emitter(tile, group.input_index, names)
    lines = emitter.emit_all(group.nodes)
    for j, out in enumerate(group.outputs):
        for g, expr in enumerate(emitter.operand(out)):
            lines.append(f"    tl.store({outs[j]}_ptr + {address(out, g)}, {expr}.to({outs[j]}_ptr.dtype.element_ty), "
                         "mask=mask)")
    name = kernel_name(node)
    pointers = names.signature(group.inputs, group.outputs)
    vector_args = "".join(f"{ins[i]}_inner, {ins[i]}_channels, " for i in vectors) + ("GATE_W, " if gate_shape else "")
    source = POINTWISE_SOURCE.format(name=name, pointers=pointers, body="\n".join(lines), vector_args=vector_args,
                                     gate_offsets=GATE_OFFSETS if gate_shape else "")
    return KernelSource(name, module_source(name, helpers_for(source) + "\n\n" + source))


def launch(fn, node, target, inputs, outputs):
    group = group_of(node)
    axis_of = {n.inputs[i].name: n.attrs["axis"] % n.outputs[0].type.rank for n in group.nodes
               for i in channel_inputs(n)}
    shape = outputs[0].shape
    vector_args = []
    for value in group.inputs:
        if value.name in axis_of:
            axis = axis_of[value.name]
            # a channels-last tensor's channels are innermost in storage: the channel axis's stride is 1
            inner = 1 if group.outputs[0].type.channels_last else prod(shape[axis + 1:])
            vector_args += [inner, shape[axis]]
    gated = gating(group)
    if gated is not None:  # the kernel runs over one gate's elements
        numel, vector_args = prod(gated[1][1:]) * outputs[0].shape[0], [*vector_args, gated[1][-1]]
    else:
        numel = outputs[0].numel()
    block = target.tile(numel, gpu=1024, interpreted=16384, large=INTERPRETER_TILE_ELEMENTS)
    fn[(triton.cdiv(numel, block),)](*inputs, *outputs, numel, *vector_args, BLOCK=block)


for _op in (name for name, op in OPS.items() if op.math is not None):
    register_template(_op, render, launch)
register_template(CHAIN, render, launch)
register_anchor((CHAIN,), Anchor("elementwise chain", gates=True, chain=True))
