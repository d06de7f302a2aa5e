"""softmax / log_softmax over the last axis: one row per block lane, numerically stable (max-shifted)."""

from __future__ import annotations

import triton

from ..ir import GraphError
from ..passes.kernel_names import kernel_name
from .registry import KernelSource, module_source, register_template

SOFTMAX_SOURCE = '''
@triton.jit
def {name}(x_ptr, out_ptr, R, L, LOG: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_L)
    row_ok = rows < R
    mask = row_ok[:, None] & (cols[None, :] < L)
    offs = rows[:, None] * L + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=float("-inf")).to(tl.float32)
    # rows past the end are all padding: give them a harmless max and sum instead of NaNs
    shifted = x - tl.where(row_ok, tl.max(x, axis=1), 0.0)[:, None]
    e = tl.exp(shifted)
    total = tl.where(row_ok, tl.sum(e, axis=1), 1.0)
    if LOG:
        y = shifted - tl.log(total)[:, None]
    else:
        y = e / total[:, None]
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)
'''


def render(node):
    axis = node.attrs.get("axis", -1)
    if axis % node.outputs[0].type.rank != node.outputs[0].type.rank - 1:
        raise GraphError(f"{node.where}: the {node.op} kernel reduces the last axis only, got axis {axis}; "
                         "move the axis last before the softmax")
    name = kernel_name(node)
    return KernelSource(name, module_source(node.op, SOFTMAX_SOURCE.format(name=name)))


def launch(fn, node, target, inputs, outputs):
    (x,), (out,) = inputs, outputs
    length = x.shape[-1]
    rows = x.numel() // length
    block_l = triton.next_power_of_2(length)
    block_r = max(1, min(triton.next_power_of_2(rows), (4096 if target.interpreted else 2048) // block_l))
    fn[(triton.cdiv(rows, block_r),)](x, out, rows, length, LOG=node.op == "log_softmax",
                                      BLOCK_R=block_r, BLOCK_L=block_l)


register_template("softmax", render, launch)
register_template("log_softmax", render, launch)
