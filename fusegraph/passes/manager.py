"""The pipeline: the named passes a graph goes through before codegen, able to dump the IR after each."""

from __future__ import annotations

import functools
from collections.abc import Callable

from ..ir import Graph, verify
from .channels_last import channels_last
from .eliminate_dead_code import eliminate_dead_code
from .fold_batch_norms import fold_batch_norms
from .forward_scan_passthroughs import forward_scan_passthroughs
from .fuse import Decision, fuse_with_report
from .hoist_rnn_projections import hoist_rnn_projections
from .mixed_precision import half_precision
from .options import DEFAULTS, CompileOptions
from .persistent_scans import persistent_scans_with_report
from .sink_scan_projections import sink_scan_projections


def run_pipeline(graph: Graph, options: CompileOptions = DEFAULTS, *, training: bool = False,
                 dump: Callable[[str, Graph], None] | None = None) -> tuple[Graph, list[Decision]]:
    """verify → (with `options.precision`, a dtype: run in mixed precision; in a `training` graph, one
    computing gradients, each loss's gradient scaled by the loss scale where the options keep one) →
    eliminate dead code → read sequences instead of scans' pass-through outputs → hoist RNN input
    projections → sink per-step output projections after the loop → fold evaluation batch norms into
    the conv or dense before them → store the conv part channels-last → fuse → persistent scans (a
    narrow RNN layer as one kernel). Without `options.fuse`, only verify, the precision, dead code and
    the layout: one kernel per node, stored as the fused graph stores it. `options.memory_format`: how
    callers store the graph's rank-4 inputs and outputs. Returns the graph and the fusion decisions."""
    decisions: list[Decision] = []

    def fuse_step(g: Graph) -> Graph:
        fused, made = fuse_with_report(g)
        decisions.extend(made)
        return fused

    def persistent_step(g: Graph) -> Graph:
        persistent, made = persistent_scans_with_report(g)
        decisions.extend(made)
        return persistent

    steps: list[tuple[str, Callable[[Graph], Graph]]] = [("verify", verify)]
    if options.precision is not None:
        steps.append(("half_precision", functools.partial(half_precision, dtype=options.precision,
                                                          loss_scale=training and options.scales_loss)))
    steps.append(("eliminate_dead_code", eliminate_dead_code))
    if options.fuse:
        steps += [("forward_scan_passthroughs", forward_scan_passthroughs),
                  ("hoist_rnn_projections", hoist_rnn_projections),
                  ("sink_scan_projections", sink_scan_projections), ("fold_batch_norms", fold_batch_norms)]
    steps.append(("channels_last", functools.partial(channels_last, edges=options.memory_format)))
    if options.fuse:
        steps += [("fuse", fuse_step), ("persistent_scans", persistent_step)]
    for name, step in steps:
        graph = step(graph)
        if dump is not None:
            dump(name, graph)
    return graph, decisions
