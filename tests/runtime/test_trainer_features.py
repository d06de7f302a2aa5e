"""What the lectures use beyond an optimizer: the learning rate set between steps, by schedules per epoch or
per step and on a plateau (against torch.optim.lr_scheduler), gradient clipping by global norm (against
torch.nn.utils.clip_grad_norm_), and callbacks (early stopping, checkpoints, your own), each in fp32 against
PyTorch's training to 1e-5."""

import pytest
import torch

import fusegraph as fg
from tests.conftest import training_oracle

TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


def mlp() -> fg.Model:
    model = fg.Sequential([fg.Input((5,)), fg.Dense(12, activation="tanh"), fg.Dense(3)])
    model.init(0)
    return model


def data(n: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=generator) * 3, torch.randint(0, 3, (n,), generator=generator)


def torch_steps(model, batches, make_optimizer, before_step=lambda oracle, optimizer, i: None, make_scheduler=None,
                clip: float | None = None, label_smoothing: float = 0.0):
    """torch's training of the same model on `batches` (one epoch each; `clip`: clip_grad_norm_ first)."""
    oracle = training_oracle(model)
    optimizer = make_optimizer(oracle.parameters())
    scheduler = make_scheduler(optimizer) if make_scheduler else None
    losses, rates = [], []
    for i, (x, y) in enumerate(batches):
        rates.append(optimizer.param_groups[0]["lr"])
        before_step(oracle, optimizer, i)
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(oracle(x), y, label_smoothing=label_smoothing)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(oracle.parameters(), clip)
        optimizer.step()
        losses.append(float(loss.detach()))
        if scheduler is not None:
            scheduler.step()
    return oracle, losses, rates


def assert_same_weights(trainer, oracle) -> None:
    theirs = oracle.fusegraph_parameters()
    for name, ours in trainer.params.items():
        torch.testing.assert_close(ours, theirs[name].detach(), **TOLERANCE, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("schedule, make", [
    (fg.optim.StepLR(2, gamma=0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 2, gamma=0.5)),
    (fg.optim.ExponentialLR(0.7), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.7)),
    (fg.optim.CosineAnnealingLR(4, eta_min=0.01), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 4, 0.01)),
    (fg.optim.LinearLR(0.1, 1.0, 3), lambda o: torch.optim.lr_scheduler.LinearLR(o, 0.1, 1.0, 3)),
], ids=lambda s: type(s).__name__)
def test_fit_with_a_schedule_follows_torchs_scheduler(schedule, make):
    model = mlp()
    x, y = data()
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.SGD(lr=0.2, momentum=0.5))
    history = trainer.fit(x, y, epochs=5, batch_size=len(y), shuffle=False, verbose=False, lr_schedule=schedule)
    oracle, losses, rates = torch_steps(mlp(), [(x, y)] * 5, lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.5),
                                        make_scheduler=make)
    torch.testing.assert_close(torch.tensor(history["lr"]), torch.tensor(rates), rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.tensor(history["loss"]), torch.tensor(losses), **TOLERANCE)
    assert_same_weights(trainer, oracle)


def test_a_schedule_every_batch_follows_torchs_scheduler_stepped_after_each_step():
    """A warm-up over the first 4 steps, then the rate: 6 steps (2 epochs of 3 batches), torch's LinearLR
    stepped after every optimizer step."""
    x, y = data()
    trainer = fg.compile(mlp(), loss="cross_entropy", optimizer=fg.optim.SGD(lr=0.2, momentum=0.5))
    warm_up = fg.callbacks.LearningRateScheduler(fg.optim.LinearLR(0.1, 1.0, 4), every="batch")
    history = trainer.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=False, callbacks=[warm_up])
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 24, 8)] * 2
    oracle, _, rates = torch_steps(mlp(), batches, lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.5),
                                   make_scheduler=lambda o: torch.optim.lr_scheduler.LinearLR(o, 0.1, 1.0, 4))
    assert rates[:5] == pytest.approx([0.02, 0.065, 0.11, 0.155, 0.2], rel=1e-12)  # the steps' rates
    assert_same_weights(trainer, oracle)
    assert history["lr"] == pytest.approx([0.02, 0.155], rel=1e-12)  # each epoch's first step's rate
    history = fg.compile(mlp(), loss="cross_entropy", optimizer=fg.optim.SGD(lr=0.2)).fit(
        x, y, epochs=2, batch_size=8, shuffle=False, verbose=False, lr_schedule=fg.optim.LinearLR(0.1, 1.0, 4))
    assert history["lr"] == pytest.approx([0.02, 0.065], rel=1e-12)  # every epoch: each epoch's rate
    with pytest.raises(fg.InputError, match="'epoch' or 'batch'"):
        fg.callbacks.LearningRateScheduler(fg.optim.LinearLR(), every="step")


