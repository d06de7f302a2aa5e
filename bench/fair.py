"""The fair benchmark, sized to one 10-minute call of a 15-minute GPU loan: measures jobs of
bench/suite.py (a row in a dtype, precision and memory format, or a zoo model's host cost per launch)
with every contender of bench/harness.py and appends each record to the results kept in the
repository, so the next run measures what is not on file yet.

    python -m bench.fair [--budget 480] [--rounds 5] [--out bench/results]   # the plan below
    python -m bench.fair --plan                     # what would run, and the time it is expected to take
    python -m bench.fair --rows NAME ... [--dtype float16] [--memory-format channels_last]
    python -m bench.fair --host-cost lenet ...      # only those models' host cost per launch
    python -m bench.fair --cold-start               # also each row's first-call latency, cold and warm caches

Without --rows it plans suite.FIRST_CALL (host costs among them), then the SUBSET rows in float32,
then the others: those not on file for this GPU, while their times (measured on an earlier run, else
expected) fit --budget. The budget holds while running: no job starts that cannot finish in what is
left of it. On a GPU each job runs in its own process (--isolate), killed when it outlasts what is left
(or twice its time plus a minute): a crash, a hang or a poisoned CUDA context ends that job only. Every
failure (a row, a contender, a host-cost model) is recorded with its exception and last frames, and the
run goes on. Results: <out>/fair_<device>.jsonl (one JSON object per job, appended atomically) and
fair_<device>.md, the table made from the latest record of each job. `--scale tiny` runs the same
machinery at interpreter sizes on the CPU (the tests' dry run); its times are not performance figures
and it writes nowhere unless --out is given."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

import torch

import fusegraph
from bench import records
from bench.common import environment
from bench.harness import forward_contenders, measure, optimizer_contenders, training_contenders
from bench.host_cost import host_cost_per_launch
from bench.suite import HOST_COST_EXPECTED_S, Job, Row
from fusegraph.checks import sample_inputs

TOLERANCE = {"exact": 1e-4, "tf32": 2e-2, "float16": 2e-2, "bfloat16": 1e-1}  # against eager, same dtype
GPU_TESTS_LIMIT_S = 150  # bench/gpu_check.sh's `tests` stage: the second device call
JOB_LIMIT_FACTOR, JOB_LIMIT_MARGIN_S = 2, 60  # an isolated job is killed past factor x its time + margin
OUTPUT_TAIL = 30  # lines of a killed or crashed job's output kept in its record


def results_path(out: str, env: dict) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "_", env["device"].lower()).strip("_") if env["device_type"] == "cuda" else "cpu"
    return Path(out) / f"fair_{slug}.jsonl"


def job_key(record: dict) -> tuple[str, str, str, str]:
    return (record["row"], record.get("dtype", "float32"), record.get("precision", "exact"),
            record.get("memory_format", "contiguous"))


def done_jobs(path: Path) -> set[tuple[str, str, str, str]]:
    """The key of every job on file that measured something (a failed job is tried again)."""
    return {job_key(r) for r in records.read(path) if "row_failed" not in r}


def measured_seconds(path: Path) -> dict[tuple[str, str, str, str], float]:
    """Each job's wall time on its latest record on file (a killed job: the time it was given)."""
    return {job_key(r): float(r["wall_s"]) for r in records.read(path) if "wall_s" in r}


def runs_in(row: Row, dtype: str) -> bool:
    """Optimizer steps are fp32 only; forwards run in any dtype, training steps in half dtypes as mixed
    precision (a float32 model, torch's autocast against fg.compile(precision=...))."""
    return dtype == "float32" or row.optimizer_numel is None


def expected_seconds(job: Job, suite: ModuleType, measured: dict) -> float:
    if job.key in measured:
        return measured[job.key]
    return HOST_COST_EXPECTED_S if job.host_cost else suite.ROWS[job.row].expected_s


