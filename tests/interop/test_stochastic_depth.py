"""Stochastic depth: fusegraph's StochasticDepth layer against torch (the mask it drew, recovered from its
output, applied by torch: forward and torch.autograd's gradients), and torchvision's StochasticDepth and
timm's DropPath converted unmodified (replicas as published, known by their defining module) inside
EfficientNet's MBConv block. fp32 tolerances as elsewhere (KERNEL_RTOL / KERNEL_ATOL)."""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fusegraph as fg
from fusegraph.interop import dynamo
from tests.conftest import KERNEL_ATOL, KERNEL_RTOL
from tests.interop.test_real_blocks import DropPath, MBConv, StochasticDepth


def test_stochastic_depth_drops_whole_samples_and_its_gradient_is_torchs_through_that_mask():
    torch.manual_seed(0)
    x = fg.Input((3, 5, 5))
    model = fg.Model(x, fg.StochasticDepth(0.5, seed=4)(fg.Conv2D(6, 3, padding="same", name="conv")(x)))
    module = fg.compile(model).to_module().train()
    images = torch.randn(16, 3, 5, 5)
    out = module(images)
    kept = out.flatten(1).ne(0).any(1)
    assert 0 < int(kept.sum()) < 16  # some samples dropped, some kept
    weight, bias = (dict(module.named_parameters())[f"conv.{k}"].detach().clone().requires_grad_()
                    for k in ("weight", "bias"))
    mask = kept.float()[:, None, None, None] / 0.5
    expected = F.conv2d(images, weight, bias, padding=1) * mask
    torch.testing.assert_close(out, expected, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    upstream = torch.randn_like(out)
    out.backward(upstream)
    expected.backward(upstream)
    params = dict(module.named_parameters())
    torch.testing.assert_close(params["conv.weight"].grad, weight.grad, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    torch.testing.assert_close(params["conv.bias"].grad, bias.grad, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    with torch.no_grad():
        torch.testing.assert_close(module.eval()(images), F.conv2d(images, weight, bias, padding=1),
                                   rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


@pytest.mark.parametrize("drop", [StochasticDepth(0.25, "row"), DropPath(0.25)], ids=["torchvision", "timm"])
def test_the_published_drop_path_modules_convert_to_stochastic_depth(drop):
    net = MBConv(drop).eval()
    x = torch.randn(2, 8, 5, 5)
    model = fg.from_torch(net, x)
    (layer,) = [layer for layer in model.layers if isinstance(layer, fg.StochasticDepth)]
    assert layer.rate == 0.25
    with torch.no_grad():
        torch.testing.assert_close(fg.compile(model)(x), net(x), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


@pytest.mark.parametrize("drop,message", [(StochasticDepth(0.2, "batch"), "mode='batch'"),
                                          (DropPath(0.2, scale_by_keep=False), "scale_by_keep=False")])
def test_drop_paths_fusegraph_cannot_compute_are_refused_naming_the_module(drop, message):
    with pytest.raises(fg.GraphError, match=rf"module 'stochastic_depth' .*{message}"):
        fg.from_torch(MBConv(drop), torch.randn(2, 8, 5, 5))


class Residual(nn.Module):
    """x + drop(conv(x)): the branch a stochastic depth module drops, in training."""

    def __init__(self, drop):
        super().__init__()
        torch.manual_seed(2)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.drop = drop

    def forward(self, x):
        return x + self.drop(self.conv(x))


@pytest.mark.parametrize("drop", [StochasticDepth(0.5, "row"), DropPath(0.5)], ids=["torchvision", "timm"])
def test_under_the_backend_in_training_the_inlined_mask_is_fusegraphs_stochastic_depth(drop):
    """Dynamo inlines the module (empty or new_empty, bernoulli_, div_, mul): all of it runs on fusegraph's
    kernels; each sample's branch is dropped whole or scaled by 2, and the gradient is torch's through that
    mask."""
    net = Residual(drop).train()
    x = torch.randn(16, 3, 5, 5)
    torch._dynamo.reset()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", dynamo.FusegraphFallbackWarning)
            out = torch.compile(net, backend="fusegraph")(x)
        branch = out - x
        kept = branch.detach().flatten(1).ne(0).any(1)
        assert 0 < int(kept.sum()) < 16
        weight, bias = (p.detach().clone().requires_grad_() for p in (net.conv.weight, net.conv.bias))
        expected = x + F.conv2d(x, weight, bias, padding=1) * (kept.float()[:, None, None, None] / 0.5)
        torch.testing.assert_close(out, expected, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
        upstream = torch.randn_like(out)
        out.backward(upstream)
        expected.backward(upstream)
        torch.testing.assert_close(net.conv.weight.grad, weight.grad, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
        torch.testing.assert_close(net.conv.bias.grad, bias.grad, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    finally:
        torch._dynamo.reset()


def test_under_the_backend_a_mask_fusegraph_cannot_draw_runs_eager_with_the_nodes_making_it():
    """mode='batch' (one draw for the whole batch): the mask's nodes and its product run as eager torch, in
    order (torch's own random numbers: equal to eager under one seed), the rest on fusegraph."""
    net = Residual(StochasticDepth(0.5, "batch")).train()
    eager = copy.deepcopy(net)
    x = torch.randn(4, 3, 5, 5)
    torch._dynamo.reset()
    try:
        torch.manual_seed(5)
        with pytest.warns(dynamo.FusegraphFallbackWarning, match=r"(?s)runs 4 of .* noise \(empty\): makes the "
                                                                 r"random mask .*multiplies by random numbers"):
            out = torch.compile(net, backend="fusegraph")(x)
        torch.manual_seed(5)
        expected = eager(x)
        torch.testing.assert_close(out, expected, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
        out.sum().backward()
        expected.sum().backward()
        torch.testing.assert_close(net.conv.weight.grad, eager.conv.weight.grad, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    finally:
        torch._dynamo.reset()
