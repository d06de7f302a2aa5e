"""Fuzzing with reach: random layer stacks (conv / pool geometry with stride, dilation, padding and
'same', dense, RNN layers, residual adds and concats) compiled and checked against to_torch(),
forward and gradients; and random bad constructor and call arguments, where anything but a fusegraph
error (or a model that works) is a failure. Derandomised with capped example counts (conftest's
hypothesis profile), so CI runs the same cases in bounded time."""

import warnings

import numpy as np
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fusegraph as fg
from fusegraph.nn.activations import ACTIVATIONS as DSL_ACTIVATIONS
from tests.conftest import assert_compiled_matches_torch, assert_grads_match_torch, feeds_for, targets_for

ACTIVATIONS = [None, *(a for a in DSL_ACTIVATIONS if a not in ("linear", "softmax", "log_softmax"))]


@st.composite
def conv_or_pool(draw, ndim: int):
    conv, maxpool, avgpool = ((fg.Conv1D, fg.MaxPool1D, fg.AvgPool1D) if ndim == 1
                              else (fg.Conv2D, fg.MaxPool2D, fg.AvgPool2D))
    padding = draw(st.sampled_from(["valid", "same", 0, 1]))
    if draw(st.integers(0, 2)):
        return conv(draw(st.integers(1, 4)), draw(st.integers(1, 3)), strides=draw(st.integers(1, 2)),
                    padding=padding, dilation=draw(st.integers(1, 2)), activation=draw(st.sampled_from(ACTIVATIONS)),
                    use_bias=draw(st.booleans()))
    kind = draw(st.sampled_from([maxpool, avgpool]))
    size = draw(st.integers(1, 3))
    return kind(size, strides=draw(st.sampled_from([None, 1, 2])), padding=padding if isinstance(padding, str) else
                min(padding, size // 2))


@st.composite
def layer_stacks(draw):
    ndim = draw(st.sampled_from([1, 2]))
    channels = draw(st.integers(1, 3))
    shape = (channels, draw(st.integers(5, 9))) if ndim == 1 else (channels, draw(st.integers(4, 7)),
                                                                    draw(st.integers(4, 7)))
    x = fg.Input(shape)
    h = x
    try:
        for _ in range(draw(st.integers(1, 3))):
            h = draw(conv_or_pool(ndim))(h)
        join = draw(st.sampled_from([None, "add", "concat"]))
        if join is not None:  # a residual branch of the same geometry
            branch = (fg.Conv1D if ndim == 1 else fg.Conv2D)(h.shape[0], draw(st.sampled_from([1, 3])), padding="same",
                                                            activation=draw(st.sampled_from(ACTIVATIONS)))(h)
            h = fg.Add()([h, branch]) if join == "add" else fg.Concatenate(axis=1)([h, branch])
        if ndim == 1 and draw(st.booleans()):
            rnn = draw(st.sampled_from([fg.SimpleRNN, fg.LSTM, fg.GRU]))
            sequences = draw(st.booleans())
            h = rnn(draw(st.integers(2, 4)), return_sequences=sequences,
                    bidirectional=draw(st.booleans()))(fg.Permute((2, 1))(h))
        h = fg.Flatten()(h) if len(h.shape) > 1 else h
        if draw(st.booleans()):
            h = fg.Dense(draw(st.integers(2, 5)), activation=draw(st.sampled_from(ACTIVATIONS)))(h)
        y = fg.Dense(3)(h)
    except fg.GraphError:
        assume(False)  # a geometry a user would be told is invalid (a window larger than its input, ...)
    model = fg.Model(x, y)
    model.init(draw(st.integers(0, 3)))
    return model


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(model=layer_stacks(), batch=st.integers(1, 3))
def test_random_layer_stacks_match_torch_forward_and_gradients(model, batch):
    feeds = feeds_for(model, batch)
    assert_compiled_matches_torch(model, feeds)
    assert_grads_match_torch(model, feeds, targets_for(model, "cross_entropy", batch), "cross_entropy")


ODD = [None, -1, 0, 1, 2, 3, 2.5, float("nan"), "2", "same", "valid", "relu", "bogus", (1,), (2, 2), (1, 2, 3), [3, 1],
       True, False, np.int64(2), np.float32(0.5), {}, object(), (0, 1)]
LAYERS = {
    fg.Conv1D: ("filters", "kernel_size", "strides", "padding", "dilation", "activation", "use_bias"),
    fg.Conv2D: ("filters", "kernel_size", "strides", "padding", "dilation", "activation", "use_bias"),
    fg.MaxPool1D: ("pool_size", "strides", "padding"),
    fg.AvgPool2D: ("pool_size", "strides", "padding"),
    fg.Dense: ("units", "activation", "use_bias"),
    fg.Dropout: ("rate", "seed"),
    fg.Embedding: ("num_embeddings", "dim", "trainable"),
    fg.LSTM: ("units", "return_sequences", "bidirectional"),
    fg.GRU: ("units", "return_sequences", "bidirectional"),
    fg.Concatenate: ("axis",),
    fg.Permute: ("dims",),
    fg.Activation: ("activation",),
}
INPUTS = {fg.Conv1D: (2, 8), fg.MaxPool1D: (2, 8), fg.Conv2D: (2, 6, 6), fg.AvgPool2D: (2, 6, 6), fg.Dense: (4,),
          fg.Dropout: (4,), fg.LSTM: (5, 3), fg.GRU: (5, 3), fg.Concatenate: (3, 4), fg.Permute: (3, 4),
          fg.Activation: (4,)}


@settings(max_examples=300)
@given(data=st.data(), layer=st.sampled_from(list(LAYERS)))
def test_random_constructor_and_call_arguments_give_fusegraph_errors_only(data, layer):
    names = LAYERS[layer]
    chosen = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True))
    kwargs = {name: data.draw(st.sampled_from(ODD), label=name) for name in chosen}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            instance = layer(**kwargs)
            if layer is fg.Embedding:
                x = fg.Input((4,), dtype="int64")
                instance(x)
            elif layer is fg.Concatenate:
                x = fg.Input(INPUTS[layer])
                instance([x, x])
            else:
                instance(fg.Input(INPUTS[layer]))
    except fg.FusegraphError:
        pass
    except TypeError as error:  # a missing required argument is Python's own call error, as for any function
        assert "required positional argument" in str(error), error


CALL_ARGUMENTS = [torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.int64), torch.zeros(2, 4, 1), torch.zeros(4),
                  torch.zeros(0, 4), [torch.zeros(2, 4), torch.zeros(2, 4)], np.zeros((2, 4)), "x", None, 3.0, [],
                  torch.full((2, 4), float("nan"))]


_DENSE = fg.Sequential([fg.Input((4,)), fg.Dense(2)])
_COMPILED: list = []


@settings(max_examples=40)
@given(argument=st.sampled_from(CALL_ARGUMENTS))
def test_random_call_arguments_give_fusegraph_errors_only(argument):
    if not _COMPILED:
        _COMPILED.append(fg.compile(_DENSE))
    try:
        result = _COMPILED[0](argument)
    except fg.FusegraphError:
        return
    with torch.no_grad():
        expected = _DENSE.to_torch()(torch.as_tensor(argument, dtype=torch.float32))
    torch.testing.assert_close(result, expected, equal_nan=True)
