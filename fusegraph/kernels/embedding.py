"""The embedding gather and its gradient's scatter-add, and dropout (seeded with Triton's own random
numbers; a new mask every training step)."""

from __future__ import annotations

import torch
import triton

from ..passes.kernel_names import kernel_name
from .registry import KernelSource, register_template
from .shape import FILL_SOURCE, launch_fill
from .source import module_source, named_source
from .target import INTERPRETER_TILE_ELEMENTS

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


DROPOUT_SOURCE = '''
@triton.jit
def {name}(x_ptr, out_ptr, step_ptr, first_ptr, NUMEL, SAMPLE, SEED, RATE, DRAW_EVERY, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < NUMEL
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    # the step is read from memory, not passed: a captured CUDA graph draws a new mask every step;
    # one draw per element, or per sample (DRAW_EVERY = a sample's size: the batch is outermost in
    # either layout), keyed by its place in the whole batch (a data-parallel rank's batch starts at
    # sample first_ptr of it), so the masks do not depend on how many ranks share the batch
    at = tl.load(first_ptr) * SAMPLE + offs
    keep = tl.rand(SEED + tl.load(step_ptr), at // DRAW_EVERY) >= RATE
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


def render_dropout(node):
    name = kernel_name(node)
    return KernelSource(name, module_source("dropout", DROPOUT_SOURCE.format(name=name)))


_NO_STEP: dict[str, torch.Tensor] = {}


def launch_dropout(fn, node, target, inputs, outputs):
    """The mask is a function of (the node's seed + the step number in `fn.step`, element index in the whole
    batch, from `fn.first_sample`): the backward's dropout node carries the same seed and reads the same step
    and first sample, so it applies the same mask."""
    (x,), (out,) = inputs, outputs
    numel = x.numel()
    block = target.tile(numel, gpu=1024, interpreted=16384, large=INTERPRETER_TILE_ELEMENTS)
    zero = _NO_STEP.setdefault(str(x.device), torch.zeros((), dtype=torch.int64, device=x.device))
    step, first = (zero if getattr(fn, key, None) is None else getattr(fn, key) for key in ("step", "first_sample"))
    sample = numel // x.shape[0] if numel else 1
    draw_every = sample if node.attrs.get("per_sample", False) else 1
    fn[(triton.cdiv(numel, block),)](x, out, step, first, numel, sample, node.attrs["seed"],
                                     float(node.attrs["rate"]), draw_every, BLOCK=block)


SCATTER_SOURCE = '''
@triton.jit
def {name}(dy_ptr, ids_ptr, table_ptr, R, D, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    # rows with the same id meet in the table: atomic adds sum them
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < R
    mask = row_ok[:, None] & (cols[None, :] < D)
    ids = tl.load(ids_ptr + rows, mask=row_ok, other=0)
    g = tl.load(dy_ptr + rows[:, None] * D + cols[None, :], mask=mask, other=0.0)
    tl.atomic_add(table_ptr + ids[:, None] * D + cols[None, :], g, mask=mask)
'''


def render_scatter(node):
    return named_source(kernel_name(node), SCATTER_SOURCE, "embedding gradient (scatter-add)")


def launch_scatter(fn, node, target, inputs, outputs):
    """Zero the table gradient, then scatter-add the rows into it: two kernels."""
    from .codegen import load_kernel

    dy, ids = inputs
    (table,) = outputs
    launch_fill(load_kernel(named_source("fill_zeros", FILL_SOURCE, "zero fill"), fn.counter), target, table)
    rows, dim = ids.numel(), table.shape[1]
    block_r = target.tile(rows, gpu=32, interpreted=512, floor=1)
    block_d = target.tile(dim, gpu=128, interpreted=512, floor=1)
    fn[(triton.cdiv(rows, block_r), triton.cdiv(dim, block_d))](dy, ids, table, rows, dim,
                                                                BLOCK_R=block_r, BLOCK_D=block_d)


register_template("embedding", render_gather, launch_gather)
register_template("embedding_bwd", render_scatter, launch_scatter)
register_template("dropout", render_dropout, launch_dropout)
