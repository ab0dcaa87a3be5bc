"""The compiled parts, each built where a C compiler and Python's headers are found, each optional:
without them the build goes on and the same work is done in Python (the same results, slower):
- the generic log parser's batch loop (log_parsers/_generic_c.c), in a parse helper (the job's user);
- a helper's batch of points made into the store's packs and chart chunks (runner/_packs_c.c), in the
  daemon, from fixed-width numbers it decoded and checked;
- the shim (runner/_shim_c.c), forked by the local backend's warm launcher for each job (runner/shim.py
  where it is not built).
Everything else is in pyproject.toml."""

from setuptools import Extension, setup

_FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
setup(ext_modules=[Extension("log_parsers._generic_c", ["log_parsers/_generic_c.c"], optional=True, extra_compile_args=_FLAGS),
                   Extension("runner._packs_c", ["runner/_packs_c.c"], optional=True, extra_compile_args=_FLAGS),
                   Extension("runner._shim_c", ["runner/_shim_c.c"], optional=True, extra_compile_args=_FLAGS)])
