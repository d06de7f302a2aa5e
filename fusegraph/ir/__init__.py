"""The IR layer: tensor types, values, nodes, graphs; the op registry; printer, verifier, interpreter."""

from .builder import GraphBuilder
from .errors import CacheError, CheckpointError, DistributedError, FusegraphError, GraphError, InputError
from .feeds import check_feeds
from .graph import FORWARD, Graph, Node, Role, Value
from .interpreter import Interpreter
from .nxview import to_networkx
from .ops import OPS, OpDef, get_op
from .printer import format_graph
from .types import BATCH, DTYPES, FLOAT_DTYPES, TensorType, as_int
from .verifier import verify

__all__ = [
    "BATCH", "DTYPES", "FLOAT_DTYPES", "OPS", "CacheError", "CheckpointError", "DistributedError", "FusegraphError",
    "Graph", "GraphBuilder", "GraphError",
    "FORWARD", "InputError", "Interpreter", "Role", "check_feeds", "Node", "OpDef", "TensorType", "Value", "as_int",
    "format_graph", "get_op",
    "to_networkx", "verify",
]
