"""Every kernel the zoo generates, launched as a GPU would launch it (GPU block sizes, tiles spread
over 132 SMs, tuned small-GEMM launches, tf32x3 dots), compiles for an sm_90 GPU, every tl.dot in
it runs on tensor cores (fp16 / bf16, and fp32 as tf32x3), and none spills registers beyond a
small stack. No GPU needed: launches are recorded
instead of run, then Triton's compiler builds each one in a separate process
(tests/kernels/gpu_compile.py), down to machine code through the ptxas it ships."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fusegraph as fg
from fusegraph.kernels import LaunchCounter, Target, codegen, load_kernel, target, tuning
from fusegraph.kernels import optim as optim_kernels
from fusegraph.kernels.scan import MAX_WIDTH
from fusegraph.passes import CompileOptions, run_pipeline
from fusegraph.passes.autodiff import autodiff
from fusegraph.passes.fold_batch_norms import derived_parameters, fold
from fusegraph.passes.mixed_precision import LOSS_SCALE
from fusegraph.runtime.plan import TORCH_DTYPE
from fusegraph.runtime.program import Program
from tests.conftest import feeds_for, targets_for
from tests.kernels import gpu_compile

ROOT = Path(__file__).resolve().parents[2]
LOSSES = fg.zoo.LOSSES
CUDA = Target("cuda")


def describe(args) -> tuple:
    """Each positional argument as the compiler's signature sees it, specialized as Triton's launcher
    does: an aligned pointer or an integer multiple of 16 as 16-divisible, an integer 1 as a constant.
    That tells the compiler which loads are contiguous, so vectorized and copied asynchronously."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    kinds = []
    for arg in args:
        if arg is None:
            kinds.append(("none", "constexpr", False))  # an operand the kernel's pointer path reads instead
        elif isinstance(arg, TensorDescriptor):
            dtype = gpu_compile.POINTER_TYPES[str(arg.base.dtype).removeprefix("torch.")]
            kinds.append(("descriptor", f"tensordesc<{dtype}[{','.join(map(str, arg.block_shape))}]>", False))
        elif isinstance(arg, torch.Tensor):
            kinds.append(("pointer", str(arg.dtype).removeprefix("torch."), arg.data_ptr() % 16 == 0))
        elif isinstance(arg, bool):
            kinds.append(("scalar", "i1", False))
        elif arg == 1 and isinstance(arg, int):
            kinds.append(("one", "i32", False))  # the launcher passes a 1 as a constant (a unit stride)
        elif isinstance(arg, int):
            kinds.append(("scalar", "i64" if abs(arg) >= 2**31 else "i32", arg % 16 == 0))
        elif isinstance(arg, float):
            kinds.append(("scalar", "fp32", False))
        else:
            raise TypeError(f"a kernel argument of type {type(arg).__name__}")
    return tuple(kinds)


class Launches(dict):
    """Recorded launches (keys), and the test run's compile caches they are judged with."""

    def __init__(self, cache: Path) -> None:
        super().__init__()
        self.cache = cache


@pytest.fixture(scope="session")
def sm90_cache(tmp_path_factory) -> Path:
    """One Triton cache and one folder of verdicts for the whole test run: a kernel launched the same way
    by several tests compiles once."""
    return tmp_path_factory.mktemp("sm90-compile-cache")


@pytest.fixture
def launches(monkeypatch, sm90_cache) -> Launches:
    """Kernel launches recorded, not run, with the launch choices of a 132-SM sm_90 GPU."""
    monkeypatch.setattr(target, "sm_count", lambda: 132)
    monkeypatch.setattr(target, "tensor_cores_take_tf32", lambda: True)
    monkeypatch.setattr(target, "tensor_memory_accelerator", lambda: True)
    recorded = Launches(sm90_cache)

    def record(kernel, grid):
        def launch(*args, **kwargs):
            recorded[(kernel.source.name, kernel.source.source, describe(args), tuple(sorted(kwargs.items())))] = None
        return launch

    monkeypatch.setattr(codegen.Kernel, "__getitem__", record)
    return recorded


