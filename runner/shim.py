"""The shim: a tiny launcher that outlives the daemon.

Started by the daemon as `python -I -S shim.py RUN_DIR` in a session of its own. It reads
RUN_DIR/launch.json, starts the job in a new process group with its output (a pipe) copied into
RUN_DIR/output.log, records the child in RUN_DIR/child.json, waits, and writes
RUN_DIR/exit.json atomically. The daemon only ever watches these files, so it can be killed and
restarted while jobs run. RUN_DIR is the daemon's: the job cannot write there.

The shim, not the job, writes the log: past launch.json's `log_max_bytes` it keeps the head, says
where it cut, and keeps the last part in memory until the job ends; a full disk loses output (and
says so once it can), never the job. A job that ends after a full disk, its log's or one it
reported ("No space left on device"), gets `disk_full` in exit.json with the folder that was full.

A program that cannot start ends the same way with or without bubblewrap: exit.json has its
`spawn_error` and the log says "runner: failed to start". Without bubblewrap the exec fails in
Popen; under it bwrap itself reports the failed exec (or a sandbox it could not set up) as exit
status 1 with one line of its own, which is how the shim tells that from a program that exited 1.

When launch.json names a user, the job runs with her uid, gid and groups, with no way to gain
privileges (no_new_privs), while the shim stays as it was to record the end. Standard library
only, no site-packages: it must start in ~10 ms.

Where runner/_shim_c.c is built, that shim in C runs instead (~1 ms of CPU a trivial job, this one
~3 ms: docs/bench/drain.md); this file is the reference, run where it is not built or with
RUNNER_SHIM=python, and tests/test_shim.py holds both to the same results.
"""

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time

TAIL_MAX = 16 << 20  # most bytes of a cut log's last part held in memory until the job ends
EXIT_RESERVE = 64 << 10  # disk space taken for exit.json when the job starts, so a full disk cannot stop it
_FULL = (28, 122)  # ENOSPC, EDQUOT
_FULL_WORDS = (b"No space left on device", b"Disk quota exceeded", b"[Errno 28]", b"ENOSPC")
_FIRST_MAX = 4096  # bytes of a job's first output kept to tell bubblewrap's own failure from the program's


def _bwrap_failure(rc, first):
    """Why bubblewrap never started the program, or None: it exits 1 having printed one line of its
    own ("bwrap: execvp PROG: No such file or directory", or a sandbox it could not set up) and
    nothing else. A program that ran and exited 1 printed something else, or nothing."""
    if rc != 1 or not first.startswith(b"bwrap: ") or not first.endswith(b"\n") or first.count(b"\n") != 1:
        return None
    why = first[len(b"bwrap: "):-1].decode("utf-8", "replace")
    if why.startswith("execvp "):  # "execvp PROG: REASON": the reason alone, PROG is named by the caller
        why = why.rpartition(": ")[2]
    return why


