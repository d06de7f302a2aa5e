"""The fair benchmark, sized to a 15-minute GPU period: measures rows of bench/suite.py with every
contender of bench/harness.py and appends each to the results kept in the repository, so the next
run adds rows instead of repeating them.

    python -m bench.fair [--rows NAME ...] [--budget 480] [--rounds 5] [--out bench/results]
    python -m bench.fair --plan          # which rows would run next, and the time they are expected to take
    python -m bench.fair --cold-start    # also each row's first-call latency, cold and warm caches

Without --rows it takes the SUBSET rows this GPU has no result for, in order, while their expected
times fit in --budget seconds (expected times are rough: torch.compile's max-autotune dominates them).
Results: <out>/fair_<device>.jsonl (one JSON object per measured row) and fair_<device>.md, the table
made from all of them. `--scale tiny` runs the same machinery at interpreter sizes on the CPU (the
tests' dry run); its times are not performance figures and it writes nowhere unless --out is given."""

from __future__ import annotations

# NOTE: fusegraph before triton: Triton picks compile vs interpret when first imported (I001 off here)
import fusegraph

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

from bench.common import environment
from fusegraph.cli import sample_inputs
from bench.harness import forward_contenders, host_cost_per_launch, measure, optimizer_contenders, training_contenders
from bench.suite import ROWS, SUBSET, Row

TOLERANCE = {"exact": 1e-4, "tf32": 2e-2, "float16": 2e-2, "bfloat16": 1e-1}  # against eager, same dtype


def results_path(out: str, env: dict) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "_", env["device"].lower()).strip("_") if env["device_type"] == "cuda" else "cpu"
    return Path(out) / f"fair_{slug}.jsonl"


def done_rows(path: Path) -> set[tuple[str, str, str, str]]:
    """(row, dtype, precision, memory format) of every result on file."""
    if not path.is_file():
        return set()
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["row"], r.get("dtype", "float32"), r.get("precision", "exact"), r.get("memory_format", "contiguous"))
            for r in records}


def runs_in(row: Row, dtype: str) -> bool:
    """Optimizer steps are fp32 only; forwards run in any dtype, training steps in half dtypes as mixed
    precision (a float32 model, torch's autocast against fg.compile(precision=...))."""
    return dtype == "float32" or row.optimizer_numel is None


def plan(rows: list[str] | None, path: Path, budget: float, dtype: str = "float32",
         precision: str = "exact", memory_format: str = "contiguous") -> list[Row]:
    """The rows named (`--rows` with no names: none), else the SUBSET rows not yet measured on this GPU in
    this dtype and precision, then the others, while their expected times fit in `budget`."""
    if rows is not None:
        unknown = [r for r in rows if r not in ROWS]
        if unknown:
            raise SystemExit(f"unknown rows {unknown}; rows: {list(ROWS)}")
        return [ROWS[r] for r in rows if runs_in(ROWS[r], dtype)]
    chosen, total, done = [], 0, done_rows(path)
    for name in SUBSET + [r for r in ROWS if r not in SUBSET]:
        row = ROWS[name]
        if (name, dtype, precision, memory_format) in done or not runs_in(row, dtype) \
                or total + row.expected_s > budget:
            continue
        chosen.append(row)
        total += row.expected_s
    return chosen


