"""GPU launch choices measured by bench/tune_gpu.py: the tables templates read on a GPU (the
interpreter ignores them), and the key a conv shape is tuned under."""

from __future__ import annotations

import torch

# Launch choices on the GPU, measured by bench/tune_gpu.py (bench/results/tune_cuda.md); the
# interpreter ignores them. fp32_dot: tl.dot's input precision for fp32 operands ("ieee", or "tf32x3":
# three TF32 tensor-core passes, fp32-accurate). small_matmul: block_m / block_n / block_k /
# num_warps / num_stages for GEMMs too small to give every SM a 64 x 64 tile (an RNN time step),
# per operand precision ("float32", "half" for fp16 and bf16); persistent_scan: see below.
# Measured on an H200: tf32x3 is as accurate as ieee against torch (max error 3e-7 on an LSTM layer,
# the same as ieee) and 1.3-1.7x faster on the conv zoo models; with the small-GEMM launches an LSTM
# layer went from 2.21 ms (ieee, 64 x 64 tiles spread) to 0.83 ms in fp32 and from 0.67 to 0.48 ms in fp16.
GPU_TUNING: dict = {
    "fp32_dot": "tf32x3",
    "small_matmul": {"float32": {"block_m": 16, "block_n": 32, "block_k": 64, "num_warps": 4, "num_stages": 3},
                     "half": {"block_m": 16, "block_n": 32, "block_k": 64, "num_warps": 2, "num_stages": 3}},
    # a persistent forward scan's launch (kernels/scan.py); backward scans keep 8 warps. An LSTM layer (seq
    # 100, batch 256, hidden 32): fp32 0.152 ms at 4 warps, 0.173 at 2, 0.198 at 8; fp16 0.082 ms at 4,
    # 0.149 at 8 (bench/results/tune_persistent_cuda.md)
    "persistent_scan": {"float32": {"num_warps": 4}, "half": {"num_warps": 4}},
    # per conv shape (conv_shape_key): block_m / block_n / block_k / num_warps / num_stages, measured by
    # `python -m bench.tune_gpu --sweeps conv` (ResNet stage shapes); a shape not here gets conv.py's rule.
    # The gradients' tables are keyed by their forward conv's shape and its (input, output) layouts
    "conv": {},
    "conv_input_grad": {},
    "conv_weight_grad": {},
}


def conv_shape_key(dtype: torch.dtype, channels: int, height: int, width: int, filters: int, kernel: tuple,
                   stride: tuple, pooled: bool, layouts: tuple[bool, bool] = (False, False)) -> str:
    """The conv tuning table's key: what decides a conv tile's best launch (not the batch). `layouts`:
    whether its input and its output are stored channels-last (contiguous channel runs vectorize)."""
    stored = "->".join("nhwc" if cl else "nchw" for cl in layouts)
    return (f"{str(dtype).removeprefix('torch.')}:{channels}x{height}x{width}->{filters}:"
            f"k{kernel[0]}x{kernel[1]}:s{stride[0]}x{stride[1]}{':pool' if pooled else ''}:{stored}")
