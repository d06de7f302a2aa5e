"""Compile or interpret: Triton reads TRITON_INTERPRET when a kernel is defined (`triton.jit`), so the
choice is made here, before fusegraph defines any: without a CUDA device, use the interpreter. A value
the user set stays."""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
