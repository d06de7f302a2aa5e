"""Every malformed model is one GraphError naming the layer and saying what to change."""

import sys

import pytest
import torch

import fusegraph as fg


def raises(match: str):
    return pytest.raises(fg.GraphError, match=match)


def test_channel_mismatch_between_layers_via_load_params():
    model = fg.Sequential([fg.Input((3, 8, 8)), fg.Conv2D(4, 3, name="conv")])
    params = dict(model.params)
    params["conv.weight"] = torch.zeros(4, 2, 3, 3)
    with raises(r"conv.weight must have shape \(4, 3, 3, 3\), got \(4, 2, 3, 3\)"):
        model.load_params(params)


def test_kernel_larger_than_padded_input():
    x = fg.Input((1, 4, 4))
    with raises(r"layer 'big' \(conv2d\).*kernel 5.*larger than the padded input 4.*padding='same'"):
        fg.Conv2D(2, 5, name="big")(x)
    fg.Conv2D(2, 5, padding="same")(x)  # the suggested fix works


def test_pooling_that_leaves_zero_size_output():
    x = fg.Input((1, 3, 3))
    with raises(r"layer 'pool' \(max_pool2d\).*output would be empty"):
        fg.MaxPool2D(4, name="pool")(x)


def test_dense_on_an_unflattened_map_acts_on_its_last_axis_as_torch_linear():
    assert fg.Dense(10, name="fc")(fg.Input((3, 8, 8))).shape == (3, 8, 10)


@pytest.mark.parametrize("make", [lambda: fg.Dense(3, activation="rellu"),
                                  lambda: fg.Conv2D(3, 3, activation="swish"),
                                  lambda: fg.Activation("softsign")])
def test_unknown_activation(make):
    with raises(r"unknown activation .*use one of relu, leaky_relu"):
        make()


def test_unknown_activation_suggests_the_near_one():
    with raises("did you mean 'relu'"):
        fg.Dense(3, activation="rellu")


def test_add_of_different_shapes():
    a, b = fg.Input((3, 4, 4)), fg.Input((3, 4, 5))
    with raises(r"layer 'sum' \(add\).*\(N, 3, 4, 4\) and \(N, 3, 4, 5\) differ.*same shape"):
        fg.Add(name="sum")([a, b])


@pytest.mark.parametrize("rnn_cls", [fg.LSTM, fg.GRU, fg.SimpleRNN])
def test_rnn_on_non_sequence_input(rnn_cls):
    with raises(r"layer 'rnn' .*needs a sequence \(batch, time, features\)"):
        rnn_cls(4, name="rnn")(fg.Input((784,)))


def test_rnn_on_token_ids_says_to_embed():
    with raises("put an Embedding before it"):
        fg.LSTM(4)(fg.Input((5, 1), dtype="int64"))


@pytest.mark.parametrize("make", [
    lambda: fg.Conv2D(0, 3), lambda: fg.Conv2D(4, 0), lambda: fg.Conv2D(4, 3, strides=0),
    lambda: fg.Conv1D(4, 3, dilation=-1), lambda: fg.Dense(-1), lambda: fg.LSTM(0), lambda: fg.GRU(0),
    lambda: fg.MaxPool2D(0), lambda: fg.AvgPool1D(2, strides=0), lambda: fg.Embedding(0, 4),
    lambda: fg.Embedding(4, 0), lambda: fg.Input((0, 28, 28)), lambda: fg.Input((1, -2)),
    lambda: fg.Conv2D(4, 3, padding=-1), lambda: fg.Dense(2.5),
])
def test_non_positive_sizes(make):
    with raises("positive|non-negative"):
        make()


def test_dtype_an_op_does_not_take():
    ids = fg.Input((4, 4), dtype="int64")
    with raises(r"conv1d.*int64"):
        fg.Conv1D(2, 3)(ids)
    with raises(r"embedding ids must be int64"):
        fg.Embedding(5, 2)(fg.Input((4,)))
    with raises("dtype 'float64' is not supported"):
        fg.Input((4,), dtype="float64")


def test_bad_padding_spelling_and_pool_padding_too_large():
    with raises("padding 'full'"):
        fg.Conv2D(2, 3, padding="full")
    with raises("more than half the window"):
        fg.MaxPool2D(2, padding=2)(fg.Input((1, 8, 8)))


def test_duplicate_layer_names_and_foreign_inputs():
    x = fg.Input((4,))
    y = fg.Dense(3, name="fc")(fg.Dense(3, name="fc")(x))
    with raises("two layers are named 'fc'"):
        fg.Model(x, y)
    other = fg.Input((3,))
    z = fg.Add()([fg.Dense(3)(x), other])
    with raises("not among the model's inputs"):
        fg.Model(x, z)


def test_layer_reused_on_a_different_shape():
    dense = fg.Dense(3, name="shared")
    dense(fg.Input((4,)))
    with raises("layer 'shared' .*cannot be reused"):
        dense(fg.Input((5,)))


def test_calling_a_layer_on_a_tensor_not_a_symbol():
    with raises("call it on the output of fg.Input"):
        fg.Dense(3)(torch.zeros(2, 4))


