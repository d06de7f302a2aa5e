"""Ops the layers only use inside others (sub, split, an untransposed matmul, dropout), each as a
hand-built graph compiled to kernels, checked against torch's own functions."""

from types import SimpleNamespace

import pytest
import torch

import fusegraph as fg
from fusegraph.ir import BATCH, GraphBuilder, TensorType
from fusegraph.kernels import Target, generate
from tests.conftest import KERNEL_ATOL, KERNEL_RTOL


def compiled(build, params=None):
    b = GraphBuilder("hand")
    outputs = build(b)
    graph = b.build(outputs if isinstance(outputs, list) else [outputs])
    return fg.compile(SimpleNamespace(graph=graph, params=params or {}, output_shape=[]))


def test_matmul_untransposed_and_rank3():
    w = torch.randn(6, 5)
    cm = compiled(lambda b: b.op("matmul", [b.input("x", TensorType((BATCH, 3, 6))),
                                            b.parameter("w", TensorType((6, 5)), "zeros")], name="y"), {"w": w})
    x = torch.randn(2, 3, 6)
    torch.testing.assert_close(cm(x)[0], torch.matmul(x, w), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


def test_sub_mul_split_concat():
    def build(b):
        x = b.input("x", TensorType((BATCH, 6)))
        y = b.input("y", TensorType((BATCH, 6)))
        first, second, third = b.op("split", [x], name="parts", axis=1, sizes=(1, 2, 3))
        return [b.op("sub", [x, y], name="d"), b.op("mul", [x, y], name="p"), first, second, third,
                b.op("concat", [third, first], name="c", axis=1)]

    cm = compiled(build)
    x, y = torch.randn(3, 6), torch.randn(3, 6)
    expected = [x - y, x * y, *torch.split(x, [1, 2, 3], dim=1), torch.cat([x[:, 3:], x[:, :1]], dim=1)]
    for got, want in zip(cm([x, y]), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_dropout_kernel_is_seeded_scaled_and_drops_the_rate():
    b = GraphBuilder()
    x = b.input("x", TensorType((BATCH, 4096)))
    node_value = b.op("dropout", [x], name="drop", rate=0.25, seed=1)
    node = b.nodes[-1]
    assert node.outputs[0] is node_value
    kernel = generate(node, Target("cpu"))
    data = torch.randn(2, 4096)
    outs = [torch.empty_like(data) for _ in range(3)]
    for out, step in zip(outs, (7, 7, 8)):  # the step number comes from memory (captured graphs see it change)
        kernel.kernel.step = torch.tensor(step)
        kernel.template.launch(kernel.kernel, node, kernel.target, [data], [out])
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    kept = outs[0] != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.02
    torch.testing.assert_close(outs[0][kept], data[kept] / 0.75)


def test_dropout_is_the_identity_at_inference_and_launches_nothing():
    model = fg.Sequential([fg.Input((8,)), fg.Dropout(0.5)])
    cm = fg.compile(model)
    x = torch.randn(3, 8)
    torch.testing.assert_close(cm(x), model.to_torch()(x))
    assert cm.last_launches == 0


def test_softmax_over_a_non_last_axis_is_a_clear_error():
    with pytest.raises(fg.GraphError, match="reduces the last axis only"):
        compiled(lambda b: b.op("softmax", [b.input("x", TensorType((BATCH, 3, 4)))], name="s", axis=1))
