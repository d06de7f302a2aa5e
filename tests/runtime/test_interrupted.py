"""A step counts when it completes, and whatever stops training (a bad batch, an exception, Ctrl-C) the
trainer, the Model and to_torch() hold the same weights."""

import pytest
import torch
import torch.nn.functional as F

import fusegraph as fg
from fusegraph.runtime import training
from tests.conftest import feeds_for, targets_for


def _classifier() -> fg.Model:
    model = fg.Sequential([fg.Input((6,)), fg.Dense(5, activation="tanh"), fg.Dense(3, name="out")])
    model.init(0)
    return model


def _batches(n: int):
    generator = torch.Generator().manual_seed(3)
    return [(torch.randn(4, 6, generator=generator), torch.randint(0, 3, (4,), generator=generator)) for _ in range(n)]


def _assert_trainer_is_torch_after(trainer, oracle, torch_optimizer, batches) -> None:
    for x, y in batches:
        torch_optimizer.zero_grad()
        F.cross_entropy(oracle(x), y).backward()
        torch_optimizer.step()
    for name, param in oracle.fusegraph_parameters().items():
        torch.testing.assert_close(trainer.params[name], param.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("optimizer,torch_name,kwargs", [
    (fg.optim.Adam(lr=0.05), "Adam", dict(lr=0.05)),
    (fg.optim.Adagrad(lr=0.1, lr_decay=0.5), "Adagrad", dict(lr=0.1, lr_decay=0.5)),
    (fg.optim.SGD(lr=0.1, momentum=0.9, dampening=0.5), "SGD", dict(lr=0.1, momentum=0.9, dampening=0.5)),
], ids=["Adam", "Adagrad", "SGD"])
def test_a_rejected_batch_does_not_count_as_a_step(optimizer, torch_name, kwargs):
    model = _classifier()
    oracle = model.to_torch()
    torch_optimizer = getattr(torch.optim, torch_name)(oracle.parameters(), **kwargs)
    trainer = fg.compile(model, loss="cross_entropy", optimizer=optimizer)
    (x1, y1), (x2, y2) = _batches(2)
    with pytest.raises(fg.InputError, match="class targets"):
        trainer.train_step(x1, torch.tensor([0, 1, 7, 2]))  # a label out of range, before any step
    trainer.train_step(x1, y1)
    with pytest.raises(fg.InputError):
        trainer.train_step(x2[:, :5], y2)  # a wrong feature count
    trainer.train_step(x2, y2)
    assert trainer.steps_taken == 2
    _assert_trainer_is_torch_after(trainer, oracle, torch_optimizer, [(x1, y1), (x2, y2)])


def test_ctrl_c_in_the_forward_or_the_optimizer_kernel_changes_nothing(monkeypatch):
    model = _classifier()
    oracle = model.to_torch()
    torch_optimizer = torch.optim.Adam(oracle.parameters(), lr=0.05)
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.Adam(lr=0.05))
    (x1, y1), (x2, y2) = _batches(2)
    trainer.train_step(x1, y1)
    before = [t.clone() for t in (trainer.flat, *trainer.states)]

    real_runner = trainer._step_runner

    def interrupted_forward(feeds, copy=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_step_runner", interrupted_forward)
    with pytest.raises(KeyboardInterrupt):
        trainer.train_step(x2, y2)
    monkeypatch.setattr(trainer, "_step_runner", real_runner)

    real_launch = training.optim_kernels.launch

    def interrupted_update(kernel, optimizer, target, flat, grads, states, step, **half):
        real_launch(kernel, optimizer, target, flat, grads, states, step, **half)
        flat[:3] = 99.0  # as if the interpreter had run some of the update's programs
        raise KeyboardInterrupt

    monkeypatch.setattr(training.optim_kernels, "launch", interrupted_update)
    with pytest.raises(KeyboardInterrupt):
        trainer.train_step(x2, y2)
    monkeypatch.setattr(training.optim_kernels, "launch", real_launch)
    for tensor, saved in zip((trainer.flat, *trainer.states), before, strict=True):
        assert torch.equal(tensor, saved)
    assert trainer.steps_taken == 1
    trainer.train_step(x2, y2)
    _assert_trainer_is_torch_after(trainer, oracle, torch_optimizer, [(x1, y1), (x2, y2)])


def _assert_model_is_trainer(model, trainer, x) -> None:
    for name, tensor in trainer.params.items():
        assert torch.equal(model.params[name], tensor.cpu())
    with torch.no_grad():
        torch.testing.assert_close(model.to_torch()(x), trainer.predict(x), rtol=1e-5, atol=1e-6)


def test_train_step_keeps_the_model_and_to_torch_current():
    model = _classifier()
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.Adam(lr=0.05))
    for x, y in _batches(3):
        trainer.train_step(x, y)
        _assert_model_is_trainer(model, trainer, x)
    model.init(7)  # weights set on the model win from then on
    assert not torch.equal(model.params["out.weight"], trainer.params["out.weight"])


def _stop_after(calls: int):
    seen = []

    def augment(x, generator):
        seen.append(1)
        if len(seen) > calls:
            raise KeyboardInterrupt
        return x

    return augment


def test_an_interrupted_fit_leaves_trainer_model_and_torch_agreeing_and_keeps_the_history():
    model = fg.Sequential([fg.Input((4,)), fg.Dense(3, activation="relu"), fg.Dense(1, name="out")])
    trainer = fg.compile(model, loss="mse", optimizer=fg.optim.SGD(lr=0.05))
    x, y = feeds_for(model, 32)[0], targets_for(model, "mse", 32)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(x, y, epochs=5, batch_size=8, verbose=False, augment=_stop_after(4 * 2 + 1))  # in epoch 3
    assert len(trainer.history["loss"]) == 2 and trainer.steps_taken == 9
    _assert_model_is_trainer(model, trainer, x)


def test_an_interrupted_fit_with_early_stopping_restores_the_best_epoch():
    model = fg.Sequential([fg.Input((4,)), fg.Dense(1, name="out")])
    trainer = fg.compile(model, loss="mse", optimizer=fg.optim.SGD(lr=5.0))  # diverges after a step or two
    x, y = feeds_for(model, 32)[0], targets_for(model, "mse", 32)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(x, y, epochs=10, batch_size=8, validation_data=(x, y), early_stopping=8, verbose=False,
                    augment=_stop_after(4 * 4 + 2))  # in epoch 5
    history = trainer.history
    best = min(history["val_loss"])
    assert len(history["val_loss"]) == 4 and history["val_loss"][-1] > best
    assert trainer.evaluate(x, y)["loss"] == pytest.approx(best, rel=1e-5)
    _assert_model_is_trainer(model, trainer, x)
