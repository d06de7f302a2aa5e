"""The command line: `fusegraph show` and `fusegraph demo`."""

import subprocess
import sys

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
    assert "def conv1d_fwd_fused_bias_add_relu_max_pool1d(" in out and "@triton.jit" in out


def test_validate_fails_with_exit_code_1(capsys):
    # a tolerance nothing can meet on a softmax output proves FAIL is reachable and reported
    assert main(["validate", "lenet_digits", "--rtol", "0", "--atol", "-1"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_show_explain_reports_fusion(capsys):
    assert main(["show", "--explain", "lenet_digits", "--batch", "8"]) == 0
    out = capsys.readouterr().out
    assert "launches per forward: 5 fused, 17 unfused (12 saved)" in out
    assert "conv2d_fwd_fused_bias_add_relu_max_pool2d" in out and "Not fused, and why:" in out


def test_show_graph_draws_before_and_after(tmp_path, capsys):
    import shutil

    target = tmp_path / "lenet.svg"
    assert main(["show", "--graph", "lenet", "-o", str(target)]) == 0
    note = capsys.readouterr().out
    written = target if shutil.which("dot") else target.with_suffix(".dot")
    assert written.exists() and str(written) in note
    text = written.read_text()
    assert "before fusion" in text and "after fusion" in text and "conv2d_fwd_fused_bias_add_relu_max_pool2d" in text
    assert main(["show", "--graph", "lenet", "-o", str(tmp_path / "g.dot")]) == 0
    assert "digraph fusegraph" in (tmp_path / "g.dot").read_text()


def test_show_explain_with_a_loss_reports_the_training_step(capsys):
    assert main(["show", "--explain", "--loss", "mse", "cnn1d", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "Training step at batch 4" in out and "saved between forward and backward" in out
