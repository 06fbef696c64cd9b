"""The backbones/decoders/heads tutorial (../shared/seeds/backbones-decoders-heads.md) runs as
written after the rename `official.vision` → `vision_core`.

The step-by-step blocks and the complete RetinaNet example are copied unchanged but for the
import path; the checks after each block are ours. The tutorial builds ResNet-50 for any input
size (`InputSpec(shape=[None, None, None, 3])`), so `output_specs` has open spatial sizes; one
small image (64x64) then goes through the assembled detector to show it runs end to end.
"""

import contextlib
import io

import numpy as np
import pytest
import tensorflow as tf


def _complete_example() -> tuple[object, str]:
    """Runs the tutorial's complete example; returns its model and what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        # ---- the tutorial, verbatim but for the import rename ----
        import tensorflow as tf  # noqa: F401
        import tf_keras

        from vision_core.modeling import retinanet_model
        from vision_core.modeling.backbones import resnet
        from vision_core.modeling.decoders import fpn
        from vision_core.modeling.heads import dense_prediction_heads as dp_heads

        # 1️⃣ Build the backbone.

        backbone = resnet.ResNet(
            model_id=50,
            input_specs=tf_keras.layers.InputSpec(shape=[None, None, None, 3]),
            stem_type="v0",
            use_sync_bn=False,
        )

        # 2️⃣ Build the FPN decoder using the backbone’s output specs.

        decoder = fpn.FPN(
            input_specs=backbone.output_specs,
            min_level=3,
            max_level=7,
            num_filters=256,
            fusion_type="sum",
            use_separable_conv=False,
        )

        # 3️⃣ Build the RetinaNet head.

        head = dp_heads.RetinaNetHead(
            min_level=3,
            max_level=7,
            num_classes=80,  # COCO has 80 classes.
            num_anchors_per_location=9,
            num_convs=4,
            num_filters=256,
            use_separable_conv=False,
        )

        # 4️⃣ Assemble the full model.

        model = retinanet_model.RetinaNetModel(backbone=backbone, decoder=decoder, head=head)

        # Inspect the model’s output specs.

        print(model.output_specs)  # {'logits': ..., 'boxes': ...}
        # ---- end of the tutorial ----
    return model, printed.getvalue()


@pytest.mark.slow
def test_complete_retinanet_example_runs_and_prints_output_specs():
    model, printed = _complete_example()
    specs = model.output_specs
    assert "cls_outputs" in printed and "box_outputs" in printed
    # Open spatial sizes (any input size); channels = anchors x classes / anchors x 4.
    assert specs["cls_outputs"]["3"].as_list() == [None, None, None, 9 * 80]
    assert specs["box_outputs"]["7"].as_list() == [None, None, None, 9 * 4]
    assert specs["detection_boxes"].as_list() == [None, 100, 4]

    images = tf.random.stateless_uniform([1, 64, 64, 3], seed=[0, 1])
    training = model(images, training=True)
    assert training["cls_outputs"]["3"].shape.as_list() == [1, 8, 8, 720]
    assert training["box_outputs"]["7"].shape.as_list() == [1, 1, 1, 36]
    outputs = model(images, training=False)
    assert outputs["detection_boxes"].shape.as_list() == [1, 100, 4]
    assert np.isfinite(outputs["detection_scores"].numpy()).all()
    # ResNet-50 (23,561,152) + FPN (3,873,792) + head (6,504,180): API.md's 33,939,124.
    assert model.count_params() == 33_939_124


def test_step_by_step_blocks_run_as_written():
    # ---- step 1 ----
    import tf_keras

    from vision_core.modeling.backbones import resnet

    backbone = resnet.ResNet(
        model_id=50,
        input_specs=tf_keras.layers.InputSpec(shape=[None, None, None, 3]),
        stem_type="v0",
        use_sync_bn=False,
    )
    # ---- step 2 ----
    from vision_core.modeling.decoders import fpn

    decoder = fpn.FPN(
        input_specs=backbone.output_specs,
        min_level=3,
        max_level=7,
        num_filters=256,
        fusion_type="sum",
        use_separable_conv=False,
    )
    # ---- step 3 ----
    from vision_core.modeling.heads import dense_prediction_heads as dp_heads

    head = dp_heads.RetinaNetHead(
        min_level=3,
        max_level=7,
        num_classes=80,
        num_anchors_per_location=9,
        num_convs=4,
        num_filters=256,
        use_separable_conv=False,
    )
    # ---- step 4 ----
    from vision_core.modeling import retinanet_model

    model = retinanet_model.RetinaNetModel(backbone=backbone, decoder=decoder, head=head)
    # ---- end of the tutorial ----
    assert sorted(decoder.output_specs, key=int) == ["3", "4", "5", "6", "7"]
    assert sorted(model.checkpoint_items) == ["backbone", "decoder", "head"]
    # The tutorial's "factory modules" section: the head factory module exists and builds the
    # same head from a config.
    from vision_core.configs.retinanet import RetinaNet
    from vision_core.modeling.heads import factory

    built = factory.build_retinanet_head(RetinaNet(num_classes=80))
    ignored = {"name"}  # Keras numbers the second head's default name
    assert {k: v for k, v in built.get_config().items() if k not in ignored} == {
        k: v for k, v in head.get_config().items() if k not in ignored
    }
