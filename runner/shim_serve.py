"""The warm launcher: `python -I -S shim_serve.py`, started once by the local backend's daemon
(runner/backends/local_launcher.py) in a session of its own. For each RUN_DIR line on stdin it forks
a shim that leads a new session and runs that job, and answers the shim's pid on stdout; at EOF (the
daemon gone) it exits, and its shims go on.

The loop is the C shim's (runner/_shim_c.c), whose forked shims run no Python; where that module is
not built, or RUNNER_SHIM=python, the one below, whose forks run runner/shim.py's main(). This file imports nearly nothing,
on purpose: a fork copies the launcher's page tables and its exit unmaps them, so every module here
is paid by every job (a fork and exit of an interpreter that imported shim.py's modules cost 0.64 ms
of CPU, of a bare one 0.26 ms: docs/bench/drain.md). Standard library only, no site-packages.
"""

import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def load_c():
    """runner/_shim_c (the shim in C), loaded by its path (the launcher and the shim run outside
    the package); None where it is not built, or where RUNNER_SHIM=python asks for shim.py's."""
    if os.environ.get("RUNNER_SHIM") == "python":
        return None
    from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader
    from importlib.util import module_from_spec, spec_from_loader

    for suffix in EXTENSION_SUFFIXES:
        path = os.path.join(HERE, "_shim_c" + suffix)
        if os.path.exists(path):
            try:
                loader = ExtensionFileLoader("_shim_c", path)
                mod = module_from_spec(spec_from_loader("_shim_c", loader))
                loader.exec_module(mod)
                return mod
            except ImportError:
                return None
    return None


def load_shim():
    """runner/shim.py, loaded by its path."""
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("runner_shim", os.path.join(HERE, "shim.py"))
    mod = module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def serve() -> int:
    """The loop. Its shims do not depend on it: when the daemon goes (stdin at EOF) it exits and the
    running shims go on, each its own session, as those started one by one do."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # its shims are reaped by the kernel
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    c = load_c()
    if c is not None:
        c.serve()
        return 0
    # shim.py's main(), already imported, in each fork: a fork costs about a millisecond where a new
    # interpreter with its imports costs ~20 ms of CPU a job
    shim = load_shim()
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
                code = shim.main(run_dir)
            finally:
                os._exit(code)
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(serve())
