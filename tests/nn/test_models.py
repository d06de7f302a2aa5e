"""Whole models: the zoo, initialisation, parameters, summaries, and the interpreter vs torch."""

import pytest
import torch

import fusegraph as fg
from fusegraph.ir import verify
from tests.conftest import assert_matches_torch, feeds_for

ZOO = list(fg.zoo.MODELS)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_matches_torch(name):
    model = fg.zoo.get(name)
    verify(model.graph)
    torch_model = model.to_torch()
    assert model.count_params() == sum(p.numel() for p in torch_model.parameters())
    for batch in (1, 4):
        assert_matches_torch(model, feeds_for(model, batch, seed=batch, vocab=1000))


def test_zoo_output_shapes_and_lenet_counts():
    assert fg.zoo.lenet().output_shape == (10,)
    assert fg.zoo.lenet().count_params() == 107_786
    assert fg.zoo.lenet((1, 8, 8)).count_params() == 21_386
    assert fg.zoo.cnn1d().output_shape == (1,)
    assert fg.zoo.lstm_classifier().output_shape == (1,)
    assert fg.zoo.gru_forecaster().output_shape == (1,)
    assert fg.zoo.resnet_block().output_shape == (16, 8, 8)


def test_lenet_outputs_are_probabilities():
    model = fg.zoo.lenet((1, 8, 8))
    probs = model.reference(torch.randn(5, 1, 8, 8))
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(5))


def test_init_is_seeded_deterministic_and_follows_the_rules():
    model = fg.zoo.lenet()
    first = {k: v.clone() for k, v in model.init(seed=7).items()}
    again = model.init(seed=7)
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = model.init(seed=8)
    assert not torch.equal(first["conv1.weight"], other["conv1.weight"])
    assert list(first) == [n.name for n in model.graph.param_nodes]
    # He for the ReLU layers: std sqrt(2 / fan_in); Glorot uniform for the softmax layer
    assert abs(first["fc1.weight"].std().item() - (2 / 784) ** 0.5) < 0.005
    bound = (6 / (84 + 10)) ** 0.5
    assert first["fc3.weight"].abs().max() <= bound and first["fc3.weight"].abs().max() > 0.8 * bound
    assert torch.equal(first["fc1.bias"], torch.zeros(120))


def test_recurrent_init_is_uniform_in_pytorchs_range():
    params = fg.zoo.lstm_classifier(units=16).init(seed=1)
    for name in ("lstm.weight_ih", "lstm.weight_hh", "lstm.bias_ih", "lstm.bias_hh"):
        assert params[name].abs().max() <= 0.25 and params[name].abs().max() > 0.2


def test_load_params_copies_and_never_aliases():
    model = fg.zoo.cnn1d()
    source = {k: torch.randn_like(v) for k, v in model.params.items()}
    kept = {k: v.clone() for k, v in source.items()}
    model.load_params(source)
    model.params["conv1.weight"].zero_()
    assert all(torch.equal(source[k], kept[k]) for k in source)
    assert torch.equal(model.params["head.bias"], source["head.bias"])


def test_reference_does_not_modify_the_callers_tensor():
    model = fg.zoo.resnet_block()
    (x,) = feeds_for(model, 2)
    kept = x.clone()
    model.reference(x)
    assert torch.equal(x, kept)


def test_shared_layer_reuses_weights():
    x = fg.Input((4,))
    shared = fg.Dense(4, activation="tanh", name="shared")
    model = fg.Model(x, shared(shared(x)))
    assert model.count_params() == 20
    assert_matches_torch(model, feeds_for(model, 3))


def test_summary_lists_layers_shapes_and_totals():
    text = fg.zoo.lenet().summary(print_fn=None)
    assert "conv1 (Conv2D)" in text and "(None, 6, 28, 28)" in text and "156" in text
    assert "Total params: 107,786" in text


def test_auto_names_follow_layer_types():
    model = fg.Sequential([fg.Input((1, 8, 8)), fg.Conv2D(2, 3), fg.MaxPool2D(2), fg.Conv2D(2, 1),
                           fg.GlobalAvgPool2D(), fg.Dense(2)])
    assert [layer.name for layer in model.layers] == [
        "conv2d", "max_pool2d", "conv2d_1", "global_avg_pool2d", "dense"]
    assert "conv2d_1.weight" in model.params


def test_graph_text_shows_the_scan_body():
    text = str(fg.zoo.gru_forecaster().graph)
    assert "scan(%window" in text and "graph gru_cell(" in text and "reverse=False" in text
    assert "%h_next: f32[N,32] = add(%n, %z_delta)" in text
