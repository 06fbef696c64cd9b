"""Models and their parts: backbones, decoders, heads, layers (Model Garden's `modeling`)."""
