"""Every job mirrored to an MLflow tracking server, whatever ran it, with no code in the adapters.

The site config's `[mlflow]` table turns it on (docs/mlflow.md): EXPORTERS["mlflow"]. Each job becomes one MLflow run:
tags say whose job it is and what it ran, params are its resolved settings, metrics are the
points the daemon parsed into the store, GPU samples are `system/` metrics, and the run's status
follows the job. The daemon's `export-mlflow` thread does the work while the job runs, so a job never
waits on MLflow: when the server is down the export falls behind and catches up later, each job
with its own backoff.

Exactly once: the store's outbox keeps, per job, the run id and the id of the last metric row MLflow
acknowledged. A batch is marked in flight before it is sent and acknowledged after, in one
transaction with the new position; a batch found in flight after a crash (the daemon's or the
server's) is settled against the run's metric history, so only what MLflow lacks is sent again. A
point's timestamp is fixed by the store (its `at`, made strictly increasing per metric), so the
same row always becomes the same point. A run created by a try whose answer was lost is found
again by its `runner.job_id` tag.

MLflow's REST API through a small client of our own (mlflow_rest): `import mlflow` (seconds) never
happens in runner.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from pathlib import Path

from ..exceptions import RunnerError
from ..states import ENDED, JobState
from .base import Exporter

# mlflow_rest (urllib) and watch are imported where they are used: `runner show` reads a view
# through this module and stays fast.

log = logging.getLogger("runner.exporters.mlflow")

MAX_METRICS = 1000  # per runs/log-batch call (MLflow's limit)
MAX_PARAMS = 100  # per runs/log-batch call (MLflow's limit)
MAX_TAGS = 100  # per runs/log-batch call (MLflow's limit)
PARAM_VALUE_MAX = 6000  # characters MLflow keeps of a param's value
KEY_MAX = 250  # characters of a metric, param or tag name
BATCHES_PER_TURN = 20  # batches one job sends before the next job's turn
ARTIFACT_KINDS = ("spec", "log", "best_checkpoint", "last_checkpoint")
DEFAULT_EXPERIMENT = "runner"
STATUS = {JobState.QUEUED: "SCHEDULED", JobState.PREPARING: "SCHEDULED", JobState.RUNNING: "RUNNING",
          JobState.SUCCEEDED: "FINISHED", JobState.FAILED: "FAILED", JobState.CANCELLED: "KILLED"}
_BAD_KEY_CHARS = re.compile(r"[^\w\-. /:]")  # MLflow accepts letters, digits, _ - . space / :
_GPU = re.compile(r"gpu(\d+)_(memory_mb|utilization)")


def settings(config: dict) -> dict | None:
    """The `[mlflow]` table of the site config, checked; None when the mirror is off."""
    sec = config.get("mlflow")
    if not sec:
        return None
    if not isinstance(sec, dict):
        raise RunnerError("[mlflow]: expected a table with tracking_uri = \"http://...\"")
    uri = sec.get("tracking_uri")
    if not isinstance(uri, str) or not re.match(r"https?://[^/\s]+", uri):
        raise RunnerError(f"[mlflow] tracking_uri: given {uri!r}; expected the tracking server's address, http://HOST:PORT")
    experiment = sec.get("experiment", DEFAULT_EXPERIMENT)
    if not isinstance(experiment, str) or not experiment.strip():
        raise RunnerError(f"[mlflow] experiment: given {experiment!r}; expected an experiment name")
    artifacts = sec.get("artifacts", [])
    if not isinstance(artifacts, list) or any(a not in ARTIFACT_KINDS for a in artifacts):
        raise RunnerError(f"[mlflow] artifacts: given {artifacts!r}; expected a list of {', '.join(ARTIFACT_KINDS)}")
    numbers = {}
    for key, default in (("artifact_max_mb", 100.0), ("interval_seconds", 2.0), ("timeout_seconds", 30.0)):
        v = sec.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise RunnerError(f"[mlflow] {key}: given {v!r}; expected a positive number")
        numbers[key] = float(v)
    return {"tracking_uri": uri.rstrip("/"), "experiment": experiment, "artifacts": artifacts, **numbers}


def job_experiment(spec: dict, conf: dict) -> str | None:
    """The experiment a job goes to (its own `mlflow: {experiment: ...}` or the site's), None for `mlflow: false`."""
    own = spec.get("mlflow", True)
    if own is False:
        return None
    if isinstance(own, dict) and own.get("experiment"):
        return own["experiment"]
    return conf["experiment"]


def metric_key(name: str) -> str:
    """The MLflow name of a stored metric: GPU samples as MLflow's system metrics, other names kept
    where MLflow allows them (characters it refuses, e.g. the parentheses of `mAP50(B)`, become `_`)."""
    m = _GPU.fullmatch(name)
    if m:
        return f"system/gpu_{m.group(1)}_" + ("memory_usage_megabytes" if m.group(2) == "memory_mb" else "utilization_percentage")
    key = _BAD_KEY_CHARS.sub("_", name).lstrip("/").replace("..", "_.")
    return key[:KEY_MAX] or "_"


def _number(v):
    """A value as MLflow's JSON takes it (protobuf JSON spells the non-finite ones as strings).
    SQLite keeps a NaN as NULL: a stored None is the NaN the log said."""
    if v is None:
        return "NaN"
    v = float(v)
    if math.isfinite(v):
        return v
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


def points(rows: list[dict], ts_state: dict) -> tuple[list[dict], dict]:
    """Metric rows as MLflow points, and the timestamp state after them. step = the epoch (or the
    parsed step, or 0); the timestamp is the row's time in ms, made strictly increasing per metric,
    so no two points of a metric are the same point to MLflow and the same row always maps the same."""
    state = dict(ts_state)
    out = []
    for r in rows:
        key = metric_key(r["name"])
        ts = max(int(r["at"] * 1000), state.get(key, -1) + 1)
        state[key] = ts
        step = r["epoch"] if r["epoch"] is not None else (r["step"] if r["step"] is not None else 0)
        out.append({"key": key, "value": _number(r["value"]), "timestamp": ts, "step": int(step)})
    return out, state


def flatten(d, prefix: str = "") -> dict:
    """{"train": {"lr": 0.1}} -> {"train.lr": "0.1"}: what MLflow's params hold (strings)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif v is None:
            continue
        elif isinstance(v, str):
            out[key] = v
        else:
            out[key] = json.dumps(v)
    return out


def job_params(job: dict, job_dir: Path) -> dict:
    """A job's params: its spec (without env_vars' values, which may be secrets) and, for a model
    job, the settings its translator resolved (job.json: what the adapter trained with)."""
    from ..watch import Refused, open_job_file

    spec = {k: v for k, v in job["spec"].items() if k not in ("mlflow",)}
    if spec.get("env_vars"):
        spec["env_vars"] = sorted(spec["env_vars"])  # the names only
    params = flatten(spec)
    try:  # written in the job folder, as the job's user: opened the safe way (a link or a FIFO is refused)
        uid = job["uid"] if job.get("uid") is not None else os.geteuid()
        with open_job_file(job_dir, "job.json", uid, max_bytes=4 << 20)[0] as f:
            settings = json.loads(f.read())
    except (OSError, ValueError, Refused):
        settings = None
    if isinstance(settings, dict):
        params.update(flatten({k: v for k, v in settings.items() if k != "dataset_report"}))
    return {metric_key(k): v[:PARAM_VALUE_MAX] for k, v in params.items()}


def job_tags(job: dict, repo: dict | None = None) -> dict:
    """The run's tags: whose job, what it ran (a repo job: the repo's URL and commit), how it ended."""
    tags = {"runner.job_id": job["id"], "runner.user": job["user"], "mlflow.user": job["user"],
            "runner.state": job["state"], "runner.kind": job.get("kind") or ""}
    model = job.get("model")
    if model:
        tags["runner.model"] = model
        fw, _, name = model.partition("/")
        tags["runner.framework"] = fw
        if fw == "repo":
            tags["runner.repo"] = (repo or {}).get("url") or name
            if (repo or {}).get("commit"):
                tags["runner.commit"] = repo["commit"]
    if job.get("env_hash"):
        tags["runner.env_hash"] = job["env_hash"]
    for k in ("reason", "exit_code", "retry_of", "note"):
        if k == "reason" and job["state"] not in ("failed", "cancelled"):
            continue  # a reason says why a job failed or waits
        if job.get(k) not in (None, ""):
            tags[f"runner.{k}"] = str(job[k])[:5000]
    return tags


def _ms(t: float | None) -> int | None:
    return int(t * 1000) if t else None


class MlflowExporter(Exporter):
    """The export of every enrolled job to MLflow; `run` is the daemon's thread, `sync` one job's turn."""

    title = "MLflow"
    unset = "[mlflow] tracking_uri"
    row_defaults = {"experiment_id": None, "ts_state": None, "params_done": 0, "artifacts_done": 0}

    def __init__(self, name, home, store, conf: dict):
        from .mlflow_rest import Client

        super().__init__(name, home, store, conf)
        self.client = Client(conf["tracking_uri"], conf["timeout_seconds"])
        self._experiments: dict[str, str] = {}
        # A fault for the tests: the daemon dies by SIGKILL after sending its N-th metric batch,
        # before acknowledging it (the window that exactly-once has to survive).
        self._kill_after = int(os.environ.get("RUNNER_FAULT_KILL_AFTER_MLFLOW_BATCH") or 0)
        self._sent = 0

    @property
    def quiet_errors(self):
        from .mlflow_rest import MlflowError

        return (MlflowError,)

    @classmethod
    def settings(cls, table) -> dict:
        """The `[mlflow]` table checked (docs/mlflow.md)."""
        return settings({"mlflow": table})

    @classmethod
    def target(cls, name: str, spec: dict, conf: dict) -> str | None:
        """The job's experiment (its own `mlflow: {experiment: ...}` or the site's), None for `mlflow: false`."""
        return job_experiment(spec, conf)

    def describe(self) -> str:
        return f"mirroring jobs to MLflow at {self.conf['tracking_uri']}"

    @classmethod
    def view(cls, store, row: dict) -> dict:
        return {"experiment": row["target"], "experiment_id": row.get("experiment_id"), **super().view(store, row)}

    @classmethod
    def show_line(cls, view: dict) -> str:
        state = "complete" if view["done"] else ("behind: " + view["error"] if view["error"] else "following")
        return (f"run {view['run_id'] or '(not made yet)'} in {view['experiment']}; "
                f"{view['points_exported']}/{view['points']} points exported; {state}")

    def _repo(self, job_id: str) -> dict | None:
        """The repo a repo job ran (written at prepare), or None."""
        try:
            return json.loads((self.home.run_dir(job_id) / "repo.json").read_text())
        except (OSError, ValueError):
            return None

    def _experiment(self, name: str) -> str:
        if name not in self._experiments:
            self._experiments[name] = self.client.experiment_id(name)
        return self._experiments[name]

    def export(self, job_id: str, row: dict) -> bool:
        """One turn of one job: its run made (or found again), params and tags once it runs, the
        metric rows after the acknowledged position, and at its end the artifacts and the status."""
        job = self.store.get_job(job_id)
        state = JobState(job["state"])
        ended = state in ENDED  # read first: once ended, every metric of the job is in the store
        run_id = row["run_id"]
        if not run_id:
            exp = self._experiment(row["target"])
            info = self.client.find_run(exp, job_id) or self.client.create_run(
                exp, job["name"] or job_id, _ms(job["created_at"]) or _ms(time.time()), job_tags(job))
            run_id = info["run_id"]
            self.set(job_id, run_id=run_id, experiment_id=exp, status_sent="SCHEDULED")
            row = self.row(job_id)
        if not row["params_done"] and (state == JobState.RUNNING or ended):
            params = sorted(job_params(job, self.home.job_dir(job_id)).items())
            tags = sorted(job_tags(job, self._repo(job_id)).items())
            for i in range(0, max(len(params), len(tags)), MAX_PARAMS):
                self.client.log_batch(run_id, params=[{"key": k, "value": v} for k, v in params[i:i + MAX_PARAMS]],
                                      tags=[{"key": k, "value": v} for k, v in tags[i:i + MAX_TAGS]])
            self.set(job_id, params_done=1)
        if row["inflight_id"]:
            self._settle(job_id, row, run_id)
            row = self.row(job_id)
        caught_up = self._send_metrics(job_id, row, run_id)
        status = STATUS[state]
        if ended and caught_up:
            if not row["artifacts_done"]:
                self._artifacts(job, run_id)
                self.set(job_id, artifacts_done=1)
            self.client.log_batch(run_id, tags=[{"key": k, "value": v} for k, v in sorted(job_tags(job, self._repo(job_id)).items())])
            self.client.update_run(run_id, status, _ms(job["finished_at"]))
            self.set(job_id, status_sent=status, done=1)
            return True
        if not ended and row["status_sent"] != status:
            self.client.update_run(run_id, status)
            self.set(job_id, status_sent=status)
        return False

    def _send_metrics(self, job_id: str, row: dict, run_id: str) -> bool:
        """Send the metric rows after the acknowledged position, batch by batch; True when none are left."""
        exported, ts_state = row["exported_id"], row["ts_state"] or {}
        for _ in range(BATCHES_PER_TURN):
            rows = self.store.metric_rows_after(job_id, exported, limit=MAX_METRICS)
            if not rows:
                return True
            batch, after = points(rows, ts_state)
            upto = rows[-1]["id"]
            self.set(job_id, inflight_id=upto)
            self.client.log_batch(run_id, metrics=batch)
            self._sent += 1
            if self._kill_after and self._sent >= self._kill_after:
                os.kill(os.getpid(), 9)
            self.set(job_id, exported_id=upto, inflight_id=None, ts_state=after)  # one transaction
            exported, ts_state = upto, after
        return False

    def _settle(self, job_id: str, row: dict, run_id: str):
        """A batch was sent and not acknowledged: send only the points of it that MLflow lacks."""
        rows = self.store.metric_rows_after(job_id, row["exported_id"], upto_id=row["inflight_id"], limit=1 << 30)
        batch, after = points(rows, row["ts_state"] or {})
        have = set()
        for key in sorted({p["key"] for p in batch}):
            have |= {(key, int(h["timestamp"]), int(h.get("step", 0))) for h in self.client.history(run_id, key)}
        missing = [p for p in batch if (p["key"], p["timestamp"], p["step"]) not in have]
        for i in range(0, len(missing), MAX_METRICS):
            self.client.log_batch(run_id, metrics=missing[i:i + MAX_METRICS])
        log.info("job %s: settled a batch in flight: %d of %d points were missing", job_id, len(missing), len(batch))
        self.set(job_id, exported_id=row["inflight_id"], inflight_id=None, ts_state=after)

    def _artifacts(self, job: dict, run_id: str):
        """The files the config asks for, each within the size limit; what was left out is tagged.

        A checkpoint is a file the job wrote: it is opened without following links (open_job_file),
        must be a regular file of the job's user, and must be the very file the watcher recorded
        (same device, inode, size and time); anything else is skipped with the reason."""
        from ..atomic import write_json
        from ..watch import Refused, read_identities

        wanted = self.conf["artifacts"]
        if not wanted:
            return
        info = self.client.call("GET", "runs/get", query={"run_id": run_id})["run"]["info"]
        run_dir = self.home.run_dir(job["id"])
        files = []
        if "spec" in wanted:
            tmp = run_dir / "mlflow-spec.json"
            write_json(tmp, {k: v for k, v in job["spec"].items() if k != "env_vars"}, mode=0o600, indent=2)
            files.append(("runner/spec.json", tmp, None))
        if "log" in wanted:
            files.append(("runner/output.log", run_dir / "output.log", None))
        checkpoints = [a for a in self.store.artifacts(job["id"]) if a["kind"] == "checkpoint"]
        if checkpoints and "best_checkpoint" in wanted:
            best = [a for a in checkpoints if "best" in Path(a["path"]).name] or checkpoints
            files.append((f"checkpoints/{Path(best[-1]['path']).name}", Path(best[-1]["path"]), "checkpoint"))
        if checkpoints and "last_checkpoint" in wanted:
            last = [a for a in checkpoints if "last" in Path(a["path"]).name] or checkpoints
            files.append((f"checkpoints/{Path(last[-1]['path']).name}", Path(last[-1]["path"]), "checkpoint"))
        skipped = []
        limit = int(self.conf["artifact_max_mb"] * 2**20)
        identities = read_identities(run_dir)
        for rel, path, kind in dict.fromkeys(files):
            try:
                if kind == "checkpoint":
                    src, st = self._open_checkpoint(job, path, identities)
                else:  # the daemon's own files, in its run folder
                    src = open(path, "rb")
                    st = os.fstat(src.fileno())
            except Refused as e:
                skipped.append(f"{rel} ({e})")
                log.warning("job %s: %s not uploaded to MLflow: %s", job["id"], path, e)
                continue
            except OSError:
                skipped.append(f"{rel} (missing)")
                continue
            with src:
                if st.st_size > limit:
                    skipped.append(f"{rel} ({st.st_size / 2**20:.0f} MB > artifact_max_mb {self.conf['artifact_max_mb']:g})")
                    continue
                self.client.upload(info["artifact_uri"], rel, _Bounded(src, st.st_size))
        if skipped:
            self.client.log_batch(run_id, tags=[{"key": "runner.artifacts_skipped", "value": "; ".join(skipped)[:5000]}])

    def _open_checkpoint(self, job: dict, path: Path, identities: dict):
        """The recorded checkpoint, opened the safe way and checked against its recorded identity."""
        from ..watch import Identity, Refused, open_job_file

        job_dir = self.home.job_dir(job["id"])
        try:
            rel = path.relative_to(job_dir)
        except ValueError:
            raise Refused("outside the job folder") from None
        recorded = identities.get(str(path))
        if recorded is None:
            raise Refused("no identity was recorded when it was found")
        uid = job["uid"] if job.get("uid") is not None else os.geteuid()
        src, st = open_job_file(job_dir, rel, uid)
        if Identity.of(st) != recorded:
            src.close()
            raise Refused("not the file that was recorded (replaced or changed since)")
        return src, st


class _Bounded:
    """A file read up to the size it had when it was checked (a job may still append to it)."""

    def __init__(self, f, size: int):
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n) if n else b""
        self.left -= len(data)
        return data
