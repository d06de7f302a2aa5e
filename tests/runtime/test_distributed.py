"""Data-parallel training on torch.distributed (gloo, two processes, Triton's interpreter), against the same
training in one process: k steps on 2 ranks of batch B equal k steps of batch 2B (SGD with momentum and Adam,
with and without the sharded optimizer, with dropout) to 1e-6; fit over an uneven last batch (its running
figures after each batch too), evaluate and predict equal one process's; a 2-rank save continued in one
process and a one-process save continued on 2 ranks equal the uninterrupted run; ranks that compiled
different models are told at the start; a rank that dies gives the other a DistributedError within the
process group's timeout."""

import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fusegraph as fg
from tests.runtime import distributed_worker as worker

ROOT = Path(__file__).resolve().parents[2]
WORLD = 2
TOLERANCE = {"rtol": 0, "atol": 1e-6}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Both ranks' records, and the folder holding the single-process save they continued."""
    folder = tmp_path_factory.mktemp("distributed")
    x, y = worker.samples(11, seed=1)
    trainer = fg.compile(worker.mlp(), loss="cross_entropy", optimizer=fg.optim.Adam(lr=0.01))
    trainer.fit(x, y, epochs=1, batch_size=2 * WORLD, verbose=False)
    trainer.save(folder / "saved_by_one.fg")
    port = _free_port()
    ranks = []
    for rank in range(WORLD):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        ranks.append(subprocess.Popen([sys.executable, "-m", "tests.runtime.distributed_worker", str(folder),
                                       str(folder / "saved_by_one.fg")], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [process.communicate(timeout=600)[0] for process in ranks]
    assert [p.returncode for p in ranks] == [0, 3], "\n".join(o[-3000:] for o in outputs)
    return folder, [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.parametrize("optimizer", list(worker.OPTIMIZERS))
@pytest.mark.parametrize("shard", [False, True])
def test_steps_on_two_ranks_equal_one_process_on_their_whole_batch(two_ranks, optimizer, shard):
    _, ranks = two_ranks
    trainer = fg.compile(worker.mlp(), loss="cross_entropy", optimizer=worker.OPTIMIZERS[optimizer]())
    x, y = worker.samples(worker.PER_RANK * WORLD * worker.STEPS)
    batch = worker.PER_RANK * WORLD
    losses = [trainer.train_step(x[s:s + batch], y[s:s + batch]) for s in range(0, len(y), batch)]
    for record in ranks:
        their_losses, flat = record[f"steps/{optimizer}/{shard}"]
        torch.testing.assert_close(torch.tensor(their_losses), torch.tensor(losses), **TOLERANCE)
        torch.testing.assert_close(flat, trainer.flat, **TOLERANCE)


def test_gradient_buckets_go_out_while_the_backward_runs(two_ranks):
    """With 64-byte buckets (the worker's): the output layer's bucket starts its all-reduce while the first
    layer's gradients are still to be computed, every step (and the steps above still equal one process's)."""
    _, ranks = two_ranks
    for record in ranks:
        for optimizer in worker.OPTIMIZERS:
            started, buckets, explained = record[f"overlap/{optimizer}/False"]
            assert buckets >= 2 and started >= (buckets - 1) * worker.STEPS
            assert "starting as soon as the backward kernel writing its last gradient has run" in explained


def test_a_sharded_optimizer_keeps_half_the_state_on_each_rank(two_ranks):
    _, ranks = two_ranks
    for record in ranks:
        report = record["memory/adam"]
        assert report["optimizer_state_bytes_unsharded"] == len(fg.optim.Adam().state) * report["weight_bytes"]
        assert abs(report["optimizer_state_bytes"] - report["optimizer_state_bytes_unsharded"] / WORLD) <= 8


def _one_process_fit(path_or_none, callbacks=()):
    x, y = worker.samples(11, seed=1)
    if path_or_none is None:
        trainer = fg.compile(worker.mlp(), loss="cross_entropy", optimizer=fg.optim.Adam(lr=0.01))
        history = trainer.fit(x, y, epochs=2, batch_size=2 * WORLD, verbose=False, callbacks=callbacks)
    else:
        trainer = fg.load(path_or_none)
        history = trainer.fit(x, y, epochs=2, batch_size=2 * WORLD, verbose=False, initial_epoch=1)
    return trainer, history, x, y


def test_fit_evaluate_and_predict_on_two_ranks_equal_one_process(two_ranks):
    """11 samples in batches of 2 per rank: 4, 4, then 3 (2 on rank 0, 1 on rank 1), dropout keyed by each
    sample's place in the whole batch; saved after the first epoch and continued."""
    _, ranks = two_ranks
    running = worker.BatchLogs()
    trainer, history, x, y = _one_process_fit(None, [running])
    for record in ranks:
        # the progress bar's running loss and accuracy: the whole batches', on every rank
        assert len(record["running"]) == 3
        for theirs, ours in zip(record["running"], running.logs[:3], strict=True):
            assert theirs.keys() == ours.keys() and all(abs(theirs[k] - ours[k]) <= 1e-6 for k in ours)
        their_history, flat, evaluation, predicted = record["fit"]
        assert their_history.keys() == history.keys()
        for key in history:
            torch.testing.assert_close(torch.tensor(their_history[key]), torch.tensor(history[key]), **TOLERANCE)
        torch.testing.assert_close(flat, trainer.flat, **TOLERANCE)
        expected = trainer.evaluate(x, y)
        assert evaluation.keys() == expected.keys()
        for key in expected:
            assert abs(evaluation[key] - expected[key]) <= 1e-6
        torch.testing.assert_close(predicted, trainer.predict(x), **TOLERANCE)


def test_saves_move_between_two_ranks_and_one_process(two_ranks):
    folder, ranks = two_ranks
    uninterrupted, history, _, _ = _one_process_fit(None)
    continued, continued_history, _, _ = _one_process_fit(folder / "saved_by_two.fg")  # a sharded 2-rank save
    torch.testing.assert_close(continued.flat, uninterrupted.flat, **TOLERANCE)
    torch.testing.assert_close(torch.tensor(continued_history["loss"]), torch.tensor(history["loss"]), **TOLERANCE)
    for record in ranks:  # the single-process save, continued on two ranks
        their_history, flat = record["resumed"]
        torch.testing.assert_close(flat, uninterrupted.flat, **TOLERANCE)
        torch.testing.assert_close(torch.tensor(their_history["loss"]), torch.tensor(history["loss"]), **TOLERANCE)


def test_sync_batch_norm_on_two_ranks_equals_batch_norm_over_the_whole_batch(two_ranks):
    """torch's SyncBatchNorm semantics: the batch's statistics over every rank's samples, their gradient too;
    the last batch of one sample leaves rank 1 with none, taking its part in each combination all the same."""
    _, ranks = two_ranks
    x, y = worker.images(9)
    trainer = fg.compile(worker.cnn_with_batch_norm(), loss="cross_entropy",
                         optimizer=fg.optim.SGD(lr=0.1, momentum=0.9))
    history = trainer.fit(x, y, epochs=2, batch_size=2 * WORLD, verbose=False)
    expected = trainer.host_weights()[0]
    for record in ranks:
        their_history, weights = record["sync_batch_norm"]
        torch.testing.assert_close(torch.tensor(their_history["loss"]), torch.tensor(history["loss"]), rtol=1e-5,
                                   atol=1e-6)
        assert weights.keys() == expected.keys() and "bn.running_var" in weights
        for name, tensor in expected.items():
            torch.testing.assert_close(weights[name], tensor, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_ranks_with_different_models_are_told_at_the_start(two_ranks):
    _, ranks = two_ranks
    for record in ranks:
        assert "rank 1 compiled a different model" in record["mismatch"]


def test_a_rank_that_dies_gives_the_other_an_error_within_the_timeout(two_ranks):
    _, ranks = two_ranks
    message, waited = ranks[0]["killed"]
    assert "rank 0 of 2" in message and "another rank stopped" in message
    assert waited < worker.TIMEOUT_S + 5


def test_distributed_needs_a_process_group():
    with pytest.raises(fg.DistributedError, match="init_process_group"):
        fg.compile(worker.mlp(), loss="mse", optimizer=fg.optim.SGD(), distributed=True)
    with pytest.raises(fg.GraphError, match="shard_optimizer"):
        fg.compile(worker.mlp(), loss="mse", optimizer=fg.optim.SGD(), shard_optimizer=True)
    with pytest.raises(fg.GraphError, match="sync_batch_norm"):
        fg.compile(worker.mlp(), loss="mse", optimizer=fg.optim.SGD(), sync_batch_norm=True)


def test_the_readmes_torchrun_command_runs_as_written(tmp_path):
    readme = (ROOT / "README.md").read_text().splitlines()
    command = next(line for line in readme if line.startswith("torchrun --nproc-per-node=2 -m fusegraph train"))
    words = shlex.split(command.split("#")[0])
    launcher = Path(sys.executable).with_name("torchrun")  # torch's console script, beside this Python
    words = [str(launcher)] + words[1:] if launcher.exists() else [sys.executable, "-m", "torch.distributed.run",
                                                                   *words[1:]]
    result = subprocess.run(words, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "data parallel over 2 ranks" in result.stdout
    assert result.stdout.count("held-out: loss") == 1  # rank 0 alone reports
