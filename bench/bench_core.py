"""Core figures beside their targets and beside what a user would do instead (task-spooler, or
running by hand), in one run: submit-to-start latency, drain rate, CLI wall times, log parsing
into SQLite (lines that reach the parser and raw bytes, apart), the wall-time overhead of a fixed
amount of work, idle daemon memory. Prints the machine, the commit and each figure's spread.

    python bench/bench_core.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Daemon, cli, commit, free_port, machine, median, pct, spread, table, tmp_home, wait_healthy


class Tsp:
    """task-spooler (Debian's `tsp`), the queue a user would otherwise pick, on a socket of its own."""

    def __init__(self, slots: int):
        self.dir = Path(tempfile.mkdtemp(prefix="bench-tsp-"))
        self.env = {**os.environ, "TS_SOCKET": str(self.dir / "sock"), "TMPDIR": str(self.dir), "TS_MAXFINISHED": "100000"}
        self.run("-S", str(slots))

    def run(self, *args) -> str:
        return subprocess.run(["tsp", *args], env=self.env, capture_output=True, text=True, check=True).stdout.strip()

    def close(self):
        subprocess.run(["tsp", "-K"], env=self.env, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)  # its socket and each job's output file


def submit_to_start(n: int):
    """From the submit command's return to the job's first instruction, through runner and tsp."""
    home = tmp_home()
    lat, typed = [], []
    with Daemon(home, "--http", "none"):
        for i in range(n):
            t_typed = time.time()
            r = cli(home, "submit", "--", "/bin/sh", "-c", "date +%s.%N")
            t_ret = time.time()
            jid = r.stdout.strip()
            log = home / "run" / jid / "output.log"
            while True:
                try:  # the job's first line; runner's own notes ("runner: ...") may come before it
                    first = next((l for l in log.read_text().splitlines() if l.strip() and not l.startswith("runner:")), "")
                    if first.strip():
                        break
                except FileNotFoundError:
                    pass
                time.sleep(0.001)
            lat.append(float(first) - t_ret)
            typed.append(float(first) - t_typed)
    tsp = Tsp(4) if shutil.which("tsp") else None
    tlat = []
    if tsp:
        try:
            for i in range(n):
                out = tsp.dir / f"start{i}"
                tsp.run("/bin/sh", "-c", f"date +%s.%N > {out}")
                t_ret = time.time()
                while not out.exists() or not out.read_text().strip():
                    time.sleep(0.001)
                tlat.append(float(out.read_text()) - t_ret)
        finally:
            tsp.close()
    return lat, tlat, typed


KEPT: list[Path] = []
"""Drain rounds' folders, removed when the bench ends (`cleanup`), not between rounds: on a filesystem
without a journal (this host's ext4) every file made scans the inodes deleted in the last minutes, and
one round's 10,000 removed files would be paid by the next round's jobs."""


def cleanup():
    while KEPT:
        shutil.rmtree(KEPT.pop(), ignore_errors=True)


def _busy() -> float:
    """CPU seconds the whole machine spent busy so far (all but idle, iowait and steal)."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq


def create_cost(where: Path, n: int = 300) -> float:
    """CPU microseconds to make one empty file at `where` (its filesystem's cost of a new inode), the
    median of 3 batches; the files are removed with the drain rounds' folders."""
    d = Path(tempfile.mkdtemp(prefix="bench-creates-", dir=where))
    KEPT.append(d)
    got = []
    for b in range(3):
        t = time.process_time()
        for i in range(n // 3):
            os.close(os.open(d / f"{b}-{i}", os.O_CREAT | os.O_WRONLY, 0o600))
        got.append((time.process_time() - t) / (n // 3) * 1e6)
    return median(got)


def filesystem(path: Path) -> str:
    """The type of the filesystem holding path (the longest mount point above it)."""
    import psutil

    above = [p for p in psutil.disk_partitions(all=True) if (str(path) + "/").startswith(p.mountpoint.rstrip("/") + "/")]
    return max(above, key=lambda p: len(p.mountpoint)).fstype if above else "?"


def _phases(home: Path, slots: int, n: int, wall: float) -> dict:
    """Where a slot's time went, from the store and each job's exit.json (medians, ms): claimed to its
    row running (prepare, launch.json, the shim forked), the shim's own start to end (the sandbox set
    up, the program, its exit), and the whole cycle of a slot (slots x wall / jobs); what is left of
    the cycle is the job's end seen, reaped and the next one claimed."""
    import json
    import sqlite3

    c = sqlite3.connect(home / "runner.db")
    at = {}
    for jid, state, t in c.execute("SELECT job_id, to_state, at FROM transitions WHERE to_state IN ('preparing', 'running')"):
        at.setdefault(jid, {})[state] = t
    c.close()
    claim, shim = [], []
    for jid, d in at.items():
        if "preparing" in d and "running" in d:
            claim.append(d["running"] - d["preparing"])
        try:
            e = json.loads((home / "run" / jid / "exit.json").read_text())
            shim.append(e["finished_at"] - e["started_at"])
        except (OSError, ValueError, KeyError):
            pass
    return {"claim": 1000 * median(claim), "shim": 1000 * median(shim), "cycle": 1000 * slots * wall / n}


def drain(n: int, slots: int = 4, via: str = "cli", sandbox: bool = True, detail: dict | None = None):
    """Jobs per second through `slots` slots for a sweep of n trivial jobs, from the sweep's first
    submit to its last job's end, with a warm (idle) queue; runner's daemon with the sandbox on
    where bubblewrap is. Like is compared with like:

    via="cli": each side's command line, one process per job as a shell loop would run them
    (`runner submit -- /bin/true` n times; `tsp /bin/true` n times, then `tsp -w`): (runner, tsp).
    via="library": runner's spool.submit from the sweep's own process, as a Python script would
    (tsp has no library to compare): (runner, None).
    sandbox=False: the daemon runs without bubblewrap (RUNNER_NO_BWRAP), as on a host without it.
    `detail`: a dict to fill with where the time went (CPU per job, the whole machine's and the
    daemon's; a slot's cycle: see _phases).
    """
    from runner import spool
    from runner.home import Home
    from runner.store import Store

    home = tmp_home()
    h = Home(home).ensure()
    with Daemon(home, "--http", "none", "--max-running", str(slots), env={"RUNNER_NO_BWRAP": None if sandbox else "1"}) as d:
        s = Store(home / "runner.db")
        import psutil

        proc = psutil.Process(d.proc.pid)
        busy0, daemon0 = _busy(), sum(proc.cpu_times()[:2])
        t0 = time.time()
        for _ in range(n):
            if via == "library":
                spool.submit(h, {"command": ["/bin/true"], "env": "system", "workdir": str(home.parent), "network": True})
            else:
                r = cli(home, "submit", "--env", "system", "--workdir", home.parent, "--", "/bin/true")
                assert r.returncode == 0, r.stderr
        while s.count_by_state().get("succeeded", 0) < n:
            time.sleep(0.01)
        dt = time.time() - t0
        if detail is not None:
            detail.update(cpu=1000 * (_busy() - busy0) / n, daemon=1000 * (sum(proc.cpu_times()[:2]) - daemon0) / n,
                          **_phases(home, slots, n, dt))
    KEPT.append(home.parent)
    rate = n / dt
    if via == "library" or not shutil.which("tsp"):
        return rate, None
    tsp = Tsp(slots)
    try:
        t0 = time.time()
        for _ in range(n):
            last = tsp.run("/bin/true")
        tsp.run("-w", last)
        trate = n / (time.time() - t0)
    finally:
        tsp.close()
    return rate, trate


def shim_kind() -> str:
    """Which shim the daemon's launcher forks here (runner/shim.py's run())."""
    from runner.shim_serve import load_c

    if load_c() is not None:
        return "the C one (runner/_shim_c)"
    return f"shim.py's main() ({'RUNNER_SHIM=python' if os.environ.get('RUNNER_SHIM') == 'python' else 'runner/_shim_c is not built'})"


def drain_rows(sweep: int) -> list[tuple]:
    """bench_core --only drain: 3 rounds with the sandbox on (where bubblewrap is) and 3 off, each
    with where its time went."""
    from runner.sandbox import bwrap_path

    where = Path(tempfile.gettempdir())
    print(f"# drain rounds' folders in {where} ({filesystem(where)}): a new file there costs "
          f"{create_cost(where):.0f} us of CPU now (a tmpfs: ~10)")
    print(f"# the shim: {shim_kind()}")
    rows = []
    for label, on, target in (("sandbox on", True, 250), ("sandbox off", False, 500)):
        if on and not bwrap_path():
            rows.append((f"{label}: no bubblewrap here", "—", "", f">= {target}/s", False))
            continue
        rates, det = [], []
        for _ in range(3):
            det.append({})
            rates.append(drain(sweep, via="library", sandbox=on, detail=det[-1])[0])
        rows.append((f"jobs drained per second, a sweep of {sweep:,} `/bin/true` jobs submitted through runner's library, "
                     f"4 slots, {label} (3 rounds)", spread(rates, fmt="{:.0f}") + "/s", "", f">= {target}/s", median(rates) >= target))

        def col(k):
            return spread([x[k] for x in det], fmt="{:.1f}") + " ms"
        rows += [("  CPU a job, the whole machine (all processes: daemon, shims, sandbox, the job, the sweep)", col("cpu"), "", "", ""),
                 ("    of which the daemon's process", col("daemon"), "", "", ""),
                 ("  a slot's cycle (4 x wall / jobs)", col("cycle"), "", "", ""),
                 ("    claimed to running (prepare, launch.json, the shim forked)", col("claim"), "", "", ""),
                 ("    the shim's start to end (sandbox set up, program, exit)", col("shim"), "", "", "")]
    return rows


def cli_times(reps: int):
    home = tmp_home()
    cli(home, "submit", "--", "true")  # creates the store
    jid = cli(home, "ls", "--json").stdout
    import json

    jid = json.loads(jid)[0]["id"]
    out = {}
    for name, args in (("runner submit", ("submit", "--", "true")), ("runner ls", ("ls",)), ("runner show", ("show", jid)),
                       ("runner --help", ("--help",))):
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            cli(home, *args)
            ts.append(time.perf_counter() - t0)
        out[name] = ts
    bare = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"])
        bare.append(time.perf_counter() - t0)
    out["bare interpreter"] = bare
    if shutil.which("tsp"):
        tsp = Tsp(1)
        try:
            for name, args in (("tsp (enqueue)", ("true",)), ("tsp -l", ("-l",))):
                ts = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    tsp.run(*args)
                    ts.append(time.perf_counter() - t0)
                out[name] = ts
        finally:
            tsp.close()
    return out


def _parse_once(data: bytes):
    from runner.store import Store
    from runner.logbatches import HelperWatcher

    home = tmp_home()
    job_dir = home / "jobs" / "bench"
    job_dir.mkdir(parents=True)
    (job_dir / "output.log").write_bytes(data)
    s = Store(home / "runner.db")
    s.insert_job({"id": "bench", "name": "b", "user": "u", "uid": 0, "kind": "command", "spec": {}, "created_at": 0, "gpus": [], "after": []})
    os.environ["PYTHONPATH"] = str(ROOT)  # the helper is this checkout's (not whichever runner the interpreter finds first)
    w = HelperWatcher("bench", job_dir, None)  # the daemon's way: a helper parses, the daemon stores
    t0 = time.perf_counter()
    points = 0
    while not w.done:
        points += w.poll(s, final=True)
    dt = time.perf_counter() - t0
    if w.deaths or w.gave_up:
        raise SystemExit(f"bench: the log's parse helper broke {w.deaths} times ({w.gave_up}): not a figure")
    w.close()
    s.close()
    shutil.rmtree(home.parent, ignore_errors=True)  # the log and the store: 190 MB a run at a million lines
    return dt, points


def parse_throughput(lines: int, reps: int = 3):
    """Two logs, each read by the watcher into SQLite `reps` times. `metrics`: every line is a
    metrics line (each reaches the parser). `progress`: a training-progress log, \\r-redrawn bars
    with ANSI colour and one metrics line per 1,000 redraws: a redraw never reaches the parser
    (the line assembler keeps only its last state), so this one is raw bytes per second."""
    import re

    metric_lines = "".join(f"step={i} loss={1.0 / (i + 1):.5f} lr=0.001 acc={i % 100 / 100:.2f}\n" for i in range(lines)).encode()
    chunks = []
    per_epoch = 1000
    for e in range(lines // per_epoch):
        for s in range(per_epoch - 1):
            chunks.append(f"\x1b[34mEpoch {e}/{lines // per_epoch}\x1b[0m {s:4d}/{per_epoch}: loss={1.0 / (s + 1):.4f} lr=0.001\r")
        chunks.append(f"\nepoch={e} train_loss=0.5 val_loss=0.4 val_acc=0.9\n")
    progress = "".join(chunks).encode()
    out = {}
    for name, data in (("metrics", metric_lines), ("progress", progress)):
        runs = [_parse_once(data) for _ in range(reps)]
        rx = re.compile(r"(\w+)=([\d.]+)")
        t1 = time.perf_counter()
        for line in data.decode().splitlines():
            rx.findall(line)
        bare = time.perf_counter() - t1
        out[name] = {"bytes": len(data), "lines_to_parser": data.count(b"\n"), "redraws": data.count(b"\r"),
                     "seconds": [r[0] for r in runs], "points": runs[0][1], "bare_seconds": bare}
    return out


def parse_rows(parse) -> list[tuple]:
    """The table rows of parse_throughput's figures."""
    m, g = parse["metrics"], parse["progress"]
    return [
        (f"parse into SQLite: metric lines ({m['lines_to_parser']:,} lines, {m['bytes'] / 1e6:.0f} MB, {m['points']:,} points)",
         spread([m["lines_to_parser"] / t for t in m["seconds"]], 1e-6, "{:.2f}") + " M lines/s",
         f"bare regex pass: {m['lines_to_parser'] / m['bare_seconds'] / 1e6:.2f} M lines/s", ">= 1.0 M lines/s",
         median([m["lines_to_parser"] / t for t in m["seconds"]]) >= 1e6),
        (f"parse into SQLite: progress log ({g['bytes'] / 1e6:.0f} MB raw, {g['redraws']:,} \\r redraws, "
         f"{g['lines_to_parser']:,} lines reach the parser, {g['points']:,} points)",
         spread([g["bytes"] / t for t in g["seconds"]], 1e-6, "{:.0f}") + " MB/s raw",
         f"bare regex pass: {g['bytes'] / g['bare_seconds'] / 1e6:.0f} MB/s", "", ""),
    ]


def parse_stages(lines: int, reps: int = 3) -> dict:
    """Where a metrics log's time goes, stage by stage, in CPU seconds of this process (a shared
    host's other work does not count): the log's lines (LineAssembler, 256 KiB batches as the
    watcher feeds them), their points (the generic parser), the store (a helper's batch on the wire
    decoded and checked as the daemon does, then record_progress: a batch's points and offset a
    transaction; the parser and the store in C where built), and a bare regex pass over the same lines. Best of `reps`."""
    import re

    from log_parsers import LineAssembler, build_parser
    from log_parsers.generic import columns
    from runner import defaults
    from runner.logbatches import decode
    from runner.store import Store

    data = "".join(f"step={i} loss={1.0 / (i + 1):.5f} lr=0.001 acc={i % 100 / 100:.2f}\n" for i in range(lines)).encode()
    step = defaults.METRICS_BATCH_BYTES
    rx = re.compile(r"(\w+)=([\d.]+)")
    out: dict = {}
    for _ in range(reps):
        t = time.process_time()
        for line in data.decode().splitlines():
            rx.findall(line)
        out.setdefault("bare regex pass", []).append(time.process_time() - t)
        t = time.process_time()
        a = LineAssembler()
        batches = [a.feed(data[i:i + step]) for i in range(0, len(data), step)]
        out.setdefault("lines (LineAssembler)", []).append(time.process_time() - t)
        p = build_parser(None)
        t = time.process_time()
        points = []
        for batch in batches:  # as a helper does: the C loop where it is built (then the points from its columns, not timed)
            got = columns(p, batch)
            if got is None:
                got = []
                for line in batch:
                    got += p.feed_line(line)
            points.append(got)
        out.setdefault("points (generic parser)", []).append(time.process_time() - t)
        # the store as the daemon stores a helper's batch: its wire decoded and checked, then record_progress (in C where built)
        wires = [_wire(b, i) for i, b in enumerate(points)]
        home = tmp_home()
        s = Store(home / "runner.db")
        s.insert_job({"id": "bench", "name": "b", "user": "u", "uid": 0, "kind": "command", "spec": {}, "created_at": 0, "gpus": [], "after": []})
        t = time.process_time()
        for i, wire in enumerate(wires):
            nl = wire.index(b"\n")
            batch = _checked(decode(wire[:nl], wire[nl + 1:], raw=True), i)
            s.record_progress("bench", batch, i, p.state())
        out.setdefault("store (record_progress)", []).append(time.process_time() - t)
        points = [b if isinstance(b, list) else _points(b) for b in points]
        s.close()
        shutil.rmtree(home.parent, ignore_errors=True)
    return {k: min(v) for k, v in out.items()} | {"lines": lines, "points": sum(map(len, points))}


def _checked(got, offset: int):
    """The points of a decoded batch as check_batch gives them to the store (Packed where the C part is built)."""
    from runner.logbatches import check_batch

    msg, types = got
    return check_batch(msg, offset, None, types)[0]


def _wire(batch, offset: int) -> bytes:
    """A helper's batch on the wire (runner.logparse): of the C loop's columns, or of points (name, value, step, epoch)."""
    from runner.logparse import encode, encode_columns

    head = {"offset": offset, "state": {}, "done": False}
    if not isinstance(batch, list):
        return encode_columns(dict(head, keys=batch[0]), *batch[1:])
    keys: dict = {}
    k = [keys.setdefault(p[0], len(keys)) for p in batch]
    return encode(dict(head, keys=list(keys)), k, *([p[c] for p in batch] for c in (1, 2, 3)))


def _points(cols) -> list[tuple]:
    """(name, value, step, epoch) points of log_parsers.generic.columns' bytes."""
    from array import array

    keys, n, k, v, s, e = cols
    k, v, s, e = (array(c, b).tolist() for c, b in zip("Idqq", (k, v, s, e)))
    return [(keys[i], v[j], None if s[j] < 0 else s[j], None if e[j] < 0 else e[j]) for j, i in enumerate(k)]


def stage_rows(st) -> list[tuple]:
    """Table rows of parse_stages."""
    names = ("lines (LineAssembler)", "points (generic parser)", "store (record_progress)")  # (the parser and the store: in C where built)
    total = sum(st[k] for k in names)
    rows = [(k, f"{st[k]:.2f} s", f"{st['lines'] / st[k] / 1e6:.2f} M lines/s", f"{100 * st[k] / total:.0f} %") for k in names]
    rows.append((f"all three ({st['points']:,} points)", f"{total:.2f} s", f"{st['lines'] / total / 1e6:.2f} M lines/s", ""))
    rows.append(("bare regex pass (the same lines)", f"{st['bare regex pass']:.2f} s", f"{st['lines'] / st['bare regex pass'] / 1e6:.2f} M lines/s", ""))
    return rows


def store_forms(points: int = 300_000, reps: int = 3) -> dict:
    """Points a second that SQLite takes in each storage form a store could give metric points, from
    the same points (3 metrics a line, as `step=N loss=X lr=Y acc=Z`), in the same transactions as
    the watcher's (a 256 KiB batch of log, ~6,000 points, a transaction), on a file with WAL as the
    store has it. The first is the store (runner.store.metrics: packs of points, their
    indexes and the chart chunks' roll-up); the others are bare SQL, to say what a schema
    change could buy: without the roll-up, without the index, a table clustered on the index's key
    (WITHOUT ROWID), and points packed a row per (job, metric, batch) as arrays. Wall seconds over
    `reps` rounds (median and range); the file's size a point (the smallest of the rounds)."""
    import array
    import sqlite3
    from itertools import chain

    from runner.store import Store

    names = ("loss", "lr", "acc")
    pts = [(names[i % 3], 1.0 / (i + 1), i // 3, 1) for i in range(points)]
    batch = 6000
    per = 100
    one = "(?1,?{},?{},?{},?{},?2)"
    rows_sql = "INSERT INTO metrics (job_id, name, value, step, epoch, at) VALUES " + ",".join(
        one.format(3 + 4 * k, 4 + 4 * k, 5 + 4 * k, 6 + 4 * k) for k in range(per))

    def by_rows(c, b):
        for i in range(0, len(b), per):
            c.execute(rows_sql, ["bench", 0.0, *chain.from_iterable(b[i:i + per])])

    ids = [0]
    wr_sql = "INSERT INTO metrics (job_id, name, id, value, step, epoch, at) VALUES " + ",".join(
        f"(?1,?{3 + 5 * k},?{4 + 5 * k},?{5 + 5 * k},?{6 + 5 * k},?{7 + 5 * k},?2)" for k in range(per))

    def clustered(c, b):
        for i in range(0, len(b), per):
            args = []
            for n, v, st, e in b[i:i + per]:
                ids[0] += 1
                args += (n, ids[0], v, st, e)
            c.execute(wr_sql, ["bench", 0.0, *args])

    def packed(c, b):
        by: dict = {}
        for n, v, st, e in b:
            by.setdefault(n, []).append((v, st, e))
        c.executemany("INSERT INTO packed (job_id, name, n, v, s, e, at) VALUES (?,?,?,?,?,?,?)",
                      [("bench", n, len(l), array.array("d", [x[0] for x in l]).tobytes(), array.array("q", [x[1] for x in l]).tobytes(),
                        array.array("q", [x[2] for x in l]).tobytes(), 0.0) for n, l in by.items()])

    table_sql = "CREATE TABLE metrics (id INTEGER PRIMARY KEY, job_id TEXT, name TEXT, value REAL, step INTEGER, epoch INTEGER, at REAL)"
    forms = {
        "row a point, no index": ([table_sql], by_rows),
        "row a point, the (job_id, name, id) index": ([table_sql, "CREATE INDEX ix ON metrics (job_id, name, id)"], by_rows),
        "row a point, clustered on (job_id, name, id) (WITHOUT ROWID)": (
            ["CREATE TABLE metrics (job_id TEXT, name TEXT, id INTEGER, value REAL, step INTEGER, epoch INTEGER, at REAL, "
             "PRIMARY KEY (job_id, name, id)) WITHOUT ROWID"], clustered),
        "packed: a row per (job, metric, batch), arrays of values, steps, epochs; indexed": (
            ["CREATE TABLE packed (id INTEGER PRIMARY KEY, job_id TEXT, name TEXT, n INTEGER, v BLOB, s BLOB, e BLOB, at REAL)",
             "CREATE INDEX ix ON packed (job_id, name, id)"], packed),
    }
    out: dict = {}
    for _ in range(reps):
        home = tmp_home()
        st = Store(home / "runner.db")
        st.insert_job({"id": "bench", "name": "b", "user": "u", "uid": 0, "kind": "command", "spec": {}, "created_at": 0, "gpus": [], "after": []})
        t = time.perf_counter()
        for i in range(0, len(pts), batch):
            st.record_progress("bench", pts[i:i + batch], i, None)
        dt = time.perf_counter() - t
        st.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        st.close()
        out.setdefault("the store: packs of points, their indexes, the chart chunks (record_progress)", []).append(
            (dt, os.path.getsize(home / "runner.db")))
        for k, (name, (ddl, insert)) in enumerate(forms.items()):
            path = home / f"form{k}.db"
            c = sqlite3.connect(path, isolation_level=None)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")
            for d in ddl:
                c.execute(d)
            t = time.perf_counter()
            for i in range(0, len(pts), batch):
                c.execute("BEGIN")
                insert(c, pts[i:i + batch])
                c.execute("COMMIT")
            dt = time.perf_counter() - t
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            c.close()
            out.setdefault(name, []).append((dt, os.path.getsize(path)))
        shutil.rmtree(home.parent, ignore_errors=True)
    return {"points": points, "forms": out}


def forms_rows(r) -> list[tuple]:
    """Table rows of store_forms."""
    n = r["points"]
    return [(name, spread([n / t for t, _ in v], 1e-6, "{:.2f}") + " M points/s", f"{min(b for _, b in v) / n:.0f} B a point")
            for name, v in r["forms"].items()]


WORK = """import sys, time
t0 = time.perf_counter()
n, x = int(sys.argv[1]), 0
for i in range(n):
    x += i * i % 7
    if i % 200000 == 0:
        print(f"step={i} loss={1.0 / (i + 1):.6f}", flush=True)
print(f"work_seconds={time.perf_counter() - t0:.6f}")
"""


def overhead(seconds: float, reps: int):
    """A fixed amount of work (a loop of N iterations that prints a metric line every 200,000),
    N set so that it takes `seconds` by hand; then run `reps` times by hand and through runner,
    alternating. Two wall times each: the work's own (inside the process) and end to end (by hand:
    spawn to exit; runner: the job's start to its end as the shim recorded them, so the queue's
    pickup latency, measured apart, is not counted twice)."""
    home = tmp_home()
    p = home.parent / "work.py"  # beside the state folder: a job's workdir may not be inside it
    p.write_text(WORK)
    probe = 2_000_000
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(p), str(probe)], capture_output=True)
    n = int(probe * seconds / (time.perf_counter() - t0))
    hand = {"work": [], "wall": []}
    ran = {"work": [], "wall": []}
    from runner.store import Store

    with Daemon(home, "--http", "none"):
        s = Store(home / "runner.db")
        for _ in range(reps):
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, str(p), str(n)], capture_output=True, text=True)
            hand["wall"].append(time.perf_counter() - t0)
            hand["work"].append(float(r.stdout.strip().splitlines()[-1].split("=")[1]))
            sub = cli(home, "submit", "--workdir", str(home.parent), "--", sys.executable, str(p), str(n))
            jid = sub.stdout.strip()
            assert jid, sub.stderr
            while s.get_job(jid)["state"] not in ("succeeded", "failed"):
                time.sleep(0.05)
            job = s.get_job(jid)
            assert job["state"] == "succeeded", job
            ran["wall"].append(job["finished_at"] - job["started_at"])
            ran["work"].append(float((home / "run" / jid / "output.log").read_text().strip().splitlines()[-1].split("=")[1]))
    return n, hand, ran


FLOOD = """import sys, time
n, w = int(sys.argv[1]), sys.stdout.write
t0 = time.time()
for s in range(0, n, 1000):
    w("".join(f"step={i} loss={1.0 / (i + 1):.5f} lr=0.001 acc={i % 100 / 100:.2f}\\n" for i in range(s, min(s + 1000, n))))
    sys.stdout.flush()
print(f"printed_seconds={time.time() - t0:.4f}", flush=True)
"""

PROBE = """import sys, time
end = time.time() + float(sys.argv[1])
while time.time() < end:
    print(f"probe_t={time.time():.6f}", flush=True)
    time.sleep(0.1)
"""


def live(jobs: int = 8, lines: int = 100_000):
    """Metrics from `jobs` jobs printing at once, through the real daemon (sandbox as configured):
    each prints `lines` metric lines (3 points a line, as parse_throughput's log) as fast as it can;
    meanwhile a probe job prints its own clock (`probe_t=<time>`) every 0.1 s and the bench asks the
    HTTP API (GET /jobs/ID/metrics, the reads of `runner metrics` and the dashboard's charts) every
    25 ms for new probe points: a point's delay is when the bench first saw it minus when it was
    printed. Returns the points stored per second over the flood (its first job's start to its last
    point stored), the points, the jobs' own printing seconds, and the probe's delays."""
    import json
    import threading
    import urllib.error
    import urllib.request

    from runner import spool
    from runner.home import Home
    from runner.store import Store

    home = tmp_home()
    h = Home(home).ensure()
    (home.parent / "flood.py").write_text(FLOOD)
    (home.parent / "probe.py").write_text(PROBE)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    py = os.path.realpath(sys.executable)
    spec = {"env": "system", "workdir": str(home.parent), "network": True, "parser": "generic"}
    with Daemon(home, "--http", f"127.0.0.1:{port}", "--max-running", str(jobs + 1)):
        s = Store(home / "runner.db")
        wait_healthy(base)
        probe = spool.submit(h, {**spec, "command": [py, str(home.parent / "probe.py"), "600"]})["id"]
        delays, seen, stop = [], [0], threading.Event()

        def poll():
            while not stop.is_set():
                try:
                    with urllib.request.urlopen(f"{base}/jobs/{probe}/metrics?name=probe_t&offset={seen[0]}", timeout=10) as r:
                        got = json.load(r)["metrics"]
                except OSError:
                    got = []
                now = time.time()
                delays.extend(now - p["value"] for p in got)
                seen[0] += len(got)
                time.sleep(0.025)

        deadline = time.time() + 600
        while seen[0] == 0:  # the probe runs and its points come through
            if time.time() > deadline:
                raise RuntimeError(f"the probe's points never came through (its log: {home / 'jobs' / probe})")
            try:
                with urllib.request.urlopen(f"{base}/jobs/{probe}/metrics?name=probe_t", timeout=10) as r:
                    seen[0] = json.load(r)["total"]
            except urllib.error.HTTPError:  # (not taken in yet)
                pass
            time.sleep(0.05)
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        time.sleep(1.0)
        idle = len(delays)
        ids = [spool.submit(h, {**spec, "command": [py, str(home.parent / "flood.py"), str(lines)]})["id"] for _ in range(jobs)]
        want = jobs * lines * 3
        while sum(s.count_metrics(j) for j in ids) < want + jobs:  # (+ each job's printed_seconds)
            if time.time() > deadline:
                raise RuntimeError("the flood's points were not all stored within 10 minutes")
            time.sleep(0.05)
        stored_at = time.time()
        stop.set()
        poller.join()
        starts = [s.get_job(j)["started_at"] for j in ids]
        printed = [p["value"] for j in ids for p in s.metrics(j, "printed_seconds")]
        subprocess.run([sys.executable, "-m", "runner", "cancel", probe], env={**os.environ, "RUNNER_HOME": str(home)},
                       capture_output=True)
        s.close()
    shutil.rmtree(home.parent, ignore_errors=True)
    flood = stored_at - min(starts)
    return {"rate": want / flood, "points": want, "seconds": flood, "printed": printed,
            "idle_delays": delays[:idle], "delays": delays[idle:]}


def live_rows(r, jobs, lines) -> list[tuple]:
    d, i = r["delays"], r["idle_delays"]
    return [(f"points stored per second, {jobs} jobs each printing {lines:,} metric lines at once ({r['points']:,} points)",
             f"{r['rate'] / 1e3:.0f} k points/s ({r['seconds']:.1f} s from the first start to the last point stored)",
             f"the jobs print them in {min(r['printed']):.2f}-{max(r['printed']):.2f} s", ">= 500 k points/s", r["rate"] >= 5e5),
            (f"a printed line visible through the API, during that flood ({len(d)} probe points)",
             f"p50 {1000 * pct(d, 50):.0f} ms, p95 {1000 * pct(d, 95):.0f} ms, max {1000 * max(d):.0f} ms" if d else "—", "",
             "<= 1 s p95", bool(d) and pct(d, 95) <= 1.0),
            (f"  the same, the daemon otherwise idle ({len(i)} probe points)",
             f"p50 {1000 * pct(i, 50):.0f} ms, p95 {1000 * pct(i, 95):.0f} ms" if i else "—", "", "", "")]


def idle_memory():
    import psutil

    home = tmp_home()
    with Daemon(home, "--http", "127.0.0.1:0") as d:
        time.sleep(3)
        return psutil.Process(d.proc.pid).memory_info().rss / 2**20


def _tsp_version() -> str:
    if not shutil.which("tsp"):
        return "not installed"
    r = subprocess.run(["tsp", "-V"], capture_output=True, text=True)
    return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else "installed"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    ap.add_argument("--only", choices=["parse", "drain", "live", "forms"], help="only these figures (parse: the metrics log into SQLite, and its "
                    "stages; drain: a sweep of trivial jobs through the library, sandbox on and off; live: 8 jobs printing "
                    "metrics at once, their points stored per second and a printed line's delay to the API; forms: points a "
                    "second SQLite takes in each storage form a store could give them)")
    a = ap.parse_args()
    if a.only == "drain":
        sweep = 100 if a.quick else 1000
        print(f"# bench_core (drain only) on {machine()}; commit {commit()}; load average {os.getloadavg()[0]:.1f}")
        try:
            rows = drain_rows(sweep)
        finally:
            cleanup()
        table("drain (medians (min-max) of 3 rounds; the CPU and cycle rows: medians over each round's jobs)", rows,
              headers=("figure", "runner", "alternative", "target", "ok"))
        print(f"# load average after: {os.getloadavg()[0]:.1f}")
        return
    if a.only == "live":
        jobs, lines = (8, 20_000) if a.quick else (8, 100_000)
        print(f"# bench_core (live only) on {machine()}; commit {commit()}; load average {os.getloadavg()[0]:.1f}")
        table("metrics from many jobs at once", live_rows(live(jobs, lines), jobs, lines),
              headers=("figure", "runner", "alternative", "target", "ok"))
        print(f"# load average after: {os.getloadavg()[0]:.1f}")
        return
    if a.only == "forms":
        print(f"# bench_core (store forms only) on {machine()}; commit {commit()}; load average {os.getloadavg()[0]:.1f}")
        table("metric points into SQLite, by storage form (wall: median (min-max) of 3; the same points and transactions)",
              forms_rows(store_forms(30_000 if a.quick else 300_000)), headers=("form", "rate", "file size"))
        return
    if a.only == "parse":
        print(f"# bench_core (parse only) on {machine()}; commit {commit()}; load average {os.getloadavg()[0]:.1f}")
        n = 100_000 if a.quick else 1_000_000
        table("metrics log into SQLite (wall time)", parse_rows(parse_throughput(n)), headers=("figure", "runner", "alternative", "target", "ok"))
        table("where the time goes (CPU seconds of the bench's process, best of 3)", stage_rows(parse_stages(n // 4)),
              headers=("stage", "CPU", "rate", "share"))
        return
    n = 20 if a.quick else 100
    reps = 3 if a.quick else 5
    print(f"# bench_core on {machine()}; commit {commit()}")
    print(f"# bubblewrap: {'on' if __import__('runner.sandbox', fromlist=['x']).bwrap_path() else 'off'}; "
          f"tsp: {_tsp_version()}")
    print("# figures: median (min-max) over the repeats; latencies: p50 (p10-p90, p95) over the jobs")
    lat, tlat, typed = submit_to_start(n)
    sweep = 100 if a.quick else 1000
    cli_sweep = 50 if a.quick else 200  # one interpreter per `runner submit`: a smaller sweep
    rates = [drain(cli_sweep, via="cli") for _ in range(3)]
    lib_rates = [drain(sweep, via="library")[0] for _ in range(3)]
    times = cli_times(5 if a.quick else 10)
    parse = parse_throughput(100_000 if a.quick else 1_000_000)
    work_n, hand, ran = overhead(2.0 if a.quick else 10.0, reps)
    rss = idle_memory()

    def p(v):
        return f"{1000 * pct(v, 50):.1f} ms (p10-p90 {1000 * pct(v, 10):.1f}-{1000 * pct(v, 90):.1f}, p95 {1000 * pct(v, 95):.1f})"

    rows = [(f"submit-to-start ({n} jobs; from the command's return)", p(lat), p(tlat) if tlat else "—", "<= 50 ms p50", pct(lat, 50) <= 0.05),
            (f"typed-to-start ({n} jobs; from running `runner submit` to the job's first instruction)", p(typed), "", "<= 200 ms p50",
             pct(typed, 50) <= 0.2),
            (f"jobs drained per second, a sweep of {cli_sweep:,} submitted by the CLI (one `runner submit` / one `tsp` process "
             f"per job), 4 slots (3 rounds)", spread([r for r, _ in rates], fmt="{:.1f}") + "/s",
             (spread([t for _, t in rates], fmt="{:.1f}") + "/s") if rates[0][1] else "—", "", ""),
            (f"jobs drained per second, a sweep of {sweep:,} submitted through runner's library (spool.submit in the "
             f"sweep's process; tsp has no library), 4 slots (3 rounds)", spread(lib_rates, fmt="{:.0f}") + "/s", "—",
             ">= 100/s", median(lib_rates) >= 100)]
    for k in ("runner submit", "runner ls", "runner show", "runner --help"):
        target = {"runner submit": 0.15, "runner ls": 0.10, "runner show": 0.10, "runner --help": 0.10}[k]
        alt = {"runner submit": "tsp (enqueue)", "runner ls": "tsp -l"}.get(k)
        rows.append((f"{k} wall time", spread(times[k], 1000, "{:.0f}") + " ms",
                     (f"{alt}: " + spread(times[alt], 1000, "{:.0f}") + " ms") if alt in times else "",
                     f"<= {1000 * target:.0f} ms", median(times[k]) <= target))
    rows.append(("bare interpreter start", spread(times["bare interpreter"], 1000, "{:.0f}") + " ms", "", "(reference)", ""))
    rows += parse_rows(parse)
    oh_work = [100 * (r - h) / h for r, h in zip(ran["work"], hand["work"])]
    oh_wall = [100 * (r - h) / h for r, h in zip(ran["wall"], hand["wall"])]
    rows += [
        (f"fixed work ({work_n:,} iterations): its own wall time", spread(ran["work"], fmt="{:.3f}") + " s",
         "by hand: " + spread(hand["work"], fmt="{:.3f}") + " s", "", ""),
        ("  overhead, work's own wall time (pairs)", spread(oh_work, fmt="{:+.2f}") + " %", "", "<= 1 %", median(oh_work) <= 1.0),
        ("  start to end (runner: shim's times; by hand: spawn to exit)", spread(ran["wall"], fmt="{:.3f}") + " s",
         "by hand: " + spread(hand["wall"], fmt="{:.3f}") + " s", "", ""),
        ("  overhead, start to end (pairs)", spread(oh_wall, fmt="{:+.2f}") + " %", "", "<= 1 %", median(oh_wall) <= 1.0),
        ("idle daemon RSS (HTTP on)", f"{rss:.0f} MB", "", "<= 100 MB", rss <= 100),
    ]
    table("core: runner beside task-spooler and running by hand", rows, headers=("figure", "runner", "alternative", "target", "ok"))


if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()