def _load_sibling(name):
    """runner/NAME.py loaded by its path: the shim runs as `python -I -S shim.py`, outside the package
    (what it loads is standard library only, and so stays the shim)."""
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location(f"runner_{name}", os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py"))
    mod = module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_atomic = _load_sibling("atomic")  # the one atomic writer


def _launcher():
    """runner/shim_serve.py (the warm launcher, which loads the C shim)."""
    return _load_sibling("shim_serve")


def _write_json(path, data, reserved=None, fsync=True):
    """Write JSON atomically (a temporary file, fsync, rename; its mode the umask's of 0644); into
    `reserved` (a temporary file made with its space at the start) when given, so that it can be
    written on a full disk. `fsync` False: child.json, which means nothing after the machine
    crashed (the job it names is gone with it)."""
    _atomic.write_bytes(path, json.dumps(data).encode(), None, reserved=reserved, fsync=fsync)


def _say(log_fd, line):
    """A line of runner's into the log (lost on a full disk, where exit.json still says what happened)."""
    try:
        os.write(log_fd, line.encode())
    except OSError:
        pass


def _reserve(path):
    """exit.json's temporary file, made now with its disk space allocated (None when it cannot be)."""
    return _atomic.reserve(path, EXIT_RESERVE)


def _free(path):
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


class _Relay:
    """Copies the job's output from a pipe into its log: the cap (head, a line saying where it was
    cut, the last part at the end), a full disk (the output lost meanwhile is counted and said), and
    what the job said about a full disk (for exit.json). Runs in a thread; finish() ends it."""

    def __init__(self, rfd, log_fd, cap):
        self.rfd, self.log_fd, self.cap = rfd, log_fd, cap
        self.tail_max = min(max(cap // 4, 4096), TAIL_MAX) if cap else 0
        size = os.fstat(log_fd).st_size
        self.head_left = max(cap - self.tail_max - size, 0) if cap else None
        self.tail = bytearray()
        self.cut = 0  # bytes past the head (the kept tail among them)
        self.cutting = False
        self.lost = 0  # bytes a full disk (or another write error) took, not yet said in the log
        self.log_full = False
        self.why_lost = ""  # what took them: the full disk, or the error
        self.said_full = []  # short pieces of the job's output that spoke of a full disk
        self.ended_line = True
        self._prev = b""
        self.first = b""  # the first bytes of output: a sandbox that never started the program says why there
        self.lock = threading.Lock()
        self.done = False

    def run(self):
        while True:
            try:
                data = os.read(self.rfd, 1 << 16)
            except OSError:
                data = b""
            with self.lock:
                if self.done:
                    return
                if not data:
                    return
                self._take(data)

    def _take(self, data):
        if len(self.first) < _FIRST_MAX:
            self.first += data[:_FIRST_MAX - len(self.first)]
        seen = self._prev + data
        if len(self.said_full) < 4 and any(w in seen for w in _FULL_WORDS):
            at = max(seen.rfind(w) for w in _FULL_WORDS)
            self.said_full.append(seen[max(0, at - 300):at + 300])
        self._prev = data[-64:]
        if self.cap is None or (not self.cutting and len(data) <= self.head_left):
            self._out(data)
            if self.cap is not None:
                self.head_left -= len(data)
            return
        if not self.cutting:
            room = data[:self.head_left]
            nl = room.rfind(b"\n")
            if nl >= 0 and len(room) - nl < (1 << 16):
                room = room[:nl + 1]  # cut at a line's end where there is one near
            self._out(room)
            data = data[len(room):]
            self.cutting = True
            self._out(("" if self.ended_line else "\n").encode() + (
                f"runner: this log reached its cap ([jobs] log_max_mb = {self.cap / 2**20:g}); the output is cut here "
                f"and its last part is written when the job ends\n").encode())
        self.cut += len(data)
        self.tail += data
        if len(self.tail) > self.tail_max:
            del self.tail[:len(self.tail) - self.tail_max]

    def _out(self, data):
        if not data:
            return
        if self.lost:
            note = (f"{'' if self.ended_line else chr(10)}runner: {self.lost} bytes of output were lost here: "
                    f"{self.why_lost}\n").encode()
            lost, self.lost = self.lost, 0
            if not self._write(note):
                self.lost = lost + len(data)  # the job's bytes (not the note's)
                return
            self.ended_line = True
        if self._write(data):
            self.ended_line = data.endswith(b"\n")

    def _write(self, data) -> bool:
        """All of it into the log, or False (its bytes counted lost): any error loses output, never the
        job, whose own log may refuse writes (its size is hers to set; a dead relay blocked her pipe)."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.log_fd, view):]
            except OSError as e:
                if e.errno in _FULL:
                    self.log_full = True
                    self.why_lost = "the disk holding this log was full"
                else:
                    self.why_lost = f"writing this log failed ({os.strerror(e.errno) if e.errno else e})"
                self.lost += len(view)
                return False
        return True

    def finish(self):
        """Stop copying (what is still in the pipe after the job and its leftovers ended is read
        first), and write the kept last part of a cut log."""
        with self.lock:
            self.done = True
            if self.cutting:
                kept = bytes(self.tail)
                if self.cut > len(kept) and b"\n" in kept[:-1]:
                    kept = kept[kept.index(b"\n") + 1:]  # from a line's start
                self._out(f"runner: {self.cut - len(kept)} bytes of output were cut here; its last {len(kept)} bytes follow\n".encode())
                self._out(kept)

    def disk_full(self, log_folder, job_folders):
        """exit.json's `disk_full`: the folder that was full, when the log could not be written or
        the job spoke of a full disk; None otherwise. Only runner's own folders are named (never
        a path from the job's output: the note is seen by everyone): the log's when it could not be
        written, else the job's folder its words name, else the one with the least space left."""
        if not self.log_full and not self.said_full:
            return None
        folders = list(dict.fromkeys(f for f in [*job_folders, log_folder] if isinstance(f, str) and f))
        if self.log_full:
            folder = log_folder
        else:
            said = b"".join(self.said_full).decode("utf-8", "replace")
            named = [f for f in sorted(folders, key=len, reverse=True) if f in said]
            frees = [(f, _free(f)) for f in folders]
            folder = named[0] if named else min(frees, key=lambda x: x[1] if x[1] is not None else 1 << 62)[0]
        return {"folder": folder, "free_bytes": _free(folder), "log": self.log_full}


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


def _in_child(limits, no_new_privs, folders=()):
    def apply():
        if no_new_privs is not None:
            no_new_privs(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: no setuid binary gives the job more
        _own_folders(folders)  # as the job's user: hers, in her folder
        for kind, value in limits.items():
            resource.setrlimit(kind, (value, value))
    return apply


def _own_folders(folders):
    """The job's HOME and TMPDIR (in its job folder), made by whoever runs the job, never followed if a link."""
    for path in folders:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass


def _load_prctl():
    """libc's prctl, or None. Loaded when the shim module is: the Python warm launcher (shim_serve.py) loads
    ctypes once, and each shim it forks has it (importing ctypes in every shim cost ~1.6 ms of CPU a
    job, most of a trivial job's shim)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError, ImportError):
        return None


_PRCTL = _load_prctl()


def _prctl():
    return _PRCTL


def _host_oom_kills():
    """The kernel's count of processes its out-of-memory killer has killed since boot (/proc/vmstat's
    oom_kill, Linux 4.13+; readable by anyone), or None where there is none."""
    try:
        with open("/proc/vmstat", "rb") as f:
            data = f.read()
        at = data.index(b"\noom_kill ") + 10
        return int(data[at:data.index(b"\n", at)])
    except (OSError, ValueError):
        return None


def _subreaper():
    """Become the reaper of the job's orphans. A process the job double-forks into a session of
    its own comes here instead of to init, so it ends with the job (see _end_leftovers), with or
    without bubblewrap. And bubblewrap's monitor exits as soon as the job does, before its
    pid-namespace init has been reaped: without this the init's resource usage (the job's peak
    memory among it) would never reach this process."""
    if _PRCTL is not None:
        _PRCTL(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


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
    nap = 0.00025  # doubled each time up to 10 ms: bubblewrap's pid-namespace init is usually gone within a
    # millisecond of the job, and a first nap of 10 ms made every sandboxed job's end 8 ms later (its slot with it)
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
        time.sleep(nap)
        nap = min(nap * 2, 0.01)


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
    oom_before = _host_oom_kills()
    _subreaper()
    reserved = _reserve(exit_path)
    out_r, out_w = os.pipe()
    try:
        # The limits are set in the child after it became the job's user: above the hard limit it
        # inherits, only a root job could raise them.
        limits = _fit_limits(spec.get("rlimits") or {}, lambda m: _say(log_fd, f"runner: warning: {m}\n"),
                             can_raise=os.geteuid() == 0 and not user)
        ids = {"user": user["uid"], "group": user["gid"], "extra_groups": user["groups"]} if user else {}
        env = _environment(spec)
        jd = (spec["env"].get("RUNNER_JOB_DIR") or "").rstrip("/")
        folders = [env[k] for k in ("HOME", "TMPDIR") if jd and env.get(k, "").startswith(jd + "/")]
        if not user:
            _own_folders(folders)  # this shim runs as the job's user already
        proc = subprocess.Popen(
            spec["argv"], stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w,
            env=env, cwd=spec["cwd"], process_group=0, close_fds=True,
            # Only when there is something to do in the child: a preexec_fn costs every start a slower fork.
            preexec_fn=_in_child(limits, _prctl() if user else None, folders) if (limits or user) else None, **ids,
        )
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        os.close(out_r)
        os.close(out_w)
        _say(log_fd, f"runner: failed to start {spec.get('program', spec['argv'][0])!r}: {e}\n")
        _write_json(exit_path, {"exit_code": None, "signal": None, "spawn_error": str(e),
                                "started_at": started, "finished_at": time.time()}, reserved)
        return 0
    os.close(out_w)
    relay = _Relay(out_r, log_fd, spec.get("log_max_bytes"))
    copier = threading.Thread(target=relay.run, name="log", daemon=True)
    copier.start()
    child["proc"] = proc
    try:
        _write_json(os.path.join(job_dir, "child.json"), {"pid": proc.pid, "pgid": proc.pid, "started_at": started,
                                                          "shim_pid": os.getpid()}, fsync=False)
    except OSError:
        pass  # a full disk: the daemon follows the job through the shim's pid, which it recorded
    if child["signal"] is not None:
        forward(child["signal"], None)
    rc = proc.wait()
    finished = time.time()
    _end_leftovers()
    copier.join(5.0)  # the pipe's end: every process of the job has ended (or kept it open: not waited for)
    relay.finish()
    why = _bwrap_failure(rc, bytes(relay.first)) if spec.get("sandboxed") else None
    if why is not None:
        _say(log_fd, f"runner: failed to start {spec.get('program', spec['argv'][0])!r}: {why}\n")
        _write_json(exit_path, {"exit_code": None, "signal": None, "spawn_error": why, "raw_status": rc,
                                "started_at": started, "finished_at": finished}, reserved)
        os.close(log_fd)
        return 0
    sig = -rc if rc < 0 else None
    if spec.get("sandboxed") and rc > 128 and rc - 128 < signal.NSIG:
        # bubblewrap reports a child killed by signal N as exit status 128+N.
        sig = rc - 128
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    end = {"exit_code": None if sig else rc, "signal": sig, "raw_status": rc,
           "started_at": started, "finished_at": finished, "max_rss_kb": usage.ru_maxrss,
           "cpu_seconds": usage.ru_utime + usage.ru_stime}
    env = spec.get("env") or {}
    try:
        full = relay.disk_full(job_dir, [env.get("RUNNER_JOB_DIR"), spec.get("cwd"), env.get("TMPDIR"), env.get("HOME")])
    except Exception:  # noqa: BLE001 - a finer reason is never worth losing exit.json
        full = None
    if full and (rc != 0 or sig):
        end["disk_full"] = full
    oom_after = _host_oom_kills() if rc != 0 and oom_before is not None else None  # (/proc/vmstat is made on each read)
    if oom_after is not None and oom_after > oom_before:
        end["host_oom_kills"] = oom_after - oom_before  # the host ran out of memory meanwhile (runner.outcome)
    _write_json(exit_path, end, reserved)
    os.close(log_fd)
    return 0


def run(job_dir):
    """One job's shim in this process: the C one where it is built, else main()."""
    c = _launcher().load_c()
    return c.run(job_dir) if c is not None else main(job_dir)


if __name__ == "__main__":
    sys.exit(_launcher().serve() if sys.argv[1] == "--serve" else run(sys.argv[1]))
