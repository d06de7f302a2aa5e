"""The reference interpreter: runs a graph node by node through each op's torch reference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .errors import GraphError, InputError
from .graph import Graph, Node
from .ops import RefContext, get_op


class Interpreter:
    """Like torch.fx.Interpreter: `run` walks the nodes; override `run_node` to observe or change one."""

    def __init__(self, graph: Graph, params: Mapping[str, torch.Tensor], *, training: bool = False,
                 seed: int = 0) -> None:
        self.graph = graph
        self.params = params
        self.context = RefContext(training=training, seed=seed, run_graph=self._run_subgraph)

    def run(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return self._run(self.graph, list(inputs), self.params)

    def run_node(self, node: Node, args: list[torch.Tensor]) -> list[torch.Tensor]:
        try:
            return get_op(node.op).reference(args, node.attrs, self.context)
        except InputError as error:
            raise InputError(f"{node.where}: {error}") from None

    def _run_subgraph(self, graph: Graph, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        return self._run(graph, inputs, {})

    def _run(self, graph: Graph, inputs: list[torch.Tensor], params: Mapping[str, torch.Tensor]):
        input_nodes = graph.input_nodes
        if len(inputs) != len(input_nodes):
            raise InputError(f"graph {graph.name} takes {len(input_nodes)} inputs, got {len(inputs)}")
        env: dict[str, torch.Tensor] = {}
        feeds = iter(inputs)
        for node in graph.nodes:
            if node.op == "input":
                env[node.name] = next(feeds)
            elif node.op == "parameter":
                if node.name not in params:
                    raise GraphError(f"parameter %{node.name} has no value; initialise or load it")
                env[node.name] = params[node.name]
            else:
                results = self.run_node(node, [env[v.name] for v in node.inputs])
                env.update(zip((v.name for v in node.outputs), results))
        return [env[v.name] for v in graph.outputs]
