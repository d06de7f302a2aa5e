"""`torch.compile(model, backend="fusegraph")`, registered through the `torch_dynamo_backends` entry point.

Dynamo hands over FX graphs whose inputs are the model's inputs and its parameters and buffers.
The graph is first walked as a conversion walks it (from_torch.refusals), so each node is judged with
its own arguments; torch.fx's CapabilityBasedPartitioner groups the nodes the converter takes into
partitions; each becomes a fusegraph Model (interop/from_torch.py, with the weight inputs bound
rather than copied) run by a partition module: fusegraph's forward kernels, and its backward kernels
through torch.autograd (runtime/module.py's Differentiable), on the very tensors Dynamo passes in, so
torch.optim's updates reach the kernels. Whatever fusegraph does not convert runs as eager torch,
with one warning listing the nodes left out and why."""

from __future__ import annotations

import operator
import warnings

import torch
from torch import fx, nn
from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner
from torch.fx.passes.operator_support import OperatorSupport

from ..ir import GraphError
from .from_torch import convert, refusals


class FusegraphFallbackWarning(UserWarning):
    """Parts of a graph torch.compile handed fusegraph run as eager torch."""


class _Convertible(OperatorSupport):
    """The nodes from_torch's converter takes with their own arguments (`refusals`: the graph walked as a
    conversion walks it); why each other node is refused is kept for the fallback warning."""

    def __init__(self, root: fx.GraphModule) -> None:
        super().__init__()
        self.refused = refusals(root, {n.name for n in root.graph.nodes if _names_a_weight(n)})

    def is_node_supported(self, submodules, node: fx.Node) -> bool:
        return node.op.startswith("call_") and node.name not in self.refused


def backend(gm: fx.GraphModule, example_inputs: list[torch.Tensor]):
    """The compiled callable for one graph Dynamo captured."""
    support = _Convertible(gm)
    partitioner = CapabilityBasedPartitioner(gm, support, allows_single_node_partition=True)
    total = sum(n.op.startswith("call_") for n in gm.graph.nodes)
    fused = partitioner.fuse_partitions(partitioner.propose_partitions())
    # NOTE: the partitioner's own getitems (unpacking a partition's outputs) are no nodes of the model's
    left_out = [f"{n.name} ({_what(n)}): {support.refused.get(n.name, 'fusegraph has no conversion for it')}"
                for n in fused.graph.nodes
                if (n.op in ("call_function", "call_method") or n.op == "call_module" and not n.target.startswith("fused_"))
                and not _counts_batches(n) and not _logs_usage(n) and not _unpacks_a_partition(n)]
    if left_out:
        _warn(left_out, total)
    for node in list(fused.graph.nodes):
        if node.op == "call_module" and node.target.startswith("fused_"):
            weights = [isinstance(a, fx.Node) and _names_a_weight(a) for a in node.args]
            setattr(fused, node.target, _LazyPartition(fused.get_submodule(node.target), node.target, weights))
    fused.recompile()
    return fused.forward


def _counts_batches(node: fx.Node) -> bool:
    """A training batch norm's `num_batches_tracked.add_(1)`: bookkeeping eager torch does as it would."""
    return node.op == "call_method" and node.target == "add_" and isinstance(node.args[0], fx.Node) \
        and node.args[0].name.endswith("num_batches_tracked_")


def _logs_usage(node: fx.Node) -> bool:
    """torchvision's `_log_api_usage_once(...)` (torch's usage logging, which stochastic depth calls on every
    forward): it computes nothing, and eager torch logs as it would."""
    return node.op == "call_function" and node.target is torch._C._log_api_usage_once


def _unpacks_a_partition(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[0], fx.Node) \
        and node.args[0].op == "call_module" and str(node.args[0].target).startswith("fused_")


def _warn(left_out: list[str], total: int | None = None) -> None:
    of = f" of {total}" if total is not None else ""
    warnings.warn(f"fusegraph runs {len(left_out)}{of} nodes of a torch.compile graph as eager torch:\n  "
                  + "\n  ".join(left_out), FusegraphFallbackWarning, stacklevel=3)


def _what(node: fx.Node) -> str:
    target = node.target
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def _names_a_weight(node: fx.Node) -> bool:
    """Dynamo's name for an input that is a module's parameter or buffer (a batch norm's statistics)."""
    return node.op == "placeholder" and ("_parameters_" in node.name or "_buffers_" in node.name)


class _LazyPartition(nn.Module):
    """A partition, converted on its first call (outside Dynamo's tracing, on the real tensors); where
    fusegraph cannot convert it, the partition's own eager graph, said in a warning."""

    def __init__(self, submodule: fx.GraphModule, name: str, weights: list[bool]) -> None:
        super().__init__()
        self.submodule, self.name, self.weights = submodule, name, weights
        self.impl: nn.Module | None = None

    def forward(self, *args):
        if self.impl is None:
            try:
                self.impl = _partition(self.submodule, self.name, args, self.weights)
            except GraphError as error:
                inner = ", ".join(n.name for n in self.submodule.graph.nodes if n.op.startswith("call_"))
                _warn([f"{inner}: {error}"])
                self.impl = self.submodule
        return self.impl(*args)


def _partition(submodule: fx.GraphModule, name: str, args: tuple, weight_flags: list[bool]) -> nn.Module:
    """The fusegraph module replacing one partition's submodule."""
    if not all(isinstance(a, torch.Tensor) for a in args):
        raise GraphError("its inputs are not all tensors")
    weights = {i: f"arg{i}" for i, flag in enumerate(weight_flags) if flag}
    with torch.no_grad():
        examples = [a.detach().clone().requires_grad_(a.requires_grad) for a in args]  # a frozen table stays so
    model, converter = convert(submodule, submodule, examples, name=name, weights=weights)
    if len(converter.modes) > 1:
        raise GraphError("mixes training and evaluation dropouts or batch norms")
    training = next(iter(converter.modes), True)
    single = not isinstance(converter.outputs, list)
    return _Partition(model, [i for i in range(len(args)) if i not in weights], training, single)


class _Partition(nn.Module):
    """One partition as fusegraph kernels, its weights the tensors each call passes."""

    def __init__(self, model, inputs: list[int], training: bool, single: bool) -> None:
        super().__init__()
        from ..runtime import compile
        from ..runtime.module import Differentiable

        self.compiled = compile(model, cuda_graphs=False)
        self.compiled.shared_weights = True
        self.runner = Differentiable(self.compiled, "torch.compile backend 'fusegraph'")
        self.inputs, self.training_mode, self.single = inputs, training, single
        self.bound = {ours: int(key.removeprefix("arg")) for ours, key in model.torch_names.items()
                      if ours in self.compiled.params}  # a tied parameter reads the tensor of the one it is

    def forward(self, *args: torch.Tensor):
        xs = [args[i] for i in self.inputs]
        tensors = {**self.compiled.params, **{name: args[i] for name, i in self.bound.items()}}
        wanted = torch.is_grad_enabled() and any(t.requires_grad for t in (*xs, *tensors.values()))
        if self.training_mode or wanted:
            outputs = self.runner(xs, tensors, self.training_mode)
        else:  # evaluation without gradients: the inference kernels (batch norms folded from the weights)
            outputs = self.runner.infer(xs, tensors)
        return outputs[0] if self.single else tuple(outputs)
