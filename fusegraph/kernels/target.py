"""The target a kernel renders and launches for: the device, its dot precision and block sizes (the
interpreter's large or small tiles; the GPU's tuned or default ones)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import torch
import triton

from .tuning import GPU_TUNING

# The interpreter pays a fixed 60-160 us per tl op whatever its block holds, which only amortises at
# tens of thousands of elements: its "large" tiles grow a block's rows (or its reduction) until the
# tile holds INTERPRETER_TILE_ELEMENTS, which puts most launches in one program (Triton refuses blocks
# over 2^20). The "small" tiles (each launch's `interpreted` cap) keep several programs and split
# reductions at test sizes: the tests that exist to cover those paths run with them
# (`interpreter_tiles("small")`, or FUSEGRAPH_INTERPRETER_TILES=small for a whole run).
INTERPRETER_TILE_ELEMENTS = 1 << 18


INTERPRETER_TILES = ("large", "small")


_interpreter_tiles = [os.environ.get("FUSEGRAPH_INTERPRETER_TILES", "large")]


if _interpreter_tiles[0] not in INTERPRETER_TILES:
    raise ValueError(f"FUSEGRAPH_INTERPRETER_TILES must be one of {INTERPRETER_TILES}, got {_interpreter_tiles[0]!r}")


@contextlib.contextmanager
def interpreter_tiles(kind: str) -> Iterator[None]:
    """Launches made within it (a model's first call records them) use the interpreter's `kind` tiles."""
    if kind not in INTERPRETER_TILES:
        raise ValueError(f"interpreter tiles are one of {INTERPRETER_TILES}, got {kind!r}")
    _interpreter_tiles.append(kind)
    try:
        yield
    finally:
        _interpreter_tiles.pop()


def interpreter_budget(*other_dims: int) -> int:
    """The rows (or reduction) a large interpreter tile may have beside blocks of `other_dims`."""
    return max(1, INTERPRETER_TILE_ELEMENTS // max(other_dims, default=1))


# FUSEGRAPH_TENSOR_DESCRIPTORS=0 keeps every operand on the pointer path (=1: descriptors even in the
# interpreter); unset, Target.descriptors asks the device
_DESCRIPTORS_SETTING = os.environ.get("FUSEGRAPH_TENSOR_DESCRIPTORS", "")
if _DESCRIPTORS_SETTING not in ("", "0", "1"):
    raise ValueError(f"FUSEGRAPH_TENSOR_DESCRIPTORS must be 0 or 1, got {_DESCRIPTORS_SETTING!r}")
_forced_descriptors: list[bool | None] = [None if not _DESCRIPTORS_SETTING else _DESCRIPTORS_SETTING == "1"]


@contextlib.contextmanager
def tensor_descriptors(used: bool) -> Iterator[None]:
    """Launches made within it pass TMA tensor descriptors where a kernel can take them (`used`), or never:
    how the interpreter runs the descriptor paths (it does not by default) and a GPU run compares without."""
    _forced_descriptors.append(bool(used))
    try:
        yield
    finally:
        _forced_descriptors.pop()


@dataclass(frozen=True)
class Target:
    """Where kernels run. The interpreter pays per program and per tl op, so it gets few, large blocks."""

    device: str  # "cuda" or "cpu" (Triton's interpreter)
    fp32_dot: str | None = None  # "ieee" | "tf32" | "tf32x3" for fp32 operands on the GPU; None: GPU_TUNING's

    @property
    def interpreted(self) -> bool:
        return self.device != "cuda"

    @property
    def large_interpreter_tiles(self) -> bool:
        return self.interpreted and _interpreter_tiles[-1] == "large"

    def precision(self, dtype: torch.dtype) -> str:
        """tl.dot's input precision for `dtype` operands. fp32 on the GPU: tf32x3 by default (fp32-accurate,
        validated at 1e-4); one-pass "tf32" only when asked for, as torch's TF32 mode is."""
        if self.interpreted or dtype != torch.float32 or not tensor_cores_take_tf32():
            return "ieee"
        return self.fp32_dot or GPU_TUNING["fp32_dot"]

    def tuned_conv(self, key: str, kernel: str = "conv") -> dict:
        """The measured launch for a conv shape (GPU_TUNING[kernel]: "conv", "conv_input_grad" or
        "conv_weight_grad"), or {} (the interpreter: always)."""
        return {} if self.interpreted else dict(GPU_TUNING[kernel].get(key, {}))

    def small_gemm(self, m: int, n: int, dtype: torch.dtype) -> dict:
        """The tuned launch for a GEMM whose 64 x 64 tiles would leave SMs idle; {} when none applies."""
        if self.interpreted or triton.cdiv(m, 64) * triton.cdiv(n, 64) >= sm_count():
            return {}
        return dict(GPU_TUNING["small_matmul"]["float32" if dtype == torch.float32 else "half"])

    def tile(self, size: int, gpu: int, interpreted: int, floor: int = 16, large: int | None = None) -> int:
        """A power-of-two block covering `size`, capped per target: `gpu`; in the interpreter
        `interpreted`, or with its large tiles `large` where given (interpreter_budget(...) for a
        tile's rows); >= `floor` for tl.dot."""
        if not self.interpreted:
            cap = gpu
        elif large is None or _interpreter_tiles[-1] == "small":
            cap = interpreted
        else:
            cap = max(interpreted, large)
        return max(floor, min(cap, triton.next_power_of_2(max(size, 1))))

    def spread(self, m: int, n: int, block_m: int, block_n: int, keep_n: bool = False,
               min_m: int = 16) -> tuple[int, int]:
        """On the GPU, smaller tiles (not under 16) until the grid has a program per SM: a small
        GEMM (one RNN step) in 64 x 64 tiles would run on a handful of the SMs. `keep_n` when a row
        must stay in one tile (a softmax epilogue); `min_m` where rows must stay a warpgroup MMA's 64
        (Hopper's wgmma: below it Triton falls back to Ampere's mma.sync), so N shrinks instead."""
        if self.interpreted:
            return block_m, block_n
        while triton.cdiv(m, block_m) * triton.cdiv(n, block_n) < sm_count():
            if block_m > max(16, min_m) and (block_m >= block_n or keep_n or block_n <= 16):
                block_m //= 2
            elif block_n > 16 and not keep_n:
                block_n //= 2
            else:
                break
        return block_m, block_n

    def dot_tiles(self, dtype: torch.dtype) -> tuple[int, int, int, dict]:
        """The GPU's default (M, N, K) tile and launch options of a tensor-core kernel: for half precision
        Hopper's 128 x 128 x 64 with 8 warps (two warpgroups) and 3 stages, from the Triton tutorial's
        sm_90 matmul; for fp32 (tf32x3: three dots a step) 64 x 64 x 32 on 4 warps, which does not spill.
        num_warps and num_stages are always passed, so a launch says what it asked for."""
        if dtype == torch.float32:
            return 64, 64, 32, {"num_warps": 4, "num_stages": 3}
        return 128, 128, 64, {"num_warps": 8, "num_stages": 3}

    @property
    def descriptors(self) -> bool:
        """Whether operands go through TMA tensor descriptors (a box copied by the copy engine, its zero fill
        the padding) where a kernel can take them: on a GPU that has the copy engine (Hopper, sm_90), or as
        `tensor_descriptors` says."""
        forced = _forced_descriptors[-1]
        if forced is not None:
            return forced
        return not self.interpreted and tensor_memory_accelerator()

    def launch_options(self, options: dict) -> dict:
        """`options` on the GPU; none in the interpreter (which ignores warps and stages)."""
        return {} if self.interpreted else dict(options)

    def split_k(self, k: int, block_k: int, tiles: int) -> int:
        """How many programs share each output tile's reduction over `k`: on the GPU enough for two
        programs per SM, each keeping at least 8 blocks of the reduction; in the interpreter with
        small tiles 2 as soon as there are two blocks, so the tests run the split path too."""
        blocks = triton.cdiv(k, block_k)
        if self.interpreted:
            return 2 if blocks >= 2 and _interpreter_tiles[-1] == "small" else 1
        return max(1, min(triton.cdiv(2 * sm_count(), tiles), blocks // 8))


@cache
def tensor_cores_take_tf32() -> bool:
    """TF32 (and so tf32x3) needs compute capability 8.0 (Ampere) or later."""
    return torch.cuda.get_device_capability(torch.cuda.current_device()) >= (8, 0)


@cache
def tensor_memory_accelerator() -> bool:
    """The Tensor Memory Accelerator (TMA) needs compute capability 9.0 (Hopper) or later, and a Triton that
    takes host-side tensor descriptors (3.4 or later)."""
    try:
        from triton.tools.tensor_descriptor import TensorDescriptor  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.get_device_capability(torch.cuda.current_device()) >= (9, 0)


@cache
def sm_count() -> int:
    return torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
