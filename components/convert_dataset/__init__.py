"""The dataset conversion step: labeled images on disk → sharded TFRecords of tf.Examples.

Modules:
  shapes    -- a seeded generator of the built-in "shapes" segmentation/detection dataset.
  sources   -- readers that turn a dataset folder into records (key + feature dict).
  records   -- the record types every source produces.
  coco      -- the COCO JSON source (detection records, COCO groundtruth for evaluation).
  examples  -- feature dict → tf.train.Example.
  pipeline  -- the Apache Beam pipeline and the step's `run(...)` entry point.
  rle       -- COCO run-length encoding of binary masks.

Nothing heavy is imported here, so `from components.convert_dataset import shapes` stays cheap.
"""
