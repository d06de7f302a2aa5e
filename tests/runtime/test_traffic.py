"""The analytic traffic model agrees with what the runtime actually launches."""

import pytest

import fusegraph as fg
from fusegraph.ir.cost import graph_traffic, minimum_bytes
from tests.conftest import feeds_for


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
