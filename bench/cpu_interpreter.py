"""What a user without a GPU waits for: fusegraph's kernels in Triton's CPU interpreter against PyTorch
eager on the same CPU, in the same run.

    python -m bench.cpu_interpreter [--rounds 5] [--batch 64] [--demo] [--out bench/results]

LeNet-5 on 28x28 images (zoo `lenet`) at batch 64: one forward and one training step (cross-entropy,
SGD with momentum 0.9, the loss read back), fusegraph's compiled model and Trainer against the same
net as torch.nn modules (`to_torch()`) with torch.optim.SGD. Before anything is timed, both sides'
forward outputs, three steps' losses and one batch's gradients are compared (the interpreter must not
change a number). Rounds interleave the contenders (each round starts with another); medians with
their min-max, and fusegraph's time over eager's per round. `--demo` also times `fusegraph demo`'s
training (the digits task) once, against the same epochs in PyTorch eager. Writes
<out>/cpu_interpreter.json and .md: CPU timings, meaningful only against each other on one machine."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import fusegraph as fg
from bench.bench_training import torch_loss
from fusegraph.kernels.triton_env import INTERPRETING

FORWARD_TOLERANCE, GRADIENT_TOLERANCE = 1e-4, 1e-4  # fp32, relative to each tensor's largest entry


def inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, 28, 28, generator=generator), torch.randint(0, 10, (batch,), generator=generator)


def contenders(batch: int) -> tuple[dict, dict]:
    """The four timed calls, and what was checked before timing them."""
    model = fg.zoo.lenet()
    model.init(0)
    x, y = inputs(batch)
    eager, module, reference = model.to_torch().eval(), model.to_torch().train(), model.to_torch()
    compiled = fg.compile(model)
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.SGD(lr=0.01, momentum=0.9))
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)

    def torch_step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = torch_loss(model, module(x), y, "cross_entropy")
        loss.backward()
        optimizer.step()
        return loss.item()

    checks = check(model, compiled, trainer, eager, reference, x, y, torch_step)

    def eager_forward():
        with torch.no_grad():
            return eager(x)

    calls = {"fusegraph forward": lambda: compiled(x), "eager forward": eager_forward,
             "fusegraph step": lambda: trainer.train_step(x, y), "eager step": torch_step}
    return calls, checks


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def check(model, compiled, trainer, eager, reference, x, y, torch_step) -> dict:
    """Outputs, gradients and three steps' losses of fusegraph against torch (all from the same weights),
    before any timing."""
    with torch.no_grad():
        forward = _relative(compiled(x), eager(x))
    loss, grads = trainer.loss_and_grads(x, y)
    torch_loss(model, reference(x), y, "cross_entropy").backward()
    gradient = max(_relative(grads[name], p.grad) for name, p in reference.fusegraph_parameters().items())
    ours = [trainer.train_step(x, y) for _ in range(3)]
    theirs = [torch_step() for _ in range(3)]
    losses = max(abs(a - b) / max(abs(b), 1e-30) for a, b in zip(ours, theirs))
    result = {"forward_max_rel_error": forward, "gradient_max_rel_error": gradient, "loss_max_rel_error": losses,
              "first_loss": loss}
    if forward > FORWARD_TOLERANCE or gradient > GRADIENT_TOLERANCE or losses > GRADIENT_TOLERANCE:
        raise SystemExit(f"fusegraph disagrees with torch: {result}")
    return result


def interleaved(calls: dict, rounds: int) -> dict[str, list[float]]:
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


def summary(times: dict[str, list[float]]) -> dict:
    out = {name: {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts)} for name, ts in times.items()}
    for what in ("forward", "step"):
        per_round = [ours / theirs for ours, theirs in zip(times[f"fusegraph {what}"], times[f"eager {what}"])]
        out[f"{what} ratio"] = {"median": statistics.median(per_round), "min": min(per_round), "max": max(per_round)}
    return out


def demo_seconds() -> dict:
    """`fusegraph demo`'s digits training (its fit, early stopping included), and the same epochs of the
    same net, optimizer and batches in PyTorch eager."""
    import tempfile

    from fusegraph import data, demo

    with tempfile.TemporaryDirectory() as folder:
        ours = demo.digits(Path(folder), verbose=False, say=lambda *_: None)
    epochs = len(ours["history"]["loss"])
    x_train, y_train, x_test, y_test = data.digits(seed=0)
    x_fit, y_fit = x_train[:int(len(x_train) * 0.9)], y_train[:int(len(x_train) * 0.9)]
    model = fg.zoo.lenet((1, 8, 8))
    model.init(0)
    module = model.to_torch().train()
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in torch.randperm(len(x_fit), generator=generator).split(32):
            optimizer.zero_grad(set_to_none=True)
            torch_loss(model, module(x_fit[batch]), y_fit[batch], "cross_entropy").backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        accuracy = float((module.eval()(x_test).argmax(1) == y_test).float().mean())
    return {"fusegraph_fit_s": ours["seconds"], "eager_fit_s": seconds, "ratio": ours["seconds"] / seconds,
            "epochs": epochs, "fusegraph_accuracy": ours["accuracy"], "eager_accuracy": accuracy}


def markdown(results: dict) -> str:
    env, timed = results["environment"], results["timings"]
    lines = [f"# fusegraph in Triton's interpreter vs PyTorch eager, on the CPU ({env['cpus']} cores)", "",
             f"Produced by `bench/cpu_interpreter.py`; torch {env['torch']}, Triton {env['triton']}, "
             f"Python {env['python']}. LeNet-5 28x28, batch {results['batch']}, {results['rounds']} interleaved "
             "rounds; seconds, median [min-max]. Checked first: " + ", ".join(
                 f"{k} {v:.1e}" for k, v in results["checks"].items() if "error" in k) + ".", "",
             "| call | fusegraph | eager | fusegraph / eager |", "|---|---:|---:|---:|"]
    for what in ("forward", "step"):
        ours, theirs, ratio = timed[f"fusegraph {what}"], timed[f"eager {what}"], timed[f"{what} ratio"]
        lines.append(f"| {what} | {ours['median_s']:.3f} [{ours['min_s']:.3f}-{ours['max_s']:.3f}] | "
                     f"{theirs['median_s'] * 1e3:.1f} ms | {ratio['median']:.0f}x [{ratio['min']:.0f}-{ratio['max']:.0f}] |")
    if "demo" in results:
        demo = results["demo"]
        lines += ["", f"`fusegraph demo`'s training (digits, {demo['epochs']} epochs of LeNet-5 8x8, batch 32, Adam; "
                      f"one run each): fusegraph {demo['fusegraph_fit_s']:.1f} s, eager {demo['eager_fit_s']:.2f} s, "
                      f"{demo['ratio']:.0f}x; held-out accuracy {demo['fusegraph_accuracy']:.4f} vs "
                      f"{demo['eager_accuracy']:.4f}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--demo", action="store_true", help="also time the demo's training")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    import triton

    calls, checks = contenders(args.batch)
    results = {"benchmark": "bench/cpu_interpreter.py", "batch": args.batch, "rounds": args.rounds,
               "environment": {"torch": torch.__version__, "triton": triton.__version__,
                               "python": platform.python_version(), "cpus": os.cpu_count(),
                               "interpreter": INTERPRETING},
               "checks": checks, "timings": summary(interleaved(calls, args.rounds))}
    if args.demo:
        results["demo"] = demo_seconds()
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cpu_interpreter.json").write_text(json.dumps(results, indent=2) + "\n")
    (folder / "cpu_interpreter.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
