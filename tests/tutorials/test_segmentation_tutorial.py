"""The segmentation tutorial (../shared/seeds/segmentation.md) runs as written after the rename.

The code below is the tutorial's end-to-end example with `official.vision` → `vision_core`, the
bucket path replaced by a local TFRecord written here, and small sizes (64×64, batch 2, 1 epoch)
so it runs on a CPU in seconds. Nothing else is changed: it imports `tensorflow.keras` as the
tutorial does, passes a Keras optimizer to `compile`, and fits on the input's dataset.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from vision_core.dataloaders import tf_example_keys as keys


def _write_records(path: str, n: int = 4, size: int = 64) -> None:
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(n):
            image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            mask = np.zeros((size, size, 1), np.uint8)
            mask[size // 4 : size // 2, size // 4 : size // 2] = 1 + i % 20
            feature = {
                keys.IMAGE_ENCODED: tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[tf.io.encode_png(image).numpy()])
                ),
                keys.IMAGE_FORMAT: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"png"])),
                keys.IMAGE_HEIGHT: tf.train.Feature(int64_list=tf.train.Int64List(value=[size])),
                keys.IMAGE_WIDTH: tf.train.Feature(int64_list=tf.train.Int64List(value=[size])),
                keys.SEGMENTATION_CLASS_ENCODED: tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[tf.io.encode_png(mask).numpy()])
                ),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())


@pytest.mark.slow
def test_segmentation_tutorial_runs_as_written(tmp_path):
    _write_records(os.path.join(tmp_path, "train-00000-of-00001.tfrecord"))
    pattern = os.path.join(tmp_path, "train-*-of-*.tfrecord")

    # ---- the tutorial, verbatim but for the import rename, the path and the sizes ----
    import tensorflow as tf  # noqa: F401
    import tensorflow.keras as tf_keras

    from vision_core.dataloaders.segmentation_input import SegmentationInput
    from vision_core.evaluation.segmentation_metrics import SegmentationMetrics
    from vision_core.losses.segmentation_losses import SegmentationLosses
    from vision_core.modeling.backbones import resnet
    from vision_core.modeling.heads.segmentation_heads import SegmentationHead
    from vision_core.modeling.segmentation_model import SegmentationModel

    backbone = resnet.ResNet(
        model_id=50, output_stride=16, include_top=False, norm_momentum=0.99, norm_epsilon=0.001
    )
    head = SegmentationHead(
        num_classes=21,
        level=4,
        num_convs=2,
        num_filters=256,
        feature_fusion="deeplabv3plus",
        low_level=2,
        low_level_num_filters=48,
        upsample_factor=4,
        use_sync_bn=False,
        norm_momentum=0.99,
        norm_epsilon=0.001,
    )
    model = SegmentationModel(backbone=backbone, decoder=None, head=head)
    losses = SegmentationLosses(loss_type="softmax_cross_entropy", ignore_label=-1)
    metrics = SegmentationMetrics(num_classes=21, ignore_label=-1)
    model.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate=1e-4), loss=losses, metrics=[metrics]
    )
    train_input = SegmentationInput(
        file_pattern=pattern, is_training=True, batch_size=2, input_size=(64, 64)
    )
    train_dataset = train_input.make_dataset()
    history = model.fit(train_dataset, epochs=1)
    # ---- end of the tutorial ----

    logs = history.history
    assert np.isfinite(logs["loss"][0])
    metric_keys = [k for k in logs if k != "loss"]
    assert metric_keys, logs
    assert all(0.0 <= logs[k][0] <= 1.0 for k in metric_keys)
    # DeepLabV3+ fuses at level 2 (stride 4) and upsamples ×4: full-resolution logits.
    outputs = model(tf.zeros([1, 64, 64, 3]))
    assert outputs["logits"].shape == (1, 64, 64, 21)
