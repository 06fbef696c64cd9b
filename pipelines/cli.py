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
    _add_image_argument(comp)

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

    sbm = sub.add_parser(
        "submit",
        help="compile a pipeline config and start a run on Kubeflow or Vertex AI Pipelines",
    )
    sbm.add_argument("config", help="pipeline config YAML")
    _add_target_arguments(sbm)
    sbm.add_argument("--experiment", default=None, help="default: the pipeline name (KFP)")
    sbm.add_argument("--run-name", default=None)
    sbm.add_argument("--pipeline-root", default=None, help="gs://, s3:// or minio:// root")
    sbm.add_argument("--service-account", default=None)
    sbm.add_argument("--no-cache", action="store_true", help="disable step caching")
    sbm.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    _add_image_argument(sbm)

    sch = sub.add_parser(
        "schedule",
        help="recurring runs on Kubeflow or Vertex AI: schedule CONFIG --cron '0 3 * * 1', "
        "or schedule list|pause|resume|delete [ID]",
    )
    sch.add_argument("target", help="a pipeline config YAML, or list / pause / resume / delete")
    sch.add_argument("id", nargs="?", default=None, help="schedule id (pause/resume/delete)")
    _add_target_arguments(sch)
    sch.add_argument("--cron", default=None, help="5-field cron, e.g. '0 3 * * 1' (Mon 03:00)")
    sch.add_argument("--name", default=None, help="recurring run name")
    sch.add_argument("--experiment", default=None, help="KFP experiment")
    sch.add_argument("--pipeline-root", default=None)
    sch.add_argument("--service-account", default=None, help="Vertex: the runs' service account")
    sch.add_argument("--max-concurrency", type=int, default=1)
    sch.add_argument(
        "--catchup",
        action="store_true",
        help="run missed intervals after a pause (KFP: when creating; Vertex: with resume)",
    )
    sch.add_argument("--no-cache", action="store_true", help="disable step caching")
    sch.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    _add_image_argument(sch)

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


def _add_image_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image",
        default=None,
        metavar="REGISTRY/PATH:TAG",
        help="the image every step runs in, as the cluster pulls it (default: the config's "
        "image, else the one `make image-push` recorded); a tag that `make image-push` pushed "
        "is compiled as its digest",
    )


def _add_target_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--kfp-host",
        help="KFP API endpoint, e.g. http://localhost:8080 (a port-forwarded ml-pipeline-ui)",
    )
    where.add_argument(
        "--vertex",
        action="store_true",
        help="Vertex AI Pipelines (needs the vertex extra and Application Default Credentials)",
    )
    parser.add_argument("--namespace", default=None, help="KFP: the Kubeflow profile namespace")
    vertex = parser.add_argument_group("Vertex AI (with --vertex)")
    vertex.add_argument("--project", default=None, help="Google Cloud project id")
    vertex.add_argument("--region", default=None, help="Vertex AI region, e.g. us-central1")
    vertex.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="run label (repeat)"
    )
    vertex.add_argument(
        "--network", default=None, help="VPC to peer with: projects/NUMBER/global/networks/NAME"
    )
    vertex.add_argument(
        "--api-endpoint",
        default=None,
        help="override {region}-aiplatform.googleapis.com (e.g. a Private Service Connect one)",
    )


def _check_backend_options(args: argparse.Namespace) -> None:
    """Refuses options the chosen backend would silently ignore."""

    def given(name: str) -> bool:
        return bool(getattr(args, name, None))

    scheduling = args.command == "schedule"
    if args.vertex:
        if not args.project or not args.region:
            raise UserError("--vertex: give --project PROJECT_ID and --region REGION")
        if scheduling and args.catchup and args.target != "resume":
            raise UserError(
                "--catchup: Vertex AI schedules catch up when resumed: "
                "schedule resume ID --vertex --project P --region R --catchup"
            )
        wrong = ["namespace"] + (["experiment"] if scheduling else [])
    else:
        wrong = ["project", "region", "label", "network", "api_endpoint"]
        if scheduling:
            wrong += ["service_account"]
    wrong = [name for name in wrong if given(name)]
    if wrong:
        flags = ", ".join("--" + name.replace("_", "-") for name in wrong)
        backend = "Kubeflow (--kfp-host)" if args.vertex else "Vertex AI (--vertex)"
        raise UserError(f"{flags}: only for {backend}")


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


def _overrides(pairs: list[str]) -> dict[str, Any]:
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
    if args.command == "submit":
        return _cmd_submit(args)
    if args.command == "schedule":
        return _cmd_schedule(args)
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

    config = load_pipeline_config(args.config, _overrides(args.set))
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
    config = load_pipeline_config(config_path, _overrides(args.set))
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


def _vertex_target(args: argparse.Namespace):
    from pipelines.vertex import VertexTarget

    return VertexTarget(args.project, args.region, args.api_endpoint)


def _print_warnings(result: dict[str, Any]) -> None:
    for warning in result.get("warnings") or []:
        print(f"warning: {warning}", file=sys.stderr)


