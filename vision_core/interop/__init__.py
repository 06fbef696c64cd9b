"""Interoperability with TensorFlow Model Garden: weight bundles and their import."""
