"""The one definition of tf.Example feature keys.

Every writer (the Beam converter) and every reader (the decoders and input parsers) imports its
keys from here, so a TFRecord written by one side is always readable by the other. The spellings
match TensorFlow Model Garden's `tf_example_decoder` and `create_coco_tf_record`, which makes
TFRecords interchangeable between the two projects.
"""

# Image.
IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_SOURCE_ID = "image/source_id"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_FILENAME = "image/filename"
IMAGE_KEY_SHA256 = "image/key/sha256"

# Classification: one integer class id per image (0-based) and, optionally, its name.
IMAGE_CLASS_LABEL = "image/class/label"
IMAGE_CLASS_TEXT = "image/class/text"

# Objects (detection and instance segmentation); boxes are normalized to [0, 1].
OBJECT_BBOX_XMIN = "image/object/bbox/xmin"
OBJECT_BBOX_YMIN = "image/object/bbox/ymin"
OBJECT_BBOX_XMAX = "image/object/bbox/xmax"
OBJECT_BBOX_YMAX = "image/object/bbox/ymax"
OBJECT_CLASS_LABEL = "image/object/class/label"
OBJECT_CLASS_TEXT = "image/object/class/text"
OBJECT_AREA = "image/object/area"
OBJECT_IS_CROWD = "image/object/is_crowd"
OBJECT_MASK = "image/object/mask"
# Pascal VOC's per-object 0/1 flags, spelled as the TensorFlow Object Detection API's VOC
# converter writes them (Model Garden's decoders ignore them).
OBJECT_DIFFICULT = "image/object/difficult"
OBJECT_TRUNCATED = "image/object/truncated"
# Per-object integer attributes: `image/object/attribute/<name>` (RetinaNet attribute heads).
OBJECT_ATTRIBUTE_PREFIX = "image/object/attribute/"

# Semantic segmentation: a single-channel PNG of class ids.
SEGMENTATION_CLASS_ENCODED = "image/segmentation/class/encoded"
SEGMENTATION_CLASS_FORMAT = "image/segmentation/class/format"

# Panoptic segmentation (Model Garden's decoder spelling, used by both sides here).
PANOPTIC_CATEGORY_MASK = "image/panoptic/category_mask"
PANOPTIC_INSTANCE_MASK = "image/panoptic/instance_mask"