def plan(suite: ModuleType, path: Path, budget: float, rows: list[str] | None = None, host_cost: list[str] | None = None,
         dtype: str = "float32", precision: str = "exact", memory_format: str = "contiguous") -> list[Job]:
    """The jobs named (`--rows` / `--host-cost`), else suite.FIRST_CALL, then the SUBSET rows, then the
    others (float32, `precision`), leaving out those on file and those that would not fit in `budget`
    seconds."""
    if rows is not None or host_cost is not None:
        unknown = [r for r in rows or [] if r not in suite.ROWS]
        if unknown:
            raise SystemExit(f"unknown rows {unknown}; rows: {list(suite.ROWS)}")
        models = [m for m in host_cost or [] if m not in fusegraph.zoo.MODELS]
        if models:
            raise SystemExit(f"unknown zoo models {models}; models: {list(fusegraph.zoo.MODELS)}")
        return [Job(m, host_cost=True) for m in host_cost or []] + \
            [Job(r, dtype, precision, memory_format) for r in rows or [] if runs_in(suite.ROWS[r], dtype)]
    candidates = list(suite.FIRST_CALL)
    ordered = suite.SUBSET + [r for r in suite.ROWS if r not in suite.SUBSET]
    candidates += [Job(r, precision=precision) for r in ordered]
    done, measured = done_jobs(path), measured_seconds(path)
    chosen, total = [], 0.0
    for job in candidates:
        seconds = expected_seconds(job, suite, measured)
        if job.key in done or job in chosen or total + seconds > budget:
            continue
        chosen.append(job)
        total += seconds
    return chosen


