"""Compiler passes, each a pure Graph -> Graph function in its own file (fusion and autodiff land here)."""
