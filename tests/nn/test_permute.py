"""Permute: Keras' layer (axes after the batch, numbered from 1), an IR transpose with its VJP, a view
where only size-1 axes move, and the warning when a Conv1D's channels would be read as time."""

import warnings

import pytest
import torch

import fusegraph as fg
from tests.conftest import assert_compiled_matches_torch, assert_grads_match_torch, feeds_for, targets_for


def _conv_lstm(permute: bool = True) -> fg.Model:
    x = fg.Input((2, 12))
    h = fg.MaxPool1D(2, name="pool")(fg.Conv1D(4, 3, padding="same", activation="relu", name="conv")(x))
    if permute:
        h = fg.Permute((2, 1), name="to_time")(h)
    return fg.Model(x, fg.Dense(3)(fg.LSTM(5, name="rnn")(h)))


@pytest.mark.parametrize("fuse", [True, False])
def test_conv1d_permute_lstm_forward_and_gradients_match_torch(fuse):
    model = _conv_lstm()
    assert model.to_torch()(torch.zeros(1, 2, 12)).shape == (1, 3)
    feeds = feeds_for(model, 3)
    assert_compiled_matches_torch(model, feeds, fuse=fuse)
    assert_grads_match_torch(model, feeds, targets_for(model, "cross_entropy", 3), "cross_entropy", fuse=fuse)


@pytest.mark.parametrize("dims", [(3, 1, 2), (2, 3, 1), (1, 3, 2)])
def test_permute_of_a_3d_feature_map(dims):
    x = fg.Input((2, 3, 4))
    model = fg.Model(x, fg.Flatten()(fg.Permute(dims)(x)))
    feeds = feeds_for(model, 2)
    expected = feeds[0].permute(0, *dims).reshape(2, -1)
    torch.testing.assert_close(fg.compile(model)(feeds), expected, rtol=0, atol=0)
    assert_grads_match_torch(fg.Model(x, fg.Dense(2)(fg.Flatten()(fg.Permute(dims)(x)))), feeds,
                             targets_for(model, "mse", 2)[:, :2], "mse")


def test_a_permute_that_only_moves_size_one_axes_is_a_view():
    x = fg.Input((1, 6))
    model = fg.Model(x, fg.Permute((2, 1))(x))
    compiled = fg.compile(model)
    data = torch.randn(3, 1, 6)
    torch.testing.assert_close(compiled(data), data.permute(0, 2, 1), rtol=0, atol=0)
    assert compiled.last_launches == 0


def test_conv_output_into_an_rnn_without_permute_warns_naming_both_layers():
    with pytest.warns(UserWarning, match=r"layer 'pool' \(MaxPool1D\) outputs \(batch, channels, length\) but "
                                         r"layer 'rnn' \(LSTM\).*insert fg.Permute\(\(2, 1\)\)"):
        _conv_lstm(permute=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _conv_lstm(permute=True)


@pytest.mark.parametrize("make,match", [
    (lambda x: fg.Permute((1, 1))(x), "dims must be a permutation"),
    (lambda x: fg.Permute((0, 1))(x), "dims must be a permutation"),
    (lambda x: fg.Permute(2)(x), "dims must be a permutation"),
    (lambda x: fg.Permute((2, 1, 3))(x), r"reorders 3 axes after the batch, but its input is"),
])
def test_bad_permutes_are_graph_errors(make, match):
    with pytest.raises(fg.GraphError, match=match):
        make(fg.Input((2, 12)))
