"""The fair fight: every contender gets the same advantages, rounds are interleaved, and each ratio is a
median with its range.

Contenders of one forward (or training step), all on the same inputs, dtype and device:
  eager              torch.nn modules as to_torch() builds them (RNN weights flattened)
  eager+graph        the same, captured once in a torch.cuda.CUDAGraph and replayed
  compile            torch.compile, default mode: what users get (an nn.LSTM graph-breaks to cuDNN)
  compile-max        torch.compile(mode="max-autotune"): Inductor's Triton templates plus CUDA graphs
  fusegraph          fg.compile: a CUDA graph of its launches replayed (labelled "one by one" where the
                     capture failed, with the reason)
  fusegraph-launch   the same kernels launched one by one
Every torch contender runs with `cudnn.benchmark` on (cuDNN times its algorithms on the first call, which
is warm-up), as fusegraph's convs run with tuned tables. fp32 is paired by precision: "exact" (torch
with TF32 off, fusegraph ieee) or "tf32" (torch's TF32 on, fusegraph one-pass tf32); fusegraph's default
tf32x3 is reported beside "exact" as `fusegraph-tf32x3`. torch's TF32 is set through one API only
(`allow_tf32`), as mixing it with `fp32_precision` raises.

Each contender is built inside its own error boundary: one that raises is recorded (exception and last
frames) and left out, and the row goes on. A torch.compile contender for which Dynamo compiled no graph
ran eager: it is recorded as a fallback, never timed as "compile". Every contender's results are
checked against eager's in the same run before it is timed (a forward's outputs; a training step's
losses after steps 1, 2 and 3, so backward and optimizer are checked too); one that disagrees is
recorded and left out. Timings are interleaved (each round times every contender once, starting from a
different one each round), and each ratio is the median over rounds of (contender / fusegraph) with
its min and max. Without a GPU the CUDA-graph and torch.compile contenders are left out (said in the
result) and times are CPU wall clock of Triton's interpreter: a dry run of the machinery, not
performance figures."""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

import fusegraph as fg
from bench.records import failure

Run = Callable[[], object]
BASELINE = "fusegraph"
TORCH_CONTENDERS = ("eager", "eager-fused", "eager+graph", "compile", "compile-max")
TRAINING_STEPS_CHECKED = 3  # losses after steps 1..3 compared: the forward, then backward and optimizer


class EagerFallbackError(Exception):
    """A torch.compile contender that Dynamo left to eager: it must not be timed as compiled."""


@dataclass
class Contender:
    name: str
    run: Run
    first_call_s: float = 0.0  # wall time of construction plus the first call (compiles, JIT, captures)
    results: list = field(default_factory=list)  # what its first calls returned: compared with eager's
    info: dict = field(default_factory=dict)  # what the row says about it (graphs compiled, capture status)


@dataclass
class Lineup:
    """One row's contenders, built and called, with what did not make it and why."""

    contenders: list[Contender] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)  # not built here, and why (no GPU, ...)
    failed: dict[str, dict] = field(default_factory=dict)  # built or checked, and raised / disagreed
    fallbacks: dict[str, str] = field(default_factory=dict)  # compile contenders that ran eager

    def build(self, builds: dict[str, Callable[[], Run]], calls: int = 1) -> Lineup:
        for name, build in builds.items():
            try:
                self.contenders.append(_timed_first_calls(name, build, calls))
            except EagerFallbackError as fallback:
                self.fallbacks[name] = str(fallback)
            except Exception as error:  # NOTE: one contender's failure is a result, not the end of the row
                self.failed[name] = failure(error)
                _recover_device()
        return self

    def drop(self, name: str, why: dict) -> None:
        self.contenders = [c for c in self.contenders if c.name != name]
        self.failed[name] = why


