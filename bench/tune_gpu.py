"""GPU only: measures the launch choices in fusegraph.kernels.tuning.GPU_TUNING.

    python -m bench.tune_gpu [--out bench/results] [--budget 150]

1. The recurrent step GEMM (LSTM and GRU layers: seq 100, batch 64, input 128, hidden 256): tile
   shapes and K blocks with 4 warps, then warps x pipeline stages for the best tile, per operand
   precision (fp32 with tl.dot "ieee" and "tf32x3", fp16). Every configuration is checked against
   torch eager (cuDNN) before it is timed; the whole layer is timed (CUDA graph replay, median).
2. fp32 dot precision ("ieee" vs "tf32x3") on every zoo model's forward at batch 256: time and
   the largest error against torch eager with TF32 off.
3. The persistent scan (a narrow LSTM layer in one kernel: seq 100, batch 256, input 32, hidden
   32): warps per program, and in fp32 the dot precision.
4. (only when asked: --sweeps conv) conv + bias + ReLU at the ResNet stage shapes (3x3, same
   padding, batch 32; 64 channels at 56x56 down to 512 at 7x7) in fp16, bf16 and fp32, channels-last
   in and out first (a conv between convs; cuDNN channels-last too), then NCHW: tiles, K blocks,
   warps and pipeline stages per shape. The fastest checked configuration per shape goes
   into GPU_TUNING["conv"] under its conv_shape_key (by hand, from the .md table); cuDNN runs with
   TF32 off for fp32, as our fp32 dots are fp32-accurate (tf32x3).
5. (only when asked: --sweeps conv_grad) the conv input and weight gradients at the same shapes in
   fp32, channels-last: GPU_TUNING["conv_input_grad"] and ["conv_weight_grad"], keyed by the forward
   conv's key; times are whole loss_and_grads calls, torch's forward + backward beside them.

    python -m bench.tune_gpu --sweeps persistent   # one sweep only

Stops sweeping after --budget seconds and writes what it measured, after each step, to
<out>/tune_cuda.json and .md (tune_<sweeps>_cuda.* when --sweeps picks some)."""

from __future__ import annotations

import argparse
import itertools
import sys
import time

import torch

import fusegraph as fg
from bench.bench_blocks import narrow_lstm_layer
from bench.common import environment, gpu_or_explain, median_ms, write
from bench.suite import RESNET_STAGES  # (channels, side) of each stage's 3x3 convs
from fusegraph.checks import sample_inputs
from fusegraph.kernels.tuning import GPU_TUNING, conv_shape_key

TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2}
DEFAULT_SWEEPS = ["recurrent", "precision", "persistent"]
# tiles and K blocks at 4 warps and 3 stages first; then warps x stages around the fastest tile
CONV_TILES = [dict(block_m=m, block_n=n, block_k=k, num_warps=4, num_stages=3) for (m, n), k in
              itertools.product(((64, 64), (128, 64), (64, 128), (128, 128)), (32, 64))]
# fp32 runs three TF32 products (tf32x3): K blocks of 64, or 128 x 128 tiles, spill on sm_90 (536-1096 B/thread,
# tests/kernels/test_gpu_compile.py)
FP32_CONV_TILES = [dict(block_m=m, block_n=n, block_k=k, num_warps=4, num_stages=3) for (m, n), k in
                   itertools.product(((64, 64), (128, 64), (64, 128)), (16, 32))]
TILES = [(16, 16), (16, 32), (32, 16), (32, 32), (64, 16), (64, 32)]
# fp32 gradient tiles (tf32x3 keeps three products: 16-wide K blocks at 64 x 64 and up, as conv.py's rule)
DEVICE, GRAD_BATCH = "cuda", 32  # tests/bench run the gradient sweep's machinery on the CPU, small
GRAD_TILES = [dict(block_m=m, block_n=n, block_k=k, num_warps=4, num_stages=3) for m, n, k in
              ((64, 64, 16), (64, 64, 32), (128, 64, 16), (64, 128, 16), (32, 64, 32), (64, 32, 32))]


