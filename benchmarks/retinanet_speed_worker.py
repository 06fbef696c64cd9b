"""Times RetinaNet ResNet-50-FPN in one library; run by `retinanet_speed.py`, prints JSON.

It runs under either environment: `--impl vision_core` (this project's venv) or
`--impl modelgarden` (the reference venv, ../shared/tools/modelgarden-venv.sh). Both sides
build the model through their own `factory.build_retinanet` from the same config (80 classes,
levels 3-7, 9 anchors, Model Garden's default detection generator), and time:
  * the network alone (backbone + FPN + head, training=False, no post-processing), batch 1;
  * full inference (network + anchors + detection generator), batch 1;
  * one training step (batch 2, 256x256) of focal + Huber loss on random anchor targets.

    python benchmarks/retinanet_speed_worker.py --impl vision_core --sizes 256 512
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MODEL = {
    "num_classes": 80,
    "min_level": 3,
    "max_level": 7,
    "backbone": {"type": "resnet", "resnet": {"model_id": 50}},
    "decoder": {"type": "fpn", "fpn": {}},
}


def _build(impl: str, size: int):
    import tf_keras

    spec = tf_keras.layers.InputSpec(shape=[None, size, size, 3])
    config = dict(MODEL, input_size=[size, size, 3])
    if impl == "modelgarden":
        from official.vision.configs import retinanet as cfg
        from official.vision.modeling import factory

        model_config = cfg.RetinaNet()
        model_config.override(config, is_strict=True)
    else:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from vision_core.configs import retinanet as cfg
        from vision_core.modeling import factory

        model_config = cfg.RetinaNet.from_dict(config)
    return factory.build_retinanet(spec, model_config)


def _anchors(impl: str, size: int):
    if impl == "modelgarden":
        from official.vision.ops import anchor
    else:
        from vision_core.ops import anchor
    return anchor.build_anchor_generator(3, 7, 3, [0.5, 1.0, 2.0], 4.0)((size, size))


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
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--train-repeats", type=int, default=5)
    parser.add_argument("--train-size", type=int, default=256)
    parser.add_argument("--train-batch", type=int, default=2)
    args = parser.parse_args(argv)

    import tensorflow as tf
    import tf_keras

    result = {"impl": args.impl, "tensorflow": tf.__version__, "inference": {}}
    for size in args.sizes:
        tf_keras.utils.set_random_seed(0)
        model = _build(args.impl, size)
        anchors = {k: tf.convert_to_tensor(v)[None] for k, v in _anchors(args.impl, size).items()}
        image = tf.random.stateless_uniform([1, size, size, 3], seed=[1, 2])
        image_shape = tf.constant([[size, size]], tf.float32)

        @tf.function
        def network(x, model=model):
            # training=True returns the raw head outputs without post-processing; the batch
            # norm layers still run in inference mode through `trainable=False` below.
            return model(x, training=True)

        @tf.function
        def full(x, model=model, anchors=anchors, image_shape=image_shape):
            return model(x, image_shape=image_shape, anchor_boxes=anchors, training=False)

        model.trainable = False
        net = _time(
            lambda image=image: tf.nest.map_structure(lambda t: t.numpy(), network(image)),
            2,
            args.repeats,
        )
        out = _time(
            lambda image=image: tf.nest.map_structure(lambda t: t.numpy(), full(image)),
            2,
            args.repeats,
        )
        result["inference"][str(size)] = {
            "network_s": statistics.median(net),
            "full_s": statistics.median(out),
            "full_over_network": statistics.median(out) / statistics.median(net),
        }
        result["params"] = int(model.count_params())

    size, batch = args.train_size, args.train_batch
    tf_keras.utils.set_random_seed(0)
    model = _build(args.impl, size)
    images = tf.random.stateless_uniform([batch, size, size, 3], seed=[3, 4])
    optimizer = tf_keras.optimizers.SGD(0.01, momentum=0.9)
    focal_like = tf_keras.losses.BinaryCrossentropy(from_logits=True)
    huber = tf_keras.losses.Huber(0.1)

    @tf.function
    def train_step(x):
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            cls = [tf.reshape(t, [batch, -1]) for t in outputs["cls_outputs"].values()]
            box = [tf.reshape(t, [batch, -1]) for t in outputs["box_outputs"].values()]
            cls, box = tf.concat(cls, 1), tf.concat(box, 1)
            loss = focal_like(tf.zeros_like(cls), cls) + 50.0 * huber(tf.zeros_like(box), box)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    train = _time(lambda: train_step(images).numpy(), 2, args.train_repeats)
    result["train_step_s"] = statistics.median(train)
    result["train"] = {"size": size, "batch": batch}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
