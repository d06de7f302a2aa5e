"""Saving, loading and resuming (fusegraph/saving.py, nn/definition.py, runtime/checkpoint.py): a model
comes back with the same graph and weights; a trainer saved after k steps and loaded in another
process takes the uninterrupted run's steps bit for bit (interpreter; fp32 with dropout and batch norm,
fp16 with its loss scale); a file that is not exactly a fusegraph save is one CheckpointError, and a
pickle planted in one never runs."""

import copy
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fusegraph as fg
from fusegraph import saving
from tests.conftest import feeds_for, targets_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", list(fg.zoo.MODELS))
def test_every_zoo_model_comes_back_with_its_graph_and_weights(name, tmp_path):
    model = fg.zoo.get(name)
    model.init(7)
    model.save(tmp_path / "m.fg")
    back = fg.load(tmp_path / "m.fg")
    assert isinstance(back, fg.Model) and str(back.graph) == str(model.graph)
    assert back.params.keys() == model.params.keys()
    assert all(torch.equal(back.params[k], v) for k, v in model.params.items())
    feeds = feeds_for(model, 2, vocab=10)
    with torch.no_grad():
        torch.testing.assert_close(back.to_torch()(*feeds), model.to_torch()(*feeds), rtol=0, atol=0)


def test_layer_arguments_and_names_survive_a_save(tmp_path):
    """Every argument a layer was built with (not only what config() shows), names given or assigned."""
    x = fg.Input((2, 9, 9), name="pixels")
    h = fg.Conv2D(3, (3, 2), strides=2, padding=(1, 2), dilation=1, use_bias=False, activation="leaky_relu")(x)
    h = fg.Activation("leaky_relu", negative_slope=0.3)(h)
    h = fg.Dropout(0.25, seed=11)(fg.BatchNorm2D(eps=1e-3, momentum=0.2, name="norm")(h))
    y = fg.Dense(4, use_bias=False)(fg.Flatten()(fg.MaxPool2D(2, padding="same")(h)))
    model = fg.Model(x, [y, h], name="many_arguments")
    model.save(tmp_path / "m.fg")
    back = fg.load(tmp_path / "m.fg")
    assert str(back.graph) == str(model.graph) and back.name == "many_arguments"
    assert [layer.name for layer in back.layers] == [layer.name for layer in model.layers]


def test_a_model_from_torch_keeps_its_torch_names(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3))
    model = fg.from_torch(net, [torch.randn(2, 1, 8, 8)])
    model.save(tmp_path / "m.fg")
    back = fg.load(tmp_path / "m.fg")
    assert back.torch_names == model.torch_names and str(back.graph) == str(model.graph)


def bn_dropout_cnn() -> fg.Model:
    model = fg.Sequential([fg.Input((1, 8, 8)), fg.Conv2D(4, 3, padding="same"), fg.BatchNorm2D(),
                           fg.Activation("relu"), fg.MaxPool2D(2), fg.Flatten(), fg.Dropout(0.3), fg.Dense(10)],
                          name="bn_dropout_cnn")
    model.init(3)
    return model


