"""The fair fight: every contender gets the same advantages, rounds are interleaved, and each ratio is a
median with its range.

Contenders of one forward (or training step), all on the same inputs, dtype and device:
  eager              torch.nn modules as to_torch() builds them (RNN weights flattened)
  eager+graph        the same, captured once in a torch.cuda.CUDAGraph and replayed
  compile            torch.compile, default mode (Dynamo allowed to trace nn.LSTM / nn.GRU)
  compile-max        torch.compile(mode="max-autotune"): Inductor's Triton templates plus CUDA graphs
  fusegraph          fg.compile: a CUDA graph of its launches replayed
  fusegraph-launch   the same kernels launched one by one
fp32 is paired by precision: "exact" (torch with TF32 off, fusegraph ieee) or "tf32" (torch's TF32 on,
fusegraph one-pass tf32); fusegraph's default tf32x3 is reported beside "exact" as `fusegraph-tf32x3`.
torch's TF32 is set through one API only (`allow_tf32`), as mixing it with `fp32_precision` raises.

Every contender's result is checked against eager in the same run before it is timed; timings are
interleaved (each round times every contender once, starting from a different one each round), and
each ratio is the median over rounds of (contender / fusegraph) with its min and max. Without a GPU
the CUDA-graph and torch.compile contenders are left out (said in the result) and times are CPU
wall clock of Triton's interpreter: a dry run of the machinery, not performance figures."""

from __future__ import annotations

# NOTE: fusegraph before triton: Triton picks compile vs interpret when first imported (I001 off here)
import fusegraph as fg

import contextlib
import copy
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

Run = Callable[[], object]
BASELINE = "fusegraph"


@dataclass
class Contender:
    name: str
    run: Run
    first_call_s: float = 0.0  # wall time of construction plus the first call (compiles, JIT, captures)
    first_result: object = None  # what the first call returned: compared with eager's (a training step's loss)


@dataclass
class Outcome:
    """What one row measured: per-contender times per round, errors against eager, what was left out."""

    times_ms: dict[str, list[float]] = field(default_factory=dict)
    max_abs_error: dict[str, float] = field(default_factory=dict)
    first_call_s: dict[str, float] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict:
        medians = {name: statistics.median(ts) for name, ts in self.times_ms.items()}
        return {"median_ms": medians, "range_ms": {n: [min(t), max(t)] for n, t in self.times_ms.items()},
                "ratios_vs_fusegraph": ratios(self.times_ms), "max_abs_error_vs_eager": self.max_abs_error,
                "first_call_s": self.first_call_s, "left_out": self.left_out, "rounds": len(next(iter(
                    self.times_ms.values()), []))}


@contextlib.contextmanager
def torch_fp32(precision: str) -> Iterator[None]:
    """torch's fp32 matmuls and convolutions exact ("exact") or on TF32 tensor cores ("tf32")."""
    allow = precision == "tf32"
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def flatten_rnns(module: torch.nn.Module) -> torch.nn.Module:
    """cuDNN wants each RNN's weights in one contiguous buffer; a copied module has lost that."""
    for sub in module.modules():
        if isinstance(sub, torch.nn.RNNBase):
            sub.flatten_parameters()
    return module


