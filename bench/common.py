"""What every benchmark script shares: the environment it ran in and how results are written."""

from __future__ import annotations

# NOTE: fusegraph before triton: Triton picks compile vs interpret when first imported (I001 off here)
import fusegraph  # noqa: F401

import json
import os
import platform
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


def median_ms(fn: Callable[[], object]) -> float:
    """Median milliseconds of `fn` on the GPU (triton.testing.do_bench: CUDA events, warm-up, L2 flushed)."""
    from triton.testing import do_bench

    return do_bench(fn, return_mode="median")


def with_speedups(times: dict[str, float]) -> dict[str, float]:
    """Adds fusegraph's speedup over torch eager and torch.compile (ratios of do_bench medians)."""
    times["speedup_vs_eager"] = times["torch_eager_ms"] / times["fusegraph_ms"]
    times["speedup_vs_torch_compile"] = times["torch_compile_ms"] / times["fusegraph_ms"]
    return times
