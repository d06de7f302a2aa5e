"""Each layer over a grid of configurations: IR interpreter == real torch.nn module (fp32, 1e-5),
and parameter counts equal torch's."""

import pytest
import torch

import fusegraph as fg
from tests.conftest import assert_matches_torch, feeds_for, single_layer


def torch_param_count(model: fg.Model) -> int:
    return sum(p.numel() for p in model.to_torch().parameters())


def test_conv2d_parameter_count_example():
    model = single_layer(fg.Conv2D(64, 3), (3, 32, 32))
    assert model.count_params() == 1792 == torch_param_count(model)


CONV2D_GRID = [
    dict(filters=5, kernel_size=3),
    dict(filters=4, kernel_size=(3, 2), strides=2),
    dict(filters=3, kernel_size=3, strides=2, padding="same", activation="relu"),
    dict(filters=6, kernel_size=3, dilation=2, activation="tanh"),
    dict(filters=2, kernel_size=3, padding=(1, 2), use_bias=False, activation="leaky_relu"),
    dict(filters=7, kernel_size=5, padding="same", dilation=2, activation="sigmoid"),
]


@pytest.mark.parametrize("config", CONV2D_GRID)
@pytest.mark.parametrize("batch,shape", [(1, (3, 9, 7)), (2, (1, 8, 8))])
def test_conv2d_grid(config, batch, shape):
    model = single_layer(fg.Conv2D(**config), shape)
    assert model.count_params() == torch_param_count(model)
    assert_matches_torch(model, feeds_for(model, batch))


@pytest.mark.parametrize("config", [
    dict(filters=4, kernel_size=3), dict(filters=3, kernel_size=4, strides=3, padding="same"),
    dict(filters=5, kernel_size=3, dilation=2, padding=2, activation="relu"),
])
def test_conv1d_grid(config):
    model = single_layer(fg.Conv1D(**config), (2, 13))
    assert model.count_params() == torch_param_count(model)
    assert_matches_torch(model, feeds_for(model, 2))


@pytest.mark.parametrize("layer_cls", [fg.MaxPool2D, fg.AvgPool2D])
@pytest.mark.parametrize("config", [
    dict(pool_size=2), dict(pool_size=3, strides=2), dict(pool_size=2, padding="same"),
    dict(pool_size=3, strides=1, padding="same"), dict(pool_size=(3, 2), strides=(2, 1), padding=1),
    dict(pool_size=2, strides=1, padding="same"), dict(pool_size=(4, 2), strides=(1, 2), padding="same"),
])
def test_pool2d_grid(layer_cls, config):
    model = single_layer(layer_cls(**config), (3, 7, 9))
    assert_matches_torch(model, feeds_for(model, 2))


@pytest.mark.parametrize("layer_cls", [fg.MaxPool1D, fg.AvgPool1D])
@pytest.mark.parametrize("config", [dict(pool_size=2), dict(pool_size=3, strides=2, padding="same"),
                                    dict(pool_size=4, strides=1, padding="same")])
def test_pool1d_grid(layer_cls, config):
    model = single_layer(layer_cls(**config), (3, 11))
    assert_matches_torch(model, feeds_for(model, 2))


@pytest.mark.parametrize("layer,shape", [(fg.GlobalAvgPool2D(), (4, 5, 3)), (fg.GlobalAvgPool1D(), (4, 7))])
def test_global_avg_pool(layer, shape):
    model = single_layer(layer, shape)
    assert model.output_shape == (4,)
    assert_matches_torch(model, feeds_for(model, 2))


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax", None])
@pytest.mark.parametrize("shape", [(6,), (5, 6)])
def test_dense_grid(activation, shape):
    model = single_layer(fg.Dense(4, activation=activation), shape)
    assert model.count_params() == torch_param_count(model) == 28
    assert_matches_torch(model, feeds_for(model, 3))


