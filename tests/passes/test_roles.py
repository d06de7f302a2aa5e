"""Forward and backward are typed roles on nodes (autodiff sets them), never read off value names:
a user's layer named "d" (whose values are d.matmul, d.bias_add, as gradients' are d.<node>) stays
forward in kernel names, the explain report and the scan launch choices."""

import re

import fusegraph as fg
from fusegraph.passes import run_pipeline
from fusegraph.passes.autodiff import autodiff


def test_autodiff_marks_what_it_emits_as_backward_and_names_the_node_it_differentiates():
    model = fg.Sequential([fg.Input((4,)), fg.Dense(3, activation="tanh", name="hidden"), fg.Dense(2, name="out")])
    train = autodiff(model.graph, "mse")
    forward = {n.name for n in model.graph.nodes}
    for node in train.nodes:
        if node.name in forward:
            assert not node.role.backward, node.name
        elif node.op not in ("input", "mse"):
            assert node.role.backward and node.role.gradient_of in forward, node.name


def test_a_layer_named_d_is_forward():
    model = fg.Sequential([fg.Input((4,)), fg.Dense(3, name="d"), fg.Dense(2, name="out")])
    fused, _ = run_pipeline(model.graph)
    assert [n.attrs["kernel"] for n in fused.nodes if n.op == "fused"] == ["matmul_bias_add"] * 2
    report = fg.compile(model, loss="mse").explain(batch=2)
    counts = re.search(r"(\d+) forward launches, (\d+) loss launch", report)
    assert counts is not None and counts.group(1) == "2"
