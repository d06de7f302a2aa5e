"""The command line: every subcommand, its help, and what `import fusegraph` costs."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fusegraph as fg
from fusegraph.cli import main


def test_show_zoo_model(capsys):
    assert main(["show", "lenet"]) == 0
    out = capsys.readouterr().out
    assert "graph lenet(%image: f32[N,1,28,28])" in out
    assert "conv1 (Conv2D)" in out and "Total params: 107,786" in out


def test_show_model_from_file(tmp_path, capsys):
    path = tmp_path / "mine.py"
    path.write_text("import fusegraph as fg\n"
                    "def build():\n"
                    "    return fg.Sequential([fg.Input((3,)), fg.Dense(2, name='out')])\n")
    assert main(["show", f"{path}:build"]) == 0
    assert "out (Dense)" in capsys.readouterr().out


def test_show_unknown_model_is_a_clear_error(capsys):
    assert main(["show", "resnet50"]) == 2
    assert "unknown zoo model 'resnet50'" in capsys.readouterr().err


def test_demo_runs_as_a_console_command(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fusegraph.cli", "demo", "--task", "timeseries", "--epochs", "15",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "beats the naive forecast" in done.stdout
    assert str(tmp_path / "sunspots_forecast.png") in done.stdout


def test_validate_passes_and_show_kernels_prints_source(capsys):
    assert main(["validate", "resnet_block", "--batch", "2"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("PASS")
    assert main(["show", "--kernels", "cnn1d"]) == 0
    out = capsys.readouterr().out
    assert "def conv1d_bias_add_relu_max_pool1d(" in out and "@triton.jit" in out


def test_validate_fails_with_exit_code_1(capsys):
    # a tolerance nothing can meet on a softmax output proves FAIL is reachable and reported
    assert main(["validate", "lenet_digits", "--rtol", "0", "--atol", "-1"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_validate_takes_a_torch_module_with_example_inputs(tmp_path, capsys):
    """The user's own PyTorch model: imported with fg.from_torch, compiled, checked against the module itself."""
    path = tmp_path / "net.py"
    path.write_text("import torch\nfrom torch import nn\n"
                    "def build():\n"
                    "    torch.manual_seed(0)\n"
                    "    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),\n"
                    "                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 3))\n"
                    "    return net, torch.randn(2, 1, 4, 4)\n"
                    "def unsupported():\n"
                    "    return nn.Sequential(nn.GroupNorm(2, 4)), torch.randn(2, 4, 3)\n")
    assert main(["validate", f"{path}:build", "--batch", "3"]) == 0
    out = capsys.readouterr().out
    assert "against the torch module (Sequential)" in out and out.rstrip().endswith("PASS")
    assert main(["validate", f"{path}:unsupported"]) == 2
    assert "module '0' (GroupNorm) is not supported" in capsys.readouterr().err


def test_show_explain_reports_fusion(capsys):
    assert main(["show", "--explain", "lenet_digits", "--batch", "8"]) == 0
    out = capsys.readouterr().out
    assert "launches per forward: 5 fused, 17 unfused (12 saved)" in out
    assert "conv2d_bias_add_relu_max_pool2d" in out and "Not fused, and why:" in out


def test_show_graph_draws_before_and_after(tmp_path, capsys):
    import shutil

    target = tmp_path / "lenet.svg"
    assert main(["show", "--graph", "lenet", "-o", str(target)]) == 0
    note = capsys.readouterr().out
    written = target if shutil.which("dot") else target.with_suffix(".dot")
    assert written.exists() and str(written) in note
    text = written.read_text()
    assert "before fusion" in text and "after fusion" in text and "conv2d_bias_add_relu_max_pool2d" in text
    assert main(["show", "--graph", "lenet", "-o", str(tmp_path / "g.dot")]) == 0
    assert "digraph fusegraph" in (tmp_path / "g.dot").read_text()


