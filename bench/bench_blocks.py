"""GPU only: the fused conv block and LSTM layer against torch eager (cuDNN) and torch.compile.

    python -m bench.bench_blocks [--out bench/results]

Contenders run the same shapes and dtype in one process: conv 3x3 'same' + bias + ReLU + 2x2 max
pool on 256 x 1 x 28 x 28 -> 32 channels, and an LSTM (seq 100, batch 64, input 128, hidden 256,
return_sequences), in fp32 (TF32 off everywhere) and fp16. Each result is checked against eager
before it is timed (triton.testing.do_bench: warm-up, median). Writes <out>/blocks_cuda.json and .md."""

from __future__ import annotations

# NOTE: fusegraph before triton: Triton picks compile vs interpret when first imported (I001 off here)
import fusegraph as fg

import argparse
import sys

import torch

from bench.common import environment, median_ms, with_speedups, write

TOLERANCE = {"float32": (1e-4, 1e-4), "float16": (1e-2, 1e-2)}


def conv_block(dtype: str) -> tuple[fg.Model, torch.Tensor]:
    model = fg.Sequential([fg.Input((1, 28, 28), dtype=dtype), fg.Conv2D(32, 3, padding="same", activation="relu"),
                           fg.MaxPool2D(2)], name="conv_block")
    return model, torch.randn(256, 1, 28, 28)


def lstm_layer(dtype: str) -> tuple[fg.Model, torch.Tensor]:
    model = fg.Sequential([fg.Input((100, 128), dtype=dtype), fg.LSTM(256, return_sequences=True)], name="lstm")
    return model, torch.randn(64, 100, 128)


def run(build, dtype: str) -> dict:
    model, x = build(dtype)
    torch_dtype = getattr(torch, dtype)
    x = x.to("cuda", torch_dtype)
    compiled = fg.compile(model)
    eager = model.to_torch().to("cuda", torch_dtype)
    compiled_torch = torch.compile(eager)
    with torch.no_grad():
        ours, theirs = compiled(x), eager(x)
        rtol, atol = TOLERANCE[dtype]
        torch.testing.assert_close(ours.float(), theirs.float(), rtol=rtol, atol=atol)
        compiled_torch(x)  # compile before timing
        row = {"block": model.name, "dtype": dtype, "launches": compiled.last_launches,
               "max_abs_error_vs_eager": float((ours.float() - theirs.float()).abs().max()),
               "fusegraph_ms": median_ms(lambda: compiled(x)),
               "torch_eager_ms": median_ms(lambda: eager(x)),
               "torch_compile_ms": median_ms(lambda: compiled_torch(x))}
    return with_speedups(row)


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [f"# Fused blocks on {env['device']}", "",
             f"Produced by `{results['benchmark']}`; torch {env['torch']}, Triton {env['triton']}, "
             f"Python {env['python']}. TF32 off for fp32 (ours and torch's).", "",
             "| block | dtype | launches | fusegraph ms | eager ms | torch.compile ms | vs eager | vs compile |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        lines.append(f"| {r['block']} | {r['dtype']} | {r['launches']} | {r['fusegraph_ms']:.3f} | "
                     f"{r['torch_eager_ms']:.3f} | {r['torch_compile_ms']:.3f} | {r['speedup_vs_eager']:.2f}x | "
                     f"{r['speedup_vs_torch_compile']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_blocks.py needs a CUDA GPU; nothing measured", file=sys.stderr)
        return 0
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    results = {"benchmark": "bench/bench_blocks.py", "environment": environment(), "rows": []}
    for build in (conv_block, lstm_layer):
        for dtype in ("float32", "float16"):
            results["rows"].append(run(build, dtype))
            write(results, args.out, "blocks", markdown)  # after each row: a cut-off run keeps what it measured
    return 0


if __name__ == "__main__":
    sys.exit(main())
