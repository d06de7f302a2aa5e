"""How an op is declared: its arity, shape rule and torch reference, in one place."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import GraphError
from ..types import BATCH, FLOAT_DTYPES, TensorType


@dataclass(frozen=True)
class RefContext:
    """What a torch reference may need beyond its inputs: the mode and a way to run sub-graphs."""

    training: bool
    seed: int
    run_graph: Callable[[Any, list[torch.Tensor]], list[torch.Tensor]]


ShapeRule = Callable[[Sequence[TensorType], Mapping[str, Any]], list[TensorType]]
Reference = Callable[[list[torch.Tensor], Mapping[str, Any], RefContext], list[torch.Tensor]]
# (builder, node, gradient of each output or None, which inputs need a gradient) -> gradient of each input
VJP = Callable[[Any, Any, list[Any], list[bool]], list[Any]]


@dataclass(frozen=True)
class TorchForms:
    """How PyTorch spells an op: the modules, functions (ATen overloads included) and tensor methods that
    fg.from_torch and torch.compile(backend="fusegraph") convert to it. A call's options are the op's
    attrs (`defaults`), by name; `fixed` are arguments PyTorch has that must keep these values."""

    modules: tuple[type, ...] = ()
    functions: tuple[Callable, ...] = ()
    methods: tuple[str, ...] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict)
    # the in-place spellings (F.relu_, aten.relu_.default, Tensor.relu_): the same op, whose result also
    # replaces the tensor it was given
    in_place_functions: tuple[Callable, ...] = ()
    in_place_methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class OpDef:
    name: str
    num_inputs: int | None  # None: variadic
    infer: ShapeRule
    reference: Reference
    doc: str = ""
    vjp: VJP | None = None  # reverse-mode rule in terms of other ops; None: not differentiable
    traits: frozenset[str] = frozenset()  # what passes and templates may do with it: see TRAITS
    math: Any = None  # an elementwise op's formula (ir/ops/expr.py Expr over its inputs), for code generation
    module: Callable[[Mapping[str, Any]], Any] | None = None  # attrs -> the torch.nn module computing it
    defaults: Mapping[str, Any] = field(default_factory=dict)  # the attrs a layer gives it when it names the op
    view: Callable[[Any], bool] | None = None  # node -> whether it launches nothing (its output views input 0)
    launches: Callable[[Any], int] | None = None  # node -> kernel launches its template makes (None: one)
    # node -> (input position, rows, what) for each input that indexes rows of something: checked before a run
    index_inputs: Callable[[Any], list[tuple[int, int, str]]] | None = None
    torch: TorchForms | None = None  # what converts to it from PyTorch (None: a handler of interop's own, or nothing)


# NOTE: the facts fusion reads off an op, declared with the op (set_traits) instead of in op-name lists
TRAITS = {
    "elementwise": "one output element from the same element of each input: joins an epilogue or a chain",
    "prologue": "an activation an anchor may apply to its data operand as it loads it",
    "activation": "an activation a layer names (activation=..., Activation(...)); declared by activation()",
    "conv_anchor": "starts a conv kernel (channel axis 1) that takes a bias, elementwise ops, then a pool after it",
    "matmul_anchor": "starts a matmul kernel (channels last) that takes a bias, elementwise ops, gates, a softmax",
    "pool_gradient": "a pooling gradient that hosts elementwise producers of its output gradient",
    "conv_weight_gradient": "a conv's weight gradient (x, dy): a bias gradient of dy may be summed in its kernel",
    "pool": "a pool an anchor's epilogue may end with",
    "global_pool": "a mean over every position of each channel: a conv epilogue may end with it",
    "max_pool": "takes each window's maximum (a NaN wins), or gives its gradient to it",
    "saves_positions": "outputs each window's maximum position (int8) beside the pooled map: that output has no gradient",
    "from_positions": "a max pool gradient that reads the saved window positions, not the pool's input",
    "softmax": "a row softmax a matmul epilogue may end with",
    "per_channel": "elementwise over its full inputs, its rank-1 inputs (input 1 on) vectors along attr `axis` "
                   "broadcast over the rest (channel_inputs)",
    "non_decreasing": "a non-decreasing function (with the attrs layers give it): commutes with a max pool",
    "rectifier": "ReLU-like: a layer ending in it starts from He initialisation",
    "loss": "a loss: (prediction, target[, gradient scale]) -> (mean value in float32, gradient of the prediction)",
    "zero_filled": "its kernel zero-fills the output, then accumulates into it: one more launch and write",
    "gates": "splits a value into equal gate-wide tiles along its last axis, or joins such tiles back",
    "random": "draws random numbers: its kernel takes a seed that advances with every training step",
    "layout_follows": "stores its rank-4 operands and results alike (indexes them as one): one layout for all "
                      "(every elementwise op does too)",
    "layout_free": "addresses each rank-4 operand through its own layout: may read one layout and write another",
    "autocast_half": "torch.autocast runs it in half precision (its lower-precision list): in mixed precision its "
                     "float operands are half, where every other op keeps its inputs' dtype",
}

OPS: dict[str, OpDef] = {}


def register_op(op: OpDef) -> OpDef:
    if op.name in OPS:
        raise RuntimeError(f"op {op.name!r} is defined twice")
    OPS[op.name] = op
    return op


def set_vjp(name: str, vjp: VJP) -> None:
    """Attach the VJP rule to an op declared above it in the same file."""
    from dataclasses import replace

    OPS[name] = replace(OPS[name], vjp=vjp)


def set_execution(name: str, *, view: Callable[[Any], bool] | None = None,
                  launches: Callable[[Any], int] | None = None,
                  index_inputs: Callable[[Any], list[tuple[int, int, str]]] | None = None) -> None:
    """How an op declared above runs: when it is a view, how many launches its kernel makes, which
    inputs are row indices (the runtime checks them, as the interpreter would read out of bounds)."""
    from dataclasses import replace

    op = OPS[name]
    OPS[name] = replace(op, view=view or op.view, launches=launches or op.launches,
                        index_inputs=index_inputs or op.index_inputs)


def set_traits(names: Sequence[str], *traits: str) -> None:
    """Add traits (keys of TRAITS) to ops declared above it in the same file."""
    from dataclasses import replace

    unknown = set(traits) - set(TRAITS)
    if unknown:
        raise RuntimeError(f"unknown op traits {sorted(unknown)}")
    for name in names:
        OPS[name] = replace(OPS[name], traits=OPS[name].traits | frozenset(traits))


def ops_with(trait: str) -> frozenset[str]:
    """Every op that has `trait`."""
    return frozenset(name for name, op in OPS.items() if trait in op.traits)


def has_trait(node: Any, trait: str) -> bool:
    """Whether `node`'s op has `trait` (a key of TRAITS)."""
    if trait not in TRAITS:
        raise RuntimeError(f"unknown op trait {trait!r}")
    return trait in OPS[node.op].traits


