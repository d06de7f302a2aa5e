"""Fused kernels against unfused kernels and real torch.nn modules (fp32, rtol 1e-4), pattern by
pattern, with the launch budgets fusion promises."""

import pytest
import torch

import fusegraph as fg
from fusegraph.ir import BATCH, GraphBuilder, TensorType
from fusegraph.kernels.scan import MAX_WIDTH
from tests.conftest import (
    KERNEL_ATOL,
    KERNEL_RTOL,
    assert_compiled_matches_torch,
    assert_grads_match_torch,
    feeds_for,
    targets_for,
)


def fused_and_unfused_match_torch(model, feeds):
    fused = assert_compiled_matches_torch(model, feeds)
    unfused = assert_compiled_matches_torch(model, feeds, fuse=False)
    assert fused.last_launches <= unfused.last_launches
    return fused


CONV_POOL = [
    (dict(filters=3, kernel_size=3), dict(pool_size=2)),
    (dict(filters=5, kernel_size=3, padding="same", activation="relu"), dict(pool_size=3, strides=2)),
    (dict(filters=4, kernel_size=3, strides=2, activation="tanh"), dict(pool_size=2, padding="same")),
    (dict(filters=2, kernel_size=(3, 2), dilation=2, activation="leaky_relu"), dict(pool_size=3, strides=1,
                                                                                  padding="same")),
    (dict(filters=6, kernel_size=1, activation="sigmoid"), dict(pool_size=(3, 2), strides=(2, 1), padding=1)),
]


@pytest.mark.parametrize("conv,pool", CONV_POOL)
@pytest.mark.parametrize("pool_cls", [fg.MaxPool2D, fg.AvgPool2D])
@pytest.mark.parametrize("batch,shape", [(1, (2, 9, 7)), (2, (3, 8, 8))])
def test_conv_bias_act_pool_is_one_kernel(conv, pool, pool_cls, batch, shape):
    model = fg.Sequential([fg.Input(shape), fg.Conv2D(**conv), pool_cls(**pool)])
    compiled = fused_and_unfused_match_torch(model, feeds_for(model, batch))
    assert compiled.last_launches == 1
    assert compiled.kernel_names[0].startswith("conv2d_bias_add_") and "pool" in compiled.kernel_names[0]


@pytest.mark.parametrize("pool_cls", [fg.MaxPool1D, fg.AvgPool1D])
def test_conv1d_pool_is_one_kernel(pool_cls):
    model = fg.Sequential([fg.Input((2, 17)), fg.Conv1D(4, 3, padding="same", activation="relu"),
                           pool_cls(3, strides=2, padding="same")])
    assert fused_and_unfused_match_torch(model, feeds_for(model, 2)).last_launches == 1


@pytest.mark.usefixtures("small_tiles")
def test_pool_windows_spanning_programs():
    # 2 x 16 x 16 pooled pixels span several 256-row programs; windows overlap their neighbours'
    model = fg.Sequential([fg.Input((1, 31, 32)), fg.Conv2D(3, 3, padding="same", activation="relu"),
                           fg.MaxPool2D(3, strides=2, padding="same")])
    assert fused_and_unfused_match_torch(model, feeds_for(model, 2)).last_launches == 1


def test_value_with_two_consumers_is_stored_and_right():
    x = fg.Input((2, 6, 6))
    h = fg.Conv2D(3, 3, activation="relu")(x)
    y = fg.Dense(4)(fg.Flatten()(h))
    model = fg.Model(x, [fg.MaxPool2D(2)(h), y])
    compiled = fused_and_unfused_match_torch(model, feeds_for(model, 2))
    assert compiled.last_launches == 3  # conv+bias+relu, the pool on the stored map, the dense


def test_residual_add_folds_into_the_conv_epilogue():
    compiled = fused_and_unfused_match_torch(fg.zoo.resnet_block(), feeds_for(fg.zoo.resnet_block(), 2))
    assert compiled.last_launches == 2
    assert compiled.kernel_names[1] == "conv2d_bias_add_add_relu"


