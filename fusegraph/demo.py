"""`fusegraph demo`: train LeNet on real handwritten digits with fusegraph's own kernels, check a batch's
gradients against PyTorch, and draw what the network learned; `--task timeseries` trains the GRU
forecaster on a real series against a naive last-value forecast."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import callbacks, data, optim, plots
from .nn import zoo
from .runtime import compile


def digits(out: Path, epochs: int = 10, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
           augment: bool = False, verbose: bool = True, say=print) -> dict:
    """Train LeNet on scikit-learn's digits; returns the held-out metrics and the files written."""
    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = data.digits(seed=seed)
    cut = int(len(x_train) * 0.9)  # the last tenth of the training part decides early stopping
    x_fit, y_fit, x_val, y_val = x_train[:cut], y_train[:cut], x_train[cut:], y_train[cut:]
    model = zoo.lenet((1, 8, 8))
    model.init(seed)
    trainer = compile(model, loss="cross_entropy", optimizer=optim.Adam(lr=lr))
    say(f"LeNet-5 on {len(x_fit)} training / {len(x_val)} validation / {len(x_test)} held-out digits (8x8), "
        f"Adam lr={lr}, batch {batch_size}, on {trainer.device}")
    from .checks import gradient_error

    probe_x, probe_y = x_fit[:16].to(trainer.device), y_fit[:16].to(trainer.device)
    loss, grads = trainer.loss_and_grads(probe_x, probe_y)
    worst, theirs = gradient_error(model, [probe_x], probe_y, grads)
    say(f"one batch vs torch.autograd: loss {loss:.6f} vs {theirs:.6f}; worst gradient error {worst:.2e} "
        "(relative to each gradient's largest entry)")
    start = time.perf_counter()
    stopper = callbacks.EarlyStopping(patience=3, verbose=False)
    history = trainer.fit(x_fit, y_fit, epochs=epochs, batch_size=batch_size, seed=seed,
                          validation_data=(x_val, y_val), callbacks=[stopper], verbose=verbose,
                          augment=data.shift_augment(1) if augment else None)
    seconds = time.perf_counter() - start
    scores = trainer.evaluate(x_test, y_test)
    ran = len(history["loss"])
    stopped = (f" (early stopping: validation loss had not improved for 3 epochs, so it stopped after epoch "
               f"{ran} of {epochs})" if stopper.stopped_epoch else "")
    say(f"trained {ran} epochs in {seconds:.0f} s{stopped}; kept epoch {stopper.best_epoch}'s weights, the best "
        f"validation loss; held-out accuracy {scores['accuracy']:.4f}, loss {scores['loss']:.4f} "
        f"({trainer.last_launches} kernel launches per training step)")
    files = [plots.curves(history, out / "digits_curves.png", restored=stopper.best_epoch),
             plots.filters(model.params["conv1.weight"].numpy(), out / "digits_conv1_filters.png",
                           "LeNet conv1 filters after training")]
    features = model.features(["pool1", "pool2"])
    first = x_test[:1]
    maps = compile(features)(first.to(trainer.device))
    files.append(plots.feature_maps(first[0, 0].numpy(), [("block1", maps[0][0].cpu().numpy()),
                                                          ("block2", maps[1][0].cpu().numpy())],
                                    out / "digits_feature_maps.png",
                                    f"a held-out '{int(y_test[0])}' through LeNet's conv blocks"))
    return {"accuracy": scores["accuracy"], "loss": scores["loss"], "seconds": seconds, "history": history,
            "gradient_error": worst, "files": files}


def timeseries(out: Path, series: str = "sunspots", window: int = 24, epochs: int = 40, seed: int = 0,
               model_name: str = "cnn1d", verbose: bool = True, say=print) -> dict:
    """Train the 1-D CNN (or the GRU forecaster) on a real series; RMSE on the held-out end against the
    naive last-value forecast."""
    out.mkdir(parents=True, exist_ok=True)
    values = data.series(series)
    x_train, y_train, x_test, y_test, (mean, std) = data.windows(values, window)
    if model_name == "gru":
        model = zoo.gru_forecaster(window=window, units=16)
        features = lambda x: x  # noqa: E731  (batch, time, 1)
    else:
        model = zoo.cnn1d((1, window))
        features = lambda x: x.transpose(1, 2).contiguous()  # noqa: E731  (batch, 1 channel, time)
    model.init(seed)
    trainer = compile(model, loss="mse", optimizer=optim.Adam(lr=1e-2 if model_name == "gru" else 3e-3))
    say(f"{'GRU forecaster' if model_name == 'gru' else '1-D CNN'} on {series} ({len(values)} points): "
        f"{len(x_train)} training windows of {window}, {len(x_test)} held-out next values, on {trainer.device}")
    naive = x_test.numpy()[:, -1, 0] * std + mean
    x_train, x_test = features(x_train), features(x_test)
    start = time.perf_counter()
    history = trainer.fit(x_train, y_train, epochs=epochs, batch_size=32, seed=seed, verbose=verbose)
    seconds = time.perf_counter() - start
    predicted = trainer.predict(x_test).cpu().numpy()[:, 0] * std + mean
    truth = y_test.numpy()[:, 0] * std + mean
    rmse = float(np.sqrt(np.mean((predicted - truth) ** 2)))
    naive_rmse = float(np.sqrt(np.mean((naive - truth) ** 2)))
    say(f"trained {epochs} epochs in {seconds:.0f} s; held-out RMSE {rmse:.3f} vs naive last value {naive_rmse:.3f} "
        f"({'beats' if rmse < naive_rmse else 'does not beat'} the naive forecast)")
    files = [plots.curves(history, out / f"{series}_curves.png"),
             plots.forecast(truth, predicted, naive, out / f"{series}_forecast.png", model_name,
                            f"{series}: held-out next-value forecasts (RMSE {rmse:.2f} vs naive {naive_rmse:.2f})")]
    return {"rmse": rmse, "naive_rmse": naive_rmse, "seconds": seconds, "history": history, "files": files}


