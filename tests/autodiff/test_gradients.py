"""The loss and every gradient the generated backward computes equal torch.autograd's on to_torch()
(fp32: rtol 1e-4, atol 1e-5), op by op and model by model, fused and unfused."""

import re

import pytest
import torch

import fusegraph as fg
from fusegraph.kernels.scan import MAX_WIDTH
from tests.conftest import assert_grads_match_torch, feeds_for, targets_for


def check(model, loss="mse", batch=3, fuse_modes=(True, False), **kwargs):
    feeds, target = feeds_for(model, batch), targets_for(model, loss, batch)
    for fuse in fuse_modes:
        assert_grads_match_torch(model, feeds, target, loss, fuse=fuse, **kwargs)


CONV = [dict(filters=4, kernel_size=3), dict(filters=3, kernel_size=3, strides=2, padding="same", activation="relu"),
        dict(filters=2, kernel_size=(3, 2), dilation=2, padding=(1, 2), activation="tanh"),
        dict(filters=5, kernel_size=2, strides=(2, 1), use_bias=False, activation="leaky_relu"),
        dict(filters=3, kernel_size=3, padding="same", activation="sigmoid")]


@pytest.mark.parametrize("config", CONV)
def test_conv2d(config):
    check(fg.Sequential([fg.Input((2, 7, 6)), fg.Conv2D(**config), fg.Flatten(), fg.Dense(3)]))


@pytest.mark.parametrize("config", [dict(filters=3, kernel_size=3), dict(filters=2, kernel_size=4, strides=2,
                                                                           padding="same", dilation=1)])
def test_conv1d(config):
    check(fg.Sequential([fg.Input((2, 11)), fg.Conv1D(**config, activation="relu"), fg.Flatten(), fg.Dense(2)]))


@pytest.mark.parametrize("layer,shape", [(fg.Conv2D(3, 3, padding="same", activation="relu"), (2, 20, 20)),
                                         (fg.Conv1D(4, 5, strides=2, activation="tanh"), (3, 700))])
@pytest.mark.usefixtures("small_tiles")
def test_conv_weight_gradient_split_across_programs(layer, shape):
    """Over 1024 output positions (batch x spatial), the weight-gradient reduction is split across
    programs whose partial sums, bias included, are added atomically."""
    positions = 6 * (400 if len(shape) == 3 else 348)
    assert fg.kernels.Target("cpu").split_k(positions, 1024, tiles=1) == 2
    check(fg.Sequential([fg.Input(shape), layer, fg.Flatten(), fg.Dense(2)]), batch=6)


@pytest.mark.parametrize("pool", [fg.MaxPool2D(2), fg.AvgPool2D(2), fg.MaxPool2D(3, strides=2, padding="same"),
                                  fg.AvgPool2D(3, strides=1, padding="same"), fg.MaxPool2D((2, 3), padding=1)])
def test_pool2d(pool):
    check(fg.Sequential([fg.Input((1, 7, 8)), fg.Conv2D(3, 3, padding="same", activation="relu"), pool,
                         fg.Flatten(), fg.Dense(2)]))


@pytest.mark.parametrize("pool", [fg.MaxPool1D(2), fg.AvgPool1D(3, strides=2, padding="same"),
                                  fg.GlobalAvgPool1D()])
def test_pool1d(pool):
    check(fg.Sequential([fg.Input((2, 9)), fg.Conv1D(3, 3, activation="tanh"), pool, fg.Flatten(), fg.Dense(2)]))


def test_global_avg_pool2d():
    check(fg.Sequential([fg.Input((2, 5, 4)), fg.Conv2D(4, 3, padding="same"), fg.GlobalAvgPool2D(), fg.Dense(3)]))