@pytest.mark.parametrize("activation", ["relu", "tanh", "softmax", "log_softmax", "sigmoid", None])
def test_dense_bias_activation_is_one_kernel(activation):
    model = fg.Sequential([fg.Input((7,)), fg.Dense(9, activation=activation)])
    assert fused_and_unfused_match_torch(model, feeds_for(model, 3)).last_launches == 1


def test_dense_with_residual_on_sequences_and_wide_softmax():
    x = fg.Input((4, 6))
    h = fg.Add()([fg.Dense(6, activation="tanh")(x), x])
    y = fg.Dense(300, activation="softmax")(h)
    model = fg.Model(x, y)
    assert fused_and_unfused_match_torch(model, feeds_for(model, 3)).last_launches == 2


def test_elementwise_chain_is_one_kernel():
    x = fg.Input((3, 5))
    h = fg.Activation("tanh")(fg.Activation("relu")(x))
    model = fg.Model(x, fg.Add()([fg.Activation("sigmoid")(h), x]))
    assert fused_and_unfused_match_torch(model, feeds_for(model, 2)).last_launches == 1


def test_lenet_runs_in_no_more_kernels_than_conv_and_dense_layers():
    model = fg.zoo.lenet()
    compiled = fused_and_unfused_match_torch(model, feeds_for(model, 2))
    layers = sum(isinstance(layer, (fg.Conv2D, fg.Dense)) for layer in model.layers)
    assert compiled.last_launches <= layers == 5


@pytest.mark.parametrize("rnn_cls", [fg.SimpleRNN, fg.LSTM, fg.GRU])
@pytest.mark.parametrize("return_sequences,bidirectional", [(False, False), (True, False), (True, True),
                                                            (False, True)])
@pytest.mark.parametrize("batch", [1, 3])
def test_recurrent_cells_fuse(rnn_cls, return_sequences, bidirectional, batch):
    steps = 5
    model = fg.Sequential([fg.Input((steps, 3)),
                           rnn_cls(4, return_sequences=return_sequences, bidirectional=bidirectional)])
    compiled = fused_and_unfused_match_torch(model, feeds_for(model, batch, seed=batch))
    directions = 2 if bidirectional else 1
    # per direction: the input projection, then the whole sequence in one persistent kernel; both
    # directions write straight into their half of the concatenated output: no copies
    assert compiled.last_launches == directions * 2


@pytest.mark.parametrize("rnn_cls", [fg.SimpleRNN, fg.LSTM, fg.GRU])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_wide_recurrent_cells_launch_once_per_step(rnn_cls, bidirectional):
    steps, units = 4, MAX_WIDTH["float32"] + 1  # one column past the persistent kernel's tile
    model = fg.Sequential([fg.Input((steps, 3)), rnn_cls(units, return_sequences=True, bidirectional=bidirectional)])
    compiled = fused_and_unfused_match_torch(model, feeds_for(model, 2))
    assert compiled.last_launches == (2 if bidirectional else 1) * (steps + 1)
    assert f"over {MAX_WIDTH['float32']}" in compiled.explain()


def test_stacked_recurrent_layers_fuse():
    x = fg.Input((6, 2))
    h = fg.LSTM(5, return_sequences=True, bidirectional=True)(x)
    h = fg.GRU(4, return_sequences=True)(h)
    model = fg.Model(x, fg.SimpleRNN(3)(h))
    fused_and_unfused_match_torch(model, feeds_for(model, 2))


def test_long_lstm_is_one_persistent_kernel_after_its_input_projection():
    model = fg.Sequential([fg.Input((64, 4)), fg.LSTM(8)])
    compiled = assert_compiled_matches_torch(model, feeds_for(model, 2))
    assert compiled.last_launches == 2
    assert compiled.kernel_names[-1] == "lstm_cell_persistent"


def test_long_wide_lstm_makes_t_plus_one_launches():
    model = fg.Sequential([fg.Input((64, 4)), fg.LSTM(MAX_WIDTH["float32"] + 8)])
    compiled = assert_compiled_matches_torch(model, feeds_for(model, 2))
    assert compiled.last_launches == 64 + 1


