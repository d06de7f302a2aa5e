"""Each op is declared once (ir/ops/): its formula must be torch's, and it must carry every trait the
passes and templates rely on, or fusion silently stops taking it."""

import pytest
import torch

from fusegraph.ir import BATCH, GraphBuilder, TensorType
from fusegraph.ir.ops import OPS, TRAITS, get_op
from fusegraph.ir.ops.base import RefContext
from fusegraph.ir.ops.expr import arity, evaluate
from fusegraph.kernels.registry import TEMPLATES
from fusegraph.nn.activations import ACTIVATIONS
from fusegraph.passes.autodiff import GradEmitter

# finite values spread over the activations' interesting ranges, then the non-finite ones
VALUES = torch.tensor([-30.0, -3.0, -1.0, -0.5, -1e-3, -1e-8, 0.0, 1e-8, 1e-3, 0.5, 1.0, 3.0, 30.0,
                       float("nan"), float("-inf")])
# NOTE: +inf is left out: torch's vectorized CPU gelu gives NaN there while its scalar path and the
# formula give inf (F.gelu(torch.tensor([inf])) is inf, F.gelu(torch.tensor([inf] * 20)) is NaN)
FP32 = dict(rtol=1e-5, atol=1e-6, equal_nan=True)
CTX = RefContext(training=False, seed=0, run_graph=lambda graph, feeds: [])
NAMED = [a for a in ACTIVATIONS if a != "linear"]
POINTWISE = [a for a in NAMED if "prologue" in get_op(a).traits]


def test_every_formula_reads_its_inputs_and_the_op_is_elementwise():
    for name, op in OPS.items():
        if op.math is not None:
            assert arity(op.math) == op.num_inputs, name
            assert "elementwise" in op.traits, f"{name} has a formula but no 'elementwise' trait: it would not fuse"
        if "elementwise" in op.traits:
            assert op.math is not None, f"{name} is 'elementwise' but no template could generate it"
            assert name in TEMPLATES, f"{name} has no kernel template registered"


def test_traits_are_declared():
    for name, op in OPS.items():
        assert op.traits <= set(TRAITS), name
        if "prologue" in op.traits:
            assert op.num_inputs == 1 and "elementwise" in op.traits and op.vjp is not None, name


@pytest.mark.parametrize("name", NAMED)
def test_every_dsl_activation_is_an_op_with_a_module_and_a_gradient(name):
    op = get_op(name)
    assert op.module is not None and op.vjp is not None
    assert isinstance(op.module(op.defaults), torch.nn.Module)


@pytest.mark.parametrize("name", POINTWISE)
def test_formula_is_torchs_forward(name):
    op = get_op(name)
    got = evaluate(op.math, [VALUES], op.defaults)
    torch.testing.assert_close(got, op.reference([VALUES], op.defaults, CTX)[0], **FP32)
    torch.testing.assert_close(got, op.module(op.defaults)(VALUES), **FP32)


@pytest.mark.parametrize("name", POINTWISE)
def test_gradient_formula_is_torch_autograds(name):
    """The VJP builds the gradient op on what it saves (the forward's input or output); its formula on
    those values must give torch.autograd's gradient of the op's torch module."""
    op = get_op(name)
    b = GraphBuilder("vjp")
    x = b.input("x", TensorType((BATCH, VALUES.numel())))
    y = b.op(name, [x], name="y", **op.defaults)
    dy = b.input("dy", y.type)
    forward = b.nodes[1]
    (dx,) = op.vjp(GradEmitter(b), forward, [dy], [True])
    grad_node = next(n for n in b.nodes if dx in n.outputs)
    leaf = VALUES.clone().requires_grad_(True)
    out = op.module(op.defaults)(leaf)
    upstream = torch.linspace(-2.0, 2.0, VALUES.numel())
    (want,) = torch.autograd.grad(out, leaf, upstream)
    values = {"x": VALUES, "y": out.detach(), "dy": upstream}
    got = evaluate(get_op(grad_node.op).math, [values[v.name] for v in grad_node.inputs], grad_node.attrs)
    torch.testing.assert_close(got, want, **FP32)