def test_the_rate_set_between_steps_is_the_next_steps_and_is_saved(tmp_path):
    model = mlp()
    x, y = data()
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.AdamW(lr=0.05, weight_decay=0.1))
    rates = [0.05, 0.01, 0.2]

    def set_rate(oracle, optimizer, i):
        optimizer.param_groups[0]["lr"] = rates[i]

    for rate in rates:
        trainer.lr = rate
        trainer.train_step(x, y)
    oracle, _, _ = torch_steps(mlp(), [(x, y)] * 3, lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
                               before_step=set_rate)
    assert_same_weights(trainer, oracle)
    trainer.save(tmp_path / "t.fg")
    assert fg.load(tmp_path / "t.fg").lr == 0.2
    with pytest.raises(fg.InputError, match="learning rate"):
        trainer.lr = -1.0
    with pytest.raises(fg.GraphError, match="step_size"):
        fg.optim.StepLR(0)


@pytest.mark.parametrize("precision", [None, "float16"])
def test_clipping_by_global_norm_follows_clip_grad_norm(precision):
    """Inputs scaled by 3 give gradients of norm > 0.5: every step clips. In fp16 the norm is taken of the
    unscaled gradients, as GradScaler.unscale_ then clip_grad_norm_ do (a half-precision run: compared
    loosely, its gradients rounded to fp16)."""
    model = mlp()
    x, y = data()
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 24, 8)]
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.SGD(lr=0.1, clip_grad_norm=0.5),
                         precision=precision)
    losses = [trainer.train_step(bx, by) for bx, by in batches]
    _, expected, _ = torch_steps(mlp(), batches, lambda p: torch.optim.SGD(p, lr=0.1), clip=0.5)
    tolerance = TOLERANCE if precision is None else {"rtol": 2e-2, "atol": 2e-3}
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(expected), **tolerance)
    unclipped = fg.compile(mlp(), loss="cross_entropy", optimizer=fg.optim.SGD(lr=0.1))
    assert [unclipped.train_step(bx, by) for bx, by in batches][1:] != pytest.approx(losses[1:], rel=1e-3)


class Recorder(fg.callbacks.Callback):
    def __init__(self):
        self.calls, self.batches = [], []

    def on_batch_end(self, trainer, batch, logs):
        self.batches.append((batch, logs))

    def on_train_begin(self, trainer):
        self.calls.append("begin")

    def on_epoch_end(self, trainer, epoch, logs):
        self.calls.append((epoch, sorted(logs)))
        if epoch == 1:
            trainer.stop_training = True

    def on_train_end(self, trainer):
        self.calls.append("end")


def test_callbacks_see_each_epoch_and_may_stop_the_run():
    x, y = data()
    trainer = fg.compile(mlp(), loss="cross_entropy", optimizer=fg.optim.SGD(lr=0.1))
    recorder = Recorder()
    history = trainer.fit(x, y, epochs=5, batch_size=8, verbose=False, validation_data=(x, y), callbacks=[recorder])
    keys = ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert recorder.calls == ["begin", (0, keys), (1, keys), "end"] and len(history["loss"]) == 2
    # after each batch the epoch's running figures: the last batch's are the epoch's
    assert [batch for batch, _ in recorder.batches] == [0, 1, 2] * 2
    for epoch in range(2):
        last = recorder.batches[3 * epoch + 2][1]
        assert last == {"loss": pytest.approx(history["loss"][epoch], rel=1e-6), "accuracy": history["accuracy"][epoch]}
    with pytest.raises(fg.InputError, match="Callback"):
        trainer.fit(x, y, callbacks=[print])


