"""What fusegraph's kernels compile to on Hopper, read with no GPU (issue: Hopper-native kernels, item 4):
each launch of four real-size cases is recorded with the launch choices of a 132-SM H100 (tiles spread
over the SMs, tuned launches, tf32x3), then built for sm_90 by Triton's compiler and the ptxas it ships, and
its machine code read: the matrix instruction (`wgmma` with its N, or Ampere's `mma.sync`), how operands
are copied (TMA `cp.async.bulk.tensor` and which operands' boxes it copies, `cp.async`, or plain loads),
registers, stack, shared memory, theoretical occupancy (blocks and warps per SM) and waves of the grid.

    python -m bench.sm90_static [--cases conv64 conv256 cifar_resnet lstm1024]

Writes bench/results/sm90_static.json and .md. Occupancy is the CUDA occupancy rule for sm_90 (65,536
registers, 64 warps, 228 KB shared memory, 32 blocks per SM; registers allocated per warp in units of 256,
1 KB of shared memory reserved per block): a bound, not a measurement."""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SMS, REGISTERS, MAX_WARPS, SHARED, MAX_BLOCKS = 132, 65536, 64, 228 * 1024, 32


# -- recording (in the interpreting process: nothing runs) ----------------------------------------------
@contextmanager
def recorded_launches():
    """Launches recorded, not run, as a 132-SM sm_90 GPU would make them: (name, source, argument kinds,
    keywords, grid) each."""
    import torch  # noqa: F401

    from fusegraph.kernels import codegen, target
    from tests.kernels.test_gpu_compile import describe

    saved = target.sm_count, target.tensor_cores_take_tf32, target.tensor_memory_accelerator, codegen.Kernel.__getitem__
    records: list[tuple] = []

    def record(kernel, grid):
        def launch(*args, **kwargs):
            records.append((kernel.source.name, kernel.source.source, describe(args), tuple(sorted(kwargs.items())),
                            tuple(grid) if isinstance(grid, (tuple, list)) else (grid,)))
        return launch

    target.sm_count = lambda: SMS
    target.tensor_cores_take_tf32 = target.tensor_memory_accelerator = lambda: True
    codegen.Kernel.__getitem__ = record
    try:
        yield records
    finally:
        target.sm_count, target.tensor_cores_take_tf32, target.tensor_memory_accelerator, codegen.Kernel.__getitem__ = saved


def _conv_block(channels: int, size: int):
    import fusegraph as fg

    x = fg.Input((channels, size, size))  # float32 weights, run in float16 (mixed precision) as users train
    h = fg.Conv2D(channels, 3, padding="same", use_bias=False, activation=None)(x)
    h = fg.Activation("relu")(fg.BatchNorm2D()(h))
    return fg.Model(x, fg.Conv2D(channels, 3, padding="same", activation="relu")(h))


def _lstm():
    import fusegraph as fg

    return fg.Sequential([fg.Input((100, 1024)), fg.LSTM(1024, return_sequences=True)])


CASES = {  # name -> (what, model builder (None: the zoo's cifar_resnet), batch, half precision, inference too)
    "conv64": ("ResNet stage conv 64->64, 32x64x56x56, fp16 channels-last (conv-BN-ReLU-conv), inference and "
               "training", lambda: _conv_block(64, 56), 32, "float16", True),
    "conv256": ("ResNet stage conv 256->256, 128x256x14x14, fp16 channels-last, inference and training",
                lambda: _conv_block(256, 14), 128, "float16", True),
    "cifar_resnet": ("cifar_resnet training step, bf16 mixed precision, batch 128", None, 128, "bfloat16", False),
    "lstm1024": ("LSTM hidden 1024, 100 steps, batch 64, fp16, inference and training", _lstm, 64, "float16", True),
}


def record_case(name: str) -> list[tuple]:
    import fusegraph as fg
    from fusegraph.passes.autodiff import autodiff
    from tests.conftest import feeds_for, targets_for
    from tests.kernels.test_gpu_compile import run_as_gpu

    what, build, batch, half, inference = CASES[name]
    model = build() if build else fg.zoo.cifar_resnet()
    feeds = feeds_for(model, batch)
    layout = "channels_last" if name.startswith("conv") else "contiguous"
    with recorded_launches() as records:
        if inference:
            run_as_gpu(model.graph, feeds, model.params, memory_format=layout, half=half)
        loss = "cross_entropy" if build is None else "mse"
        run_as_gpu(autodiff(model.graph, loss), [*feeds, targets_for(model, loss, batch)], model.params,
                   memory_format=layout, half=half)
    return records


# -- reading the machine code (a process of its own, compiling for sm_90) ------------------------------
def analyse(record, folder: str) -> dict:
    from tests.kernels.gpu_compile import compile_for_sm90, load, resource_usage

    name, source, arguments, keywords, grid = record
    constexprs, options, compiled = compile_for_sm90(load(name, source, folder), arguments, dict(keywords))
    row = {"kernel": name, "grid": list(grid), "blocks": {k: v for k, v in constexprs.items() if k.startswith("BLOCK")},
           "num_warps": options.get("num_warps", 4), "num_stages": options.get("num_stages", 3),
           "options_passed": sorted(options)}
    if isinstance(compiled, Exception):
        row["error"] = f"{type(compiled).__name__}: {str(compiled)[:300]}"
        return row
    ptx = compiled.asm["ptx"]
    wgmma = sorted({int(n) for n in re.findall(r"wgmma\.mma_async\.sync\.aligned\.m64n(\d+)k", ptx)})
    row["mma"] = (f"wgmma n{'/'.join(map(str, wgmma))}" if wgmma else
                  "mma.sync" if "mma.sync" in ptx else "none (no dot)" if "tl.dot(" not in source else "none")
    boxed = [key.removesuffix("_DESC").lower() for key, on in keywords if key.endswith("_DESC") and on]
    copies = [f"TMA ({', '.join(boxed)})" if "cp.async.bulk.tensor" in ptx else "",
              "cp.async" if re.search(r"cp\.async\.c[ag]", ptx) else ""]
    row["copies"] = " + ".join(c for c in copies if c) or "loads"
    row.update(resource_usage(compiled.asm["cubin"], folder))
    row["shared"] = max(row.get("shared", 0), compiled.metadata.shared)
    row.update(_occupancy(row["registers"], row["shared"], row["num_warps"], math.prod(grid)))
    row["drains"] = _drains(compiled.asm.get("ttgir", ""))
    return row


