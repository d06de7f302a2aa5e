"""Kernel templates, registered by op name: `render(node)` writes a kernel's source, `launch` runs it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..ir import Node
from .target import Target


@dataclass(frozen=True)
class KernelSource:
    name: str  # the @triton.jit function's name: <op>_<fwd|bwd>[_fused_...]
    source: str  # a whole Python module


@dataclass(frozen=True)
class Template:
    """`render(node)` gives the kernel's source from the node's static attrs; `launch` runs it on
    concrete tensors (it computes the grid and the runtime arguments)."""

    op: str
    render: Callable[[Node], KernelSource]
    launch: Callable[[Any, Node, Target, list[torch.Tensor], list[torch.Tensor]], None]


TEMPLATES: dict[str, Template] = {}


def register_template(op: str, render, launch) -> None:
    TEMPLATES[op] = Template(op, render, launch)
