"""MLflow export throughput: a job with 100,000 metric points mirrored to a real `mlflow server`
(SQLite backend, loopback), beside what a user would do by hand, MLflow's own client logging the
same points in batches of 1,000 (`MlflowClient.log_batch`), in the same run on the same server.

    python bench/bench_mlflow.py [--points 100000] [--repeats 3]

Three figures, each over the repeats (median (min-max)):
- the mirror alone: runner's exporter sending a stored job's points (what catching up costs);
- end to end: a job printing the points through the daemon (parse, store, export), from submit
  until MLflow holds every point;
- MLflow's client by hand: the same points, built in memory, sent with log_batch.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import ROOT, Daemon, cli, commit, free_port, machine, spread, table, tmp_home

LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Server:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="runner-bench-mlflow-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mlflow = subprocess.run(["bash", str(ROOT / "scripts" / "mlflow-server.sh"), "venv"], capture_output=True,
                                     text=True, check=True).stdout.strip()

    def __enter__(self):
        self.proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "mlflow-server.sh"), "start", str(self.dir), str(self.port)],
                                     stdout=open(self.dir / "log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.time()
        while time.time() - t0 < 180:
            try:
                LOOPBACK.open(self.url + "/health", timeout=2)
                return self
            except OSError:
                time.sleep(0.25)
        raise RuntimeError("mlflow server did not start")

    def __exit__(self, *a):
        os.killpg(self.proc.pid, signal.SIGKILL)

    def count(self, run_id: str, keys) -> int:
        n = 0
        for k in keys:
            url = f"{self.url}/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key={k}&max_results=100000"
            n += len(json.loads(LOOPBACK.open(url, timeout=60).read()).get("metrics", []))
        return n


def job_code(points: int) -> str:
    lines = points // 4
    return (f"import sys\nw = sys.stdout.write\nfor s in range({lines}):\n"
            f"    w(f'epoch {{s // 1000}} step {{s}} loss={{1 / (s + 1):.6f}} acc={{s % 97 / 97:.4f}} lr=0.01 grad_norm={{s % 13}}.5\\n')\n")


def config(home: Path, url: str, experiment: str):
    (home / "config.toml").write_text(f'[mlflow]\ntracking_uri = "{url}"\nexperiment = "{experiment}"\ninterval_seconds = 0.1\n')


def end_to_end(server: Server, points: int, rep: int) -> tuple[float, float, str]:
    """Submit a job printing `points` points; (seconds until MLflow holds all, seconds of the job itself, job id)."""
    sys.path.insert(0, str(ROOT))
    from runner.store import Store

    home = tmp_home()
    config(home, server.url, f"bench-e2e-{rep}")
    with Daemon(home, "--http", "none"):
        t0 = time.perf_counter()
        jid = cli(home, "submit", "--name", "points", "--", sys.executable, "-c", job_code(points)).stdout.strip()
        store = Store(home / "runner.db", migrate=False)
        while True:
            row = store.mlflow_row(jid)
            if row and row["done"]:
                break
            time.sleep(0.05)
        total = time.perf_counter() - t0
        job = store.get_job(jid)
        held = server.count(row["run_id"], ("loss", "acc", "lr", "grad_norm"))
        assert held == store.count_metrics(jid) == points, (held, store.count_metrics(jid), points)
    return total, job["finished_at"] - job["started_at"], jid


def mirror_alone(server: Server, points: int, rep: int) -> float:
    """runner's exporter sending a stored job's points (no daemon: the MLflow exporter over a filled store)."""
    sys.path.insert(0, str(ROOT))
    from runner.home import Home
    from runner.exporters import configured, load
    from runner.store import Store

    home = tmp_home()
    config(home, server.url, f"bench-mirror-{rep}")
    h = Home(home)
    store = Store(h.db)
    now = time.time()
    store.insert_job({"id": f"bench{rep:03d}", "name": "stored", "user": "bench", "uid": os.getuid(), "kind": "command",
                      "spec": {"command": "true"}, "created_at": now, "job_dir": str(home / "jobs" / "x"), "gpus": []})
    store.transition(f"bench{rep:03d}", "preparing")
    store.transition(f"bench{rep:03d}", "running")
    rows = [(n, v, s, s // 1000) for s in range(points // 4) for n, v in
            (("loss", 1 / (s + 1)), ("acc", s % 97 / 97), ("lr", 0.01), ("grad_norm", s % 13 + 0.5))]
    for i in range(0, len(rows), 5000):
        store.add_metrics(f"bench{rep:03d}", rows[i:i + 5000], now=now + i / 1000)
    store.transition(f"bench{rep:03d}", "succeeded")
    m = load("mlflow")("mlflow", h, store, configured(h.config)["mlflow"])
    m.enrol([f"bench{rep:03d}"], f"bench-mirror-{rep}")
    t0 = time.perf_counter()
    while not m.sync(f"bench{rep:03d}"):
        pass
    took = time.perf_counter() - t0
    held = server.count(store.mlflow_row(f"bench{rep:03d}")["run_id"], ("loss", "acc", "lr", "grad_norm"))
    assert held == points, (held, points)
    return took


BY_HAND = r"""
import sys, time
from mlflow.tracking import MlflowClient
from mlflow.entities import Metric
url, points, exp = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = MlflowClient(url)
e = c.create_experiment(exp)
t0 = time.perf_counter()
run = c.create_run(e, run_name="by-hand")
now = int(time.time() * 1000)
ms = [Metric(n, v, now + s, s // 1000) for s in range(points // 4)
      for n, v in (("loss", 1 / (s + 1)), ("acc", s % 97 / 97), ("lr", 0.01), ("grad_norm", s % 13 + 0.5))]
for i in range(0, len(ms), 1000):
    c.log_batch(run.info.run_id, metrics=ms[i:i + 1000])
c.set_terminated(run.info.run_id)
print(time.perf_counter() - t0, run.info.run_id, flush=True)
"""


def by_hand(server: Server, points: int, rep: int) -> tuple[float, float]:
    """MLflow's own client (in the server's venv); (seconds sending, seconds including `import mlflow`)."""
    py = str(Path(server.mlflow).parent / "python")
    t0 = time.perf_counter()
    out = subprocess.run([py, "-c", BY_HAND, server.url, str(points), f"bench-hand-{rep}"], capture_output=True, text=True,
                         env={**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
    whole = time.perf_counter() - t0
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    took, run_id = out.stdout.split()[-2:]  # the client may print notes before
    held = server.count(run_id, ("loss", "acc", "lr", "grad_norm"))
    assert held == points, (held, points)
    return float(took), whole


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    print(f"# bench_mlflow on {machine()}; commit {commit()}")
    print(f"# {a.points:,} metric points per job (4 metrics); figures: median (min-max) over {a.repeats} repeats")
    with Server() as server:
        alone, e2e, job_s, hand, hand_whole = [], [], [], [], []
        for rep in range(a.repeats):  # interleaved, so a slow spell of the machine hits each alike
            alone.append(mirror_alone(server, a.points, rep))
            total, ran, _ = end_to_end(server, a.points, rep)
            e2e.append(total)
            job_s.append(ran)
            took, whole = by_hand(server, a.points, rep)
            hand.append(took)
            hand_whole.append(whole)
    rate = lambda ts: spread([a.points / t for t in ts], 1, "{:,.0f}")  # noqa: E731
    table("MLflow export: runner's mirror beside MLflow's own client", [
        ("runner's mirror: a stored job's points to MLflow", rate(alone) + " points/s", spread(alone, 1, "{:.2f}") + " s"),
        ("runner end to end: submit until MLflow holds every point", rate(e2e) + " points/s",
         spread(e2e, 1, "{:.2f}") + f" s (the job itself ran {spread(job_s, 1, '{:.2f}')} s)"),
        ("by hand: MlflowClient.log_batch, 1,000 a call", rate(hand) + " points/s",
         spread(hand, 1, "{:.2f}") + f" s ({spread(hand_whole, 1, '{:.2f}')} s with `import mlflow` and the client's start)"),
    ], headers=("figure", "throughput", "time"))


if __name__ == "__main__":
    main()