def contenders_for(row: Row, scale: str, precision: str, dtype: str = "float32", memory_format: str = "contiguous"):
    """The row's contenders (built, each called once) and what was left out: a forward, a training step
    or an optimizer step."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if row.optimizer_numel is not None:
        numel = row.optimizer_numel(scale)
        return (*optimizer_contenders(numel, device), [torch.empty(numel, device=device)])
    if row.loss is None:
        model, feeds = row.build(scale, dtype)
        feeds = [f.to(device, getattr(torch, dtype)) for f in feeds]
        return (*forward_contenders(model, feeds, precision, memory_format=memory_format), feeds)
    from bench.bench_training import targets

    model, feeds = row.build(scale, "float32")  # a half dtype trains a float32 model in mixed precision
    feeds = [f.to(device) for f in feeds]
    target = targets(model, row.loss, len(feeds[0])).to(device)
    amp = None if dtype == "float32" else dtype
    return (*training_contenders(model, feeds, target, row.loss, precision, memory_format=memory_format, amp=amp),
            feeds)


def run_row(row: Row, scale: str, rounds: int, precision: str, first_call: bool = False,
            dtype: str = "float32", profiled: bool = False, memory_format: str = "contiguous") -> dict:
    start = time.perf_counter()
    contenders, left_out, feeds = contenders_for(row, scale, precision, dtype, memory_format)
    device = feeds[0].device.type
    tolerance = TOLERANCE[precision if dtype == "float32" else dtype]
    outcome = measure(contenders, left_out, rounds, tolerance, precision, training=row.loss is not None)
    result = {"row": row.name, "scale": scale, "precision": precision, "dtype": dtype, "memory_format": memory_format,
              **({"mixed_precision": True} if row.loss is not None and dtype != "float32" else {}),
              "shape": [list(f.shape) for f in feeds], **outcome.summary(),
              "wall_s": round(time.perf_counter() - start, 1)}
    if profiled:
        result["profile"] = kernel_profiles(contenders)
    if first_call:
        result["first_call_cold_warm_s"] = first_call_latency(row, scale, precision, dtype)
    if row.moved_bytes is not None:
        moved = row.moved_bytes(scale) * torch.finfo(getattr(torch, dtype)).bits // 32
        result["moved_bytes"] = moved
        result["copy_ms"] = _copy_ms(moved, device)
    return result


def kernel_profiles(contenders: list, top: int = 8) -> dict:
    """Where fusegraph's and eager's time goes: GPU microseconds per kernel (bench/profile_gpu.py's
    torch.profiler trace), the largest `top` of each."""
    if not torch.cuda.is_available():
        return {"left_out": "kernel profiles need a CUDA GPU"}
    from bench.profile_gpu import kernel_times

    profiles = {}
    for contender in contenders:
        if contender.name in ("fusegraph", "eager"):
            times = kernel_times(contender.run)
            profiles[contender.name] = {"total_us": times["total_us"], "kernels": times["kernels"][:top]}
    return profiles


def _copy_ms(moved: int, device: str) -> float:
    """A device-to-device copy moving the same bytes (half read, half written): the bandwidth ceiling."""
    from bench.harness import timer

    src = torch.empty(moved // 8, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    return timer()(lambda: dst.copy_(src))


def first_calls(row: Row, scale: str, precision: str, dtype: str = "float32") -> dict[str, float]:
    """Seconds from nothing to the first result, per contender (codegen, Triton JIT, Inductor, capture),
    in this process: call it in a fresh one."""
    contenders, _, _ = contenders_for(row, scale, precision, dtype)
    return {c.name: round(c.first_call_s, 3) for c in contenders}


def first_call_latency(row: Row, scale: str, precision: str, dtype: str = "float32") -> dict[str, dict[str, float]]:
    """First-call seconds with cold caches (fresh, empty fusegraph / Triton / Inductor cache folders, a new
    process) and then warm ones (the same folders, another new process)."""
    import os
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fusegraph-first-call-") as folder:
        env = {**os.environ, "FUSEGRAPH_CACHE": f"{folder}/fusegraph", "TRITON_CACHE_DIR": f"{folder}/triton",
               "TORCHINDUCTOR_CACHE_DIR": f"{folder}/inductor"}
        results = {}
        for kind in ("cold", "warm"):
            done = subprocess.run([sys.executable, "-m", "bench.fair", "--first-call", row.name, "--scale", scale,
                                   "--precision", precision, "--dtype", dtype], env=env, capture_output=True,
                                  text=True, check=True)
            results[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def markdown(records: list[dict], env: dict, path: Path) -> str:
    lines = [f"# Fair benchmark on {env['device']}", "",
             f"Produced by `bench/fair.py` into `{path.name}`; torch {env['torch']}, Triton {env['triton']}. Each cell: "
             "median ms over interleaved rounds; ratios are (contender / fusegraph) per round, median [min-max] "
             "(> 1: fusegraph faster). fp32 'exact': torch TF32 off vs fusegraph ieee (tf32x3 beside it); "
             "every contender checked against eager in the same run.", ""]
    for record in records:
        if "host_cost" in record:
            cost = record["host_cost"]
            lines.append(f"- **{record['row']}**: {cost['fusegraph_us_per_launch']:.1f} us per launch vs "
                         f"{cost['bare_triton_us_per_launch']:.1f} us for bare Triton launches of the same "
                         f"{cost['launches_per_call']} kernels: {cost['ratio']:.2f}x (target <= 1.5x)")
            continue
        ratios = ", ".join(f"{name} {r['median']:.2f}x [{r['min']:.2f}-{r['max']:.2f}]"
                           for name, r in record["ratios_vs_fusegraph"].items())
        times = ", ".join(f"{name} {ms:.3f}" for name, ms in record["median_ms"].items())
        stored = ", channels-last" if record.get("memory_format") == "channels_last" else ""
        dtype = f"{record['dtype']} mixed precision" if record.get("mixed_precision") else record["dtype"]
        lines.append(f"- **{record['row']}** ({dtype}, {record['precision']}{stored}, {record['rounds']} rounds): "
                     f"{times} ms; {ratios}")
        if "copy_ms" in record:
            lines.append(f"  - bandwidth: fusegraph at {record['copy_ms'] / record['median_ms']['fusegraph']:.0%} "
                         f"of a device copy of the same {record['moved_bytes'] / 1e6:.0f} MB")
        for name, profile in record.get("profile", {}).items():
            if isinstance(profile, dict):
                top = ", ".join(f"{k['name'][:40]} {k['us']:.0f}" for k in profile["kernels"][:4])
                lines.append(f"  - {name} kernels, us: {top} (total {profile['total_us']:.0f})")
        if "first_call_cold_warm_s" in record:
            lines.append("  - first call, s: " + "; ".join(
                f"{kind}: " + ", ".join(f"{name} {sec:.2f}" for name, sec in calls.items())
                for kind, calls in record["first_call_cold_warm_s"].items()))
        if record["left_out"]:
            lines.append("  - left out: " + "; ".join(f"{k}: {v}" for k, v in record["left_out"].items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="*", default=None)
    parser.add_argument("--budget", type=float, default=480.0, help="seconds of expected row time to spend")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--precision", choices=["exact", "tf32"], default="exact", help="fp32 pairing")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                        help="forward rows in this dtype; training rows in it as mixed precision (autocast); "
                             "optimizer rows are fp32 only")
    parser.add_argument("--memory-format", choices=["contiguous", "channels_last"], default="contiguous",
                        help="how every contender stores images and conv weights (torch: .to(memory_format=...))")
    parser.add_argument("--scale", choices=["full", "tiny"], default="full")
    parser.add_argument("--out", default=None, help="results folder (default bench/results at full scale)")
    parser.add_argument("--plan", action="store_true", help="print the rows that would run and their expected time")
    parser.add_argument("--first-call", metavar="ROW", help="print one row's first-call seconds per contender (JSON)")
    parser.add_argument("--host-cost", nargs="*", metavar="MODEL", default=None,
                        help="also each zoo model's host cost per launch against bare Triton launches (default: all)")
    parser.add_argument("--profile", action="store_true", help="also each row's per-kernel GPU time (torch.profiler)")
    parser.add_argument("--cold-start", action="store_true",
                        help="also measure each row's first call with cold and warm caches (two fresh processes)")
    args = parser.parse_args(argv)
    if args.first_call:
        print(json.dumps(first_calls(ROWS[args.first_call], args.scale, args.precision, args.dtype)))
        return 0
    env = environment()
    out = args.out or ("bench/results" if args.scale == "full" else None)
    path = results_path(out or "bench/results", env)
    rows = plan(args.rows, path, args.budget, args.dtype, args.precision, args.memory_format)
    print(f"{len(rows)} rows, expected about {sum(r.expected_s for r in rows)} s on the GPU: {[r.name for r in rows]}")
    if args.plan:
        return 0
    if args.scale == "full" and env["device_type"] != "cuda":
        print("full-size rows need a CUDA GPU; use --scale tiny for a dry run", file=sys.stderr)
        return 2
    # NOTE: host cost first: it is quick and it is a target; rows may run into the stage's time limit
    for name in [] if args.host_cost is None else args.host_cost or list(fusegraph.zoo.MODELS):
        model = fusegraph.zoo.get(name)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        feeds = [f.to(device) for f in sample_inputs(model, batch=1)]
        cost = host_cost_per_launch(model, feeds, calls=200 if args.scale == "full" else 2)
        save({"row": f"host cost per launch: {name}", "scale": args.scale, "host_cost": cost, "environment": env},
             out, path, env)
    for row in rows:
        record = run_row(row, args.scale, args.rounds, args.precision, args.cold_start, args.dtype, args.profile,
                         args.memory_format)
        save({**record, "environment": env}, out, path, env)
    return 0


def save(record: dict, out: str | None, path: Path, env: dict) -> None:
    """Print one record and, with a results folder, append it and remake the table (a run cut off keeps
    what it measured)."""
    print(json.dumps(record))
    if out is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.with_suffix(".md").write_text(markdown(records, env, path))


if __name__ == "__main__":
    sys.exit(main())
