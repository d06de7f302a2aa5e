"""Triton decides between compiling and interpreting when it is first imported, so the decision is
made here, before any `import triton` in fusegraph: without a CUDA device, use the interpreter."""

from __future__ import annotations

import os
import sys

import torch

TRITON_IMPORTED_BEFORE_FUSEGRAPH = "triton" in sys.modules

if not TRITON_IMPORTED_BEFORE_FUSEGRAPH and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