def in_cuda_graph(fn: Callable[..., object], feeds: list[torch.Tensor]) -> Run:
    """`fn(*feeds)` captured once in a CUDA graph; the returned call copies nothing (same inputs every
    round, as every contender gets) and replays it."""
    static = [f.clone() for f in feeds]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):  # NOTE: warm-up outside the capture: cuDNN picks algorithms, caches fill
            fn(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = fn(*static)

    def replay():
        graph.replay()
        return output

    return replay


def _timed_first_call(name: str, build: Callable[[], Run]) -> Contender:
    start = time.perf_counter()
    run = build()
    first = run()
    _synchronize()
    return Contender(name, run, time.perf_counter() - start, _detached(first))


def _detached(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return [_detached(v) for v in value]
    return torch.tensor(value)


def in_memory_format(feeds: list[torch.Tensor], module: torch.nn.Module | None,
                     memory_format: str) -> tuple[list[torch.Tensor], torch.nn.Module | None]:
    """Images and the torch module stored as `memory_format` says, for every contender alike: with
    "channels_last", what PyTorch users do with `.to(memory_format=torch.channels_last)`."""
    if memory_format == "contiguous":
        return feeds, module
    feeds = [f.contiguous(memory_format=torch.channels_last) if f.dim() == 4 else f for f in feeds]
    return feeds, module.to(memory_format=torch.channels_last) if module is not None else None


def forward_contenders(model: fg.Model, feeds: list[torch.Tensor], precision: str = "exact",
                       cuda: bool | None = None, memory_format: str = "contiguous") -> tuple[list[Contender], dict[str, str]]:
    """Every contender of one forward of `model` on `feeds` (already on the device, in the model's dtype),
    with what was left out and why; `memory_format`: how every contender stores images and weights."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    device, dtype = feeds[0].device, next((f.dtype for f in feeds if f.is_floating_point()), torch.float32)
    left_out: dict[str, str] = {}
    feeds, eager = in_memory_format(feeds, flatten_rnns(model.to_torch().to(device, dtype).eval()), memory_format)
    ours = "tf32" if precision == "tf32" else "ieee"
    builds: dict[str, Callable[[], Run]] = {
        "eager": lambda: (lambda: eager(*feeds)),
        BASELINE: lambda: _fusegraph(model, feeds, ours, cuda, memory_format),
        "fusegraph-launch": lambda: _fusegraph(model, feeds, ours, False, memory_format),
    }
    if precision == "exact" and dtype == torch.float32:
        builds["fusegraph-tf32x3"] = lambda: _fusegraph(model, feeds, "tf32x3", cuda, memory_format)
    if cuda:
        import torch._dynamo as dynamo

        dynamo.config.allow_rnn = True  # NOTE: else Dynamo graph-breaks around nn.LSTM / nn.GRU
        builds["eager+graph"] = lambda: in_cuda_graph(eager, feeds)
        builds["compile"] = lambda: _compiled(eager, feeds, mode=None)
        builds["compile-max"] = lambda: _compiled(eager, feeds, mode="max-autotune")
    else:
        for name in ("eager+graph", "compile", "compile-max"):
            left_out[name] = "needs a CUDA GPU (the dry run on the CPU times eager and fusegraph only)"
        left_out["fusegraph-launch"] = "the same as fusegraph without a GPU (no CUDA graphs)"
        builds.pop("fusegraph-launch")
    with torch.no_grad(), torch_fp32(precision):
        return [_timed_first_call(name, build) for name, build in builds.items()], left_out


def _fusegraph(model: fg.Model, feeds: list[torch.Tensor], precision: str, graphs: bool,
               memory_format: str = "contiguous") -> Run:
    compiled = fg.compile(model, cuda_graphs=graphs, fp32_precision=precision, memory_format=memory_format)
    return lambda: compiled(feeds)


def _compiled(eager: torch.nn.Module, feeds: list[torch.Tensor], mode: str | None) -> Run:
    module = flatten_rnns(copy.deepcopy(eager))
    compiled = torch.compile(module, mode=mode) if mode else torch.compile(module)
    return lambda: compiled(*feeds)


def check_against_eager(contenders: list[Contender], tolerance: float) -> dict[str, float]:
    """Max |contender - eager| of the first calls' results (a forward's outputs, a training step's loss
    from the same starting weights); a contender beyond `tolerance` (relative to eager's scale) fails."""
    by_name = {c.name: c for c in contenders}
    with torch.no_grad():
        expected = _as_list(by_name["eager"].first_result)
        errors = {}
        for contender in contenders:
            got = _as_list(contender.first_result)
            error = max(float((a.float() - b.float()).abs().max()) for a, b in zip(got, expected, strict=True))
            scale = max(float(b.float().abs().max()) for b in expected)
            if not error <= tolerance * max(1.0, scale):
                raise AssertionError(f"{contender.name} differs from eager by {error:.3e} (tolerance {tolerance:g})")
            errors[contender.name] = error
    return errors


def _as_list(value) -> list[torch.Tensor]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def timer() -> Callable[[Run], float]:
    """Milliseconds of one call: on the GPU triton's do_bench median (CUDA events, L2 flushed between
    calls); on the CPU the median wall time of three calls."""
    if torch.cuda.is_available():
        from triton.testing import do_bench

        return lambda fn: do_bench(fn, warmup=10, rep=50, return_mode="median")

    def wall(fn: Run) -> float:
        samples = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - start) * 1e3)
        return statistics.median(samples)

    return wall


