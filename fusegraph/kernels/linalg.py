"""matmul with a generated epilogue: (M, K) @ (K, G*H) where a group that splits its result into G
gates computes all G gate tiles of the same hidden columns in one program (an RNN cell's whole
update), then applies the group's elementwise ops, an optional row softmax, and stores.

Rows may be strided (a time step of a batch-first sequence); columns are contiguous.

The bias gradient (a column sum of the output gradient) runs alone or inside the weight
gradient's kernel (matmul_tn), beside it."""

from __future__ import annotations

from math import prod

import torch
import triton

from ..ir import GraphError
from ..ir.ops import has_trait
from ..passes.kernel_names import kernel_name
from ..passes.templates import Anchor, register_anchor, register_check
from .descriptors import descriptor
from .epilogue import Emitter, Tile
from .expr import Names, helpers_for
from .group import argument_roles, group_of, prologue_lines
from .layout import channels_last
from .matmul_gated import is_gated, launch_gated, render_gated
from .registry import KernelSource, register_template
from .source import GEMM_TILE, fill, gate_columns, module_source, node_source
from .target import interpreter_budget

MAX_SOFTMAX_ROW = 1024  # a softmax epilogue's row is one block of columns


MATMUL_SOURCE = '''
@triton.jit
def {name}(
    {pointers}, a_desc, b_desc,
    M, N, K, A_STRIDE_K, B_STRIDE_K, B_STRIDE_N,{strides}
    PRECISION: tl.constexpr, A_DESC: tl.constexpr, B_DESC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    {gate_note}
    {tile}
    {accumulators}
    {row_sum_init}
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < K
        if A_DESC:
            # a box of A copied by the copy engine: past M or K it reads zeros, as the mask would
            a = {a_box}
        else:
            a = tl.load({a}_ptr + rows[:, None] * {a}_rs + ks[None, :] * A_STRIDE_K,
                        mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        {prologue}
        {row_sum_step}
        {dots}
    {epilogue}
'''



def _gates(group) -> int:
    return next((len(n.outputs) for n in group.nodes if n.op == "split"), 1)


def matmul_names(group, gates: int) -> Names:
    """The identifiers the plain template's generated code takes, kept from the IR's value names; the
    arguments' stems first, in signature order."""
    names = Names(MATMUL_SOURCE + GEMM_TILE, ["row_sums", "row_max", "shifted", "row_sum",
                                              *(f"{w}{g}" for w in ("acc", "b") for g in range(gates))])
    names.roles.update(argument_roles(group))
    names.signature(group.inputs, group.outputs)
    return names


def _stems(group, names: Names) -> tuple[list[str], list[str]]:
    return names.arguments(group.inputs), names.arguments(group.outputs)


def epilogue(group, gates: int, width: int, names: Names, stored_elsewhere: frozenset[str] = frozenset(),
             bound: dict | None = None) -> tuple[list[str], str, str]:
    """The elementwise code after the anchor on its (BLOCK_M, BLOCK_N) tile of each gate, and the stores
    of the group's outputs (but those in `stored_elsewhere`); `bound`: values already held in tiles;
    with a bias-gradient sibling, the code that sums A's rows as it is loaded."""
    anchor = group.anchor
    ins, outs = _stems(group, names)
    tile = Tile(
        load_full=lambda i, v, g: (f"tl.load({ins[i]}_ptr + rows[:, None] * {ins[i]}_rs + {gate_columns(g)}[None, :], "
                                   "mask=tile_mask, other=0.0).to(tl.float32)"),
        load_channel=lambda i, v, g: (f"tl.load({ins[i]}_ptr + {gate_columns(g)}, mask=col_ok, other=0.0)"
                                      ".to(tl.float32)[None, :]"),
        softmax=lambda x, log, out: [
            f"row_max = tl.max(tl.where(col_ok[None, :], {x}, float('-inf')), axis=1)",
            f"shifted = tl.where(col_ok[None, :], {x} - row_max[:, None], float('-inf'))",
            "row_sum = tl.sum(tl.exp(shifted), axis=1)",
            f"{out} = shifted - tl.log(row_sum)[:, None]" if log else f"{out} = tl.exp(shifted) / row_sum[:, None]",
        ],
        gates=gates,
        gate_width=lambda v: v.type.shape[-1] // width,
    )
    emitter = Emitter(tile, group.input_index, names)
    emitter.bind(anchor.outputs[0], [f"acc{g}" for g in range(gates)])
    for value, tile_name in (bound or {}).items():
        emitter.bind(value, [tile_name])
    lines = emitter.emit_all(group.elementwise)
    sibling = group.bias_gradient
    row_sum_init, row_sum_step = "", ""
    for j, out in enumerate(group.outputs):
        if out.name in stored_elsewhere:
            continue
        if sibling is not None and out.name == sibling.outputs[0].name:
            # the bias gradient: row sums of A (the output gradient read transposed), stored once per row block
            row_sum_init = "row_sums = tl.zeros((BLOCK_M,), dtype=tl.float32)"
            row_sum_step = "row_sums += tl.sum(a.to(tl.float32), axis=1)"
            lines.append("    if tl.program_id(1) == 0:")
            lines.append(f"        tl.store({outs[j]}_ptr + rows, row_sums.to({outs[j]}_ptr.dtype.element_ty), mask=row_ok)")
            continue
        for g, expr in enumerate(emitter.operand(out)):
            lines.append(f"    tl.store({outs[j]}_ptr + rows[:, None] * {outs[j]}_rs + {gate_columns(g)}[None, :], "
                         f"{expr}.to({outs[j]}_ptr.dtype.element_ty), mask=tile_mask)")
    return lines, row_sum_init, row_sum_step


