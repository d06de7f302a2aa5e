"""Stochastic depth: fusegraph's StochasticDepth layer against torch (the mask it drew, recovered from its
output, applied by torch: forward and torch.autograd's gradients), and torchvision's StochasticDepth and
timm's DropPath converted unmodified (replicas as published, known by their defining module) inside
EfficientNet's MBConv block. fp32 tolerances as elsewhere (KERNEL_RTOL / KERNEL_ATOL)."""

import pytest
import torch
import torch.nn.functional as F

import fusegraph as fg
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