def batches(count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(5)
    return [(torch.randn(6, 1, 8, 8, generator=generator), torch.randint(0, 10, (6,), generator=generator))
            for _ in range(count)]


RESUME = """
import sys, torch, fusegraph as fg
from tests.runtime.test_saving import batches
for saved, out in zip(sys.argv[1::2], sys.argv[2::2]):
    trainer = fg.load(saved)
    losses = [trainer.train_step(x, y) for x, y in batches(5)[2:]]
    torch.save({"losses": torch.tensor(losses, dtype=torch.float64), "state": trainer.state_dict()}, out)
"""


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")
def test_a_trainer_saved_after_two_steps_continues_in_a_fresh_process_bit_for_bit(tmp_path):
    """fp32 (dropout draws its masks from the step count; batch norm's running statistics) and fp16
    (its loss scale and growth tracker too): three more steps after loading equal the uninterrupted run's."""
    runs = {"fp32": dict(optimizer=fg.optim.Adam(lr=1e-3)),
            "fp16": dict(optimizer=fg.optim.SGD(lr=0.05, momentum=0.9), precision="fp16",
                         loss_scale=fg.LossScale(init_scale=2.0 ** 20, growth_interval=2))}
    expected = {}
    for name, options in runs.items():
        trainer = fg.compile(bn_dropout_cnn(), loss="cross_entropy", **options)
        data = batches(5)
        for x, y in data[:2]:
            trainer.train_step(x, y)
        trainer.save(tmp_path / f"{name}.fg")
        expected[name] = ([trainer.train_step(x, y) for x, y in data[2:]], trainer.state_dict())
    script = tmp_path / "resume.py"
    script.write_text(RESUME)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    files = [str(tmp_path / f"{name}.{suffix}") for name in expected for suffix in ("fg", "pt")]
    subprocess.run([sys.executable, str(script), *files], cwd=ROOT, env=env, check=True, timeout=300)  # one fresh process
    for name, (losses, state) in expected.items():
        resumed = torch.load(tmp_path / f"{name}.pt", weights_only=True)
        assert resumed["losses"].tolist() == losses, name
        assert_same_state(resumed["state"], state)
    assert expected["fp16"][1]["loss_scale"] != 2.0 ** 20  # the scale moved: its state mattered


def assert_same_state(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want:
        if key == "params":
            assert all(torch.equal(got[key][n], t) for n, t in want[key].items()), key
        elif key == "optimizer":
            for buffer, per_param in want[key]["state"].items():
                assert all(torch.equal(got[key]["state"][buffer][n], t) for n, t in per_param.items()), buffer
        else:
            assert got[key] == want[key], key


def test_state_dict_round_trips_through_torch_load_weights_only(tmp_path):
    """Another trainer of a freshly built model takes the state (via torch.save and a weights_only load)
    and continues as the first does; model.params follows it."""
    data = batches(4)
    first = fg.compile(bn_dropout_cnn(), loss="cross_entropy", optimizer=fg.optim.RMSprop(lr=1e-3, momentum=0.5))
    for x, y in data[:2]:
        first.train_step(x, y)
    torch.save(first.state_dict(), tmp_path / "state.pt")
    model = bn_dropout_cnn()
    model.init(99)
    second = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.RMSprop(lr=1e-3, momentum=0.5))
    second.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert all(torch.equal(model.params[k], v) for k, v in first.host_weights()[0].items())
    assert [second.train_step(x, y) for x, y in data[2:]] == [first.train_step(x, y) for x, y in data[2:]]
    assert torch.equal(second.flat, first.flat) and second.steps_taken == first.steps_taken == 4


def test_a_state_that_does_not_fit_is_one_error_naming_what_differs():
    trainer = fg.compile(bn_dropout_cnn(), loss="cross_entropy", optimizer=fg.optim.Adam())
    other = fg.compile(fg.zoo.lenet_digits(), loss="cross_entropy", optimizer=fg.optim.Adam())
    with pytest.raises(fg.CheckpointError,
                       match="of model 'lenet', whose graph differs from this trainer's model 'bn_dropout_cnn'"):
        trainer.load_state_dict(other.state_dict())
    sgd = fg.compile(bn_dropout_cnn(), loss="cross_entropy", optimizer=fg.optim.SGD(lr=0.1))
    with pytest.raises(fg.CheckpointError, match="saved with optimizer SGD, this trainer has Adam"):
        trainer.load_state_dict(sgd.state_dict())
    old = {**trainer.state_dict(), "fusegraph_state_version": 0}
    with pytest.raises(fg.CheckpointError, match="version 0; this fusegraph reads version 1"):
        trainer.load_state_dict(old)
    before = trainer.state_dict()
    broken = trainer.state_dict()
    broken["params"].pop("dense.bias")
    with pytest.raises(fg.CheckpointError, match="parameters differ from the trainer's: \\['dense.bias'\\]"):
        trainer.load_state_dict(broken)
    assert_same_state(trainer.state_dict(), before)  # refused before anything changed


class Planted:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp/fusegraph-planted-pickle-ran")


def test_files_that_are_not_exactly_a_save_are_refused_and_never_run(tmp_path):
    model = bn_dropout_cnn()
    good = tmp_path / "good.fg"
    model.save(good)
    data = good.read_bytes()
    (tmp_path / "truncated.fg").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.fg").write_bytes(os.urandom(4096))
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.fg")
    MARKER.unlink(missing_ok=True)
    (tmp_path / "planted.fg").write_bytes(pickle.dumps({"format": "fusegraph", "version": 1, "kind": "model",
                                                        "body": Planted(), "tensors": {}}))
    torch.save({"format": "fusegraph", "version": 1, "kind": "model", "body": Planted(), "tensors": {}},
               tmp_path / "planted_torch.fg")
    for name, message in [("truncated", "damaged"), ("noise", "not a fusegraph save"), ("foreign", "no fusegraph header"),
                          ("planted", "not a fusegraph save"), ("planted_torch", "not a fusegraph save"),
                          ("missing", "no such file")]:
        with pytest.raises(fg.CheckpointError, match=message):
            fg.load(tmp_path / f"{name}.fg")
    assert not MARKER.exists()
    body = json.loads(torch.load(good, weights_only=True)["body"])
    body["definition"]["layers"]["dense"]["class"] = "Nonesuch"
    saving.write(tmp_path / "unknown.fg", "model", body, {})
    with pytest.raises(fg.GraphError, match="Nonesuch, which is not one of fusegraph's layers; pass it"):
        fg.load(tmp_path / "unknown.fg")


def test_a_write_cut_short_keeps_the_last_good_file(tmp_path, monkeypatch):
    path = tmp_path / "m.fg"
    model = bn_dropout_cnn()
    model.save(path)
    good = path.read_bytes()

    def dies_midway(payload, stream):
        stream.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(saving.torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        fg.zoo.lenet_digits().save(path)
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["m.fg"]


def test_fit_saves_each_epoch_and_continues_from_it_as_the_uninterrupted_fit(tmp_path):
    """fit(checkpoint=...) after each epoch (and the best epoch, with early stopping); a trainer loaded
    from the epoch-2 file and fit on with initial_epoch=2 ends where the uninterrupted 4-epoch fit ends."""
    x, y = torch.cat([b[0] for b in batches(4)]), torch.cat([b[1] for b in batches(4)])
    validation = (x[:6], y[:6])
    whole = fg.compile(bn_dropout_cnn(), loss="cross_entropy", optimizer=fg.optim.Adam(lr=1e-3))
    history = whole.fit(x, y, epochs=4, batch_size=8, verbose=False, validation_data=validation)
    cut = fg.compile(bn_dropout_cnn(), loss="cross_entropy", optimizer=fg.optim.Adam(lr=1e-3))
    cut.fit(x, y, epochs=2, batch_size=8, verbose=False, validation_data=validation, checkpoint=tmp_path / "run.fg",
            early_stopping=5)
    assert (tmp_path / "run.fg").is_file() and (tmp_path / "run.best.fg").is_file()
    resumed = fg.load(tmp_path / "run.fg")
    assert resumed.epochs == 2 and resumed.history["loss"] == history["loss"][:2]
    resumed.fit(x, y, epochs=4, batch_size=8, verbose=False, validation_data=validation, initial_epoch=resumed.epochs)
    assert resumed.history == history and torch.equal(resumed.flat, whole.flat) and resumed.epochs == 4
    with pytest.raises(fg.InputError, match="initial_epoch must be an integer from 0 to epochs - 1"):
        resumed.fit(x, y, epochs=2, initial_epoch=2)


def test_a_trainer_compiled_with_its_options_comes_back_with_them(tmp_path):
    trainer = fg.compile(bn_dropout_cnn(), loss="cross_entropy", optimizer=fg.optim.Adam(lr=2e-3, betas=(0.8, 0.95),
                                                                                          amsgrad=True),
                         fuse=False, memory_format="channels_last", fp32_precision="ieee")
    trainer.train_step(*batches(1)[0])
    trainer.save(tmp_path / "t.fg")
    back = fg.load(tmp_path / "t.fg")
    assert back.options == trainer.options and back.optimizer == trainer.optimizer and back.steps_taken == 1
    assert back.options.fuse is False and back.options.memory_format == "channels_last"
    assert back.options.loss == "cross_entropy" and back.target.fp32_dot == "ieee"
    feeds, target = feeds_for(back.model, 3), targets_for(back.model, "cross_entropy", 3)
    assert back.loss_and_grads(feeds, target)[0] == trainer.loss_and_grads(feeds, target)[0]


def test_models_compiled_models_trainers_and_modules_copy_and_pickle_independently():
    """The "keep the best model" idiom: copy.deepcopy and pickle give working objects of their own."""
    data = batches(3)
    trainer = fg.compile(bn_dropout_cnn(), loss="cross_entropy", optimizer=fg.optim.SGD(lr=0.1, momentum=0.9))
    trainer.train_step(*data[0])
    for clone in (copy.deepcopy, lambda obj: pickle.loads(pickle.dumps(obj))):
        twin = clone(trainer)
        assert twin.train_step(*data[1]) == trainer.train_step(*data[1]) and torch.equal(twin.flat, trainer.flat)
        twin.train_step(*data[2])
        assert not torch.equal(twin.flat, trainer.flat)  # its own weights: the original did not move
        model = bn_dropout_cnn()
        copied = clone(model)
        copied.params["dense.bias"].add_(1.0)
        assert not torch.equal(copied.params["dense.bias"], model.params["dense.bias"])
        compiled = fg.compile(model)
        x = data[0][0]
        torch.testing.assert_close(clone(compiled)(x), compiled(x), rtol=0, atol=0)
        module = fg.compile(bn_dropout_cnn(), loss="cross_entropy").to_module().eval()
        with torch.no_grad():
            module.get_parameter("dense.bias").add_(0.5)  # as torch.optim would: the copy carries it
            torch.testing.assert_close(clone(module)(x), module(x), rtol=0, atol=0)


def test_load_params_reaches_the_trainers_and_compiled_models_made_from_the_model():
    """No stale weights: a trainer takes them (its next step starts there, and model.params goes on
    following it), and so does an inference model compiled before."""
    data = batches(3)
    model = bn_dropout_cnn()
    start = {name: t.clone() for name, t in model.params.items()}
    compiled = fg.compile(model)
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.SGD(lr=0.1))
    trainer.train_step(*data[0])
    model.load_params(start)
    assert all(torch.equal(trainer.host_weights()[0][k], v) for k, v in start.items())
    trainer.train_step(*data[1])  # from the loaded weights: the Model shows where the step took them
    assert not torch.equal(model.params["dense.weight"], start["dense.weight"])
    assert all(torch.equal(model.params[k], v) for k, v in trainer.host_weights()[0].items())  # still following
    other = bn_dropout_cnn()
    other.init(11)
    model.load_params(other.params)
    x = data[1][0]
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), other.to_torch()(x), rtol=1e-4, atol=1e-5)


