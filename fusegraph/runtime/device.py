"""Device choice: CUDA when available, else Triton's interpreter on the CPU.

Whether Triton interprets is fixed before fusegraph defines its kernels (see kernels/triton_env.py);
this checks that the device asked for is one the process can run kernels on."""

from __future__ import annotations

import torch

from ..ir import GraphError
from ..kernels.triton_env import INTERPRETING


def select_device(requested: str | None = None) -> str:
    """'cuda' or 'cpu' (the interpreter)."""
    if requested not in (None, "cuda", "cpu"):
        raise GraphError(f"device must be 'cuda', 'cpu' or None (automatic), got {requested!r}")
    device = requested or ("cpu" if INTERPRETING or not torch.cuda.is_available() else "cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise GraphError("device='cuda' was asked for but torch sees no CUDA device; use device=None or 'cpu'")
    if device == "cuda" and INTERPRETING:
        raise GraphError("TRITON_INTERPRET=1 is set, so kernels would be interpreted; unset it to run on the GPU")
    if device == "cpu" and not INTERPRETING:
        raise GraphError("kernels on the CPU need Triton's interpreter, which is chosen before fusegraph's "
                         "kernels are first used: set TRITON_INTERPRET=1 before that (at the start of the program)")
    return device