def recurrent_layer(cell: str, dtype: torch.dtype) -> tuple[fg.Model, torch.Tensor]:
    name = str(dtype).removeprefix("torch.")
    layer = fg.LSTM(256, return_sequences=True) if cell == "lstm" else fg.GRU(256, return_sequences=True)
    model = fg.Sequential([fg.Input((100, 128), dtype=name), layer], name=cell)
    return model, torch.randn(64, 100, 128, generator=torch.Generator().manual_seed(0)).to("cuda", dtype)


def measure(model: fg.Model, x: torch.Tensor, expected: torch.Tensor, memory_format: str = "contiguous") -> dict:
    compiled = fg.compile(model, memory_format=memory_format)
    with torch.no_grad():
        ours = compiled(x).float()
    error = float((ours - expected).abs().max())
    row = {"max_abs_error": error, "ok": error <= TOLERANCE[x.dtype] * (1 + float(expected.abs().max()))}
    if row["ok"]:
        row["ms"] = median_ms(lambda: compiled(x))
    return row


def sweep_recurrent(results: dict, deadline: float, out: str) -> None:
    variants = [("float32", "ieee", torch.float32), ("float32", "tf32x3", torch.float32), ("half", "ieee", torch.float16)]
    for cell in ("lstm", "gru"):
        for key, precision, dtype in variants:
            if time.monotonic() > deadline:
                break
            model, x = recurrent_layer(cell, dtype)
            with torch.no_grad():
                expected = model.to_torch().to("cuda", dtype)(x).float()
            GPU_TUNING["fp32_dot"] = precision
            GPU_TUNING["small_matmul"][key] = {}
            rows = [{"cell": cell, "dtype": str(dtype), "precision": precision, "config": "default",
                     **measure(model, x, expected)}]
            with torch.no_grad():
                eager = model.to_torch().to("cuda", dtype)
                rows[0]["cudnn_ms"] = median_ms(lambda eager=eager, x=x: eager(x))
            configs = [dict(block_m=m, block_n=n, block_k=k, num_warps=4) for (m, n), k in
                       itertools.product(TILES, (32, 64))]
            if cell == "gru":  # the GRU checks the LSTM's winners rather than sweeping again
                configs = [r["config"] for r in sorted(
                    (r for r in results["recurrent"] if r["cell"] == "lstm" and r["dtype"] == str(dtype)
                     and r["precision"] == precision and r.get("ms") and r["config"] != "default"),
                    key=lambda r: r["ms"])[:4]]
            for stage in ("tiles", "warps"):
                for config in configs:
                    if time.monotonic() > deadline:
                        break
                    GPU_TUNING["small_matmul"][key] = dict(config)
                    rows.append({"cell": cell, "dtype": str(dtype), "precision": precision, "config": config,
                                 **measure(model, x, expected)})
                timed = [r for r in rows if r.get("ms") and r["config"] != "default"]
                if stage == "tiles" and timed and cell == "lstm":
                    best = min(timed, key=lambda r: r["ms"])["config"]
                    configs = [{**best, "num_warps": w, "num_stages": s} for w, s in
                               itertools.product((1, 2, 4, 8), (1, 2, 3))]
                else:
                    configs = []
            results["recurrent"].extend(rows)
            GPU_TUNING["small_matmul"][key] = {}
            save(results, out)
    GPU_TUNING["fp32_dot"] = "ieee"


def compare_precision(results: dict, deadline: float, out: str) -> None:
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    for name in fg.zoo.MODELS:
        if time.monotonic() > deadline:
            break
        model = fg.zoo.get(name)
        feeds = [f.cuda() for f in sample_inputs(model, 256)]
        with torch.no_grad():
            expected = model.to_torch().cuda()(*feeds)
        row = {"model": name}
        for precision in ("ieee", "tf32x3"):
            GPU_TUNING["fp32_dot"] = precision
            compiled = fg.compile(model)
            with torch.no_grad():
                row[f"{precision}_max_abs_error"] = float((compiled(feeds) - expected).abs().max())
                row[f"{precision}_ms"] = median_ms(lambda compiled=compiled, feeds=feeds: compiled(feeds))
        GPU_TUNING["fp32_dot"] = "ieee"
        results["precision"].append(row)
        save(results, out)