@pytest.mark.parametrize("activation,loss", [
    ("softmax", "cross_entropy"), ("log_softmax", "cross_entropy"), (None, "cross_entropy"),
    ("sigmoid", "binary_cross_entropy"), (None, "binary_cross_entropy"), ("relu", "mse"), ("leaky_relu", "mse"),
    ("tanh", "mse"), ("sigmoid", "mse"), ("gelu", "mse"), ("silu", "mse"), ("elu", "mse"),
])
def test_dense_heads_and_losses(activation, loss):
    model = fg.Sequential([fg.Input((6,)), fg.Dense(8, activation="relu"), fg.Dense(4, activation=activation)])
    check(model, loss, batch=5)


def test_dense_on_sequences_add_and_concatenate():
    x = fg.Input((3, 4))
    h = fg.Dense(4, activation="tanh")(x)
    s = fg.Add()([h, x])
    c = fg.Concatenate(axis=2)([s, x])
    model = fg.Model(x, fg.Dense(2)(fg.Flatten()(c)))
    check(model)


def test_embedding_trainable_and_frozen():
    def build(trainable):
        return fg.Sequential([fg.Input((5,), dtype="int64"), fg.Embedding(7, 3, trainable=trainable, name="emb"),
                              fg.Flatten(), fg.Dense(2)])

    for trainable in (True, False):
        model = build(trainable)
        feeds = [torch.tensor([[0, 1, 1, 6, 3], [2, 2, 2, 0, 5]])]
        compiled = assert_grads_match_torch(model, feeds, targets_for(model, "mse", 2), "mse")
        ops = {n.op for n in compiled.train_source.nodes}
        assert ("embedding_bwd" in ops) == trainable


def test_frozen_layer_gets_no_gradient_kernels_at_all():
    x = fg.Input((6,), dtype="int64")
    h = fg.Embedding(10, 4, trainable=False)(x)
    model = fg.Model(x, fg.Dense(1, activation="sigmoid")(fg.Flatten()(h)))
    compiled = fg.compile(model, loss="binary_cross_entropy")
    assert not any(n.op == "embedding_bwd" for n in compiled.train_source.nodes)
    _, grads = compiled.loss_and_grads(torch.randint(0, 10, (3, 6)), torch.ones(3, 1))
    assert "embedding.weight" not in grads


@pytest.mark.parametrize("name,loss", [("lenet_digits", "cross_entropy"), ("cnn1d", "mse"),
                                       ("resnet_block", "mse")])
def test_zoo_cnn_models(name, loss):
    check(fg.zoo.get(name), loss, batch=4)


def test_lenet_28x28_batch_1():
    check(fg.zoo.lenet(), "cross_entropy", batch=1, fuse_modes=(True,))


def test_max_pool_ties_relu_at_zero_and_saturated_sigmoids():
    model = fg.Sequential([fg.Input((1, 4, 4)), fg.Conv2D(2, 1, activation="relu", name="c"), fg.MaxPool2D(2),
                           fg.Flatten(), fg.Dense(1, activation="sigmoid", name="out")])
    params = dict(model.params)
    params["c.weight"] = torch.tensor([[[[1.0]]], [[[0.0]]]])  # channel 1: exactly 0 into the ReLU
    params["c.bias"] = torch.zeros(2)
    params["out.weight"] = torch.full((1, 8), 40.0)  # saturates the sigmoid for positive sums
    params["out.bias"] = torch.tensor([-20.0])
    model.load_params(params)
    x = torch.tensor([[[[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0], [0.0, 0.0, -1.0, -1.0],
                        [0.0, 0.0, -1.0, -1.0]]], [[[3.0, 3.0, 0.5, 0.5], [3.0, 3.0, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0],
                                                    [0.0, 0.0, 0.0, 0.0]]]])  # every window a 4-way tie
    for fuse in (True, False):
        # mse on the probability: a saturated sigmoid's gradient y(1-y) is exactly 0 in both
        assert_grads_match_torch(model, [x], torch.tensor([[1.0], [0.0]]), "mse", fuse=fuse)


