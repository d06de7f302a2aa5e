"""Elementwise kernels generated from an expression per op: activations, add/sub/mul, bias_add.

Each operand is either a full tensor (indexed like the output) or a per-channel vector broadcast
along one axis (indexed by `(offset // INNER) % CHANNELS`). The body is generated from the op, so
one template serves every elementwise op (and, with fusion, chains of them)."""

from __future__ import annotations

from math import prod

import triton

from ..ir import GraphError
from .registry import KernelSource, module_source, register_template

TANH_HELPER = '''
@triton.jit
def _tanh(x):
    # NOTE: libdevice tanh fails in the interpreter; near 0 a series avoids the cancellation in (1-e)/(1+e)
    ax = tl.abs(x)
    e = tl.exp(-2.0 * ax)
    far = (1.0 - e) / (1.0 + e)
    x2 = x * x
    near = ax * (1.0 - x2 * (1.0 / 3.0 - x2 * (2.0 / 15.0)))
    t = tl.where(ax < 0.0625, near, far)
    return tl.where(x < 0, -t, t)
'''

SIGMOID_HELPER = '''
@triton.jit
def _sigmoid(x):
    # NOTE: exp of -|x| only, so large inputs saturate without overflowing
    e = tl.exp(-tl.abs(x))
    return tl.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
'''

POINTWISE_SOURCE = '''
@triton.jit
def {name}({args}, out_ptr, NUMEL, INNER, CHANNELS, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < NUMEL
{loads}
{body}
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)
'''

EXPRESSIONS = {
    "relu": "tl.maximum({0}, 0.0)",
    "leaky_relu": "tl.where({0} >= 0, {0}, {0} * {negative_slope!r})",
    "sigmoid": "_sigmoid({0})",
    "tanh": "_tanh({0})",
    "add": "{0} + {1}",
    "sub": "{0} - {1}",
    "mul": "{0} * {1}",
    "bias_add": "{0} + {1}",
}


def expression(op: str, args: list[str], attrs) -> str:
    attrs = {"negative_slope": 0.01, **dict(attrs)}
    return EXPRESSIONS[op].format(*args, **attrs)


def render(node):
    if node.op not in EXPRESSIONS:
        raise GraphError(f"{node.where}: no elementwise kernel for {node.op}")
    names = [f"in{i}" for i in range(len(node.inputs))]
    args = ", ".join(f"{n}_ptr" for n in names)
    loads = []
    for i, n in enumerate(names):
        index = "(offs // INNER) % CHANNELS" if node.op == "bias_add" and i == 1 else "offs"
        loads.append(f"    {n} = tl.load({n}_ptr + {index}, mask=mask, other=0.0).to(tl.float32)")
    body = f"    y = {expression(node.op, names, node.attrs)}"
    name = f"{node.op}_fwd"
    source = POINTWISE_SOURCE.format(name=name, args=args, loads="\n".join(loads), body=body)
    helpers = (TANH_HELPER if "_tanh(" in body else "") + (SIGMOID_HELPER if "_sigmoid(" in body else "")
    return KernelSource(name, module_source(node.op, helpers + "\n\n" + source))


def launch(fn, node, target, inputs, outputs):
    (out,) = outputs
    inner, channels = 1, 1
    if node.op == "bias_add":
        axis = node.attrs["axis"] % out.dim()
        inner, channels = prod(out.shape[axis + 1:]), out.shape[axis]
    numel = out.numel()
    block = target.tile(numel, gpu=1024, interpreted=16384)
    fn[(triton.cdiv(numel, block),)](*inputs, out, numel, inner, channels, BLOCK=block)


for _op in EXPRESSIONS:
    register_template(_op, render, launch)