def _cmd_submit(args: argparse.Namespace) -> int:
    from pipelines.config import load_pipeline_config

    _check_backend_options(args)
    config = load_pipeline_config(args.config, _overrides(args.set))
    if args.vertex:
        from pipelines.vertex import parse_labels, submit_vertex

        result = submit_vertex(
            config,
            _vertex_target(args),
            pipeline_root=args.pipeline_root,
            run_name=args.run_name,
            experiment=args.experiment,
            labels=parse_labels(args.label),
            service_account=args.service_account,
            network=args.network,
            enable_caching=False if args.no_cache else None,
            image=args.image,
            config_path=args.config,
        )
        _print_warnings(result)
        experiment = f", experiment {result['experiment']!r}" if result["experiment"] else ""
        print(
            f"Submitted Vertex AI pipeline job {result['job_id']} ({result['run_name']!r}) in "
            f"{result['project']}/{result['region']}{experiment}; pipeline root "
            f"{result['pipeline_root']}\n  image: {result['image']}\n  {result['console_url']}"
        )
        return 0
    from pipelines.submit import submit_kfp

    result = submit_kfp(
        config,
        args.kfp_host,
        experiment=args.experiment,
        run_name=args.run_name,
        pipeline_root=args.pipeline_root,
        enable_caching=False if args.no_cache else None,
        namespace=args.namespace,
        service_account=args.service_account,
        image=args.image,
        config_path=args.config,
    )
    _print_warnings(result)
    print(
        f"Submitted run {result['run_id']} ({result['run_name']!r}) to {result['host']}, "
        f"experiment {result['experiment']!r}; {result['note']}\n  image: {result['image']}"
    )
    return 0


SCHEDULE_ACTIONS = ("list", "pause", "resume", "delete")


def _cmd_schedule(args: argparse.Namespace) -> int:
    _check_backend_options(args)
    if args.target in SCHEDULE_ACTIONS:
        if args.image:
            raise UserError(
                f"--image: schedule {args.target} changes no pipeline; the image is chosen when "
                "creating a schedule (schedule CONFIG --cron ... --image ...)"
            )
        return _schedule_action(args)
    from pipelines.config import load_pipeline_config

    if not args.cron:
        raise UserError("schedule CONFIG: --cron is required, e.g. --cron '0 3 * * 1'")
    config = load_pipeline_config(args.target, _overrides(args.set))
    if args.no_cache:
        config.enable_caching = False
    if args.vertex:
        from pipelines.vertex import parse_labels, schedule_vertex

        result = schedule_vertex(
            config,
            _vertex_target(args),
            args.cron,
            name=args.name,
            pipeline_root=args.pipeline_root,
            max_concurrency=args.max_concurrency,
            labels=parse_labels(args.label),
            service_account=args.service_account,
            network=args.network,
            image=args.image,
            config_path=args.target,
        )
        _print_warnings(result)
        print(
            f"Scheduled {result['name']!r} ({result['schedule_id']}) with cron "
            f"'{result['cron']}' in {result['project']}/{result['region']}; pipeline root "
            f"{result['pipeline_root']}\n  image: {result['image']}\n  {result['console_url']}"
        )
        return 0
    from pipelines import submit

    result = submit.schedule_kfp(
        config,
        args.kfp_host,
        args.cron,
        name=args.name,
        experiment=args.experiment,
        pipeline_root=args.pipeline_root,
        max_concurrency=args.max_concurrency,
        catchup=args.catchup,
        namespace=args.namespace,
        image=args.image,
        config_path=args.target,
    )
    _print_warnings(result)
    print(
        f"Scheduled {result['name']!r} ({result['recurring_run_id']}) with cron "
        f"'{result['cron']}' in experiment {result['experiment']!r}; {result['note']}\n"
        f"  image: {result['image']}"
    )
    return 0


def _schedule_action(args: argparse.Namespace) -> int:
    from pipelines import submit, vertex

    what = "schedule" if args.vertex else "recurring run"
    if args.target == "list":
        if args.vertex:
            rows = vertex.list_schedules_vertex(_vertex_target(args))
        else:
            rows = submit.list_schedules(args.kfp_host, args.namespace)
        for row in rows:
            print(f"{row['id']}  {row['status'] or '':<9} {row['cron'] or '':<16} {row['name']}")
        if not rows:
            print(f"no {what}s")
        return 0
    if not args.id:
        raise UserError(f"schedule {args.target}: give the {what} id (see schedule list)")
    if args.vertex:
        target = _vertex_target(args)
        if args.target == "delete":
            vertex.delete_schedule_vertex(target, args.id)
        else:
            enabled = args.target == "resume"
            vertex.set_schedule_enabled_vertex(target, args.id, enabled, catchup=args.catchup)
    elif args.target == "delete":
        submit.delete_schedule(args.kfp_host, args.id)
    else:
        submit.set_schedule_enabled(args.kfp_host, args.id, enabled=args.target == "resume")
    print(f"{args.target}: {what} {args.id}")
    return 0


def _cmd_import_weights(args: argparse.Namespace) -> int:
    from vision_core.interop.weight_import import run_import

    report = run_import(
        args.bundle,
        args.output,
        experiment=args.experiment,
        config_files=args.config_file,
        overrides=_overrides(args.set) or None,
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