def render(node):
    group = group_of(node)
    anchor = group.anchor
    gates = _gates(group)
    width = anchor.outputs[0].type.shape[-1] // gates
    name = kernel_name(node)
    if is_gated(group):
        return render_gated(name, group)
    ia, ib = group.input_index(group.data_input), group.input_index(anchor.inputs[1])
    names = matmul_names(group, gates)
    lines, row_sum_init, row_sum_step = epilogue(group, gates, width, names)
    ins, outs = _stems(group, names)
    full = [i for i, v in enumerate(group.inputs) if i != ib and v.name not in group.channel_vectors]
    pointers = names.signature(group.inputs, group.outputs)
    strides = "".join(f" {ins[i]}_rs," for i in full) + "".join(f" {outs[j]}_rs," for j in range(len(group.outputs)))
    # NOTE: a box of gate g past N reads gate g + 1's columns: they land in columns no store keeps
    first_columns = [f"{g} * N + " * (g > 0) + "tl.program_id(1) * BLOCK_N" for g in range(gates)]
    b_boxes = [f"tl.trans(b_desc.load([{first}, k0]))" if anchor.attrs.get("transpose_b") else
               f"b_desc.load([k0, {first}])" for first in first_columns]
    dots = [line for g in range(gates) for line in (
        "if B_DESC:", f"    b{g} = {b_boxes[g]}", "else:",
        f"    b{g} = tl.load({ins[ib]}_ptr + ks[:, None] * B_STRIDE_K + {gate_columns(g)}[None, :] * B_STRIDE_N, "
        "mask=k_ok[:, None] & col_ok[None, :], other=0.0)",
        f"acc{g} += tl.dot(a, b{g}, input_precision=PRECISION)")]
    a_box = ("tl.trans(a_desc.load([k0, tl.program_id(0) * BLOCK_M]))" if anchor.op == "matmul_tn" else
             "a_desc.load([tl.program_id(0) * BLOCK_M, k0])")
    source = fill(
        MATMUL_SOURCE, name=name, pointers=pointers, strides=strides, a=ins[ia], a_box=a_box, tile=GEMM_TILE,
        gate_note="# N is one gate's width; gate g of the weight holds columns g * N + cols" if gates > 1 else "",
        prologue=prologue_lines(group, "a", "row_ok[:, None] & k_ok[None, :]", "", names),
        accumulators=[f"acc{g} = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)" for g in range(gates)],
        dots=dots, epilogue=lines, row_sum_init=row_sum_init, row_sum_step=row_sum_step)
    return KernelSource(name, module_source(f"{name} (matmul anchor)", helpers_for(source) + "\n\n" + source))


def row_stride(t: torch.Tensor) -> int:
    """Rows of a (..., C) operand: a 2-D view may be strided; higher ranks must be contiguous."""
    if t.dim() == 2 and t.stride(1) == 1:
        return t.stride(0)
    if not t.is_contiguous():
        raise GraphError(f"a matmul operand of shape {tuple(t.shape)} must be contiguous")
    return t.shape[-1]


