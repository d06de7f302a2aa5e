"""conv1d / conv2d as an implicit GEMM on tl.dot: rows are output pixels, columns output channels,
the reduction runs over (input channel, kernel row, kernel column). conv1d is conv2d with height 1."""

from __future__ import annotations

import triton

from .registry import KernelSource, module_source, register_template

CONV_SOURCE = '''
@triton.jit
def {name}(
    x_ptr, w_ptr, out_ptr,
    N, C, H, W, O, OH, OW,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    KH: tl.constexpr, KW: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    K = C * KH * KW
    row_ok = rows < N * OH * OW
    col_ok = cols < O
    n = rows // (OH * OW)
    oh = (rows // OW) % OH
    ow = rows % OW
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < K
        c = ks // (KH * KW)
        kh = (ks // KW) % KH
        kw = ks % KW
        ih = oh[:, None] * STRIDE_H - PAD_H + kh[None, :] * DIL_H
        iw = ow[:, None] * STRIDE_W - PAD_W + kw[None, :] * DIL_W
        # padding is the masked-out part of the window: it reads as zero
        inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x_mask = row_ok[:, None] & k_ok[None, :] & inside
        x = tl.load(x_ptr + ((n[:, None] * C + c[None, :]) * H + ih) * W + iw, mask=x_mask, other=0.0)
        w = tl.load(w_ptr + cols[None, :] * K + ks[:, None], mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc += tl.dot(x, w, input_precision=PRECISION)
    out = (n[:, None] * O + cols[None, :]) * (OH * OW) + (oh * OW + ow)[:, None]
    tl.store(out_ptr + out, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])
'''


def render(node):
    name = f"{node.op}_fwd"
    return KernelSource(name, module_source(f"{node.op} (implicit GEMM)", CONV_SOURCE.format(name=name)))


def launch(fn, node, target, inputs, outputs):
    x, w = inputs
    (out,) = outputs
    as2d = node.op == "conv1d"
    stride, dilation, padding = node.attrs["stride"], node.attrs["dilation"], node.attrs["padding"]
    if as2d:
        stride, dilation, padding = (1, *stride), (1, *dilation), ((0, 0), *padding)
    n, c = x.shape[:2]
    h, wd = (1, x.shape[2]) if as2d else x.shape[2:]
    kh, kw = (1, w.shape[2]) if as2d else w.shape[2:]
    o = w.shape[0]
    oh, ow = (1, out.shape[2]) if as2d else out.shape[2:]
    block_m = target.tile(n * oh * ow, gpu=64, interpreted=256)
    block_n = target.tile(o, gpu=64, interpreted=128)
    block_k = target.tile(c * kh * kw, gpu=32, interpreted=128)
    grid = (triton.cdiv(n * oh * ow, block_m), triton.cdiv(o, block_n))
    fn[grid](x, w, out, n, c, h, wd, o, oh, ow, stride[0], stride[1], padding[0][0], padding[1][0],
             dilation[0], dilation[1], KH=kh, KW=kw, PRECISION=target.precision,
             BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)


for _op in ("conv1d", "conv2d"):
    register_template(_op, render, launch)