@dataclass
class Outcome:
    """What one row measured: per-contender times per round, errors against eager, what was left out."""

    times_ms: dict[str, list[float]] = field(default_factory=dict)
    max_abs_error: dict[str, float] = field(default_factory=dict)
    lineup: Lineup = field(default_factory=Lineup)

    def summary(self) -> dict:
        medians = {name: statistics.median(ts) for name, ts in self.times_ms.items()}
        lineup = self.lineup
        summary = {"median_ms": medians, "range_ms": {n: [min(t), max(t)] for n, t in self.times_ms.items()},
                   "ratios_vs_fusegraph": ratios(self.times_ms) if BASELINE in self.times_ms else {},
                   "max_abs_error_vs_eager": self.max_abs_error,
                   "first_call_s": {c.name: c.first_call_s for c in lineup.contenders},
                   "left_out": lineup.left_out, "failed": lineup.failed, "eager_fallbacks": lineup.fallbacks,
                   "contender_info": {c.name: c.info for c in lineup.contenders if c.info},
                   "rounds": len(next(iter(self.times_ms.values()), [])), "cudnn_benchmark": True}
        best = best_torch(self.times_ms)
        if best is not None:
            summary["best_torch"] = best
        ours = next((c for c in lineup.contenders if c.name == BASELINE), None)
        if ours is not None and ours.info.get("cuda_graph") not in (None, "captured"):
            status = ours.info["cuda_graph"]
            summary["fusegraph_label"] = f"fusegraph (one by one: {'CUDA graphs off' if status == 'off' else status})"
        return summary


def best_torch(times_ms: dict[str, list[float]]) -> dict | None:
    """The fastest torch contender that was timed (so built, checked and not an eager fallback), by
    median, and fusegraph's ratio to it per round (> 1: fusegraph faster)."""
    timed = [name for name in TORCH_CONTENDERS if name in times_ms]
    if not timed or BASELINE not in times_ms:
        return None
    name = min(timed, key=lambda n: statistics.median(times_ms[n]))
    return {"name": name, "median_ms": statistics.median(times_ms[name]),
            "ratio": ratios({BASELINE: times_ms[BASELINE], name: times_ms[name]})[name]}


@contextlib.contextmanager
def torch_settings(precision: str) -> Iterator[None]:
    """torch's fp32 matmuls and convolutions exact ("exact") or on TF32 tensor cores ("tf32"), and cuDNN
    choosing each conv's algorithm by timing them (`cudnn.benchmark`), for every torch contender."""
    allow = precision == "tf32"
    backends = torch.backends
    saved = backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32, backends.cudnn.benchmark
    backends.cuda.matmul.allow_tf32 = backends.cudnn.allow_tf32 = allow
    backends.cudnn.benchmark = True
    try:
        yield
    finally:
        backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32, backends.cudnn.benchmark = saved


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


def _timed_first_calls(name: str, build: Callable[[], Run], calls: int) -> Contender:
    """Builds a contender and calls it `calls` times (the first call timed with the build); a run may
    carry `check()`, which says after those calls whether it ran as what it claims to be."""
    start = time.perf_counter()
    run = build()
    results = [_detached(run())]
    _synchronize()
    first_call_s = time.perf_counter() - start
    results += [_detached(run()) for _ in range(calls - 1)]
    info = run.check() if hasattr(run, "check") else {}
    if hasattr(run, "info"):
        info = {**info, **run.info()}
    return Contender(name, run, first_call_s, results, info)


