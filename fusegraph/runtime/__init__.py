"""Device choice, memory planning, CompiledModel and the training loop."""
