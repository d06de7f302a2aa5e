"""Reverse-mode differentiation of a forward graph into a training graph.

Assumes: a verified forward graph with one output (the prediction); `loss` names a loss op.
Guarantees: a verified graph whose inputs are the forward inputs then `target`, and whose outputs
are the mean loss, the gradient of every trainable parameter in parameter order, the value the
loss read (the logits, for accuracy), then the new value of each running statistic (batch norms
train on their batch's statistics; running_state() pairs each with its parameter). Gradients
come from each op's VJP rule (in ir/ops), in terms of other ops; contributions to one value are
summed; only values that depend on a trainable parameter get gradients, so frozen parameters and
the data get no gradient nodes at all. A classifier ending in softmax / log_softmax is trained
through its logits (cross_entropy), a sigmoid output through its input (binary_cross_entropy).
Each scan is first made to output every carry at every step (what backpropagation through time
reads); its VJP is a reverse scan over the body's own VJP, which recomputes the cell's internals."""

from __future__ import annotations

from ..ir import BATCH, Graph, GraphBuilder, GraphError, Node, Role, TensorType, Value, get_op, verify
from ..ir.ops import OPS, has_trait
from ..ir.ops.losses import ABSORBS
from ..ir.ops.pool import WITH_POSITIONS
from .rewrite import fresh_name, with_attrs

LOSSES = tuple(name for name, op in OPS.items() if "loss" in op.traits)  # in declaration order


class GradEmitter:
    """What VJP rules build with: `op` emits a backward node named after the node being
    differentiated; `builder` starts a sub-graph; `differentiate` backpropagates through one."""

    def __init__(self, builder: GraphBuilder) -> None:
        self.b = builder
        self.current: Node | None = None

    def op(self, op: str, inputs, **attrs):
        base = f"d.{self.current.name}" if self.current is not None else "d"
        role = Role(backward=True, gradient_of=self.current.name if self.current is not None else None)
        return self.b.op(op, inputs, name=base, layer=self.current.layer if self.current else None, role=role,
                         **attrs)

    @staticmethod
    def builder(name: str) -> GraphBuilder:
        return GraphBuilder(name)

    @staticmethod
    def differentiate(builder: GraphBuilder, nodes: list[Node], seeds: dict[str, Value],
                      needs: set[str]) -> dict[str, Value]:
        return backprop(GradEmitter(builder), nodes, seeds, needs)


def needs_grad(nodes, sources: set[str]) -> set[str]:
    """Every value computed from one of `sources`."""
    needs = set(sources)
    for node in nodes:
        if any(v.name in needs for v in node.inputs):
            needs |= {v.name for v in node.outputs}
    return needs


def backprop(g: GradEmitter, nodes: list[Node], seeds: dict[str, Value], wanted: set[str],
             skip: Node | None = None) -> dict[str, Value]:
    """Gradients of the seeded values with respect to every value in `wanted` that they depend on."""
    sources = {v.name for n in nodes for v in n.inputs} & wanted
    needs = needs_grad(nodes, sources) | wanted
    grads = dict(seeds)
    for node in reversed(nodes):
        if node is skip or node.op in ("input", "parameter"):
            continue
        out_grads = [grads.get(v.name) for v in node.outputs]
        want = [v.name in needs for v in node.inputs]
        if all(d is None for d in out_grads) or not any(want):
            continue
        rule = get_op(node.op).vjp
        if rule is None:
            raise GraphError(f"{node.where}: training through {node.op} is not supported")
        g.current = node
        if any(d is None for d in out_grads) and node.op not in ("split", "scan") and not has_trait(node, "saves_positions"):
            out_grads = [d if d is not None else g.op("zeros", [v]) for d, v in zip(out_grads, node.outputs)]
        for value, grad, need in zip(node.inputs, rule(g, node, out_grads, want), want):
            if need and grad is not None:
                grads[value.name] = g.op("add", [grads[value.name], grad]) if value.name in grads else grad
    g.current = None
    return grads


def _extending(graph: Graph) -> GraphBuilder:
    """A builder that appends to `graph`'s nodes."""
    b = GraphBuilder(graph.name)
    b.nodes = list(graph.nodes)
    b.values = {v.name: v for n in graph.nodes for v in n.outputs}
    return b


def _loss_input(graph: Graph, loss: str) -> tuple[Value, Node | None]:
    """The value the loss reads, and the forward node the loss absorbs (softmax / sigmoid), if any."""
    prediction = graph.outputs[0]
    producer = graph.producers().get(prediction.name)
    if producer is not None and producer.op in ABSORBS.get(loss, ()):
        return producer.inputs[0], producer
    return prediction, None


