"""Triton kernel templates and codegen, registered by op name."""
