"""A matmul whose data operand is computed in the kernel by an elementwise chain, possibly split into
gates and joined back (an RNN's backward step: the cell gradient dz, then dh = dz W_hh, one launch).

The K loop runs over one gate's width W (all of K without gates): chunk `ks` of gate g is
A[:, g * W + ks], made from the chain's operands at those positions (every gate at once, since the
gates of one hidden unit depend on each other) and multiplied with rows g * W + ks of B. Values of
the chain needed elsewhere are stored by the first column block's programs; the anchor's own
epilogue follows the loop."""

from __future__ import annotations

from math import prod

import triton

from ..ir import GraphError
from ..ir.ops import has_trait
from .epilogue import Emitter, Tile
from .expr import Names, helpers_for
from .group import argument_roles
from .registry import KernelSource
from .source import GEMM_TILE, fill, module_source

GATED_SOURCE = '''
@triton.jit
def {name}(
    {pointers},
    M, N, W, B_STRIDE_K, B_STRIDE_N,{strides}
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    {tile}
    acc0 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    {carried_init}
    for k0 in range(0, W, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < W
        chunk_mask = row_ok[:, None] & k_ok[None, :]
        {prologue}
        {carried_step}
        {dots}
    {epilogue}
'''


def _gate_ks(g: int) -> str:
    """Chunk `ks` of gate `g` of the computed operand (W: one gate's width)."""
    return "ks" if g == 0 else f"({g} * W + ks)"


def is_gated(group) -> bool:
    """Whether the data operand is computed in the kernel: more than a loaded operand's activation."""
    made = {v.name for n in group.prologue for v in n.outputs}
    return any(has_trait(n, "gates") or len(n.inputs) > 1 for n in group.prologue) or \
        any(v.name in made for v in group.outputs)


def _gates(group) -> tuple[int, tuple]:
    """(gates, one gate's shape) of the computed operand."""
    operand = group.anchor.inputs[0]
    concat = next((n for n in group.prologue if n.op == "concat" and n.outputs[0].name == operand.name), None)
    if concat is None:
        return 1, operand.type.shape
    return len(concat.inputs), concat.inputs[0].type.shape


def render_gated(name: str, group) -> KernelSource:
    from .linalg import epilogue  # NOTE: the plain template imports this module

    gates, gate_shape = _gates(group)
    ib = group.input_index(group.anchor.inputs[1])

    def columns(v, g: int) -> str:
        return f"{_gate_ks(g)}[None, :]" if v.type.shape != gate_shape else "ks[None, :]"

    def no_channel(i, v, g):
        raise GraphError(f"%{v.name}: a per-channel operand in a gated prologue")

    names = Names(GATED_SOURCE + GEMM_TILE, ["acc0", "row_sums", *(f"b{g}" for g in range(gates)),
                                             *(f"carried{c}" for c in range(len(group.prologue) + len(group.nodes)))])
    names.roles.update(argument_roles(group))
    ins, outs = names.arguments(group.inputs), names.arguments(group.outputs)
    tile = Tile(
        load_full=lambda i, v, g: (f"tl.load({ins[i]}_ptr + rows[:, None] * {ins[i]}_rs + {columns(v, g)}, "
                                   "mask=chunk_mask, other=0.0).to(tl.float32)"),
        load_channel=no_channel, gates=gates, gate_width=lambda v: gates if v.type.shape != gate_shape else 1)
    chain = Emitter(tile, group.input_index, names, indent=" " * 8)
    prologue = chain.emit_all(group.prologue)
    made = {v.name for n in group.prologue for v in n.outputs}
    stored = frozenset(v.name for v in group.outputs if v.name in made)
    stores = [f"            tl.store({outs[j]}_ptr + rows[:, None] * {outs[j]}_rs + {columns(v, g)}, "
              f"{expr}.to({outs[j]}_ptr.dtype.element_ty), mask=chunk_mask)"
              for j, v in enumerate(group.outputs) if v.name in stored for g, expr in enumerate(chain.operand(v))]
    if stores:  # every column block computes the chain; the first stores it
        prologue += ["        if tl.program_id(1) == 0:", *stores]
    # chain values the epilogue reads: the output's columns are the chain's (BLOCK_K == BLOCK_N), so the
    # chunk at this program's columns is kept
    carried = list(dict.fromkeys(v.name for n in group.nodes for v in n.inputs if v.name in made))
    values = {v.name: v for n in group.prologue for v in n.outputs}
    carried_step = [f"        carried{c} += tl.where(k0 == tl.program_id(1) * BLOCK_N, {chain.operand(values[name])[0]}, 0.0)"
                    for c, name in enumerate(carried)]
    dots = [line for g, expr in enumerate(chain.operand(group.anchor.inputs[0])) for line in (
        f"b{g} = tl.load({ins[ib]}_ptr + {_gate_ks(g)}[:, None] * B_STRIDE_K + cols[None, :] * B_STRIDE_N, "
        "mask=k_ok[:, None] & col_ok[None, :], other=0.0)",
        f"acc0 += tl.dot(tl.where(chunk_mask, {expr}, 0.0).to(b{g}.dtype), b{g}, input_precision=PRECISION)")]
    lines, _, _ = epilogue(group, 1, group.anchor.outputs[0].type.shape[-1], names, stored,
                           {values[name]: f"carried{c}" for c, name in enumerate(carried)})
    full = [i for i, v in enumerate(group.inputs) if i != ib]
    pointers = names.signature(group.inputs, group.outputs)
    strides = "".join(f" {ins[i]}_rs," for i in full) + "".join(f" {outs[j]}_rs," for j in range(len(group.outputs)))
    source = fill(
        GATED_SOURCE, name=name, tile=GEMM_TILE, pointers=pointers, strides=strides, prologue=prologue, dots=dots,
        epilogue=lines, carried_step=carried_step,
        carried_init=[f"carried{c} = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)" for c in range(len(carried))])
    return KernelSource(name, module_source(f"{name} (matmul anchor, gated prologue)",
                                            helpers_for(source) + "\n\n" + source))


def launch_gated(fn, group, target, inputs, outputs) -> None:
    from .linalg import row_stride

    width = _gates(group)[1][-1]
    anchor = group.anchor
    ib = group.input_index(anchor.inputs[1])
    b = inputs[ib]
    transposed = anchor.attrs.get("transpose_b", False)
    n = b.shape[0] if transposed else b.shape[1]
    stride_k, stride_n = (b.stride(1), b.stride(0)) if transposed else (b.stride(0), b.stride(1))
    operands = [t for i, t in enumerate(inputs) if i != ib]
    m = prod(operands[0].shape[:-1])
    block_m = target.tile(m, gpu=64, interpreted=256)
    block_n = target.tile(n, gpu=32, interpreted=256)  # NOTE: 64 columns spill the chain's registers on sm_90
    # NOTE: every column block recomputes the chain, so the GPU gets more row blocks, not column blocks
    block_m, block_n = target.spread(m, n, block_m, block_n, keep_n=True)
    block_k = target.tile(width, gpu=32, interpreted=256)
    made = {v.name for node in group.prologue for v in node.outputs}
    if any(v.name in made for node in group.nodes for v in node.inputs):
        block_k = block_n  # the epilogue reads chain values at its columns: chunks must line up with them
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    fn[grid](*inputs, *outputs, m, n, width, stride_k, stride_n,
             *(row_stride(t) for t in operands), *(row_stride(t) for t in outputs),
             PRECISION=target.precision(b.dtype), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)
