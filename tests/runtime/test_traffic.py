"""The analytic traffic model agrees with what the runtime actually launches."""

import pytest

import fusegraph as fg
from fusegraph.ir.cost import graph_traffic, launch_count, minimum_bytes
from tests.conftest import feeds_for, targets_for


@pytest.mark.parametrize("fuse", [False, True])
@pytest.mark.parametrize("name", list(fg.zoo.MODELS))
def test_launch_counts_match_the_traffic_model(name, fuse):
    model = fg.zoo.get(name)
    compiled = fg.compile(model, fuse=fuse)
    compiled(feeds_for(model, 2, vocab=1000))
    assert compiled.last_launches == sum(t.launches for t in graph_traffic(compiled.graph, 2))


def test_lenet_traffic_by_hand():
    model = fg.zoo.lenet((1, 8, 8))
    traffic = {t.node.name: t for t in graph_traffic(model.graph, 1)}
    conv = traffic["conv1.conv"]
    assert conv.read == 4 * (64 + 6 * 25) and conv.written == 4 * 6 * 64
    assert traffic["flatten"].total == 0  # a view
    params = sum(v.numel() for v in model.params.values())
    assert minimum_bytes(model.graph, 1) == 4 * (64 + params + 10)


@pytest.mark.parametrize("return_sequences", [True, False])
def test_bidirectional_concat_is_assembled_in_place_and_counted_so(return_sequences):
    model = fg.Sequential([fg.Input((4, 3)), fg.GRU(5, bidirectional=True, return_sequences=return_sequences)])
    for fuse in (True, False):
        compiled = fg.compile(model, fuse=fuse)
        compiled(feeds_for(model, 2))
        assert compiled.last_launches == sum(t.launches for t in graph_traffic(compiled.graph, 2))
    assert compiled.last_launches > 2 * (4 + 1)  # unfused: the copies are there


def _with_dropout() -> fg.Model:
    return fg.Sequential([fg.Input((8,)), fg.Dense(6, activation="relu"), fg.Dropout(0.5), fg.Dense(3)])


MODELS = {**{name: lambda name=name: fg.zoo.get(name) for name in fg.zoo.MODELS}, "dense_dropout_dense": _with_dropout}
LOSSES = {**fg.zoo.LOSSES, "dense_dropout_dense": "cross_entropy"}


@pytest.mark.parametrize("name", list(MODELS))
def test_training_launches_are_what_explain_and_the_cost_model_say(name):
    import re

    model = MODELS[name]()
    loss = LOSSES[name]
    feeds = feeds_for(model, 2, vocab=1000)
    target = targets_for(model, loss, 2)
    compiled = fg.compile(model, loss=loss)
    compiled(feeds)
    assert compiled.last_launches == launch_count(compiled.graph, 2)
    compiled.loss_and_grads(feeds, target)
    assert compiled.last_launches == launch_count(compiled.train_graph, 2)
    counts = re.search(r"(\d+) forward launches, (\d+) loss launch.*?, (\d+) backward launches", compiled.explain(batch=2))
    assert counts is not None and sum(map(int, counts.groups())) == compiled.last_launches
    if name == "dense_dropout_dense":  # the dropout and its gradient each launch in training, not at inference
        assert compiled.last_launches == 9 and launch_count(compiled.graph, 2) == 2