def test_early_stopping_says_where_it_stopped_and_which_epoch_it_restored(tmp_path, capsys):
    x, y = data()
    x_val, y_val = data(12, seed=3)
    trainer = fg.compile(mlp(), loss="cross_entropy", optimizer=fg.optim.SGD(lr=2.0))  # too fast: it diverges
    stopper = fg.callbacks.EarlyStopping(patience=2)
    history = trainer.fit(x, y, epochs=12, batch_size=4, validation_data=(x_val, y_val), callbacks=[stopper],
                          checkpoint=tmp_path / "run.fg")
    best = min(range(len(history["val_loss"])), key=history["val_loss"].__getitem__)
    assert stopper.best_epoch == best + 1 and stopper.stopped_epoch == len(history["loss"]) < 12
    out = capsys.readouterr().out
    assert f"stopped after epoch {stopper.stopped_epoch}" in out and f"restored epoch {best + 1}'s weights" in out
    assert trainer.evaluate(x_val, y_val)["loss"] == pytest.approx(history["val_loss"][best], rel=1e-6)
    assert (tmp_path / "run.fg").exists()


def test_penalties_and_max_norm_follow_torch(tmp_path):
    """L1 and L2 on fc weights join the loss (and its gradient); MaxNorm rescales after each step as
    torch.renorm(w, 2, 0, max) does; the training loss reported includes the penalty."""
    model = mlp()
    x, y = data()
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 24, 8)]
    penalties = {model.layers[0].name: fg.optim.Penalty(l1=1e-3, l2=1e-2), model.layers[1].name: fg.optim.Penalty(l2=5e-2)}
    first = model.layers[0].name
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.SGD(lr=0.5), penalties=penalties,
                         constraints={first: fg.optim.MaxNorm(0.8)})
    losses = [trainer.train_step(bx, by) for bx, by in batches]
    oracle = training_oracle(mlp())
    weights = oracle.fusegraph_parameters()
    optimizer = torch.optim.SGD(oracle.parameters(), lr=0.5)
    expected = []
    for bx, by in batches:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(oracle(bx), by)
        for layer, penalty in penalties.items():
            w = weights[f"{layer}.weight"]
            loss = loss + penalty.l1 * w.abs().sum() + penalty.l2 * (w * w).sum()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            w = weights[f"{first}.weight"]
            w.copy_(torch.renorm(w, 2, 0, 0.8))
        expected.append(float(loss.detach()))
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(expected), **TOLERANCE)
    assert_same_weights(trainer, oracle)
    assert float(trainer.params[f"{first}.weight"].norm(dim=1).max()) <= 0.8 + 1e-6
    trainer.save(tmp_path / "p.fg")
    assert fg.load(tmp_path / "p.fg").options.constraints == ((first, fg.optim.MaxNorm(0.8)),)
    with pytest.raises(fg.GraphError, match="no layer with a trainable weight"):
        fg.compile(mlp(), loss="mse", optimizer=fg.optim.SGD(), penalties={"nope": fg.optim.Penalty(l2=1.0)})
    with pytest.raises(fg.GraphError, match="MaxNorm"):
        fg.compile(mlp(), loss="mse", optimizer=fg.optim.SGD(), constraints={first: 3.0})


