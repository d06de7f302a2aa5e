"""CompiledModel: inputs checked, callers' tensors untouched, launches counted, memory reused,
kernel sources cached on disk and rebuilt when corrupt."""

import pytest
import torch

import fusegraph as fg
from fusegraph.kernels import cache
from tests.conftest import assert_compiled_matches_torch, feeds_for


@pytest.fixture(scope="module")
def lenet():
    model = fg.zoo.lenet((1, 8, 8))
    return model, fg.compile(model, fuse=False)


@pytest.mark.parametrize("bad,error", [
    (torch.zeros(2, 1, 8, 12), r"input .image. expects shape \(batch, 1, 8, 8\) float32, got \(2, 1, 8, 12\)"),
    (torch.zeros(2, 1, 8, 8, dtype=torch.float64), "expects dtype float32"),
    (torch.zeros(1, 8, 8), "the batch comes first"),
    ([torch.zeros(2, 1, 8, 8)] * 2, "takes 1 input"),
])
def test_wrong_inputs_are_clear_errors(lenet, bad, error):
    _, cm = lenet
    with pytest.raises(fg.InputError, match=error):
        cm(bad)


def test_wrong_device_is_a_clear_error(lenet):
    _, cm = lenet
    with pytest.raises(fg.InputError, match=r"on meta but the model was compiled for cpu"):
        cm(torch.zeros(2, 1, 8, 8, device="meta"))


def test_callers_tensor_is_not_modified_and_non_contiguous_input_works(lenet):
    model, cm = lenet
    x = torch.randn(1, 3, 8, 8).transpose(0, 1)[:, :1].contiguous().transpose(2, 3)  # strided view
    kept = x.clone()
    torch.testing.assert_close(cm(x), model.to_torch()(x), rtol=1e-4, atol=1e-5)
    assert torch.equal(x, kept)


def test_out_of_range_token_ids_never_reach_a_kernel():
    model = fg.Sequential([fg.Input((3,), dtype="int64"), fg.Embedding(5, 2, name="emb")])
    cm = fg.compile(model)
    with pytest.raises(fg.InputError, match=r"layer 'emb'.*\[0, 5\).*\[-1, 4\]"):
        cm(torch.tensor([[0, 4, -1]]))


def test_one_launch_per_kernel_node_and_memory_reuse(lenet):
    model, cm = lenet
    cm(torch.randn(2, 1, 8, 8))
    kernel_nodes = [n for n in model.graph.compute_nodes if n.op not in ("reshape", "dropout")]
    assert cm.last_launches == len(kernel_nodes) == len(cm.kernels)
    report = cm.memory_report(64)
    assert report["planned_bytes"] < report["unplanned_bytes"] / 2


def test_outputs_are_fresh_tensors_each_call(lenet):
    _, cm = lenet
    x = torch.randn(2, 1, 8, 8)
    first = cm(x)
    kept = first.clone()
    cm(torch.randn(2, 1, 8, 8))
    assert torch.equal(first, kept)


def test_kernels_are_readable_triton_source(lenet):
    _, cm = lenet
    conv = next(s for s in cm.kernels if "def conv2d" in s)
    assert "@triton.jit" in conv and "tl.dot" in conv and "BLOCK_M: tl.constexpr" in conv


def test_cache_rebuilds_a_corrupt_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSEGRAPH_CACHE", str(tmp_path))
    source = "x = 1\n"
    path = cache.store("probe", source)
    assert path.parent == tmp_path and path.read_text() == source
    path.write_text("x = ")  # truncated by a crash
    assert cache.store("probe", source).read_text() == source


def test_compiled_model_uses_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSEGRAPH_CACHE", str(tmp_path))
    model = fg.Sequential([fg.Input((5,)), fg.Dense(3, activation="tanh", name="fc")])
    assert_compiled_matches_torch(model, feeds_for(model, 2), fuse=False)
    assert_compiled_matches_torch(model, feeds_for(model, 2))
    files = sorted(p.name for p in tmp_path.glob("*.py"))
    assert any(f.startswith("matmul_") for f in files) and any(f.startswith("tanh_") for f in files)
    assert any(f.startswith("matmul_bias_add_tanh_") for f in files)


def test_training_a_half_model_and_bfloat16_in_the_interpreter_are_clear_errors():
    model = fg.Sequential([fg.Input((4,), dtype="float16"), fg.Dense(3)])
    with pytest.raises(fg.GraphError, match="training keeps float32 master weights, but %dense.weight is float16; "
                                            "build the model with dtype='float32' and train it with precision="):
        fg.compile(model, loss="mse")
    brain = fg.Sequential([fg.Input((4,), dtype="bfloat16"), fg.Dense(3)])
    with pytest.raises(fg.GraphError, match="bfloat16 runs on the GPU only"):
        fg.compile(brain)


def test_compile_rejects_non_models_and_bad_devices():
    with pytest.raises(fg.GraphError, match="takes a fusegraph Model"):
        fg.compile(torch.nn.Linear(2, 2))
    with pytest.raises(fg.GraphError, match="device must be"):
        fg.compile(fg.zoo.cnn1d(), device="tpu")
    with pytest.raises(fg.GraphError, match="cuda_graphs=True needs the GPU"):
        fg.compile(fg.zoo.cnn1d(), cuda_graphs=True)


def test_fp32_precision_choices():
    model = fg.Sequential([fg.Input((5,)), fg.Dense(3)])
    with pytest.raises(fg.GraphError, match="fp32_precision must be one of ieee, tf32x3, tf32"):
        fg.compile(model, fp32_precision="fp32")
    for choice in ("ieee", "tf32", "tf32x3"):  # the interpreter computes fp32 dots exactly whatever is asked
        compiled = assert_compiled_matches_torch(model, feeds_for(model, 2), fp32_precision=choice)
        assert compiled.target.fp32_dot == choice and compiled.target.precision(torch.float32) == "ieee"
