"""A persistent scan: a whole RNN layer in one kernel (scans marked `persistent` by
passes/persistent_scans.py). Each program owns BLOCK_M batch rows and every column of the hidden
state, and loops over time with the carries in registers. Each step runs the cell's kernel on them:
its generated prologue (a backward step's cell gradient dz, every gate), the matmul by the loop's
weight as one tl.dot per (operand gate, output gate) pair (h W_hh^T: one operand gate, all output
gates; dz W_hh: all operand gates, one output gate), then its generated epilogue. Sequence steps are
read and per-step outputs written at time t; the final carries are stored once, after the loop."""

from __future__ import annotations

import torch
import triton

from ..ir import GraphError, Node
from ..ir.ops.scan import initial_carry_count
from ..passes.kernel_names import kernel_name
from ..passes.templates import register_check
from .epilogue import Emitter, Tile
from .expr import Names, helpers_for
from .group import Group, group_of
from .registry import KernelSource, register_template
from .source import fill, gate_columns, module_source
from .target import INTERPRETER_TILE_ELEMENTS
from .tuning import GPU_TUNING

# NOTE: tf32x3 (fp32 dots on the GPU) triples the dot operands' registers: a 64-column fp32 LSTM cell
# spills 328 B of stack per thread on sm_90, a 64-column fp16 one none (tests/kernels/test_gpu_compile.py)
MAX_WIDTH = {"float32": 32, "float16": 64, "bfloat16": 64}

SCAN_SOURCE = '''
@triton.jit
def {name}(
    {pointers},
    M, N, T, B_STRIDE_K, B_STRIDE_N,{strides}
    PRECISION: tl.constexpr, REVERSE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # this program's batch rows; all N columns of each gate in one tile, so no other program's
    # carries are needed
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < M
    col_ok = cols < N
    tile_mask = row_ok[:, None] & col_ok[None, :]
    weight_mask = col_ok[:, None] & col_ok[None, :]
    # loop constants once, in registers: the weight's gate tiles, the biases
    {constants}
    {carries_init}
    t = 0
    if REVERSE:
        t = T - 1
    {first_steps}
    for step in range(0, T):
        # 1 on the last step, whose "next" tiles are its own again (in bounds)
        last = (step + 1) // T
        t = step
        t_next = step + 1 - last
        if REVERSE:
            t = T - 1 - step
            t_next = T - 2 - step + last
        # the next step's sequence tiles are loaded now: their latency hides behind this step's math
        {prefetch}
        {cell}
        {advance}
    {carries_store}
'''


class _Roles:
    """Where each value of the cell comes from: a carry (a register tile), or scan input `in{i}`."""

    def __init__(self, scan: Node, names: Names | None = None) -> None:
        """`names`: where the carries' tile names come from (rendering needs them; a launch does not)."""
        attrs, body = scan.attrs, scan.attrs["body"]
        self.num_carries, self.num_seqs = attrs["num_carries"], attrs["num_seqs"]
        self.first = initial_carry_count(attrs)
        carries = body.inputs[: self.num_carries]
        self.carry_names = [names.fresh(f"carry_{v.name}") for v in carries] if names is not None else []
        self.index = {}
        for i, v in enumerate(body.inputs[self.num_carries:]):
            self.index[v.name] = self.first + i
        self.seqs = set(range(self.first, self.first + self.num_seqs))

    def input_index(self, value) -> int:
        return self.index[value.name]


def _cell(scan: Node) -> Group:
    """The kernel of one time step: the scan body's only node."""
    (fused,) = scan.attrs["body"].compute_nodes
    return group_of(fused)