def run_as_gpu(graph: fg.ir.Graph, feeds: list[torch.Tensor], params: dict, memory_format: str = "contiguous",
               half: str | None = None) -> None:
    """`half`: in mixed precision (float16 with its loss scale); Program casts the float32 weights and feeds."""
    # NOTE: any loss: the pipeline reads only whether float16 training scales it
    options = CompileOptions(memory_format=memory_format, precision=half, loss="mse" if half else None)
    compiled = run_pipeline(graph, options, training=True)[0]
    folded = {name: fold(recipe, params) for name, recipe in derived_parameters(compiled)}  # batch norms folded
    feeds = [f.to(TORCH_DTYPE[v.type.dtype]) for f, v in zip(feeds, compiled.inputs, strict=True)]
    Program(compiled, CUDA, LaunchCounter()).run(feeds, {**params, **folded, LOSS_SCALE: torch.ones(())})


def launched_with(kwargs: dict, configs) -> bool:
    """Whether a launch took one of the tuning tables' `configs` (every GPU launch passes its warps and
    stages: the tuned ones are known by the whole entry)."""
    return any(all(kwargs.get(k.upper() if k.startswith("block") else k) == v for k, v in config.items())
               for config in configs)


def assert_all_compile(launches: Launches, tmp_path: Path, pipelined: bool = False) -> None:
    """Every recorded launch compiles for sm_90 (see tests/kernels/gpu_compile.py); `pipelined`: each
    with num_stages > 1 also copies its operands asynchronously (aligned real-size shapes only). Launches
    judged by an earlier test of this run keep their verdict; the others compile on every core."""
    assert launches, "nothing was launched"
    path = tmp_path / "launches.pkl"
    path.write_bytes(pickle.dumps([(name, source, list(args), dict(kw)) for name, source, args, kw in launches]))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(launches.cache / "triton")
    env["FUSEGRAPH_SM90_VERDICTS"] = str(launches.cache / "verdicts")
    command = [sys.executable, "-m", "tests.kernels.gpu_compile", str(path), *(["--pipelined"] if pipelined else [])]
    result = subprocess.run(command, cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert f"compiled {len(launches)} of {len(launches)} kernels for sm_90" in result.stdout


@pytest.mark.parametrize("name", list(fg.zoo.MODELS))
def test_zoo_forward_and_training_kernels_compile_for_sm90(name, launches, tmp_path):
    model = fg.zoo.get(name)
    feeds = feeds_for(model, 64, vocab=1000)
    run_as_gpu(model.graph, feeds, model.params)
    loss = LOSSES[name]
    run_as_gpu(autodiff(model.graph, loss), [*feeds, targets_for(model, loss, 64)], model.params)
    assert_all_compile(launches, tmp_path)


def test_half_precision_benchmark_blocks_and_optimizers_compile_for_sm90(launches, tmp_path):
    for dtype in ("float16", "bfloat16"):
        for name in ("lenet", "cnn1d", "gru_forecaster", "resnet_block"):
            model = getattr(fg.zoo, name)(dtype=dtype)
            run_as_gpu(model.graph, [f.to(getattr(torch, dtype)) for f in feeds_for(model, 64)], model.params)
    for dtype in ("float32", "float16"):  # the benchmark's conv block, batch 256
        model = fg.Sequential([fg.Input((1, 28, 28), dtype=dtype), fg.Conv2D(32, 3, padding="same", activation="relu"),
                               fg.MaxPool2D(2)])
        run_as_gpu(model.graph, [torch.randn(256, 1, 28, 28).to(getattr(torch, dtype))], model.params)
    for cell in (fg.LSTM, fg.GRU):  # the tuned small-GEMM step and the one-kernel backward step at width 256
        half = fg.Sequential([fg.Input((4, 128), dtype="float16"), cell(256, return_sequences=True)])
        run_as_gpu(half.graph, [f.half() for f in feeds_for(half, 64)], half.params)
        model = fg.Sequential([fg.Input((4, 128)), cell(256, return_sequences=True), fg.Flatten(), fg.Dense(3)])
        feeds = feeds_for(model, 64)
        run_as_gpu(autodiff(model.graph, "mse"), [*feeds, targets_for(model, "mse", 64)], model.params)
    for dtype, width in MAX_WIDTH.items():  # the persistent scan at its widest, both directions
        wide = fg.Sequential([fg.Input((4, 48), dtype=dtype),
                              fg.LSTM(width, return_sequences=True, bidirectional=True)])
        run_as_gpu(wide.graph, [f.to(getattr(torch, dtype)) for f in feeds_for(wide, 64)], wide.params)
    flat = torch.zeros(1000)
    squares = torch.zeros(())
    for optimizer in (fg.optim.SGD(lr=0.1, momentum=0.9), fg.optim.Adam(amsgrad=True), fg.optim.RMSprop(centered=True),
                      fg.optim.AdamW(clip_grad_norm=1.0), fg.optim.Adamax(), fg.optim.NAdam(decoupled_weight_decay=True)):
        optim_kernels.launch(load_kernel(optim_kernels.render(optimizer)), optimizer, CUDA, flat, flat.clone(),
                             [flat.clone() for _ in optimizer.state], 1, squares=squares)
    # the clipping norm, a weight penalty and the max-norm constraint around the update
    optim_kernels.launch_squares(load_kernel(optim_kernels.render_squares()), CUDA, flat.half(), squares, 0.5)
    optim_kernels.launch_penalty(load_kernel(optim_kernels.render_penalty()), CUDA, flat, flat.half(), squares,
                                 fg.optim.Penalty(l1=1e-3, l2=1e-2), 1024.0)
    optim_kernels.launch_max_norm(load_kernel(optim_kernels.render_max_norm()), CUDA, flat, flat.half(), 10,
                                  fg.optim.MaxNorm(3.0))
    assert_all_compile(launches, tmp_path)


@pytest.mark.parametrize("half", ["bfloat16", "float16"])
def test_mixed_precision_training_kernels_compile_for_sm90(half, launches, tmp_path):
    """Every zoo model's training step in mixed precision (half activations, weights and gradients;
    float32 losses and statistics), at the benchmark's batch; the optimizer writing its half copy and
    float16's check for overflowed gradients."""
    names = LOSSES if half == "bfloat16" else ["cifar_resnet", "lstm_classifier"]  # the same templates: a sample
    for name in names:
        model, loss = fg.zoo.get(name), LOSSES[name]
        feeds = feeds_for(model, 128, vocab=1000)
        run_as_gpu(autodiff(model.graph, loss), [*feeds, targets_for(model, loss, 128)], model.params, half=half)
    model = fg.zoo.cifar_resnet()  # and inference: batch norms folded from the float32 weights, then rounded
    run_as_gpu(model.graph, feeds_for(model, 128), model.params, half=half)
    flat = torch.zeros(1000)
    for optimizer in (fg.optim.SGD(lr=0.1, momentum=0.9), fg.optim.Adam()):
        optim_kernels.launch(load_kernel(optim_kernels.render(optimizer)), optimizer, CUDA, flat,
                             flat.to(getattr(torch, half)), [flat.clone() for _ in optimizer.state], 1,
                             half_copy=flat.to(getattr(torch, half)), inv_scale=2.0 ** -16)
    optim_kernels.launch_nonfinite(load_kernel(optim_kernels.render_nonfinite()), CUDA, flat.half(),
                                   torch.zeros((), dtype=torch.int32))
    assert_all_compile(launches, tmp_path)


def test_module_forward_and_backward_halves_compile_for_sm90(launches, tmp_path):
    """to_module()'s and the torch.compile backend's programs: autodiff.vjp_graph split into the forward a
    call runs and the backward from given output gradients, in train and eval mode (the evaluation batch
    norm's own gradient kernel)."""
    from fusegraph.ir.types import BATCH
    from fusegraph.passes.autodiff import vjp_graph
    from fusegraph.passes.eliminate_dead_code import eliminate_dead_code
    from fusegraph.passes.split_backward import split_backward

    model = fg.zoo.cifar_resnet()
    source = model.graph
    for training in (True, False):
        full = eliminate_dead_code(vjp_graph(source, training))
        seeds = {v.name for v in full.inputs[len(source.inputs):]}
        trainable = sum(n.attrs.get("trainable", True) for n in source.param_nodes)
        for half in split_backward(full, seeds, len(source.outputs), trainable + len(source.inputs))[:2]:
            feeds = [torch.randn(v.type.concrete(128)) if v.type.is_float else
                     torch.zeros(v.type.concrete(128), dtype=TORCH_DTYPE[v.type.dtype]) for v in half.inputs]
            assert all(v.type.shape[0] == BATCH for v in half.inputs if v.type.rank > 1)
            run_as_gpu(half, feeds, model.params)
    assert any(name.startswith("batch_norm_param_grads") for name, *_ in launches)
    assert_all_compile(launches, tmp_path)


def test_every_activation_compiles_for_sm90_in_every_position(launches, tmp_path):
    """As a prologue (applied as a conv's and a matmul's operand loads), an epilogue, and its gradient."""
    from fusegraph.nn.activations import ACTIVATIONS

    for activation in (a for a in ACTIVATIONS if a not in ("linear", "softmax", "log_softmax")):
        x = fg.Input((2, 8, 8))
        h = fg.Conv2D(4, 3, activation=activation)(fg.Activation(activation)(x))
        h = fg.Dense(3, activation=activation)(fg.Activation(activation)(fg.Flatten()(h)))
        model = fg.Model(x, h)
        feeds = feeds_for(model, 64)
        run_as_gpu(model.graph, feeds, model.params)
        run_as_gpu(autodiff(model.graph, "mse"), [*feeds, targets_for(model, "mse", 64)], model.params)
    assert_all_compile(launches, tmp_path)


def test_grouped_and_depthwise_convs_compile_for_sm90(launches, tmp_path):
    """A depthwise conv (one channel a group: its elementwise kernels, the input gradient's too), a grouped
    one (16 channels a group: tap by tap) and their gradients, channels-last as a chain of convs keeps
    them, with batch norms folded in."""
    x = fg.Input((32, 8, 8))
    h = fg.Conv2D(32, 3, padding="same", groups=32, activation="relu6")(fg.Conv2D(32, 1)(x))
    h = fg.BatchNorm2D()(fg.Conv2D(64, 3, padding="same", groups=2, use_bias=False)(h))
    model = fg.Model(x, fg.Dense(3)(fg.GlobalAvgPool2D()(h)))
    feeds = feeds_for(model, 64)
    run_as_gpu(model.graph, feeds, model.params)
    run_as_gpu(autodiff(model.graph, "mse"), [*feeds, targets_for(model, "mse", 64)], model.params)
    assert_all_compile(launches, tmp_path)


def test_a_tuned_conv_launch_is_used_pipelined_for_sm90(launches, tmp_path, monkeypatch):
    """A conv shape in the tuning table (per layout) launches with its measured blocks, warps and
    pipeline stages, and its operand loads are copied asynchronously, stage ahead of the dot."""
    from fusegraph.kernels.tuning import conv_shape_key

    config = {"block_m": 128, "block_n": 64, "block_k": 32, "num_warps": 8, "num_stages": 4}
    key = conv_shape_key(torch.float16, 64, 14, 14, 64, (3, 3), (1, 1), False, layouts=(True, True))
    monkeypatch.setitem(tuning.GPU_TUNING["conv"], key, config)
    # the middle conv reads and writes channels-last (the first reads the caller's NCHW, the last writes it)
    model = fg.Sequential([fg.Input((64, 14, 14), dtype="float16"),
                           *(fg.Conv2D(64, 3, padding="same", activation="relu") for _ in range(3))])
    run_as_gpu(model.graph, [torch.randn(2, 64, 14, 14).half()], model.params)
    tuned = [dict(kwargs) for _, _, _, kwargs in launches if dict(kwargs).get("num_stages") == 4]
    assert len(launches) == 3 and len(tuned) == 1
    assert tuned[0]["X_CL"] and tuned[0]["OUT_CL"] and tuned[0]["W_CL"]
    assert {k: v for k, v in tuned[0].items() if k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps")} == {
        "BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32, "num_warps": 8}
    assert_all_compile(launches, tmp_path, pipelined=True)


def test_tuned_conv_gradient_launches_are_used_pipelined_for_sm90(launches, tmp_path, monkeypatch):
    """The input and weight gradients of a conv between convs (channels-last x and y) launch with the
    entries their tables hold under the forward conv's key, and pipeline their operand loads."""
    from fusegraph.kernels.tuning import conv_shape_key

    key = conv_shape_key(torch.float32, 32, 8, 8, 32, (3, 3), (1, 1), False, layouts=(True, True))
    planted = {"conv_input_grad": {"block_m": 64, "block_n": 32, "block_k": 16, "num_warps": 4, "num_stages": 3},
               "conv_weight_grad": {"block_m": 32, "block_n": 64, "block_k": 32, "num_warps": 4, "num_stages": 2}}
    for table, config in planted.items():
        monkeypatch.setitem(tuning.GPU_TUNING[table], key, config)
    model = fg.Sequential([fg.Input((32, 8, 8)), *(fg.Conv2D(32, 3, padding="same", activation="relu") for _ in range(3)),
                           fg.Flatten(), fg.Dense(2)])
    feeds = feeds_for(model, 4)
    run_as_gpu(autodiff(model.graph, "mse"), [*feeds, targets_for(model, "mse", 4)], model.params)
    staged = [(name, dict(kwargs)) for name, _, _, kwargs in launches
              if name.startswith("conv2d_bwd") and launched_with(dict(kwargs), planted.values())]
    # the first conv reads the caller's NCHW input and the last writes the flatten's NCHW: other keys
    assert [name for name, _ in staged] == ["conv2d_bwd_input", "conv2d_bwd_weight_bias_grad"], staged
    (_, to_input), (_, to_weight) = staged
    assert to_input["BLOCK_M"] == 64 and to_input["num_stages"] == 3 and to_input["DY_CL"] and to_input["DX_CL"]
    assert to_weight["BLOCK_N"] == 64 and to_weight["num_stages"] == 2 and to_weight["X_CL"] and to_weight["DW_CL"]
    assert_all_compile(launches, tmp_path, pipelined=True)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_every_conv_tile_the_sweep_tries_compiles_pipelined_for_sm90(dtype, launches, tmp_path, monkeypatch):
    """bench/tune_gpu.py's candidate conv tiles (4 warps, 3 stages), channels-last in and out: each
    compiles, on tensor cores, without spilling, its loads pipelined; a GPU period is not spent on
    one that cannot."""
    from bench.tune_gpu import CONV_TILES, FP32_CONV_TILES
    from fusegraph.kernels.tuning import conv_shape_key

    key = conv_shape_key(getattr(torch, dtype), 64, 14, 14, 64, (3, 3), (1, 1), False, layouts=(True, True))
    model = fg.Sequential([fg.Input((64, 14, 14), dtype=dtype), fg.Conv2D(64, 3, padding="same", activation="relu")])
    image = torch.randn(2, 64, 14, 14).to(getattr(torch, dtype)).contiguous(memory_format=torch.channels_last)
    tiles = FP32_CONV_TILES if dtype == "float32" else CONV_TILES
    for config in tiles:
        monkeypatch.setitem(tuning.GPU_TUNING["conv"], key, config)
        run_as_gpu(model.graph, [image], model.params, memory_format="channels_last")
    assert len(launches) == len(tiles)
    assert_all_compile(launches, tmp_path, pipelined=True)


def test_every_conv_gradient_tile_the_sweep_tries_compiles_pipelined_for_sm90(launches, tmp_path, monkeypatch):
    """bench/tune_gpu.py's candidate tiles for both conv gradient kernels (fp32, channels-last)."""
    from bench.tune_gpu import GRAD_TILES
    from fusegraph.kernels.tuning import conv_shape_key

    key = conv_shape_key(torch.float32, 32, 8, 8, 32, (3, 3), (1, 1), False, layouts=(True, True))
    model = fg.Sequential([fg.Input((32, 8, 8)), *(fg.Conv2D(32, 3, padding="same", activation="relu") for _ in range(2)),
                           fg.GlobalAvgPool2D(), fg.Dense(2)])
    feeds = [f.contiguous(memory_format=torch.channels_last) for f in feeds_for(model, 4)]
    for config in GRAD_TILES:
        for table in ("conv_input_grad", "conv_weight_grad"):
            monkeypatch.setitem(tuning.GPU_TUNING[table], key, config)
        run_as_gpu(autodiff(model.graph, "mse"), [*feeds, targets_for(model, "mse", 4)], model.params,
                   memory_format="channels_last")
    tuned = [name for name, _, _, kwargs in launches
             if name.startswith("conv2d_bwd") and launched_with(dict(kwargs), GRAD_TILES)]
    assert len(tuned) >= 2 * len(GRAD_TILES)  # each config, both kernels (the two convs' share a key)
    assert_all_compile(launches, tmp_path, pipelined=True)
