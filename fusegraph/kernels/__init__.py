"""Triton kernel templates and codegen, registered by op name."""

from . import triton_env  # noqa: F401, I001  (must run before triton is imported)
from . import conv, embedding, linalg, losses, norm, pointwise, pool, scan, shape  # noqa: F401
from .codegen import (
    INTERPRETER_LOCK,
    Kernel,
    LaunchCounter,
    NodeKernel,
    generate,
    inside_launch,
    load_kernel,
    recording_launches,
)
from .registry import TEMPLATES, KernelSource
from .target import Target

if triton_env.INTERPRETING:
    from . import interpreter

    interpreter.install()

__all__ = ["INTERPRETER_LOCK", "TEMPLATES", "Kernel",
           "KernelSource", "LaunchCounter", "NodeKernel", "Target", "generate", "inside_launch", "load_kernel",
           "recording_launches"]