def test_show_explain_with_a_loss_reports_the_training_step(capsys):
    assert main(["show", "--explain", "--loss", "mse", "cnn1d", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "Training step at batch 4" in out and "saved between forward and backward" in out


def test_an_exception_in_a_model_file_is_one_line_with_file_and_line(tmp_path, capsys):
    path = tmp_path / "broken.py"
    path.write_text("import fusegraph as fg\n"
                    "def build():\n"
                    "    sizes = {'a': 3}\n"
                    "    return fg.Sequential([fg.Input((sizes['b'],)), fg.Dense(2)])\n")
    assert main(["show", f"{path}:build"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fusegraph: error: ") and f"{path}:4: KeyError: 'b'" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    path.write_text("import fusegraph as fg\nmodel = fg.Sequential([fg.Input((3,)) fg.Dense(2)])\n")
    assert main(["validate", f"{path}:model"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: SyntaxError" in err and "Traceback" not in err


def test_bad_sizes_and_a_missing_output_folder_are_usage_errors(tmp_path, capsys):
    import pytest

    for argv in (["show", "--explain", "--batch", "-5", "lenet"], ["validate", "cnn1d", "--batch", "0"],
                 ["show", "--graph", "lenet", "-o", str(tmp_path / "missing" / "g.png")]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert "positive integer" in err or "does not exist" in err
        assert "Traceback" not in err


def test_train_a_conv1d_model_on_a_series_takes_the_window_from_its_sequence_axis(tmp_path, capsys):
    path = tmp_path / "conv.py"
    path.write_text("import fusegraph as fg\n"
                    "def build():\n"
                    "    return fg.Sequential([fg.Input((1, 16)), fg.Conv1D(4, 3, activation='relu'),\n"
                    "                          fg.GlobalAvgPool1D(), fg.Dense(1)])\n")
    saved = tmp_path / "conv.fg"
    assert main(["train", f"{path}:build", "--data", "sunspots", "--epochs", "1", "--batch-size", "64",
                 "-o", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "windows of 16 steps of the sunspots series, shaped (1, 16)" in out and "held-out:" in out
    trained = fg.load(saved)  # the weights it trained, kept
    assert "saved the trainer" in out and trained.epochs == 1 and trained.steps_taken > 0
    assert main(["train", f"{path}:build", "--data", "sunspots", "--window", "24"]) == 2
    assert "takes windows of 16 steps" in capsys.readouterr().err


def test_train_on_mnist_and_the_shape_its_images_need(tmp_path, capsys):
    path = tmp_path / "mlp.py"
    path.write_text("import fusegraph as fg\n"
                    "def build():\n"
                    "    return fg.Sequential([fg.Input((1, 28, 28)), fg.Flatten(), fg.Dense(10)])\n")
    assert main(["train", f"{path}:build", "--data", "mnist", "--epochs", "1", "--batch-size", "128", "--lr", "0.005"]) == 0
    out = capsys.readouterr().out
    assert "4000 training and 1000 held-out 28x28 MNIST digit images" in out
    held_out = float(out.split("held-out: ")[1].split("accuracy ")[1].split()[0])
    assert held_out >= 0.8  # a linear classifier after one epoch (85.1% seeded); chance is 0.1
    assert main(["train", "lenet_digits", "--data", "mnist"]) == 2
    assert "takes inputs of shape (1, 8, 8), but --data mnist's images are (1, 28, 28)" in capsys.readouterr().err


def test_tune_runs_the_gpu_sweeps_from_a_checkout_and_says_why_nothing_ran(tmp_path, capsys, monkeypatch):
    with monkeypatch.context() as outside:  # an installed package has no bench/: one clear error
        outside.chdir(tmp_path)
        outside.setitem(sys.modules, "bench", None)
        assert main(["tune", "--sweeps", "conv"]) == 2
        assert "runs from a fusegraph source checkout" in capsys.readouterr().err
        assert main(["tune", "--help"]) == 0  # what it is, even where it cannot run
        assert "usage: fusegraph tune" in capsys.readouterr().out
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert main(["tune", "--sweeps", "conv", "conv_grad", "--budget", "1"]) == 0  # its own options, passed through
    assert "needs a CUDA GPU; nothing measured" in capsys.readouterr().err


def test_validate_compares_a_model_built_with_a_list_of_one_output(tmp_path, capsys):
    """outputs=[y]: the compiled model returns [y] and its torch module y; output 0 is the whole of y."""
    path = tmp_path / "listed.py"
    path.write_text("import fusegraph as fg\n"
                    "def build():\n"
                    "    x = fg.Input((4,))\n"
                    "    return fg.Model(x, [fg.Dense(3, activation='tanh')(x)])\n")
    assert main(["validate", f"{path}:build", "--batch", "5"]) == 0
    assert capsys.readouterr().out.strip().endswith("PASS")
    from fusegraph.checks import compare

    y = torch.ones(5, 3)
    assert compare([y], y, 1e-4, 1e-5) == [(0.0, 0.0, True)]
    assert not compare([y], y[:1], 1e-4, 1e-5)[0][2] and not compare([y, y], y, 1e-4, 1e-5)[0][2]


def test_every_help_answers_without_importing_torch():
    """`fusegraph --help` and each command's --help parse no model and import no torch (they answer at once)."""
    script = ("import sys\nfrom fusegraph.cli import main\n"
              "for argv in ([], ['demo'], ['train'], ['show'], ['validate'], ['tune']):\n"
              "    try:\n        main([*argv, '--help'])\n    except SystemExit as done:\n"
              "        assert done.code == 0, argv\n"
              "print('torch imported:', 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: fusegraph [-h] {demo,train,show,tune,validate}" in done.stdout
    assert "usage: fusegraph tune" in done.stdout and "--loss {cross_entropy" in done.stdout
    assert done.stdout.rstrip().endswith("torch imported: False")


def test_the_names_help_offers_are_the_registries():
    from fusegraph import cli
    from fusegraph.passes.autodiff import LOSSES

    assert cli.ZOO_MODELS == tuple(fg.zoo.MODELS) and cli.LOSSES == LOSSES


def test_import_fusegraph_is_lazy_and_complete():
    """Every public name resolves (the table in fusegraph/__init__.py names real homes)."""
    for name in fg.__all__:
        assert getattr(fg, name) is not None
    assert "Conv2D" in dir(fg) and fg.load.__module__ == "fusegraph.saving"
    with pytest.raises(AttributeError, match="no attribute 'Conv3D'"):
        getattr(fg, "Conv3D")  # noqa: B009


def test_demo_refuses_a_model_or_augmentation_its_task_does_not_take(capsys):
    assert main(["demo", "--task", "mnist", "--model", "gru"]) == 2
    assert main(["demo", "--task", "timeseries", "--model", "bigru"]) == 2
    assert main(["demo", "--task", "sentiment", "--augment"]) == 2
    err = capsys.readouterr().err
    assert "does not apply to --task mnist" in err and "is a sentiment model" in err and "Traceback" not in err
    assert "it does not apply to --task sentiment" in err