def expose_scan_carries(graph: Graph) -> Graph:
    """Each scan also outputs each carry at every step (reusing a per-step output that already is
    it); attr `carry_steps` says which per-step output holds which carry."""
    nodes = []
    for node in graph.nodes:
        if node.op != "scan":
            nodes.append(node)
            continue
        body, carries = node.attrs["body"], node.attrs["num_carries"]
        body_outputs, outer_outputs = list(body.outputs), list(node.outputs)
        positions = []
        base = node.outputs[0].name.rsplit(".", 1)[0]
        for value in body.outputs[:carries]:
            steps = [v.name for v in body_outputs[carries:]]
            if value.name not in steps:
                body_outputs.append(value)
                time = node.inputs[node.attrs["num_carries"] if node.attrs.get("init_carries") else 0].type.shape[1]
                outer_outputs.append(Value(f"{base}.{value.name}_steps",
                                           value.type.with_shape((BATCH, time, *value.type.shape[1:]))))
                steps.append(value.name)
            positions.append(steps.index(value.name))
        new_body = Graph(body.nodes, tuple(body_outputs), body.name)
        nodes.append(node.replace(outputs=tuple(outer_outputs),
                                  attrs={**node.attrs, "body": new_body, "carry_steps": tuple(positions)}))
    return verify(Graph(tuple(nodes), graph.outputs, graph.name))


def training_dropouts(graph: Graph) -> Graph:
    """Every dropout of a graph that trains draws its mask (attr training=True; its VJP copies the attrs,
    so the backward reuses the mask): a launch, not a view, for the runtime and the cost model alike."""
    nodes = tuple(with_attrs(n, training=True) if n.op == "dropout" else n for n in graph.nodes)
    return Graph(nodes, graph.outputs, graph.name)


def training_batch_norms(graph: Graph) -> Graph:
    """Every batch norm of a graph that trains normalises with its batch's statistics (batch_norm_train,
    whose VJP differentiates through them) and gives its running statistics' new values
    (running_average nodes, each reading the parameter it replaces: running_state() finds them)."""
    taken = {v.name for n in graph.nodes for v in n.outputs}
    nodes = []
    for node in graph.nodes:
        if node.op != "batch_norm":
            nodes.append(node)
            continue
        x, running_mean, running_var, weight, bias = node.inputs
        (y,) = node.outputs
        stat = running_mean.type
        mean, var, invstd = (Value(fresh_name(taken, f"{y.name}.{what}"), stat) for what in ("mean", "var", "invstd"))
        nodes.append(node.replace(op="batch_norm_train", inputs=(x, weight, bias), outputs=(y, mean, var, invstd),
                                  attrs={"eps": node.attrs["eps"], "counter": node.attrs.get("counter")}))
        for running, batch in ((running_mean, mean), (running_var, var)):
            new = Value(fresh_name(taken, f"{running.name}.next"), stat)
            nodes.append(Node("running_average", (running, batch), (new,), {"momentum": node.attrs["momentum"]},
                              node.layer))
    return verify(Graph(tuple(nodes), graph.outputs, graph.name))


def running_state(train: Graph) -> list[tuple[str, Value]]:
    """(parameter name, its new value) for each running statistic a training step updates, in order."""
    return [(n.inputs[0].name, n.outputs[0]) for n in train.nodes if n.op == "running_average"]


def batch_counters(train: Graph) -> list[str]:
    """The parameters that count a batch norm's training steps (torch's num_batches_tracked)."""
    return [n.attrs["counter"] for n in train.nodes if n.op == "batch_norm_train" and n.attrs.get("counter")]


def pool_with_positions(graph: Graph) -> Graph:
    """Max pools save where each maximum was (int8) for their backward, instead of their input; a ReLU
    (or leaky ReLU) whose only reader is the pool moves after it (max and a non-decreasing function
    commute), so the backward needs neither the pre-pool map nor the pre-activation."""
    producers, users = graph.producers(), graph.users()
    outputs = {v.name for v in graph.outputs}
    taken = {v.name for n in graph.nodes for v in n.outputs}
    moved: set[int] = set()
    nodes = []
    for node in graph.nodes:
        if id(node) in moved:
            continue
        if node.op not in WITH_POSITIONS:
            nodes.append(node)
            continue
        source, (pooled,) = node.inputs[0], node.outputs
        act = producers.get(source.name)
        commute = (act is not None and has_trait(act, "non_decreasing") and len(users[source.name]) == 1
                   and source.name not in outputs)
        data = act.inputs[0] if commute else source
        positions = Value(fresh_name(taken, f"{pooled.name}.positions"), TensorType(pooled.type.shape, "int8"))
        maxima = Value(fresh_name(taken, f"{pooled.name}.max"), pooled.type) if commute else pooled
        if commute:
            nodes.remove(act)
        nodes.append(node.replace(op=WITH_POSITIONS[node.op], inputs=(data,), outputs=(maxima, positions)))
        if commute:
            nodes.append(act.replace(inputs=(maxima,), outputs=(pooled,)))
    return verify(Graph(tuple(nodes), graph.outputs, graph.name))


