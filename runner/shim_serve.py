"""The warm launcher: `python -I -S shim_serve.py`, started once by the local backend's daemon
(runner/backends/local_launcher.py) in a session of its own. For each RUN_DIR line on stdin it forks
a shim that leads a new session and runs that job, and answers the shim's pid on stdout; at EOF (the
daemon gone) it exits, and its shims go on.

The loop is the C shim's (runner/_shim_c.c), whose forked shims run no Python; where that module is
not built, or RUNNER_SHIM=python, it is runner/shim.py's serve(). This file imports nearly nothing,
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
    c = load_c()
    if c is None:
        return load_shim().serve()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # its shims are reaped by the kernel
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    c.serve()
    return 0


if __name__ == "__main__":
    sys.exit(serve())
