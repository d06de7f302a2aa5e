"""From an IR node to a launchable kernel: render its template, cache the source, load it."""

from __future__ import annotations

import contextlib
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from ..ir import GraphError, Node
from ..ir.printer import format_node
from . import cache
from .registry import TEMPLATES, KernelSource, Template
from .source import LINE_WIDTH
from .target import Target

# NOTE: Triton's interpreter keeps launch state in module globals (grid, program ids, patched tl
# functions): interpreted launches from two threads corrupt each other, so callers take this lock
INTERPRETER_LOCK = threading.RLock()
_RECORDER = threading.local()


@contextlib.contextmanager
def recording_launches() -> Iterator[list[tuple]]:
    """Within it, each kernel launch on this thread is also listed as (jit function, grid, args, kwargs):
    the bare Triton launches a call makes (replayed by runtime/replay.py, timed by the benchmarks).
    Recordings nest: a launch is listed in every open one."""
    launches: list[tuple] = []
    stack = _RECORDER.__dict__.setdefault("stack", [])
    stack.append(launches)
    try:
        yield launches
    finally:
        stack.remove(launches)


def inside_launch() -> bool:
    """Whether this thread is inside a recorded kernel launch (the interpreter's own tensor traffic)."""
    return getattr(_RECORDER, "in_launch", False)


@dataclass
class LaunchCounter:
    count: int = 0


@dataclass
class Kernel:
    """A loaded @triton.jit function; `kernel[grid](...)` launches it and counts the launch."""

    source: KernelSource
    fn: object
    counter: LaunchCounter = field(default_factory=LaunchCounter)
    step: torch.Tensor | None = None  # random kernels add this device scalar to their seeds: a trainer counts steps in it

    @property
    def name(self) -> str:
        return self.source.name

    def __getitem__(self, grid):
        launcher = self.fn[grid]  # type: ignore[index]

        def run(*args, **kwargs):
            self.counter.count += 1
            recordings = getattr(_RECORDER, "stack", None)
            if not recordings:
                return launcher(*args, **kwargs)
            for recorded in recordings:
                recorded.append((self.fn, grid, args, kwargs))
            _RECORDER.in_launch = True
            try:
                return launcher(*args, **kwargs)
            finally:
                _RECORDER.in_launch = False

        return run


def load_kernel(source: KernelSource, counter: LaunchCounter | None = None) -> Kernel:
    module = cache.load(source.name, source.source)
    return Kernel(source, getattr(module, source.name), counter or LaunchCounter())


@dataclass
class NodeKernel:
    """A node bound to its template and loaded kernel: `run(inputs, outputs)` launches it."""

    node: Node
    template: Template
    kernel: Kernel
    target: Target

    def run(self, inputs: list[torch.Tensor], outputs: list[torch.Tensor]) -> None:
        self.template.launch(self.kernel, self.node, self.target, inputs, outputs)


def generate(node: Node, target: Target, counter: LaunchCounter | None = None) -> NodeKernel:
    op = node.attrs["anchor"] if node.op == "fused" else node.op
    template = TEMPLATES.get(op)
    if template is None:
        raise GraphError(f"{node.where}: no kernel template for op {node.op!r}")
    for value in (*node.inputs, *node.outputs):
        if value.type.dtype == "bfloat16" and target.interpreted:  # numpy, which it computes with, has none
            raise GraphError(f"{node.where}: bfloat16 runs on the GPU only (Triton's interpreter has no bfloat16); "
                             "use float32 or float16 on the CPU")
    source = template.render(node)
    return NodeKernel(node, template, load_kernel(KernelSource(source.name, ir_comment(node) + source.source), counter),
                      target)


def ir_comment(node: Node) -> str:
    """The IR a kernel runs, as comment lines above its module: one line per node, in order."""
    runs = node
    if node.op == "scan":  # a persistent scan: its step's one kernel
        (runs,) = node.attrs["body"].compute_nodes
    nodes = runs.attrs["body"].compute_nodes if runs.op == "fused" else (runs,)
    lines = [line for n in nodes for line in textwrap.wrap(format_node(n, comment_layer=False), LINE_WIDTH,
                                                           initial_indent="# ", subsequent_indent="#     ")]
    if node.op == "scan":
        lines.insert(0, f"# every step of scan %{node.name}{' (reversed)' if node.attrs.get('reverse') else ''} runs:")
    return "\n".join(lines) + "\n"
