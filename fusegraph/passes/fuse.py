"""Fusion: group nodes into `fused` nodes, one kernel each, by the PATTERNS below, run in order by
one driver (`fuse_with_report`); recurse into scan bodies. The patterns: a bias gradient beside its
weight gradient (bias_gradient_sibling); an anchor (conv, matmul, pool gradient) with the activation
prologue before it and the elementwise / pool / softmax epilogue after it (anchor_epilogue); chains
of elementwise ops (pointwise_chain); an elementwise chain whose value is a matmul's data operand,
computed in the matmul's K loop (computed_prologue: an RNN's backward step, dz then dz W_hh). Whether
a node may join a group is one JOIN_RULES rule per kind of node; a limit of the kernel template
itself (a softmax row in one block) is the template's check (passes/templates.py).

Assumes: a verified graph (scan projections already hoisted, for RNN cells to fuse fully).
Guarantees: a verified graph computing the same values; each `fused` node's body is the group's
original nodes; a Decision for every fusion made or refused, with its reason. Legality:
  - every node taken in reads a value the group makes (or, for an elementwise chain, is an
    elementwise producer of its operands); no input from outside depends on the group;
  - a value the group makes that is used outside it (or is a graph output) is stored: it escapes;
  - a pool or softmax is taken only when its input has no other consumer, and ends a conv group;
  - the tile the template computes covers the op: bias on the channel axis, elementwise operands of
    the output's shape, splits into equal gates along the last axis and concats of one tile per
    gate (a matmul's gate tiles, or an elementwise chain over one gate's elements), softmax rows
    that fit one block; a computed prologue's epilogue reads chain values only where the output's
    columns are the gate's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import networkx as nx

from ..ir import Graph, Node, to_networkx, verify
from ..ir.ops import has_trait, ops_with
from .kernel_names import group_name
from .rewrite import stable_toposort, subgraph, with_attrs
from .templates import refusal

# NOTE: read off the ops' declared traits (ir/ops/*.py set_traits), not listed here
ANCHORS = ops_with("conv_anchor") | ops_with("matmul_anchor")
POOL_GRADS = ops_with("pool_gradient")
KERNEL_ANCHORS = ops_with("kernel_anchor")  # fused-group hosts
ELEMENTWISE = ops_with("elementwise")
POOLS = ops_with("pool")
SOFTMAXES = ops_with("softmax")
PROLOGUE = ops_with("prologue")


@dataclass(frozen=True)
class Decision:
    """One fusion decision: `nodes` joined kernel `kernel`, or `node` stayed out of it, and why."""

    kernel: str
    nodes: tuple[str, ...]
    fused: bool
    reason: str
    scope: str = ""  # the scan whose body this is about, if any
    pattern: str = ""  # the fusion pattern that made or refused it


@dataclass(frozen=True)
class Pattern:
    """One way nodes join a kernel. `find(grouper)` adds the groups it matches to `grouper.found`
    (taking their nodes) and records a Decision for each group made and each node refused."""

    name: str
    find: Callable[[_Grouper], None]


def fuse(graph: Graph) -> Graph:
    return fuse_with_report(graph)[0]


def fuse_with_report(graph: Graph, scope: str = "") -> tuple[Graph, list[Decision]]:
    decisions: list[Decision] = []
    nodes = []
    for node in graph.nodes:
        if node.op == "scan":
            body, inner = fuse_with_report(node.attrs["body"], scope=node.outputs[0].name)
            decisions += inner
            node = with_attrs(node, body=body)
        nodes.append(node)
    graph = Graph(tuple(nodes), graph.outputs, graph.name)
    grouper = _Grouper(graph, scope)
    for pattern in PATTERNS:
        grouper.pattern = pattern.name
        pattern.find(grouper)
    decisions += grouper.decisions
    if not grouper.found:
        return graph, decisions
    replaced: dict[int, Node] = {}
    dropped: set[int] = set()
    for members, pattern in grouper.found:
        kernel = group_name(members)
        body, inputs, outputs = subgraph(members, graph, kernel)
        anchor = next((n.op for n in members if n.op in KERNEL_ANCHORS), "pointwise")
        attrs = {"body": body, "anchor": anchor, "kernel": kernel, "pattern": pattern}
        fused = Node("fused", tuple(inputs), tuple(outputs), attrs, members[0].layer, members[-1].role)
        replaced[id(members[-1])] = fused
        dropped |= {id(n) for n in members[:-1]}
    rewritten = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in dropped]
    return verify(Graph(tuple(stable_toposort(rewritten)), graph.outputs, graph.name)), decisions


class _Grouper:
    def __init__(self, graph: Graph, scope: str) -> None:
        self.graph = graph
        self.scope = scope
        self.users = graph.users()
        self.outputs = {v.name for v in graph.outputs}
        self.producer = graph.producers()
        self.view = to_networkx(graph)
        self.taken: set[int] = set()
        self.decisions: list[Decision] = []
        self.found: list[tuple[list[Node], str]] = []  # (members in graph order, the pattern that made it)
        self.pattern = ""

    def _record(self, members: list[Node], reason: str) -> None:
        self.found.append((members, self.pattern))
        self.taken |= {id(n) for n in members}
        self.decisions.append(Decision(group_name(members), tuple(n.name for n in members), True, reason, self.scope,
                                       self.pattern))

    def grow_from(self, starts: list[Node]) -> None:
        """Each start not yet taken, grown into its group (see `_grow`)."""
        for node in starts:
            if id(node) not in self.taken:
                members = self._grow(node)
                if len(members) > 1:
                    self._record(members, self._why(members))

    def computed_operands(self) -> None:
        """An elementwise chain (possibly split into gates and joined back) whose value is the data
        operand of a matmul (an RNN's backward step: the cell gradient dz, then dz W_hh): the matmul
        kernel computes its operand chunk by chunk, every gate at once, storing what else the chain
        makes that is used elsewhere."""
        for chain in [g for g, _ in self.found if not any(n.op in KERNEL_ANCHORS for n in g)]:
            made_by = {v.name: n for n in chain for v in n.outputs}
            matmul = next((u for n in reversed(chain) for v in n.outputs for u in self.users.get(v.name, [])
                           if has_trait(u, "matmul_anchor") and u.inputs[0].name == v.name
                           and u.inputs[1].name not in made_by), None)
            if matmul is None or self._depends_on_group(matmul.inputs[1].name, chain) or \
                    any(has_trait(n, "per_channel") for n in chain):
                continue  # NOTE: the gated template computes the operand from full-size values only
            joined = matmul.inputs[0]
            gated = any(has_trait(n, "gates") for n in chain)
            if gated and made_by[joined.name].op != "concat":
                continue  # the operand must be the full width the gates join into
            host = next((g for g, _ in self.found if any(n is matmul for n in g)), [matmul])
            gate = (_gate_shapes(chain) or (None, joined.type.shape))[1]
            read_by_epilogue = [v for n in host[1:] for v in n.inputs if v.name in made_by]
            if host[0] is not matmul or any(n.op == "split" for n in host) or (read_by_epilogue and (
                    matmul.outputs[0].type.shape != gate or any(v.type.shape != gate for v in read_by_epilogue))):
                # a prologue of its own, gates in the epilogue, or an epilogue reading the chain's values where
                # the output's columns are not the chain's (they are when dh and the gates share a width)
                continue
            merged = sorted([*chain, *host], key=self.graph.nodes.index)
            self.found = [(g, p) for g, p in self.found if g is not chain and g is not host]
            self._record(merged, f"the elementwise chain computes the matmul's operand %{joined.name} "
                                 "chunk by chunk inside its K loop")

    def bias_gradients_with_weight_gradients(self) -> None:
        """A bias gradient sums the same output gradient the weight gradient reads row by row: compute
        it in the weight-gradient kernel (one read of the output gradient, one launch fewer)."""
        for node in self.graph.nodes:
            if node.op != "bias_grad":
                continue
            dy = node.inputs[0]
            for user in self.users.get(dy.name, []):
                if id(user) in self.taken:
                    continue
                rank = dy.type.rank
                if (user.op == "matmul_tn" and user.inputs[0].name == dy.name and
                        node.attrs["axis"] % rank == rank - 1) or \
                        (has_trait(user, "conv_weight_gradient") and user.inputs[1].name == dy.name and
                         node.attrs["axis"] % rank == 1):
                    self._record(sorted([user, node], key=self.graph.nodes.index),
                                 f"bias gradient reduced inside the {user.op} kernel")
                    break

    def _why(self, members: list[Node]) -> str:
        at = next((i for i, n in enumerate(members) if n.op in KERNEL_ANCHORS), None)
        if at is None:
            return f"elementwise chain of {', '.join(n.op for n in members)}"
        parts = [f"{members[at].op} anchor"]
        if at:
            parts.append(f"{', '.join(n.op for n in members[:at])} applied to its input as it is loaded (prologue)")
        if members[at + 1:]:
            parts.append(f"{', '.join(n.op for n in members[at + 1:])} in its epilogue")
        return " with ".join(parts[:2]) + (f" and {parts[2]}" if len(parts) > 2 else "")

    def _prologue(self, anchor: Node) -> list[Node]:
        """Single-consumer ops feeding the anchor's data input, applied as it is loaded: unary activations
        for a conv or matmul; for a pool gradient also two-input gradient rules (the ReLU's backward),
        whose second operand is read at the same pooled position."""
        allowed = ELEMENTWISE if anchor.op in POOL_GRADS else PROLOGUE
        chain: list[Node] = []
        value = anchor.inputs[0]
        while True:
            producer = self.producer.get(value.name)
            if (producer is None or id(producer) in self.taken or producer.op not in allowed
                    or has_trait(producer, "per_channel") or value.name in self.outputs
                    or len(self.users.get(value.name, [])) != 1
                    or any(self._depends_on_group(v.name, [anchor]) for v in producer.inputs[1:])):
                return chain
            chain.insert(0, producer)
            value = producer.inputs[0]

    def _refuse(self, members: list[Node], node: Node, reason: str) -> None:
        self.decisions.append(Decision(group_name(members), (node.name,), False, reason, self.scope, self.pattern))

    def _grow(self, start: Node) -> list[Node]:
        # a pool gradient hosts elementwise ops on its output like a chain does (e.g. the ReLU gradient before it)
        kind = "conv" if has_trait(start, "conv_anchor") else "matmul" if has_trait(start, "matmul_anchor") else "pointwise"
        members = [start]
        made = {v.name for v in start.outputs}
        gates = self._grow_forward(kind, members, made, None, self.graph.nodes.index(start), report=True)
        if kind == "pointwise":
            members, made, gates = self._absorb_producers(members, made, gates)
        if kind in ("matmul", "pointwise") and gates:
            members += self._outside_splits(members, gates, kind)
        if kind in ("conv", "matmul") or start.op in POOL_GRADS:
            members = self._prologue(start) + members
        order = {id(n): i for i, n in enumerate(self.graph.nodes)}
        return sorted(members, key=lambda n: order[id(n)])

    def _grow_forward(self, kind: str, members: list[Node], made: set[str], gates: int | None, position: int,
                      report: bool) -> int | None:
        """Takes in, in graph order from `position`, each node that reads a value the group makes and
        may join it; grows `members` and `made` in place and returns the gate count."""
        ids = {id(n) for n in members}
        for node in self.graph.nodes[position + 1:]:
            if id(node) in self.taken or id(node) in ids or node.op in ("input", "parameter"):
                continue
            if not any(v.name in made for v in node.inputs):
                continue
            reason = self._refusal(kind, members, made, node, gates)
            if reason:
                if report:
                    self._refuse(members, node, reason)
                continue
            if node.op == "split":
                gates = len(node.outputs)
            elif node.op == "concat" and kind == "pointwise":
                gates = len(node.inputs)
            members.append(node)
            ids.add(id(node))
            made |= {v.name for v in node.outputs}
        return gates

    def _absorb_producers(self, members: list[Node], made: set[str],
                          gates: int | None) -> tuple[list[Node], set[str], int | None]:
        """Elementwise producers of the chain's operands computed from values the chain does not make
        (a GRU's z gate, made beside its r gate): taken in with what else reads them, they cost no
        launch and no round trip through memory. Kept only if nothing outside the chain then sits
        between two of its nodes."""
        before = list(members), set(made), gates
        grown = True
        while grown:
            grown = False
            ids = {id(n) for n in members}
            for member in list(members):
                for value in member.inputs:
                    producer = self.producer.get(value.name)
                    if value.name in made or producer is None or id(producer) in self.taken or id(producer) in ids \
                            or producer.op not in ELEMENTWISE or any(o.name in self.outputs for o in producer.outputs):
                        continue
                    if any(self._depends_on_group(v.name, members) for v in producer.inputs) or \
                            self._refusal("pointwise", members, made, producer, gates):
                        continue
                    members.append(producer)
                    ids.add(id(producer))
                    made |= {o.name for o in producer.outputs}
                    grown = True
            if grown:
                first = min(self.graph.nodes.index(n) for n in members)
                gates = self._grow_forward("pointwise", members, made, gates, first - 1, report=False)
        if any(v.name not in made and self._depends_on_group(v.name, members) for n in members for v in n.inputs):
            return before
        return members, made, gates

    def _outside_splits(self, members: list[Node], gates: int, kind: str) -> list[Node]:
        """Splits of outside values into the group's gates, read only by the group (GRU's input gates):
        taking them in lets the kernel read the gates straight from the unsplit value."""
        ids = {id(n) for n in members}
        found = []
        for node in self.graph.nodes:
            if node.op != "split" or id(node) in ids or id(node) in self.taken:
                continue
            consumers = [u for v in node.outputs for u in self.users.get(v.name, [])]
            outputs_used = any(v.name in self.outputs for v in node.outputs)
            if consumers and not outputs_used and all(id(u) in ids for u in consumers) \
                    and not self._refusal(kind, members, set(), node, gates):
                found.append(node)
        return found

    def _depends_on_group(self, value_name: str, members: list[Node]) -> bool:
        producer = self.producer.get(value_name)
        if producer is None or producer.op in ("input", "parameter"):
            return False
        ancestors = nx.ancestors(self.view, producer.name) | {producer.name}
        return any(m.name in ancestors for m in members)

    def _refusal(self, kind: str, members: list[Node], made: set[str], node: Node, gates: int | None) -> str:
        """Why `node` cannot join the group (a `kind` kernel so far made of `members`), or ""."""
        for v in node.inputs:
            if v.name not in made and self._depends_on_group(v.name, members):
                return f"its input %{v.name} is computed from the group outside it (fusing would make a cycle)"
        pooled = next((m for m in members if m.op in POOLS), None)
        if pooled is not None:
            # after a pool only elementwise work on the pooled tile (e.g. an activation moved past it)
            if node.op not in ELEMENTWISE or node.outputs[0].type != pooled.outputs[0].type:
                return "after a pool, a conv kernel takes only elementwise ops on the pooled map"
            if has_trait(node, "per_channel") and node.attrs["axis"] % node.outputs[0].type.rank != 1:
                return "bias along a non-channel axis"
            return ""
        rule = next((rule for applies, rule in JOIN_RULES if applies(node)), None)
        if rule is None:
            return f"{node.op} has no place in a {kind} kernel's epilogue"
        return rule(self, Joining(kind, members, made, node, gates, members[0].outputs[0].type))

    def _elementwise_joins(self, j: Joining) -> str:
        node, kind = j.node, j.kind
        if has_trait(node, "per_channel") and has_trait(j.members[0], "pool_gradient"):
            return "a per-channel vector after a pooling gradient (its kernel walks the pool's input, not its channels)"
        if has_trait(node, "per_channel"):
            axis = node.attrs["axis"] % node.outputs[0].type.rank
            channel = 1 if kind == "conv" else node.outputs[0].type.rank - 1
            if kind != "pointwise" and (axis != channel or node.inputs[0].name not in j.made):
                return f"bias along axis {axis} is not the tile's channel axis"
        if kind == "conv" and node.outputs[0].type != j.anchor_type:
            return f"its shape {node.outputs[0].type} is not the conv tile's {j.anchor_type}"
        if kind == "pointwise":
            shapes = set(_gate_shapes(j.members) or (j.anchor_type.shape,))
            if node.outputs[0].type.shape not in shapes:
                return f"its shape {node.outputs[0].type} differs from the chain's {j.anchor_type}"
            if has_trait(node, "per_channel") and j.gates:
                return "a bias inside a chain split into gates"
        return ""

    def _pool_joins(self, j: Joining) -> str:
        if j.kind != "conv":
            return "a pool fuses only after a convolution"
        return self._single_consumer(j.node.inputs[0].name) or (
            "values of the group are used outside it; a pooled kernel stores only the pooled map"
            if self._escapes(j.members, j.node) else "")

    def _softmax_joins(self, j: Joining) -> str:
        if j.kind != "matmul" or j.gates:
            return "a softmax fuses only after a dense layer's matmul"
        if j.node.attrs.get("axis", -1) % j.anchor_type.rank != j.anchor_type.rank - 1:
            return "softmax is not over the last axis"
        return refusal("matmul_softmax", [*j.members, j.node]) or self._single_consumer(j.node.inputs[0].name)

    def _concat_joins(self, j: Joining) -> str:
        if j.kind == "pointwise":
            return self._pointwise_concat(j.members, j.node, j.gates, j.anchor_type)
        t = j.node.outputs[0].type
        if j.kind != "matmul" or not j.gates or len(j.node.inputs) != j.gates or t.shape != j.anchor_type.shape \
                or j.node.attrs["axis"] % t.rank != t.rank - 1:
            return "only a gated matmul tile joins its gates back (a concat of one tile per gate)"
        return ""

    def _split_joins(self, j: Joining) -> str:
        node, kind, gates, anchor_type = j.node, j.kind, j.gates, j.anchor_type
        if kind not in ("matmul", "pointwise"):
            return "only a matmul tile or an elementwise chain splits into gates"
        sizes = node.attrs["sizes"]
        t = node.inputs[0].type
        if node.attrs["axis"] % t.rank != t.rank - 1 or len(set(sizes)) != 1:
            return "the split is not into equal gates along the last axis"
        if gates is not None and len(sizes) != gates:
            return f"{len(sizes)} gates do not match the group's {gates}"
        if kind == "pointwise":
            if any(has_trait(m, "per_channel") for m in j.members):
                return "a bias inside a chain split into gates"
            full, gate = _gate_shapes(j.members) or (
                (t.shape, node.outputs[0].type.shape) if node.inputs[0].name in j.made
                else (t.shape, anchor_type.shape))
            if (t.shape, node.outputs[0].type.shape) != (full, gate) or \
                    (node.inputs[0].name in j.made and gates is None and t.shape != anchor_type.shape):
                return f"the split input {t} is not the chain's {anchor_type}"
            return ""
        if t.shape != anchor_type.shape:
            return f"the split input {t} is not the matmul tile {anchor_type}"
        return ""

    def _pointwise_concat(self, members: list[Node], node: Node, gates: int | None, anchor_type) -> str:
        """An elementwise chain joins gate-wide values back into one full-width value, stored gate by gate."""
        t = node.outputs[0].type
        widths = {v.type.shape for v in node.inputs}
        if node.attrs["axis"] % t.rank != t.rank - 1 or len(widths) != 1:
            return "the concat is not of equal gates along the last axis"
        if any(has_trait(m, "per_channel") for m in members):
            return "a bias inside a chain joined into gates"
        if gates is not None and (len(node.inputs) != gates or (t.shape, node.inputs[0].type.shape) != _gate_shapes(members)):
            return f"a concat of {len(node.inputs)} gates {t} does not match the chain's {gates} gates"
        if gates is None and node.inputs[0].type.shape != anchor_type.shape:
            return f"the concat inputs {node.inputs[0].type} are not the chain's {anchor_type}"
        return ""

    def _single_consumer(self, name: str) -> str:
        consumers = self.users.get(name, [])
        if name in self.outputs or len(consumers) != 1:
            names = ", ".join(f"%{n.name}" for n in consumers) + (" and the graph output" if name in self.outputs else "")
            return f"%{name} has other consumers ({names}); it must be stored"
        return ""

    def _escapes(self, members: list[Node], joining: Node) -> bool:
        """Whether a member's value is needed outside the group once `joining` is in it."""
        ids = {id(n) for n in members} | {id(joining)}
        for n in members:
            for v in n.outputs:
                if v.name in self.outputs or any(id(u) not in ids for u in self.users.get(v.name, [])):
                    return True
        return False


@dataclass(frozen=True)
class Joining:
    """A node asking to join a group: the group's kernel kind, members, values, gates and anchor tile."""

    kind: str
    members: list[Node]
    made: set[str]
    node: Node
    gates: int | None
    anchor_type: object


# which rule decides whether a node may join a group, by what the node is (first that applies)
JOIN_RULES = (
    (lambda n: n.op in ELEMENTWISE, _Grouper._elementwise_joins),
    (lambda n: n.op in POOLS, _Grouper._pool_joins),
    (lambda n: n.op in SOFTMAXES, _Grouper._softmax_joins),
    (lambda n: n.op == "concat", _Grouper._concat_joins),
    (lambda n: n.op == "split", _Grouper._split_joins),
    (lambda n: n.op in ANCHORS or n.op == "scan", lambda grouper, j: f"{j.node.op} starts a kernel of its own"),
)

# NOTE: in order: anchors grow before elementwise chains, so an activation feeding a conv or matmul becomes
# its prologue rather than a chain of its own (an earlier anchor's epilogue still takes it first: no
# recomputation); a chain becomes a matmul's computed prologue only once both exist
PATTERNS = (
    Pattern("bias_gradient_sibling", _Grouper.bias_gradients_with_weight_gradients),
    Pattern("anchor_epilogue", lambda g: g.grow_from([n for n in g.graph.nodes if n.op in (*ANCHORS, *POOL_GRADS)])),
    Pattern("pointwise_chain", lambda g: g.grow_from([n for n in g.graph.nodes if n.op in ELEMENTWISE])),
    Pattern("computed_prologue", _Grouper.computed_operands),
)


def _gate_shapes(members: list[Node]) -> tuple[tuple, tuple] | None:
    """(full width, one gate): the shapes an elementwise chain split into gates works on."""
    for node in members:
        if node.op == "split":
            return node.inputs[0].type.shape, node.outputs[0].type.shape
        if node.op == "concat":
            return node.outputs[0].type.shape, node.inputs[0].type.shape
    return None
