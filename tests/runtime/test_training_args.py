"""Bad training arguments get one clear fusegraph error where they are given, never a TypeError,
ZeroDivisionError or an interpreter error at the first step."""

import numpy as np
import pytest
import torch

import fusegraph as fg


@pytest.mark.parametrize("make,match", [
    (lambda: fg.optim.Adam(lr=float("nan")), "lr must be a finite number"),
    (lambda: fg.optim.RMSprop(lr=float("inf")), "lr must be a finite number"),
    (lambda: fg.optim.SGD(lr="0.1"), "lr must be a number, got '0.1'"),
    (lambda: fg.optim.Adagrad(lr=None), "lr must be a number, got None"),
    (lambda: fg.optim.SGD(lr=0.1, momentum=-0.5), "momentum must be a finite number >= 0"),
    (lambda: fg.optim.SGD(lr=0.1, nesterov="yes"), "nesterov must be True or False"),
    (lambda: fg.optim.Adam(amsgrad=1), "amsgrad must be True or False"),
    (lambda: fg.optim.Adam(betas=0.9), "betas must be a pair of numbers"),
    (lambda: fg.optim.Adam(betas=(0.9, float("nan"))), "betas must be a finite number"),
    (lambda: fg.optim.RMSprop(alpha=1.5), r"alpha must lie in \[0, 1\]"),
    (lambda: fg.optim.Adadelta(rho=2.0), r"rho must lie in \[0, 1\]"),
])
def test_bad_optimizer_hyperparameters_are_refused_where_given(make, match):
    with pytest.raises(fg.GraphError, match=match):
        make()


def test_numpy_numbers_are_fine_hyperparameters():
    assert fg.optim.Adam(lr=np.float32(0.01), eps=np.float64(1e-7)).lr == pytest.approx(0.01)


@pytest.fixture(scope="module")
def trainer():
    model = fg.Sequential([fg.Input((4,)), fg.Dense(2)])
    return fg.compile(model, loss="cross_entropy", optimizer=fg.optim.SGD(lr=0.1))


X, Y = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1] * 4)


@pytest.mark.parametrize("call,match", [
    (lambda t: t.fit(X[:0], Y[:0], verbose=False), "x has no samples"),
    (lambda t: t.evaluate(X[:0], Y[:0]), "x has no samples"),
    (lambda t: t.predict(X[:0]), "x has no samples"),
    (lambda t: t.predict([]), "x is an empty list"),
    (lambda t: t.fit(X, Y, batch_size=2.5, verbose=False), "batch_size must be a positive integer, got 2.5"),
    (lambda t: t.fit(X, Y, batch_size=0, verbose=False), "batch_size must be a positive integer"),
    (lambda t: t.fit(X, Y, epochs="3", verbose=False), "epochs must be a positive integer"),
    (lambda t: t.evaluate(X, Y, batch_size=None), "batch_size must be a positive integer"),
    (lambda t: t.predict(X, batch_size=-1), "batch_size must be a positive integer"),
    (lambda t: t.fit(X, Y, validation_data=(X, Y, Y), verbose=False), r"validation_data must be a pair \(x, y\), got 3"),
    (lambda t: t.fit(X, Y, validation_data=X, verbose=False), "validation_data must be a pair"),
    (lambda t: t.fit(X, Y, validation_data=(X, Y[:3]), verbose=False), "x has 8 samples but y has 3"),
    (lambda t: t.fit(X, Y, early_stopping=2, verbose=False), "early_stopping watches the validation loss"),
    (lambda t: t.fit(X, Y, validation_data=(X, Y), early_stopping=0, verbose=False), "early_stopping"),
])
def test_bad_fit_evaluate_predict_arguments_are_one_clear_error(trainer, call, match):
    steps = trainer.steps_taken
    with pytest.raises(fg.InputError, match=match):
        call(trainer)
    assert trainer.steps_taken == steps  # refused before any step


def test_numpy_integer_sizes_are_accepted(trainer):
    history = trainer.fit(X, Y, epochs=np.int64(1), batch_size=np.int32(4), verbose=False)
    assert len(history["loss"]) == 1