def autodiff(graph: Graph, loss: str, label_smoothing: float = 0.0) -> Graph:
    verify(graph)
    if loss not in LOSSES:
        raise GraphError(f"unknown loss {loss!r}; use one of {', '.join(LOSSES)}")
    if len(graph.outputs) != 1:
        raise GraphError(f"training needs a model with one output, this one has {len(graph.outputs)}")
    graph = expose_scan_carries(pool_with_positions(training_batch_norms(training_dropouts(graph))))
    logits, absorbed = _loss_input(graph, loss)
    if loss == "cross_entropy":
        if logits.type.rank != 2:
            raise GraphError(f"cross_entropy needs (batch, classes) outputs, got {logits.type}; use mse or "
                             "binary_cross_entropy for other shapes")
        target_type = TensorType((BATCH,), "int64")
    else:
        target_type = graph.outputs[0].type
    b = _extending(graph)
    target = b.input(_target_name(graph), target_type)
    loss_value, seed = b.op(loss, [logits, target], name="loss", **_loss_attrs(label_smoothing),
                            output_names=("value", "grad"))
    trainable = [n for n in graph.param_nodes if n.attrs.get("trainable", True)]
    grads = backprop(GradEmitter(b), list(graph.nodes), {logits.name: seed}, {n.name for n in trainable},
                     skip=absorbed)
    g = GradEmitter(b)
    outputs = [loss_value]
    for param in trainable:
        value = param.outputs[0]
        outputs.append(grads[value.name] if value.name in grads else g.op("zeros", [value]))
    outputs.append(logits)
    outputs += [new for _, new in running_state(graph)]
    return _inputs_first(b, outputs, f"{graph.name}_train")


def vjp_graph(graph: Graph, training: bool = True) -> Graph:
    """The forward graph and its reverse pass from given output gradients (what torch.autograd runs):
    inputs are the forward inputs, then one gradient per output (named `<output>.grad`); outputs are
    the forward outputs, the gradient of every trainable parameter in parameter order, of every float
    input in input order (zeros where nothing depends on it), then in training the new value of each
    running statistic. `training`: dropout draws and batch norms use the batch's statistics."""
    verify(graph)
    if training:
        graph = training_batch_norms(training_dropouts(graph))
    graph = expose_scan_carries(pool_with_positions(graph))
    b = _extending(graph)
    taken = {v.name for n in graph.nodes for v in n.outputs}
    seeds = {v.name: b.input(fresh_name(taken, f"{v.name}.grad"), v.type) for v in graph.outputs}
    trainable = [n.outputs[0] for n in graph.param_nodes if n.attrs.get("trainable", True)]
    floats = [v for v in graph.inputs if v.type.is_float]
    grads = backprop(GradEmitter(b), list(graph.nodes), seeds, {v.name for v in (*trainable, *floats)})
    g = GradEmitter(b)
    wrt = [grads[v.name] if v.name in grads else g.op("zeros", [v]) for v in (*trainable, *floats)]
    running = [new for _, new in running_state(graph)] if training else []
    return _inputs_first(b, [*graph.outputs, *wrt, *running], f"{graph.name}_vjp")


def _target_name(graph: Graph) -> str:
    """`target`, unless the model already has a value so named (a converted forward's argument): then
    `loss_target`, numbered if need be."""
    taken = {v.name for v in graph.inputs} | {v.name for n in graph.nodes for v in n.outputs}
    name, n = "target", 0
    while name in taken:
        n += 1
        name = "loss_target" if n == 1 else f"loss_target_{n - 1}"
    return name


def _loss_attrs(label_smoothing: float) -> dict:
    return {"label_smoothing": label_smoothing} if label_smoothing else {}


def loss_graph(graph: Graph, loss: str, label_smoothing: float = 0.0) -> Graph:
    """The forward graph with its loss: inputs then `target`; outputs (mean loss, the value the loss read)."""
    verify(graph)
    if loss not in LOSSES:
        raise GraphError(f"unknown loss {loss!r}; use one of {', '.join(LOSSES)}")
    logits, _ = _loss_input(graph, loss)
    target_type = TensorType((BATCH,), "int64") if loss == "cross_entropy" else graph.outputs[0].type
    b = _extending(graph)
    target = b.input(_target_name(graph), target_type)
    value, _ = b.op(loss, [logits, target], name="loss", output_names=("value", "grad"), **_loss_attrs(label_smoothing))
    return _inputs_first(b, [value, logits], f"{graph.name}_eval")


def _inputs_first(b: GraphBuilder, outputs, name: str) -> Graph:
    """The built graph with the appended `target` input moved up among the inputs."""
    inputs = [n for n in b.nodes if n.op == "input"]
    rest = [n for n in b.nodes if n.op != "input"]
    return verify(Graph((*inputs, *rest), tuple(outputs), name))
