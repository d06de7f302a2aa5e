"""Calls from several threads get the answers one thread would (the working buffers are shared per
batch size, and Triton's interpreter keeps launch state in globals)."""

from concurrent.futures import ThreadPoolExecutor

import torch

import fusegraph as fg
from tests.conftest import KERNEL_ATOL, KERNEL_RTOL, targets_for


def _small_cnn(seed: int) -> fg.Model:
    x = fg.Input((1, 8, 8))
    h = fg.MaxPool2D(2)(fg.Conv2D(3, 3, padding="same", activation="relu")(x))
    model = fg.Model(x, fg.Dense(4)(fg.Flatten()(h)))
    model.init(seed)
    return model


def test_one_model_called_from_threads_at_one_batch_size():
    model = _small_cnn(0)
    compiled, oracle = fg.compile(model), model.to_torch()
    inputs = [torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(24)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(compiled, inputs))
    with torch.no_grad():
        for x, got in zip(inputs, results, strict=True):
            torch.testing.assert_close(got, oracle(x), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


def test_two_models_and_gradients_from_threads():
    first, second = _small_cnn(0), _small_cnn(1)
    forward = fg.compile(first)
    trainer = fg.compile(second, loss="mse")
    y = targets_for(second, "mse", 2)
    jobs = [("forward", torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(i))) for i in range(8)]
    jobs += [("grads", torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(100 + i))) for i in range(8)]

    def run(job):
        kind, x = job
        return forward(x) if kind == "forward" else trainer.loss_and_grads(x, y)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, jobs[::2] + jobs[1::2]))
    oracle_first, oracle_second = first.to_torch(), second.to_torch()
    for (kind, x), got in zip(jobs[::2] + jobs[1::2], results, strict=True):
        if kind == "forward":
            with torch.no_grad():
                torch.testing.assert_close(got, oracle_first(x), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
            continue
        oracle_second.zero_grad()
        loss = torch.nn.functional.mse_loss(oracle_second(x), y)
        loss.backward()
        torch.testing.assert_close(torch.tensor(got[0]), loss.detach(), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
        for name, param in oracle_second.fusegraph_parameters().items():
            torch.testing.assert_close(got[1][name], param.grad, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