def test_binary_cross_entropy_from_a_saturated_sigmoid_takes_no_log_of_a_probability():
    model = fg.Sequential([fg.Input((1,)), fg.Dense(1, activation="sigmoid", name="out")])
    model.load_params({"out.weight": torch.tensor([[1.0]]), "out.bias": torch.tensor([0.0])})
    x, y = torch.tensor([[40.0], [-40.0]]), torch.tensor([[0.0], [1.0]])
    value, grads = fg.compile(model, loss="binary_cross_entropy").loss_and_grads(x, y)
    logits = torch.tensor([[40.0], [-40.0]], requires_grad=True)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    expected.backward()
    # torch's BCE on the probability clamps log(0) to -100 here; from the logits it is exact
    assert value == pytest.approx(expected.item(), rel=1e-6) and value == pytest.approx(40.0, rel=1e-6)
    torch.testing.assert_close(grads["out.weight"], (logits.grad * x).sum(0, keepdim=True))


def test_bad_targets_and_losses_are_clear_errors():
    model = fg.zoo.lenet_digits() if hasattr(fg.zoo, "lenet_digits") else fg.zoo.lenet((1, 8, 8))
    compiled = fg.compile(model, loss="cross_entropy")
    with pytest.raises(fg.InputError, match=r"class targets must lie in \[0, 10\)"):
        compiled.loss_and_grads(torch.randn(2, 1, 8, 8), torch.tensor([3, 10]))
    with pytest.raises(fg.InputError, match="expects dtype int64"):
        compiled.loss_and_grads(torch.randn(2, 1, 8, 8), torch.tensor([3.0, 1.0]))
    with pytest.raises(fg.GraphError, match="unknown loss 'hinge'"):
        fg.compile(model, loss="hinge")
    with pytest.raises(fg.GraphError, match="compile with loss="):
        fg.compile(model).loss_and_grads(torch.randn(2, 1, 8, 8), torch.tensor([3, 1]))


@pytest.mark.parametrize("rnn_cls", [fg.SimpleRNN, fg.LSTM, fg.GRU])
@pytest.mark.parametrize("return_sequences,bidirectional", [(False, False), (True, False), (False, True),
                                                            (True, True)])
def test_recurrent_layers_through_time(rnn_cls, return_sequences, bidirectional):
    x = fg.Input((5, 3))
    h = rnn_cls(4, return_sequences=return_sequences, bidirectional=bidirectional)(x)
    model = fg.Model(x, fg.Dense(2)(fg.Flatten()(h) if return_sequences else h))
    check(model, batch=2)


def test_stacked_recurrent_layers_through_time():
    x = fg.Input((4, 2))
    h = fg.LSTM(3, return_sequences=True, bidirectional=True)(x)
    h = fg.GRU(4, return_sequences=True)(h)
    model = fg.Model(x, fg.Dense(1)(fg.SimpleRNN(3)(h)))
    check(model, batch=2)


def test_long_lstm_sequence():
    model = fg.Sequential([fg.Input((64, 2)), fg.LSTM(5), fg.Dense(1)])
    check(model, batch=2, fuse_modes=(True,))


@pytest.mark.parametrize("name,loss", [("lstm_classifier", "binary_cross_entropy"), ("gru_forecaster", "mse")])
def test_zoo_recurrent_models(name, loss):
    model = fg.zoo.lstm_classifier(vocab_size=50, seq_len=8, embed_dim=6, units=5) if name == "lstm_classifier" \
        else fg.zoo.gru_forecaster(window=8, units=6)
    feeds = feeds_for(model, 3, vocab=50)
    assert_grads_match_torch(model, feeds, targets_for(model, loss, 3), loss)


