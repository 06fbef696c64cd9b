"""A loopback HTTP server speaking the Vertex AI REST (v1) calls vision-pipelines makes through
`google-cloud-aiplatform`, recording every request, so Vertex submission, scheduling and the
vertex:// model registry are tested up to the wire without a Google Cloud project.

Point the SDK at it with `aiplatform.init(api_endpoint=fake.endpoint, api_transport="rest",
credentials=AnonymousCredentials())`: the REST transport keeps an explicit `http://` scheme.

Covered (all under /v1/projects/{project}/locations/{location}/):
  * pipelineJobs: create, get (the run's metadata context appears once the job exists, as on
    Vertex, which experiment association waits for);
  * schedules: create, get, list, :pause, :resume, delete (a finished long-running operation);
  * metadataStores/default and its contexts: get, create, :addContextChildren (Vertex
    Experiments);
  * the Model Registry: models:upload (a finished long-running operation; `parentModel` adds a
    version, `modelId` names a new model and conflicts with an existing one), get of a model
    (its default version) or of `model@version-id|alias`, :listVersions, :mergeVersionAliases.
    Version aliases behave as on Vertex: checked against the documented pattern, unique within
    a model (adding one moves it from the version that held it), and the first version gets
    `default`, which can be moved but never removed.
Anything else is a 404 naming the call, so a new SDK request shows up as a failing test.
`fail_next(method, suffix, ...)` makes the next matching call fail, to test error handling.
"""

from __future__ import annotations

import copy
import datetime
import re
import threading
import urllib.parse
from typing import Any

# A sibling module: whoever imports this one has put this folder on sys.path.
from loopback_server import LoopbackJsonServer

_EMPTY = "type.googleapis.com/google.protobuf.Empty"
_UPLOAD_RESPONSE = "type.googleapis.com/google.cloud.aiplatform.v1.UploadModelResponse"
# MergeVersionAliasesRequest / Model.version_aliases in google-cloud-aiplatform's v1 types.
_VERSION_ALIAS_RE = re.compile(r"^[a-z][a-zA-Z0-9-]{0,126}[a-z0-9]$")
# UploadModelRequest.model_id.
_MODEL_ID_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,62}$")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _error(code: int, status: str, message: str) -> tuple[int, dict]:
    return code, {"error": {"code": code, "message": message, "status": status}}


def _not_found(what: str) -> tuple[int, dict]:
    return _error(404, "NOT_FOUND", f"{what} not found")