def sweep_persistent(results: dict, deadline: float, out: str) -> None:
    chosen = GPU_TUNING["fp32_dot"]
    for key, dtype in (("float32", torch.float32), ("half", torch.float16)):
        if time.monotonic() > deadline:
            break
        model, x = narrow_lstm_layer(str(dtype).removeprefix("torch."))
        x = x.to("cuda", dtype)
        with torch.no_grad():
            eager = model.to_torch().to("cuda", dtype)
            expected = eager(x).float()
            cudnn = median_ms(lambda eager=eager, x=x: eager(x))
        default = dict(GPU_TUNING["persistent_scan"][key])
        precisions = ("ieee", "tf32x3") if dtype == torch.float32 else ("ieee",)
        for precision, warps in itertools.product(precisions, (1, 2, 4, 8)):
            if time.monotonic() > deadline:
                break
            GPU_TUNING["fp32_dot"] = precision
            GPU_TUNING["persistent_scan"][key] = {"num_warps": warps}
            results["persistent"].append({"dtype": str(dtype), "precision": precision, "num_warps": warps,
                                          "cudnn_ms": cudnn, **measure(model, x, expected)})
        GPU_TUNING["persistent_scan"][key] = default
        save(results, out)
    GPU_TUNING["fp32_dot"] = chosen


def sweep_conv(results: dict, deadline: float, out: str) -> None:
    """Channels-last in and out (a conv inside a network of convs: what the layout pass gives it),
    cuDNN channels-last too; then, time left, the NCHW edges a lone conv keeps."""
    torch.backends.cudnn.allow_tf32 = False
    shapes = itertools.product(("channels_last", "contiguous"), (torch.float16, torch.bfloat16, torch.float32),
                               RESNET_STAGES)
    for memory_format, dtype, (channels, side) in shapes:
        if time.monotonic() > deadline:  # NOTE: each shape measures its rule first: none starts past the deadline
            break
        name = str(dtype).removeprefix("torch.")
        model = fg.Sequential([fg.Input((channels, side, side), dtype=name),
                               fg.Conv2D(channels, 3, padding="same", activation="relu")], name="conv")
        x = torch.randn(32, channels, side, side, generator=torch.Generator().manual_seed(0)).to("cuda", dtype)
        stored = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
        x = x.contiguous(memory_format=stored)
        with torch.no_grad():
            eager = model.to_torch().to("cuda", dtype).to(memory_format=stored)
            expected = eager(x).float()
            cudnn = median_ms(lambda eager=eager, x=x: eager(x))
        cl = memory_format == "channels_last"
        key = conv_shape_key(dtype, channels, side, side, channels, (3, 3), (1, 1), False, layouts=(cl, cl))
        rows = [{"key": key, "config": "rule", "cudnn_ms": cudnn, **measure(model, x, expected, memory_format)}]
        configs = FP32_CONV_TILES if dtype == torch.float32 else CONV_TILES
        for stage in ("tiles", "warps and stages"):
            for config in configs:
                if time.monotonic() > deadline:
                    break
                GPU_TUNING["conv"][key] = dict(config)
                rows.append({"key": key, "config": config, "cudnn_ms": cudnn,
                             **measure(model, x, expected, memory_format)})
            timed = [r for r in rows if r.get("ms") and r["config"] != "rule"]
            if stage == "tiles" and timed:
                best = min(timed, key=lambda r: r["ms"])["config"]
                configs = [{**best, "num_warps": w, "num_stages": s}
                           for w, s in itertools.product((4, 8), (2, 3, 4)) if (w, s) != (4, 3)]
        GPU_TUNING["conv"].pop(key, None)
        results["conv"].extend(rows)
        save(results, out)