@pytest.mark.parametrize("settings", [
    {},
    {"patience": 2, "factor": 0.5, "cooldown": 1, "min_lr": 0.004},
    {"mode": "max", "patience": 1, "threshold": 0.05},
    {"patience": 1, "threshold": 0.2, "threshold_mode": "abs"},
    {"patience": 2, "threshold": 0.0, "threshold_mode": "abs"},  # a tie is no improvement
], ids=["defaults", "cooldown_min_lr", "max_rel", "min_abs", "ties"])
def test_reduce_lr_on_plateau_decides_as_torchs(settings):
    """Figures that fall, stall, tie and rise (negative ones too) through the callback and through
    torch.optim.lr_scheduler.ReduceLROnPlateau: the same rate after every epoch."""
    from types import SimpleNamespace

    generator = torch.Generator().manual_seed(5)
    figures = (torch.randn(60, generator=generator).cumsum(0) * 0.3).round(decimals=1).tolist()
    figures += [figures[-1]] * 15  # a long plateau
    settings = {"patience": 3, **settings}
    ours, trainer = fg.callbacks.ReduceLROnPlateau(monitor="val_loss", **settings), SimpleNamespace(lr=0.1)
    theirs = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs, **settings)
    ours.on_train_begin(trainer)
    for epoch, figure in enumerate(figures):
        ours.on_epoch_end(trainer, epoch, {"val_loss": figure})
        scheduler.step(figure)
        assert trainer.lr == theirs.param_groups[0]["lr"], f"epoch {epoch}"
    assert trainer.lr < 0.1  # it did lower the rate


def test_reduce_lr_on_plateau_in_fit_follows_the_validation_loss():
    x, y = data()
    trainer = fg.compile(mlp(), loss="cross_entropy", optimizer=fg.optim.SGD(lr=3.0))  # too fast: it stalls
    history = trainer.fit(x, y, epochs=8, batch_size=8, verbose=False, validation_data=data(12, seed=3),
                          callbacks=[fg.callbacks.ReduceLROnPlateau(factor=0.5, patience=0)])
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=3.0)
    replayed = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
    rates = []
    for val_loss in history["val_loss"]:
        rates.append(optimizer.param_groups[0]["lr"])
        replayed.step(val_loss)
    assert history["lr"] == rates and min(rates) < 3.0
    with pytest.raises(fg.InputError, match="val_loss"):
        trainer.fit(x, y, callbacks=[fg.callbacks.ReduceLROnPlateau()], verbose=False)
    with pytest.raises(fg.InputError, match="mode"):
        fg.callbacks.ReduceLROnPlateau(mode="up")
    with pytest.raises(fg.InputError, match="factor"):
        fg.callbacks.ReduceLROnPlateau(factor=1.5)


def test_csv_logger_writes_each_epoch_and_continues_a_resumed_run(tmp_path):
    import csv

    x, y = data()
    log = tmp_path / "history.csv"
    trainer = fg.compile(mlp(), loss="cross_entropy", optimizer=fg.optim.SGD(lr=0.1))
    history = trainer.fit(x, y, epochs=2, batch_size=8, verbose=False, validation_data=(x, y),
                          callbacks=[fg.callbacks.CSVLogger(log)], checkpoint=tmp_path / "run.fg")
    resumed = fg.load(tmp_path / "run.fg")
    history = resumed.fit(x, y, epochs=3, batch_size=8, verbose=False, validation_data=(x, y), initial_epoch=2,
                          callbacks=[fg.callbacks.CSVLogger(log, append=True)])
    with open(log, newline="") as written:
        rows = list(csv.reader(written))
    assert rows[0] == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert [int(row[0]) for row in rows[1:]] == [1, 2, 3]
    for column, key in enumerate(rows[0][1:], start=1):
        assert [float(row[column]) for row in rows[1:]] == history[key]  # exactly: written as repr


