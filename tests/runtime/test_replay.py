"""Launch replay (no CUDA graph): the first call with an input signature records its launches and the
in-place torch ops between them; later calls issue the same launches on new inputs and get what a
normal run gets, launch counts included; a recording that cannot hold runs normally."""

import pytest
import torch

import fusegraph as fg
from fusegraph.runtime.replay import Recorded
from tests.conftest import KERNEL_ATOL, KERNEL_RTOL, feeds_for, targets_for


@pytest.mark.parametrize("name", ["lenet_digits", "cnn_lstm", "gru_forecaster"])
def test_replayed_forward_and_gradients_equal_torch_on_new_inputs(name):
    model = fg.zoo.get(name)
    loss = fg.zoo.LOSSES[name]
    compiled = fg.compile(model, loss=loss)
    oracle = model.to_torch()
    launches = None
    for seed in range(3):  # the first call records; the others replay
        feeds, target = feeds_for(model, 2, seed=seed), targets_for(model, loss, 2, seed=seed)
        with torch.no_grad():
            torch.testing.assert_close(compiled(feeds), oracle(*feeds), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
        _, grads = compiled.loss_and_grads(feeds, target)
        oracle.zero_grad()
        from bench.bench_training import torch_loss

        torch_loss(model, oracle(*feeds), target, loss).backward()
        for param_name, param in oracle.fusegraph_parameters().items():
            torch.testing.assert_close(grads[param_name], param.grad, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
        launches = launches or compiled.last_launches
        assert compiled.last_launches == launches
    assert all(r is not None for r in compiled._forward.recorded.values())  # it did replay
    assert all(r is not None for r in compiled._gradients.recorded.values())


@pytest.mark.usefixtures("small_tiles")
def test_zero_fills_between_launches_are_replayed():
    """A conv weight gradient split across programs accumulates atomically into a zero-filled buffer:
    without the fill replayed, the second call would add to the first's gradient."""
    x = fg.Input((1, 18, 18))  # 8 x 16 x 16 output positions: two reduction blocks in the interpreter, split in 2
    model = fg.Model(x, fg.Flatten()(fg.Conv2D(2, 3)(x)))
    compiled = fg.compile(model, loss="mse")
    feeds, target = feeds_for(model, 8), targets_for(model, "mse", 8)
    _, first = compiled.loss_and_grads(feeds, target)
    _, again = compiled.loss_and_grads(feeds, target)
    (recorded,) = compiled._gradients.recorded.values()
    assert any("zero_" in str(op) for op, _, _ in recorded.ops)
    torch.testing.assert_close(again["conv2d.weight"], first["conv2d.weight"], rtol=0, atol=0)


def test_a_run_with_a_value_making_torch_op_is_not_replayed():
    def run(feeds):
        return [feeds[0] * 2]  # a new tensor each call: a recorded launch would read a stale one

    recorded = Recorded(run, [torch.ones(3)])
    assert recorded.refused is not None and "mul" in recorded.refused
    runner = fg.runtime.graphs.GraphRunner(run, fg.kernels.LaunchCounter(), limit=0)
    assert runner([torch.ones(3)], copy=True)[0].tolist() == [2, 2, 2]
    assert runner([torch.full((3,), 5.0)], copy=True)[0].tolist() == [10, 10, 10]
    assert list(runner.recorded.values()) == [None]


def test_cuda_graph_status_says_how_calls_ran():
    """What the fair benchmark labels its fusegraph contender with: off without CUDA graphs, and a failed
    capture named with its reason (the runner then launches one by one)."""
    model = fg.zoo.lenet_digits()
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.SGD(lr=0.1))
    assert trainer.cuda_graph_status() == "off"
    trainer.cuda_graphs = True  # as on a GPU, where the runners would capture
    assert trainer.cuda_graph_status() == "not called yet"
    trainer._step_runner.captured[("signature",)] = object()
    assert trainer.cuda_graph_status() == "captured"
    trainer._step_runner.failed = "operation not permitted when stream is capturing"
    assert trainer.cuda_graph_status() == "capture failed: operation not permitted when stream is capturing"
