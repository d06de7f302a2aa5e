"""Finite differences in float64 through the IR interpreter agree with the backward graph autodiff
derives, and the generated fp32 kernels agree with both."""

import torch

import fusegraph as fg
from fusegraph.ir import Interpreter
from fusegraph.passes.autodiff import autodiff


def tiny_model() -> fg.Model:
    return fg.Sequential([
        fg.Input((1, 6, 6)), fg.Conv2D(2, 3, padding="same", activation="tanh", name="conv"),
        fg.AvgPool2D(2, name="pool"), fg.Flatten(), fg.Dense(4, activation="leaky_relu", name="hidden"),
        fg.Dense(3, activation="softmax", name="out"),
    ])


def test_finite_differences_agree_with_the_backward_graph():
    model = tiny_model()
    train = autodiff(model.graph, "cross_entropy")
    params = {k: v.double() for k, v in model.params.items()}
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1, 6, 6, generator=generator, dtype=torch.float64)
    y = torch.tensor([0, 2])
    names = [n.name for n in model.graph.param_nodes]

    def run(p):
        return Interpreter(train, p).run([x, y])

    analytic = dict(zip(names, run(params)[1:]))
    eps = 1e-6
    for name in names:
        flat = params[name].reshape(-1)
        for index in sorted({0, flat.numel() // 2, flat.numel() - 1}):
            plus = {k: v.clone() for k, v in params.items()}
            minus = {k: v.clone() for k, v in params.items()}
            plus[name].reshape(-1)[index] += eps
            minus[name].reshape(-1)[index] -= eps
            numeric = (run(plus)[0] - run(minus)[0]) / (2 * eps)
            assert abs(numeric - analytic[name].reshape(-1)[index]) < 1e-7 + 1e-5 * abs(numeric), (name, index)
    compiled = fg.compile(model, loss="cross_entropy")
    _, grads = compiled.loss_and_grads(x.float(), y)
    for name in names:
        torch.testing.assert_close(grads[name].double(), analytic[name], rtol=1e-4, atol=1e-5)
