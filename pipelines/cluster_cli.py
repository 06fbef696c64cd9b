"""`vision-pipelines submit` and `schedule`: the commands that send a pipeline to a cluster.

Kubeflow Pipelines (`--kfp-host`) or Vertex AI Pipelines (`--vertex`); the image every step runs
in is checked (`--image`, the config's `image` or the pushed image's record) before any server is
contacted (pipelines.image_ref).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pipelines.cli import UserError, parse_overrides


def add_cluster_parsers(sub: Any) -> None:
    """The `submit` and `schedule` subcommands."""
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
    add_image_argument(sbm)

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
    add_image_argument(sch)


def add_image_argument(parser: argparse.ArgumentParser) -> None:
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


def _vertex_target(args: argparse.Namespace):
    from pipelines.vertex import VertexTarget

    return VertexTarget(args.project, args.region, args.api_endpoint)


def _print_warnings(result: dict[str, Any]) -> None:
    for warning in result.get("warnings") or []:
        print(f"warning: {warning}", file=sys.stderr)


def run_submit(args: argparse.Namespace) -> int:
    from pipelines.config import load_pipeline_config

    _check_backend_options(args)
    config = load_pipeline_config(args.config, parse_overrides(args.set))
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


def run_schedule(args: argparse.Namespace) -> int:
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
    config = load_pipeline_config(args.target, parse_overrides(args.set))
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
