"""The one compiled part: the generic log parser's batch loop in C (log_parsers/_generic_c.c), built
where a C compiler and Python's headers are found. Optional: without them the build goes on and every
line is parsed in Python, as before (the same points, ~10x slower). Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("log_parsers._generic_c", ["log_parsers/_generic_c.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"])])
