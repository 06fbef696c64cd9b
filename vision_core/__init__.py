"""vision_core: TensorFlow Model Garden's vision API (`official.vision`) on tf-keras.

Importing vision_core makes `tf.keras` mean tf-keras (Keras 2) when TensorFlow has not yet
resolved it, because every model here is a tf-keras model: mixing in Keras 3 objects fails.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.1.0"
