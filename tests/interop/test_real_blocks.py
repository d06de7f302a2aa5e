"""The distinctive blocks of the torchvision classification families, written as published, converted
unmodified with fg.from_torch: forward and every gradient equal torch's (fp32: rtol 1e-4, atol 1e-5;
batch norms with batch statistics, dropout off), and the same blocks through torch.compile with no
eager fallback."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fusegraph as fg
from fusegraph.interop import dynamo
from tests.conftest import KERNEL_ATOL, KERNEL_RTOL
from tests.interop.test_sharing import BasicBlockNet


class Fire(nn.Module):
    """SqueezeNet's Fire module (torchvision.models.squeezenet), after its ceil-mode max pool stem."""

    def __init__(self, inplanes=8, squeeze=4, expand=6):
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


class SqueezeNetish(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, kernel_size=3, stride=2), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True), Fire(),
                                      nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True))
        self.classifier = nn.Sequential(nn.Dropout(p=0.0), nn.Conv2d(12, 5, kernel_size=1), nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d((1, 1)))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


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


class InvertedResidual(nn.Module):
    """torchvision MobileNetV2's block: 1x1 expand (BN, ReLU6), 3x3 depthwise (BN, ReLU6), 1x1 project (BN),
    and the residual."""

    def __init__(self, inp=8, expand=4):
        super().__init__()
        torch.manual_seed(4)
        hidden = inp * expand
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, inp, 1, 1, 0, bias=False), nn.BatchNorm2d(inp))
        self.head = nn.Linear(inp, 3)

    def forward(self, x):
        x = x + self.conv(x)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class ResNeXtBottleneck(nn.Module):
    """torchvision's Bottleneck with groups (ResNeXt): 1x1, grouped 3x3, 1x1, a downsampling shortcut, and
    one self.relu called three times."""

    def __init__(self, inplanes=8, planes=8, groups=4, base_width=8):
        super().__init__()
        torch.manual_seed(5)
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=2, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 2, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 2)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 2, 1, stride=2, bias=False),
                                        nn.BatchNorm2d(planes * 2))
        self.fc = nn.Linear(planes * 2, 3)

    def forward(self, x):
        identity = self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.relu(self.bn3(self.conv3(out)) + identity)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, (1, 1)), 1))


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


class MobileNetV3Block(nn.Module):
    """torchvision MobileNetV3's InvertedResidual with hardswish, a depthwise conv and squeeze-excitation
    (hardsigmoid gate); EfficientNet's MBConv is the same with SiLU and a sigmoid gate."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.block = nn.Sequential(
            nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish(inplace=True),
            nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16), nn.Hardswish(inplace=True),
            SqueezeExcitation(16, 8, scale_activation=nn.Hardsigmoid),
            nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = x + self.block(x)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


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


class RegNetBlock(nn.Module):
    """torchvision RegNet's ResBottleneckBlock (Y variant): 1x1, grouped 3x3 with stride 2 (group width 4),
    squeeze-excitation (ReLU, sigmoid gate), 1x1, a projected shortcut, `proj(x) + f(x)`, the activation."""

    def __init__(self, width_in=8, width_out=16, group_width=4, se_ratio=0.25):
        super().__init__()
        torch.manual_seed(9)
        self.proj = conv_norm_activation(width_in, width_out, 1, stride=2, activation=None)
        self.f = nn.Sequential(conv_norm_activation(width_in, width_out, 1, activation=nn.ReLU),
                               conv_norm_activation(width_out, width_out, 3, stride=2,
                                                    groups=width_out // group_width, activation=nn.ReLU),
                               SqueezeExcitation(width_out, int(round(se_ratio * width_in)), activation=nn.ReLU),
                               conv_norm_activation(width_out, width_out, 1, activation=None))
        self.activation = nn.ReLU(inplace=True)
        self.head = nn.Linear(width_out, 3)

    def forward(self, x):
        x = self.activation(self.proj(x) + self.f(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


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


class TimmBasicBlock(nn.Module):
    """timm's ResNet BasicBlock as published (drop_block and aa as nn.Identity, `x += shortcut`), with the
    "d" variants' average-pool shortcut (timm's downsample_avg: a ceil-mode 2x2 average pool not counting
    padding, a 1x1 conv, batch norm)."""

    def __init__(self, inplanes=8, planes=12, stride=2):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.drop_block = nn.Identity()
        self.act1 = nn.ReLU(inplace=True)
        self.aa = nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False),
                                        nn.Conv2d(inplanes, planes, 1, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        shortcut = x
        x = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
        x = self.bn2(self.conv2(x))
        shortcut = self.downsample(shortcut)
        x += shortcut
        return self.act2(x)


class TimmResNet10tish(nn.Module):
    """timm's resnet10t at small widths: the "deep tiered" stem (three 3x3 convs, the first strided), batch
    norm, act, a padded 3x3 max pool, one TimmBasicBlock with the average-pool shortcut, global pool, fc."""

    def __init__(self, stem_width=8):
        super().__init__()
        torch.manual_seed(11)
        stem_chs = (3 * (stem_width // 4), stem_width)
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, stem_chs[0], 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(stem_chs[0]),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem_chs[0], stem_chs[1], 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(stem_chs[1]),
            nn.ReLU(inplace=True), nn.Conv2d(stem_chs[1], 8, 3, stride=1, padding=1, bias=False))
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = TimmBasicBlock()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.fc(self.flatten(self.global_pool(self.layer1(x))))


class LayerNorm2d(nn.LayerNorm):
    """torchvision.models.convnext.LayerNorm2d as published."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlockish(nn.Module):
    """torchvision's CNBlock: a 7x7 depthwise conv, permute to channels-last, LayerNorm, Linear - GELU -
    Linear over channels, permute back, the layer scale (a (C, 1, 1) Parameter), the residual (stochastic
    depth is the identity in evaluation); a LayerNorm2d after."""

    def __init__(self, dim=8):
        super().__init__()
        torch.manual_seed(7)
        self.block = nn.Sequential(nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.layer_scale = nn.Parameter(torch.rand(dim, 1, 1) + 0.5)
        self.down = LayerNorm2d(dim, eps=1e-6)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        h = self.block(x).permute(0, 2, 3, 1)
        h = self.layer_scale * self.pwconv2(F.gelu(self.pwconv1(self.norm(h)))).permute(0, 3, 1, 2)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.down(h + x), 1), 1))


