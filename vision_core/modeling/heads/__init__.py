"""Task heads (`official.vision.modeling.heads`)."""

from vision_core.modeling.heads import dense_prediction_heads, segmentation_heads
from vision_core.modeling.heads.dense_prediction_heads import RetinaNetHead, RPNHead
from vision_core.modeling.heads.segmentation_heads import MaskScoring, SegmentationHead

__all__ = [
    "MaskScoring",
    "RPNHead",
    "RetinaNetHead",
    "SegmentationHead",
    "dense_prediction_heads",
    "segmentation_heads",
]