def _detached(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return [_detached(v) for v in value]
    return torch.tensor(value)


def _recover_device() -> None:
    """After a contender raised: let the GPU finish (or surface a sticky error) before the next one."""
    if torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.synchronize()
            torch.cuda.empty_cache()


def in_memory_format(feeds: list[torch.Tensor], module: torch.nn.Module | None,
                     memory_format: str) -> tuple[list[torch.Tensor], torch.nn.Module | None]:
    """Images and the torch module stored as `memory_format` says, for every contender alike: with
    "channels_last", what PyTorch users do with `.to(memory_format=torch.channels_last)`."""
    if memory_format == "contiguous":
        return feeds, module
    feeds = [f.contiguous(memory_format=torch.channels_last) if f.dim() == 4 else f for f in feeds]
    return feeds, module.to(memory_format=torch.channels_last) if module is not None else None


TorchModule = Callable[[fg.Model], torch.nn.Module]  # a row's own torch form of the model (e.g. num_layers=2)


def torch_module(model: fg.Model, build: TorchModule | None = None) -> torch.nn.Module:
    return flatten_rnns(build(model) if build is not None else model.to_torch())


def forward_contenders(model: fg.Model, feeds: list[torch.Tensor], precision: str = "exact",
                       cuda: bool | None = None, memory_format: str = "contiguous",
                       torch_form: TorchModule | None = None) -> Lineup:
    """Every contender of one forward of `model` on `feeds` (already on the device, in the model's dtype),
    built and called once; `memory_format`: how every contender stores images and weights."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    device, dtype = feeds[0].device, next((f.dtype for f in feeds if f.is_floating_point()), torch.float32)
    lineup = Lineup()
    feeds, eager = in_memory_format(feeds, torch_module(model, torch_form).to(device, dtype).eval(), memory_format)
    ours = "tf32" if precision == "tf32" else "ieee"
    builds: dict[str, Callable[[], Run]] = {
        "eager": lambda: (lambda: eager(*feeds)),
        BASELINE: lambda: _fusegraph(model, feeds, ours, cuda, memory_format),
        "fusegraph-launch": lambda: _fusegraph(model, feeds, ours, False, memory_format),
    }
    if precision == "exact" and dtype == torch.float32:
        builds["fusegraph-tf32x3"] = lambda: _fusegraph(model, feeds, "tf32x3", cuda, memory_format)
    if cuda:
        builds["eager+graph"] = lambda: in_cuda_graph(eager, feeds)
        builds["compile"] = lambda: compiled_forward(eager, feeds, mode=None)
        builds["compile-max"] = lambda: compiled_forward(eager, feeds, mode="max-autotune")
    else:
        for name in ("eager+graph", "compile", "compile-max"):
            lineup.left_out[name] = "needs a CUDA GPU (the dry run on the CPU times eager and fusegraph only)"
        lineup.left_out["fusegraph-launch"] = "the same as fusegraph without a GPU (no CUDA graphs)"
        builds.pop("fusegraph-launch")
    with torch.no_grad(), torch_settings(precision):
        return lineup.build(builds)


def _fusegraph(model: fg.Model, feeds: list[torch.Tensor], precision: str, graphs: bool,
               memory_format: str = "contiguous") -> Run:
    compiled = fg.compile(model, cuda_graphs=graphs, fp32_precision=precision, memory_format=memory_format)

    def run():
        return compiled(feeds)

    run.info = lambda: {"cuda_graph": compiled.cuda_graph_status()}
    return run


def compiled_forward(eager: torch.nn.Module, feeds: list[torch.Tensor], mode: str | None,
                     backend: str = "inductor") -> Run:
    """torch.compile of a copy of the eager module, as users call it; its `check()` raises EagerFallbackError
    when Dynamo compiled no graph for it (the whole forward ran eager)."""
    module = flatten_rnns(copy.deepcopy(eager))
    compiled = torch.compile(module, mode=mode, backend=backend) if mode else torch.compile(module, backend=backend)
    return watched_by_dynamo(lambda: compiled(*feeds))


def watched_by_dynamo(run: Run) -> Run:
    """`run`, with a `check()` that counts the graphs Dynamo compiled since this call (a row starts from
    `torch._dynamo.reset()`, so a compile contender's first calls compile its graphs)."""
    start = _dynamo_counts()

    def check() -> dict:
        graphs, breaks = (now - before for now, before in zip(_dynamo_counts(), start))
        if graphs == 0:
            raise EagerFallbackError(f"Dynamo compiled no graph ({breaks} graph breaks): it ran eager")
        return {"dynamo_graphs": graphs, "graph_breaks": breaks}

    run.check = check
    return run


def _dynamo_counts() -> tuple[int, int]:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())


def check_against_eager(lineup: Lineup, tolerance: float) -> dict[str, float]:
    """Max |contender - eager| over the first calls' results (a forward's outputs, a training step's losses
    from the same starting weights); a contender beyond `tolerance` (relative to eager's scale) is dropped
    from the lineup and recorded as failed. Without eager nothing can be checked: every one is dropped."""
    eager = next((c for c in lineup.contenders if c.name == "eager"), None)
    errors = {}
    for contender in list(lineup.contenders):
        if eager is None:
            lineup.drop(contender.name, {"error": "Unchecked", "message": "eager failed: nothing to check against"})
            continue
        error, scale = _difference(contender.results, eager.results)
        if not error <= tolerance * max(1.0, scale):
            lineup.drop(contender.name, {"error": "Disagrees", "message": f"{contender.name} differs from eager by "
                                                                         f"{error:.3e} (tolerance {tolerance:g})"})
            continue
        errors[contender.name] = error
    return errors


def _difference(got: list, expected: list) -> tuple[float, float]:
    pairs = [(a, b) for calls in zip(got, expected, strict=True)
             for a, b in zip(_as_list(calls[0]), _as_list(calls[1]), strict=True)]
    with torch.no_grad():
        error = max(float((a.float() - b.float()).abs().max()) for a, b in pairs)
        scale = max(float(b.float().abs().max()) for _, b in pairs)
    return error, scale


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
                precision: str = "exact", training: bool = False,
                failed: dict[str, dict] | None = None) -> dict[str, list[float]]:
    """Per contender, one time per round; round r starts at contender r, so none is always first or last.
    A contender that raises while timed is recorded in `failed` and timed no more."""
    time_ms = time_ms or timer()
    failed = {} if failed is None else failed
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    with torch.set_grad_enabled(training), torch_settings(precision):
        for r in range(rounds):
            for i in range(len(contenders)):
                contender = contenders[(r + i) % len(contenders)]
                if contender.name in failed:
                    continue
                try:
                    times[contender.name].append(time_ms(contender.run))
                except Exception as error:
                    failed[contender.name] = failure(error)
                    _recover_device()
    return {name: ts for name, ts in times.items() if name not in failed}


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


