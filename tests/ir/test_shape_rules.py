"""Shape rules against PyTorch: every output shape the DSL infers is the shape torch computes.

Property tests draw sizes, kernels, strides, dilations and paddings; torch runs the op on a real
tensor; where torch cannot produce an output, fusegraph must raise a GraphError instead.
"""

from math import ceil

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import fusegraph as fg
from tests.conftest import assert_matches_torch, single_layer

paddings = st.one_of(st.sampled_from(["valid", "same"]), st.integers(0, 2))


def keras_same(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """Keras' documented 'same': output ceil(size / stride), the odd pad at the end."""
    total = max((ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def torch_pads(padding, sizes, ks, ss, ds):
    if padding == "valid":
        return [(0, 0)] * len(sizes)
    if padding == "same":
        return [keras_same(n, k, s, d) for n, k, s, d in zip(sizes, ks, ss, ds)]
    return [(padding, padding)] * len(sizes)


def flat(pads):
    return [p for pair in reversed(pads) for p in pair]


def torch_conv_shape(ndim, sizes, k, s, d, padding):
    x = torch.zeros(1, 2, *sizes)
    w = torch.zeros(3, 2, *([k] * ndim))
    pads = torch_pads(padding, sizes, [k] * ndim, [s] * ndim, [d] * ndim)
    conv = F.conv1d if ndim == 1 else F.conv2d
    try:
        return tuple(conv(F.pad(x, flat(pads)), w, stride=s, dilation=d).shape[1:])
    except RuntimeError:
        return None


@settings(max_examples=60, deadline=None)
@given(ndim=st.sampled_from([1, 2]), sizes=st.lists(st.integers(1, 11), min_size=2, max_size=2),
       k=st.integers(1, 5), s=st.integers(1, 3), d=st.integers(1, 3), padding=paddings)
def test_conv_shapes_match_torch(ndim, sizes, k, s, d, padding):
    sizes = sizes[:ndim]
    layer_cls = fg.Conv1D if ndim == 1 else fg.Conv2D
    expected = torch_conv_shape(ndim, sizes, k, s, d, padding)
    layer = layer_cls(3, k, strides=s, padding=padding, dilation=d)
    if expected is None:
        try:
            single_layer(layer, (2, *sizes))
        except fg.GraphError as error:
            assert "larger than the padded input" in str(error)
            return
        raise AssertionError("torch rejects this convolution but fusegraph accepted it")
    model = single_layer(layer, (2, *sizes))
    assert model.output_shape == expected
    if padding == "same":
        assert expected[1:] == tuple(ceil(n / s) for n in sizes)
    assert_matches_torch(model, [torch.randn(2, 2, *sizes)])


@settings(max_examples=60, deadline=None)
@given(ndim=st.sampled_from([1, 2]), kind=st.sampled_from(["max", "avg"]),
       sizes=st.lists(st.integers(1, 11), min_size=2, max_size=2), k=st.integers(1, 4),
       s=st.one_of(st.none(), st.integers(1, 3)), padding=paddings)
def test_pool_shapes_match_torch(ndim, kind, sizes, k, s, padding):
    sizes = sizes[:ndim]
    stride = k if s is None else s
    layer_cls = {("max", 1): fg.MaxPool1D, ("max", 2): fg.MaxPool2D,
                 ("avg", 1): fg.AvgPool1D, ("avg", 2): fg.AvgPool2D}[kind, ndim]
    pads = torch_pads(padding, sizes, [k] * ndim, [stride] * ndim, [1] * ndim)
    pool = {1: F.max_pool1d, 2: F.max_pool2d}[ndim]
    x = F.pad(torch.zeros(1, 2, *sizes), flat(pads), value=float("-inf"))
    try:
        expected = None if max(max(p) for p in pads) > k // 2 else tuple(pool(x, k, stride).shape[1:])
    except RuntimeError:
        expected = None
    layer = layer_cls(k, strides=s, padding=padding)
    if expected is None or 0 in expected:
        try:
            single_layer(layer, (2, *sizes))
        except fg.GraphError as error:
            assert "padding" in str(error) or "empty" in str(error)
            return
        raise AssertionError("torch cannot pool this way but fusegraph accepted it")
    model = single_layer(layer, (2, *sizes))
    assert model.output_shape == expected
    if padding == "same":
        assert expected[1:] == tuple(ceil(n / stride) for n in sizes)
    assert_matches_torch(model, [torch.randn(3, 2, *sizes)])
