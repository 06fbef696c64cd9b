"""Layers and blocks shared by backbones, decoders and heads."""
