"""Faithful replicas of the distinctive blocks of the torchvision families whose published models are
too slow to train in the interpreter's suite (GoogLeNet, VGG-BN, AlexNet, MNASNet: their published code is
checked in evaluation and under the backend by tests/interop/test_published_models.py), converted
unmodified with fg.from_torch: forward and every gradient equal torch's (fp32: rtol 1e-4, atol 1e-5;
batch norms with batch statistics, dropout off). The stochastic-depth replicas serve
tests/interop/test_stochastic_depth.py; the backend check serves both files."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fusegraph as fg
from fusegraph.interop import dynamo
from tests.conftest import KERNEL_ATOL, KERNEL_RTOL


class InceptionBranchPool(nn.Module):
    """GoogLeNet's pool branch and stem: a 3x3 average pool with stride 1 and padding 1 counting its padding
    (count_include_pad=True, torch's default), beside a ceil-mode max pool with padding."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6, eps=0.001)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.branch = nn.Conv2d(6, 4, 1)
        self.fc = nn.Linear(10, 3)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn(self.conv(x)), inplace=True))
        pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)
        x = torch.cat([F.relu(self.branch(pooled)), x], 1)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class VGGBNish(nn.Module):
    """torchvision's VGG with batch norm (make_layers) and its AdaptiveAvgPool2d((7, 7)) head, at an input
    small enough that the features are smaller than 7 x 7 (the pool repeats positions)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        layers, channels = [], 3
        for v in (6, "M", 8, "M"):
            if v == "M":
                layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(8 * 7 * 7, 12), nn.ReLU(True), nn.Dropout(p=0.0), nn.Linear(12, 3))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class AlexNetish(nn.Module):
    """torchvision's AlexNet: overlapping 3x3 stride-2 max pools and AdaptiveAvgPool2d((6, 6)) from 2 x 2."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.features = nn.Sequential(nn.Conv2d(3, 6, kernel_size=5, stride=2, padding=2), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(kernel_size=3, stride=2), nn.Conv2d(6, 8, kernel_size=3, padding=1),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(nn.Dropout(p=0.0), nn.Linear(8 * 6 * 6, 10), nn.ReLU(inplace=True),
                                        nn.Linear(10, 3))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation as published: a kept global average, two 1x1 convs, the gate."""

    def __init__(self, input_channels, squeeze_channels, activation=nn.ReLU, scale_activation=nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def _scale(self, input):
        return self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(input)))))

    def forward(self, input):
        scale = self._scale(input)
        return scale * input


def stochastic_depth(input, p: float, mode: str, training: bool = True):
    """torchvision.ops.stochastic_depth as published (its logging call aside)."""
    if p < 0.0 or p > 1.0:
        raise ValueError(f"drop probability has to be between 0 and 1, but got {p}")
    if mode not in ["batch", "row"]:
        raise ValueError(f"mode has to be either 'batch' or 'row', but got {mode}")
    if not training or p == 0.0:
        return input
    survival_rate = 1.0 - p
    size = [input.shape[0]] + [1] * (input.ndim - 1) if mode == "row" else [1] * input.ndim
    noise = torch.empty(size, dtype=input.dtype, device=input.device)
    noise = noise.bernoulli_(survival_rate)
    if survival_rate > 0.0:
        noise.div_(survival_rate)
    return input * noise


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth as published."""

    def __init__(self, p: float, mode: str) -> None:
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, input):
        return stochastic_depth(input, self.p, self.mode, self.training)


StochasticDepth.__module__ = "torchvision.ops.stochastic_depth"


