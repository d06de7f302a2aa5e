"""Every op's generated kernel, through the layers that use it, against real torch.nn modules
(fp32, rtol 1e-4): batch 1, odd and non-square sizes, stride 2, dilation 2, 'same', channel
counts that are not multiples of the block, and sizes spanning several programs."""

import pytest
import torch

import fusegraph as fg
from fusegraph.nn.activations import ACTIVATIONS
from tests.conftest import assert_compiled_matches_torch, assert_grads_match_torch, feeds_for, single_layer, targets_for

pytestmark = pytest.mark.usefixtures("small_tiles")  # sizes spanning several programs: the interpreter's small tiles

CONV2D = [
    dict(filters=5, kernel_size=3),
    dict(filters=7, kernel_size=(3, 2), strides=2, activation="relu"),
    dict(filters=3, kernel_size=3, strides=2, padding="same", activation="tanh"),
    dict(filters=6, kernel_size=3, dilation=2, padding="same", activation="sigmoid"),
    dict(filters=2, kernel_size=3, padding=(1, 2), use_bias=False, activation="leaky_relu"),
    dict(filters=130, kernel_size=1),  # more output channels than one block
]


@pytest.mark.parametrize("config", CONV2D)
@pytest.mark.parametrize("batch,shape", [(1, (3, 9, 7)), (3, (2, 13, 11))])
def test_conv2d(config, batch, shape):
    model = single_layer(fg.Conv2D(**config), shape)
    assert_compiled_matches_torch(model, feeds_for(model, batch))


def test_conv2d_reduction_longer_than_a_block():
    model = single_layer(fg.Conv2D(4, 5, padding="same"), (9, 6, 6))  # K = 9*25 = 225 > 128
    assert_compiled_matches_torch(model, feeds_for(model, 2))


@pytest.mark.parametrize("config", [
    dict(filters=4, kernel_size=3), dict(filters=3, kernel_size=4, strides=3, padding="same", activation="relu"),
    dict(filters=5, kernel_size=3, dilation=2, padding=2),
])
@pytest.mark.parametrize("batch", [1, 2])
def test_conv1d(config, batch):
    model = single_layer(fg.Conv1D(**config), (2, 13))
    assert_compiled_matches_torch(model, feeds_for(model, batch))


POOLS = [dict(pool_size=2), dict(pool_size=3, strides=2), dict(pool_size=2, padding="same"),
         dict(pool_size=3, strides=1, padding="same"), dict(pool_size=(3, 2), strides=(2, 1), padding=1),
         dict(pool_size=2, strides=1, padding="same")]


@pytest.mark.parametrize("layer_cls", [fg.MaxPool2D, fg.AvgPool2D])
@pytest.mark.parametrize("config", POOLS)
def test_pool2d(layer_cls, config):
    model = single_layer(layer_cls(**config), (3, 7, 9))
    assert_compiled_matches_torch(model, feeds_for(model, 2))


@pytest.mark.parametrize("layer_cls", [fg.MaxPool1D, fg.AvgPool1D])
@pytest.mark.parametrize("config", [dict(pool_size=2), dict(pool_size=3, strides=2, padding="same")])
def test_pool1d(layer_cls, config):
    model = single_layer(layer_cls(**config), (3, 11))
    assert_compiled_matches_torch(model, feeds_for(model, 1))


@pytest.mark.parametrize("layer,shape", [(fg.GlobalAvgPool2D(), (5, 7, 3)), (fg.GlobalAvgPool1D(), (4, 9))])
def test_global_avg_pool(layer, shape):
    model = single_layer(layer, shape)
    assert_compiled_matches_torch(model, feeds_for(model, 3))


@pytest.mark.parametrize("activation", [a for a in ACTIVATIONS if a != "linear"] + [None])
@pytest.mark.parametrize("shape", [(6,), (5, 6)])
def test_dense(activation, shape):
    model = single_layer(fg.Dense(9, activation=activation), shape)
    assert_compiled_matches_torch(model, feeds_for(model, 3))


def test_dense_larger_than_a_block():
    model = fg.Sequential([fg.Input((300,)), fg.Dense(270, activation="tanh")])
    assert_compiled_matches_torch(model, feeds_for(model, 300))


def test_tanh_and_sigmoid_are_accurate_and_saturate():
    x = fg.Input((8,))
    model = fg.Model(x, [fg.Activation("tanh")(x), fg.Activation("sigmoid")(x)])
    values = torch.tensor([[0.0, 1e-7, -3e-3, 0.05, 0.07, -0.9, 30.0, -100.0]])
    assert_compiled_matches_torch(model, [values], rtol=1e-6, atol=1e-7)


