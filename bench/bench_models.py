"""Per zoo model, fused and unfused: launches per forward, analytic bytes moved against the minimum
(inputs + weights + outputs), compile time, and on a CUDA GPU the forward time of the fused model
against torch eager and torch.compile on the same shapes.

    python -m bench.bench_models [--batch 64] [--out bench/results]

Writes <out>/models_<device>.json and .md. On the CPU (Triton's interpreter) no timings are
recorded: interpreter times are not performance figures."""

from __future__ import annotations

import os
import tempfile
import time

import fusegraph as fg
from bench.common import NO_TIMINGS, forward_timings, run_per_model
from fusegraph.checks import sample_inputs
from fusegraph.ir.cost import graph_traffic, minimum_bytes

SWEEP = (1, 4, 8, 64, 256)  # batch sizes for the bytes-vs-minimum sweep: weights dominate small batches


def compile_seconds(model: fg.Model) -> tuple[float, float]:
    """(cold, warm): a compile against an empty kernel cache, then again with it filled.
    Passes + codegen + loading the sources; Triton's own JIT happens at the first launch."""
    previous = os.environ.get("FUSEGRAPH_CACHE")
    with tempfile.TemporaryDirectory() as folder:
        os.environ["FUSEGRAPH_CACHE"] = folder
        start = time.perf_counter()
        fg.compile(model)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        fg.compile(model)
        warm = time.perf_counter() - start
    if previous is None:
        os.environ.pop("FUSEGRAPH_CACHE")
    else:
        os.environ["FUSEGRAPH_CACHE"] = previous
    return cold, warm


def bench_model(name: str, batch: int) -> dict:
    model = fg.zoo.get(name)
    cold, warm = compile_seconds(model)
    row = {"model": name, "batch": batch, "compile_cold_s": cold, "compile_warm_s": warm,
           "bytes_minimum": minimum_bytes(model.graph, batch)}
    for fuse in (False, True):
        compiled = fg.compile(model, fuse=fuse)
        feeds = [f.to(compiled.device) for f in sample_inputs(model, batch)]
        compiled(feeds)
        traffic = graph_traffic(compiled.graph, batch)
        key = "fused" if fuse else "unfused"
        row[key] = {"launches_per_forward": compiled.last_launches, "bytes_moved": sum(t.total for t in traffic),
                    "per_kernel": [{"node": t.node.name, "kernel": t.node.attrs.get("kernel", t.node.op)
                                    if t.node.op == "fused" else t.node.op, "launches": t.launches,
                                    "read": t.read, "written": t.written} for t in traffic],
                    **compiled.memory_report(batch)}
        row[key]["bytes_vs_minimum"] = row[key]["bytes_moved"] / row["bytes_minimum"]
        row[key]["bytes_vs_minimum_by_batch"] = {  # string keys, as JSON keeps them
            str(b): sum(t.total for t in graph_traffic(compiled.graph, b)) / minimum_bytes(model.graph, b)
            for b in SWEEP}
        if fuse and compiled.device == "cuda":
            row.update(forward_timings(model, feeds))
    return row


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [f"# Zoo models, fused vs unfused (batch {results['batch']})", "",
             f"Produced by `{results['benchmark']}`. Device: {env['device']}; torch {env['torch']}, "
             f"Triton {env['triton']}, Python {env['python']}. Bytes are analytic (each kernel reads its inputs "
             "and writes its outputs once); the minimum is inputs + weights + outputs.", ""]
    gpu = env["device_type"] == "cuda"
    head = ("| model | launches fused / unfused | bytes fused | bytes unfused | minimum | fused / minimum "
            "| compile cold / warm (s) |")
    rule = "|---|---:|---:|---:|---:|---:|---:|"
    if gpu:
        lines += ["fusegraph replays a CUDA graph of its launches; 'launching' is the same kernels launched one "
                  "by one; 'compile+graphs' is torch.compile(mode='reduce-overhead'). torch runs with TF32 off; "
                  "fusegraph's fp32 dots run as tf32x3 (three TF32 passes, fp32-accurate: largest error against "
                  "eager in the JSON).", ""]
        head += (" fusegraph ms | launching ms | eager ms | torch.compile ms | compile+graphs ms | vs eager "
                 "| vs compile | vs compile+graphs |")
        rule += "---:|---:|---:|---:|---:|---:|---:|---:|"
    lines += [head, rule]
    for r in results["models"]:
        f, u = r["fused"], r["unfused"]
        line = (f"| {r['model']} | {f['launches_per_forward']} / {u['launches_per_forward']} | "
                f"{f['bytes_moved']:,} | {u['bytes_moved']:,} | {r['bytes_minimum']:,} | "
                f"{f['bytes_vs_minimum']:.2f}x | {r['compile_cold_s']:.3f} / {r['compile_warm_s']:.3f} |")
        if gpu:
            line += (f" {r['fusegraph_ms']:.3f} | {r['fusegraph_launching_ms']:.3f} | {r['torch_eager_ms']:.3f} | "
                     f"{r['torch_compile_ms']:.3f} | {r['torch_compile_graphs_ms']:.3f} | {r['speedup_vs_eager']:.2f}x | "
                     f"{r['speedup_vs_torch_compile']:.2f}x | {r['speedup_vs_torch_compile_graphs']:.2f}x |")
        lines.append(line)
    lines += ["", "Fused bytes over the minimum by batch size (weights are read once per forward, so small "
              "batches sit near 1x; the gap at large batches is the activations passed between kernels):", "",
              "| model | " + " | ".join(f"batch {b}" for b in SWEEP) + " |", "|---|" + "---:|" * len(SWEEP)]
    for r in results["models"]:
        sweep = r["fused"].get("bytes_vs_minimum_by_batch")
        if sweep is None:  # results written before the sweep existed
            continue
        lines.append(f"| {r['model']} | " + " | ".join(f"{sweep[str(b)]:.2f}x"
                                                       for b in SWEEP) + " |")
    if not gpu:
        lines += ["", NO_TIMINGS]
    return "\n".join(lines) + "\n"


def main() -> None:
    run_per_model(__doc__, "models", list(fg.zoo.MODELS), bench_model, markdown)


if __name__ == "__main__":
    main()