def launch(fn, node, target, inputs, outputs):
    group = group_of(node)
    if is_gated(group):
        launch_gated(fn, group, target, inputs, outputs)
        return
    anchor = group.anchor
    a = inputs[group.input_index(group.data_input)]
    b = inputs[group.input_index(anchor.inputs[1])]
    gates = _gates(group)
    transposed = anchor.attrs.get("transpose_b", False)  # B stored (N, K), as render reads it
    if anchor.op == "matmul_tn":
        # p^T @ q over all leading dims: A is p read column-wise, B is q, K runs over p's rows
        p, q = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
        m, n, k = p.shape[1], q.shape[1], p.shape[0]
        a_strides, stride_k, stride_n = (p.stride(1), p.stride(0)), q.stride(0), q.stride(1)
    else:
        k, m = a.shape[-1], prod(a.shape[:-1])
        n = (b.shape[0] if transposed else b.shape[1]) // gates
        stride_k, stride_n = (b.stride(1), b.stride(0)) if transposed else (b.stride(0), b.stride(1))
        a_strides = (row_stride(a), 1)
    full = [row_stride(t) if v.name != group.data_input.name else a_strides[0]
            for t, v in zip(inputs, group.inputs)
            if v.name not in group.channel_vectors and v.name != anchor.inputs[1].name]
    softmax = any(has_trait(n, "softmax") for n in group.nodes)
    # NOTE: one gate's half-precision tile is Hopper's (Target.dot_tiles), rows kept a warpgroup MMA's 64;
    # G gates keep G accumulators, and a softmax row one block: those keep the 64 x 64 x 32 tile on 4 warps
    hopper = gates == 1 and not softmax and a.dtype != torch.float32
    gpu_m, gpu_n, gpu_k, options = target.dot_tiles(a.dtype) if hopper else (64, 64, 32, target.dot_tiles(
        torch.float32)[3])
    block_n = max(16, triton.next_power_of_2(n)) if softmax else target.tile(n, gpu=gpu_n, interpreted=256)
    block_k = target.tile(k, gpu=gpu_k, interpreted=256, large=1024)
    block_m = target.tile(m, gpu=gpu_m if not softmax else 32, interpreted=256,
                          large=interpreter_budget(block_k, block_n))
    block_m, block_n = target.spread(m, n, block_m, block_n, keep_n=softmax, min_m=64 if hopper else 16)
    tuned = target.small_gemm(m, n, a.dtype) if anchor.op == "matmul" and not softmax else {}
    # a tuned block never larger than its dimension needs (tl.dot still wants 16)
    block_m, block_n, block_k = (min(tuned.pop(key, default), max(16, triton.next_power_of_2(size)))
                                 for key, default, size in (("block_m", block_m, m), ("block_n", block_n, n),
                                                            ("block_k", block_k, k)))
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    a_desc = b_desc = None
    if target.descriptors:
        if anchor.op == "matmul_tn":  # A is p transposed: boxes of p's (K, M), turned in registers
            a_desc = descriptor(p, (k, m), (a_strides[1], a_strides[0]), (block_k, block_m))
        else:
            a_desc = descriptor(a, (m, k), a_strides, (block_m, block_k))
        width = n * gates
        b_desc = (descriptor(b, (width, k), (stride_n, stride_k), (block_n, block_k)) if transposed else
                  descriptor(b, (k, width), (stride_k, stride_n), (block_k, block_n)))
    fn[grid](*inputs, *outputs, a_desc, b_desc, m, n, k, a_strides[1], stride_k, stride_n,
             *full, *(row_stride(t) for t in outputs), PRECISION=target.precision(a.dtype),
             A_DESC=a_desc is not None, B_DESC=b_desc is not None, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
             **{**target.launch_options(options), **tuned})


def accepts_softmax(nodes) -> str | None:
    """A row softmax in the epilogue needs the whole row in one block of the tile."""
    anchor = next(n for n in nodes if has_trait(n, "matmul_anchor"))
    width = anchor.outputs[0].type.shape[-1]
    return f"rows of {width} do not fit one block (max {MAX_SOFTMAX_ROW})" if width > MAX_SOFTMAX_ROW else None


BIAS_GRAD_SOURCE = '''
@triton.jit
def {name}(dy_ptr, db_ptr, OUTER, C, INNER, BLOCK_J: tl.constexpr, BLOCK_C: tl.constexpr):
    # dy viewed as (OUTER, C, INNER); sums every (outer, inner) pair for a block of channels
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < C
    acc = tl.zeros((BLOCK_J, BLOCK_C), tl.float32)
    for j0 in range(0, OUTER * INNER, BLOCK_J):
        js = j0 + tl.arange(0, BLOCK_J)
        offs = _channel_view_at(js, cols, C, INNER)
        acc += tl.load(dy_ptr + offs, mask=(js < OUTER * INNER)[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
    tl.store(db_ptr + cols, tl.sum(acc, axis=0).to(db_ptr.dtype.element_ty), mask=col_ok)
'''


def launch_bias_grad(fn, node, target, inputs, outputs):
    (dy,), (db,) = inputs, outputs
    axis = node.attrs["axis"] % dy.dim()
    # dy as (outer, channels, inner) in storage order: a channels-last one is (N * H * W, C, 1)
    if channels_last(node.inputs[0]) and axis != 1:
        raise GraphError(f"{node.where}: a channels-last bias gradient sums over channels (axis 1), got axis {axis}")
    channels = dy.shape[axis]
    inner = 1 if channels_last(node.inputs[0]) else prod(dy.shape[axis + 1:])
    outer = dy.numel() // (channels * inner)
    block_c = target.tile(channels, gpu=32, interpreted=128, floor=1)
    block_j = target.tile(outer * inner, gpu=128, interpreted=1024, floor=1)
    fn[(triton.cdiv(channels, block_c),)](dy, db, outer, channels, inner, BLOCK_J=block_j, BLOCK_C=block_c)


register_template("matmul", render, launch)
register_template("matmul_tn", render, launch)
register_template("bias_grad", node_source(BIAS_GRAD_SOURCE, "bias gradient"), launch_bias_grad)
register_anchor(("matmul",), Anchor("matmul", channel_axis=-1, prologue="prologue", ends=frozenset({"softmax"}),
                                    gates=True, computed_operand=True))
register_anchor(("matmul_tn",), Anchor("matmul_tn", epilogue=False, bias_gradient=(0, -1)))  # x^T dy: dy's columns
register_check("matmul_softmax", accepts_softmax)
