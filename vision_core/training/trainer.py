"""The training loop: steps in tf.function loops, periodic evaluation, checkpoints, resume.

`run_experiment` is what `python -m vision_core.train` and the pipeline's train step call. It
writes, under `model_dir`: `params.yaml` (the full config), checkpoints (`ckpt-N`, resumed from
automatically), TensorBoard summaries (`train/`, `validation/`), `metrics_history.jsonl` (one
line per evaluation), and `best_ckpt/` when `trainer.best_checkpoint_eval_metric` is set.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.configs.experiment import ExperimentConfig
from vision_core.hyperparams import save_yaml
from vision_core.tasks.base_task import Task
from vision_core.tasks.factory import get_task
from vision_core.training.optimization import build_optimizer

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, dict[str, float]], None]


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN/inf or exceeded `trainer.loss_upper_bound`."""


def get_strategy(runtime) -> tf.distribute.Strategy:
    kind = runtime.distribution_strategy
    if kind in ("default", "off"):
        return tf.distribute.get_strategy()
    if kind == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if runtime.num_gpus else "/cpu:0")
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=runtime.tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"runtime.distribution_strategy: unsupported {kind!r}")


class Trainer:
    """Owns the model, optimizer, checkpoint manager and the compiled step loops."""

    def __init__(
        self,
        params: ExperimentConfig,
        model_dir: str,
        task: Task | None = None,
        progress: ProgressFn | None = None,
    ):
        self.params = params
        self.model_dir = model_dir
        self.progress = progress
        runtime = params.runtime
        if runtime.mixed_precision_dtype in ("float16", "bfloat16"):
            tf_keras.mixed_precision.set_global_policy(f"mixed_{runtime.mixed_precision_dtype}")
        if runtime.seed is not None:
            # A seeded run is a reproducible run: same config, same data, same weights.
            tf_keras.utils.set_random_seed(runtime.seed)
            tf.config.experimental.enable_op_determinism()
        self.strategy = get_strategy(runtime)
        self.task = task or get_task(params.task, logging_dir=model_dir)
        with self.strategy.scope():
            self.model = self.task.build_model()
            optimizer = build_optimizer(params.trainer.optimizer_config)
            if runtime.mixed_precision_dtype == "float16":
                optimizer = tf_keras.mixed_precision.LossScaleOptimizer(optimizer)
            self.optimizer = optimizer
            self.train_metrics = self.task.build_metrics(training=True)
            self.eval_metrics = self.task.build_metrics(training=False)
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            directory=model_dir,
            max_to_keep=params.trainer.max_to_keep,
            step_counter=self.optimizer.iterations,
            checkpoint_interval=params.trainer.checkpoint_interval,
        )
        self._train_loop_fn = None
        self._eval_step_fn = None
        self._train_iter = None

    # ------------------------------------------------------------------------------ state
    @property
    def global_step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def restore_or_initialize(self) -> int:
        """Resumes from the latest checkpoint in model_dir, else applies task.init_checkpoint."""
        latest = self.manager.latest_checkpoint
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            logger.info("Resumed from %s at step %d", latest, self.global_step)
        else:
            self.task.initialize(self.model)
        return self.global_step

    # ------------------------------------------------------------------------------ loops
    def _make_train_loop(self):
        task, model, optimizer, metrics = self.task, self.model, self.optimizer, self.train_metrics
        strategy = self.strategy
        use_tf_function = self.params.trainer.train_tf_function

        def step_fn(inputs):
            return task.train_step(inputs, model, optimizer, metrics=metrics)["loss"]

        def loop(iterator, num_steps):
            loss = tf.constant(0.0)
            for _ in tf.range(num_steps):
                per_replica = strategy.run(step_fn, args=(next(iterator),))
                loss = strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)
            return loss

        return tf.function(loop) if use_tf_function else loop

    def _make_eval_step(self):
        task, model, metrics, strategy = self.task, self.model, self.eval_metrics, self.strategy
        # Tasks whose metric runs on the host (COCO AP) get each batch's outputs back, with the
        # replicas' values concatenated, for their `aggregate_logs` (Model Garden's protocol).
        host_metrics = hasattr(task, "aggregate_logs")

        def gather(value):
            parts = strategy.experimental_local_results(value)
            if len(parts) == 1:
                return parts[0]
            return tf.concat(parts, axis=0) if parts[0].shape.rank else tf.stack(parts)

        def step(inputs):
            logs = strategy.run(
                lambda x: task.validation_step(x, model, metrics=metrics), args=(inputs,)
            )
            loss = strategy.reduce(tf.distribute.ReduceOp.MEAN, logs["loss"], axis=None)
            if not host_metrics:
                return {"loss": loss}
            extras = {k: v for k, v in logs.items() if k != "loss"}
            return {"loss": loss, **tf.nest.map_structure(gather, extras)}

        return tf.function(step) if self.params.trainer.eval_tf_function else step

    def train(self, num_steps: int) -> dict[str, float]:
        """Runs `num_steps` steps in loops of `steps_per_loop`; returns the last logs."""
        if self._train_iter is None:
            dataset = self.strategy.distribute_datasets_from_function(
                lambda ctx: self.task.build_inputs(self.params.task.train_data, ctx)
            )
            self._train_iter = iter(dataset)
            self._train_loop_fn = self._make_train_loop()
        for metric in self.train_metrics:
            metric.reset_state()
        loss = self._train_loop_fn(self._train_iter, tf.constant(num_steps, tf.int32))
        loss = float(loss)
        bound = self.params.trainer.loss_upper_bound
        if not math.isfinite(loss) or loss > bound:
            raise TrainingDivergedError(
                f"training loss is {loss} at step {self.global_step} (bound {bound}); "
                "lower trainer.optimizer_config.learning_rate or check the data"
            )
        logs = {"loss": loss, "learning_rate": self._current_lr()}
        logs.update(self.task.summarize_metrics(self.train_metrics))
        return logs

    def evaluate(self, num_steps: int = -1) -> dict[str, float]:
        """One pass over the validation data (or `num_steps` batches of it)."""
        dataset = self.strategy.distribute_datasets_from_function(
            lambda ctx: self.task.build_inputs(self.params.task.validation_data, ctx)
        )
        if self._eval_step_fn is None:
            self._eval_step_fn = self._make_eval_step()
        for metric in self.eval_metrics:
            metric.reset_state()
        host_metrics = hasattr(self.task, "aggregate_logs")
        state = None
        losses = []
        for i, batch in enumerate(dataset):
            if 0 <= num_steps <= i:
                break
            step_logs = self._eval_step_fn(batch)
            losses.append(float(step_logs["loss"]))
            if host_metrics:
                outputs = {k: v for k, v in step_logs.items() if k != "loss"}
                state = self.task.aggregate_logs(
                    state, tf.nest.map_structure(lambda t: t.numpy(), outputs)
                )
        if not losses:
            raise ValueError(
                "task.validation_data: the validation input produced no batch "
                f"(input_path={self.params.task.validation_data.input_path!r})"
            )
        logs = {"validation_loss": sum(losses) / len(losses)}
        logs.update(self.task.summarize_metrics(self.eval_metrics))
        if host_metrics:
            logs.update(self.task.reduce_aggregated_logs(state))
        return logs

    def _current_lr(self) -> float:
        lr = self.optimizer.learning_rate
        if isinstance(self.optimizer, tf_keras.mixed_precision.LossScaleOptimizer):
            lr = self.optimizer.inner_optimizer.learning_rate
        if callable(lr):
            lr = lr(self.optimizer.iterations)
        return float(tf.convert_to_tensor(lr))