def test_lenet_backward_kernels_within_twice_the_forward_plus_one_and_reported():
    model = fg.zoo.lenet((1, 8, 8))
    compiled = fg.compile(model, loss="cross_entropy")
    compiled.loss_and_grads(torch.randn(2, 1, 8, 8), torch.tensor([1, 7]))
    report = compiled.explain(batch=2)
    line = next(row for row in report.splitlines() if row.startswith("Training step"))
    forward, loss, backward = (int(n) for n in re.search(
        r"(\d+) forward launches, (\d+) loss launch \(loss and its gradient\), (\d+) backward", line).groups())
    assert compiled.last_launches == forward + loss + backward
    assert forward == 5 and backward <= 2 * forward + 1
    # the pre-pool maps are not kept: the pools keep 1-byte window positions
    assert "%pool1.positions: i8[N,6,4,4]" in report and "%conv1:" not in report


def test_dropout_backward_applies_the_forward_mask():
    from fusegraph.kernels import Target, generate

    model = fg.Sequential([fg.Input((16,)), fg.Dense(32, activation="tanh", name="a"),
                           fg.Dropout(0.5, seed=11, name="drop"), fg.Dense(3, name="b")])
    x, y = feeds_for(model, 4)[0], targets_for(model, "mse", 4)
    value, grads = fg.compile(model, loss="mse").loss_and_grads(x, y)
    # the mask the dropout kernel draws for this node, read off by dropping ones
    node = next(n for n in model.graph.nodes if n.op == "dropout")
    kernel = generate(node, Target("cpu"))
    kept = torch.empty(4, 32)
    kernel.run([torch.ones(4, 32)], [kept])
    assert 0.2 < (kept > 0).float().mean() < 0.8
    oracle = model.to_torch().train()
    params = oracle.fusegraph_parameters()
    hidden = torch.tanh(x @ params["a.weight"].t() + params["a.bias"]) * kept
    loss = torch.nn.functional.mse_loss(hidden @ params["b.weight"].t() + params["b.bias"], y)
    loss.backward()
    assert value == pytest.approx(loss.item(), rel=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, params[name].grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rnn_cls", [fg.SimpleRNN, fg.LSTM, fg.GRU])
@pytest.mark.parametrize("units,per_step", [(4, 0), (MAX_WIDTH["float32"] + 1, 2)])
def test_recurrent_training_step_launches_per_time_step(rnn_cls, units, per_step):
    """A narrow layer's training step launches the same kernels however long the sequence: forward
    and backward loops are one persistent kernel each. A wide one costs two launches per time step,
    one forward, one backward: both projections leave the backward loop as single GEMMs (a GRU
    keeps h_(t-1) too, for its z * h term), so does the input gradient dz_t W_ih, and dh = dz W_hh
    computes dz, the cell gradient of all gates at once, in its K loop (a GRU's direct term z * dh
    is added at the chunk that holds the program's columns)."""
    launches = []
    for steps in (3, 4):
        x = fg.Input((steps, 3))
        h = rnn_cls(units, return_sequences=True)(fg.Dense(3)(x))  # the input gradient is needed
        model = fg.Model(x, fg.Dense(1)(rnn_cls(units)(h)))
        compiled = fg.compile(model, loss="mse")
        compiled.loss_and_grads(torch.randn(2, steps, 3), torch.randn(2, 1))
        launches.append(compiled.last_launches)
    assert launches[1] - launches[0] == 2 * per_step  # two layers


@pytest.mark.parametrize("second", [dict(filters=18, kernel_size=3, strides=2, padding="same", activation="gelu"),
                                    dict(filters=16, kernel_size=(3, 2), dilation=2, padding=(1, 2))])
def test_input_gradient_through_a_wide_conv(second):
    """16 or more output channels: the input gradient reduces tap by tap over blocks of output channels
    (stride and dilation decide, per tap, which output position each input pixel fed)."""
    model = fg.Sequential([fg.Input((2, 7, 6)), fg.Conv2D(20, 3, padding="same", activation="silu"),
                           fg.Conv2D(**second), fg.Flatten(), fg.Dense(2)])
    check(model, batch=2)