class _Loads:
    """The cell's outside operands: loop constants loaded once before the loop (weight gate tiles,
    biases), sequence tiles loaded one step ahead (names from the graph, `_g<gate>` per gate tile)."""

    def __init__(self, node: Node, roles: _Roles, names: Names) -> None:
        self.node, self.roles, self.names = node, roles, names
        self.ins = names.arguments(node.inputs)
        self.constants: dict[str, str] = {}  # name -> load expression
        self.steps: dict[str, tuple[int, int]] = {}  # name -> (input, gate)
        self.named: dict[tuple, str] = {}

    def _name(self, key: tuple, hint: str) -> str:
        if key not in self.named:
            self.named[key] = self.names.fresh(hint)
        return self.named[key]

    def step(self, i: int, v, g: int) -> str:
        if i not in self.roles.seqs:
            raise GraphError(f"{self.node.where}: %{v.name} would be read element by element from a loop constant")
        name = self._name(("step", i, g), f"{v.name}_g{g}")
        self.steps[name] = (i, g)
        self.names.fresh(f"next_{name}")  # NOTE: only reserves it: prefetch_lines writes next_<name>
        return name

    def channel(self, i: int, v, g: int) -> str:
        name = self._name(("channel", i, g), f"{v.name}_g{g}")
        self.constants[name] = (f"tl.load({self.ins[i]}_ptr + {gate_columns(g)}, mask=col_ok, other=0.0)"
                                ".to(tl.float32)[None, :]")
        return name

    def weight_tile(self, i: int, v, k: int, n: int) -> str:
        """Rows k * N + cols (operand gate k) and columns n * N + cols (output gate n) of the weight."""
        name = self._name(("weight", i, k, n), f"{v.name}_k{k}_n{n}")
        self.constants[name] = (f"tl.load({self.ins[i]}_ptr + {gate_columns(k)}[:, None] * B_STRIDE_K"
                                f" + {gate_columns(n)}[None, :] * B_STRIDE_N, mask=weight_mask, other=0.0)")
        return name

    def _tile(self, i: int, g: int, at: str) -> str:
        stem = self.ins[i]
        return (f"tl.load({stem}_ptr + rows[:, None] * {stem}_rs + {at} * {stem}_ts + {gate_columns(g)}[None, :], "
                "mask=tile_mask, other=0.0).to(tl.float32)")

    def constant_lines(self) -> str:
        return "\n".join(f"    {name} = {load}" for name, load in self.constants.items())

    def first_step_lines(self) -> str:
        return "\n".join(f"    {name} = {self._tile(i, g, 't')}" for name, (i, g) in self.steps.items())

    def prefetch_lines(self) -> str:
        return "\n".join(f"        next_{name} = {self._tile(i, g, 't_next')}" for name, (i, g) in self.steps.items())

    def advance_lines(self) -> str:
        return "\n".join(f"        {name} = next_{name}" for name in self.steps)