def test_flatten_embedding_add_concatenate():
    a, b = fg.Input((3, 4, 4)), fg.Input((3, 4, 4))
    s = fg.Add()([a, b])
    c = fg.Concatenate(axis=1)([s, a, b])
    f = fg.Flatten()(c)
    model = fg.Model([a, b], [s, c, f])
    assert_compiled_matches_torch(model, feeds_for(model, 2))
    model = single_layer(fg.Embedding(11, 5), (7,), dtype="int64")
    assert_compiled_matches_torch(model, feeds_for(model, 3, vocab=11))


@pytest.mark.parametrize("rnn_cls", [fg.SimpleRNN, fg.LSTM, fg.GRU])
@pytest.mark.parametrize("return_sequences,bidirectional", [(False, False), (True, True), (False, True)])
@pytest.mark.parametrize("batch", [1, 3])
def test_recurrent(rnn_cls, return_sequences, bidirectional, batch):
    layer = rnn_cls(5, return_sequences=return_sequences, bidirectional=bidirectional)
    model = single_layer(layer, (4, 3), seed=batch)
    assert_compiled_matches_torch(model, feeds_for(model, batch, seed=batch))


def test_stacked_recurrent():
    x = fg.Input((5, 2))
    h = fg.GRU(4, return_sequences=True, bidirectional=True)(x)
    y = fg.LSTM(3)(h)
    model = fg.Model(x, y)
    assert_compiled_matches_torch(model, feeds_for(model, 2))


@pytest.mark.parametrize("name", list(fg.zoo.MODELS))
def test_zoo(name):
    model = fg.zoo.get(name)
    assert_compiled_matches_torch(model, feeds_for(model, 2, vocab=1000))


@pytest.mark.parametrize("layer,shape", [
    (fg.MaxPool2D(3, strides=2, padding=1, ceil_mode=True), (2, 8, 7)),
    (fg.AvgPool2D(3, strides=2, padding=1, ceil_mode=True, count_include_pad=True), (2, 7, 8)),
    (fg.AvgPool2D(3, strides=1, padding=1, count_include_pad=True), (2, 5, 5)),
    (fg.AvgPool2D(2, strides=2, ceil_mode=True), (1, 7, 9)),
    (fg.MaxPool1D(3, strides=2, ceil_mode=True), (2, 10)),
    (fg.AvgPool1D(3, strides=2, padding=1, ceil_mode=True, count_include_pad=True), (2, 9)),
])
def test_pools_with_torchs_ceil_mode_and_counted_padding(layer, shape):
    """Against nn.MaxPool / nn.AvgPool built with the same ceil_mode and count_include_pad; the gradient
    against torch.autograd through them."""
    model = fg.Sequential([fg.Input(shape), layer, fg.Flatten(), fg.Dense(2)])
    feeds = feeds_for(model, 3)
    assert_compiled_matches_torch(model, feeds)
    assert_grads_match_torch(model, feeds, targets_for(model, "mse", 3), "mse")


@pytest.mark.parametrize("layer,shape", [
    (fg.AdaptiveAvgPool2D((7, 7)), (2, 1, 1)), (fg.AdaptiveAvgPool2D((3, 2)), (2, 5, 7)),
    (fg.AdaptiveMaxPool2D((4, 7)), (2, 3, 5)), (fg.AdaptiveMaxPool2D(2), (2, 6, 6)), (fg.AdaptiveAvgPool1D(4), (2, 9)),
])
def test_adaptive_pools_take_torchs_bins(layer, shape):
    """Against nn.AdaptiveAvgPool / nn.AdaptiveMaxPool: sizes that do not divide the input, and sizes
    over it (positions repeated); the gradient against torch.autograd."""
    model = fg.Sequential([fg.Input(shape), layer, fg.Flatten(), fg.Dense(2)])
    feeds = feeds_for(model, 3)
    assert_compiled_matches_torch(model, feeds)
    assert_grads_match_torch(model, feeds, targets_for(model, "mse", 3), "mse")


@pytest.mark.parametrize("channels,filters,groups,kernel", [(4, 8, 4, 3), (8, 8, 8, 3), (6, 12, 3, 1), (32, 64, 2, 3)],
                         ids=["depthwise x2", "depthwise", "grouped 1x1", "grouped tap by tap"])