def hand_built_lstm(steps: int, features: int, units: int):
    """An LSTM cell written differently from fusegraph's own: one combined bias added after the sum."""
    body = GraphBuilder("my_cell")
    h = body.input("h", TensorType((BATCH, units)))
    c = body.input("c", TensorType((BATCH, units)))
    x = body.input("x", TensorType((BATCH, features)))
    w_x = body.input("w_x", TensorType((4 * units, features)))
    w_h = body.input("w_h", TensorType((4 * units, units)))
    bias = body.input("b", TensorType((4 * units,)))
    z = body.op("add", [body.op("matmul", [h, w_h], name="zh", transpose_b=True),
                        body.op("matmul", [x, w_x], name="zx", transpose_b=True)], name="z")
    z = body.op("bias_add", [z, bias], name="zb", axis=1)
    i, f, g, o = body.op("split", [z], name="q", axis=1, sizes=(units,) * 4)
    c_new = body.op("add", [body.op("mul", [body.op("sigmoid", [f], name="sf"), c], name="keep"),
                            body.op("mul", [body.op("sigmoid", [i], name="si"), body.op("tanh", [g], name="tg")],
                                    name="write")], name="c_new")
    h_new = body.op("mul", [body.op("tanh", [c_new], name="tc"), body.op("sigmoid", [o], name="so")], name="h_new")
    cell = body.build([h_new, c_new, h_new])
    outer = GraphBuilder("hand_lstm")
    seq = outer.input("seq", TensorType((BATCH, steps, features)))
    params = [outer.parameter(n, TensorType(s), "zeros") for n, s in
              (("w_x", (4 * units, features)), ("w_h", (4 * units, units)), ("b", (4 * units,)))]
    h_last, _, _ = outer.op("scan", [seq, *params], name="lstm", body=cell, num_carries=2, num_seqs=1,
                            reverse=False)
    return outer.build([h_last])


def test_hand_built_lstm_cell_fuses_like_ours():
    from types import SimpleNamespace

    steps, features, units = 6, 3, 5
    graph = hand_built_lstm(steps, features, units)
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(features, units, batch_first=True)
    params = {"w_x": lstm.weight_ih_l0.detach(), "w_h": lstm.weight_hh_l0.detach(),
              "b": (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach()}
    compiled = fg.compile(SimpleNamespace(graph=graph, params=params))
    x = torch.randn(2, steps, features)
    (h,) = compiled(x) if isinstance(compiled(x), list) else [compiled(x)]
    torch.testing.assert_close(h, lstm(x)[1][0][0], rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    assert compiled.last_launches == 2  # the input projection, then the persistent scan
    scan = next(n for n in compiled.graph.compute_nodes if n.op == "scan")
    assert scan.attrs["persistent"]
    (cell_kernel,) = scan.attrs["body"].compute_nodes
    assert cell_kernel.op == "fused" and cell_kernel.attrs["anchor"] == "matmul"
    ours = fg.compile(fg.Sequential([fg.Input((steps, features)), fg.LSTM(units)]))
    our_scan = next(n for n in ours.graph.compute_nodes if n.op == "scan")
    assert [n.op for n in our_scan.attrs["body"].compute_nodes] == ["fused"]


@pytest.mark.parametrize("name", list(fg.zoo.MODELS))
def test_zoo_fused_matches_unfused_and_torch(name):
    model = fg.zoo.get(name)
    fused_and_unfused_match_torch(model, feeds_for(model, 2, vocab=1000))


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "leaky_relu", "gelu", "silu", "elu"])
def test_activation_before_conv_is_its_prologue_and_padding_stays_zero(activation):
    # sigmoid(0) = 0.5: the conv's zero padding must not see it
    x = fg.Input((2, 7, 6))
    h = fg.Conv2D(3, 3, padding="same", activation="relu")(fg.Activation(activation)(x))
    model = fg.Model(x, fg.MaxPool2D(2)(h))
    compiled = fused_and_unfused_match_torch(model, feeds_for(model, 2))
    assert compiled.last_launches == 1
    assert compiled.kernel_names[0].startswith(f"{activation}_conv2d_bias_add_")


