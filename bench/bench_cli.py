"""Where the time of `runner ls` and `runner submit` goes (#30: ls <= 100 ms at 100,000 jobs,
submit <= 80 ms): the wall time of the real command beside a bare interpreter, and the same
steps timed inside one instrumented process: interpreter start, importing runner.cli, building the
argument parser, parsing, importing the verb's module, and the verb's own work (for ls: the store's
queries and the printing; for submit: the spec's check and the spool write). Submit is timed twice:
`runner submit -- /bin/true` and `runner submit job.yaml` (a sweep's job file: a command, GPUs, a
time limit, a variable, checkpoints, a priority).

    python bench/bench_cli.py [--home DIR] [--reps 15] [--root CHECKOUT]

--home: a state folder to list (e.g. one bench_scale-style store of 100,000 jobs; default: an
empty one; submit always writes to a fresh empty home so the measured store is left as it was);
--root: another checkout of runner to time the same way (the figures before a change).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, spread, tmp_home

# One process that runs main()'s steps one by one with a clock between them (the same calls main
# makes), and times the verb's inner work by wrapping the functions it calls.
STEPS = r"""
import sys, time
t = [time.perf_counter()]
import runner.cli as c
t.append(time.perf_counter())
argv = sys.argv[1:]
import inspect
p = c.build_parser(argv) if inspect.signature(c.build_parser).parameters else c.build_parser()
t.append(time.perf_counter())
cmd = []
if "--" in argv:
    i = argv.index("--"); argv, cmd = argv[:i], argv[i + 1:]
args = p.parse_args(argv)
if cmd:
    args.command = cmd
t.append(time.perf_counter())
import importlib
mod = importlib.import_module(c.VERBS[args.verb][0])
t.append(time.perf_counter())
inner = {}
def wrap(modname, name):
    m = importlib.import_module(modname)
    f = getattr(m, name)
    key = modname.rsplit(".", 1)[-1] + "." + name
    def w(*a, **k):
        t0 = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            inner[key] = inner.get(key, 0) + time.perf_counter() - t0
    setattr(m, name, w)
wrap("runner.cli.jobs", "home"); wrap("runner.cli.jobs", "store")
if args.verb == "ls":
    wrap("runner.queries", "list_jobs"); wrap("runner.queries", "count_jobs"); wrap("runner.cli.jobs", "table")
else:
    t0 = time.perf_counter()
    try:  # runner submit's own check (#30); before it, runner.resolve imported runner.spec and pydantic
        import runner.specfast
        check = "runner.specfast"
    except ImportError:
        check = "runner.spec"
    import runner.resolve
    inner["import the spec check"] = time.perf_counter() - t0
    wrap(check, "parse_spec"); wrap("runner.writes", "submit"); wrap("runner.spool", "submit")
    wrap("runner.specfile", "load_spec_file")