def test_sequential_needs_an_input_first():
    with raises("Sequential needs fg.Input"):
        fg.Sequential([fg.Dense(3)])


def test_load_params_missing_extra_and_dtype():
    model = fg.Sequential([fg.Input((4,)), fg.Dense(3, name="fc")])
    with raises(r"missing \['fc.bias'\], unexpected \['fc.b'\]"):
        model.load_params({"fc.weight": torch.zeros(3, 4), "fc.b": torch.zeros(3)})
    with raises("fc.bias must be float32"):
        model.load_params({"fc.weight": torch.zeros(3, 4), "fc.bias": torch.zeros(3, dtype=torch.float64)})


@pytest.mark.parametrize("bad,match", [
    (torch.zeros(2, 5), r"input 'x' expects shape \(batch, 4\) float32, got \(2, 5\) float32"),
    (torch.zeros(4), r"expects shape \(batch, 4\).*the batch comes first"),
    (torch.zeros(2, 4, dtype=torch.float64), "expects dtype float32.*torch.float32"),
    ([torch.zeros(2, 4), torch.zeros(2, 4)], "takes 1 input"),
    ("not a tensor", r"expects a torch.Tensor"),
])
def test_wrong_inputs_to_reference(bad, match):
    model = fg.Sequential([fg.Input((4,), name="x"), fg.Dense(3)])
    with pytest.raises(fg.InputError, match=match):
        model.reference(bad)


def test_token_ids_out_of_range():
    model = fg.Sequential([fg.Input((3,), dtype="int64"), fg.Embedding(5, 2, name="emb")])
    with pytest.raises(fg.InputError, match=r"layer 'emb'.*\[0, 5\)"):
        model.reference(torch.tensor([[0, 1, 7]]))


@pytest.mark.parametrize("make,match", [
    (lambda: fg.Conv2D(2, 2.5), "kernel_size must be an int or 2 ints, got 2.5"),
    (lambda: fg.Conv2D(2, None), "kernel_size must be an int or 2 ints, got None"),
    (lambda: fg.Conv1D(2, 3, strides="2"), "strides must be an int or 1 ints"),
    (lambda: fg.Conv2D(2, 3, padding=1.5), "padding 1.5 is not one of"),
    (lambda: fg.MaxPool2D(None), "pool_size must be an int or 2 ints"),
    (lambda: fg.Concatenate(axis="1"), r"Concatenate\(axis='1'\): axis must be an integer"),
    (lambda: fg.Concatenate(axis=1.0), "axis must be an integer"),
    (lambda: fg.Dense(3, use_bias="no"), "use_bias must be True or False, got 'no'"),
    (lambda: fg.Conv2D(3, 3, use_bias=0), "use_bias must be True or False, got 0"),
    (lambda: fg.LSTM(4, return_sequences="yes"), "return_sequences must be True or False, got 'yes'"),
    (lambda: fg.GRU(4, bidirectional=1), "bidirectional must be True or False"),
    (lambda: fg.Embedding(10, 4, trainable="false"), "trainable must be True or False"),
    (lambda: fg.Dense(3, activation=["relu"]), "activation must be a name such as 'relu'"),
    (lambda: fg.Dropout("0.5"), "rate must be a number in"),
    (lambda: fg.Dropout(0.5, seed=1.5), "seed must be an integer"),
    (lambda: fg.Input((3, 2.0)), "shape must be positive integers"),
])
def test_mistyped_layer_arguments_are_one_graph_error(make, match):
    with raises(match):
        make()


def test_numpy_integer_sizes_are_accepted():
    import numpy as np

    x = fg.Input((np.int64(1), np.int64(8), 8))
    h = fg.Conv2D(np.int64(2), np.int32(3), strides=np.int64(1), padding=np.int64(1), dilation=np.int8(1))(x)
    h = fg.MaxPool2D(np.int64(2))(h)
    y = fg.Concatenate(axis=np.int64(1))([h, h])
    model = fg.Model(x, fg.Dense(np.int64(3), use_bias=np.bool_(True))(fg.Flatten()(y)))
    assert model.output_shape == (3,) and all(type(d) is int for d in model.graph.outputs[0].type.shape[1:])
    assert model.count_params() == 2 * 9 + 2 + 2 * 2 * 4 * 4 * 3 + 3


def test_a_shape_error_in_an_unnamed_layer_says_which_one_and_where():
    """Two unnamed Conv2Ds: the second fails; the message must not name it 'conv2d' (the first one's
    name in the model) and says where it was created and called."""
    first = fg.Conv2D(2, 3)
    second = fg.Conv2D(2, 5)
    line = sys._getframe().f_lineno - 1
    with pytest.raises(fg.GraphError) as error:
        fg.Sequential([fg.Input((1, 5, 5)), first, second])
    message = str(error.value)
    assert message.startswith("an unnamed Conv2D layer") and "layer 'conv2d'" not in message
    assert f"created at {__file__}:{line}" in message and f"called at {__file__}:{line + 3}" in message