def test_validation_split_holds_out_the_last_samples_as_keras_does():
    x, y = data()
    split = fg.compile(mlp(), loss="cross_entropy", optimizer=fg.optim.SGD(lr=0.1))
    history = split.fit(x, y, epochs=2, batch_size=8, verbose=False, validation_split=0.1)
    cut = int(24 * (1 - 0.1))  # Keras's: 21 to train, the last 3 to validate
    given = fg.compile(mlp(), loss="cross_entropy", optimizer=fg.optim.SGD(lr=0.1))
    expected = given.fit(x[:cut], y[:cut], epochs=2, batch_size=8, verbose=False, validation_data=(x[cut:], y[cut:]))
    assert history == expected
    with pytest.raises(fg.InputError, match="not both"):
        split.fit(x, y, validation_split=0.1, validation_data=(x, y), verbose=False)
    with pytest.raises(fg.InputError, match="between 0 and 1"):
        split.fit(x, y, validation_split=1.5, verbose=False)
    with pytest.raises(fg.InputError, match="no training sample"):
        split.fit(x[:1], y[:1], validation_split=0.5, verbose=False)


@pytest.mark.parametrize("smoothing", [0.1, 0.6])
def test_label_smoothing_trains_as_torchs_cross_entropy(smoothing, tmp_path):
    """torch's nn.CrossEntropyLoss(label_smoothing=...): the steps' losses and weights, the evaluation's loss;
    3 classes in a 4-wide block (the masked column takes no part in the spread); kept in a save."""
    x, y = data()
    trainer = fg.compile(mlp(), loss="cross_entropy", label_smoothing=smoothing, optimizer=fg.optim.Adam(lr=0.05))
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 24, 8)]
    losses = [trainer.train_step(bx, by) for bx, by in batches]
    oracle, expected, _ = torch_steps(mlp(), batches, lambda p: torch.optim.Adam(p, lr=0.05), label_smoothing=smoothing)
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(expected), **TOLERANCE)
    assert_same_weights(trainer, oracle)
    with torch.no_grad():
        theirs = torch.nn.functional.cross_entropy(oracle(x), y, label_smoothing=smoothing)
    assert trainer.evaluate(x, y)["loss"] == pytest.approx(float(theirs), rel=1e-5)
    trainer.save(tmp_path / "smoothed.fg")
    assert fg.load(tmp_path / "smoothed.fg").options.label_smoothing == smoothing


def test_label_smoothing_is_refused_where_it_does_not_apply():
    with pytest.raises(fg.GraphError, match="applies to loss='cross_entropy'"):
        fg.compile(mlp(), loss="mse", label_smoothing=0.1, optimizer=fg.optim.SGD())
    with pytest.raises(fg.GraphError, match="from 0 to 1"):
        fg.compile(mlp(), loss="cross_entropy", label_smoothing=1.5, optimizer=fg.optim.SGD())


@pytest.mark.parametrize("optimizer, theirs", [
    (fg.optim.NAdam(lr=0.02), lambda p: torch.optim.NAdam(p, lr=0.02)),
    (fg.optim.Adamax(lr=0.02, weight_decay=0.01), lambda p: torch.optim.Adamax(p, lr=0.02, weight_decay=0.01)),
], ids=["NAdam", "Adamax"])
def test_the_other_keras_optimizers_train_as_torchs(optimizer, theirs):
    """Keras's Nadam and Adamax, as torch.optim's NAdam and Adamax: 6 steps through a trainer (NAdam's momentum
    product carried across them)."""
    x, y = data()
    trainer = fg.compile(mlp(), loss="cross_entropy", optimizer=optimizer)
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 24, 8)] * 2
    losses = [trainer.train_step(bx, by) for bx, by in batches]
    oracle, expected, _ = torch_steps(mlp(), batches, theirs)
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(expected), **TOLERANCE)
    assert_same_weights(trainer, oracle)


def test_terminate_on_nan_ends_the_run_after_the_batch(capsys):
    x, y = data()
    x[10, 0] = float("nan")  # in the second batch of 8
    trainer = fg.compile(mlp(), loss="cross_entropy", optimizer=fg.optim.SGD(lr=0.1))
    guard = fg.callbacks.TerminateOnNaN()
    history = trainer.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=False, callbacks=[guard])
    assert guard.stopped_at == (1, 2) and trainer.steps_taken == 2 and len(history["loss"]) == 1
    assert "the loss is nan after batch 2 of epoch 1" in capsys.readouterr().out
