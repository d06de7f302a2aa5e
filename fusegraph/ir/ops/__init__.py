"""Every op fusegraph knows, each declared once in the module of its family."""

from . import conv, embedding, fused, io, linalg, losses, norm, pointwise, pool, scan, shape  # noqa: F401  (registers the ops)
from .base import (
    OPS,
    TRAITS,
    OpDef,
    RefContext,
    channel_inputs,
    get_op,
    has_trait,
    ops_with,
    register_op,
    set_traits,
)

__all__ = ["OPS", "TRAITS", "OpDef", "RefContext", "channel_inputs", "get_op", "has_trait", "ops_with", "register_op",
           "set_traits"]