def test_activations_before_dense_are_its_prologue():
    x = fg.Input((2, 3, 3))
    h = fg.Activation("sigmoid")(fg.Activation("tanh")(fg.Flatten()(x)))
    model = fg.Model(x, fg.Dense(4, activation="relu")(h))
    compiled = fused_and_unfused_match_torch(model, feeds_for(model, 3))
    assert compiled.kernel_names == ["tanh_sigmoid_matmul_bias_add_relu"]


@pytest.mark.parametrize("activation", ["gelu", "silu", "elu"])
def test_new_activations_fuse_as_prologue_and_epilogue(activation):
    x = fg.Input((6,))
    h = fg.Dense(5, activation=activation)(fg.Activation(activation)(x))
    model = fg.Model(x, fg.Dense(3, activation=activation)(h))
    compiled = fused_and_unfused_match_torch(model, feeds_for(model, 3))
    assert compiled.kernel_names == [f"{activation}_matmul_bias_add_{activation}", f"matmul_bias_add_{activation}"]


def test_prologue_value_with_two_consumers_is_not_recomputed():
    x = fg.Input((6,))
    h = fg.Activation("tanh")(x)
    model = fg.Model(x, [fg.Dense(3)(h), fg.Dense(2)(h)])
    compiled = fused_and_unfused_match_torch(model, feeds_for(model, 2))
    assert compiled.last_launches == 3


