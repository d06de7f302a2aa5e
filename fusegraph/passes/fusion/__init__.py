"""Fusion's parts: the grouping state (state.py), the join rules that ask a group's template Anchor
what it takes (joins.py), growing a group from where it starts (grow.py), and the patterns that find
groups (patterns.py). The pass itself is passes/fuse.py."""

from .patterns import PATTERNS
from .state import Decision, Group, Grouping

__all__ = ["PATTERNS", "Decision", "Group", "Grouping"]