out = sys.stdout
sys.stdout = open("/dev/null", "w")
getattr(mod, c.VERBS[args.verb][1])(args)
sys.stdout.flush()
t.append(time.perf_counter())
sys.stdout = out
import json
print(json.dumps({"steps": [b - a for a, b in zip(t, t[1:])], "inner": inner, "pydantic": "pydantic" in sys.modules}))
"""


def run(root: Path, home: Path, args, code=None):
    env = {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "runner", *args]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{cmd}: {r.returncode}\n{r.stderr}")
    CPU.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)  # what it costs on a quiet host, near enough
    return wall, r.stdout


CPU: list = []


JOB = """name: sweep-lr-0.1
command: [python3, train.py, --lr, "0.1"]
resources: {gpus: 1, gpu_memory_gb: 12, time_limit: 3600}
env_vars: {OMP_NUM_THREADS: "4"}
checkpoints: [ckpt/*.pt]
priority: 5
"""
"""The job file of `runner submit job.yaml`: one job of a sweep."""

VERBS = ("ls", "submit", "submit job.yaml")


def measure(roots: dict, ls_home: Path, submit_home: Path, reps: int) -> dict:
    res = {label: {"bare": [], **{v: [] for v in VERBS}, "cpu": {v: [] for v in ("bare", *VERBS)}, "steps": {v: [] for v in VERBS}}
           for label in roots}
    job = submit_home.parent / "sweep" / "job.yaml"  # its folder is the job's workdir
    job.parent.mkdir()
    job.write_text(JOB)
    verbs = {"ls": (ls_home, ["ls"]), "submit": (submit_home, ["submit", "--", "/bin/true"]),
             "submit job.yaml": (submit_home, ["submit", str(job)])}
    for _ in range(reps):  # interleaved, so that a change of the host's load falls on every figure alike
        for label, root in roots.items():
            out = res[label]
            out["bare"].append(run(root, submit_home, ["pass"], "pass")[0])
            out["cpu"]["bare"].append(CPU[-1])
            for verb, (home, a) in verbs.items():
                out[verb].append(run(root, home, a)[0])
                out["cpu"][verb].append(CPU[-1])
                wall, text = run(root, home, a, STEPS)
                out["steps"][verb].append(json.loads(text.strip().splitlines()[-1]))
    return res


def stale_bytecode(root: Path) -> list[str]:
    """runner's modules under root whose bytecode is missing or older than the source: with
    PYTHONDONTWRITEBYTECODE set every command compiles them again (~15 ms of `runner submit`)."""
    import importlib.util

    out = []
    for src in sorted((root / "runner").rglob("*.py")):
        pyc = Path(importlib.util.cache_from_source(str(src)))
        try:
            head = pyc.read_bytes()[:16]
        except FileNotFoundError:
            out.append(str(src.relative_to(root)))
            continue
        st = src.stat()
        flags = int.from_bytes(head[4:8], "little")
        if flags == 0 and (int.from_bytes(head[8:12], "little") != int(st.st_mtime) & 0xFFFFFFFF
                           or int.from_bytes(head[12:16], "little") != st.st_size & 0xFFFFFFFF):
            out.append(str(src.relative_to(root)))
    return out


def report(label: str, m: dict):
    ms = lambda v: spread(v, 1000.0, "{:.1f}") + " ms"  # noqa: E731
    print(f"\n## {label}\n")
    print(f"bare `python -c pass`: {ms(m['bare'])} wall, {ms(m['cpu']['bare'])} CPU (user + sys)")
    names = ("import runner.cli", "build the parser", "parse argv", "import the verb's module", "the verb")
    for verb in VERBS:
        st = m["steps"][verb]
        loaded = {s.get("pydantic") for s in st}
        print(f"\nrunner {verb}{' -- /bin/true' if verb == 'submit' else ''}: {ms(m[verb])} wall, {ms(m['cpu'][verb])} CPU "
              f"(the real command){'; pydantic loaded' if True in loaded else ''}")
        for i, n in enumerate(names):
            print(f"  {n:<28}{ms([s['steps'][i] for s in st])}")
        for k in sorted(st[0]["inner"]):
            print(f"    of which {k:<31}{ms([s['inner'].get(k, 0) for s in st])}")
        rest = [w - sum(s["steps"]) for w, s in zip(m[verb], st)]
        print(f"  {'the rest (start, site, exit)':<28}{ms(rest)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, default=None, help="state folder to list (default: an empty one)")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--root", type=Path, default=None, help="another checkout of runner, timed the same way")
    a = ap.parse_args()
    from common import commit, machine

    ls_home = a.home or tmp_home()
    submit_home = tmp_home()
    print(f"# bench_cli on {machine()}; commit {commit()}; PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')}")
    print(f"# ls of {ls_home}; medians (min-max) of {a.reps} runs; load average before: {os.getloadavg()[0]:.1f}")
    roots = {"this checkout": ROOT, **({str(a.root): a.root.resolve()} if a.root else {})}
    for label, root in roots.items():
        stale = stale_bytecode(root)
        if stale:
            print(f"# {label}: {len(stale)} of runner's modules without current bytecode (`python -m compileall runner` "
                  f"first): {', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''}")
    res = measure(roots, ls_home, submit_home, a.reps)
    for label, m in res.items():
        report(label, m)
    print(f"\n# load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
