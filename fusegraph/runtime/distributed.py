"""Data-parallel training on torch.distributed (`fg.compile(..., distributed=True)`), launched by torchrun.

Every rank holds the whole model and runs its shard of each batch. At the start the ranks check that they
compiled the same model with the same options and take rank 0's weights and running statistics. In
each step's backward the flat gradient buffer is averaged across ranks (each rank's mean-loss gradient
weighted by its share of the batch, so the result is the whole batch's mean-loss gradient whatever the
split), in buckets of whole parameters: launched kernel by kernel, a bucket's all-reduce starts as soon as
the backward kernel writing its last gradient has run, while the backward goes on (under a CUDA graph, which
runs no Python, all of them after it); the optimizer kernel then runs on every rank alike. With
`shard_optimizer=True` (ZeRO stage 1) each rank keeps the optimizer state for its slice of the flat
buffer only, updates that slice, and the slices are then broadcast from their owners. Batch-norm
running statistics (and their counts) are rank 0's after every step, as torch's DDP broadcasts its buffers;
with `sync_batch_norm=True` each batch norm combines its ranks' statistics (and, backward, its gradient sums)
between its two kernels, as torch's SyncBatchNorm.

The collectives run outside any CUDA graph. A rank that dies, raises or stops
answering makes the others' next collective fail, at the latest after the process group's timeout
(`init_process_group(timeout=...)`): they raise DistributedError, never hang past it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch

from ..ir import DistributedError

BUCKET_BYTES = 25 * 1024 * 1024  # torch DDP's default bucket size


def _dist():
    import torch.distributed as dist

    return dist


def process_group() -> tuple[int, int]:
    """(rank, world size) of the initialised default process group; DistributedError when there is none."""
    dist = _dist()
    if not (dist.is_available() and dist.is_initialized()):
        raise DistributedError(
            "distributed=True runs inside a torch.distributed process group, and none is initialised: launch "
            "with torchrun (torchrun --nproc-per-node=N your_script.py) and call "
            "torch.distributed.init_process_group('gloo') (CPUs) or ('nccl') (GPUs) before fg.compile")
    return dist.get_rank(), dist.get_world_size()


class DataParallel:
    """One trainer's place in the process group: its shard of each batch, and the collectives of a step."""

    def __init__(self, trainer) -> None:
        self.rank, self.world = process_group()
        dist = _dist()
        backend = str(dist.get_backend())
        if backend == "nccl" and trainer.device != "cuda":
            raise DistributedError("the process group uses NCCL, which moves CUDA tensors only, but this trainer runs "
                                   "on the CPU: init_process_group('gloo') for CPU training")
        self.trainer = trainer
        self.sharded = trainer.options.shard_optimizer
        total = trainer.flat.numel()
        self.bounds = [(r * total // self.world, (r + 1) * total // self.world) for r in range(self.world)]
        self.lo, self.hi = self.bounds[self.rank]
        self.steps = 0
        self.buckets: list[tuple[slice, frozenset]] = [(slice(0, total), frozenset())]
        self.producers: dict[str, list[str]] = {}
        self.started_during_backward = 0  # buckets whose all-reduce began before their step's backward ended

    # -- collectives, each failing as one DistributedError ------------------------------------------
    def collective(self, what: str, run: Callable[[], Any]) -> Any:
        try:
            return run()
        except DistributedError:
            raise
        except (RuntimeError, ValueError, ConnectionError, OSError) as error:  # gloo / NCCL / c10d errors alike
            text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DistributedError(f"rank {self.rank} of {self.world}: {what} failed: another rank stopped (died, "
                                   f"raised, or missed the process group's timeout): {text}") from None

    def verify_same(self, fingerprint: dict) -> None:
        """Every rank compiled the same model with the same options: else which ranks and what differs."""
        dist = _dist()
        gathered: list[Any] = [None] * self.world
        self.collective("comparing the ranks' models at the start",
                        lambda: dist.all_gather_object(gathered, json.dumps(fingerprint, sort_keys=True)))
        ours = json.loads(gathered[0])
        for rank, text in enumerate(gathered):
            theirs = json.loads(text)
            if theirs != ours:
                keys = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
                raise DistributedError(f"rank {rank} compiled a different {' and '.join(keys)} than rank 0: every rank "
                                       "must build the same model and call fg.compile with the same options")

    def broadcast_from_first(self, tensors: list[torch.Tensor], what: str) -> None:
        """Rank 0's values of `tensors` on every rank (views of any layout: sent through contiguous copies)."""
        dist = _dist()
        for tensor in tensors:
            if tensor.is_contiguous():
                self.collective(what, lambda t=tensor: dist.broadcast(t, 0))
            else:
                sent = tensor.contiguous()
                self.collective(what, lambda t=sent: dist.broadcast(t, 0))
                tensor.copy_(sent)

    def plan_buckets(self, ranges: dict[str, slice], producers: dict[str, list[str]]) -> None:
        """Buckets of whole parameters, the last in the flat buffer first (as a backward produces them), of
        BUCKET_BYTES or more; `producers`: the backward node -> the parameters whose gradients it writes."""
        size = self.trainer.flat_grads.element_size()
        buckets, names, held = [], [], 0
        for name in sorted(ranges, key=lambda n: ranges[n].start, reverse=True):
            names.append(name)
            held += (ranges[name].stop - ranges[name].start) * size
            if held >= BUCKET_BYTES:
                buckets.append(names)
                names, held = [], 0
        if names:
            buckets.append(names)
        self.buckets = [(slice(min(ranges[n].start for n in b), max(ranges[n].stop for n in b)), frozenset(b))
                        for b in buckets]
        self.producers = producers

    def begin_step(self, count: int) -> int:
        """Before a step's forward, one exchange of the ranks' batch sizes: the whole batch's (each rank's
        gradient is weighted by its share of it as its buckets go out); returns where this rank's samples
        start in it (dropout keys its masks by that)."""
        self.count = count
        sizes = self.gather_objects(count, f"sharing the batch sizes of step {self.steps + 1}")
        self.samples = sum(sizes)
        if self.samples == 0:
            raise DistributedError("a step in which no rank had a sample")
        self.written, self.works = set(), []
        self.in_step = True
        return sum(sizes[:self.rank])

    def gradients_written(self, node: str) -> None:
        """After backward node `node`'s kernels: every bucket whose gradients are now all written starts its
        all-reduce, while the backward goes on."""
        if not getattr(self, "in_step", False):
            return  # gradients outside a training step (loss_and_grads) stay this rank's
        self.written.update(self.producers.get(node, ()))
        # NOTE: in bucket order on every rank, whatever order they complete in: collectives pair up by order
        while len(self.works) < len(self.buckets) and self.buckets[len(self.works)][1] <= self.written:
            self._start_next()
            self.started_during_backward += 1

    def _start_next(self) -> None:
        dist = _dist()
        bucket = self.trainer.flat_grads[self.buckets[len(self.works)][0]]
        bucket.mul_(self.count / self.samples)
        self.works.append(self.collective(f"averaging the gradients of step {self.steps + 1}",
                                          lambda: dist.all_reduce(bucket, async_op=True)))

    def finish_step(self, loss: torch.Tensor | None, correct: int = 0) -> tuple[float, int]:
        """After the backward: the buckets not yet out go (all of them under a CUDA graph, which runs no hook),
        every all-reduce is waited for; returns the whole batch's mean loss and how many of its samples were
        classified right (each rank's `correct` summed in the same collective as the losses)."""
        self.in_step = False
        while len(self.works) < len(self.buckets):
            self._start_next()
        for work in self.works:
            self.collective(f"averaging the gradients of step {self.steps + 1}", work.wait)
        total, right = self.sum([float(loss) * self.count if self.count else 0.0, correct],
                                f"summing the losses of step {self.steps + 1}")
        self.steps += 1
        return total / self.samples, int(right)

    def share_slices(self, buffers: list[torch.Tensor]) -> None:
        """After a sharded update: each rank's slice of every flat `buffer` from its owner to all."""
        dist = _dist()
        for buffer in buffers:
            for owner, (lo, hi) in enumerate(self.bounds):
                if hi > lo:
                    self.collective(f"sharing the weights updated at step {self.steps}",
                                    lambda b=buffer, o=owner, lo=lo, hi=hi: dist.broadcast(b[lo:hi], o))

    def gathered(self, slices: list[torch.Tensor], total: int) -> list[torch.Tensor]:
        """Whole flat buffers from every rank's slice (`slices`: this rank's) on every rank."""
        dist = _dist()
        wholes = []
        for part in slices:
            whole = torch.zeros(total, dtype=part.dtype, device=part.device)
            whole[self.lo:self.hi].copy_(part)
            for owner, (lo, hi) in enumerate(self.bounds):
                if hi > lo:
                    self.collective("gathering the sharded optimizer state",
                                    lambda w=whole, o=owner, lo=lo, hi=hi: dist.broadcast(w[lo:hi], o))
            wholes.append(whole)
        return wholes

    def sum(self, values: list[float], what: str) -> list[float]:
        dist = _dist()
        totals = torch.tensor(values, dtype=torch.float64, device=self.trainer.flat.device)
        self.collective(what, lambda: dist.all_reduce(totals))
        return totals.tolist()

    def gather_objects(self, value: Any, what: str) -> list[Any]:
        dist = _dist()
        gathered: list[Any] = [None] * self.world
        self.collective(what, lambda: dist.all_gather_object(gathered, value))
        return gathered

    def barrier(self, what: str) -> None:
        self.collective(what, _dist().barrier)

    # -- SyncBatchNorm: collectives between a batch norm's two kernels -----------------------------------
    def sync_statistics(self, mean: torch.Tensor, var: torch.Tensor, invstd: torch.Tensor, count: int,
                        eps: float) -> None:
        """This rank's per-channel mean and unbiased variance over `count` values each, replaced (with the
        inverse standard deviation) by those of every rank's values together (Chan's combination)."""
        dist = _dist()
        n = float(count)
        local_mean = mean.double()
        biased = var.double() * ((n - 1) / n) if n > 1 else torch.zeros_like(local_mean)
        totals = torch.stack([local_mean * n, (biased + local_mean * local_mean) * n, torch.full_like(local_mean, n)])
        self.collective("combining batch-norm statistics across ranks", lambda: dist.all_reduce(totals))
        samples = totals[2]
        together = totals[0] / samples
        variance = (totals[1] / samples - together * together).clamp_min(0.0)
        mean.copy_(together)
        var.copy_(variance * samples / (samples - 1))
        invstd.copy_(torch.rsqrt(variance + eps))

    def sync_sums(self, dweight: torch.Tensor, dbias: torch.Tensor, count: int) -> None:
        """A batch norm gradient's per-channel sums over this rank's `count` values (of dy * xhat, of dy; dy of
        this rank's mean loss) replaced by their sum over ranks, each weighted by its share of all the values:
        the whole batch's mean loss's, which the input gradient then uses with this rank's count (and which
        the gradient average keeps, its weights summing to one)."""
        dist = _dist()
        rows = torch.stack([dweight.double() * count, dbias.double() * count,
                            torch.full_like(dbias, float(count), dtype=torch.float64)])
        self.collective("combining batch-norm gradient sums across ranks", lambda: dist.all_reduce(rows))
        dweight.copy_(rows[0] / rows[2])
        dbias.copy_(rows[1] / rows[2])

    def idle_batch_norms(self, plan: list[tuple[str, int, torch.device]]) -> None:
        """A rank with no sample in a step still takes its part, with nothing, in every batch norm's
        combination the others make, in their order (`plan`: kind and channels of each)."""
        for kind, channels, device in plan:
            zeros = [torch.zeros(channels, device=device) for _ in range(3)]
            if kind == "statistics":
                self.sync_statistics(*zeros, 0, 1e-5)
            else:
                self.sync_sums(zeros[0], zeros[1], 0)

    # -- shards ---------------------------------------------------------------------------------------
    def shard(self, size: int) -> tuple[int, int]:
        """(first, count) of this rank's samples of a batch of `size`: contiguous shares differing by at most
        one, the first ranks taking the extra ones (rank 0 always has a sample when the batch does)."""
        base, extra = divmod(size, self.world)
        first = self.rank * base + min(self.rank, extra)
        return first, base + (1 if self.rank < extra else 0)
