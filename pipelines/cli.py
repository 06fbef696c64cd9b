"""`vision-pipelines`: run pipelines locally, compile them, and reach each step directly.

vision-pipelines run [PIPELINE_CONFIG] [--set dotted.key=value ...] [--runner docker]
vision-pipelines compile [PIPELINE_CONFIG] -o pipeline.yaml --image REGISTRY/PATH:TAG
vision-pipelines convert ...          (the Beam conversion step; --help for options)
vision-pipelines train ...            (python -m vision_core.train flags)
vision-pipelines evaluate --model SAVED_MODEL --dataset DIR --num-classes N [--task classification]
vision-pipelines submit CONFIG --image REGISTRY/PATH:TAG (--kfp-host URL | --vertex --project P
                               --region R --pipeline-root gs://...)
vision-pipelines schedule CONFIG --cron '0 3 * * 1' --image REGISTRY/PATH:TAG (--kfp-host URL |
                               --vertex ...)
vision-pipelines schedule list|pause|resume|delete [ID] (--kfp-host URL | --vertex ...)
vision-pipelines registry list|show|promote|rollback|diff REGISTRY_URI MODEL ...
vision-pipelines import-weights BUNDLE --output DIR [--check]
vision-pipelines experiments
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class UserError(Exception):
    """Bad input from the user: printed as `error: ...`, exit code 2, no traceback."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vision-pipelines",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a pipeline end to end with the KFP local runner")
    run.add_argument(
        "config", nargs="?", help="pipeline config YAML (default: shapes segmentation)"
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a pipeline config value, e.g. gate.min_value=0.9",
    )
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.add_argument("--no-cache", action="store_true", help="rerun every step (no step caching)")
    run.add_argument(
        "--runner",
        choices=["subprocess", "docker"],
        default="subprocess",
        help="subprocess: each step in this environment; docker: each step in the project "
        "image (make image), through Docker or podman",
    )
    run.add_argument(
        "--image", default=None, help="--runner docker: the local image (default: make image's)"
    )

    comp = sub.add_parser("compile", help="compile a pipeline config to KFP pipeline YAML")
    comp.add_argument("config", nargs="?")
    comp.add_argument("-o", "--output", required=True)
    comp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    comp.add_argument(
        "--no-cache", action="store_true", help="compile with step caching turned off"
    )
    from pipelines.cluster_cli import add_image_argument

    add_image_argument(comp)

    sub.add_parser("convert", help="convert a dataset to TFRecords (Beam)", add_help=False)
    sub.add_parser(
        "train", help="train an experiment (python -m vision_core.train)", add_help=False
    )

    ev = sub.add_parser("evaluate", help="evaluate an exported SavedModel on converted data")
    ev.add_argument("--model", required=True, help="SavedModel folder")
    ev.add_argument("--dataset", required=True, help="converted dataset folder")
    ev.add_argument("--num-classes", type=int, required=True)
    ev.add_argument(
        "--task", choices=["segmentation", "classification", "detection"], default="segmentation"
    )
    ev.add_argument("--class-names", default="", help="comma-separated")
    ev.add_argument("--ignore-label", type=int, default=255, help="segmentation only")
    ev.add_argument("--top-k", type=int, default=5, help="classification only")
    ev.add_argument("--split", default="validation")
    ev.add_argument("--output", default="evaluation")

    from pipelines.cluster_cli import add_cluster_parsers

    add_cluster_parsers(sub)

    pred = sub.add_parser(
        "predict", help="run an exported SavedModel on images; detections are drawn into PNGs"
    )
    pred.add_argument("model", help="SavedModel folder (e.g. a registry version's saved_model)")
    pred.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    pred.add_argument("--output", default="predictions", help="folder for the drawn PNGs")
    pred.add_argument("--min-score", type=float, default=0.3, help="lowest detection score drawn")
    pred.add_argument("--class-names", default="", help="comma-separated; default: the model's")

    from pipelines.registry_cli import add_registry_parser

    add_registry_parser(sub)

    imp = sub.add_parser(
        "import-weights",
        help="import Model Garden weights (a bundle from export_modelgarden_weights.py)",
        description=(
            "Builds the vision_core model matching a Model Garden weights bundle, copies the "
            "weights variable by variable, reports every unmatched one and writes a checkpoint. "
            "Make the bundle in a Model Garden environment with "
            "vision_core/interop/export_modelgarden_weights.py."
        ),
    )
    imp.add_argument("bundle", help="the .npz weights bundle")
    imp.add_argument("--output", required=True, help="new folder for the checkpoint + report")
    imp.add_argument("--experiment", help="vision_core experiment (whole-model bundles)")
    imp.add_argument("--config-file", action="append", default=[], help="experiment YAML")
    imp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    imp.add_argument(
        "--check", action="store_true", help="compare outputs on the bundle's recorded sample"
    )
    imp.add_argument(
        "--allow-unmatched",
        action="store_true",
        help="write the checkpoint even if some variables have no partner (they are reported)",
    )

    sub.add_parser("experiments", help="list registered experiment configs")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `convert` and `train` hand their arguments to the step's own parser.
    debug = "--debug" in argv[:1]
    rest = argv[1:] if debug else argv
    if rest and rest[0] in ("convert", "train"):
        return _delegate(rest[0], rest[1:])
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return _dispatch(args)
    except Exception as err:  # noqa: BLE001 - the CLI boundary turns errors into messages.
        if args.debug:
            raise
        from pipelines.submit import SubmitError
        from vision_core.hyperparams import ConfigError

        known = (
            UserError,
            SubmitError,
            ConfigError,
            FileNotFoundError,
            FileExistsError,
            ValueError,
            LookupError,
        )
        print(f"error: {err}", file=sys.stderr)
        if not isinstance(err, known):
            print("(run with --debug for the traceback)", file=sys.stderr)
        return 2 if isinstance(err, known) else 1


