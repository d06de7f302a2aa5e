"""GPU only: the fused conv block and LSTM layers against torch eager (cuDNN) and torch.compile.

    python -m bench.bench_blocks [--out bench/results]

Contenders run the same shapes and dtype in one process: conv 3x3 'same' + bias + ReLU + 2x2 max
pool on 256 x 1 x 28 x 28 -> 32 channels, an LSTM (seq 100, batch 64, input 128, hidden 256,
return_sequences: one launch per step) and a narrow one (seq 100, batch 256, input 32, hidden 32:
fusegraph's persistent kernel, the whole sequence in one launch), in fp32 (TF32 off everywhere)
and fp16. Each result is checked against eager before it is timed (triton.testing.do_bench:
warm-up, median). Writes <out>/blocks_cuda.json and .md."""

from __future__ import annotations

import argparse
import sys

import torch

import fusegraph as fg
from bench.common import environment, forward_timings, gpu_or_explain, write


def conv_block(dtype: str) -> tuple[fg.Model, torch.Tensor]:
    model = fg.Sequential([fg.Input((1, 28, 28), dtype=dtype), fg.Conv2D(32, 3, padding="same", activation="relu"),
                           fg.MaxPool2D(2)], name="conv_block")
    return model, torch.randn(256, 1, 28, 28)


def lstm_layer(dtype: str) -> tuple[fg.Model, torch.Tensor]:
    model = fg.Sequential([fg.Input((100, 128), dtype=dtype), fg.LSTM(256, return_sequences=True)], name="lstm")
    return model, torch.randn(64, 100, 128)


def narrow_lstm_layer(dtype: str) -> tuple[fg.Model, torch.Tensor]:
    model = fg.Sequential([fg.Input((100, 32), dtype=dtype), fg.LSTM(32, return_sequences=True)], name="lstm_h32")
    return model, torch.randn(256, 100, 32)


def run(build, dtype: str) -> dict:
    model, x = build(dtype)
    return {"block": model.name, "dtype": dtype, **forward_timings(model, [x.to("cuda", getattr(torch, dtype))],
                                                                   getattr(torch, dtype))}


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [f"# Fused blocks on {env['device']}", "",
             f"Produced by `{results['benchmark']}`; torch {env['torch']}, Triton {env['triton']}, "
             f"Python {env['python']}. fp32: torch with TF32 off; fusegraph's fp32 dots run as tf32x3 (three TF32 "
             "passes, fp32-accurate: the largest error against eager is in the JSON).", "",
             "fusegraph replays a CUDA graph of its launches; 'launching' is the same kernels launched one by "
             "one; 'compile+graphs' is torch.compile(mode='reduce-overhead').", "",
             "| block | dtype | launches | fusegraph ms | launching ms | eager ms | torch.compile ms "
             "| compile+graphs ms | vs eager | vs compile | vs compile+graphs |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        lines.append(f"| {r['block']} | {r['dtype']} | {r['launches']} | {r['fusegraph_ms']:.3f} | "
                     f"{r['fusegraph_launching_ms']:.3f} | {r['torch_eager_ms']:.3f} | {r['torch_compile_ms']:.3f} | "
                     f"{r['torch_compile_graphs_ms']:.3f} | {r['speedup_vs_eager']:.2f}x | "
                     f"{r['speedup_vs_torch_compile']:.2f}x | {r['speedup_vs_torch_compile_graphs']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    if not gpu_or_explain("bench_blocks.py"):
        return 0
    results = {"benchmark": "bench/bench_blocks.py", "environment": environment(), "rows": []}
    for build in (conv_block, lstm_layer, narrow_lstm_layer):
        for dtype in ("float32", "float16"):
            results["rows"].append(run(build, dtype))
            write(results, args.out, "blocks", markdown)  # after each row: a cut-off run keeps what it measured
    return 0


if __name__ == "__main__":
    sys.exit(main())
