"""The few calls of MLflow's REST API (2.0) that the mirror needs, through urllib.

Importing MLflow's own client takes seconds and brings its dependencies into runner's; these
calls are all the mirror uses: experiments, runs, log-batch, metric history, artifacts.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path


class MlflowError(Exception):
    """A call MLflow refused or that did not reach it. `code` is MLflow's error_code, if any."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


class Client:
    """The few REST calls the mirror needs (MLflow's REST API 2.0)."""

    def __init__(self, tracking_uri: str, timeout: float = 30.0):
        self.uri = tracking_uri.rstrip("/")
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json"}
        # The same variables as MLflow's own client.
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif user and password:
            self.headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def _open(self, method: str, url: str, data: bytes | None, headers: dict) -> bytes:
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            body = e.read()[:2000].decode("utf-8", "replace")
            try:
                payload = json.loads(body)
            except ValueError:
                payload = {}
            code = payload.get("error_code") if isinstance(payload, dict) else None
            msg = payload.get("message", body) if isinstance(payload, dict) else body
            raise MlflowError(f"{method} {url.split('?')[0]}: HTTP {e.code}{' ' + code if code else ''}: {str(msg)[:300]}", code) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise MlflowError(f"{self.uri} cannot be reached: {reason}") from None

    def call(self, method: str, path: str, body: dict | None = None, query: dict | None = None) -> dict:
        url = f"{self.uri}/api/2.0/mlflow/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body, allow_nan=False).encode() if body is not None else None
        text = self._open(method, url, data, self.headers)
        return json.loads(text) if text.strip() else {}

    def experiment_id(self, name: str) -> str:
        """The id of experiment `name`, created when missing."""
        for _ in range(2):
            try:
                return self.call("GET", "experiments/get-by-name", query={"experiment_name": name})["experiment"]["experiment_id"]
            except MlflowError as e:
                if e.code != "RESOURCE_DOES_NOT_EXIST":
                    raise
            try:
                return self.call("POST", "experiments/create", {"name": name})["experiment_id"]
            except MlflowError as e:
                if e.code != "RESOURCE_ALREADY_EXISTS":  # made meanwhile by someone else: read it again
                    raise
        raise MlflowError(f"experiment {name!r}: neither found nor created")

    def find_run(self, experiment_id: str, job_id: str) -> dict | None:
        """The run tagged with this job id, if one was made (by a try whose answer was lost)."""
        runs = self.call("POST", "runs/search", {"experiment_ids": [experiment_id], "max_results": 2,
                                                 "filter": f"tags.\"runner.job_id\" = '{job_id}'"}).get("runs", [])
        return runs[0]["info"] if runs else None

    def create_run(self, experiment_id: str, name: str, start_ms: int, tags: dict) -> dict:
        body = {"experiment_id": experiment_id, "run_name": name, "start_time": start_ms,
                "tags": [{"key": k, "value": v} for k, v in tags.items()]}
        if tags.get("mlflow.user"):
            body["user_id"] = tags["mlflow.user"]
        return self.call("POST", "runs/create", body)["run"]["info"]

    def log_batch(self, run_id: str, metrics=(), params=(), tags=()):
        self.call("POST", "runs/log-batch", {"run_id": run_id, "metrics": list(metrics), "params": list(params), "tags": list(tags)})

    def history(self, run_id: str, key: str) -> list[dict]:
        """Every point of one metric of a run."""
        out, token = [], None
        while True:
            q = {"run_id": run_id, "metric_key": key, "max_results": 25000}
            if token:
                q["page_token"] = token
            r = self.call("GET", "metrics/get-history", query=q)
            out += r.get("metrics", [])
            token = r.get("next_page_token")
            if not token:
                return out

    def update_run(self, run_id: str, status: str, end_ms: int | None = None):
        body = {"run_id": run_id, "status": status}
        if end_ms is not None:
            body["end_time"] = end_ms
        self.call("POST", "runs/update", body)

    def upload(self, artifact_uri: str, rel: str, src):
        """Put one file into a run's artifacts (served by the tracking server, or a folder mounted here).

        `src` is a binary file already opened by the caller (the mirror opens what a job wrote
        without following links, and checks it): it is read from, never opened again by name."""
        if artifact_uri.startswith("mlflow-artifacts:"):
            where = urllib.parse.urlparse(artifact_uri).path
            url = f"{self.uri}/api/2.0/mlflow-artifacts/artifacts/{where.strip('/')}/{urllib.parse.quote(rel)}"
            self._open("PUT", url, src.read(), {k: v for k, v in self.headers.items() if k != "Content-Type"})
            return
        local = artifact_uri[len("file://"):] if artifact_uri.startswith("file://") else artifact_uri
        if not local.startswith("/"):
            raise MlflowError(f"artifact store {artifact_uri!r}: runner uploads to an MLflow server that serves "
                              "artifacts (mlflow-artifacts:) or to a folder this machine mounts")
        dest = Path(local) / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        # a new file of a name nobody could have planted (O_EXCL, never through a link), readable by
        # the tracking server's own user as the file of a plain open was; then put in place
        from ..atomic import write_bytes

        write_bytes(dest, src, 0o644, fsync=False)