def _delegate(command: str, argv: list[str]) -> int:
    if command == "convert":
        from components.convert_dataset.__main__ import main as convert_main

        return int(convert_main(argv) or 0)
    from vision_core.train import main as train_main

    return int(train_main(argv) or 0)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    from vision_core.hyperparams import parse_dotted

    return parse_dotted(pairs) if pairs else {}


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return _cmd_run(args)
    if args.command == "compile":
        return _cmd_compile(args)
    if args.command == "evaluate":
        from components.evaluate import run_for_task

        names = [n for n in args.class_names.split(",") if n] or None
        options: dict[str, Any] = {"split": args.split}
        if args.task == "classification":
            options["top_k"] = args.top_k
        else:
            options["ignore_label"] = args.ignore_label
        metrics = run_for_task(
            args.task, args.model, args.dataset, args.output, args.num_classes, names, options
        )
        print(json.dumps(metrics, indent=2))
        return 0
    if args.command in ("submit", "schedule"):
        from pipelines import cluster_cli

        return (
            cluster_cli.run_submit(args)
            if args.command == "submit"
            else cluster_cli.run_schedule(args)
        )
    if args.command == "predict":
        from pipelines.predict import predict

        names = [n for n in args.class_names.split(",") if n] or None
        for record in predict(args.model, args.images, args.output, args.min_score, names):
            print(json.dumps(record))
        return 0
    if args.command == "registry":
        from pipelines.registry_cli import run_registry

        return run_registry(args)
    if args.command == "import-weights":
        return _cmd_import_weights(args)
    if args.command == "experiments":
        from vision_core.configs import list_experiments

        print("\n".join(list_experiments()))
        return 0
    raise UserError(f"unknown command {args.command}")


def _cmd_run(args: argparse.Namespace) -> int:
    from pipelines.config import load_pipeline_config
    from pipelines.docker_runner import DockerRunnerError
    from pipelines.local_run import run_local

    config = load_pipeline_config(args.config, parse_overrides(args.set))
    if args.no_cache:
        config.enable_caching = False
    if args.image and args.runner != "docker":
        raise UserError("--image applies to --runner docker (the subprocess runner uses no image)")
    kind = "DockerRunner, one container per step" if args.runner == "docker" else "SubprocessRunner"
    print(f"Running pipeline {config.name!r} locally (KFP {kind})")
    print(f"  pipeline root: {config.pipeline_root}")
    print(f"  registry:      {config.registry.uri} (model {config.registry.model_name!r})")
    tic = time.time()
    try:
        summary = run_local(config, runner=args.runner, image=args.image)
    except DockerRunnerError as err:
        raise UserError(str(err)) from None
    if summary.get("image"):
        print(f"  image:         {summary['image']['tag']} ({summary['image']['id'][:19]})")
    summary["wall_seconds"] = round(time.time() - tic, 1)
    if args.json:
        # One line, last, so scripts can take the final line of the output.
        print(json.dumps({k: v for k, v in summary.items() if k != "steps"}, default=str))
    else:
        print(format_summary(summary, config))
    return 0


