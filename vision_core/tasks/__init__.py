"""Tasks: the glue between a config and a model, its inputs, losses and metrics."""