def test_dense_without_bias_flatten_and_activation_layer():
    x = fg.Input((2, 3, 4))
    y = fg.Activation("tanh")(fg.Dense(5, use_bias=False)(fg.Flatten()(x)))
    model = fg.Model(x, y)
    assert model.count_params() == 24 * 5 == torch_param_count(model)
    assert_matches_torch(model, feeds_for(model, 2))


def test_dropout_is_identity_at_inference_and_seeded_in_training():
    model = single_layer(fg.Dropout(0.5, seed=3), (64,))
    (x,) = feeds_for(model, 4)
    assert_matches_torch(model, [x])
    first = model.reference(x, training=True, seed=1)
    assert torch.equal(first, model.reference(x, training=True, seed=1))
    assert not torch.equal(first, model.reference(x, training=True, seed=2))
    kept = first != 0
    assert 0.2 < kept.float().mean() < 0.8
    torch.testing.assert_close(first[kept], x[kept] * 2)


def test_embedding_and_frozen_embedding():
    model = single_layer(fg.Embedding(11, 4, trainable=False), (5,), dtype="int64")
    assert model.count_params() == 44 == torch_param_count(model)
    assert model.count_params(trainable_only=True) == 0
    assert not any(p.requires_grad for p in model.to_torch().parameters())
    assert_matches_torch(model, feeds_for(model, 3, vocab=11))


def test_add_and_concatenate():
    a, b = fg.Input((3, 4, 4)), fg.Input((3, 4, 4))
    s = fg.Add()([a, b])
    c = fg.Concatenate(axis=1)([s, a, b])
    model = fg.Model([a, b], [s, c])
    assert model.output_shape == [(3, 4, 4), (9, 4, 4)]
    assert_matches_torch(model, feeds_for(model, 2))


RNN_KINDS = [fg.SimpleRNN, fg.LSTM, fg.GRU]


@pytest.mark.parametrize("rnn_cls", RNN_KINDS)
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_recurrent_grid(rnn_cls, return_sequences, bidirectional, batch):
    layer = rnn_cls(4, return_sequences=return_sequences, bidirectional=bidirectional)
    model = single_layer(layer, (5, 3), seed=batch)
    directions = 2 if bidirectional else 1
    assert model.output_shape == ((5, 4 * directions) if return_sequences else (4 * directions,))
    assert model.count_params() == torch_param_count(model)
    assert_matches_torch(model, feeds_for(model, batch, seed=batch))


@pytest.mark.parametrize("rnn_cls", RNN_KINDS)
def test_stacked_bidirectional_recurrent(rnn_cls):
    x = fg.Input((6, 2))
    h = rnn_cls(5, return_sequences=True, bidirectional=True)(x)
    h = rnn_cls(3, return_sequences=True)(h)
    y = rnn_cls(4, bidirectional=True)(h)
    model = fg.Model(x, y)
    assert model.output_shape == (8,)
    assert model.count_params() == torch_param_count(model)
    assert_matches_torch(model, feeds_for(model, 2))


def test_lstm_parameter_layout_is_pytorchs():
    model = single_layer(fg.LSTM(4, bidirectional=True), (5, 3))
    assert list(model.params) == [
        f"lstm.{p}{s}" for s in ("", "_reverse") for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert model.params["lstm.weight_ih"].shape == (16, 3)
    rnn = model.to_torch().layers["lstm"].rnn
    torch.testing.assert_close(rnn.weight_hh_l0_reverse, model.params["lstm.weight_hh_reverse"], rtol=0, atol=0)


def test_oracle_carries_our_parameters():
    """Changing one parameter changes both sides the same way: to_torch() really uses model.params."""
    model = single_layer(fg.GRU(3), (4, 2))
    (x,) = feeds_for(model, 2)
    before = model.to_torch()(x)
    model.params["gru.bias_hh"] += 0.5
    after = model.to_torch()(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(model.reference(x), after, rtol=1e-5, atol=1e-5)
