"""BatchNorm1D / BatchNorm2D against torch's nn.BatchNorm1d / 2d (fp32: rtol 1e-4, atol 1e-5): evaluation
on running statistics, training on the batch's statistics (forward, gradients through the statistics,
running statistics and num_batches_tracked over several steps), fused and unfused, NCHW and NHWC."""

import pytest
import torch

import fusegraph as fg
from fusegraph.runtime import training
from tests.conftest import (
    assert_compiled_matches_torch,
    assert_grads_match_torch,
    assert_training_follows_torch,
    feeds_for,
    targets_for,
    training_oracle,
)


def with_random_state(model: fg.Model, seed: int = 0) -> fg.Model:
    """Weights, biases and running statistics away from their initial 1 / 0, so each one shows."""
    generator = torch.Generator().manual_seed(seed)

    def draw(name: str, t: torch.Tensor) -> torch.Tensor:
        if not t.is_floating_point() or not any(k in name for k in ("running", "batch_norm")):
            return t
        return torch.rand(t.shape, generator=generator) + 0.5 if name.endswith(("running_var", "weight")) \
            else torch.randn(t.shape, generator=generator) * 0.5

    model.load_params({name: draw(name, t) for name, t in model.params.items()})
    return model


def conv_block(channels: int = 6) -> fg.Model:
    return with_random_state(fg.Sequential([
        fg.Input((3, 8, 7)), fg.Conv2D(channels, 3, padding="same"), fg.BatchNorm2D(), fg.Activation("relu"),
        fg.MaxPool2D(2), fg.Conv2D(channels, 3, padding="same"), fg.BatchNorm2D(eps=1e-3, momentum=0.3),
        fg.Activation("silu"), fg.GlobalAvgPool2D(), fg.Dense(5), fg.BatchNorm1D(), fg.Dense(3)]))


def sequence_block() -> fg.Model:
    return with_random_state(fg.Sequential([fg.Input((2, 9)), fg.Conv1D(4, 3, padding="same"), fg.BatchNorm1D(),
                                            fg.Activation("tanh"), fg.Flatten(), fg.Dense(2)]))


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("build", [conv_block, sequence_block])
def test_evaluation_uses_running_statistics_like_torch_eval(build, fuse):
    model = build()
    assert_compiled_matches_torch(model, feeds_for(model, 3), fuse=fuse)


def test_a_batch_norm_after_a_conv_or_dense_folds_into_its_weights():
    """conv + bias + BN + ReLU + pool is one kernel, and the BN is gone: its scale multiplies the conv's
    weights, its shift is the new bias (computed from the current weights, so training moves them)."""
    compiled = fg.compile(conv_block())
    assert compiled.kernel_names == ["conv2d_bias_add_relu_max_pool2d", "conv2d_bias_add_silu_global_avg_pool2d",
                                     "matmul_bias_add", "matmul_bias_add"]
    assert not [n for n in compiled.graph.nodes if n.op == "batch_norm"]
    assert {n.name for n in compiled.graph.param_nodes if "folded" in n.attrs} >= {"conv2d.weight.folded",
                                                                                    "batch_norm2d.folded_bias"}
    assert "folded into the weights and bias of the layer before them (no kernel of their own): batch_norm2d, " \
           "batch_norm2d_1, batch_norm1d" in compiled.explain()


def test_a_batch_norm_that_cannot_fold_still_fuses_as_an_epilogue():
    """After an activation the scale cannot move into the weights: the four vectors load in the epilogue."""
    model = with_random_state(fg.Sequential([fg.Input((3, 6, 6)), fg.Conv2D(4, 3, activation="relu"), fg.BatchNorm2D(),
                                             fg.Flatten(), fg.Dense(2)]))
    compiled = assert_compiled_matches_torch(model, feeds_for(model, 2))
    assert compiled.kernel_names[0] == "conv2d_bias_add_relu_batch_norm"


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("build", [conv_block, sequence_block])
def test_training_gradients_go_through_the_batch_statistics_like_autograd(build, fuse):
    model = build()
    assert_grads_match_torch(model, feeds_for(model, 4), targets_for(model, "mse", 4), "mse", fuse=fuse)


def test_gradients_of_a_channels_last_block():
    """Between two wide convs the batch norm's input, output and gradients are stored NHWC."""
    model = with_random_state(fg.Sequential([
        fg.Input((3, 6, 6)), fg.Conv2D(16, 3, padding="same"), fg.BatchNorm2D(), fg.Activation("relu"),
        fg.Conv2D(16, 3, padding="same"), fg.Flatten(), fg.Dense(2)]))
    compiled = assert_grads_match_torch(model, feeds_for(model, 3), targets_for(model, "mse", 3), "mse")
    norm = next(n for n in compiled.train_source.nodes if n.op == "batch_norm_train")
    assert next(n for n in compiled.train_graph.nodes if n.name == norm.name).outputs[0].type.channels_last


