"""Elementwise kernels generated from a chain of elementwise nodes (one node, unfused).

Each outside operand is either a full tensor (indexed like the output) or a per-channel vector
broadcast along one axis (indexed by `(offset // inner) % channels`); every value the chain makes
that is used outside it is stored."""

from __future__ import annotations

from math import prod

import triton

from ..ir import GraphError
from .epilogue import EXPRESSIONS, Emitter, Tile, helpers_for
from .group import group_of
from .registry import KernelSource, module_source, register_template

POINTWISE_SOURCE = '''
@triton.jit
def {name}({pointers}, NUMEL, {vector_args}BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < NUMEL
{body}
'''


def render(node):
    group = group_of(node)
    for member in group.nodes:
        if member.op not in EXPRESSIONS:
            raise GraphError(f"{member.where}: no elementwise kernel for {member.op}")
    vectors = [i for i, v in enumerate(group.inputs) if v.name in group.channel_vectors]
    tile = Tile(
        load_full=lambda i, v, g: f"tl.load(in{i}_ptr + offs, mask=mask, other=0.0).to(tl.float32)",
        load_channel=lambda i, v, g: (f"tl.load(in{i}_ptr + (offs // in{i}_inner) % in{i}_channels, mask=mask, "
                                      "other=0.0).to(tl.float32)"),
    )
    emitter = Emitter(tile, group.input_index)
    lines = emitter.emit_all(group.nodes)
    for j, out in enumerate(group.outputs):
        lines.append(f"    tl.store(out{j}_ptr + offs, {emitter.operand(out)[0]}.to(out{j}_ptr.dtype.element_ty), "
                     "mask=mask)")
    name = node.attrs["kernel"] if node.op == "fused" else f"{node.op}_fwd"
    pointers = ", ".join([f"in{i}_ptr" for i in range(len(group.inputs))] +
                         [f"out{j}_ptr" for j in range(len(group.outputs))])
    source = POINTWISE_SOURCE.format(name=name, pointers=pointers, body="\n".join(lines),
                                     vector_args="".join(f"in{i}_inner, in{i}_channels, " for i in vectors))
    return KernelSource(name, module_source(name, helpers_for(source) + "\n\n" + source))


def launch(fn, node, target, inputs, outputs):
    group = group_of(node)
    axis_of = {n.inputs[1].name: n.attrs["axis"] % n.outputs[0].type.rank for n in group.nodes if n.op == "bias_add"}
    shape = outputs[0].shape
    vector_args = []
    for value in group.inputs:
        if value.name in axis_of:
            axis = axis_of[value.name]
            vector_args += [prod(shape[axis + 1:]), shape[axis]]
    numel = outputs[0].numel()
    block = target.tile(numel, gpu=1024, interpreted=16384)
    fn[(triton.cdiv(numel, block),)](*inputs, *outputs, numel, *vector_args, BLOCK=block)


for _op in EXPRESSIONS:
    register_template(_op, render, launch)
register_template("pointwise", render, launch)
