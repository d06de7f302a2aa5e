"""Every activation comes in from PyTorch as its op declares (ir/ops/pointwise.py: `activation()` finds
nn.<Module>, F.<name>, torch.<name>, aten.<name> and Tensor.<name>), with its options, and then fuses,
differentiates and compiles like the others. softplus and mish were added by that one call each (and
nothing else): they prove the recipe. fp32 against the torch net itself: rtol 1e-4, atol 1e-5."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fusegraph as fg
from fusegraph.interop import dynamo
from tests.conftest import KERNEL_ATOL, KERNEL_RTOL, assert_grads_match_torch, feeds_for, targets_for


class Activations(nn.Module):
    """Each activation as a module with options, as a function with options by name and by position, and
    as a tensor method."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.softplus = nn.Softplus(beta=2.0, threshold=5.0)
        self.mish = nn.Mish()
        self.head = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        h = self.mish(self.softplus(self.conv(x)))
        h = F.leaky_relu(F.softplus(h, 0.5, 8.0), negative_slope=0.2)
        h = F.elu(F.mish(h), alpha=0.7).tanh()
        return self.head(torch.flatten(F.gelu(F.silu(h)), 1))


def test_each_activation_converts_with_its_options_and_fuses():
    net, x = Activations(), torch.randn(3, 2, 4, 4) * 3
    model = fg.from_torch(net, x)
    softplus = [n for n in model.graph.nodes if n.op == "softplus"]
    assert [dict(n.attrs) for n in softplus] == [{"beta": 2.0, "threshold": 5.0}, {"beta": 0.5, "threshold": 8.0}]
    compiled = fg.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), net(x), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    # the conv's epilogue takes the chain of activations after it; the dense reads gelu(silu(.)) as it loads
    assert compiled.kernel_names[0].startswith("conv2d_bias_add_softplus_mish")
    assert compiled.last_launches == 2


def test_through_torch_export_and_torch_compile_too(monkeypatch):
    net, x = Activations(), torch.randn(2, 2, 4, 4) * 3

    def untraceable(module):
        raise torch.fx.proxy.TraceError("as if this forward branched on a shape")

    with monkeypatch.context() as only_export:  # from_torch falls back to torch.export: ATen ops (aten.mish, ...)
        only_export.setattr(torch.fx, "symbolic_trace", untraceable)
        exported = fg.from_torch(net, x)
    assert {"softplus", "mish", "leaky_relu", "elu", "tanh", "gelu", "silu"} <= {n.op for n in exported.graph.nodes}
    with torch.no_grad():
        torch.testing.assert_close(fg.compile(exported)(x), net(x), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    partitions = []  # fusegraph's partitions that ran (an all-eager fallback would leave it empty)
    real = dynamo._Partition.forward
    monkeypatch.setattr(dynamo._Partition, "forward", lambda self, *args: partitions.append(self) or real(self, *args))
    torch._dynamo.reset()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("error")  # no op of the net is left to eager
            got = torch.compile(net, backend="fusegraph")(x)
        torch.testing.assert_close(got, net(x), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
        assert partitions
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("activation", ["softplus", "mish"])
def test_new_activations_train_like_torch(activation):
    model = fg.Sequential([fg.Input((2, 5, 5)), fg.Activation(activation), fg.Conv2D(3, 3, activation=activation),
                           fg.Flatten(), fg.Dense(4, activation=activation)])
    compiled = assert_grads_match_torch(model, feeds_for(model, 3), targets_for(model, "mse", 3), "mse")
    assert compiled.kernel_names[0] == f"{activation}_conv2d_bias_add_{activation}"  # prologue and epilogue


def test_the_mobile_nets_hard_activations_convert_with_their_options():
    """MobileNetV2's ReLU6, MobileNetV3's hardswish and hardsigmoid (its squeeze-excitation gate), and a
    hardtanh with bounds of its own, as modules and functions."""
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU6(), nn.Hardswish(), nn.Hardtanh(-2.0, 2.5),
                        nn.Hardsigmoid(), nn.Flatten(), nn.Linear(64, 3))
    torch.manual_seed(5)
    x = torch.randn(3, 2, 4, 4) * 4
    model = fg.from_torch(net, x)
    assert [dict(n.attrs) for n in model.graph.nodes if n.op == "hardtanh"] == [{"min_val": -2.0, "max_val": 2.5}]
    compiled = fg.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), net(x), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    assert compiled.kernel_names[0] == "conv2d_bias_add_relu6_hardswish_hardtanh_hardsigmoid"
    functional = _Call(lambda t: F.hardswish(F.relu6(t)) + F.hardtanh(t, min_val=-0.5, max_val=0.5))
    x = torch.randn(2, 6) * 4
    torch.testing.assert_close(fg.compile(fg.from_torch(functional, x))(x), functional(x))


def test_an_option_fusegraph_does_not_have_is_one_clear_error():
    for net, message in [(nn.Sequential(nn.GELU(approximate="tanh")), "has approximate='tanh'; fusegraph's gelu "
                                                                       "takes approximate='none' only"),
                         (nn.Sequential(nn.Softsign()), "Softsign"),
                         (_Call(lambda x: F.elu(x, 1.0, False)), None)]:
        x = torch.randn(2, 4)
        if message is None:  # inplace=False by position: fine
            torch.testing.assert_close(fg.compile(fg.from_torch(net, x))(x), net(x))
            continue
        with pytest.raises(fg.GraphError, match=message):
            fg.from_torch(net, x)


class _Call(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)
