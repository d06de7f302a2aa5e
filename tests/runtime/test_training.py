"""Optimizers against torch.optim, training against a torch training loop, fit / evaluate / predict."""

import pytest
import torch

import fusegraph as fg
from fusegraph.kernels import Target, load_kernel
from fusegraph.kernels import optim as optim_kernels
from tests.conftest import assert_training_follows_torch, feeds_for, targets_for

OPTIMIZERS = [
    (fg.optim.SGD(lr=0.1), dict(lr=0.1)),
    (fg.optim.SGD(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
     dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    (fg.optim.SGD(lr=0.05, momentum=0.8, nesterov=True), dict(lr=0.05, momentum=0.8, nesterov=True)),
    (fg.optim.Adagrad(), {}), (fg.optim.Adagrad(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5),
                               dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5)),
    (fg.optim.Adadelta(), {}), (fg.optim.Adadelta(lr=0.5, rho=0.8, weight_decay=0.1), dict(lr=0.5, rho=0.8,
                                                                                         weight_decay=0.1)),
    (fg.optim.RMSprop(), {}), (fg.optim.RMSprop(momentum=0.9, centered=True, weight_decay=0.05),
                               dict(momentum=0.9, centered=True, weight_decay=0.05)),
    (fg.optim.Adam(), {}), (fg.optim.Adam(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1, amsgrad=True),
                            dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1, amsgrad=True)),
    (fg.optim.AdamW(), {}), (fg.optim.AdamW(lr=0.01, betas=(0.8, 0.9), weight_decay=0.5, amsgrad=True),
                             dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.5, amsgrad=True)),
    (fg.optim.Adamax(), {}), (fg.optim.Adamax(lr=0.01, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.1),
                              dict(lr=0.01, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.1)),
    (fg.optim.NAdam(), {}), (fg.optim.NAdam(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1, momentum_decay=0.01),
                             dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1, momentum_decay=0.01)),
    (fg.optim.NAdam(lr=0.01, weight_decay=0.3, decoupled_weight_decay=True),
     dict(lr=0.01, weight_decay=0.3, decoupled_weight_decay=True)),
]
STATE_NAMES = {"SGD": ["momentum_buffer"], "Adagrad": ["sum"], "Adadelta": ["square_avg", "acc_delta"],
               "RMSprop": ["square_avg", "momentum_buffer", "grad_avg"], "Adam": ["exp_avg", "exp_avg_sq",
                                                                                   "max_exp_avg_sq"]}
STATE_NAMES["AdamW"] = STATE_NAMES["Adam"]
STATE_NAMES["Adamax"], STATE_NAMES["NAdam"] = ["exp_avg", "exp_inf"], ["exp_avg", "exp_avg_sq"]


@pytest.mark.parametrize("ours,theirs", OPTIMIZERS, ids=lambda o: getattr(o, "name", ""))
def test_optimizer_step_and_state_equal_torch_optim(ours, theirs):
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(1000, generator=generator)
    grads = [torch.randn(1000, generator=generator) for _ in range(5)]
    reference = torch.nn.Parameter(start.clone())
    torch_optimizer = getattr(torch.optim, ours.name)([reference], **theirs)
    flat = start.clone()
    states = [torch.zeros(1000) for _ in ours.state]
    if ours.name == "Adagrad":
        states[0].fill_(ours.initial_accumulator_value)
    kernel = load_kernel(optim_kernels.render(ours))
    # NOTE: centered RMSprop divides by sqrt(E[g^2] - E[g]^2), a cancellation that turns torch's fused
    # multiply-adds (vectorised addcmul) into a few ulps; everything else matches at 1e-6
    rtol = 1e-5 if getattr(ours, "centered", False) else 1e-6
    for step, grad in enumerate(grads, start=1):
        reference.grad = grad.clone()
        torch_optimizer.step()
        optim_kernels.launch(kernel, ours, Target("cpu"), flat, grad.clone(), states, step)
        torch.testing.assert_close(flat, reference.detach(), rtol=rtol, atol=1e-6)
    torch_state = torch_optimizer.state[reference]
    for name, ours_state in zip(STATE_NAMES[ours.name], states):
        if name in torch_state and torch.is_tensor(torch_state[name]) and torch_state[name].numel() == 1000:
            torch.testing.assert_close(ours_state, torch_state[name], rtol=rtol, atol=1e-6)