class DropPath(nn.Module):
    """timm.layers.drop.DropPath as published."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True):
        super().__init__()
        self.drop_prob, self.scale_by_keep = drop_prob, scale_by_keep

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
        if keep_prob > 0.0 and self.scale_by_keep:
            random_tensor.div_(keep_prob)
        return x * random_tensor


DropPath.__module__ = "timm.layers.drop"


def conv_norm_activation(cin, cout, kernel, stride=1, groups=1, activation=nn.SiLU):
    """torchvision.ops.Conv2dNormActivation: conv without bias, batch norm, the activation."""
    layers = [nn.Conv2d(cin, cout, kernel, stride=stride, padding=(kernel - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([activation(inplace=True)] if activation else []))


class MBConv(nn.Module):
    """torchvision EfficientNet's MBConv (expand ratio 4, kernel 3, stride 1: the residual is used) with its
    stochastic depth, then a head."""

    def __init__(self, drop=None, channels=8):
        super().__init__()
        torch.manual_seed(8)
        expanded = 4 * channels
        self.block = nn.Sequential(conv_norm_activation(channels, expanded, 1),
                                   conv_norm_activation(expanded, expanded, 3, groups=expanded),
                                   SqueezeExcitation(expanded, max(1, channels // 4), activation=nn.SiLU),
                                   conv_norm_activation(expanded, channels, 1, activation=None))
        self.stochastic_depth = drop if drop is not None else StochasticDepth(0.0, "row")
        self.head = nn.Linear(channels, 3)

    def forward(self, input):
        result = self.block(input)
        result = self.stochastic_depth(result)
        result += input
        return self.head(torch.flatten(F.adaptive_avg_pool2d(result, 1), 1))


class MNASNetBlock(nn.Module):
    """torchvision MNASNet's stem (3x3 stride 2, depthwise 3x3, 1x1) and an _InvertedResidual with a 5x5
    depthwise conv and the residual; batch norms with MNASNet's momentum 1 - 0.9997."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(10)
        momentum = 1 - 0.9997
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, stride=2, bias=False), nn.BatchNorm2d(8, momentum=momentum),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8, momentum=momentum),
            nn.ReLU(inplace=True), nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8, momentum=momentum))
        self.layers = nn.Sequential(
            nn.Conv2d(8, 24, 1, bias=False), nn.BatchNorm2d(24, momentum=momentum), nn.ReLU(inplace=True),
            nn.Conv2d(24, 24, 5, padding=2, groups=24, bias=False), nn.BatchNorm2d(24, momentum=momentum),
            nn.ReLU(inplace=True), nn.Conv2d(24, 8, 1, bias=False), nn.BatchNorm2d(8, momentum=momentum))
        self.classifier = nn.Sequential(nn.Dropout(p=0.0, inplace=True), nn.Linear(8, 3))

    def forward(self, x):
        x = self.stem(x)
        x = self.layers(x) + x
        return self.classifier(x.mean([2, 3]))


# NOTE: the families whose published code tests/interop/test_published_models.py trains in the suite are
# tested there; these replicas keep in the suite the gradients of those it checks only in evaluation there
BLOCKS = [(InceptionBranchPool, (2, 3, 11, 11)), (VGGBNish, (2, 3, 12, 12)), (AlexNetish, (2, 3, 23, 23)),
          (MNASNetBlock, (2, 3, 8, 8))]
IDS = ["googlenet", "vgg_bn", "alexnet", "mnasnet"]


@pytest.mark.parametrize("build,shape", BLOCKS, ids=IDS)
def test_the_block_converts_and_matches_torch_forward_and_backward(build, shape):
    net = build().train()
    x, y = torch.randn(shape), torch.randint(0, 3, (shape[0],))
    model = fg.from_torch(net, x)
    trainer = fg.compile(model, loss="cross_entropy")  # one compile: its calls are the inference program
    with torch.no_grad():
        torch.testing.assert_close(trainer(x), build().eval()(x), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    value, grads = trainer.loss_and_grads(x, y)
    net.zero_grad()
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    assert value == pytest.approx(loss.item(), rel=1e-5)
    parameters = dict(net.named_parameters())
    assert set(grads) == {ours for ours, theirs in model.torch_names.items() if theirs in parameters}
    for ours, grad in grads.items():
        torch.testing.assert_close(grad, parameters[model.torch_names[ours]].grad, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


def assert_runs_under_the_backend_with_no_eager_node(net: nn.Module, x: torch.Tensor) -> None:
    """torch.compile(net, backend="fusegraph") in evaluation: no FusegraphFallbackWarning, torch's result."""
    torch._dynamo.reset()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("error", dynamo.FusegraphFallbackWarning)
            got = torch.compile(net, backend="fusegraph")(x)
        torch.testing.assert_close(got, net(x), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    finally:
        torch._dynamo.reset()
