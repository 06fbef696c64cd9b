"""Times one backbone in one library; run by `backbone_speed.py`, prints one JSON line.

It runs under either environment: `--impl vision_core` (this project's venv) or
`--impl modelgarden` (the reference venv from ../shared/tools/modelgarden-venv.sh, which has
`official.vision` but not vision_core). Both sides build the backbone through their own
factory from the same config dict, so the two figures describe the same network.

    python benchmarks/backbone_speed_worker.py --impl vision_core --model resnet50
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# name → (backbone config in Model Garden's nested form, input size used for both runs).
# SpineNet needs a side divisible by 2^max_level (128), so it runs at 256 instead of 224.
MODELS: dict[str, tuple[dict, int]] = {
    "resnet50": ({"type": "resnet", "resnet": {"model_id": 50}}, 224),
    "efficientnet_b0": ({"type": "efficientnet", "efficientnet": {"model_id": "b0"}}, 224),
    "mobilenet_v2": ({"type": "mobilenet", "mobilenet": {"model_id": "MobileNetV2"}}, 224),
    "vit_b16": (
        {
            "type": "vit",
            "vit": {
                "model_name": "vit-b16",
                "hidden_size": 768,
                "patch_size": 16,
                "transformer": {"mlp_dim": 3072, "num_heads": 12, "num_layers": 12},
            },
        },
        224,
    ),
    "spinenet49": ({"type": "spinenet", "spinenet": {"model_id": "49"}}, 256),
}


def _build(impl: str, config: dict, size: int):
    import tf_keras

    spec = tf_keras.layers.InputSpec(shape=[None, size, size, 3])
    if impl == "modelgarden":
        from official.vision.configs import backbones as cfg
        from official.vision.configs import common
        from official.vision.modeling.backbones import factory

        backbone_config = cfg.Backbone(type=config["type"])
        backbone_config.override(config, is_strict=True)
        norm = common.NormActivation()
    else:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from vision_core.configs.backbones import Backbone
        from vision_core.configs.common import NormActivation
        from vision_core.modeling.backbones import factory

        backbone_config = Backbone.from_dict(config)
        norm = NormActivation()
    return factory.build_backbone(
        input_specs=spec, backbone_config=backbone_config, norm_activation_config=norm
    )


def _time(fn, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=["vision_core", "modelgarden"], required=True)
    parser.add_argument("--model", choices=sorted(MODELS), required=True)
    parser.add_argument("--forward-repeats", type=int, default=20)
    parser.add_argument("--train-repeats", type=int, default=5)
    parser.add_argument("--train-batch", type=int, default=8)
    args = parser.parse_args(argv)

    import tensorflow as tf
    import tf_keras

    config, size = MODELS[args.model]
    tf_keras.utils.set_random_seed(0)
    model = _build(args.impl, config, size)

    image = tf.random.stateless_uniform([1, size, size, 3], seed=[1, 2])

    @tf.function
    def forward(x):
        return model(x, training=False)

    def run_forward():
        tf.nest.map_structure(lambda t: t.numpy(), forward(image))

    forward_times = _time(run_forward, warmup=3, repeats=args.forward_repeats)

    batch = tf.random.stateless_uniform([args.train_batch, size, size, 3], seed=[3, 4])
    optimizer = tf_keras.optimizers.SGD(0.01, momentum=0.9)

    @tf.function
    def train_step(x):
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            # A scalar that touches every output level, standing in for a task loss.
            loss = tf.add_n([tf.reduce_mean(tf.square(t)) for t in tf.nest.flatten(outputs)])
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, model.trainable_variables) if g is not None]
        )
        return loss

    train_times = _time(lambda: train_step(batch).numpy(), warmup=2, repeats=args.train_repeats)
    print(
        json.dumps(
            {
                "impl": args.impl,
                "model": args.model,
                "input_size": size,
                "params": int(model.count_params()),
                "tensorflow": tf.__version__,
                "forward_batch1_s": statistics.median(forward_times),
                "train_step_s": statistics.median(train_times),
                "train_batch": args.train_batch,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