def sweep_conv_grad(results: dict, deadline: float, out: str) -> None:
    """The conv gradients at the ResNet stage shapes in fp32 (training is fp32), x and y channels-last
    (two convs, so the second's input gradient runs): one table at a time, the other kernel on its rule;
    each configuration's gradients checked against torch.autograd first; torch's own step (cuDNN
    channels-last, TF32 off) beside it. Times are a whole loss_and_grads call."""
    from bench.bench_training import torch_loss

    torch.backends.cudnn.allow_tf32 = False
    for channels, side in RESNET_STAGES:
        if time.monotonic() > deadline:
            break
        model = fg.Sequential([fg.Input((channels, side, side)),
                               *(fg.Conv2D(channels, 3, padding="same", activation="relu") for _ in range(2)),
                               fg.GlobalAvgPool2D(), fg.Dense(4)], name="conv_grad")
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(GRAD_BATCH, channels, side, side, generator=generator).to(DEVICE)
        x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randn(GRAD_BATCH, 4, generator=generator).to(DEVICE)
        eager = model.to_torch().to(DEVICE).to(memory_format=torch.channels_last)

        def torch_step(eager=eager, x=x, y=y, model=model) -> None:
            eager.zero_grad(set_to_none=False)
            torch_loss(model, eager(x), y, "mse").backward()

        torch_step()
        expected = {name: p.grad.detach().clone() for name, p in eager.fusegraph_parameters().items()}
        torch_ms = median_ms(torch_step)
        key = conv_shape_key(torch.float32, channels, side, side, channels, (3, 3), (1, 1), False, layouts=(True, True))
        for table in ("conv_input_grad", "conv_weight_grad"):
            rows = [{"table": table, "key": key, "config": "rule", "torch_ms": torch_ms,
                     **measure_gradients(model, x, y, expected)}]
            configs = GRAD_TILES
            for stage in ("tiles", "warps and stages"):
                for config in configs:
                    if time.monotonic() > deadline:
                        break
                    GPU_TUNING[table][key] = dict(config)
                    rows.append({"table": table, "key": key, "config": config, "torch_ms": torch_ms,
                                 **measure_gradients(model, x, y, expected)})
                timed = [r for r in rows if r.get("ms") and r["config"] != "rule"]
                if stage == "tiles" and timed:
                    best = min(timed, key=lambda r: r["ms"])["config"]
                    configs = [{**best, "num_warps": w, "num_stages": s}
                               for w, s in itertools.product((4, 8), (2, 3, 4)) if (w, s) != (4, 3)]
            GPU_TUNING[table].pop(key, None)
            results["conv_grad"].extend(rows)
            save(results, out)


def measure_gradients(model: fg.Model, x: torch.Tensor, y: torch.Tensor, expected: dict) -> dict:
    compiled = fg.compile(model, loss="mse", memory_format="channels_last")
    _, grads = compiled.loss_and_grads(x, y)
    error = max(float((grads[name] - g).abs().max() / (1 + g.abs().max())) for name, g in expected.items())
    row = {"max_rel_error": error, "ok": error <= TOLERANCE[torch.float32]}
    if row["ok"]:
        row["ms"] = median_ms(lambda: compiled.loss_and_grads(x, y))
    return row