def test_persistent_scan_starts_from_given_carries():
    """A scan given its initial state (as a decoder would be) loads it in the persistent kernel."""
    from types import SimpleNamespace

    steps, features, units = 4, 3, 5
    body = GraphBuilder("cell")
    h = body.input("h", TensorType((BATCH, units)))
    x = body.input("x", TensorType((BATCH, features)))
    w_x = body.input("w_x", TensorType((units, features)))
    w_h = body.input("w_h", TensorType((units, units)))
    z = body.op("add", [body.op("matmul", [h, w_h], name="zh", transpose_b=True),
                        body.op("matmul", [x, w_x], name="zx", transpose_b=True)], name="z")
    h_new = body.op("tanh", [z], name="h_new")
    cell = body.build([h_new, h_new])
    outer = GraphBuilder("rnn_from_state")
    h0 = outer.input("h0", TensorType((BATCH, units)))
    seq = outer.input("seq", TensorType((BATCH, steps, features)))
    params = [outer.parameter(n, TensorType(s), "zeros") for n, s in (("w_x", (units, features)), ("w_h", (units, units)))]
    _, hs = outer.op("scan", [h0, seq, *params], name="rnn", body=cell, num_carries=1, num_seqs=1, init_carries=True)
    graph = outer.build([hs])
    torch.manual_seed(0)
    rnn = torch.nn.RNN(features, units, batch_first=True, bias=False)
    compiled = fg.compile(SimpleNamespace(graph=graph, params={"w_x": rnn.weight_ih_l0.detach(),
                                                               "w_h": rnn.weight_hh_l0.detach()}))
    start, x = torch.randn(2, units), torch.randn(2, steps, features)
    torch.testing.assert_close(compiled([start, x]), rnn(x, start[None])[0].detach(), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    assert compiled.last_launches == 2
    assert compiled.kernel_names[-1].endswith("_persistent")


@pytest.mark.parametrize("rnn_cls,steps,batch", [(fg.LSTM, 1, 2), (fg.GRU, 3, 300), (fg.SimpleRNN, 2, 257)])
def test_persistent_scan_edges(rnn_cls, steps, batch):
    """One step (the prefetch reads its own step again), and batches over one program's 256 rows in
    the interpreter (row masks across programs), forward and backward."""
    x = fg.Input((steps, 3))
    model = fg.Model(x, fg.Dense(2)(rnn_cls(5, return_sequences=True, bidirectional=True)(x)))
    feeds = feeds_for(model, batch, seed=steps)
    compiled = fused_and_unfused_match_torch(model, feeds)
    assert sum(name.endswith("_cell_persistent") for name in compiled.kernel_names) == 2
    assert_grads_match_torch(model, feeds, targets_for(model, "mse", batch), "mse", fuse=True)


@pytest.mark.parametrize("conv,pool", [
    (dict(filters=5, kernel_size=3, padding="same", activation="relu"), fg.MaxPool2D(2)),
    (dict(filters=3, kernel_size=(3, 2), strides=2, dilation=1, padding=(1, 0)), None),
    (dict(filters=4, kernel_size=2, dilation=2, activation="gelu"), fg.AvgPool2D(2, strides=1, padding="same")),
])
def test_channel_blocks_per_kernel_tap(conv, pool):
    """20 input channels (16 or more: the K loop runs tap by tap over channel blocks, a partial last
    block) with an activation applied as the input loads, padding, stride, dilation and a pool."""
    from fusegraph.kernels.conv import tap_major_conv

    x = fg.Input((20, 7, 6))
    h = fg.Conv2D(**conv)(fg.Activation("silu")(x))
    model = fg.Model(x, pool(h) if pool is not None else h)
    assert tap_major_conv(20) and not tap_major_conv(8)
    compiled = fused_and_unfused_match_torch(model, feeds_for(model, 2))
    assert compiled.last_launches == 1


def test_conv1d_channel_blocks_per_kernel_tap():
    x = fg.Input((16, 9))
    model = fg.Model(x, fg.MaxPool1D(2)(fg.Conv1D(6, 3, padding="same", activation="tanh")(x)))
    fused_and_unfused_match_torch(model, feeds_for(model, 3))


@pytest.mark.parametrize("memory_format", [None, torch.channels_last])
@pytest.mark.parametrize("batch", [1, 5])
def test_global_average_pool_ends_the_last_conv_kernel(batch, memory_format):
    """A ResNet head: the last conv's epilogue (bias, residual add, ReLU) ends in the global average pool,
    and the flatten before the classifier costs nothing: two kernels, the map before the pool never stored."""
    x = fg.Input((3, 6, 5))
    h = fg.Conv2D(4, 3, padding="same", activation="relu", name="stem")(x)
    y = fg.Conv2D(4, 3, padding="same", name="conv")(h)
    y = fg.Activation("relu")(fg.Add()([y, h]))
    logits = fg.Dense(3, name="head")(fg.Flatten()(fg.GlobalAvgPool2D()(y)))
    model = fg.Model(x, logits)
    feeds = [f.to(memory_format=memory_format or torch.contiguous_format) for f in feeds_for(model, batch)]
    compiled = fused_and_unfused_match_torch(model, feeds)
    assert compiled.kernel_names == ["conv2d_bias_add_relu", "conv2d_bias_add_add_relu_global_avg_pool2d",
                                     "matmul_bias_add"]
    (decision,) = [d for d in compiled.decisions if d.fused and "global_avg_pool2d" in d.kernel]
    assert decision.pattern == "anchor_epilogue"


@pytest.mark.usefixtures("small_tiles")
def test_global_average_pool_epilogue_across_programs_and_in_conv1d():
    model = fg.Sequential([fg.Input((2, 19)), fg.Conv1D(5, 3, padding="same", activation="tanh"),
                           fg.GlobalAvgPool1D()])
    compiled = fused_and_unfused_match_torch(model, feeds_for(model, 37))  # rows and channels span programs
    assert compiled.last_launches == 1


def test_a_global_pool_whose_map_is_used_elsewhere_stays_apart():
    x = fg.Input((2, 5, 5))
    h = fg.Conv2D(3, 3, activation="relu")(x)
    model = fg.Model(x, [fg.GlobalAvgPool2D()(h), h])
    compiled = fused_and_unfused_match_torch(model, feeds_for(model, 2))
    assert compiled.kernel_names == ["conv2d_bias_add_relu", "global_avg_pool2d"]
    (refused,) = [d for d in compiled.decisions if not d.fused]
    assert refused.nodes == ("global_avg_pool2d",) and "has other consumers" in refused.reason


def test_a_global_pool_epilogue_trains_like_torch():
    """In training the map before the pool is saved for the backward, so the forward stores it: the
    gradients still match torch.autograd."""
    model = fg.Sequential([fg.Input((2, 5, 4)), fg.Conv2D(3, 3, activation="relu"), fg.GlobalAvgPool2D(),
                           fg.Dense(2)])
    assert_grads_match_torch(model, feeds_for(model, 3), targets_for(model, "mse", 3), "mse")