def test_a_module_whose_parameters_were_replaced_runs_on_them_on_every_path():
    """load_state_dict(assign=True) and param.data = ... give the module new tensors: inference under
    no_grad uses them too (it used to run the compiled model's old weights); a dtype conversion is
    refused with one error naming the parameter."""
    model = bn_dropout_cnn()
    module = fg.compile(model, loss="cross_entropy").to_module().eval()
    other = bn_dropout_cnn()
    other.init(21)
    oracle = other.to_torch().eval()
    x = batches(1)[0][0]
    replacement = {k: t.clone() for k, t in fg.compile(other, loss="cross_entropy").to_module().state_dict().items()}
    module.load_state_dict(replacement, assign=True)
    with torch.no_grad():
        torch.testing.assert_close(module(x), oracle(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(module(x), oracle(x), rtol=1e-4, atol=1e-5)  # the differentiable path agrees
    module.get_parameter("dense.weight").data = torch.zeros(10, 64)
    with torch.no_grad():
        torch.testing.assert_close(module(x), module.get_parameter("dense.bias").expand(6, 10), rtol=0, atol=0)
    for convert in (torch.nn.Module.half, torch.nn.Module.double):
        with torch.no_grad(), pytest.raises(fg.GraphError, match="conv2d.weight is now .* compiled for float32"):
            convert(copy.deepcopy(module))(x)


class Rectify(fg.Layer):
    """A layer of the user's own: saved by class name and arguments, found again through custom_layers."""

    def __init__(self, negative: bool = False, name: str | None = None) -> None:
        super().__init__(name)
        self.negative = negative

    def emit(self, b, inputs, name):
        return [b.op("relu", list(inputs), name=name, layer=name)]

    def torch_module(self, params):
        return torch.nn.ReLU()


def test_a_layer_of_ones_own_comes_back_through_custom_layers(tmp_path):
    x = fg.Input((4,))
    model = fg.Model(x, fg.Dense(2)(Rectify(negative=True)(x)))
    model.save(tmp_path / "m.fg")
    with pytest.raises(fg.GraphError, match="Rectify, which is not one of fusegraph's layers; pass it"):
        fg.load(tmp_path / "m.fg")
    back = fg.load(tmp_path / "m.fg", custom_layers={"Rectify": Rectify})
    assert str(back.graph) == str(model.graph) and back.layers[0].negative is True