def interleaved(contenders: list[Contender], rounds: int = 5, time_ms: Callable[[Run], float] | None = None,
                precision: str = "exact", training: bool = False) -> dict[str, list[float]]:
    """Per contender, one time per round; round r starts at contender r, so none is always first or last."""
    time_ms = time_ms or timer()
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    with torch.set_grad_enabled(training), torch_fp32(precision):
        for r in range(rounds):
            for i in range(len(contenders)):
                contender = contenders[(r + i) % len(contenders)]
                times[contender.name].append(time_ms(contender.run))
    return times


def ratios(times_ms: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Per contender: (its time / fusegraph's) per round, as median, min and max (> 1: fusegraph faster)."""
    ours = times_ms[BASELINE]
    out = {}
    for name, theirs in times_ms.items():
        if name == BASELINE:
            continue
        per_round = [t / o for t, o in zip(theirs, ours, strict=True)]
        out[name] = {"median": statistics.median(per_round), "min": min(per_round), "max": max(per_round)}
    return out


def measure(contenders: list[Contender], left_out: dict[str, str], rounds: int, tolerance: float,
            precision: str = "exact", training: bool = False) -> Outcome:
    """Check, then time in interleaved rounds: one row's Outcome."""
    errors = check_against_eager(contenders, tolerance)
    return Outcome(interleaved(contenders, rounds, precision=precision, training=training), errors,
                   {c.name: c.first_call_s for c in contenders}, left_out)


def host_cost_per_launch(model: fg.Model, feeds: list[torch.Tensor], calls: int = 100) -> dict[str, float]:
    """Host microseconds per kernel launch when fusegraph launches one by one (no CUDA graph), against
    bare Triton launches of the very same kernels, grids and arguments (recorded from one call). Tiny
    inputs keep the GPU idle, so what is timed is the host side. Target: `ratio` <= 1.5."""
    from fusegraph.kernels import recording_launches

    compiled = fg.compile(model, cuda_graphs=False)
    with torch.no_grad():
        with recording_launches() as launches:  # the first call: it runs every launch through fusegraph
            compiled(feeds)

        def bare() -> None:
            for fn, grid, args, kwargs in launches:
                fn[grid](*args, **kwargs)

        per_call = {"fusegraph": lambda: compiled(feeds), "bare": bare}
        micros = {}
        for name, call in per_call.items():
            call()
            _synchronize()
            start = time.perf_counter()
            for _ in range(calls):
                call()
            _synchronize()
            micros[name] = (time.perf_counter() - start) / (calls * len(launches)) * 1e6
    return {"launches_per_call": len(launches), "fusegraph_us_per_launch": micros["fusegraph"],
            "bare_triton_us_per_launch": micros["bare"], "ratio": micros["fusegraph"] / micros["bare"]}


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def training_contenders(model: fg.Model, feeds: list[torch.Tensor], target: torch.Tensor, loss: str,
                        precision: str = "exact", cuda: bool | None = None, memory_format: str = "contiguous",
                        amp: str | None = None) -> tuple[list[Contender], dict[str, str]]:
    """Every contender of one training step (forward, loss, backward, SGD with momentum 0.9 at lr 0.01),
    each reading its loss back to the host as a training loop does; each starts from the same weights,
    so the first steps' losses are compared. `memory_format`: how every contender stores images and weights.
    `amp` ("bfloat16" or "float16"): mixed precision on a float32 model, torch's recipe (autocast, and for
    float16 a GradScaler) against fg.compile(precision=...), CUDA graphs on both sides as in float32."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    left_out: dict[str, str] = {}
    feeds, _ = in_memory_format(feeds, None, memory_format)

    def torch_step(compile_mode: str | None | bool = False) -> Run:
        step = torch_sgd_step(model, feeds, target, loss, memory_format, amp)[2]
        if compile_mode is False:
            return lambda: step().item()
        compiled = torch.compile(step, mode=compile_mode) if compile_mode else torch.compile(step)
        return lambda: compiled().item()

    def fusegraph_step(ours: str, graphs: bool) -> Run:
        trainer = fg.compile(model, loss=loss, optimizer=fg.optim.SGD(lr=0.01, momentum=0.9), cuda_graphs=graphs,
                             fp32_precision=ours, memory_format=memory_format, precision=AMP_PRECISION.get(amp))
        return lambda: trainer.train_step(feeds, target)

    ours = "tf32" if precision == "tf32" else "ieee"
    builds: dict[str, Callable[[], Run]] = {"eager": torch_step, BASELINE: lambda: fusegraph_step(ours, cuda)}
    if precision == "exact" and amp is None:
        builds["fusegraph-tf32x3"] = lambda: fusegraph_step("tf32x3", cuda)
    if cuda:
        builds["fusegraph-launch"] = lambda: fusegraph_step(ours, False)
        builds["eager+graph"] = lambda: _captured_training_step(model, feeds, target, loss, memory_format, amp)
        builds["compile"] = lambda: torch_step(None)
        builds["compile-max"] = lambda: torch_step("max-autotune")
    else:
        for name in ("eager+graph", "compile", "compile-max", "fusegraph-launch"):
            left_out[name] = "needs a CUDA GPU (the dry run on the CPU times eager and fusegraph only)"
    # NOTE: a trainer's Model reads its weights through from it: reload the start before each build
    start = {name: t.clone() for name, t in model.params.items()}
    contenders = []
    with torch_fp32(precision):
        for name, build in builds.items():
            model.load_params(start)
            contenders.append(_timed_first_call(name, build))
    model.load_params(start)
    return contenders, left_out


AMP_PRECISION = {"bfloat16": "bf16", "float16": "fp16"}  # fg.compile's name for each autocast dtype


def torch_sgd_step(model: fg.Model, feeds: list[torch.Tensor], target: torch.Tensor, loss: str,
                   memory_format: str = "contiguous", amp: str | None = None):
    """(module, optimizer, step): torch's side of a training step on `feeds`, SGD with momentum 0.9 at lr
    0.01, gradients zeroed in place (addresses fixed, so a CUDA graph can capture it); returns the loss.
    With `amp`, torch's mixed-precision recipe: forward and loss under autocast (its weight-cast cache off,
    as CUDA graph capture needs) and, for float16, a GradScaler; on the GPU the optimizer is the fused
    SGD, which takes the scaler's scale and overflow flag on the device (no host sync: capturable)."""
    from bench.bench_training import torch_loss

    device = feeds[0].device
    _, module = in_memory_format([], flatten_rnns(model.to_torch().to(device).train()), memory_format)
    fused = amp is not None and device.type == "cuda"
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9, **({"fused": True} if fused else {}))
    scaler = torch.amp.GradScaler(device.type) if amp == "float16" else None

    def forward() -> torch.Tensor:
        if amp is None:
            return torch_loss(model, module(*feeds), target, loss)
        with torch.autocast(device.type, dtype=getattr(torch, amp), cache_enabled=False):
            return torch_loss(model, module(*feeds), target, loss)

    def step():
        optimizer.zero_grad(set_to_none=False)
        value = forward()
        if scaler is None:
            value.backward()
            optimizer.step()
        else:
            scaler.scale(value).backward()
            scaler.step(optimizer)
            scaler.update()
        return value.detach()

    step.scaler = scaler
    return module, optimizer, step