def format_summary(summary: dict[str, Any], config) -> str:
    metrics = summary.get("metrics") or {}
    lines = ["", f"Pipeline {config.name!r} finished in {summary['wall_seconds']:.0f} s", ""]
    if summary.get("cached_steps"):
        lines[-1:] = [
            f"Reused from the step cache: {', '.join(summary['cached_steps'])} "
            "(--no-cache reruns them)",
            "",
        ]
    if metrics:
        lines.append(f"Validation ({metrics.get('num_examples', '?')} images):")
        if "top_1_accuracy" in metrics:
            for key, value in metrics.items():
                if key.startswith("top_") and key.endswith("_accuracy"):
                    label = f"{key[:-9].replace('_', '-')} accuracy"
                    lines.append(f"  {label:<16}{value:.4f}")
            per_class = ("accuracy/", "accuracy")
        elif "AP50" in metrics:
            for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "ARmax100"):
                lines.append(f"  {key:<16}{metrics.get(key, float('nan')):.4f}")
            per_class = ("AP/", "AP")
        else:
            lines.append(f"  mean IoU        {metrics.get('mean_iou', float('nan')):.4f}")
            lines.append(f"  pixel accuracy  {metrics.get('pixel_accuracy', float('nan')):.4f}")
            per_class = ("iou/", "IoU")
        prefix, label = per_class
        for key, value in metrics.items():
            if key.startswith(prefix):
                shown = "absent" if value is None else f"{value:.4f}"
                name = key[len(prefix) :]
                lines.append(f"  {label} {name:<{max(12, len(name) + 1)}}{shown}")
    gate = summary.get("gate") or {}
    verdict = "passed" if gate.get("passed") else "held back"
    lines += ["", f"Gate: {verdict} — {gate.get('reason')}"]
    reg = summary.get("registry") or {}
    if reg.get("version") is not None:
        lines.append(
            f"Registry: {reg['uri']} model {reg['model_name']!r} version {reg['version']} "
            f"(alias {config.registry.alias!r})"
        )
    else:
        lines.append("Registry: nothing pushed")
    lines += [
        "",
        "Artifacts:",
        f"  run folder  {summary.get('run_dir')}",
        f"  report      {summary.get('report')}",
    ]
    if (summary.get("metrics") or {}).get("AP50") is not None:
        lines.append(f"  figures     {summary.get('figures')}")
    train = summary.get("train") or {}
    if train.get("export_dir"):
        lines.append(f"  SavedModel  {train['export_dir']}")
    return "\n".join(lines)


def _cmd_compile(args: argparse.Namespace) -> int:
    from pipelines.config import DEFAULT_PIPELINE_CONFIG, load_pipeline_config
    from pipelines.submit import compile_package, use_cluster_image

    config_path = args.config or DEFAULT_PIPELINE_CONFIG
    config = load_pipeline_config(config_path, parse_overrides(args.set))
    if args.no_cache:
        config.enable_caching = False
    # A compiled pipeline is for a cluster: refuse an image it cannot pull before compiling.
    image = use_cluster_image(config, args.image, config_path)
    output = os.path.abspath(args.output)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    tmp = f"{output}.tmp.yaml"
    compile_package(config, tmp)
    os.replace(tmp, output)
    print(f"Compiled {config.name!r} to {output}\n  image: {image}")
    return 0


def _cmd_import_weights(args: argparse.Namespace) -> int:
    from vision_core.interop.weight_import import run_import

    report = run_import(
        args.bundle,
        args.output,
        experiment=args.experiment,
        config_files=args.config_file,
        overrides=parse_overrides(args.set) or None,
        check=args.check,
        allow_unmatched=args.allow_unmatched,
    )
    print(
        f"matched {len(report.matched)} variables ({len(report.renamed)} renamed); "
        f"unmatched: {len(report.unmatched_source)} in the bundle, "
        f"{len(report.unmatched_target)} in the model"
    )
    for key, diff in sorted(report.max_abs_diff.items()):
        print(f"  output {key}: max abs diff {diff:.3e}")
    print(f"checkpoint and report.md written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
