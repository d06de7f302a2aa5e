"""Channels-last storage (passes/channels_last.py): which values the pass stores NHWC, what the
verifier refuses, and compiled networks whose inner activations, weights and gradients are stored
channels-last, against torch.nn and torch.autograd (fp32: rtol 1e-4, atol 1e-5)."""

import pytest
import torch

import fusegraph as fg
from fusegraph.ir import Graph, GraphError, TensorType, Value, verify
from fusegraph.passes import CompileOptions, run_pipeline
from fusegraph.passes.autodiff import autodiff
from fusegraph.passes.channels_last import channels_last
from tests.conftest import (
    assert_compiled_matches_torch,
    assert_grads_match_torch,
    assert_training_follows_torch,
    feeds_for,
    targets_for,
)


def layouts(graph: Graph) -> dict[str, str]:
    return {v.name: v.type.layout for n in graph.nodes for v in n.outputs}


def test_the_conv_part_is_channels_last_and_the_edges_contiguous():
    graph = channels_last(fg.zoo.cifar_cnn().graph)
    stored = layouts(graph)
    assert stored["image"] == "contiguous"  # callers pass NCHW: the first conv reads it as it is
    assert stored["conv1_1.conv"] == stored["conv1_1"] == stored["pool1"] == "channels_last"
    assert stored["conv2_2"] == stored["pool2"] == "channels_last"
    # the last stage feeds a flatten: its conv writes what the reshape reads
    assert stored["conv3_1.conv"] == stored["pool3"] == stored["flatten"] == "contiguous"
    assert stored["conv2_1.weight"] == "channels_last"  # packed: a tap's channels in one run
    assert stored["conv2_1.bias"] == stored["fc.weight"] == "contiguous"
    assert all(v.type.layout == "contiguous" for v in graph.outputs)
    assert "f32[N,64,32,32]:channels_last = conv2d(%image" in str(graph)
    report = fg.compile(fg.zoo.cifar_cnn()).explain()
    assert "Stored channels-last (NHWC): 14 of 18 rank-4 activations" in report
    assert "%conv1_1.conv reads NCHW, writes NHWC; %conv3_1.conv reads NHWC, writes NCHW" in report


def test_a_conv_output_the_caller_gets_back_stays_contiguous():
    x = fg.Input((3, 6, 6))
    hidden = fg.Conv2D(16, 3, padding="same", activation="relu")(x)
    model = fg.Model(x, [fg.Conv2D(4, 3)(hidden), hidden])
    stored = layouts(channels_last(model.graph))
    assert {stored[v.name] for v in model.graph.outputs} == {"contiguous"}
    # the relu's output is returned, so its whole class (the conv and bias before it) is contiguous
    assert stored[model.graph.outputs[1].name] == "contiguous"


def test_training_stores_each_weight_gradient_and_dropout_mask_as_the_forward_does():
    model = fg.Sequential([fg.Input((3, 8, 8)), fg.Conv2D(16, 3, padding="same", activation="relu"), fg.Dropout(0.5),
                           fg.Conv2D(16, 3, padding="same", activation="relu"), fg.GlobalAvgPool2D(), fg.Dense(3)])
    train = channels_last(autodiff(model.graph, "cross_entropy"))
    producers = train.producers()
    params = {n.name: n.outputs[0].type.layout for n in train.param_nodes}
    conv_weights = [name for name in params if name.endswith(".weight") and len(producers[name].outputs[0].type.shape) == 4]
    assert conv_weights and all(params[name] == "channels_last" for name in conv_weights)
    gradients = [v for v in train.outputs if producers[v.name].op == "conv2d_bwd_weight"]
    assert len(gradients) == 2 and all(v.type.channels_last for v in gradients)
    dropouts = [n for n in train.nodes if n.op == "dropout"]
    assert len(dropouts) == 2 and len({n.outputs[0].type.layout for n in dropouts}) == 1


