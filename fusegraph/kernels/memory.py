"""Kernels that move or pick data: the embedding gather, a strided copy (concat, split, transposes),
and dropout (seeded with Triton's own random numbers)."""

from __future__ import annotations

import torch
import triton

from ..passes.kernel_names import kernel_name
from .registry import INTERPRETER_TILE_ELEMENTS, KernelSource, module_source, register_template

GATHER_SOURCE = '''
@triton.jit
def {name}(ids_ptr, table_ptr, out_ptr, R, D, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < R
    mask = row_ok[:, None] & (cols[None, :] < D)
    ids = tl.load(ids_ptr + rows, mask=row_ok, other=0)
    rows_of_table = tl.load(table_ptr + ids[:, None] * D + cols[None, :], mask=mask, other=0.0)
    tl.store(out_ptr + rows[:, None] * D + cols[None, :], rows_of_table, mask=mask)
'''

COPY_SOURCE = '''
@triton.jit
def {name}(
    src_ptr, dst_ptr, NUMEL, S1, S2, S3,
    SRC0, SRC1, SRC2, SRC3, DST0, DST1, DST2, DST3, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < NUMEL
    i3 = offs % S3
    i2 = (offs // S3) % S2
    i1 = (offs // (S3 * S2)) % S1
    i0 = offs // (S3 * S2 * S1)
    x = tl.load(src_ptr + i0 * SRC0 + i1 * SRC1 + i2 * SRC2 + i3 * SRC3, mask=mask)
    tl.store(dst_ptr + i0 * DST0 + i1 * DST1 + i2 * DST2 + i3 * DST3, x, mask=mask)
'''

DROPOUT_SOURCE = '''
@triton.jit
def {name}(x_ptr, out_ptr, step_ptr, NUMEL, SEED, RATE, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < NUMEL
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    # the step is read from memory, not passed: a captured CUDA graph draws a new mask every step
    keep = tl.rand(SEED + tl.load(step_ptr), offs) >= RATE
    y = tl.where(keep, x / (1.0 - RATE), 0.0)
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)
'''


def render_gather(node):
    name = kernel_name(node)
    return KernelSource(name, module_source("embedding", GATHER_SOURCE.format(name=name)))


def launch_gather(fn, node, target, inputs, outputs):
    ids, table = inputs
    (out,) = outputs
    rows, dim = ids.numel(), table.shape[1]
    block_r = target.tile(rows, gpu=32, interpreted=512, floor=1)
    block_d = target.tile(dim, gpu=128, interpreted=512, floor=1)
    fn[(triton.cdiv(rows, block_r), triton.cdiv(dim, block_d))](ids, table, out, rows, dim,
                                                                BLOCK_R=block_r, BLOCK_D=block_d)


def render_copy(node=None):
    return KernelSource("copy_strided", module_source("strided copies", COPY_SOURCE.format(name="copy_strided")))


def _as_rank4(t: torch.Tensor) -> tuple[list[int], list[int]]:
    sizes, strides = list(t.shape), list(t.stride())
    if len(sizes) > 4:
        raise ValueError(f"copy_strided handles rank <= 4, got {tuple(t.shape)}")
    return [1] * (4 - len(sizes)) + sizes, [0] * (4 - len(strides)) + strides


def launch_copy(fn, target, src: torch.Tensor, dst: torch.Tensor) -> None:
    """dst[...] = src[...], both any-strided views of the same shape."""
    sizes, src_strides = _as_rank4(src)
    _, dst_strides = _as_rank4(dst)
    numel = src.numel()
    block = target.tile(numel, gpu=1024, interpreted=16384, large=INTERPRETER_TILE_ELEMENTS)
    fn[(triton.cdiv(numel, block),)](src, dst, numel, sizes[1], sizes[2], sizes[3], *src_strides, *dst_strides,
                                      BLOCK=block)


def launch_concat(fn, node, target, inputs, outputs):
    (out,) = outputs
    axis, offset = node.attrs["axis"] % out.dim(), 0
    for x in inputs:
        launch_copy(fn, target, x, out.narrow(axis, offset, x.shape[axis]))
        offset += x.shape[axis]


def launch_split(fn, node, target, inputs, outputs):
    (x,) = inputs
    axis, offset = node.attrs["axis"] % x.dim(), 0
    for out in outputs:
        launch_copy(fn, target, x.narrow(axis, offset, out.shape[axis]), out)
        offset += out.shape[axis]


def render_dropout(node):
    name = kernel_name(node)
    return KernelSource(name, module_source("dropout", DROPOUT_SOURCE.format(name=name)))


_NO_STEP: dict[str, torch.Tensor] = {}


def launch_dropout(fn, node, target, inputs, outputs):
    """The mask is a function of (the node's seed + the step number in `fn.step`, element index): the
    backward's dropout node carries the same seed and reads the same step, so it applies the same mask."""
    (x,), (out,) = inputs, outputs
    numel = x.numel()
    block = target.tile(numel, gpu=1024, interpreted=16384, large=INTERPRETER_TILE_ELEMENTS)
    step = getattr(fn, "step", None)
    if step is None:
        step = _NO_STEP.setdefault(str(x.device), torch.zeros((), dtype=torch.int64, device=x.device))
    fn[(triton.cdiv(numel, block),)](x, out, step, numel, node.attrs["seed"], float(node.attrs["rate"]), BLOCK=block)


register_template("embedding", render_gather, launch_gather)
register_template("concat", render_copy, launch_concat)
register_template("split", render_copy, launch_split)
register_template("transpose", render_copy, lambda fn, node, target, inputs, outputs:
                  launch_copy(fn, target, inputs[0].permute(*node.attrs["perm"]), outputs[0]))
register_template("dropout", render_dropout, launch_dropout)


TIME_SHIFT_SOURCE = '''
@triton.jit
def {name}(src_ptr, dst_ptr, NUMEL, T, F, SHIFT, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < NUMEL
    t = (offs // F) % T
    source_t = t - SHIFT
    inside = mask & (source_t >= 0) & (source_t < T)
    x = tl.load(src_ptr + offs - SHIFT * F, mask=inside, other=0.0)
    tl.store(dst_ptr + offs, x, mask=mask)
'''


def render_time_shift(node):
    name = kernel_name(node)
    return KernelSource(name, module_source("time shift", TIME_SHIFT_SOURCE.format(name=name)))


def launch_time_shift(fn, node, target, inputs, outputs):
    (seq,), (out,) = inputs, outputs
    numel = seq.numel()
    features = numel // (seq.shape[0] * seq.shape[1])
    block = target.tile(numel, gpu=1024, interpreted=16384, large=INTERPRETER_TILE_ELEMENTS)
    shift = -1 if node.attrs.get("reverse", False) else 1
    fn[(triton.cdiv(numel, block),)](seq, out, numel, seq.shape[1], features, shift, BLOCK=block)


register_template("time_shift", render_time_shift, launch_time_shift)
