"""Kernels that move data: a strided copy (concat, split, transposes, and the runtime's copies), and
the zero fill of an output no gradient reaches."""

from __future__ import annotations

import torch
import triton

from .registry import KernelSource, register_template
from .source import module_source, node_source
from .target import INTERPRETER_TILE_ELEMENTS

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


FILL_SOURCE = '''
@triton.jit
def {name}(out_ptr, TOTAL, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.zeros((BLOCK,), tl.float32).to(out_ptr.dtype.element_ty), mask=offs < TOTAL)
'''


def launch_fill(fn, target, out) -> None:
    total = out.numel()
    block = target.tile(total, gpu=1024, interpreted=16384, large=INTERPRETER_TILE_ELEMENTS)
    fn[(triton.cdiv(total, block),)](out, total, BLOCK=block)


def launch_zeros(fn, node, target, inputs, outputs):
    launch_fill(fn, target, outputs[0])


register_template("concat", render_copy, launch_concat)
register_template("split", render_copy, launch_split)
register_template("transpose", render_copy, lambda fn, node, target, inputs, outputs:
                  launch_copy(fn, target, inputs[0].permute(*node.attrs["perm"]), outputs[0]))
register_template("zeros", node_source(FILL_SOURCE, "zero fill"), launch_zeros)


def launch_channel_shuffle(fn, node, target, inputs, outputs):
    """The shuffle as one strided copy: (N, g, C/g, L) read transposed into (N, C/g, g, L)."""
    (x,), (out,) = inputs, outputs
    n, c, groups = x.shape[0], x.shape[1], node.attrs["groups"]
    src = x.reshape(n, groups, c // groups, -1).transpose(1, 2)
    launch_copy(fn, target, src, out.view(n, c // groups, groups, -1))


register_template("channel_shuffle", render_copy, launch_channel_shuffle)
