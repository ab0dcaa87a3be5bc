"""runner on a Slurm cluster beside `sbatch` by hand, on the two-node loopback cluster of
scripts/slurm-cluster.sh (run as root), in one run:

- submit-to-start: from running the command (`runner submit`, or `sbatch --wrap`) to the job's
  first instruction, and from the command's return;
- the daemon's polling cost with 1,000 jobs in Slurm: one `slurm.poll` (one squeue for all of
  them) beside asking squeue once per job, as a loop by hand would.

    python bench/bench_slurm.py [--jobs 20] [--held 1000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Daemon, cli, commit, machine, pct, spread, table, tmp_home


def start_of(path: Path, timeout=60.0) -> float:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            text = path.read_text().split("\n", 1)[0].strip()
            if text:
                return float(text)
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    raise RuntimeError(f"{path} never written")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--held", type=int, default=1000)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_slurm starts a Slurm cluster: run it as root")
    print(f"# bench_slurm on {machine()}; commit {commit()}")
    print("# latencies: p50 (p10-p90) over the jobs; poll times: median (min-max) over 10 polls")
    cdir = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    os.chmod(cdir, 0o755)
    subprocess.run(["bash", str(ROOT / "scripts" / "slurm-cluster.sh"), "start", str(cdir)], check=True, capture_output=True)
    env = {**os.environ, "SLURM_CONF": str(cdir / "slurm.conf")}
    os.environ["SLURM_CONF"] = env["SLURM_CONF"]
    try:
        home = tmp_home()
        (home / "config.toml").write_text('[backend]\nkind = "slurm"\npoll_seconds = 0.2\n')
        work = Path(tempfile.mkdtemp(prefix="bench-slurm-work-"))
        typed, ret = [], []
        with Daemon(home, "--http", "none"):
            for i in range(a.jobs):
                out = work / f"r{i}"
                t0 = time.time()
                cli(home, "submit", "--workdir", str(work), "--", "sh", "-c", f"date +%s.%N > {out}", env={"SLURM_CONF": env["SLURM_CONF"]})
                t1 = time.time()
                s = start_of(out)
                typed.append(s - t0)
                ret.append(s - t1)
        htyped, hret = [], []
        for i in range(a.jobs):
            out = work / f"h{i}"
            t0 = time.time()
            subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", f"--wrap=date +%s.%N > {out}"], env=env, check=True,
                           capture_output=True)
            t1 = time.time()
            s = start_of(out)
            htyped.append(s - t0)
            hret.append(s - t1)
        # the polling cost with many jobs in Slurm's queue
        ids = []
        for _ in range(a.held):
            ids.append(subprocess.run(["sbatch", "--parsable", "--hold", "-o", "/dev/null", "--wrap=true"], env=env, check=True,
                                      capture_output=True, text=True).stdout.strip())
        sys.path.insert(0, str(ROOT))
        from runner.backends import slurm_cli as slurm

        polls = []
        for _ in range(10):
            t0 = time.perf_counter()
            view = slurm.poll(ids)
            polls.append(time.perf_counter() - t0)
        assert len(view) == len(ids), (len(view), len(ids))
        sample = ids[:50]
        t0 = time.perf_counter()
        for i in sample:
            subprocess.run(["squeue", "-h", "-j", i, "-o", "%T"], env=env, capture_output=True, check=True)
        per_job = (time.perf_counter() - t0) / len(sample)
        subprocess.run(["scancel", *ids], env=env, capture_output=True)
    finally:
        subprocess.run(["bash", str(ROOT / "scripts" / "slurm-cluster.sh"), "stop", str(cdir)], capture_output=True)

    def p(v):
        return f"{1000 * pct(v, 50):.0f} ms ({1000 * pct(v, 10):.0f}-{1000 * pct(v, 90):.0f})"

    table("runner on Slurm beside sbatch by hand", [
        (f"typed-to-start ({a.jobs} jobs)", p(typed), p(htyped)),
        (f"from the command's return to start ({a.jobs} jobs)", p(ret), p(hret)),
        (f"one poll of {a.held:,} jobs in Slurm (runner: one squeue for all)", spread(polls, 1000, "{:.0f}") + " ms",
         f"one squeue per job: {1000 * per_job:.1f} ms each, {per_job * a.held:.1f} s for {a.held:,}"),
    ], headers=("figure", "runner + Slurm", "by hand"))


if __name__ == "__main__":
    main()