class FakeVertex(LoopbackJsonServer):
    """The fake service's state plus the request log.

    Attributes:
      requests: every request in order: {'method', 'path', 'query' (dict of lists), 'body'}.
      pipeline_jobs / schedules / contexts: resources by id, as Vertex returns them.
      context_children: context id -> the child context names added to it.
      models: model id -> {version id: the version's Model resource}, versions in upload order.
    """

    def __init__(self, project: str = "test-project", location: str = "us-central1") -> None:
        super().__init__()
        self.project = project
        self.location = location
        self.pipeline_jobs: dict[str, dict] = {}
        self.schedules: dict[str, dict] = {}
        self.contexts: dict[str, dict] = {}
        self.context_children: dict[str, list[str]] = {}
        self.models: dict[str, dict[str, dict]] = {}
        self._failures: list[tuple[str, str, int, str, str]] = []
        self._lock = threading.Lock()
        self._counter = 0

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    methods = ("GET", "POST", "DELETE", "PATCH")

    def split_target(self, target: str) -> tuple[str, dict[str, list[str]]]:
        path, _, raw_query = target.partition("?")
        return urllib.parse.unquote(path), urllib.parse.parse_qs(raw_query)

    def calls(self, method: str, suffix: str) -> list[dict[str, Any]]:
        """Recorded requests of `method` whose path ends with `suffix` (after the location)."""
        prefix = f"/v1/{self.parent}/"
        return [
            r
            for r in self.requests
            if r["method"] == method and r["path"].startswith(prefix) and r["path"].endswith(suffix)
        ]

    def fail_next(
        self,
        method: str,
        suffix: str,
        code: int = 503,
        status: str = "UNAVAILABLE",
        message: str = "the service is unavailable",
    ) -> None:
        """Makes the next `method` request whose path ends with `suffix` answer with an error."""
        self._failures.append((method, suffix, code, status, message))

    def model_versions(self, model_id: str) -> dict[str, list[str]]:
        """{version id: its aliases, sorted} of a model (empty if there is no such model)."""
        versions = self.models.get(model_id, {})
        return {vid: sorted(v.get("versionAliases", [])) for vid, v in versions.items()}

    def _next_id(self) -> str:
        self._counter += 1
        return str(1000 + self._counter)

    def _operation(self, response: dict) -> dict:
        return {
            "name": f"{self.parent}/operations/{self._next_id()}",
            "done": True,
            "response": response,
        }

    # --- the API -------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict, body: Any) -> tuple[int, dict]:
        match = re.fullmatch(r"/v1/projects/([^/]+)/locations/([^/]+)/(.+)", path)
        if not match:
            return _error(404, "NOT_FOUND", f"{method} {path} is not part of the fake API")
        project, location, rest = match.groups()
        if (project, location) != (self.project, self.location):
            return _error(
                403, "PERMISSION_DENIED", f"permission denied on projects/{project}/{location}"
            )
        with self._lock:
            for i, (verb, suffix, code, status, message) in enumerate(self._failures):
                if verb == method and path.endswith(suffix):
                    del self._failures[i]
                    return _error(code, status, message)
            for pattern, handler in self._routes():
                route = re.fullmatch(pattern, f"{method} {rest}")
                if route:
                    return handler(query, body or {}, *route.groups())
        return _error(404, "NOT_FOUND", f"{method} {path} is not part of the fake API")

    def _routes(self) -> list:
        contexts = "metadataStores/default/contexts"
        return [
            (r"POST pipelineJobs", self._create_job),
            (r"GET pipelineJobs/([^/:]+)", self._get_job),
            (r"POST schedules", self._create_schedule),
            (r"GET schedules", self._list_schedules),
            (r"GET schedules/([^/:]+)", self._get_schedule),
            (r"POST schedules/([^/:]+):(pause|resume)", self._pause_resume),
            (r"DELETE schedules/([^/:]+)", self._delete_schedule),
            (r"GET metadataStores/default", self._get_store),
            (rf"GET {contexts}/([^/:]+)", self._get_context),
            (rf"POST {contexts}", self._create_context),
            (rf"POST {contexts}/([^/:]+):addContextChildren", self._add_children),
            (r"POST models:upload", self._upload_model),
            (r"GET models/([^/:@]+)(?:@([^/:]+))?", self._get_model),
            (r"GET models/([^/:@]+):listVersions", self._list_versions),
            (r"POST models/([^/:@]+)@([^/:]+):mergeVersionAliases", self._merge_aliases),
        ]  # fmt: skip

    # pipeline jobs
    def _create_job(self, query: dict, body: dict) -> tuple[int, dict]:
        job_id = query.get("pipelineJobId", [self._next_id()])[0]
        if job_id in self.pipeline_jobs:
            return _error(409, "ALREADY_EXISTS", f"pipeline job {job_id} already exists")
        job = copy.deepcopy(body)
        job.update(
            name=f"{self.parent}/pipelineJobs/{job_id}",
            state="PIPELINE_STATE_PENDING",
            createTime=_now(),
        )
        self.pipeline_jobs[job_id] = job
        return 200, job

    def _get_job(self, query: dict, body: dict, job_id: str) -> tuple[int, dict]:
        job = self.pipeline_jobs.get(job_id)
        if job is None:
            return _not_found(f"pipeline job {job_id}")
        if "jobDetail" not in job:
            # Vertex creates the run's metadata context shortly after accepting the job.
            context = self._new_context(job_id, "system.PipelineRun", job.get("displayName", ""))
            job["jobDetail"] = {"pipelineRunContext": context}
        return 200, job

    # schedules
    def _create_schedule(self, query: dict, body: dict) -> tuple[int, dict]:
        schedule_id = self._next_id()
        schedule = copy.deepcopy(body)
        schedule.update(
            name=f"{self.parent}/schedules/{schedule_id}",
            state="ACTIVE",
            createTime=_now(),
            startedRunCount="0",
        )
        self.schedules[schedule_id] = schedule
        return 200, schedule

    def _list_schedules(self, query: dict, body: dict) -> tuple[int, dict]:
        return 200, {"schedules": list(self.schedules.values())}

    def _get_schedule(self, query: dict, body: dict, schedule_id: str) -> tuple[int, dict]:
        if schedule_id not in self.schedules:
            return _not_found(f"schedule {schedule_id}")
        return 200, self.schedules[schedule_id]

    def _pause_resume(self, query: dict, body: dict, schedule_id: str, verb: str):
        schedule = self.schedules.get(schedule_id)
        if schedule is None:
            return _not_found(f"schedule {schedule_id}")
        wanted_from = "ACTIVE" if verb == "pause" else "PAUSED"
        if schedule["state"] != wanted_from:
            return _error(
                400,
                "FAILED_PRECONDITION",
                f"schedule {schedule_id} is {schedule['state']}, cannot {verb}",
            )
        schedule["state"] = "PAUSED" if verb == "pause" else "ACTIVE"
        schedule["catchUp"] = bool(body.get("catchUp")) if verb == "resume" else False
        return 200, {}

    def _delete_schedule(self, query: dict, body: dict, schedule_id: str):
        if self.schedules.pop(schedule_id, None) is None:
            return _not_found(f"schedule {schedule_id}")
        return 200, self._operation({"@type": _EMPTY})

    # metadata (Vertex Experiments)
    def _get_store(self, query: dict, body: dict) -> tuple[int, dict]:
        return 200, {"name": f"{self.parent}/metadataStores/default", "createTime": _now()}

    def _new_context(self, context_id: str, schema: str, display_name: str) -> dict:
        context = {
            "name": f"{self.parent}/metadataStores/default/contexts/{context_id}",
            "displayName": display_name or context_id,
            "schemaTitle": schema,
            "schemaVersion": "0.0.1",
            "metadata": {},
            "createTime": _now(),
        }
        self.contexts[context_id] = context
        return context

    def _get_context(self, query: dict, body: dict, context_id: str) -> tuple[int, dict]:
        if context_id not in self.contexts:
            return _not_found(f"context {context_id}")
        return 200, self.contexts[context_id]

    def _create_context(self, query: dict, body: dict) -> tuple[int, dict]:
        context_id = query.get("contextId", [self._next_id()])[0]
        if context_id in self.contexts:
            return _error(409, "ALREADY_EXISTS", f"context {context_id} already exists")
        context = self._new_context(
            context_id, body.get("schemaTitle", ""), body.get("displayName", "")
        )
        context.update({k: v for k, v in body.items() if k not in context or k == "metadata"})
        return 200, context

    def _add_children(self, query: dict, body: dict, context_id: str) -> tuple[int, dict]:
        if context_id not in self.contexts:
            return _not_found(f"context {context_id}")
        children = self.context_children.setdefault(context_id, [])
        for child in body.get("childContexts", []):
            if child.rsplit("/", 1)[-1] not in self.contexts:
                return _not_found(f"context {child}")
            children.append(child)
        return 200, {}

    # model registry
    def _model_name(self, model_id: str) -> str:
        return f"{self.parent}/models/{model_id}"

    def _take_aliases(self, model_id: str, vid: str, aliases: list[str]) -> tuple[int, dict] | None:
        """Adds aliases to version `vid`, moving each from the version that held it."""
        bad = [a for a in aliases if not _VERSION_ALIAS_RE.match(a)]
        if bad:
            return _error(
                400,
                "INVALID_ARGUMENT",
                f"version aliases {bad} must match {_VERSION_ALIAS_RE.pattern}",
            )
        for other_vid, other in self.models[model_id].items():
            if other_vid != vid:
                other["versionAliases"] = [a for a in other["versionAliases"] if a not in aliases]
        version = self.models[model_id][vid]
        version["versionAliases"] += [a for a in aliases if a not in version["versionAliases"]]
        version["versionUpdateTime"] = _now()
        return None

    def _upload_model(self, query: dict, body: dict) -> tuple[int, dict]:
        model = copy.deepcopy(body.get("model") or {})
        if not model.get("displayName"):
            return _error(400, "INVALID_ARGUMENT", "model.display_name is required")
        parent_model = body.get("parentModel")
        if parent_model:
            prefix = self._model_name("")
            model_id = parent_model[len(prefix) :] if parent_model.startswith(prefix) else ""
            if model_id not in self.models:
                return _not_found(f"parent model {parent_model}")
            vid = str(max(map(int, self.models[model_id])) + 1)
        else:
            model_id = body.get("modelId") or self._next_id()
            if not _MODEL_ID_RE.match(model_id):
                return _error(400, "INVALID_ARGUMENT", f"model_id {model_id!r} is not valid")
            if model_id in self.models:
                return _error(409, "ALREADY_EXISTS", f"model {model_id} already exists")
            self.models[model_id] = {}
            vid = "1"
        aliases = list(model.pop("versionAliases", []))
        if not self.models[model_id]:
            aliases.append("default")  # the first version of a model is its default
        now = _now()
        model.update(
            name=self._model_name(model_id),
            versionId=vid,
            versionAliases=[],
            createTime=now,
            updateTime=now,
            versionCreateTime=now,
            versionUpdateTime=now,
        )
        self.models[model_id][vid] = model
        refused = self._take_aliases(model_id, vid, aliases)
        if refused:
            del self.models[model_id][vid]
            if not self.models[model_id]:
                del self.models[model_id]
            return refused
        response = {"@type": _UPLOAD_RESPONSE, "model": model["name"], "modelVersionId": vid}
        return 200, self._operation(response)

    def _version(self, model_id: str, ref: str | None) -> dict | None:
        """A version by id or alias; the default version when `ref` is None."""
        ref = ref or "default"
        versions = self.models.get(model_id, {})
        if ref in versions:
            return versions[ref]
        return next((v for v in versions.values() if ref in v["versionAliases"]), None)

    def _get_model(self, query: dict, body: dict, model_id: str, ref: str | None):
        version = self._version(model_id, ref)
        if version is None:
            return _not_found(f"model {self._model_name(model_id)}{'@' + ref if ref else ''}")
        return 200, version

    def _list_versions(self, query: dict, body: dict, model_id: str) -> tuple[int, dict]:
        if query.get("filter"):
            return _error(400, "INVALID_ARGUMENT", "the fake does not filter model versions")
        if model_id not in self.models:
            return _not_found(f"model {self._model_name(model_id)}")
        return 200, {"models": list(self.models[model_id].values())}

    def _merge_aliases(self, query: dict, body: dict, model_id: str, vid: str):
        versions = self.models.get(model_id, {})
        if vid not in versions:
            # Vertex wants the version id itself here, not an alias.
            return _not_found(f"model {self._model_name(model_id)}@{vid}")
        changes = body.get("versionAliases") or []
        removed = [a[1:] for a in changes if a.startswith("-")]
        if "default" in removed:
            return _error(400, "INVALID_ARGUMENT", "the default version alias cannot be removed")
        refused = self._take_aliases(model_id, vid, [a for a in changes if not a.startswith("-")])
        if refused:
            return refused
        version = versions[vid]
        version["versionAliases"] = [a for a in version["versionAliases"] if a not in removed]
        return 200, version
