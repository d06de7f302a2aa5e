"""What a kernel is called: the ops it runs, in the order it applies them.

`conv2d_bias_add_relu_max_pool2d`: an anchor's prologue ops, the anchor, then its epilogue's distinct
ops; `_bwd` when the kernel is backward work its ops do not already name (read from the nodes' typed
roles, never from value names). A persistent scan is named for its cell: `lstm_cell_persistent`.
fuse and persistent_scans name the kernels they make (attr `kernel`); every template and explain()
ask `kernel_name`, so a kernel has one name wherever it is shown."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..ir import Node
from .templates import anchor_of

MAX_LENGTH = 64


def kernel_name(node: Node) -> str:
    if node.op in ("fused", "scan"):  # named when they were made (a scan that is not persistent is no kernel)
        return node.attrs.get("kernel", "scan")
    return group_name([node])


def group_name(members: Sequence[Node]) -> str:
    at = next((i for i, n in enumerate(members) if anchor_of(n.op) is not None), None)
    if at is None:
        words = list(dict.fromkeys(n.op for n in members))
    else:
        before, after = members[:at], members[at + 1:]
        prologue = [n.op for n in before if n.op != "bias_grad"]
        computed_alongside = [n.op for n in before if n.op == "bias_grad"]  # a bias gradient beside its weight's
        words = [*dict.fromkeys(prologue), members[at].op, *dict.fromkeys([*computed_alongside, *(n.op for n in after)])]
    name = "_".join(words)
    if any(n.role.backward for n in members) and not re.search(r"bwd|grad", name):
        name += "_bwd"
    return _shortened(name)


def persistent_scan_name(scan: Node) -> str:
    return _shortened(re.sub(r"\W+", "_", scan.attrs["body"].name).strip("_") + "_persistent")


def _shortened(name: str) -> str:
    return name if len(name) <= MAX_LENGTH else name[:MAX_LENGTH - 4].rstrip("_") + "_etc"
