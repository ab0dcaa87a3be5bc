"""The daemon: takes jobs from the spool, schedules, prepares, launches, watches and reaps.

Persisted state lives in SQLite; process handles live in memory only. Jobs run under a shim in
sessions of their own and report through files, so the daemon can be killed and restarted at any
moment: on start it reconciles every row against reality and keeps running jobs running.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import defaults, gpus as gpus_mod
from .envs import EnvManager
from .exceptions import EnvBuildError, InvalidTransition, JobNotFound, RepoError, RunnerError, SpecError
from .home import Home
from .registry import load as load_registry
from .scheduler import plan
from .spec import parse_spec
from .spool import SpoolFileError, check_cancel_record, check_job_record, pending, quarantine, read_record, user_name
from .states import JobState, Reason
from .outcome import decide, oom_in
from .proctl import alive, kill_tree, read_json
from .watch import LogWatcher, tail_lines

log = logging.getLogger("runner.daemon")


def _users_json(path: Path, uid: int) -> dict:
    """A small JSON file the job wrote (failure.json), read without following links; {} if unusable."""
    from .identity import open_users_file

    try:
        with open_users_file(path, uid) as f:
            data = json.loads(f.read(1 << 20))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _may_write(path: str, uid: int) -> bool:
    """Whether uid may write into the folder by its mode bits (owner, groups, others)."""
    import grp
    import pwd
    import stat as st_

    try:
        st = os.stat(path)
        pw = pwd.getpwuid(uid)
    except (OSError, KeyError):
        return False
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & st_.S_IWUSR)
    groups = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if pw.pw_name in g.gr_mem}
    if st.st_gid in groups:
        return bool(st.st_mode & st_.S_IWGRP)
    return bool(st.st_mode & st_.S_IWOTH)


class Daemon:
    """One daemon per $RUNNER_HOME."""

    def __init__(self, home: Home, http: str | None = defaults.HTTP_BIND, max_running: int | None = None):
        self.home = home.ensure()
        cfg = home.config.get("daemon", {})
        self.max_running = max_running or cfg.get("max_running", defaults.MAX_RUNNING)
        self.http_bind = http
        self.store = home.store()
        self._registry, self._registry_stamp = None, None
        self.envs = EnvManager(home.envs, self.store, home.config.get("envs"))
        self.inventory = gpus_mod.inventory(home.config)
        self.user_gpu_limit = home.config.get("gpus", {}).get("per_user_limit")
        self.backfill_limit = home.config.get("gpus", {}).get("backfill_limit", defaults.BACKFILL_LIMIT)
        self.release_wait = home.config.get("gpus", {}).get("release_wait_seconds", defaults.GPU_RELEASE_WAIT_SECONDS)
        self.pool = ThreadPoolExecutor(max_workers=cfg.get("prepare_workers", defaults.PREPARE_WORKERS), thread_name_prefix="prepare")
        self.wake = threading.Event()
        self.stopping = False
        self.started_at = time.time()
        self.procs = {}  # job_id -> Popen of its shim (to reap zombies)
        self.watchers: dict[str, LogWatcher] = {}
        self.killing = {}  # job_id -> when to escalate to SIGKILL
        self.skipped = {}  # job_id -> times a smaller job started ahead of it (backfill bound)
        self.releasing = {}  # job_id -> deadline for its processes to leave its GPUs
        self._last_gpu_sample = 0.0
        self._dirty = True  # something happened that may let a queued job start
        self._last_schedule = 0.0
        self._stop_watch = threading.Event()
        self._lock_fd = None
        self.http_server = None
        self.last_tick = time.time()  # when the loop last completed a pass (for /healthz)
        self._unmovable = set()  # spool names the daemon may not move (another user's, with a non-root daemon)

    @property
    def registry(self):
        """The merged registry, re-read when one of its files changes (e.g. `runner repo add`)."""
        from .registry import registry_files

        stamp = tuple((str(f), f.stat().st_mtime_ns if f.exists() else None) for f in registry_files(self.home))
        if stamp != self._registry_stamp:
            self._registry, self._registry_stamp = load_registry(self.home), stamp
        return self._registry

    # -- lifecycle ---------------------------------------------------------------------------
    def _take_pidfile(self):
        fd = os.open(self.home.pidfile, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 64).decode().strip()
            os.close(fd)
            raise RunnerError(f"a daemon already runs for {self.home.root} (pid {other}); stop it first")
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def run(self):
        """Run in the foreground until SIGTERM/SIGINT; running jobs are left running."""
        self._take_pidfile()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info("runner daemon %s: home %s, %d slots, gpus: %s", os.getpid(), self.home.root, self.max_running, self.inventory.reason)
        self._own_taking()
        from . import tokens

        tokens.ensure_dir(self.home)
        from .secrets import _dir as secrets_dir

        secrets_dir(self.home)
        info = {"pid": os.getpid(), "uid": os.geteuid(), "user": user_name(os.geteuid()), "http": self.http_bind,
                "started_at": self.started_at}
        tmp = self.home.root / f".daemon.json.{os.getpid()}"
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self.home.root / "daemon.json")
        self.reconcile()
        self._resume_intake(time.time())
        threading.Thread(target=self._watch_files, name="watch", daemon=True).start()
        if self.http_bind:
            self._start_http()
        try:
            while not self.stopping:
                self.tick()
                self.wake.wait(defaults.POLL_SECONDS)
                self.wake.clear()
        finally:
            self._stop_watch.set()
            if self.http_server:
                self.http_server.should_exit = True
            self.pool.shutdown(wait=False, cancel_futures=True)
            log.info("runner daemon stopped; %d job(s) left running", len(self.store.list_jobs(states=["running"])))
            os.close(self._lock_fd)

    def _own_taking(self):
        """spool/.taking must be the daemon's own folder, closed to everyone else."""
        t = self.home.taking
        try:
            st = os.lstat(t)
        except FileNotFoundError:
            os.mkdir(t, 0o700)
        else:
            import stat as st_

            if not st_.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                os.rename(t, self.home.quarantine / f".taking.{time.time_ns()}")
                os.mkdir(t, 0o700)
        os.chmod(t, 0o700)

    def _on_signal(self, signum, _frame):
        self.stopping = True
        self.wake.set()

    def _watch_files(self):
        import watchfiles

        try:
            for _ in watchfiles.watch(self.home.spool, self.home.jobs, stop_event=self._stop_watch, debounce=20, step=2,
                                      rust_timeout=1000, yield_on_timeout=True, raise_interrupt=False):
                self.wake.set()
        except Exception:  # inotify limits etc.: the poll interval still drives the loop
            log.exception("file watching failed; polling every %.2fs", defaults.POLL_SECONDS)

    def _start_http(self):
        import uvicorn

        from .http import create_app

        host, _, port = self.http_bind.rpartition(":")
        app = create_app(self.home, daemon=self)
        config = uvicorn.Config(app, host=host or "127.0.0.1", port=int(port), log_level="warning", access_log=False, lifespan="off")
        self.http_server = uvicorn.Server(config)
        t = threading.Thread(target=self.http_server.run, name="http", daemon=True)
        t.start()

    # -- the loop ------------------------------------------------------------------------------
    def tick(self, now: float | None = None):
        """One pass: take the spool, follow and reap running jobs, start what fits."""
        now = time.time() if now is None else now
        self.ingest(now)
        self.follow(now)
        # Scheduling reads the whole queue: do it when something changed (a submit, a job that
        # ended), and once a second for what changes unseen (GPUs used by others, a GPU back).
        if not self.stopping and (self._dirty or now - self._last_schedule >= 1.0):
            self._dirty = False
            self._last_schedule = now
            self.schedule(now)
        for jid, proc in list(self.procs.items()):
            if proc.poll() is not None:
                del self.procs[jid]
        self.last_tick = time.time()

    def reconcile(self, now: float | None = None):
        """After a (re)start: put every row that was mid-way right against what is on disk."""
        now = now or time.time()
        for job in self.store.list_jobs(states=["preparing"]):
            d = self.home.run_dir(job["id"])
            if (d / "child.json").exists() or (d / "exit.json").exists():
                self.store.transition(job["id"], JobState.RUNNING, "launched before a daemon restart", now=now)
            else:
                self.store.transition(job["id"], JobState.QUEUED, "daemon_restarted", now=now)
        for job in self.store.list_jobs(states=["running"]):
            log.info("job %s: still running from before; following from offset %s", job["id"], job["log_offset"])

    def ingest(self, now: float):
        """Take every spool file: jobs into the store, cancel requests applied, bad files quarantined.

        Each file is first moved into spool/.taking/ (the daemon's own folder), so a user can no
        longer swap it, and so a file that takes the daemon down with it is not taken twice: one
        left there by a daemon that died is retried once (a SIGKILL mid-intake loses no job), and
        set aside if it is found there again.
        """
        for path in pending(self.home):
            if path.name in self._unmovable:
                continue
            taking = self.home.taking / path.name
            try:
                os.rename(path, taking)
            except FileNotFoundError:
                continue
            except OSError as e:
                self._unmovable.add(path.name)
                why = (f"this daemon runs as {user_name(os.geteuid())} and runs only that user's jobs; a daemon "
                       f"that serves a team runs as root (docs/server.md)") if os.geteuid() != 0 else f"cannot take it: {e.strerror}"
                try:
                    fd = os.open(self.home.quarantine / (path.name + ".reason"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
                    os.write(fd, (why + " (the file is left in the spool: only its owner may remove it)\n").encode())
                    os.close(fd)
                except OSError:
                    pass
                log.warning("cannot take spool file %s: %s", path.name, why)
                continue
            self._take(taking, now)

    def _resume_intake(self, now: float):
        """Files a previous daemon was taking in when it died: retry each once, then set it aside."""
        for name in sorted(os.listdir(self.home.taking)):
            path = self.home.taking / name
            if name.endswith(".retry"):
                quarantine(self.home, path, "the daemon stopped twice while taking this file in; it is set aside "
                                            "(submit it again if it is yours)")
                log.warning("quarantined %s: the daemon died twice while taking it in", name)
                continue
            retry = path.with_name(name + ".retry")
            os.rename(path, retry)
            self._take(retry, now)

    def _take(self, path: Path, now: float):
        name = path.name.removesuffix(".retry")
        try:
            owner = os.lstat(path).st_uid
            if owner != os.geteuid() and os.geteuid() != 0:
                raise SpoolFileError(f"this daemon runs as {user_name(os.geteuid())} and runs only that user's jobs; "
                                     f"{user_name(owner)}'s file is set aside (a daemon that serves a team runs as root)")
            rec, uid = read_record(path)
            if name.endswith(".cancel.json"):
                self._cancel(check_cancel_record(rec, now), uid, now)
            elif name.endswith(".token.json"):
                self._token(rec, uid)
            elif name.endswith(".job.json"):
                self._ingest_job(check_job_record(rec, now), uid, now)
            else:
                raise SpoolFileError("not a .job.json or .cancel.json file")
            path.unlink(missing_ok=True)
        except (SpoolFileError, RunnerError) as e:
            quarantine(self.home, path, f"{type(e).__name__}: {e}")
            log.warning("quarantined %s: %s", name, e)
        except Exception as e:  # a bug here must cost one file, never the daemon (signals are not Exceptions)
            log.exception("quarantined %s: intake failed", name)
            quarantine(self.home, path, f"internal error while taking it in: {type(e).__name__}: {str(e)[:200]}")

    def _ingest_job(self, rec: dict, uid: int, now: float):
        spec = parse_spec(rec["spec"])
        job_id = rec["id"]
        if spec.workdir is not None:
            from .resolve import workdir_problems

            if not os.path.isabs(spec.workdir):
                raise SpecError([f"workdir: given {spec.workdir!r}; expected an absolute path (runner submit makes it one)"])
            problems = [p for p in workdir_problems(spec.workdir, self.home.root) if "not writable by you" not in p]
            if uid != os.geteuid() and not _may_write(spec.workdir, uid):
                problems.append(f"workdir: {spec.workdir} is not writable by {user_name(uid)}")
            if problems:
                raise SpecError(problems)
        after = []
        for ref in spec.after:
            try:
                after.append(self.store.get_job(ref)["id"])
            except JobNotFound:
                after.append(ref)
        name = spec.name or (spec.model.split("/", 1)[1] if spec.model else (spec.command if isinstance(spec.command, str) else " ".join(spec.command)))[:60]
        env = rec["spec"].get("env")
        if isinstance(env, dict):
            env = env.get("name", "inline")
        elif env is None and (spec.model or "").startswith("repo/"):
            env = f"repo:{spec.model[5:]}"  # a repo's env comes from its registry table
        stored = rec["spec"]
        if stored.get("env_vars"):
            from .secrets import keep

            retry_uid = None
            if rec["retry_of"]:
                try:
                    retry_uid = self.store.get_job(rec["retry_of"])["uid"]
                except JobNotFound:
                    pass
            stored = {**stored, "env_vars": keep(self.home, job_id, stored["env_vars"], uid, rec["retry_of"], retry_uid)}
        self._dirty = True
        self.store.insert_job({
            "id": job_id, "name": name, "user": user_name(uid), "uid": uid, "kind": spec.kind, "model": spec.model,
            "priority": spec.priority, "spec": stored, "env": env,
            "after": after, "created_at": rec["submitted_at"], "job_dir": str(self.home.job_dir(job_id)),
            "gpus": [], "retry_of": rec.get("retry_of"),
        }, now=now)

    def _token(self, rec: dict, uid: int):
        from . import tokens
        from .identity import person

        if set(rec) - {"rotate"} or not isinstance(rec.get("rotate", False), bool):
            raise SpoolFileError("a token request is {\"rotate\": true|false}")
        if uid != os.geteuid() and os.geteuid() != 0:
            raise SpoolFileError(f"this daemon runs as {user_name(os.geteuid())} and serves only that user")
        tokens.ensure_dir(self.home)
        try:
            who = person(uid)
        except KeyError:
            raise SpoolFileError(f"uid {uid} is no user of this machine") from None
        tokens.write(self.home, uid, who.gid, rotate=rec.get("rotate", False))

    def _cancel(self, rec: dict, uid: int, now: float):
        job = self.store.get_job(rec["id"])
        if uid not in (0, job["uid"]):
            raise RunnerError(f"job {job['id']}: {user_name(uid)} may not cancel a job of {job['user']}")
        self.request_cancel(job, now)

    def request_cancel(self, job: dict, now: float):
        """Cancel a job in whatever state it is in; killing a running one takes the whole tree."""
        self._dirty = True
        state = JobState(job["state"])
        if state == JobState.QUEUED:
            try:
                self.store.transition(job["id"], JobState.CANCELLED, Reason.CANCELLED_BY_USER.value, now=now, expect=JobState.QUEUED)
                return
            except InvalidTransition:
                job = self.store.get_job(job["id"])
                state = JobState(job["state"])
        if state in (JobState.PREPARING, JobState.RUNNING):
            self.store.update_job(job["id"], cancel_requested=1)
            if state == JobState.RUNNING:
                kill_tree(self.home.run_dir(job["id"]), signal.SIGTERM)
                self.killing[job["id"]] = now + defaults.CANCEL_GRACE_SECONDS

    def follow(self, now: float):
        """Read new log output of running jobs; reap the ones that ended."""
        for job in self.store.list_jobs(states=["running"]):
            jid = job["id"]
            w = self.watchers.get(jid)
            job_dir = self.home.job_dir(jid)
            run_dir = self.home.run_dir(jid)
            if w is None:
                meta = read_json(run_dir / "watch.json") or {}
                w = self.watchers[jid] = LogWatcher(jid, job_dir, meta.get("parser"), job["log_offset"] or 0,
                                                    job["parser_state"], meta.get("checkpoints"), log_path=run_dir / "output.log",
                                                    owner=job["uid"])
            exit_info = read_json(run_dir / "exit.json")
            w.poll(self.store, final=exit_info is not None)
            if exit_info is not None:
                if not self._gpus_released(job, now):
                    continue
                self._reap(job, exit_info, now)
                continue
            limit = (job["spec"].get("resources") or {}).get("time_limit")
            if limit and job["started_at"] and now - job["started_at"] > limit and jid not in self.killing:
                self.store.update_job(jid, timed_out=1, note=f"stopped at its time limit of {limit:g}s")
                kill_tree(run_dir, signal.SIGTERM)
                self.killing[jid] = now + defaults.CANCEL_GRACE_SECONDS
            if jid in self.killing and now >= self.killing[jid]:
                kill_tree(run_dir, signal.SIGKILL)
                self.killing[jid] = now + 1.0
            if not self._running_somewhere(job, run_dir):
                exit_info = read_json(run_dir / "exit.json")  # the shim may have just finished
                if exit_info is None:
                    w.poll(self.store, final=True)
                    self._end(job, JobState.FAILED, Reason.LOST.value, now, note="the job's processes vanished without an exit status")
                else:
                    self._reap(job, exit_info, now)
        if now - self._last_gpu_sample >= 2.0:
            self._last_gpu_sample = now
            self._sample_gpus(now)

    def _stragglers(self, job) -> list:
        """Processes of this job still on its GPUs (found by the RUNNER_JOB_ID in their environment)."""
        import psutil

        out = []
        for g in self.inventory.gpus():
            if g.uuid not in (job["gpu_uuids"] or []):
                continue
            for p in g.processes:
                try:
                    if psutil.Process(p["pid"]).environ().get("RUNNER_JOB_ID") == job["id"]:
                        out.append(p["pid"])
                except (psutil.Error, KeyError):
                    continue
        return out

    def _gpus_released(self, job, now) -> bool:
        """Whether the ended job's GPUs are free of its processes; kills stragglers after a bounded wait."""
        if not job.get("gpu_uuids") or not self.inventory.available:
            return True
        left = self._stragglers(job)
        if not left:
            self.releasing.pop(job["id"], None)
            return True
        deadline = self.releasing.setdefault(job["id"], now + self.release_wait)
        if now < deadline:
            return False
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        note = f"killed {len(left)} process(es) left on its GPUs after {self.release_wait:.0f}s: {', '.join(map(str, left))}"
        before = self.store.get_job(job["id"])["note"]
        self.store.update_job(job["id"], note=f"{before}; {note}" if before else note)
        log.warning("job %s: %s", job["id"], note)
        self.releasing.pop(job["id"], None)
        return True

    def _running_somewhere(self, job, run_dir) -> bool:
        if alive(job["shim_pid"], job["shim_started"]):
            return True
        child = read_json(run_dir / "child.json")
        return bool(child) and alive(child["pid"])

    def _reap(self, job: dict, exit_info: dict, now: float):
        jid = job["id"]
        job_dir = self.home.job_dir(jid)
        failure = _users_json(job_dir / "failure.json", job["uid"])
        tail = tail_lines(self.home.run_dir(jid) / "output.log")
        code, sig = exit_info.get("exit_code"), exit_info.get("signal")
        fresh = self.store.get_job(jid)
        state, reason = decide(exit_info, failure, cancel_requested=bool(fresh["cancel_requested"]),
                               timed_out=bool(fresh["timed_out"]), oom_in_log=oom_in(tail))
        note = self._check_results_file(job, job_dir)
        # The end time is the shim's, not this pass's: a job that ended while the daemon was down
        # did not last until the restart. Bounded by what the store knows, as the job folder is the job's.
        ended = exit_info.get("finished_at")
        if isinstance(ended, (int, float)) and not isinstance(ended, bool) and (job["started_at"] or 0) - 5 <= ended <= now:
            now = max(float(ended), job["started_at"] or 0)
        usage = {k: exit_info[k] for k in ("max_rss_kb", "cpu_seconds") if isinstance(exit_info.get(k), (int, float))}
        self._end(job, state, reason, now, exit_code=code, signal=sig, log_tail="\n".join(tail) if state != JobState.SUCCEEDED else None,
                  **usage, **({"note": note} if note else {}))

    def _check_results_file(self, job, job_dir) -> str | None:
        """A repo's own results file, stored as `file/` metrics and compared with the parsed log."""
        spec = (read_json(self.home.run_dir(job["id"]) / "watch.json") or {}).get("results_file")
        if not spec:
            return None
        from log_parsers.results import compare, read_results

        from .identity import open_users_file

        path = job_dir / "out" / spec["path"]
        if not path.exists():
            return f"results file {spec['path']} was not written"
        try:
            with open_users_file(path, job["uid"]) as f:
                text = f.read(64 << 20).decode("utf-8", "replace")
            results = read_results(path, spec, text)
        except (ValueError, KeyError, OSError) as e:
            return f"results file {spec['path']}: {e}"
        self.store.add_metrics(job["id"], [(f"file/{k}", v, None, e) for e, vals in results.items() for k, v in vals.items()])
        parsed = {}
        for m in self.store.metrics(job["id"]):
            if m["epoch"] is not None and not m["name"].startswith("file/"):
                parsed.setdefault(m["epoch"], {})[m["name"]] = m["value"]
        n, bad = compare(results, parsed, spec.get("compare", {}))
        if bad:
            return f"results file disagrees with the log: {'; '.join(bad[:5])}"
        return f"results file agrees with the parsed log ({n} values over {len(results)} epochs)"

    def _end(self, job, state, reason, now, **fields):
        jid = job["id"]
        self._dirty = True
        w = self.watchers.pop(jid, None)
        if w:
            if w.checkpoints:
                w.scan_artifacts(self.store)
            w.close()
        if "log_tail" not in fields and state == JobState.FAILED:
            fields["log_tail"] = "\n".join(tail_lines(self.home.run_dir(jid) / "output.log"))
        try:
            self.store.transition(jid, state, reason, now=now, expect=JobState.RUNNING, **fields)
        except InvalidTransition as e:
            log.warning("%s", e)
        self.killing.pop(jid, None)
        log.info("job %s: %s%s", jid, state.value, f" ({reason})" if reason else "")

    def _sample_gpus(self, now):
        running = [j for j in self.store.list_jobs(states=["running"]) if j.get("gpu_uuids")]
        if not running or not self.inventory.available:
            return
        sample = self.inventory.sample([u for j in running for u in j["gpu_uuids"]])
        for j in running:
            points, total = [], 0.0
            for i, u in enumerate(j["gpu_uuids"]):
                g = sample.get(u)
                if g is None:
                    continue
                points.append((f"gpu{i}_memory_mb", g.memory_used_mb, None, None))
                if g.utilization is not None:
                    points.append((f"gpu{i}_utilization", g.utilization, None, None))
                total += g.memory_used_mb
            if points:
                self.store.add_metrics(j["id"], points, now=now)
                if total > (j.get("peak_gpu_mem_mb") or 0):
                    self.store.update_job(j["id"], peak_gpu_mem_mb=total)

    # -- scheduling and launching --------------------------------------------------------------
    def schedule(self, now: float):
        """Start the queued jobs that fit now; record why the others wait."""
        active = self.store.count_by_state()
        if not active.get("queued") or active.get("running", 0) + active.get("preparing", 0) >= self.max_running:
            return
        # The head of the queue is enough to fill the free slots: a deep queue is not re-read
        # (and its JSON re-parsed) on every decision. Jobs further back get their wait reason
        # when they come within the window.
        queued = self.store.queued_jobs(limit=max(32, 8 * self.max_running))
        if not queued:
            return
        deps = {d for j in queued for d in (j["after"] or [])}
        dep_states = {}
        for d in deps:
            try:
                dep_states[d] = self.store.get_job(d)["state"]
            except JobNotFound:
                dep_states[d] = "missing"
        for j in list(queued):
            bad = [d for d in (j["after"] or []) if dep_states.get(d) in ("failed", "cancelled", "missing")]
            if bad:
                self.store.transition(j["id"], JobState.FAILED, Reason.DEPENDENCY_FAILED.value, now=now, expect=JobState.QUEUED,
                                      note=f"dependency {bad[0]} is {dep_states[bad[0]]}")
                queued.remove(j)
        running = active.get("running", 0) + active.get("preparing", 0)
        wants_gpus = any((j["spec"].get("resources") or {}).get("gpus") for j in queued)
        free, count = [], 0
        allocations = {}
        held = {}
        if wants_gpus and self.inventory.available:
            all_gpus = self.inventory.gpus()
            count = len(all_gpus)
            allocations = self.store.gpu_allocations()
            free = gpus_mod.free_gpus(all_gpus, allocations, job_pids=set())
            for jid in set(allocations.values()):
                try:
                    j = self.store.get_job(jid)
                    held[j["user"]] = held.get(j["user"], 0) + len(j["gpu_uuids"] or [])
                except JobNotFound:
                    pass
        ends = {}
        if allocations:
            for j in self.store.list_jobs(states=["preparing", "running"]):
                limit = (j["spec"].get("resources") or {}).get("time_limit")
                for u in j["gpu_uuids"] or []:
                    ends[u] = (j["started_at"] or now) + limit if limit else None
        decision = plan(queued, running, self.max_running, free, count, self.inventory.available and count > 0,
                        held, self.user_gpu_limit, self.skipped, self.backfill_limit, dep_states, now=now, ends=ends)
        for job, chosen in decision.start:
            try:
                self.store.claim(job["id"], [(g.index, g.uuid) for g in chosen], now=now)
            except InvalidTransition as e:
                log.info("%s", e)
                continue
            self.pool.submit(self._prepare_and_launch, self.store.get_job(job["id"]))
        for j in queued:
            if j["id"] in decision.waiting:
                reason = decision.waiting[j["id"]]
                value = reason.value if reason else None
                if j["reason"] != value:
                    self.store.update_job(j["id"], reason=value)

    def _job_log(self, job: dict):
        """A writer of `runner: ...` lines into the job's log while it is prepared (the log is its user's to read)."""
        from .identity import drops_privileges
        from .prepare import log_mode

        run = self.home.run_dir(job["id"])
        run.mkdir(parents=True, exist_ok=True)
        os.chmod(run, 0o711)
        path = run / "output.log"
        mode = log_mode(self.home)

        def write(line: str):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, mode)
            try:
                if drops_privileges(job["uid"]):
                    os.fchown(fd, job["uid"], -1)
                os.write(fd, (line.rstrip("\n") + "\n").encode())
            finally:
                os.close(fd)
        return write

    def _prepare_and_launch(self, job: dict):
        from .prepare import prepare, spawn_shim

        jid = job["id"]
        job_dir = self.home.job_dir(jid)
        run_dir = self.home.run_dir(jid)
        write = self._job_log(job)
        try:
            prepared = prepare(job, self.home, self.registry, self.envs, write)
        except EnvBuildError as e:
            self._fail_preparing(jid, Reason.ENV_BUILD_FAILED, str(e), write)
            return
        except RepoError as e:
            from .repos import PatchError

            self._fail_preparing(jid, Reason.PATCH_FAILED if isinstance(e, PatchError) else Reason.PREPARE_FAILED, str(e), write)
            return
        except (RunnerError, OSError, ValueError, KeyError) as e:
            self._fail_preparing(jid, Reason.PREPARE_FAILED, str(e), write)
            return
        except Exception as e:  # a bug in a translator must not kill the daemon
            log.exception("job %s: prepare crashed", jid)
            self._fail_preparing(jid, Reason.PREPARE_FAILED, f"{type(e).__name__}: {e}", write)
            return
        (run_dir / "watch.json").write_text(json.dumps({"parser": prepared.parser, "checkpoints": prepared.checkpoints,
                                                         "results_file": prepared.results_file}))
        from .identity import hand_over
        from .prepare import job_dir_mode, job_person

        hand_over(job_dir, job_person(job), job_dir_mode(self.home))  # hers from here on; the daemon writes no more there
        if self.store.get_job(jid)["cancel_requested"]:
            self.store.transition(jid, JobState.CANCELLED, Reason.CANCELLED_BY_USER.value, expect=JobState.PREPARING)
            return
        offset = (run_dir / "output.log").stat().st_size if (run_dir / "output.log").exists() else 0
        try:
            proc = spawn_shim(run_dir)
        except OSError as e:
            self._fail_preparing(jid, Reason.SPAWN_FAILED, str(e), write)
            return
        import psutil

        try:
            started = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            started = None
        self.procs[jid] = proc
        try:
            self.store.transition(jid, JobState.RUNNING, None, expect=JobState.PREPARING, shim_pid=proc.pid, shim_started=started,
                                  env_hash=prepared.env_hash, log_offset=offset)
        except InvalidTransition:
            kill_tree(run_dir, signal.SIGKILL)
            return
        if self.store.get_job(jid)["cancel_requested"]:
            self.request_cancel(self.store.get_job(jid), time.time())
        self.wake.set()

    def _fail_preparing(self, jid, reason: Reason, message: str, write):
        self._dirty = True
        for line in message.splitlines():
            write(f"runner: {line}")
        try:
            self.store.transition(jid, JobState.FAILED, reason.value, expect=JobState.PREPARING,
                                  log_tail="\n".join(tail_lines(self.home.run_dir(jid) / "output.log")), note=message.splitlines()[0][:500] if message else None)
        except InvalidTransition as e:
            log.warning("%s", e)
        log.info("job %s: failed while preparing (%s): %s", jid, reason.value, message.splitlines()[0] if message else "")
