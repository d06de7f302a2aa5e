"""Compiler passes, each a pure Graph -> Graph function in its own file; `run_pipeline` strings them."""

from .fuse import Decision, fuse, fuse_with_report
from .hoist_rnn_projections import hoist_rnn_projections
from .manager import run_pipeline
from .options import CompileOptions

__all__ = ["CompileOptions", "Decision", "fuse", "fuse_with_report", "hoist_rnn_projections", "run_pipeline"]