def test_a_weight_shared_with_a_contiguous_gradient_is_stored_contiguously():
    """Two uses of one conv weight sum their gradients in an add, whose output the caller gets:
    the weight is then stored contiguously too (the optimizer walks weight and gradient as one)."""
    x = fg.Input((16, 5, 5))
    conv = fg.Conv2D(16, 3, padding="same", activation="relu")
    model = fg.Model(x, fg.Dense(2)(fg.Flatten()(conv(conv(x)))))
    train = channels_last(autodiff(model.graph, "mse"))
    weight = next(n for n in train.param_nodes if len(n.outputs[0].type.shape) == 4)
    assert weight.outputs[0].type.layout == "contiguous"


def test_layout_is_storage_not_type():
    plain, stored = TensorType(("N", 4, 3, 3)), TensorType(("N", 4, 3, 3), layout="channels_last")
    assert plain == stored and str(stored) == "f32[N,4,3,3]:channels_last"
    with pytest.raises(GraphError, match="rank-4"):
        TensorType(("N", 4, 3), layout="channels_last")
    with pytest.raises(GraphError, match="layout 'nhwc'"):
        TensorType(("N", 4, 3, 3), layout="nhwc")


def _relabel(graph: Graph, names: str, layout: str, uses_only: bool = False) -> Graph:
    """`graph` with the values named (space-separated) stored in `layout` (at their uses only, if asked)."""
    def swap(v: Value) -> Value:
        return Value(v.name, v.type.with_layout(layout)) if v.name in names.split() else v

    nodes = [n.replace(inputs=tuple(map(swap, n.inputs)),
                       outputs=n.outputs if uses_only else tuple(map(swap, n.outputs))) for n in graph.nodes]
    return Graph(tuple(nodes), graph.outputs, graph.name)


def test_the_verifier_refuses_layouts_ops_cannot_address():
    graph = channels_last(fg.zoo.cifar_cnn().graph)
    with pytest.raises(GraphError, match="bias_add.*indexes its operands as one"):
        verify(_relabel(graph, "conv1_1.bias_add", "contiguous"))  # written NCHW from an NHWC conv
    with pytest.raises(GraphError, match="reshape.*contiguous tensors only"):
        verify(_relabel(graph, "conv3_1.conv conv3_1.bias_add conv3_1 pool3", "channels_last"))
    with pytest.raises(GraphError, match="uses %conv1_1 as .* but it is defined as"):
        verify(_relabel(graph, "conv1_1", "contiguous", uses_only=True))


def test_every_pipeline_stores_the_same_graph_alike():
    """Fused or not, the layouts the kernels read are the pass's (the fused graph keeps its types)."""
    model = fg.zoo.cifar_cnn()
    fused, _ = run_pipeline(model.graph)
    plain, _ = run_pipeline(model.graph, CompileOptions(fuse=False))
    expected = layouts(plain)
    for node in fused.nodes:
        body = node.attrs["body"].nodes if node.op == "fused" else (node,)
        for member in body:
            for v in member.outputs:
                if v.name in expected:
                    assert v.type.layout == expected[v.name], v.name


# -- compiled against torch ------------------------------------------------------------------------
WIDE = 16  # a tap's channels fill a tl.dot block: the tap-major loop reads them as one run


def network(pool: str, head: str) -> fg.Model:
    """Fresh layers each call: a layer is built for the shapes it was first called on."""
    pool, head = POOLS[pool](), HEADS[head]()
    model = fg.Sequential([
        fg.Input((3, 9, 8)),
        fg.Conv2D(WIDE, 3, padding="same", activation="silu"),  # reads NCHW, writes NHWC
        fg.Conv2D(WIDE + 4, 3, strides=2, padding="same", activation="relu"),  # NHWC in and out, strided
        pool,
        fg.Conv2D(WIDE, (3, 2), dilation=2, padding="same", activation="gelu"),
        *head,
    ])
    # biases start at zero: nonzero ones, so a bias added to the wrong channel shows
    generator = torch.Generator().manual_seed(2)
    model.load_params({name: torch.randn(t.shape, generator=generator) * 0.5 if name.endswith(".bias") else t
                       for name, t in model.params.items()})
    return model


POOLS = {"max": lambda: fg.MaxPool2D(2), "avg_same": lambda: fg.AvgPool2D(3, strides=1, padding="same"),
         "max_same": lambda: fg.MaxPool2D(3, strides=2, padding="same")}