def save(results: dict, out: str) -> None:
    write(results, out, results["file"], markdown)


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [f"# GPU launch tuning on {env['device']}", "",
             f"Produced by `{results['benchmark']}`; torch {env['torch']}, Triton {env['triton']}. Times are "
             "medians of a whole forward (CUDA graph replay); every configuration was first checked against "
             "torch eager (TF32 off). The chosen values live in `fusegraph/kernels/tuning.py` (GPU_TUNING).", "",
             "## Recurrent layers (seq 100, batch 64, input 128, hidden 256): fastest configurations", "",
             "| cell | dtype | dot precision | config | ms | cuDNN ms | max abs error |", "|---|---|---|---|---:|---:|---:|"]
    groups: dict[tuple, list] = {}
    for r in results["recurrent"]:
        groups.setdefault((r["cell"], r["dtype"], r["precision"]), []).append(r)
    for (cell, dtype, precision), rows in groups.items():
        cudnn = next((r["cudnn_ms"] for r in rows if "cudnn_ms" in r), float("nan"))
        default = [r for r in rows if r["config"] == "default"]
        ranked = sorted((r for r in rows if r.get("ms") and r["config"] != "default"), key=lambda r: r["ms"])[:3]
        for r in default + ranked:
            lines.append(f"| {cell} | {dtype} | {precision} | {r['config']} | {r['ms']:.3f} | {cudnn:.3f} | "
                         f"{r['max_abs_error']:.2e} |")
        failed = [r for r in rows if not r["ok"]]
        if failed:
            lines.append(f"| {cell} | {dtype} | {precision} | {len(failed)} configurations failed the check | | | |")
    lines += ["", "## fp32 tl.dot precision, zoo forwards at batch 256", "",
              "| model | ieee ms | tf32x3 ms | ieee max abs error | tf32x3 max abs error |", "|---|---:|---:|---:|---:|"]
    for r in results["precision"]:
        lines.append(f"| {r['model']} | {r['ieee_ms']:.3f} | {r['tf32x3_ms']:.3f} | {r['ieee_max_abs_error']:.2e} | "
                     f"{r['tf32x3_max_abs_error']:.2e} |")
    lines += ["", "## Persistent scan: LSTM layer, seq 100, batch 256, input 32, hidden 32", "",
              "| dtype | dot precision | warps | ms | cuDNN ms | max abs error |", "|---|---|---:|---:|---:|---:|"]
    for r in results.get("persistent", []):
        ms = f"{r['ms']:.3f}" if r.get("ms") else "failed the check"
        dtype = r["dtype"].removeprefix("torch.")
        lines.append(f"| {dtype} | {r['precision']} | {r['num_warps']} | {ms} | {r['cudnn_ms']:.3f} | "
                     f"{r['max_abs_error']:.2e} |")
    if results.get("conv"):
        lines += ["", "## conv + bias + ReLU, 3x3 same, batch 32 (ResNet stage shapes): rule vs fastest configurations",
                  "", "| shape key | config | ms | cuDNN ms | max abs error |", "|---|---|---:|---:|---:|"]
        keys = list(dict.fromkeys(r["key"] for r in results["conv"]))
        for key in keys:
            rows = [r for r in results["conv"] if r["key"] == key]
            ranked = sorted((r for r in rows if r.get("ms") and r["config"] != "rule"), key=lambda r: r["ms"])[:3]
            for r in [r for r in rows if r["config"] == "rule"] + ranked:
                ms = f"{r['ms']:.3f}" if r.get("ms") else "failed the check"
                lines.append(f"| {key} | {r['config']} | {ms} | {r['cudnn_ms']:.3f} | {r['max_abs_error']:.2e} |")
    if results.get("conv_grad"):
        lines += ["", "## conv gradients, fp32, 2 convs 3x3 same, batch 32, channels-last: rule vs fastest per table",
                  "", "| table | shape key | config | ms (loss_and_grads) | torch ms | max rel error |",
                  "|---|---|---|---:|---:|---:|"]
        for table, key in dict.fromkeys((r["table"], r["key"]) for r in results["conv_grad"]):
            rows = [r for r in results["conv_grad"] if (r["table"], r["key"]) == (table, key)]
            ranked = sorted((r for r in rows if r.get("ms") and r["config"] != "rule"), key=lambda r: r["ms"])[:3]
            for r in [r for r in rows if r["config"] == "rule"] + ranked:
                ms = f"{r['ms']:.3f}" if r.get("ms") else "failed the check"
                lines.append(f"| {table} | {key} | {r['config']} | {ms} | {r['torch_ms']:.3f} | "
                             f"{r['max_rel_error']:.2e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fusegraph tune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--budget", type=float, default=150.0, help="seconds of sweeping before it stops")
    parser.add_argument("--sweeps", nargs="+", default=DEFAULT_SWEEPS,
                        choices=[*DEFAULT_SWEEPS, "conv", "conv_grad"])
    args = parser.parse_args(argv)
    if not gpu_or_explain("tune_gpu.py"):
        return 0
    end = time.monotonic() + args.budget
    results = {"benchmark": "bench/tune_gpu.py", "environment": environment(), "recurrent": [], "precision": [],
               "persistent": [], "conv": [], "conv_grad": [],
               "file": "tune" if args.sweeps == DEFAULT_SWEEPS else "tune_" + "_".join(args.sweeps)}
    sweeps = {"recurrent": sweep_recurrent, "precision": compare_precision, "persistent": sweep_persistent,
              "conv": sweep_conv, "conv_grad": sweep_conv_grad}
    chosen = [name for name in sweeps if name in args.sweeps]
    for done, name in enumerate(chosen):
        # NOTE: each sweep gets an equal share of what is left, and none a second past the budget
        share = (end - time.monotonic()) / (len(chosen) - done)
        sweeps[name](results, min(end, time.monotonic() + share), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
