"""SavedModel export with serving signatures (image tensors, encoded image bytes, tf.Examples)."""
