"""The shim on its own: exit codes, signals, spawn errors, leftovers and limits, as the daemon
starts it (`python -I -S runner/shim.py RUN_DIR`, or the warm launcher), without a daemon. Every
test runs twice: with shim.py's own main() (RUNNER_SHIM=python) and with the shim in C
(runner/_shim_c.c, where it is built), which must give the same results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import wait_for
from runner.prepare import spawn_shim

SH = "/bin/sh"
C_BUILT = any((Path("runner") / f"_shim_c{suffix}").exists() for suffix in __import__("importlib.machinery").machinery.EXTENSION_SUFFIXES)


@pytest.fixture(autouse=True, params=["python", "c"])
def shim_impl(request, monkeypatch):
    """Which shim the shims these tests start run: shim.py's main() or the C one (RUNNER_SHIM)."""
    if request.param == "c" and not C_BUILT:
        pytest.skip("runner/_shim_c is not built here (no C compiler): shim.py's main() runs")
    monkeypatch.setenv("RUNNER_SHIM", request.param)
    return request.param


def test_the_shim_asked_for_is_the_one_that_runs(tmp_path, shim_impl):
    # the job's parent is its shim: the C one has runner/_shim_c mapped, shim.py's main() has not
    d = launch(tmp_path / "r", [SH, "-c", "grep -c _shim_c /proc/$PPID/maps; true"])
    assert run(d)["exit_code"] == 0
    assert int((d / "output.log").read_text().split()[0]) > 0 if shim_impl == "c" else (d / "output.log").read_text().startswith("0")
    from runner.prepare import ShimLauncher

    launcher = ShimLauncher()  # and so does the warm launcher's
    w = launch(tmp_path / "w", [SH, "-c", "grep -c _shim_c /proc/$PPID/maps; true"])
    launcher.spawn(w)
    wait_for(lambda: (w / "exit.json").exists(), 30, what="the launcher's shim to end")
    launcher.close()
    assert int((w / "output.log").read_text().split()[0]) > 0 if shim_impl == "c" else (w / "output.log").read_text().startswith("0")


def launch(run_dir: Path, argv: list, **extra) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = {"argv": argv, "env": {"PATH": "/usr/bin:/bin"}, "cwd": str(run_dir), **extra}
    (run_dir / "launch.json").write_text(json.dumps(spec))
    return run_dir


def run(run_dir: Path, timeout: float = 30) -> dict:
    proc = spawn_shim(run_dir)
    assert proc.wait(timeout=timeout) == 0
    return json.loads((run_dir / "exit.json").read_text())


@pytest.mark.parametrize("code", [0, 1, 3, 255])
def test_exit_code_is_recorded(tmp_path, code):
    d = launch(tmp_path / "r", [SH, "-c", f"echo out; echo err >&2; exit {code}"])
    end = run(d)
    assert end["exit_code"] == code and end["signal"] is None and end["raw_status"] == code
    assert (d / "output.log").read_text() == "out\nerr\n"  # stdout and stderr, in order, in one log
    child = json.loads((d / "child.json").read_text())
    assert child["pid"] == child["pgid"] and child["shim_pid"] != child["pid"]
    assert end["started_at"] <= end["finished_at"]


def test_killed_by_signal_is_a_signal_not_an_exit_code(tmp_path):
    end = run(launch(tmp_path / "r", [SH, "-c", "kill -KILL $$"]))
    assert end["signal"] == signal.SIGKILL and end["exit_code"] is None


def test_sandboxed_status_128_plus_n_is_read_as_signal_n(tmp_path):
    # bubblewrap reports a child killed by signal N as exit status 128+N
    end = run(launch(tmp_path / "r", [SH, "-c", "exit 143"], sandboxed=True))
    assert end["signal"] == signal.SIGTERM and end["exit_code"] is None
    plain = run(launch(tmp_path / "p", [SH, "-c", "exit 143"]))  # not sandboxed: a plain exit status
    assert plain["exit_code"] == 143 and plain["signal"] is None


def test_spawn_error_is_recorded_in_exit_json_and_log(tmp_path):
    d = launch(tmp_path / "r", [str(tmp_path / "no-such-program"), "x"])
    end = run(d)
    assert end["exit_code"] is None and "No such file" in end["spawn_error"]
    assert "runner: failed to start" in (d / "output.log").read_text()
    assert not (d / "child.json").exists()


