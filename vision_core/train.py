"""`python -m vision_core.train`: Model Garden's training entry point, same flags.

    python -m vision_core.train --experiment shapes_segmentation --mode train_and_eval \
        --model_dir /tmp/run --config_file my.yaml --params_override task.train_data.input_path=...
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from vision_core.hyperparams import ConfigError, parse_override_string


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vision_core.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--experiment", default=None, help="registered experiment name (see --list_experiments)"
    )
    parser.add_argument(
        "--mode", default="train_and_eval", choices=["train", "eval", "train_and_eval"]
    )
    parser.add_argument("--model_dir", required=False, help="checkpoints, summaries, params.yaml")
    parser.add_argument(
        "--config_file",
        action="append",
        default=[],
        help="YAML config; may be given several times, later files win",
    )
    parser.add_argument(
        "--params_override",
        action="append",
        default=[],
        help="a=b,c.d=e pairs, a YAML mapping or a YAML file; applied last",
    )
    parser.add_argument("--list_experiments", action="store_true")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from vision_core.configs import list_experiments, load_experiment

    if args.list_experiments:
        print("\n".join(list_experiments()))
        return 0
    if not args.model_dir:
        print("error: --model_dir is required", file=sys.stderr)
        return 2
    try:
        overrides: dict = {}
        for text in args.params_override:
            _deep_merge(overrides, parse_override_string(text))
        params = load_experiment(args.experiment, args.config_file, overrides)
        from vision_core.training.trainer import run_experiment

        result = run_experiment(params, args.model_dir, mode=args.mode)
    except (ConfigError, ValueError, FileNotFoundError, KeyError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def _deep_merge(into: dict, new: dict) -> dict:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value
    return into


if __name__ == "__main__":
    sys.exit(main())
