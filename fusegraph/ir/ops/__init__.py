"""Every op fusegraph knows, each declared once in the module of its family."""

from . import conv, embedding, fused, io, linalg, losses, pointwise, pool, scan, shape  # noqa: F401  (registers the ops)
from .base import OPS, OpDef, RefContext, get_op, register_op

__all__ = ["OPS", "OpDef", "RefContext", "get_op", "register_op"]
