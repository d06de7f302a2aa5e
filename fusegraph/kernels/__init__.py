"""Triton kernel templates and codegen, registered by op name."""

from . import triton_env  # noqa: F401, I001  (must run before triton is imported)
from . import backward, conv, conv_backward, losses, matmul, memory, norm, pointwise, pool, reduction, scan  # noqa: F401,E501
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
from .registry import TEMPLATES, KernelSource, Target

if triton_env.INTERPRETING:
    from . import interpreter

    interpreter.install()

__all__ = ["INTERPRETER_LOCK", "TEMPLATES", "Kernel",
           "KernelSource", "LaunchCounter", "NodeKernel", "Target", "generate", "inside_launch", "load_kernel",
           "recording_launches"]