def channel_inputs(node: Any) -> list[int]:
    """Positions of a `per_channel` node's inputs that are per-channel vectors (a bias, a norm's statistics)."""
    if "per_channel" not in OPS[node.op].traits or node.outputs[0].type.rank < 2:
        return []
    # a vector, or one kept as torch broadcasts it, (C, 1, ..., 1): the same values in the same order
    return [i for i, v in enumerate(node.inputs)
            if i >= 1 and (v.type.rank == 1 or v.type.rank > 1 and set(v.type.shape[1:]) == {1})]


def get_op(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise GraphError(f"unknown op {name!r}; known ops: {', '.join(sorted(OPS))}") from None


def require_float(t: TensorType, what: str = "input") -> None:
    if not t.is_float:
        raise GraphError(f"{what} has dtype {t.dtype}; this op takes {', '.join(FLOAT_DTYPES)}")


def require_rank(t: TensorType, rank: int, what: str, hint: str = "") -> None:
    if t.rank != rank:
        raise GraphError(f"{what} must have rank {rank}, got shape {_shape(t)}{'; ' + hint if hint else ''}")


def require_same_dtype(types: Sequence[TensorType]) -> None:
    dtypes = {t.dtype for t in types}
    if len(dtypes) > 1:
        raise GraphError(f"inputs have different dtypes {sorted(dtypes)}; cast them to one dtype")


def widened(t: torch.Tensor) -> torch.Tensor:
    """`t` in float32 if it is half precision (what a half-precision op computes in), else as it is."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def normalize_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise GraphError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


def _shape(t: TensorType) -> str:
    return "(" + ", ".join(str(d) for d in t.shape) + ")"


def same_type_unary(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
    require_float(types[0])
    return [types[0]]


def batch_of(t: TensorType) -> str | int:
    return t.shape[0] if t.shape else BATCH


shape_str = _shape
