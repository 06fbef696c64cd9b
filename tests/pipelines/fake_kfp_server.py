"""A loopback HTTP server speaking the KFP v2beta1 REST calls vision-pipelines makes, recording
every request, so submission and scheduling are tested up to the wire without a cluster."""

from __future__ import annotations

import re
from typing import Any

# A sibling module: whoever imports this one has put this folder on sys.path.
from loopback_server import LoopbackJsonServer


class FakeKfp(LoopbackJsonServer):
    """State of the fake cluster: experiments, runs and recurring runs, plus the request log."""

    def __init__(self) -> None:
        super().__init__()
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.recurring: dict[str, dict] = {}

    # --- the API -------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: str, body: Any) -> tuple[int, dict]:
        base = "/apis/v2beta1"
        if method == "GET" and path == f"{base}/healthz":
            return 200, {"multi_user": False}
        if path == f"{base}/experiments" and method == "GET":
            wanted = re.search(r"display_name.{0,40}?string_value%22%3A%22([^%]+)%22", query)
            items = list(self.experiments.values())
            if wanted:
                items = [e for e in items if e["display_name"] == wanted.group(1)]
            return 200, {"experiments": items, "total_size": len(items)}
        if path == f"{base}/experiments" and method == "POST":
            exp = {"experiment_id": f"exp-{len(self.experiments) + 1}", **body}
            self.experiments[exp["experiment_id"]] = exp
            return 200, exp
        if path == f"{base}/runs" and method == "POST":
            run = {"run_id": f"run-{len(self.runs) + 1}", "state": "PENDING", **body}
            self.runs[run["run_id"]] = run
            return 200, run
        if path == f"{base}/recurringruns" and method == "POST":
            rid = f"rr-{len(self.recurring) + 1}"
            run = {"recurring_run_id": rid, "status": "ENABLED", **body}
            self.recurring[rid] = run
            return 200, run
        if path == f"{base}/recurringruns" and method == "GET":
            items = list(self.recurring.values())
            return 200, {"recurringRuns": items, "total_size": len(items)}
        match = re.fullmatch(rf"{base}/recurringruns/([^/:]+)(:enable|:disable)?", path)
        if match:
            rid, action = match.groups()
            if rid not in self.recurring:
                return 404, {"error": f"recurring run {rid} not found", "code": 5}
            if method == "DELETE":
                del self.recurring[rid]
                return 200, {}
            if method == "POST" and action:
                self.recurring[rid]["status"] = "ENABLED" if action == ":enable" else "DISABLED"
                return 200, {}
            if method == "GET":
                return 200, self.recurring[rid]
        match = re.fullmatch(rf"{base}/runs/([^/:]+)", path)
        if match and method == "GET" and match.group(1) in self.runs:
            return 200, self.runs[match.group(1)]
        return 404, {"error": f"{method} {path} is not part of the fake API", "code": 5}