def test_bad_cwd_is_a_spawn_error(tmp_path):
    d = launch(tmp_path / "r", [SH, "-c", "true"])
    spec = json.loads((d / "launch.json").read_text())
    (d / "launch.json").write_text(json.dumps({**spec, "cwd": str(tmp_path / "gone")}))
    assert "gone" in run(d)["spawn_error"]


def test_sigterm_to_the_shim_goes_to_the_whole_job_group(tmp_path):
    marker = tmp_path / "child-pid"
    # the job's shell ignores SIGTERM and waits for its child, which does not: only a signal to the
    # whole process group (not to the shell alone) ends the job before its 60 s
    grandchild = f"import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_DFL); open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    d = launch(tmp_path / "r", [SH, "-c", f"trap '' TERM; {sys.executable} -c \"{grandchild}\" & wait $!; echo status=$?"])
    proc = spawn_shim(d)
    deadline = time.time() + 10
    while not marker.exists() or not marker.read_text().strip():
        assert time.time() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert time.time() < deadline + 10
    assert "status=143" in (d / "output.log").read_text()  # the child died of SIGTERM (128 + 15)
    assert json.loads((d / "exit.json").read_text())["exit_code"] == 0


def test_double_forked_leftover_is_ended_after_the_job_exits(tmp_path):
    marker = tmp_path / "orphan-pid"
    # the job leaves a daemonized grandchild (its parent exits at once, so it is reparented)
    d = launch(tmp_path / "r", [SH, "-c", f"(setsid sh -c 'sleep 120 & echo $! > {marker}; wait' &) ; sleep 0.3; exit 0"])
    end = run(d)
    assert end["exit_code"] == 0
    orphan = int(marker.read_text())
    deadline = time.time() + 5
    while True:
        try:
            os.kill(orphan, 0)
        except ProcessLookupError:
            break
        # a zombie awaiting reaping is gone too
        try:
            if Path(f"/proc/{orphan}/stat").read_text().split(")")[1].split()[0] == "Z":
                break
        except OSError:
            break
        assert time.time() < deadline, "the shim left the job's double-forked process running"
        time.sleep(0.05)


