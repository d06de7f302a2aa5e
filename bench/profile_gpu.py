"""GPU only: where each zoo model's time goes, kernel by kernel (torch.profiler's CUDA activity).

    python -m bench.profile_gpu [--batch 256] [--models lenet ...] [--out bench/results]

For one forward and one training step (SGD with momentum) at the given batch, fusegraph's kernels
launched one by one (so the profiler sees each by name) and torch eager's: every kernel's GPU time,
summed over its launches, largest first. What this answers that the timing benchmarks do not: which
kernel to make faster next. Writes <out>/profile_<device>.json and .md."""

from __future__ import annotations

import argparse
import sys

import torch
from torch.profiler import ProfilerActivity, profile

import fusegraph as fg
from bench.bench_training import MODELS, targets, torch_loss
from bench.common import environment, gpu_or_explain, write
from fusegraph.checks import sample_inputs

TOP = 8  # kernels listed per run in the markdown (the JSON keeps them all)


def kernel_times(run, repeats: int = 5) -> dict:
    """GPU microseconds per kernel name over `repeats` runs (after one warm-up), and their total."""
    run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as trace:
        for _ in range(repeats):
            run()
        torch.cuda.synchronize()
    kernels = sorted(((e.key, e.device_time_total / repeats, e.count // repeats) for e in trace.key_averages()
                      if e.device_time_total > 0), key=lambda k: -k[1])
    return {"total_us": sum(us for _, us, _ in kernels),
            "kernels": [{"name": name, "us": us, "launches": count} for name, us, count in kernels]}


def profile_model(name: str, batch: int) -> dict:
    model, loss = fg.zoo.get(name), MODELS[name]
    feeds = [f.cuda() for f in sample_inputs(model, batch)]
    target = targets(model, loss, batch).cuda()
    inference = fg.compile(model, cuda_graphs=False)
    trainer = fg.compile(model, loss=loss, optimizer=fg.optim.SGD(lr=0.01, momentum=0.9), cuda_graphs=False)
    module = model.to_torch().cuda()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)

    def torch_step():
        optimizer.zero_grad(set_to_none=True)
        torch_loss(model, module(*feeds), target, loss).backward()
        optimizer.step()

    with torch.no_grad():
        runs = {"fusegraph forward": kernel_times(lambda: inference(feeds)),
                "torch eager forward": kernel_times(lambda: module.eval()(*feeds))}
    module.train()
    runs["fusegraph training step"] = kernel_times(lambda: trainer.train_step(feeds, target))
    runs["torch eager training step"] = kernel_times(torch_step)
    return {"model": name, "batch": batch, "runs": runs}


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [f"# Kernel time per zoo model on {env['device']}", "",
             f"Produced by `{results['benchmark']}`; torch {env['torch']}, Triton {env['triton']}. GPU time of each "
             "kernel (torch.profiler, CUDA activity), launched one by one, averaged over 5 runs after a warm-up; "
             f"the {TOP} largest per run. Launch gaps are not included: see the timing benchmarks for wall time.", ""]
    for row in results["models"]:
        lines += [f"## {row['model']} (batch {row['batch']})", "", "| run | kernel | launches | us | share |",
                  "|---|---|---:|---:|---:|"]
        for run, measured in row["runs"].items():
            for k in measured["kernels"][:TOP]:
                share = k["us"] / measured["total_us"] if measured["total_us"] else 0.0
                lines.append(f"| {run} | `{k['name'][:70]}` | {k['launches']} | {k['us']:.1f} | {share:.0%} |")
            lines.append(f"| {run} | total | | {measured['total_us']:.1f} | |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    if not gpu_or_explain("profile_gpu.py"):
        return 0
    results = {"benchmark": "bench/profile_gpu.py", "environment": environment(), "models": []}
    for name in args.models:
        results["models"].append(profile_model(name, args.batch))
        write(results, args.out, "profile", markdown)  # after each model: a cut-off run keeps what it measured
    return 0


if __name__ == "__main__":
    sys.exit(main())
