"""The shim: a tiny launcher that outlives the daemon.

Started by the daemon as `python -I -S shim.py RUN_DIR` in a session of its own. It reads
RUN_DIR/launch.json, starts the job in a new process group with its output appended to
RUN_DIR/output.log, records the child in RUN_DIR/child.json, waits, and writes
RUN_DIR/exit.json atomically. The daemon only ever watches these files, so it can be killed and
restarted while jobs run. RUN_DIR is the daemon's: the job cannot write there.

When launch.json names a user, the job runs with her uid, gid and groups, with no way to gain
privileges (no_new_privs), while the shim stays as it was to record the end. Standard library
only, no site-packages: it must start in ~10 ms.
"""

import json
import os
import resource
import signal
import subprocess
import sys
import time


def _write_json(path, data):
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


_FIELDS = {"RLIMIT_AS": "memory_gb", "RLIMIT_NOFILE": "max_open_files", "RLIMIT_NPROC": "max_processes",
           "RLIMIT_CPU": "cpu_seconds"}


def _fit_limits(rlimits, say, can_raise):
    """The limits the kernel will take from this process: a value above the hard limit that an
    unprivileged shim may not raise is lowered to it, and the job's log says so (never a bare
    'Exception occurred in preexec_fn')."""
    out = {}
    for name, value in rlimits.items():
        kind = getattr(resource, name)
        _soft, hard = resource.getrlimit(kind)
        if name == "RLIMIT_NOFILE":
            try:
                with open("/proc/sys/fs/nr_open") as f:
                    nr_open = int(f.read())
                if value > nr_open:
                    say(f"resources.{_FIELDS[name]}: {value} is above this machine's fs.nr_open; using {nr_open}")
                    value = nr_open
            except (OSError, ValueError):
                pass
        if hard != resource.RLIM_INFINITY and value > hard and not can_raise:
            say(f"resources.{_FIELDS.get(name, name)}: {value} is above this user's hard limit; using {hard}")
            value = hard
        out[kind] = value
    return out


def _in_child(limits, no_new_privs):
    def apply():
        if no_new_privs is not None:
            no_new_privs(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: no setuid binary gives the job more
        for kind, value in limits.items():
            resource.setrlimit(kind, (value, value))
    return apply


def _prctl():
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _subreaper():
    """Become the reaper of the job's orphans. A process the job double-forks into a session of
    its own comes here instead of to init, so it ends with the job (see _end_leftovers), with or
    without bubblewrap. And bubblewrap's monitor exits as soon as the job does, before its
    pid-namespace init has been reaped: without this the init's resource usage (the job's peak
    memory among it) would never reach this process."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _children():
    try:
        with open(f"/proc/self/task/{os.getpid()}/children") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


def _end_leftovers(grace=2.0, bound=10.0):
    """After the job's main process: what is left of the job (orphans that came to the shim) gets
    0.5 s to end by itself (bubblewrap's init does), then SIGTERM, then after `grace` SIGKILL; each
    is reaped, so its resource usage is counted. Every process a job started ends with the job."""
    t0 = time.time()
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            continue
        age = time.time() - t0
        if age > bound:
            return
        if age > 0.5:
            sig = signal.SIGTERM if age < 0.5 + grace else signal.SIGKILL
            for c in _children():
                try:
                    os.kill(c, sig)
                except OSError:
                    pass
        time.sleep(0.01)


def _environment(spec):
    """The job's environment: launch.json's, with the variables it names taken from the shim's own
    where they are set (under Slurm: the GPUs and the node Slurm gave the job)."""
    env = dict(spec["env"])
    for key in spec.get("inherit", ()):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def main(job_dir):
    """Run the job described by JOB_DIR/launch.json to its end and record how it ended."""
    with open(os.path.join(job_dir, "launch.json")) as f:
        spec = json.load(f)
    exit_path = os.path.join(job_dir, "exit.json")
    user = spec.get("user")
    log_fd = os.open(os.path.join(job_dir, "output.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW,
                     spec.get("log_mode", 0o600))
    if user:
        os.fchown(log_fd, user["uid"], user["gid"])  # hers to read; the folder stays the daemon's
    os.fchmod(log_fd, spec.get("log_mode", 0o600))
    child = {"proc": None, "signal": None}

    def forward(signum, _frame):
        # A signal to the shim (someone killed it, or the machine shuts down) goes to the job's
        # whole group; the shim stays to record how the job ended.
        child["signal"] = signum
        if child["proc"] is not None:
            try:
                os.killpg(child["proc"].pid, signum)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    started = time.time()
    _subreaper()
    try:
        # The limits are set in the child after it became the job's user: above the hard limit it
        # inherits, only a root job could raise them.
        limits = _fit_limits(spec.get("rlimits") or {}, lambda m: os.write(log_fd, f"runner: warning: {m}\n".encode()),
                             can_raise=os.geteuid() == 0 and not user)
        ids = {"user": user["uid"], "group": user["gid"], "extra_groups": user["groups"]} if user else {}
        proc = subprocess.Popen(
            spec["argv"], stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
            env=_environment(spec), cwd=spec["cwd"], process_group=0, close_fds=True,
            # Only when there is something to do in the child: a preexec_fn costs every start a slower fork.
            preexec_fn=_in_child(limits, _prctl() if user else None) if (limits or user) else None, **ids,
        )
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        os.write(log_fd, f"runner: failed to start {spec['argv'][0]!r}: {e}\n".encode())
        _write_json(exit_path, {"exit_code": None, "signal": None, "spawn_error": str(e),
                                "started_at": started, "finished_at": time.time()})
        return 0
    child["proc"] = proc
    _write_json(os.path.join(job_dir, "child.json"), {"pid": proc.pid, "pgid": proc.pid, "started_at": started,
                                                      "shim_pid": os.getpid()})
    if child["signal"] is not None:
        forward(child["signal"], None)
    rc = proc.wait()
    finished = time.time()
    _end_leftovers()
    sig = -rc if rc < 0 else None
    if spec.get("sandboxed") and rc > 128 and rc - 128 < signal.NSIG:
        # bubblewrap reports a child killed by signal N as exit status 128+N.
        sig = rc - 128
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    _write_json(exit_path, {
        "exit_code": None if sig else rc, "signal": sig, "raw_status": rc,
        "started_at": started, "finished_at": finished, "max_rss_kb": usage.ru_maxrss,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
    })
    os.close(log_fd)
    return 0


def serve():
    """The warm launcher (`shim.py --serve`): started once by the daemon, in a session of its own.
    For each RUN_DIR line on stdin it forks a shim, already imported, that becomes the leader of a
    new session and runs main(RUN_DIR); it answers the shim's pid on stdout. A fork costs about a
    millisecond where a new interpreter with these imports costs ~20 ms of CPU per job.

    Its shims do not depend on it: when the daemon goes (stdin at EOF) the launcher exits and the
    running shims go on, each its own session, as those started one by one do."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # its shims are reaped by the kernel
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    while True:
        line = sys.stdin.readline()
        if not line:
            return 0
        run_dir = line.rstrip("\n")
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the shim waits for its job
                os.setsid()
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.close(null)
                code = main(run_dir)
            finally:
                os._exit(code)
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(serve() if sys.argv[1] == "--serve" else main(sys.argv[1]))
