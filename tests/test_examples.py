"""The scripts in examples/ run, on small sizes, and show what they claim."""

import importlib.util
from pathlib import Path

from tests.conftest import KERNEL_ATOL

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sequence_classifier_learns_and_matches_torch():
    result = load("sequence_classifier").main(epochs=2, train=256, test=64, verbose=False)
    assert result["history"]["loss"][-1] < result["history"]["loss"][0]
    assert result["max_abs_difference_vs_torch"] <= KERNEL_ATOL
    assert result["training_step"].startswith("Training step at batch 64 (analytic): 6 forward launches")


def test_custom_cell_is_one_projection_and_one_persistent_kernel():
    result = load("custom_cell").main(steps=6, verbose=False)
    assert result["launches"] == 2 and result["kernels"][-1] == "mgu_cell_persistent"
    assert result["max_abs_difference"] <= KERNEL_ATOL


def test_a_pytorch_cnn_trains_in_a_pytorch_loop_on_fusegraph_kernels():
    example = load("torch_cnn_digits")
    result = example.main(epochs=2, limit=192, verbose=False)
    assert result["losses"][1] < result["losses"][0]
    assert result["max_gradient_gap"] <= KERNEL_ATOL
    assert result["state_dict_keys"] == list(example.DigitsCNN().state_dict())  # the PyTorch net's own names