def test_training_steps_update_running_statistics_like_torch():
    model = conv_block()
    oracle = training_oracle(model)
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.SGD(0.05, momentum=0.9))
    torch_optimizer = torch.optim.SGD(oracle.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(4, 3, 8, 7, generator=generator), torch.randint(0, 3, (4,), generator=generator))
               for _ in range(3)]
    trainer.predict(batches[0][0])  # folds the batch norms into the untrained weights: training must refold
    assert_training_follows_torch(model, trainer, torch_optimizer, oracle, batches)
    state = oracle.state_dict()
    ours = model.params  # read through from the trainer
    for module, name in ((oracle.layers.batch_norm2d, "batch_norm2d"), (oracle.layers.batch_norm2d_1, "batch_norm2d_1"),
                         (oracle.layers.batch_norm1d, "batch_norm1d")):
        for buffer in ("running_mean", "running_var"):
            torch.testing.assert_close(ours[f"{name}.{buffer}"], getattr(module, buffer), rtol=1e-4, atol=1e-5)
        assert int(ours[f"{name}.num_batches_tracked"]) == 3 == int(module.num_batches_tracked)
    # what evaluation reads is the trained state: torch's eval mode on it
    x = batches[0][0]
    with torch.no_grad():
        torch.testing.assert_close(trainer.predict(x), oracle.eval()(x), rtol=1e-4, atol=1e-5)
    # and to_torch() hands the trained state on: weights, running statistics, step counts
    handed = model.to_torch().state_dict()
    assert set(handed) == set(state)
    for key, value in handed.items():
        torch.testing.assert_close(value, state[key], rtol=1e-4, atol=1e-5)


def test_an_interrupted_step_leaves_running_statistics_as_they_were(monkeypatch):
    model = conv_block()
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.SGD(0.05))
    before = {name: t.clone() for name, t in model.params.items()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training.optim_kernels, "launch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.train_step(torch.randn(4, 3, 8, 7), torch.tensor([0, 1, 2, 0]))
    for name, tensor in model.params.items():
        assert torch.equal(tensor, before[name]), name


def test_bad_batch_norms_are_refused_clearly():
    with pytest.raises(fg.GraphError, match="BatchNorm2D.*takes \\(batch, channels, height, width\\)"):
        fg.Sequential([fg.Input((3, 8)), fg.BatchNorm2D()])
    with pytest.raises(fg.GraphError, match="momentum must be a number in \\[0, 1\\]"):
        fg.BatchNorm1D(momentum=2)
    with pytest.raises(fg.GraphError, match="eps must be a positive number"):
        fg.BatchNorm1D(eps=0)
    model = fg.Sequential([fg.Input((4,)), fg.Dense(3), fg.BatchNorm1D(), fg.Dense(2)])
    trainer = fg.compile(model, loss="mse", optimizer=fg.optim.SGD(0.1))
    with pytest.raises(fg.InputError, match="batch_norm1d.*more than one value per channel"):
        trainer.train_step(torch.randn(1, 4), torch.randn(1, 2))


def test_early_stopping_restores_the_running_statistics_with_the_best_weights():
    """Evaluation reads the running statistics: the best epoch's loss comes back only if they do too."""
    model = fg.Sequential([fg.Input((4,)), fg.Dense(6), fg.BatchNorm1D(momentum=0.5), fg.Dense(1)])
    trainer = fg.compile(model, loss="mse", optimizer=fg.optim.SGD(lr=0.1))  # its best epoch is not its last
    x, y = feeds_for(model, 32)[0], targets_for(model, "mse", 32)
    history = trainer.fit(x, y, epochs=10, batch_size=8, validation_data=(x, y), early_stopping=2, verbose=False)
    assert len(history["val_loss"]) < 10
    assert trainer.evaluate(x, y)["loss"] == pytest.approx(min(history["val_loss"]), rel=1e-5)


def test_running_statistics_are_state_not_parameters():
    """As torch's buffers: in model.params and to_torch()'s state, not counted as parameters, not trained."""
    model = fg.Sequential([fg.Input((3, 4, 4)), fg.BatchNorm2D(name="bn")])
    assert model.count_params() == 6 == sum(p.numel() for p in model.to_torch().parameters())
    assert set(model.params) == {"bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}
    assert set(model.to_torch().state_dict()) == {f"layers.bn.{k}" for k in
                                                  ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")
def test_running_statistics_after_an_infinite_batch_are_torchs():
    """Two training steps on a batch holding inf: torch's update keeps the running mean inf (and the
    running variance NaN); fusegraph's must not turn inf into NaN on the second step."""
    model = fg.Sequential([fg.Input((3,)), fg.BatchNorm1D(), fg.Dense(2)])
    model.init(0)
    oracle = training_oracle(model)
    x = torch.randn(4, 3)
    x[1, 0] = float("inf")
    y = torch.randint(0, 2, (4,))
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.SGD(lr=0.0))
    for _ in range(2):
        trainer.train_step(x, y)
        oracle(x)
    for buffer in ("running_mean", "running_var"):
        torch.testing.assert_close(model.params[f"batch_norm1d.{buffer}"], getattr(oracle.layers["batch_norm1d"], buffer),
                                   equal_nan=True)
    assert model.params["batch_norm1d.running_mean"][0] == float("inf")