def _occupancy(registers: int, shared: int, warps: int, programs: int) -> dict:
    per_warp = math.ceil(max(registers, 1) * 32 / 256) * 256
    by_registers = REGISTERS // (per_warp * warps)
    by_shared = SHARED // (shared + 1024)
    blocks = max(0, min(by_registers, by_shared, MAX_WARPS // warps, MAX_BLOCKS))
    return {"blocks_per_sm": blocks, "warps_per_sm": blocks * warps, "occupancy": round(blocks * warps / MAX_WARPS, 2),
            "waves": round(programs / (blocks * SMS), 2) if blocks else None}


def _drains(ttgir: str) -> int:
    """Waits for every copy or MMA in flight (`async_wait {num = 0}`, `warp_group_dot_wait {pendings = 0}`)
    inside a loop of the kernel's TTGIR: a pipeline that drains and refills within its loop nest (a conv's
    per-tap loop did, after each kernel tap). One pipelined loop has none: its final wait follows it."""
    stack: list[bool] = []
    drains = 0
    for line in ttgir.splitlines():
        text = line.strip()
        if text.startswith("}"):
            if stack:
                stack.pop()
            text = text[1:].strip()
        if re.search(r"(async_wait|warp_group_dot_wait)\b.*(num = 0 |num = 0}|pendings = 0 |pendings = 0})", text) \
                and any(stack):
            drains += 1
        if text.endswith("{"):
            stack.append("scf.for" in text)
    return drains


def _analyse_in_worker(record) -> dict:
    return analyse(record, tempfile.mkdtemp(prefix="fusegraph-sm90-"))


def markdown(rows: dict[str, list[dict]]) -> str:
    lines = ["# fusegraph's kernels as compiled for sm_90 (H100 launch choices, no GPU)", "",
             "`python -m bench.sm90_static`: each real-size launch built by Triton's compiler and ptxas for sm_90 "
             "and its machine code read. Occupancy and waves are the CUDA occupancy rule's bound for a 132-SM H100. "
             "\"drains\": waits for every copy or MMA in flight inside a loop (a pipeline that drains and "
             "refills within its loop nest; 0 for one pipelined loop). \"copies\": TMA (`cp.async.bulk.tensor`, with "
             "the operands whose boxes it copies: x / dy the shifted pixel box, w the packed filters, a / b a "
             "matmul's), `cp.async`, or plain loads.",
             ""]
    for case, launches in rows.items():
        lines += [f"## {case}: {CASES[case][0]}", "",
                  "| kernel | blocks (M, N, K) | warps, stages | MMA | copies | drains | regs | stack | shared | "
                  "blocks/SM (occupancy) | grid | waves |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in launches:
            if "error" in r:
                lines.append(f"| {r['kernel']} | | | compile error: {r['error'][:80]} | | | | | | | | |")
                continue
            b = r["blocks"]
            tile = ", ".join(str(b[k]) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K") if k in b) or \
                ", ".join(f"{k}={v}" for k, v in b.items())
            passed = "" if r["options_passed"] else " (defaults)"
            lines.append(f"| {r['kernel']} | {tile} | {r['num_warps']}, {r['num_stages']}{passed} | {r['mma']} | "
                         f"{r['copies']} | {r['drains']} | {r['registers']} | {r['stack']} | {r['shared'] // 1024} KB | "
                         f"{r['blocks_per_sm']} ({r['occupancy']:.0%}) | {'x'.join(map(str, r['grid']))} | {r['waves']} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # the compiling process: a pickle of records
    args = parser.parse_args()
    if args.worker:
        os.environ.pop("TRITON_INTERPRET", None)
        import multiprocessing

        records = pickle.loads(Path(args.worker).read_bytes())
        with multiprocessing.get_context("fork").Pool(len(os.sched_getaffinity(0))) as pool:
            rows = pool.map(_analyse_in_worker, records, chunksize=1)
        Path(args.worker).with_suffix(".json").write_text(json.dumps(rows))
        return
    os.environ.setdefault("TRITON_INTERPRET", "1")
    results = {}
    for case in args.cases:
        records = list({r[:4]: r for r in record_case(case)}.values())  # a launch made twice, once
        path = Path(tempfile.mkdtemp(prefix="fusegraph-sm90-")) / "records.pkl"
        path.write_bytes(pickle.dumps(records))
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        subprocess.run([sys.executable, "-m", "bench.sm90_static", "--worker", str(path)], cwd=ROOT, env=env, check=True)
        results[case] = json.loads(path.with_suffix(".json").read_text())
        print(f"{case}: {len(records)} launches", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sm90_static.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "sm90_static.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
