"""What every benchmark script shares: the environment it ran in and how results are written."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import triton


def environment() -> dict[str, str]:
    """Device, torch, Triton and Python versions; timings only count where device_type is cuda."""
    cuda = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")
    return {"device_type": "cuda" if cuda else "cpu",
            "device": torch.cuda.get_device_name() if cuda else "CPU, Triton interpreter",
            "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version()}


def write(results: dict, out: str, stem: str, markdown: Callable[[dict], str]) -> None:
    """<out>/<stem>_<device>.json and .md, and the table on stdout."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}_{results['environment']['device_type']}"
    path.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


def gpu_or_explain(script: str) -> bool:
    """True on a CUDA GPU, with torch's TF32 shortcuts off (fp32 means fp32) and cuDNN choosing each conv's
    algorithm by timing them (as fusegraph's convs read tuned tables); else says why nothing ran."""
    if not torch.cuda.is_available():
        print(f"{script} needs a CUDA GPU; nothing measured", file=sys.stderr)
        return False
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return True


def median_ms(fn: Callable[[], object]) -> float:
    """Median milliseconds of `fn` on the GPU (triton.testing.do_bench: CUDA events, warm-up, L2 flushed)."""
    from triton.testing import do_bench

    return do_bench(fn, return_mode="median")


def with_speedups(times: dict[str, float]) -> dict[str, float]:
    """Adds fusegraph's speedup over torch eager and torch.compile (ratios of do_bench medians), and
    over torch.compile's CUDA-graph mode where it was timed."""
    times["speedup_vs_eager"] = times["torch_eager_ms"] / times["fusegraph_ms"]
    times["speedup_vs_torch_compile"] = times["torch_compile_ms"] / times["fusegraph_ms"]
    if "torch_compile_graphs_ms" in times:
        times["speedup_vs_torch_compile_graphs"] = times["torch_compile_graphs_ms"] / times["fusegraph_ms"]
    return times


def forward_timings(model, feeds: list[torch.Tensor], dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """Medians (ms) of one forward: fusegraph (CUDA graph replay, and launching kernel by kernel),
    torch eager, torch.compile (default mode) and torch.compile(mode="reduce-overhead"), which
    replays CUDA graphs like we do; TF32 off. Each contender is checked against eager first."""
    import copy

    import fusegraph as fg

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    ours, ours_launching = fg.compile(model), fg.compile(model, cuda_graphs=False)
    eager = model.to_torch().to("cuda", dtype)
    compiled = torch.compile(copy.deepcopy(eager))
    graphs = torch.compile(copy.deepcopy(eager), mode="reduce-overhead")
    tolerance = 1e-2 if dtype != torch.float32 else 1e-4
    with torch.no_grad():
        expected = eager(*feeds).float()
        for contender in (lambda: ours(feeds), lambda: ours_launching(feeds), lambda: compiled(*feeds),
                          lambda: graphs(*feeds), lambda: graphs(*feeds)):
            torch.testing.assert_close(contender().float(), expected, rtol=tolerance, atol=tolerance)
        times = {"fusegraph_ms": median_ms(lambda: ours(feeds)),
                 "fusegraph_launching_ms": median_ms(lambda: ours_launching(feeds)),
                 "torch_eager_ms": median_ms(lambda: eager(*feeds)),
                 "torch_compile_ms": median_ms(lambda: compiled(*feeds)),
                 "torch_compile_graphs_ms": median_ms(lambda: graphs(*feeds)),
                 "launches": ours.last_launches,
                 "max_abs_error_vs_eager": float((ours(feeds).float() - expected).abs().max())}
    return with_speedups(times)


NO_TIMINGS = "No timings: kernels ran in Triton's CPU interpreter, whose times are not performance figures."


def run_per_model(doc: str, stem: str, models: list[str], bench: Callable[[str, int], dict],
                  markdown: Callable[[dict], str]) -> None:
    """The command line of a per-model benchmark: --batch, --out, --models; results are written after
    each model, so a run cut off keeps what it measured."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--models", nargs="*", default=models)
    args = parser.parse_args()
    results = {"benchmark": f"bench/bench_{stem}.py", "batch": args.batch, "environment": environment(), "models": []}
    for name in args.models:
        results["models"].append(bench(name, args.batch))
        write(results, args.out, stem, markdown)