def _captured_training_step(model: fg.Model, feeds: list[torch.Tensor], target: torch.Tensor, loss: str,
                            memory_format: str = "contiguous", amp: str | None = None) -> Run:
    """PyTorch's whole-network capture: forward, backward and optimizer step in one CUDA graph. Warm-up
    steps run first (outside the capture), then weights, momentum (and a GradScaler's scale) are put
    back, so the first replay is the same step eager's first call takes."""
    module, optimizer, step = torch_sgd_step(model, [f.clone() for f in feeds], target, loss, memory_format, amp)
    start = [p.detach().clone() for p in module.parameters()]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        value = step()
    with torch.no_grad():
        for param, saved in zip(module.parameters(), start, strict=True):
            param.copy_(saved)
        for state in optimizer.state.values():
            state["momentum_buffer"].zero_()  # NOTE: a zero buffer's first update is SGD's first step
        if step.scaler is not None:
            step.scaler._scale.fill_(step.scaler._init_scale)  # noqa: SLF001 (GradScaler has no public reset)
            step.scaler._growth_tracker.zero_()  # noqa: SLF001

    def replay():
        graph.replay()
        return value.item()

    return replay


def optimizer_contenders(numel: int, device: str, cuda: bool | None = None) -> tuple[list[Contender], dict[str, str]]:
    """One Adam step over `numel` fp32 parameters (reads parameters, gradients and both moments, writes
    parameters and moments): torch.optim.Adam foreach, fused (GPU), torch.compile of the step (GPU),
    and fusegraph's one-kernel step over its flat buffers. Each starts from the same state, so the
    first steps' parameters are compared."""
    from fusegraph.kernels import Target, load_kernel
    from fusegraph.kernels import optim as optim_kernels

    cuda = torch.cuda.is_available() if cuda is None else cuda
    generator = torch.Generator().manual_seed(0)
    start, grad = (torch.randn(numel, generator=generator).to(device) for _ in range(2))

    def torch_adam(compiled: bool = False, **options) -> Run:
        param = torch.nn.Parameter(start.clone())
        param.grad = grad.clone()
        optimizer = torch.optim.Adam([param], lr=1e-3, **options)
        step = torch.compile(optimizer.step) if compiled else optimizer.step
        return lambda: (step(), param.detach())[1]

    def fusegraph_adam() -> Run:
        ours = fg.optim.Adam(lr=1e-3)
        flat, grads, states = start.clone(), grad.clone(), [torch.zeros_like(start) for _ in ours.state]
        kernel, target, steps = load_kernel(optim_kernels.render(ours)), Target(device), [0]

        def step():
            steps[0] += 1
            optim_kernels.launch(kernel, ours, target, flat, grads, states, steps[0])
            return flat

        return step

    builds: dict[str, Callable[[], Run]] = {"eager": lambda: torch_adam(foreach=True), BASELINE: fusegraph_adam}
    left_out = {}
    if cuda:
        builds["eager-fused"] = lambda: torch_adam(fused=True)
        builds["compile"] = lambda: torch_adam(foreach=True, compiled=True)
    else:
        left_out["eager-fused"] = left_out["compile"] = "needs a CUDA GPU (the dry run on the CPU times eager and fusegraph)"
    with torch.no_grad():
        return [_timed_first_call(name, build) for name, build in builds.items()], left_out