def _in_a_fork(fn) -> int:
    """fn() in a child of this process (the shim's main sets signal handlers and makes its process a
    subreaper: never pytest's); the child's exit status."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = fn()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_leftovers_are_waited_for_in_short_naps_first():
    # bubblewrap's pid-namespace init comes to the shim a moment after the job: the shim's first
    # naps waiting for it are short (a first nap of 10 ms made every sandboxed job end 8 ms late)
    from runner import shim

    def child():
        naps, sleep = [], time.sleep
        if os.fork() == 0:  # a leftover that ends by itself after 30 ms
            sleep(0.03)
            os._exit(0)
        shim.time.sleep = lambda s: (naps.append(s), sleep(s))  # (the time module: this fork's only)
        t0 = time.monotonic()
        shim._end_leftovers()
        took = time.monotonic() - t0
        return 0 if naps and naps[0] <= 0.0005 and max(naps) <= 0.01 and 0.025 <= took < 0.5 else 3

    assert _in_a_fork(child) == 0


@pytest.mark.parametrize("code, counted", [(1, True), (0, False)])
def test_host_oom_kills_are_read_after_a_failed_job_only(tmp_path, code, counted):
    # /proc/vmstat's oom_kill before and after a job that failed: the host ran out of memory
    # meanwhile (runner.outcome). A job that succeeded needs no second read.
    from runner import shim

    d = launch(tmp_path / "r", [SH, "-c", f"exit {code}"])
    reads = tmp_path / "reads"

    def child():
        seen = iter([5, 7])
        shim._host_oom_kills = lambda: (reads.open("a").write("x"), next(seen))[1]
        return shim.main(str(d))

    assert _in_a_fork(child) == 0
    end = json.loads((d / "exit.json").read_text())
    assert end["exit_code"] == code
    assert end.get("host_oom_kills") == (2 if counted else None)
    assert reads.read_text() == ("xx" if counted else "x")


def test_rlimit_is_applied_in_the_child(tmp_path):
    d = launch(tmp_path / "r", [SH, "-c", "ulimit -n"], rlimits={"RLIMIT_NOFILE": 77})
    run(d)
    assert (d / "output.log").read_text().strip() == "77"


def test_peak_rss_and_cpu_time_are_the_jobs(tmp_path):
    prog = "b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096]); import time; t = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    end = run(launch(tmp_path / "r", [sys.executable, "-c", prog]))
    assert end["exit_code"] == 0
    assert end["max_rss_kb"] > 190 * 1024, end
    assert end["cpu_seconds"] >= 0.25, end


def test_log_is_appended_not_truncated_and_keeps_its_mode(tmp_path):
    d = launch(tmp_path / "r", [SH, "-c", "echo second"], log_mode=0o640)
    (d / "output.log").write_text("runner: prepared\n")
    run(d)
    assert (d / "output.log").read_text() == "runner: prepared\nsecond\n"
    assert (d / "output.log").stat().st_mode & 0o777 == 0o640


def test_log_that_is_a_symlink_is_refused(tmp_path):
    d = launch(tmp_path / "r", [SH, "-c", "echo should-not-land"])
    target = tmp_path / "elsewhere"
    target.write_text("")
    (d / "output.log").symlink_to(target)
    proc = spawn_shim(d)
    proc.wait(timeout=30)
    assert target.read_text() == ""  # O_NOFOLLOW: nothing written through the link
    assert not (d / "exit.json").exists() or json.loads((d / "exit.json").read_text()).get("exit_code") is None


@pytest.mark.parametrize("name", ["shim.py", "shim_serve.py"])
def test_shim_starts_without_site_packages(tmp_path, name):
    # -I -S: the shim and its launcher must not depend on anything but the standard library
    r = subprocess.run([sys.executable, "-I", "-S", "-c", "import ast, sys; ast.parse(open(sys.argv[1]).read());"
                        "import json, os, resource, signal, subprocess, time", str(Path("runner", name).resolve())])
    assert r.returncode == 0
    src = Path("runner", name).read_text()
    imports = {line.split()[1].split(".")[0] for line in src.splitlines() if line.strip().startswith(("import ", "from "))}
    assert imports <= set(sys.stdlib_module_names), imports - set(sys.stdlib_module_names)


def test_the_warm_launcher_imports_nearly_nothing(shim_impl):
    # every module the launcher holds is paid by every job (a fork copies its page tables): with the
    # C shim it holds none of shim.py's (json, subprocess, threading, ctypes)
    code = ("import os, runpy, sys; sys.argv = [sys.argv[1]]; import signal; "
            "import importlib.util as u; s = u.spec_from_file_location('m', sys.argv[0]); m = u.module_from_spec(s); "
            "s.loader.exec_module(m); c = m.load_c(); "
            "print(sorted({'json', 'subprocess', 'threading', 'ctypes'} & set(sys.modules)), c is not None)")
    r = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(Path("runner/shim_serve.py").resolve())],
                       capture_output=True, text=True, check=True)
    assert r.stdout.split("]")[0] + "]" == "[]" and r.stdout.strip().endswith(str(shim_impl == "c")), r.stdout


def test_warm_launcher_forks_shims_that_outlive_it(tmp_path):
    """`shim_serve.py` (the daemon's launcher): each RUN_DIR line starts a shim, a session
    leader of its own whose pid comes back; at EOF (the daemon gone) the launcher exits and the
    shims go on to record their jobs' ends."""
    from runner.prepare import ShimLauncher

    launcher = ShimLauncher()
    slow = launch(tmp_path / "slow", [SH, "-c", "sleep 1; echo late; exit 7"])
    fast = launch(tmp_path / "fast", [SH, "-c", "echo quick"])
    pids = [launcher.spawn(slow), launcher.spawn(fast)]
    serving = launcher.proc.pid
    deadline = time.time() + 30
    while not (slow / "child.json").exists() and time.time() < deadline:  # written once its session is made
        time.sleep(0.01)
    assert pids[0] != serving and os.getsid(pids[0]) == pids[0], "the shim leads a session of its own"
    launcher.close()  # what the daemon's death does to it: stdin at EOF
    assert not os.path.exists(f"/proc/{serving}") or open(f"/proc/{serving}/stat").read().split()[2] == "Z"
    deadline = time.time() + 30
    while not (slow / "exit.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    assert json.loads((slow / "exit.json").read_text())["exit_code"] == 7 and (slow / "output.log").read_text() == "late\n"
    assert json.loads((fast / "exit.json").read_text())["exit_code"] == 0
    assert json.loads((slow / "child.json").read_text())["shim_pid"] == pids[0]
    again = launch(tmp_path / "again", [SH, "-c", "exit 0"])
    launcher.spawn(again)  # a new launcher is started when the old one is gone
    assert launcher.proc.pid != serving
    deadline = time.time() + 30
    while not (again / "exit.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    assert json.loads((again / "exit.json").read_text())["exit_code"] == 0
    launcher.close()


def test_a_log_past_its_cap_keeps_its_head_and_its_last_part_and_the_job_runs_on(tmp_path):
    cap = 256 << 10
    prog = "import sys\nfor i in range(30000): print(f'line {i} ' + 'x' * 90)\nprint('LAST LINE', flush=True)"
    d = launch(tmp_path / "r", [sys.executable, "-c", prog], log_max_bytes=cap)
    (d / "output.log").write_text("runner: prepared\n")
    end = run(d)
    assert end["exit_code"] == 0 and "disk_full" not in end
    data = (d / "output.log").read_bytes()
    assert len(data) <= cap + 1024, len(data)
    lines = data.decode().splitlines()
    assert lines[0] == "runner: prepared" and lines[1].startswith("line 0 ")
    cut = next(i for i, l in enumerate(lines) if "this log reached its cap ([jobs] log_max_mb = 0.25)" in l)
    assert lines[cut - 1].startswith("line ") and lines[cut - 1].endswith("x" * 90)  # cut at a line's end
    assert "bytes of output were cut here; its last" in lines[cut + 1]
    assert lines[cut + 2].startswith("line ") and lines[cut + 2].endswith("x" * 90)  # the tail from a line's start
    assert lines[-1] == "LAST LINE" and lines[-2].startswith("line 29999 ")
    numbers = [int(l.split()[1]) for l in lines[cut + 2:-1]]
    assert numbers == list(range(numbers[0], 30000))  # the last part is whole, in order


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KB tmpfs (as root; skipped where mounts are not allowed)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and mount to make a small disk")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_loses_output_but_not_the_job(small_disk, tmp_path):
    d = launch(small_disk / "r", [SH, "-c", f"head -c 700000 /dev/zero | tr '\\0' 'y'; echo; while [ ! -e {tmp_path}/go ]; "
                                            "do sleep 0.05; done; echo after-the-full-disk; exit 4"])
    proc = spawn_shim(d)
    wait_for(lambda: (small_disk / "r" / "output.log").exists() and os.statvfs(small_disk).f_bavail == 0, 20,
             what="the disk to fill")
    time.sleep(0.3)
    assert proc.poll() is None, "the shim (and its job) go on"
    (d / "output.log").write_bytes(b"")  # space again (a person cleaned up)
    (tmp_path / "go").touch()
    assert proc.wait(timeout=30) == 0
    end = json.loads((d / "exit.json").read_text())
    assert end["exit_code"] == 4, end
    assert end["disk_full"] == {"folder": str(d), "free_bytes": end["disk_full"]["free_bytes"], "log": True}
    text = (d / "output.log").read_text()
    assert "bytes of output were lost here: the disk holding this log was full\nafter-the-full-disk\n" in text, text[-300:]


def test_a_job_that_says_its_disk_is_full_is_told_apart(small_disk, tmp_path):
    work = small_disk / "work"
    work.mkdir()
    prog = f"open({str(work / 'big')!r}, 'wb').write(b'z' * (1 << 20))"
    end = run(launch(tmp_path / "r", [sys.executable, "-c", prog], cwd=str(work), env={"PATH": "/usr/bin:/bin", "TMPDIR": str(work)}))
    assert end["exit_code"] == 1 and end["disk_full"]["folder"] == str(work) and end["disk_full"]["log"] is False
    assert "No space left on device" in (tmp_path / "r" / "output.log").read_text()
    ok = run(launch(tmp_path / "ok", [SH, "-c", "echo 'No space left on device (just words)'; exit 2"]))
    assert ok["exit_code"] == 2 and ok["disk_full"]["folder"] == str(tmp_path / "ok")  # said: the fullest of its folders
    fine = run(launch(tmp_path / "fine", [SH, "-c", "echo fine; exit 2"]))
    assert "disk_full" not in fine



def test_a_log_that_refuses_writes_loses_output_not_the_job(tmp_path):
    # the shim itself limited to 100 kB a file (RLIMIT_FSIZE): past it every write of the log fails
    # with EFBIG, as when a job sets its own log's size to the filesystem's largest. The relay goes on
    # (a relay that stopped left the job blocked on a full pipe, never ending)
    import resource

    d = launch(tmp_path / "r", [SH, "-c", "head -c 400000 /dev/zero | tr '\\0' 'y'; echo; echo done; exit 0"])
    proc = subprocess.Popen([sys.executable, "-I", "-S", str(Path("runner/shim.py").resolve()), str(d)],
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000)))
    assert proc.wait(timeout=30) == 0
    end = json.loads((d / "exit.json").read_text())
    assert end["exit_code"] == 0 and "disk_full" not in end, end
    assert (d / "output.log").stat().st_size <= 100_000
