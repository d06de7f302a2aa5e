"""Whole-dataset loops of a Trainer: fit (epochs of shuffled batches, validation, callbacks, a distributed
run's shards), evaluate and predict in batches. A mixin: the Trainer gives it `_step`, the compiled
evaluation and inference programs and its parallel state."""

from __future__ import annotations

import numbers
from math import prod
from pathlib import Path

import torch

from ..ir import InputError, check_feeds
from .compiled import exclusive
from .samples import as_inputs, as_samples, pair, positive_int


class Loops:
    """fit / evaluate / predict over datasets, for Trainer (which defines the step they take)."""

    @exclusive
    def fit(self, x, y, *, epochs: int = 1, batch_size: int = 32, shuffle: bool = True, seed: int = 0,
            validation_data: tuple | None = None, validation_split: float | None = None,
            early_stopping: int | None = None, verbose: bool = True, augment=None, checkpoint=None,
            initial_epoch: int = 0, lr_schedule=None, callbacks=()) -> dict[str, list[float]]:
        """Train for `epochs` over (x, y) in batches; with `validation_data` (or `validation_split=f`, Keras's:
        the last fraction f of the samples, as given, held out of training), evaluate after each epoch and,
        with `early_stopping=patience`, stop when validation loss has not improved for that many epochs
        and restore the best weights (saying so). `augment(x_batch, generator)` may transform each training
        batch. `lr_schedule`: one of fg.optim's schedules (StepLR, ExponentialLR, CosineAnnealingLR,
        LinearLR for warm-up), setting `lr` at each epoch's start. `callbacks`: fg.callbacks objects (or your
        own Callback subclasses). Returns the history: loss (and accuracy) per epoch, with val_ entries when
        validating, and lr with a schedule; it is also `self.history`, kept as far as it got if fit stops on an exception or
        Ctrl-C. Whatever stops it, the trainer, the Model and `to_torch()` then hold the same weights: the
        last completed step's, or with early stopping the best epoch's so far.

        `checkpoint=path`: the trainer is saved there (`save`) after each epoch and, with early stopping,
        also at each new best epoch to `<path stem>.best<suffix>`. `initial_epoch=k` continues a run that
        stopped after k epochs (a trainer from `fg.load`: `initial_epoch=trainer.epochs`): epochs are
        numbered on from k, the history is extended, and the shuffles are those the uninterrupted run
        draws, so it takes the same steps (augmentation draws its own; early stopping's patience starts
        afresh)."""
        from .. import callbacks as fg_callbacks

        xs, y = as_samples(x, y)
        if validation_split is not None:
            xs, y, validation_data = _split_off(xs, y, validation_split, validation_data)
        if augment is not None and len(xs) != 1:
            raise InputError("augment applies to single-input models")
        positive_int("epochs", epochs)
        positive_int("batch_size", batch_size)
        positive_int("early_stopping (the patience, in epochs)", early_stopping, allow_none=True)
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, numbers.Integral) or \
                not 0 <= initial_epoch < epochs:
            raise InputError(f"initial_epoch must be an integer from 0 to epochs - 1 ({epochs - 1}), got {initial_epoch!r}")
        if validation_data is not None:
            as_samples(*pair(validation_data, "validation_data"))
        elif early_stopping is not None:
            raise InputError("early_stopping watches the validation loss: pass validation_data=(x_val, y_val) (or "
                             "validation_split=0.1) too")
        if not all(isinstance(c, fg_callbacks.Callback) for c in callbacks):
            raise InputError("callbacks must be fg.callbacks.Callback objects (EarlyStopping, ModelCheckpoint, "
                             "LearningRateScheduler, ReduceLROnPlateau, or a subclass of your own)")
        lead = self.parallel is None or self.parallel.rank == 0
        hooks = list(callbacks)
        if lr_schedule is not None:
            hooks.append(fg_callbacks.LearningRateScheduler(lr_schedule))
        if early_stopping is not None:
            hooks.append(fg_callbacks.EarlyStopping(early_stopping, verbose=verbose and lead))
        if checkpoint is not None:
            path = Path(checkpoint)
            if early_stopping is not None:
                hooks.append(fg_callbacks.ModelCheckpoint(path.with_name(f"{path.stem}.best{path.suffix}"), best_only=True))
            hooks.append(fg_callbacks.ModelCheckpoint(path))
        history: dict[str, list[float]] = {k: list(v) for k, v in self.history.items()} if initial_epoch else {"loss": []}
        self.history = history
        self.stop_training = False
        for hook in hooks:
            hook.on_train_begin(self)
        try:
            self._epochs(xs, y, history, hooks, epochs=epochs, batch_size=batch_size, shuffle=shuffle, seed=seed,
                         validation_data=validation_data, verbose=verbose, augment=augment, initial_epoch=initial_epoch)
        finally:
            for hook in hooks:
                hook.on_train_end(self)
        return history

    def _epochs(self, xs, y, history, hooks, *, epochs, batch_size, shuffle, seed, validation_data, verbose, augment,
                initial_epoch) -> None:
        from tqdm.auto import tqdm

        generator = torch.Generator().manual_seed(seed)
        parallel = self.parallel
        # distributed: every rank draws the same order and takes its shard of each batch of batch_size per rank
        world, lead = (1, True) if parallel is None else (parallel.world, parallel.rank == 0)
        for epoch in range(epochs):
            order = torch.randperm(len(y), generator=generator) if shuffle else torch.arange(len(y))
            if epoch < initial_epoch:
                continue  # NOTE: its shuffle drawn all the same, so the epochs after it shuffle as they would have
            for hook in hooks:
                hook.on_epoch_begin(self, epoch)
            first_rate = self.lr  # a schedule's rate for the epoch (every="batch": its first step's)
            total, correct, seen = 0.0, 0, 0
            bar = tqdm(range(0, len(y), batch_size * world), desc=f"epoch {epoch + 1}/{epochs}",
                       disable=not (verbose and lead), leave=True, dynamic_ncols=True)
            for batch, start in enumerate(bar):
                index = order[start:start + batch_size * world]
                first, count = (0, len(index)) if parallel is None else parallel.shard(len(index))
                mine = index[first:first + count]
                if count == 0:  # a last batch smaller than the ranks: this one has none of it
                    outputs = self._step(None, None)
                else:
                    xb, yb = [t[mine] for t in xs], y[mine]
                    if augment is not None:
                        xb = [augment(xb[0], generator)]
                    outputs = self._step([t.to(self.device) for t in xb], yb.to(self.device))
                    if parallel is None:
                        correct += self._correct(outputs[self._logits_at], yb.to(self.device))
                if parallel is not None:
                    correct += self.batch_correct  # the whole batch's, every rank's summed
                total += float(outputs[0]) * len(index)
                seen += len(index)
                running = self._metrics(total / seen, correct, seen)
                bar.set_postfix(running)
                for hook in hooks:
                    hook.on_batch_end(self, batch, running)
                if self.stop_training:  # set after a batch: the epoch ends here (validated, recorded as far as it got)
                    break
            for key, value in self._metrics(total / seen, correct, seen).items():
                history.setdefault(key, []).append(value)
            self.epochs += 1
            if validation_data is not None:
                for key, value in self.evaluate(*validation_data).items():
                    history.setdefault(f"val_{key}", []).append(value)
            if any(hook.sets_lr for hook in hooks):
                history.setdefault("lr", []).append(first_rate)
            if verbose and lead and validation_data is not None:
                print("  " + ", ".join(f"{k} {v[-1]:{'.4g' if k == 'lr' else '.4f'}}" for k, v in history.items()))
            logs = {key: values[-1] for key, values in history.items()}
            for hook in hooks:
                hook.on_epoch_end(self, epoch, logs)
            if self.stop_training:
                break

    def _correct(self, logits: torch.Tensor, y: torch.Tensor) -> int:
        if self.options.loss == "cross_entropy":
            return int((logits.argmax(dim=1) == y).sum())
        if self.options.loss == "binary_cross_entropy":
            return int(((logits > 0).to(y.dtype) == y).sum())
        return 0

    def _metrics(self, loss: float, correct: int, seen: int) -> dict[str, float]:
        if self.options.loss == "mse":
            return {"loss": loss}
        per_sample = 1 if self.options.loss == "cross_entropy" else prod(self.source_graph.outputs[0].type.feature_shape)
        return {"loss": loss, "accuracy": correct / (seen * per_sample)}

    @exclusive
    def evaluate(self, x, y, batch_size: int = 256) -> dict[str, float]:
        """Mean loss (and accuracy for classification) over (x, y), dropout off."""
        xs, y = as_samples(x, y)
        positive_int("batch_size", batch_size)
        samples = len(y)
        if self.parallel is not None:  # each rank its share of the samples, the sums added up
            first, count = self.parallel.shard(samples)
            xs, y = [t[first:first + count] for t in xs], y[first:first + count]
        total, correct = 0.0, 0
        for start in range(0, len(y), batch_size):
            xb = [t[start:start + batch_size].to(self.device) for t in xs]
            yb = y[start:start + batch_size].to(self.device)
            feeds = self._check_device_and_ids(check_feeds(self.eval_source, [*xb, yb]), self.eval_graph)
            self.params_for(self.eval_graph)  # folded batch norms follow the weights (see __call__)
            with torch.no_grad():
                loss, logits = self._evaluation(feeds)
            total += float(loss) * len(yb)
            correct += self._correct(logits, yb)
        if self.parallel is not None:
            total, correct = self.parallel.sum([total, correct], "summing the evaluation")
        return self._metrics(total / samples, int(correct), samples)

    @exclusive
    def predict(self, x, batch_size: int = 256) -> torch.Tensor:
        """The model's outputs for `x`, in batches (inference kernels, dropout off)."""
        xs = as_inputs(x)
        positive_int("batch_size", batch_size)
        if self.parallel is None:
            return self._predicted(xs, batch_size)
        first, count = self.parallel.shard(len(xs[0]))  # each rank its share, then every share to every rank
        mine = self._predicted([t[first:first + count] for t in xs], batch_size) if count else None
        if isinstance(mine, list):
            mine = [part.cpu() for part in mine]
        elif mine is not None:
            mine = mine.cpu()
        shares = [share for share in self.parallel.gather_objects(mine, "gathering the predictions") if share is not None]
        if isinstance(shares[0], list):
            return [torch.cat(parts).to(self.device) for parts in zip(*shares)]
        return torch.cat(shares).to(self.device)

    def _predicted(self, xs: list[torch.Tensor], batch_size: int):
        batches = [self([t[start:start + batch_size].to(self.device) for t in xs])
                   for start in range(0, len(xs[0]), batch_size)]
        if isinstance(batches[0], list):  # several outputs
            return [torch.cat(parts) for parts in zip(*batches)]
        return torch.cat(batches)


def _split_off(xs: list[torch.Tensor], y: torch.Tensor, fraction, validation_data) -> tuple:
    """(training inputs, training labels, validation pair): the last `fraction` of the samples held out."""
    if validation_data is not None:
        raise InputError("give validation_data or validation_split, not both")
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction < 1:
        raise InputError(f"validation_split must be a fraction between 0 and 1, got {fraction!r}")
    cut = int(len(y) * (1 - fraction))  # Keras's cut: training keeps the whole samples of 1 - fraction
    if cut == 0 or cut == len(y):
        raise InputError(f"validation_split={fraction} of {len(y)} samples leaves "
                         f"{'no training' if cut == 0 else 'no validation'} sample: use a larger set or another fraction")
    held_out = ([t[cut:] for t in xs], y[cut:])
    return [t[:cut] for t in xs], y[:cut], (held_out[0] if len(xs) > 1 else held_out[0][0], held_out[1])
