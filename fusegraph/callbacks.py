"""Callbacks for `Trainer.fit(callbacks=[...])`, as Keras's: objects whose hooks fit calls at the start and
end of the run and of each epoch, and after each batch. A hook may set `trainer.stop_training = True` to end
the run after the epoch (set in on_batch_end: after that batch, the epoch's figures those of the batches
run; in a data-parallel run decide from `logs`, the same on every rank), or `trainer.lr` for the steps to
come (a callback whose `sets_lr` is true, as LearningRateScheduler's and ReduceLROnPlateau's, has fit record
each epoch's rate as history["lr"]). fit's own `lr_schedule`, `early_stopping` and `checkpoint` arguments
are these callbacks (LearningRateScheduler, EarlyStopping, ModelCheckpoint).

`on_train_end` runs however the run ends (finished, stopped, an exception or Ctrl-C), so a callback that
must leave the trainer in some state (EarlyStopping's best weights) does it there."""

from __future__ import annotations

import csv
import math
import numbers
from pathlib import Path

from .ir import InputError
from .optim import Schedule


class Callback:
    """Override the hooks you need; `logs` holds the epoch's history entries (loss, accuracy, val_...), or
    in on_batch_end the epoch's running figures so far (what the progress bar shows: a distributed run's
    over every rank's samples)."""

    sets_lr = False  # True: fit records each epoch's rate in history["lr"]

    def on_train_begin(self, trainer) -> None:
        pass

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        pass

    def on_batch_end(self, trainer, batch: int, logs: dict[str, float]) -> None:
        pass

    def on_epoch_end(self, trainer, epoch: int, logs: dict[str, float]) -> None:
        pass

    def on_train_end(self, trainer) -> None:
        pass


class LearningRateScheduler(Callback):
    """Sets `trainer.lr` to `schedule.rate(optimizer lr, count)` (fg.optim's StepLR, ExponentialLR,
    CosineAnnealingLR, LinearLR, or a function (base lr, count) -> rate): `every="epoch"` at each epoch's
    start, counting epochs; `every="batch"` before each step, counting the trainer's steps (as a torch
    scheduler stepped after every optimizer step: a warm-up over the first steps, a cosine over a run's)."""

    sets_lr = True

    def __init__(self, schedule, every: str = "epoch") -> None:
        if not isinstance(schedule, Schedule) and not callable(schedule):
            raise InputError(f"lr_schedule must be one of fg.optim's schedules (StepLR, CosineAnnealingLR, ...) "
                             f"or a function (base_lr, epoch) -> lr, got {type(schedule).__name__}")
        if every not in ("epoch", "batch"):
            raise InputError(f"LearningRateScheduler's every must be 'epoch' or 'batch', got {every!r}")
        self.schedule, self.every = schedule, every

    def _set(self, trainer, count: int) -> None:
        rate = self.schedule.rate if isinstance(self.schedule, Schedule) else self.schedule
        trainer.lr = rate(trainer.optimizer.lr, count)

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        self._set(trainer, epoch if self.every == "epoch" else trainer.steps_taken)

    def on_batch_end(self, trainer, batch: int, logs: dict[str, float]) -> None:
        if self.every == "batch":  # the next step's rate
            self._set(trainer, trainer.steps_taken)