def _step_lines(node: Node, roles: _Roles, loads: _Loads, names: Names) -> list[str]:
    """One time step on the carries: the cell's prologue, its matmul as one tl.dot per (operand gate,
    output gate), its epilogue, the per-step stores, then the new carries."""
    body = node.attrs["body"]
    group = _cell(node)
    anchor = group.anchor
    width = body.inputs[0].type.shape[-1]  # the carries': one gate
    k_gates, n_gates = (v.type.shape[-1] // width for v in (anchor.inputs[0], anchor.outputs[0]))
    tile = Tile(load_full=loads.step, load_channel=loads.channel, gates=n_gates,
                gate_width=lambda v: v.type.shape[-1] // width)
    cell = Emitter(tile, roles.input_index, names, indent=" " * 8)
    for value, carry in zip(body.inputs[: roles.num_carries], roles.carry_names):
        cell.bind(value, [carry])
    lines = cell.emit_all(group.prologue)  # NOTE: the emitter's own list: what it emits next follows these lines
    operand = []
    for k, expr in enumerate(cell.operand(anchor.inputs[0])):
        if expr in roles.carry_names:
            operand.append(expr)
        else:  # computed from masked loads: zero where the tile has no row or column
            lines.append(f"        a{k} = tl.where(tile_mask, {expr}, 0.0)")
            operand.append(f"a{k}")
    ib = roles.input_index(anchor.inputs[1])
    for n in range(n_gates):
        for k in range(k_gates):
            w = loads.weight_tile(ib, anchor.inputs[1], k, n)
            lines.append(f"        acc{n} {'+=' if k else '='} tl.dot({operand[k]}.to({w}.dtype), {w}, "
                         "input_precision=PRECISION)")
    cell.bind(anchor.outputs[0], [f"acc{n}" for n in range(n_gates)])
    cell.emit_all(group.elementwise)
    num_carries = roles.num_carries
    outs = names.arguments(node.outputs)
    for j, value in enumerate(body.outputs[num_carries:], start=num_carries):
        for g, expr in enumerate(cell.operand(value)):
            lines.append(f"        tl.store({outs[j]}_ptr + rows[:, None] * {outs[j]}_rs + t * {outs[j]}_ts"
                         f" + {gate_columns(g)}[None, :], {expr}.to({outs[j]}_ptr.dtype.element_ty), mask=tile_mask)")
    # every new carry is computed before any is replaced: a carry's old value handed on to another carry
    # is kept aside first
    news = [cell.operand(v)[0] for v in body.outputs[:num_carries]]
    kept = {expr: f"next{j}" for j, expr in enumerate(news) if expr in roles.carry_names}
    lines += [f"        {name} = {expr}" for expr, name in kept.items()]
    lines += [f"        {carry} = tl.where(tile_mask, {kept.get(expr, expr)}, 0.0)"
              for carry, expr in zip(roles.carry_names, news)]
    return lines


def render(node: Node) -> KernelSource:
    if not node.attrs.get("persistent", False):
        raise GraphError(f"{node.where}: only persistent scans are one kernel; others run step by step")
    body = node.attrs["body"]
    group = _cell(node)
    gates = max(v.type.shape[-1] for v in (*group.anchor.inputs, *group.anchor.outputs)) // body.inputs[0].type.shape[-1]
    names = Names(SCAN_SOURCE, [*(f"{w}{g}" for w in ("a", "acc") for g in range(gates)),
                                *(f"next{j}" for j in range(len(body.outputs)))])
    names.roles.update(_argument_roles(node))
    pointers = names.signature(node.inputs, node.outputs)  # first: the arguments get the plain names
    ins, outs = names.arguments(node.inputs), names.arguments(node.outputs)
    roles = _Roles(node, names)
    loads = _Loads(node, roles, names)
    step = _step_lines(node, roles, loads, names)
    if node.attrs.get("init_carries", False):
        init = [f"    {carry} = tl.load({ins[j]}_ptr + rows[:, None] * {ins[j]}_rs + cols[None, :], mask=tile_mask, "
                "other=0.0).to(tl.float32)" for j, carry in enumerate(roles.carry_names)]
    else:
        init = [f"    {carry} = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)" for carry in roles.carry_names]
    stores = [f"    tl.store({outs[j]}_ptr + rows[:, None] * {outs[j]}_rs + cols[None, :], "
              f"{carry}.to({outs[j]}_ptr.dtype.element_ty), mask=tile_mask)" for j, carry in enumerate(roles.carry_names)]
    name = node.attrs["kernel"]
    source = fill(
        SCAN_SOURCE, {"REVERSE": bool(node.attrs.get("reverse", False))},
        name=name, pointers=pointers, strides=_stride_names(node, roles, names), constants=loads.constant_lines(),
        carries_init=init, first_steps=loads.first_step_lines(), prefetch=loads.prefetch_lines(),
        cell=step, advance=loads.advance_lines(), carries_store=stores)
    return KernelSource(name, module_source(f"{name} (scan %{node.name}, persistent)", helpers_for(source) + "\n\n" + source))


def _argument_roles(scan: Node) -> dict[str, str]:
    """A scan's arguments named for the cell's values they feed or take (`x_proj`, `weight_hh`, `h_next`)."""
    body, attrs = scan.attrs["body"], scan.attrs
    first, carries = initial_carry_count(attrs), attrs["num_carries"]
    inner = [*body.inputs[:first], *body.inputs[carries:]]  # the carries it starts from, then sequences and constants
    return {outer.name: value.name for outer, value in (*zip(scan.inputs, inner), *zip(scan.outputs, body.outputs))}


def _stride_names(node: Node, roles: _Roles, names: Names) -> str:
    ins, outs = names.arguments(node.inputs), names.arguments(node.outputs)
    strides = [f" {ins[i]}_rs," for i in range(roles.first)]
    strides += [f" {ins[i]}_rs, {ins[i]}_ts," for i in sorted(roles.seqs)]
    strides += [f" {outs[j]}_rs," for j in range(roles.num_carries)]
    strides += [f" {outs[j]}_rs, {outs[j]}_ts," for j in range(roles.num_carries, len(node.outputs))]
    return "".join(strides)


def _rows(t):
    if t.stride(-1) != 1:
        raise GraphError(f"a scan operand of shape {tuple(t.shape)} must have contiguous rows")
    return t.stride(0)


def launch(fn, node, target, inputs, outputs) -> None:
    roles = _Roles(node)
    group = _cell(node)
    anchor = group.anchor
    seqs = [inputs[i] if inputs[i].stride(-1) == 1 else inputs[i].contiguous() for i in sorted(roles.seqs)]
    inputs = [*inputs[: roles.first], *seqs, *inputs[roles.first + roles.num_seqs:]]
    batch, time = seqs[0].shape[:2]
    width = node.attrs["body"].inputs[0].type.shape[-1]  # the carries': one gate
    b = inputs[roles.input_index(anchor.inputs[1])]
    stride_k, stride_n = (b.stride(1), b.stride(0)) if anchor.attrs.get("transpose_b", False) else b.stride()
    strides = [_rows(t) for t in inputs[: roles.first]]
    for seq in seqs:
        strides += [seq.stride(0), seq.stride(1)]
    strides += [_rows(t) for t in outputs[: roles.num_carries]]
    for out in outputs[roles.num_carries:]:
        strides += [_rows(out), out.stride(1)]
    block_m = target.tile(batch, gpu=16, interpreted=256)
    block_n = max(16, triton.next_power_of_2(width))
    fn[(triton.cdiv(batch, block_m),)](
        *inputs, *outputs, batch, width, time, stride_k, stride_n, *strides,
        PRECISION=target.precision(b.dtype), REVERSE=bool(node.attrs.get("reverse", False)),
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=_warps(node, b.dtype))


def _warps(node: Node, dtype: torch.dtype) -> int:
    """Tuned for forward scans (GPU_TUNING); a backward step holds more tiles at once: at 32 columns an
    fp32 LSTM's spills 88 B of stack per thread with 4 warps on sm_90, none with 8
    (tests/kernels/test_gpu_compile.py)."""
    if node.role.backward:
        return 8
    return GPU_TUNING["persistent_scan"]["float32" if dtype == torch.float32 else "half"]["num_warps"]


def accepts(scan: Node) -> str | None:
    """The hidden state must fit one register tile (all columns of each gate in one program)."""
    width, dtype = scan.attrs["body"].inputs[0].type.shape[-1], scan.attrs["body"].inputs[0].type.dtype
    if width > MAX_WIDTH.get(dtype, 0):
        return (f"a {dtype} hidden state of {width} columns is over {MAX_WIDTH.get(dtype, 0)}: one launch per step "
                "spreads each step's GEMM over the device")
    return None


register_template("scan", render, launch)
register_check("persistent_scan", accepts)


TIME_SHIFT_SOURCE = '''
@triton.jit
def {name}(src_ptr, dst_ptr, NUMEL, T, F, SHIFT, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < NUMEL
    t = (offs // F) % T
    source_t = t - SHIFT
    inside = mask & (source_t >= 0) & (source_t < T)
    x = tl.load(src_ptr + offs - SHIFT * F, mask=inside, other=0.0)
    tl.store(dst_ptr + offs, x, mask=mask)
'''


def render_time_shift(node):
    name = kernel_name(node)
    return KernelSource(name, module_source("time shift", TIME_SHIFT_SOURCE.format(name=name)))


def launch_time_shift(fn, node, target, inputs, outputs):
    (seq,), (out,) = inputs, outputs
    numel = seq.numel()
    features = numel // (seq.shape[0] * seq.shape[1])
    block = target.tile(numel, gpu=1024, interpreted=16384, large=INTERPRETER_TILE_ELEMENTS)
    shift = -1 if node.attrs.get("reverse", False) else 1
    fn[(triton.cdiv(numel, block),)](seq, out, numel, seq.shape[1], features, shift, BLOCK=block)


register_template("time_shift", render_time_shift, launch_time_shift)
