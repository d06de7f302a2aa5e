"""matmul: (M, K) @ (K, N) with the second operand read through strides, so `transpose_b` is free."""

from __future__ import annotations

from math import prod

import triton

from .registry import KernelSource, module_source, register_template

MATMUL_SOURCE = '''
@triton.jit
def {name}(
    a_ptr, b_ptr, out_ptr, M, N, K, STRIDE_BK, STRIDE_BN,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < M
    col_ok = cols < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < K
        a = tl.load(a_ptr + rows[:, None] * K + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptr + ks[:, None] * STRIDE_BK + cols[None, :] * STRIDE_BN,
                    mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc += tl.dot(a, b, input_precision=PRECISION)
    tl.store(out_ptr + rows[:, None] * N + cols[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=row_ok[:, None] & col_ok[None, :])
'''


def render(node):
    return KernelSource("matmul_fwd", module_source("matmul", MATMUL_SOURCE.format(name="matmul_fwd")))


def launch(fn, node, target, inputs, outputs):
    a, b = inputs
    (out,) = outputs
    k = a.shape[-1]
    m = prod(a.shape[:-1])
    transposed = node.attrs.get("transpose_b", False)
    n = b.shape[0] if transposed else b.shape[1]
    stride_bk, stride_bn = (b.stride(1), b.stride(0)) if transposed else (b.stride(0), b.stride(1))
    block_m = target.tile(m, gpu=64, interpreted=256)
    block_n = target.tile(n, gpu=64, interpreted=256)
    block_k = target.tile(k, gpu=32, interpreted=256)
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    fn[grid](a, b, out, m, n, k, stride_bk, stride_bn, PRECISION=target.precision,
             BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)


register_template("matmul", render, launch)