def test_lenet_follows_torch_loss_curve_for_20_steps():
    model = fg.zoo.lenet((1, 8, 8))
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.SGD(lr=0.05, momentum=0.9))
    oracle = model.to_torch()
    torch_optimizer = torch.optim.SGD(oracle.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(5)
    batches = [(torch.randn(16, 1, 8, 8, generator=generator), torch.randint(0, 10, (16,), generator=generator))
               for _ in range(20)]
    assert_training_follows_torch(model, trainer, torch_optimizer, oracle, batches)


def test_fit_evaluate_predict_and_frozen_layers_stay_bit_for_bit():
    x_in = fg.Input((6,), dtype="int64")
    h = fg.Embedding(20, 4, trainable=False, name="emb")(x_in)
    model = fg.Model(x_in, fg.Dense(3, activation="softmax", name="out")(fg.Flatten()(h)))
    frozen = model.params["emb.weight"].clone()
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.Adam(lr=0.05))
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 20, (96, 6), generator=generator)
    y = x[:, 0] % 3  # learnable from the first token
    history = trainer.fit(x[:64], y[:64], epochs=8, batch_size=16, validation_data=(x[64:], y[64:]),
                          early_stopping=3, verbose=False)
    assert history["loss"][-1] < history["loss"][0]
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert torch.equal(trainer.params["emb.weight"], frozen) and torch.equal(model.params["emb.weight"], frozen)
    scores = trainer.evaluate(x[:64], y[:64])
    assert scores["accuracy"] > 0.6
    probs = trainer.predict(x[:10])
    assert probs.shape == (10, 3)
    torch.testing.assert_close(probs, model.to_torch()(x[:10]), rtol=1e-4, atol=1e-5)  # fit wrote back the weights


def test_early_stopping_restores_the_best_weights():
    model = fg.Sequential([fg.Input((4,)), fg.Dense(1, name="out")])
    trainer = fg.compile(model, loss="mse", optimizer=fg.optim.SGD(lr=5.0))  # diverges after a step or two
    x, y = feeds_for(model, 32)[0], targets_for(model, "mse", 32)
    history = trainer.fit(x, y, epochs=10, batch_size=8, validation_data=(x, y), early_stopping=2, verbose=False)
    best = min(history["val_loss"])
    assert trainer.evaluate(x, y)["loss"] == pytest.approx(best, rel=1e-5)
    assert len(history["val_loss"]) < 10


def test_training_errors():
    model = fg.Sequential([fg.Input((4,)), fg.Dense(1)])
    with pytest.raises(fg.GraphError, match="needs a loss"):
        fg.compile(model, optimizer=fg.optim.Adam())
    with pytest.raises(fg.GraphError, match="compile with an optimizer"):
        fg.compile(model, loss="mse").train_step(torch.zeros(2, 4), torch.zeros(2, 1))
    with pytest.raises(fg.GraphError, match="betas"):
        fg.optim.Adam(betas=(1.5, 0.9))
    with pytest.raises(fg.InputError, match="x has 3 samples but y has 2"):
        fg.compile(model, loss="mse", optimizer=fg.optim.SGD()).fit(torch.zeros(3, 4), torch.zeros(2, 1))


def test_dropout_draws_a_new_mask_each_step_and_is_off_in_evaluation():
    model = fg.Sequential([fg.Input((16,)), fg.Dense(16, activation="relu"), fg.Dropout(0.5), fg.Dense(1)])
    trainer = fg.compile(model, loss="mse", optimizer=fg.optim.SGD(lr=0.0))  # lr 0: only the mask changes
    x, y = feeds_for(model, 8)[0], targets_for(model, "mse", 8)
    losses = {round(trainer.train_step(x, y), 6) for _ in range(4)}
    assert len(losses) > 1
    first, again = trainer.evaluate(x, y), trainer.evaluate(x, y)
    assert first == again
    expected = torch.nn.functional.mse_loss(model.to_torch()(x), y).item()
    assert first["loss"] == pytest.approx(expected, rel=1e-5)


def test_fit_evaluate_predict_take_several_inputs():
    a, b = fg.Input((3,)), fg.Input((3,))
    model = fg.Model([a, b], fg.Dense(1, name="out")(fg.Concatenate(axis=1)([a, b])))
    trainer = fg.compile(model, loss="mse", optimizer=fg.optim.Adam(lr=0.05))
    generator = torch.Generator().manual_seed(0)
    xa, xb = torch.randn(40, 3, generator=generator), torch.randn(40, 3, generator=generator)
    y = (xa.sum(1, keepdim=True) - xb[:, :1])
    history = trainer.fit([xa, xb], y, epochs=15, batch_size=8, verbose=False)
    assert history["loss"][-1] < 0.2 * history["loss"][0]
    assert trainer.evaluate([xa, xb], y)["loss"] < history["loss"][0]
    torch.testing.assert_close(trainer.predict([xa, xb]), model.to_torch()(xa, xb), rtol=1e-4, atol=1e-5)
    with pytest.raises(fg.InputError, match="different numbers of samples"):
        trainer.predict([xa, xb[:5]])