def contenders_for(row: Row, scale: str, precision: str, dtype: str = "float32", memory_format: str = "contiguous"):
    """The row's lineup (contenders built, each called) and its feeds: a forward, a training step or an
    optimizer step."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if row.optimizer_numel is not None:
        numel = row.optimizer_numel(scale)
        return optimizer_contenders(numel, device), [torch.empty(numel, device=device)]
    if row.loss is None:
        model, feeds = row.build(scale, dtype)
        feeds = [f.to(device, getattr(torch, dtype)) for f in feeds]
        return forward_contenders(model, feeds, precision, memory_format=memory_format, torch_form=row.torch_form), feeds
    from bench.bench_training import targets

    model, feeds = row.build(scale, "float32")  # a half dtype trains a float32 model in mixed precision
    feeds = [f.to(device) for f in feeds]
    target = targets(model, row.loss, len(feeds[0])).to(device)
    amp = None if dtype == "float32" else dtype
    return (training_contenders(model, feeds, target, row.loss, precision, memory_format=memory_format, amp=amp,
                                torch_form=row.torch_form), feeds)


def run_row(row: Row, scale: str, rounds: int, precision: str, first_call: bool = False,
            dtype: str = "float32", profiled: bool = False, memory_format: str = "contiguous") -> dict:
    import torch._dynamo

    start = time.perf_counter()
    torch._dynamo.reset()  # NOTE: each row compiles afresh: no recompile limit carried over from the last
    lineup, feeds = contenders_for(row, scale, precision, dtype, memory_format)
    device = feeds[0].device.type
    tolerance = TOLERANCE[precision if dtype == "float32" else dtype]
    outcome = measure(lineup, rounds, tolerance, precision, training=row.loss is not None)
    result = {"row": row.name, "scale": scale, "precision": precision, "dtype": dtype, "memory_format": memory_format,
              **({"mixed_precision": True} if row.loss is not None and dtype != "float32" else {}),
              "shape": [list(f.shape) for f in feeds], **outcome.summary()}
    if profiled:
        result["profile"] = kernel_profiles(lineup.contenders)
    if first_call:
        result["first_call_cold_warm_s"] = first_call_latency(row, scale, precision, dtype)
    if row.moved_bytes is not None:
        moved = row.moved_bytes(scale) * torch.finfo(getattr(torch, dtype)).bits // 32
        result["moved_bytes"] = moved
        result["copy_ms"] = _copy_ms(moved, device)
    work = arithmetic(row, scale, dtype)
    if work is not None:
        result["work"] = work
        if device == "cuda" and "fusegraph" in result.get("median_ms", {}):
            result["roofline"] = roofline(work, ceilings(dtype, precision), result["median_ms"]["fusegraph"])
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


def arithmetic(row: Row, scale: str, dtype: str) -> dict | None:
    """What one call of a model row must do (ir/cost.py): the FLOPs of its convs and matmuls (forward, or the
    training step's forward and gradients) and the fewest bytes it can move (inputs and weights read once,
    outputs written once; half precision halves them, mixed-precision weights stay float32 in this count)."""
    from fusegraph.ir.cost import graph_flops, minimum_bytes
    from fusegraph.passes.autodiff import autodiff

    if row.optimizer_numel is not None:
        return None
    model, feeds = row.build(scale, "float32")
    if model is None:
        return None
    batch = feeds[0].shape[0]
    graph = model.graph if row.loss is None else autodiff(model.graph, row.loss)
    bits = torch.finfo(getattr(torch, dtype)).bits
    return {"flops": graph_flops(graph, batch), "minimum_bytes": minimum_bytes(graph, batch) * bits // 32}


_CEILINGS: dict[tuple[str, str], dict] = {}


def ceilings(dtype: str, precision: str) -> dict:
    """This GPU's two ceilings, measured once per run (METHOD: datasheet rates are leads): device-to-device
    copy bandwidth (1 GiB, bytes read plus written) and the dense matrix rate of a 8192-cube torch.matmul in
    `dtype` (float32 under the row's TF32 setting), each the median of interleaved timings."""
    from bench.harness import timer, torch_settings

    key = (dtype, precision)
    if key not in _CEILINGS:
        src = torch.empty(1 << 28, dtype=torch.float32, device="cuda")
        dst = torch.empty_like(src)
        copy_ms = timer()(lambda: dst.copy_(src))
        size = 8192
        a = torch.randn(size, size, device="cuda", dtype=getattr(torch, dtype))
        b = torch.randn(size, size, device="cuda", dtype=getattr(torch, dtype))
        with torch_settings(precision):
            matmul_ms = timer()(lambda: a @ b)
        _CEILINGS[key] = {"copy_gb_per_s": round(2 * src.numel() * 4 / copy_ms / 1e6, 1),
                          "matmul_tflop_per_s": round(2 * size ** 3 / matmul_ms / 1e9, 1)}
    return _CEILINGS[key]


def roofline(work: dict, limits: dict, measured_ms: float) -> dict:
    """The floor a call cannot beat (its FLOPs at the matrix rate, or its bytes at the copy bandwidth: the
    larger) and how close fusegraph's median comes to it."""
    compute_ms = work["flops"] / (limits["matmul_tflop_per_s"] * 1e9)
    memory_ms = work["minimum_bytes"] / (limits["copy_gb_per_s"] * 1e6)
    floor_ms = max(compute_ms, memory_ms)
    return {**limits, "compute_ms": compute_ms, "memory_ms": memory_ms, "floor_ms": floor_ms,
            "bound": "compute" if compute_ms >= memory_ms else "memory",
            "fusegraph_of_floor": floor_ms / measured_ms}


def run_job(job: Job, suite: ModuleType, args: argparse.Namespace) -> dict:
    """One job's record; whatever it raises is the record's `row_failed`, never the end of the run."""
    start = time.perf_counter()
    base = {"row": job.name, "scale": args.scale, "dtype": job.dtype, "precision": job.precision,
            "memory_format": job.memory_format}
    try:
        if job.host_cost:
            model = fusegraph.zoo.get(job.row)
            device = "cuda" if torch.cuda.is_available() else "cpu"
            feeds = [f.to(device) for f in sample_inputs(model, batch=1)]
            cost = host_cost_per_launch(model, feeds, calls=200 if args.scale == "full" else 2)
            return {**base, "host_cost": cost, "wall_s": round(time.perf_counter() - start, 1)}
        return run_row(suite.ROWS[job.row], args.scale, args.rounds, job.precision, args.cold_start, job.dtype,
                       args.profile, job.memory_format)
    except Exception as error:  # NOTE: a row's failure is a result; the next row still runs
        return {**base, "row_failed": records.failure(error), "wall_s": round(time.perf_counter() - start, 1)}


def run_isolated(job: Job, args: argparse.Namespace, path: Path, limit: float) -> dict | None:
    """Runs `job` in a child process that appends its own record; if it crashes or outlasts `limit`
    seconds (it and its children are killed), the failure record, else None."""
    command = [sys.executable, "-m", "bench.fair", "--job", json.dumps(asdict(job)), "--suite", args.suite,
               "--scale", args.scale, "--rounds", str(args.rounds), "--out", str(path.parent),
               *(["--profile"] if args.profile else []), *(["--cold-start"] if args.cold_start else [])]
    before, start = len(records.read(path)), time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)  # NOTE: its own group: Inductor's workers die with it
    timed_out = False
    try:
        output, _ = child.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(child.pid, signal.SIGKILL)
        output, _ = child.communicate()
    except BaseException:
        os.killpg(child.pid, signal.SIGKILL)
        raise
    print(output, end="", flush=True)
    if len(records.read(path)) > before:
        return None
    why = f"killed after {limit:.0f} s (the time left to it)" if timed_out else \
        f"the job's process ended with {_exit_status(child.returncode)} before writing its record"
    return {"row": job.name, "scale": args.scale, "dtype": job.dtype, "precision": job.precision,
            "memory_format": job.memory_format, "wall_s": round(time.perf_counter() - start, 1),
            "row_failed": {"error": "Timeout" if timed_out else "Crash", "message": why,
                           "output_tail": output.splitlines()[-OUTPUT_TAIL:]}}