class ReduceLROnPlateau(Callback):
    """Multiplies `trainer.lr` by `factor` (not below `min_lr`) once `monitor` (val_loss by default) has not
    improved for more than `patience` epochs, then waits `cooldown` epochs before counting again; improving
    means below the best by more than `threshold` (`threshold_mode` "rel": below best * (1 - threshold),
    "abs": below best - threshold; `mode="max"` for a figure that should rise, such as val_accuracy): torch's
    ReduceLROnPlateau stepped with the monitored figure after every epoch. Its count lives in the callback, not
    in the trainer's saves: a resumed run (`initial_epoch`) counts afresh from the rate saved."""

    sets_lr = True

    def __init__(self, monitor: str = "val_loss", mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0, min_lr: float = 0.0,
                 verbose: bool = False) -> None:
        if mode not in ("min", "max") or threshold_mode not in ("rel", "abs"):
            raise InputError(f"ReduceLROnPlateau: mode must be 'min' or 'max' and threshold_mode 'rel' or 'abs', got "
                             f"{mode!r} and {threshold_mode!r}")
        if not _is_real(factor) or not 0 < factor < 1:
            raise InputError(f"ReduceLROnPlateau: factor must be a number in (0, 1), got {factor!r}")
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise InputError(f"ReduceLROnPlateau: {name} must be an integer >= 0, got {value!r}")
        for name, value in (("threshold", threshold), ("min_lr", min_lr)):
            if not _is_real(value) or value < 0:
                raise InputError(f"ReduceLROnPlateau: {name} must be a number >= 0, got {value!r}")
        self.monitor, self.mode, self.factor, self.patience = monitor, mode, float(factor), int(patience)
        self.threshold, self.threshold_mode, self.cooldown, self.min_lr = float(threshold), threshold_mode, int(cooldown), \
            float(min_lr)
        self.verbose = verbose
        self.on_train_begin(None)

    def on_train_begin(self, trainer) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self._bad_epochs, self._cooling = 0, 0

    def _improves(self, value: float) -> bool:  # torch's rules, whatever the sign of the best
        sign = 1 if self.mode == "max" else -1
        if self.threshold_mode == "rel":
            bound = self.best * (1 + sign * self.threshold)
        else:
            bound = self.best + sign * self.threshold
        return value > bound if self.mode == "max" else value < bound

    def on_epoch_end(self, trainer, epoch: int, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            raise InputError(f"ReduceLROnPlateau watches {self.monitor!r}, which the history lacks (it has "
                             f"{sorted(logs)}): pass validation_data=(x_val, y_val) for val_ entries")
        value = logs[self.monitor]
        if self._improves(value):
            self.best, self._bad_epochs = value, 0
        else:
            self._bad_epochs += 1
        if self._cooling > 0:
            self._cooling, self._bad_epochs = self._cooling - 1, 0
        if self._bad_epochs > self.patience:
            lowered = max(trainer.lr * self.factor, self.min_lr)
            if trainer.lr - lowered > 1e-8:  # torch's eps: a change smaller than that is none
                if self.verbose:
                    print(f"ReduceLROnPlateau: {self.monitor} had not improved for {self._bad_epochs} epochs: "
                          f"learning rate {trainer.lr:.4g} -> {lowered:.4g} after epoch {epoch + 1}")
                trainer.lr = lowered
            self._cooling, self._bad_epochs = self.cooldown, 0


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


class EarlyStopping(Callback):
    """Stops when `monitor` (a history entry, val_loss by default) has not improved for `patience` epochs
    and, with `restore_best` (the default), gives the trainer back the best epoch's weights and running
    statistics at the end, whatever ends the run. Says so when `verbose`; `stopped_epoch` and
    `best_epoch` (1-based, None until known) tell it after."""

    def __init__(self, patience: int, monitor: str = "val_loss", restore_best: bool = True,
                 verbose: bool = True) -> None:
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral) or patience < 1:
            raise InputError(f"early_stopping (the patience, in epochs) must be a positive integer, got {patience!r}")
        self.patience, self.monitor, self.restore_best, self.verbose = int(patience), monitor, restore_best, verbose
        self.best = math.inf
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self._waited, self._snapshot = 0, None

    def on_train_begin(self, trainer) -> None:
        self.best, self.best_epoch, self.stopped_epoch, self._waited, self._snapshot = math.inf, None, None, 0, None

    def on_epoch_end(self, trainer, epoch: int, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            raise InputError(f"early stopping watches {self.monitor!r}, which the history lacks (it has "
                             f"{sorted(logs)}): pass validation_data=(x_val, y_val) for val_ entries")
        if logs[self.monitor] < self.best:
            self.best, self.best_epoch, self._waited = logs[self.monitor], epoch + 1, 0
            if self.restore_best:
                self._snapshot = trainer.snapshot()
        else:
            self._waited += 1
            if self._waited >= self.patience:
                trainer.stop_training, self.stopped_epoch = True, epoch + 1

    def on_train_end(self, trainer) -> None:
        if self._snapshot is not None:
            trainer.restore(self._snapshot)
        if self.verbose and self.stopped_epoch is not None:
            restored = (f"; restored epoch {self.best_epoch}'s weights ({self.monitor} {self.best:.4f})"
                        if self._snapshot is not None else "")
            print(f"early stopping: {self.monitor} had not improved for {self.patience} epochs, so the run stopped "
                  f"after epoch {self.stopped_epoch}{restored}")


class TerminateOnNaN(Callback):
    """Ends the run after the first batch whose loss is NaN or infinite (Keras's TerminateOnNaN), saying so;
    the weights are then those that step left (with early stopping too, its best epoch's at the end)."""

    def __init__(self, verbose: bool = True) -> None:
        self.verbose, self.stopped_at = verbose, None

    def on_batch_end(self, trainer, batch: int, logs: dict[str, float]) -> None:
        if not math.isfinite(logs["loss"]):
            trainer.stop_training, self.stopped_at = True, (trainer.epochs + 1, batch + 1)
            if self.verbose:
                print(f"TerminateOnNaN: the loss is {logs['loss']} after batch {batch + 1} of epoch "
                      f"{trainer.epochs + 1}: the run stops")


class ModelCheckpoint(Callback):
    """Saves the trainer (`trainer.save`) to `path` after every epoch or, with `best_only`, after each epoch
    that improves `monitor` (val_loss by default)."""

    def __init__(self, path, best_only: bool = False, monitor: str = "val_loss") -> None:
        self.path, self.best_only, self.monitor = Path(path), best_only, monitor
        self.best = math.inf

    def on_train_begin(self, trainer) -> None:
        self.best = math.inf

    def on_epoch_end(self, trainer, epoch: int, logs: dict[str, float]) -> None:
        if not self.best_only:
            trainer.save(self.path)
        elif logs.get(self.monitor, math.inf) < self.best:
            self.best = logs[self.monitor]
            trainer.save(self.path)


class CSVLogger(Callback):
    """Writes the history to a CSV file as the run goes (Keras's CSVLogger): a header of `epoch` and the
    history's entries, then a row per epoch as it ends (1-based epochs, numbers as Python writes them, so
    they read back exactly), flushed each time; `append=True` continues the file of an earlier run (a
    resumed one, `initial_epoch`). In a data-parallel run rank 0 writes it."""

    def __init__(self, path, append: bool = False, separator: str = ",") -> None:
        self.path, self.append, self.separator = Path(path), append, separator
        self._file, self._columns = None, None

    def on_train_begin(self, trainer) -> None:
        parallel = getattr(trainer, "parallel", None)
        if parallel is not None and parallel.rank != 0:
            return
        continuing = self.append and self.path.exists() and self.path.stat().st_size > 0
        self._columns = None
        if continuing:
            with open(self.path, newline="") as earlier:
                self._columns = next(csv.reader(earlier, delimiter=self.separator), None)
        self._file = open(self.path, "a" if continuing else "w", newline="")  # noqa: SIM115 (closed at the run's end)

    def on_epoch_end(self, trainer, epoch: int, logs: dict[str, float]) -> None:
        if self._file is None:
            return
        writer = csv.writer(self._file, delimiter=self.separator)
        if self._columns is None:
            self._columns = ["epoch", *logs]
            writer.writerow(self._columns)
        writer.writerow([epoch + 1, *(repr(float(logs[key])) if key in logs else "" for key in self._columns[1:])])
        self._file.flush()

    def on_train_end(self, trainer) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
