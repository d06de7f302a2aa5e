"""The IR: printing, verification of hand-built graphs, the networkx view."""

import networkx as nx
import pytest

from fusegraph.ir import BATCH, Graph, GraphBuilder, GraphError, Node, TensorType, Value, to_networkx, verify

F32 = "float32"


def tiny_graph() -> Graph:
    b = GraphBuilder("tiny")
    x = b.input("x", TensorType((BATCH, 4)))
    w = b.parameter("fc.weight", TensorType((3, 4)), "glorot_uniform")
    h = b.op("matmul", [x, w], name="fc.matmul", layer="fc", transpose_b=True)
    y = b.op("relu", [h], name="fc", layer="fc")
    return b.build([y])


def test_printer_golden():
    assert str(tiny_graph()) == "\n".join([
        "graph tiny(%x: f32[N,4]) {",
        "  %fc.weight: f32[3,4] = parameter(init=glorot_uniform, trainable=True)",
        "  %fc.matmul: f32[N,3] = matmul(%x, %fc.weight, transpose_b=True)",
        "  %fc: f32[N,3] = relu(%fc.matmul)",
        "  return %fc",
        "}",
    ])


def test_verify_accepts_built_graph_and_networkx_view():
    g = verify(tiny_graph())
    view = to_networkx(g)
    assert nx.is_directed_acyclic_graph(view)
    assert list(nx.topological_sort(view)) == ["x", "fc.weight", "fc.matmul", "fc"]
    assert view.nodes["fc"]["op"] == "relu"


def _arg(op: str, name: str, t: TensorType) -> Node:
    attrs = {"type": t} if op == "input" else {"type": t, "init": "zeros", "trainable": True}
    return Node(op, (), (Value(name, t),), attrs)


def test_cycle_is_named():
    t = TensorType((BATCH, 4))
    x = _arg("input", "x", t)
    a, b = Value("a", t), Value("b", t)
    nodes = [x, Node("add", (x.outputs[0], b), (a,), {}, "first"), Node("relu", (a,), (b,), {}, "second")]
    with pytest.raises(GraphError, match=r"cycle .*%a.*%b"):
        verify(Graph(nodes, (b,), "loop"))


def test_dangling_value_is_named():
    t = TensorType((BATCH, 4))
    x = _arg("input", "x", t)
    nodes = [x, Node("add", (x.outputs[0], Value("ghost", t)), (Value("y", t),), {}, "adder")]
    with pytest.raises(GraphError, match=r"layer 'adder'.*%ghost.*dangling"):
        verify(Graph(nodes, (nodes[-1].outputs[0],)))


def test_undefined_output_and_double_definition():
    t = TensorType((BATCH, 4))
    x = _arg("input", "x", t)
    with pytest.raises(GraphError, match="output %nowhere is never defined"):
        verify(Graph([x], (Value("nowhere", t),)))
    twice = Node("relu", (x.outputs[0],), (Value("x", t),), {})
    with pytest.raises(GraphError, match="defined twice"):
        verify(Graph([x, twice], (x.outputs[0],)))


def test_recorded_type_must_match_shape_rule():
    t = TensorType((BATCH, 4))
    x = _arg("input", "x", t)
    wrong = Node("relu", (x.outputs[0],), (Value("y", TensorType((BATCH, 5))),), {}, "act")
    with pytest.raises(GraphError, match=r"layer 'act'.*f32\[N,5\].*shape rule gives.*f32\[N,4\]"):
        verify(Graph([x, wrong], (wrong.outputs[0],)))


def test_channel_mismatch_in_hand_built_graph():
    x = _arg("input", "x", TensorType((BATCH, 3, 8, 8)))
    w = _arg("parameter", "conv.weight", TensorType((16, 4, 3, 3)))
    conv = Node("conv2d", (x.outputs[0], w.outputs[0]), (Value("conv", TensorType((BATCH, 16, 6, 6))),),
                {"stride": (1, 1), "padding": ((0, 0), (0, 0)), "dilation": (1, 1)}, "conv")
    with pytest.raises(GraphError, match=r"layer 'conv'.*channel mismatch.*3 channels.*expects 4"):
        verify(Graph([x, w, conv], (conv.outputs[0],)))


def test_dtype_an_op_does_not_take():
    ids = _arg("input", "ids", TensorType((BATCH, 4), "int64"))
    act = Node("sigmoid", (ids.outputs[0],), (Value("y", TensorType((BATCH, 4), "int64")),), {}, "act")
    with pytest.raises(GraphError, match=r"layer 'act'.*int64.*float32"):
        verify(Graph([ids, act], (act.outputs[0],)))
    with pytest.raises(GraphError, match="dtype 'float64' is not supported"):
        TensorType((BATCH, 4), "float64")


def test_unknown_op_and_arity():
    t = TensorType((BATCH, 4))
    x = _arg("input", "x", t)
    with pytest.raises(GraphError, match="unknown op 'swish_v9'"):
        verify(Graph([x, Node("swish_v9", (x.outputs[0],), (Value("y", t),), {})], (x.outputs[0],)))
    with pytest.raises(GraphError, match="add takes 2 inputs, got 1"):
        verify(Graph([x, Node("add", (x.outputs[0],), (Value("y", t),), {})], (x.outputs[0],)))


@pytest.mark.parametrize("shape", [(BATCH, 0), (BATCH, -3), (BATCH, 2.5), (4, BATCH)])
def test_non_positive_or_misplaced_dims(shape):
    with pytest.raises(GraphError):
        TensorType(shape)


def test_op_traits_are_declared_with_the_ops_and_consistent():
    from fusegraph.ir.ops import OPS, TRAITS, ops_with
    from fusegraph.ir.ops.pool import WITH_POSITIONS
    from fusegraph.passes.templates import anchor_of

    for trait in TRAITS:
        assert ops_with(trait), f"no op declares {trait}"
    assert ops_with("prologue") <= ops_with("elementwise")
    anchors = ops_with("conv_anchor") | ops_with("matmul_anchor")
    hosts = anchors | ops_with("pool_gradient") | ops_with("conv_weight_gradient")
    assert all(anchor_of(op) is not None for op in hosts), "each kernel host's template registers its Anchor"
    assert {"conv2d", "matmul"} <= anchors and "bias_add" in ops_with("elementwise") & ops_with("per_channel")
    assert set(WITH_POSITIONS.values()) == ops_with("saves_positions") <= ops_with("max_pool") & ops_with("pool")
    assert all(trait in TRAITS for op in OPS.values() for trait in op.traits)