def _exit_status(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"


def kernel_profiles(contenders: list, top: int = 8) -> dict:
    """Where fusegraph's and eager's time goes: GPU microseconds per kernel (bench/profile_gpu.py's
    torch.profiler trace), the largest `top` of each."""
    if not torch.cuda.is_available():
        return {"left_out": "kernel profiles need a CUDA GPU"}
    from bench.profile_gpu import kernel_times

    profiles = {}
    for contender in contenders:
        if contender.name in ("fusegraph", "eager"):
            try:
                times = kernel_times(contender.run)
            except Exception as error:
                profiles[contender.name] = records.failure(error)
                continue
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
    lineup, _ = contenders_for(row, scale, precision, dtype)
    return {c.name: round(c.first_call_s, 3) for c in lineup.contenders}


def first_call_latency(row: Row, scale: str, precision: str, dtype: str = "float32") -> dict[str, dict[str, float]]:
    """First-call seconds with cold caches (fresh, empty fusegraph / Triton / Inductor cache folders, a new
    process) and then warm ones (the same folders, another new process)."""
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


def latest(all_records: list[dict]) -> list[dict]:
    """The latest record of each job, in the order jobs were first measured."""
    by_key: dict[tuple, dict] = {}
    for record in all_records:
        by_key.pop(job_key(record), None)
        by_key[job_key(record)] = record
    return list(by_key.values())


def markdown(all_records: list[dict], env: dict, path: Path) -> str:
    lines = [f"# Fair benchmark on {env['device']}", "",
             f"Produced by `bench/fair.py` into `{path.name}`; torch {env['torch']}, Triton {env['triton']}. Each cell: "
             "median ms over interleaved rounds; ratios are (contender / fusegraph) per round, median [min-max] "
             "(> 1: fusegraph faster); 'best torch' is the fastest torch contender that ran as itself and agreed "
             "with eager. fp32 'exact': torch TF32 off vs fusegraph ieee (tf32x3 beside it); cuDNN benchmark "
             "mode on for every torch contender; every contender checked against eager in the same run "
             "(training: the losses of steps 1-3). The latest record of each job.", ""]
    for record in latest(all_records):
        lines += _describe(record)
    return "\n".join(lines) + "\n"


def _describe(record: dict) -> list[str]:
    if "row_failed" in record:
        failed = record["row_failed"]
        return [f"- **{record['row']}** ({record.get('dtype', 'float32')}): FAILED after {record.get('wall_s', '?')} s: "
                f"{failed['error']}: {failed['message'][:300]}"]
    if "host_cost" in record:
        cost = record["host_cost"]
        return [f"- **{record['row']}** ({cost['launches_per_call']} launches, {cost['eager_ops_per_call']} eager ops "
                f"per call), us: fusegraph {cost['fusegraph_us_per_launch']:.1f} per launch, bare Triton "
                f"{cost['bare_triton_us_per_launch']:.1f}, eager {cost['eager_us_per_op']:.1f} per op "
                f"(fusegraph's kernels launched bare: {cost['fusegraph_kernels_bare_us_per_launch']:.1f}): "
                f"{cost['vs_bare_triton']:.2f}x bare Triton (goal <= {cost['goals']['vs_bare_triton']}x), "
                f"{cost['vs_eager_per_op']:.2f}x eager per op (goal <= {cost['goals']['vs_eager_per_op']}x)"]
    ratios = ", ".join(f"{name} {r['median']:.2f}x [{r['min']:.2f}-{r['max']:.2f}]"
                       for name, r in record["ratios_vs_fusegraph"].items())
    label = record.get("fusegraph_label", "fusegraph")
    times = ", ".join(f"{label if name == 'fusegraph' else name} {ms:.3f}" for name, ms in record["median_ms"].items())
    stored = ", channels-last" if record.get("memory_format") == "channels_last" else ""
    dtype = f"{record['dtype']} mixed precision" if record.get("mixed_precision") else record["dtype"]
    lines = [f"- **{record['row']}** ({dtype}, {record['precision']}{stored}, {record['rounds']} rounds): "
             f"{times} ms; {ratios}"]
    if "best_torch" in record:
        best = record["best_torch"]
        r = best["ratio"]
        lines.append(f"  - best torch: {best['name']} {best['median_ms']:.3f} ms; fusegraph {r['median']:.2f}x "
                     f"[{r['min']:.2f}-{r['max']:.2f}] its speed")
    if "roofline" in record:
        roof = record["roofline"]
        lines.append(f"  - roofline: {record['work']['flops'] / 1e9:.1f} GFLOP, {record['work']['minimum_bytes'] / 1e6:.0f} "
                     f"MB at least; floor {roof['floor_ms']:.3f} ms ({roof['bound']}-bound: "
                     f"{roof['matmul_tflop_per_s']:.0f} TFLOP/s matmul, {roof['copy_gb_per_s']:.0f} GB/s copy, measured); "
                     f"fusegraph at {roof['fusegraph_of_floor']:.0%} of the limit")
    if "copy_ms" in record and "fusegraph" in record["median_ms"]:
        lines.append(f"  - bandwidth: fusegraph at {record['copy_ms'] / record['median_ms']['fusegraph']:.0%} "
                     f"of a device copy of the same {record['moved_bytes'] / 1e6:.0f} MB")
    for name, profile in record.get("profile", {}).items():
        if isinstance(profile, dict) and "kernels" in profile:
            top = ", ".join(f"{k['name'][:40]} {k['us']:.0f}" for k in profile["kernels"][:4])
            lines.append(f"  - {name} kernels, us: {top} (total {profile['total_us']:.0f})")
    if "first_call_cold_warm_s" in record:
        lines.append("  - first call, s: " + "; ".join(
            f"{kind}: " + ", ".join(f"{name} {sec:.2f}" for name, sec in calls.items())
            for kind, calls in record["first_call_cold_warm_s"].items()))
    for name, reason in record.get("eager_fallbacks", {}).items():
        lines.append(f"  - {name} not timed: {reason}")
    for name, failed in record.get("failed", {}).items():
        lines.append(f"  - {name} FAILED: {failed['error']}: {failed['message'][:200]}")
    if record["left_out"]:
        lines.append("  - left out: " + "; ".join(f"{k}: {v}" for k, v in record["left_out"].items()))
    return lines


def save(record: dict, out: str | None, path: Path, env: dict) -> None:
    """Print one record and, with a results folder, append it and remake the table (a run cut off keeps
    what it measured)."""
    print(json.dumps(record), flush=True)
    if out is None:
        return
    records.append(path, record)
    remake_table(path, env)


def remake_table(path: Path, env: dict) -> None:
    path.with_suffix(".md").write_text(markdown(records.read(path), env, path))


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="*", default=None)
    parser.add_argument("--host-cost", nargs="*", metavar="MODEL", default=None,
                        help="zoo models whose host cost per launch to measure (with --rows: besides them)")
    parser.add_argument("--budget", type=float, default=480.0,
                        help="seconds this run may take: no job starts that cannot finish within them")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--precision", choices=["exact", "tf32"], default="exact", help="fp32 pairing")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                        help="--rows in this dtype (training rows as mixed precision: autocast); optimizer rows "
                             "are fp32 only")
    parser.add_argument("--memory-format", choices=["contiguous", "channels_last"], default="contiguous",
                        help="how every contender stores images and conv weights (torch: .to(memory_format=...))")
    parser.add_argument("--scale", choices=["full", "tiny"], default="full")
    parser.add_argument("--out", default=None, help="results folder (default bench/results at full scale)")
    parser.add_argument("--suite", default="bench.suite", help="the module whose ROWS, FIRST_CALL, ... to run")
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                        help="each job in its own process (default: on at full scale)")
    parser.add_argument("--plan", action="store_true", help="print the jobs that would run and their expected time")
    parser.add_argument("--first-call", metavar="ROW", help="print one row's first-call seconds per contender (JSON)")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # one job, as JSON: what an isolated child runs
    parser.add_argument("--profile", action="store_true", help="also each row's per-kernel GPU time (torch.profiler)")
    parser.add_argument("--cold-start", action="store_true",
                        help="also measure each row's first call with cold and warm caches (two fresh processes)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = arguments(argv)
    suite = importlib.import_module(args.suite)
    if args.first_call:
        print(json.dumps(first_calls(suite.ROWS[args.first_call], args.scale, args.precision, args.dtype)))
        return 0
    env = environment()
    out = args.out or ("bench/results" if args.scale == "full" else None)
    path = results_path(out or "bench/results", env)
    if args.job:
        save({**run_job(Job(**json.loads(args.job)), suite, args), "environment": env}, out, path, env)
        return 0
    jobs = plan(suite, path, args.budget, args.rows, args.host_cost, args.dtype, args.precision, args.memory_format)
    measured = measured_seconds(path)
    print(f"{len(jobs)} jobs, expected about {sum(expected_seconds(j, suite, measured) for j in jobs):.0f} s "
          f"of a {args.budget:.0f} s budget:")
    for job in jobs:
        print(f"  {expected_seconds(job, suite, measured):5.0f} s  {job.name} ({job.dtype}, {job.precision}, "
              f"{job.memory_format})")
    if args.plan:
        print(f"then, in a second call: bash bench/gpu_check.sh OUT tests (the GPU tests, limit {GPU_TESTS_LIMIT_S} s)")
        return 0
    if args.scale == "full" and env["device_type"] != "cuda":
        print("full-size rows need a CUDA GPU; use --scale tiny for a dry run", file=sys.stderr)
        return 2
    isolate = args.scale == "full" if args.isolate is None else args.isolate
    if isolate and out is None:
        raise SystemExit("--isolate needs --out: each job's process appends its record there")
    deadline = started + args.budget
    # NOTE: a stage's `timeout` sends SIGTERM: unwind, so that a running job's process group is killed too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    for job in jobs:
        left, needs = deadline - time.monotonic(), expected_seconds(job, suite, measured)
        if needs > left:
            print(f"skipped {job.name}: expected {needs:.0f} s, {left:.0f} s of the budget left", flush=True)
            continue
        if isolate:
            crashed = run_isolated(job, args, path, limit=min(left, JOB_LIMIT_FACTOR * needs + JOB_LIMIT_MARGIN_S))
            if crashed is not None:
                save({**crashed, "environment": env}, out, path, env)
        else:
            save({**run_job(job, suite, args), "environment": env}, out, path, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