HEADS = {"flatten": lambda: [fg.Flatten(), fg.Dense(3)], "global": lambda: [fg.GlobalAvgPool2D(), fg.Dense(3)]}


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("pool,head", [("max", "flatten"), ("avg_same", "global"), ("max_same", "flatten")])
def test_a_channels_last_network_matches_torch(pool, head, fuse):
    model = network(pool, head)
    compiled = assert_compiled_matches_torch(model, feeds_for(model, batch=2), fuse=fuse)
    assert any(n.outputs[0].type.channels_last for n in compiled.graph.nodes if n.op != "parameter")


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("pool,head", [("max", "global"), ("avg_same", "flatten")])
def test_channels_last_gradients_match_autograd(pool, head, fuse):
    """Conv input and weight gradients, pool and bias gradients read and write NHWC; each weight's
    gradient is stored packed like the weight, and comes back to the caller as the same values."""
    model = network(pool, head)
    compiled = assert_grads_match_torch(model, feeds_for(model, batch=2), targets_for(model, "mse", 2), "mse",
                                        fuse=fuse)
    stored = {n.name: n.outputs[0].type for n in compiled.train_graph.param_nodes}
    assert stored["conv2d_1.weight"].channels_last
    _, grads = compiled.loss_and_grads(feeds_for(model, batch=2), targets_for(model, "mse", 2))
    assert all(g.is_contiguous() for g in grads.values())  # handed back like model.params


def test_training_with_packed_weights_follows_torch_and_hands_back_nchw_weights():
    model = network("max", "flatten")
    oracle = model.to_torch()
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.SGD(0.05, momentum=0.9))
    assert trainer.params["conv2d_1.weight"].is_contiguous(memory_format=torch.channels_last)
    torch_optimizer = torch.optim.SGD(oracle.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(4, 3, 9, 8, generator=generator), torch.randint(0, 3, (4,), generator=generator))
               for _ in range(3)]
    assert_training_follows_torch(model, trainer, torch_optimizer, oracle, batches)
    weights, _ = trainer.host_weights()
    expected = oracle.fusegraph_parameters()
    for name, tensor in weights.items():
        assert tensor.is_contiguous()
        torch.testing.assert_close(tensor, expected[name].detach(), rtol=1e-4, atol=1e-5)


def test_callers_who_keep_images_channels_last_pass_and_get_them_so():
    """memory_format=torch.channels_last: a PyTorch model converted to channels-last, compiled; its
    NHWC input is read where it lies and its conv output comes back NHWC, equal to torch's."""
    x = fg.Input((3, 7, 6))
    hidden = fg.Conv2D(WIDE, 3, padding="same", activation="relu")(x)
    model = fg.Model(x, [fg.Conv2D(WIDE, 3, strides=2, padding="same")(hidden), fg.MaxPool2D(2)(hidden)])
    image = torch.randn(2, 3, 7, 6).contiguous(memory_format=torch.channels_last)
    compiled = fg.compile(model, memory_format=torch.channels_last)
    assert compiled.graph.inputs[0].type.channels_last
    with torch.no_grad():
        expected = model.to_torch().to(memory_format=torch.channels_last)(image)
    for ours, theirs in zip(compiled(image), expected, strict=True):
        assert ours.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    # an NCHW image is converted on the way in, not refused
    torch.testing.assert_close(compiled(image.contiguous())[0], expected[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(GraphError, match="memory_format must be"):
        fg.compile(model, memory_format="nhwc")


def test_channels_last_edges_train_like_torch():
    model = network("max", "global")
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.SGD(0.05), memory_format="channels_last")
    assert trainer.train_graph.inputs[0].type.channels_last
    oracle = model.to_torch()
    torch_optimizer = torch.optim.SGD(oracle.parameters(), lr=0.05)
    x = torch.randn(4, 3, 9, 8).contiguous(memory_format=torch.channels_last)
    assert_training_follows_torch(model, trainer, torch_optimizer, oracle, [(x, torch.tensor([0, 2, 1, 2]))] * 2)
