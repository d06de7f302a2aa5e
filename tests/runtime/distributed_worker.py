"""One rank of the data-parallel tests (tests/runtime/test_distributed.py), started as torchrun starts a rank:
RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT in the environment. Runs every scenario in order in one gloo
process group and writes what it saw to OUT/rank<r>.pt:

    python -m tests.runtime.distributed_worker OUT FROM_ONE_PROCESS"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

import fusegraph as fg
from fusegraph.runtime import distributed

PER_RANK = 4  # samples per rank a step: the single-process run takes PER_RANK * world
STEPS = 3
TIMEOUT_S = 10


def mlp(width: int = 16) -> fg.Model:
    model = fg.Sequential([fg.Input((6,)), fg.Dense(width, activation="relu"), fg.Dropout(0.3), fg.Dense(3)])
    model.init(0)
    return model


def samples(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def cnn_with_batch_norm() -> fg.Model:
    model = fg.Sequential([fg.Input((2, 5, 5)), fg.Conv2D(3, 3, padding="same", name="conv"), fg.BatchNorm2D(name="bn"),
                           fg.Activation("relu"), fg.Flatten(), fg.Dense(3, name="out")])
    model.init(0)
    return model


def images(n: int, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 5, 5, generator=generator), torch.randint(0, 3, (n,), generator=generator)


OPTIMIZERS = {"sgd_momentum": lambda: fg.optim.SGD(lr=0.1, momentum=0.9), "adam": lambda: fg.optim.Adam(lr=0.01)}


class BatchLogs(fg.callbacks.Callback):
    """The running figures after each batch (what fit's progress bar shows)."""

    def __init__(self) -> None:
        self.logs = []

    def on_batch_end(self, trainer, batch, logs) -> None:
        self.logs.append(logs)


def steps(trainer, rank: int, world: int) -> list[float]:
    """STEPS train_step calls, this rank on its PER_RANK samples of each batch of PER_RANK * world."""
    x, y = samples(PER_RANK * world * STEPS)
    losses = []
    for step in range(STEPS):
        batch = slice((step * world + rank) * PER_RANK, (step * world + rank + 1) * PER_RANK)
        losses.append(trainer.train_step(x[batch], y[batch]))
    return losses


def main() -> None:
    out, from_one = Path(sys.argv[1]), Path(sys.argv[2])
    dist.init_process_group("gloo", timeout=timedelta(seconds=TIMEOUT_S))
    rank, world = dist.get_rank(), dist.get_world_size()
    seen: dict = {}
    # k steps of batch PER_RANK on each rank, with and without a sharded optimizer; buckets of 64 bytes, so the
    # all-reduces of the later layers' gradients go out while the backward still runs
    distributed.BUCKET_BYTES = 64
    for name, make in OPTIMIZERS.items():
        for shard in (False, True):
            trainer = fg.compile(mlp(), loss="cross_entropy", optimizer=make(), distributed=True, shard_optimizer=shard)
            losses = steps(trainer, rank, world)
            seen[f"steps/{name}/{shard}"] = (losses, trainer.flat.clone())
            seen[f"overlap/{name}/{shard}"] = (trainer.parallel.started_during_backward, len(trainer.parallel.buckets),
                                                trainer.explain(4))
            if shard:
                seen[f"memory/{name}"] = trainer.memory_report(4)
    # fit over 11 samples in batches of 2 per rank (4, 4, then 3: ranks 2 and 1), saving after the first epoch
    x, y = samples(11, seed=1)
    trainer = fg.compile(mlp(), loss="cross_entropy", optimizer=fg.optim.Adam(lr=0.01), distributed=True,
                         shard_optimizer=True)
    running = BatchLogs()
    trainer.fit(x, y, epochs=1, batch_size=2, verbose=False, callbacks=[running])
    seen["running"] = running.logs
    trainer.save(out / "saved_by_two.fg")
    history = trainer.fit(x, y, epochs=2, batch_size=2, verbose=False, initial_epoch=1)
    seen["fit"] = (history, trainer.flat.clone(), trainer.evaluate(x, y), trainer.predict(x))
    # a single process's save continued by the ranks
    resumed = fg.load(from_one, distributed=True)
    history = resumed.fit(x, y, epochs=2, batch_size=2, verbose=False, initial_epoch=1)
    seen["resumed"] = (history, resumed.flat.clone())
    # SyncBatchNorm: 9 images in batches of 2 per rank (4, 4, then 1: rank 1 idle but in every combination)
    x, y = images(9)
    trainer = fg.compile(cnn_with_batch_norm(), loss="cross_entropy", optimizer=fg.optim.SGD(lr=0.1, momentum=0.9),
                         distributed=True, sync_batch_norm=True)
    history = trainer.fit(x, y, epochs=2, batch_size=2, verbose=False)
    seen["sync_batch_norm"] = (history, trainer.host_weights()[0])
    # ranks that compiled different models
    try:
        fg.compile(mlp(16 if rank == 0 else 17), loss="mse", optimizer=fg.optim.SGD(), distributed=True)
    except fg.DistributedError as error:
        seen["mismatch"] = str(error)
    # a rank that dies: the others get a DistributedError within the timeout
    trainer = fg.compile(mlp(), loss="cross_entropy", optimizer=fg.optim.SGD(), distributed=True)
    x, y = samples(PER_RANK)
    trainer.train_step(x, y)
    if rank == world - 1:
        torch.save(seen, out / f"rank{rank}.pt")
        os._exit(3)
    start = time.monotonic()
    try:
        trainer.train_step(x, y)
    except fg.DistributedError as error:
        seen["killed"] = (str(error), time.monotonic() - start)
    torch.save(seen, out / f"rank{rank}.pt")
    os._exit(0)  # NOTE: the process group cannot be torn down cleanly with a rank gone


if __name__ == "__main__":
    main()