def measure(lineup: Lineup, rounds: int, tolerance: float, precision: str = "exact",
            training: bool = False) -> Outcome:
    """Check, then time in interleaved rounds: one row's Outcome."""
    errors = check_against_eager(lineup, tolerance)
    times = interleaved(lineup.contenders, rounds, precision=precision, training=training, failed=lineup.failed)
    lineup.contenders = [c for c in lineup.contenders if c.name not in lineup.failed]
    return Outcome(times, errors, lineup)


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def training_contenders(model: fg.Model, feeds: list[torch.Tensor], target: torch.Tensor, loss: str,
                        precision: str = "exact", cuda: bool | None = None, memory_format: str = "contiguous",
                        amp: str | None = None, torch_form: TorchModule | None = None) -> Lineup:
    """Every contender of one training step (forward, loss, backward, SGD with momentum 0.9 at lr 0.01),
    each reading its loss back to the host as a training loop does; each starts from the same weights
    and takes TRAINING_STEPS_CHECKED steps before it is timed, their losses compared with eager's.
    `memory_format`: how every contender stores images and weights. `amp` ("bfloat16" or "float16"):
    mixed precision on a float32 model, torch's recipe (autocast, and for float16 a GradScaler) against
    fg.compile(precision=...), CUDA graphs on both sides as in float32."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    lineup = Lineup()
    feeds, _ = in_memory_format(feeds, None, memory_format)

    def torch_step(compile_mode: str | None | bool = False) -> Run:
        step = torch_sgd_step(model, feeds, target, loss, memory_format, amp, torch_form)[2]
        if compile_mode is False:
            return lambda: step().item()
        compiled = torch.compile(step, mode=compile_mode) if compile_mode else torch.compile(step)
        return watched_by_dynamo(lambda: compiled().item())

    def fusegraph_step(ours: str, graphs: bool) -> Run:
        trainer = fg.compile(model, loss=loss, optimizer=fg.optim.SGD(lr=0.01, momentum=0.9), cuda_graphs=graphs,
                             fp32_precision=ours, memory_format=memory_format, precision=AMP_PRECISION.get(amp))

        def run():
            return trainer.train_step(feeds, target)

        run.info = lambda: {"cuda_graph": trainer.cuda_graph_status()}
        return run

    ours = "tf32" if precision == "tf32" else "ieee"
    builds: dict[str, Callable[[], Run]] = {"eager": torch_step, BASELINE: lambda: fusegraph_step(ours, cuda)}
    if precision == "exact" and amp is None:
        builds["fusegraph-tf32x3"] = lambda: fusegraph_step("tf32x3", cuda)
    if cuda:
        builds["fusegraph-launch"] = lambda: fusegraph_step(ours, False)
        builds["eager+graph"] = lambda: _captured_training_step(model, feeds, target, loss, memory_format, amp,
                                                                torch_form)
        builds["compile"] = lambda: torch_step(None)
        builds["compile-max"] = lambda: torch_step("max-autotune")
    else:
        for name in ("eager+graph", "compile", "compile-max", "fusegraph-launch"):
            lineup.left_out[name] = "needs a CUDA GPU (the dry run on the CPU times eager and fusegraph only)"
    # NOTE: a trainer's Model reads its weights through from it: reload the start before each build
    start = {name: t.clone() for name, t in model.params.items()}
    with torch_settings(precision):
        for name, build in builds.items():
            model.load_params(start)
            lineup.build({name: build}, calls=TRAINING_STEPS_CHECKED)
    model.load_params(start)
    return lineup


AMP_PRECISION = {"bfloat16": "bf16", "float16": "fp16"}  # fg.compile's name for each autocast dtype


def torch_sgd_step(model: fg.Model, feeds: list[torch.Tensor], target: torch.Tensor, loss: str,
                   memory_format: str = "contiguous", amp: str | None = None, torch_form: TorchModule | None = None):
    """(module, optimizer, step): torch's side of a training step on `feeds`, SGD with momentum 0.9 at lr
    0.01, gradients set to None (a CUDA graph captures their allocation in its pool); returns the loss.
    On the GPU the optimizer is the fused SGD (one kernel; with a GradScaler it reads the scale and
    overflow flag on the device, no host sync: capturable). With `amp`, torch's mixed-precision recipe:
    forward and loss under autocast (its weight-cast cache off, as CUDA graph capture needs) and, for
    float16, a GradScaler."""
    from bench.bench_training import torch_loss

    device = feeds[0].device
    module = torch_module(model, torch_form).to(device).train()
    _, module = in_memory_format([], module, memory_format)
    fused = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9, **fused)
    scaler = torch.amp.GradScaler(device.type) if amp == "float16" else None

    def forward() -> torch.Tensor:
        if amp is None:
            return torch_loss(model, module(*feeds), target, loss)
        with torch.autocast(device.type, dtype=getattr(torch, amp), cache_enabled=False):
            return torch_loss(model, module(*feeds), target, loss)

    def step():
        optimizer.zero_grad(set_to_none=True)
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
                            memory_format: str = "contiguous", amp: str | None = None,
                            torch_form: TorchModule | None = None) -> Run:
    """PyTorch's whole-network capture: forward, backward and optimizer step in one CUDA graph. Warm-up
    steps run first (outside the capture), then weights, momentum (and a GradScaler's scale) are put
    back, so the first replay is the same step eager's first call takes."""
    module, optimizer, step = torch_sgd_step(model, [f.clone() for f in feeds], target, loss, memory_format, amp,
                                             torch_form)
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


def optimizer_contenders(numel: int, device: str, cuda: bool | None = None) -> Lineup:
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
        run = lambda: (step(), param.detach())[1]
        return watched_by_dynamo(run) if compiled else run

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
    lineup = Lineup()
    if cuda:
        builds["eager-fused"] = lambda: torch_adam(fused=True)
        builds["compile"] = lambda: torch_adam(foreach=True, compiled=True)
    else:
        lineup.left_out["eager-fused"] = lineup.left_out["compile"] = \
            "needs a CUDA GPU (the dry run on the CPU times eager and fusegraph)"
    with torch.no_grad():
        return lineup.build(builds)
