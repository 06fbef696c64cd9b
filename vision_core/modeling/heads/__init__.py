"""Task heads (`official.vision.modeling.heads`)."""