def run_experiment(
    params: ExperimentConfig,
    model_dir: str,
    mode: str = "train_and_eval",
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Trains and/or evaluates as Model Garden's `train_lib.run_experiment` does.

    Modes: `train`, `eval`, `train_and_eval`. Training resumes from the latest checkpoint in
    `model_dir`; a finished run called again does no further steps. Returns the final logs.
    """
    if mode not in ("train", "eval", "train_and_eval"):
        raise ValueError(f"--mode: expected train, eval or train_and_eval, got {mode!r}")
    tf.io.gfile.makedirs(model_dir)
    save_yaml(params, os.path.join(model_dir, "params.yaml"))
    trainer = Trainer(params, model_dir, progress=progress)
    start = trainer.restore_or_initialize()
    cfg = params.trainer
    total = cfg.train_steps
    result: dict[str, Any] = {"start_step": start}
    if mode == "eval":
        result.update(trainer.evaluate(cfg.validation_steps))
        return result

    train_writer = tf.summary.create_file_writer(os.path.join(model_dir, "train"))
    eval_writer = tf.summary.create_file_writer(os.path.join(model_dir, "validation"))
    history_path = os.path.join(model_dir, "metrics_history.jsonl")
    best_metric = cfg.best_checkpoint_eval_metric
    best = _read_best(model_dir)
    logs: dict[str, float] = {}
    eval_logs: dict[str, float] = {}
    tic = time.time()
    step = start
    while step < total:
        next_stop = min(
            total,
            _next_multiple(step, cfg.steps_per_loop),
            _next_multiple(step, cfg.validation_interval) if mode == "train_and_eval" else total,
        )
        logs = trainer.train(next_stop - step)
        step = trainer.global_step
        elapsed = time.time() - tic
        logs["steps_per_second"] = (step - start) / max(elapsed, 1e-9)
        with train_writer.as_default(step=step):
            for k, v in logs.items():
                tf.summary.scalar(k, v)
        logger.info("step %d/%d %s", step, total, _fmt(logs))
        trainer.manager.save(checkpoint_number=step, check_interval=True)
        if mode == "train_and_eval" and (step % cfg.validation_interval == 0 or step == total):
            eval_logs = trainer.evaluate(cfg.validation_steps)
            with eval_writer.as_default(step=step):
                for k, v in eval_logs.items():
                    tf.summary.scalar(k, v)
            _append_jsonl(history_path, {"step": step, **logs, **eval_logs})
            logger.info("eval at step %d %s", step, _fmt(eval_logs))
            if best_metric:
                best = _maybe_export_best(trainer, model_dir, cfg, eval_logs, best, step)
        if progress is not None:
            progress(step, total, {**logs, **eval_logs})
    trainer.manager.save(checkpoint_number=step, check_interval=False)
    if mode == "train_and_eval" and not eval_logs and total > 0:
        eval_logs = trainer.evaluate(cfg.validation_steps)
    result.update({"step": step, **logs, **eval_logs})
    result["train_seconds"] = time.time() - tic
    return result


def _maybe_export_best(trainer, model_dir, cfg, eval_logs, best, step):
    name = cfg.best_checkpoint_eval_metric
    if name not in eval_logs:
        raise KeyError(
            f"trainer.best_checkpoint_eval_metric: {name!r} is not an evaluation metric; "
            f"available: {sorted(eval_logs)}"
        )
    value = eval_logs[name]
    better = best is None or (
        value > best["value"]
        if cfg.best_checkpoint_metric_comp == "higher"
        else value < best["value"]
    )
    if not better:
        return best
    best_dir = os.path.join(model_dir, cfg.best_checkpoint_export_subdir or "best_ckpt")
    tf.io.gfile.makedirs(best_dir)
    prefix = tf.train.Checkpoint(model=trainer.model).write(os.path.join(best_dir, "best_ckpt"))
    info = {"metric": name, "value": value, "step": step, "checkpoint": prefix, **eval_logs}
    _write_json_atomic(os.path.join(best_dir, "info.json"), info)
    return info


def _read_best(model_dir):
    for sub in ("best_ckpt",):
        path = os.path.join(model_dir, sub, "info.json")
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                return json.load(f)
    return None


def _write_json_atomic(path: str, data: dict) -> None:
    tmp = f"{path}.tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def _append_jsonl(path: str, record: dict) -> None:
    with tf.io.gfile.GFile(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def _next_multiple(step: int, interval: int) -> int:
    interval = max(int(interval), 1)
    return (step // interval + 1) * interval


def _fmt(logs: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in sorted(logs.items()) if "/" not in k)