@pytest.mark.parametrize("tiles", ["large", "small"])
def test_grouped_and_depthwise_convs(channels, filters, groups, kernel, tiles):
    """Against nn.Conv2d(groups=...) with a batch norm and ReLU6 after it, forward and every gradient
    (the input's through the second conv); small tiles: several column blocks of a group, split-K."""
    from fusegraph.kernels.target import interpreter_tiles

    model = fg.Sequential([fg.Input((channels, 5, 5)),
                           fg.Conv2D(filters, kernel, padding="same", groups=groups, activation="relu6"),
                           fg.BatchNorm2D(), fg.Conv2D(filters, 3, strides=2, groups=groups), fg.Flatten(), fg.Dense(2)])
    feeds = feeds_for(model, 3)
    with interpreter_tiles(tiles):
        assert_compiled_matches_torch(model, feeds)
        assert_grads_match_torch(model, feeds, targets_for(model, "mse", 3), "mse")


def test_a_grouped_conv1d():
    model = fg.Sequential([fg.Input((6, 11)), fg.Conv1D(12, 3, padding="same", groups=3), fg.Flatten(), fg.Dense(2)])
    feeds = feeds_for(model, 2)
    assert_compiled_matches_torch(model, feeds)
    assert_grads_match_torch(model, feeds, targets_for(model, "mse", 2), "mse")


@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
def test_squeeze_excitation_layers(memory_format):
    """ChannelScale (x * s[:, :, None, None]), Multiply and Reshape against their torch sides (the gate
    from a kept global average, as torchvision's SqueezeExcitation), forward and every gradient."""
    x = fg.Input((4, 5, 5))
    h = fg.Conv2D(4, 3, padding="same", activation="relu", name="conv")(x)
    kept = fg.Reshape((4, 1, 1))(fg.GlobalAvgPool2D()(h))
    gate = fg.Conv2D(4, 1, activation="sigmoid", name="gate")(fg.Conv2D(2, 1, activation="relu", name="squeeze")(kept))
    y = fg.Multiply()([fg.ChannelScale(name="se")([h, fg.Flatten()(gate)]), h])
    model = fg.Model(x, fg.Dense(2)(fg.GlobalAvgPool2D()(y)))
    feeds = feeds_for(model, 3)
    assert_compiled_matches_torch(model, feeds, memory_format=memory_format)
    assert_grads_match_torch(model, feeds, targets_for(model, "mse", 3), "mse", memory_format=memory_format)


@pytest.mark.parametrize("tiles", ["large", "small"])
def test_layer_norm_and_dense_over_the_last_axis_of_a_map(tiles):
    """LayerNorm against nn.LayerNorm, on sequences and on a (batch, height, width, channels) map as
    ConvNeXt has it (and Dense over its last axis, as nn.Linear), forward and every gradient."""
    from fusegraph.kernels.target import interpreter_tiles

    model = fg.Sequential([fg.Input((4, 3, 6)), fg.LayerNorm(eps=1e-6), fg.Dense(7, activation="gelu"),
                           fg.LayerNorm(), fg.Flatten(), fg.Dense(2)])
    feeds = feeds_for(model, 3)
    with interpreter_tiles(tiles):
        assert_compiled_matches_torch(model, feeds)
        assert_grads_match_torch(model, feeds, targets_for(model, "mse", 3), "mse")


def test_split_and_channel_shuffle():
    """Split (torch.chunk / torch.split) and ChannelShuffle (torchvision's channel_shuffle) against their
    torch sides, forward and every gradient (the shuffle's is the shuffle in the other grouping)."""
    x = fg.Input((12, 3, 4))
    a, b, c = fg.Split((4, 6, 2))(x)
    joined = fg.Concatenate()([fg.Conv2D(6, 3, padding="same", activation="relu")(b), a, c])
    shuffled = fg.ChannelShuffle(3)(fg.ChannelShuffle(2)(joined))
    model = fg.Model(x, fg.Dense(2)(fg.Flatten()(shuffled)))
    feeds = feeds_for(model, 3)
    assert_compiled_matches_torch(model, feeds)
    assert_grads_match_torch(model, feeds, targets_for(model, "mse", 3), "mse")


def test_layer_scale_joins_the_epilogue_and_trains_like_torch():
    model = fg.Sequential([fg.Input((4, 5, 5)), fg.Conv2D(4, 3, padding="same"), fg.LayerScale(0.5, name="ls"),
                           fg.Activation("relu"), fg.Flatten(), fg.Dense(6), fg.LayerScale(2.0), fg.Dense(2)])
    feeds = feeds_for(model, 3)
    compiled = assert_compiled_matches_torch(model, feeds)
    assert compiled.kernel_names[0] == "conv2d_bias_add_channel_mul_relu" and model.params["ls.weight"].shape == (4, 1, 1)
    assert_grads_match_torch(model, feeds, targets_for(model, "mse", 3), "mse")