def channel_shuffle(x, groups: int):
    """torchvision.models.shufflenetv2.channel_shuffle as published."""
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    x = x.view(batchsize, num_channels, height, width)
    return x


class ShuffleNetV2Block(nn.Module):
    """torchvision ShuffleNetV2's InvertedResidual at stride 1: half the channels through a 1x1 - depthwise
    3x3 - 1x1 branch, the halves joined and shuffled."""

    def __init__(self, branch_features=4):
        super().__init__()
        torch.manual_seed(8)
        self.branch2 = nn.Sequential(
            nn.Conv2d(branch_features, branch_features, 1, bias=False), nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
            nn.Conv2d(branch_features, branch_features, 3, 1, 1, groups=branch_features, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.Conv2d(branch_features, branch_features, 1, bias=False), nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True))
        self.head = nn.Linear(2 * branch_features, 3)

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        out = channel_shuffle(torch.cat((x1, self.branch2(x2)), dim=1), 2)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class _DenseLayer(nn.Module):
    """torchvision.models.densenet._DenseLayer as published (its list-of-features input, the memory-efficient
    branch off)."""

    def __init__(self, num_input_features, growth_rate, bn_size, drop_rate, memory_efficient=False):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, kernel_size=1, stride=1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient

    def bn_function(self, inputs):
        concated_features = torch.cat(inputs, 1)
        return self.conv1(self.relu1(self.norm1(concated_features)))

    def forward(self, input):
        prev_features = [input] if isinstance(input, torch.Tensor) else input
        bottleneck_output = self.bn_function(prev_features)
        new_features = self.conv2(self.relu2(self.norm2(bottleneck_output)))
        if self.drop_rate > 0:
            new_features = F.dropout(new_features, p=self.drop_rate, training=self.training)
        return new_features


class DenseNetish(nn.Module):
    """torchvision's DenseNet: a dense block (every layer reads the concatenation of all before it) and a
    transition (BN, ReLU, 1x1 conv, 2x2 average pool)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(9)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        self.layers = nn.ModuleList([_DenseLayer(8 + i * 4, growth_rate=4, bn_size=2, drop_rate=0.0) for i in range(2)])
        self.transition = nn.Sequential(nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.Conv2d(16, 8, 1, bias=False),
                                        nn.AvgPool2d(kernel_size=2, stride=2))
        self.norm = nn.BatchNorm2d(8)
        self.classifier = nn.Linear(8, 3)

    def forward(self, x):
        features = [self.stem(x)]
        for layer in self.layers:
            features.append(layer(features))
        out = F.relu(self.norm(self.transition(torch.cat(features, 1))), inplace=True)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1))


BLOCKS = [(BasicBlockNet, (2, 3, 6, 6)),
          (SqueezeNetish, (2, 3, 21, 21)), (InceptionBranchPool, (2, 3, 11, 11)), (VGGBNish, (2, 3, 12, 12)),
          (AlexNetish, (2, 3, 23, 23)), (InvertedResidual, (2, 8, 6, 6)), (ResNeXtBottleneck, (2, 8, 6, 6)),
          (MobileNetV3Block, (2, 8, 5, 5)), (ConvNeXtBlockish, (2, 8, 5, 5)), (ShuffleNetV2Block, (2, 8, 5, 5)),
          (DenseNetish, (2, 3, 8, 8)), (MBConv, (2, 8, 5, 5)),
          (lambda: ResNeXtBottleneck(groups=1, base_width=128), (2, 8, 6, 6)), (RegNetBlock, (2, 8, 6, 6)),
          (MNASNetBlock, (2, 3, 8, 8)), (TimmResNet10tish, (2, 3, 18, 18))]
IDS = ["resnet", "squeezenet", "googlenet", "vgg_bn", "alexnet", "mobilenet_v2", "resnext", "mobilenet_v3", "convnext",
       "shufflenet_v2", "densenet", "efficientnet",
       "wide_resnet", "regnet", "mnasnet", "timm_resnet10t"]


@pytest.mark.parametrize("build,shape", BLOCKS, ids=IDS)
def test_the_block_converts_and_matches_torch_forward_and_backward(build, shape):
    net = build().train()
    x, y = torch.randn(shape), torch.randint(0, 3, (shape[0],))
    model = fg.from_torch(net, x)
    with torch.no_grad():
        torch.testing.assert_close(fg.compile(model)(x), build().eval()(x), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    value, grads = fg.compile(model, loss="cross_entropy").loss_and_grads(x, y)
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


@pytest.mark.parametrize("build,shape", BLOCKS, ids=IDS)
def test_the_block_runs_under_the_backend_with_no_eager_node(build, shape):
    assert_runs_under_the_backend_with_no_eager_node(build().eval(), torch.randn(shape))
