"""Follow a running job's files: new log bytes -> metric points; new checkpoints -> artifacts."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from log_parsers import LineAssembler, build_parser

from . import defaults

READ_CHUNK = 4 << 20
POLL_BYTES = 64 << 20  # most log bytes one look at a running job reads


class LogWatcher:
    """Reads a job's output.log from a saved offset and stores what the parser finds."""

    def __init__(self, job_id: str, job_dir: Path, parser_spec, offset: int = 0, parser_state=None, checkpoints=None,
                 log_path: Path | None = None, owner: int | None = None):
        self.job_id = job_id
        self.job_dir = Path(job_dir)
        self.path = Path(log_path) if log_path else self.job_dir / "output.log"
        self.owner = owner  # checkpoints are recorded only when they belong to the job's user
        self.assembler = LineAssembler(offset)
        self.parser = build_parser(parser_spec, parser_state)
        self.checkpoints = checkpoints or []
        self.offset = offset
        self._fh = None
        self._known = {}

    def poll(self, store, final: bool = False) -> int:
        """Read what is new (all of it when `final`), store the points; returns how many.

        Every transaction holds the points of whole lines and the offset just past those lines
        (and the parser's state there), so a daemon killed between two transactions reads on from
        the last one and stores each point exactly once. Without `final`, one call reads at most
        POLL_BYTES, so a job that floods its log cannot hold up the daemon's loop.
        """
        if self._fh is None:
            try:
                self._fh = open(self.path, "rb")
            except FileNotFoundError:
                if self.checkpoints:
                    self.scan_artifacts(store)  # checkpoints count even before a first line of log
                return 0
            self._fh.seek(self.offset)
        total = read = 0
        while final or read < POLL_BYTES:
            data = self._fh.read(READ_CHUNK)
            read += len(data)
            for i in range(0, len(data), defaults.METRICS_BATCH_BYTES):
                total += self._store(store, self.assembler.feed(data[i:i + defaults.METRICS_BATCH_BYTES]))
            if not data:
                if final:
                    total += self._store(store, self.assembler.finish())
                break
        if self.checkpoints:
            self.scan_artifacts(store)
        return total

    def _store(self, store, lines: list[str]) -> int:
        points = []
        feed = self.parser.feed_line
        for line in lines:
            points += feed(line)
        consumed = self.assembler.consumed
        if points or consumed != self.offset:
            store.record_progress(self.job_id, points, consumed, self.parser.state())
        self.offset = consumed
        return len(points)

    def scan_artifacts(self, store):
        """Record checkpoint files matching the globs (relative to the job dir) that are new or changed."""
        for pattern in self.checkpoints:
            for path in glob.glob(str(self.job_dir / pattern), recursive=True):
                if any(part.endswith(".tmp") or ".tmp." in part for part in Path(path).relative_to(self.job_dir).parts):
                    continue  # still being written (atomic writes rename it into place)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if self.owner is not None and st.st_uid not in (self.owner, os.geteuid()):
                    continue  # a link to someone else's file is not this job's checkpoint
                sig = (st.st_size, st.st_mtime_ns)
                if self._known.get(path) != sig:
                    self._known[path] = sig
                    store.add_artifact(self.job_id, path, "checkpoint", st.st_size)

    def close(self):
        if self._fh:
            self._fh.close()
            self._fh = None


def tail_lines(path: Path, n: int = defaults.LOG_TAIL_LINES, max_bytes: int = defaults.LOG_TAIL_MAX_BYTES) -> list[str]:
    """The last n lines of a log (as a person would see them: \\r redraws resolved).

    Reads backwards from the end only as far as needed (at most max_bytes), so a tail of a
    many-GB log costs what the tail costs.
    """
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            start = size
            chunks: list[bytes] = []
            newlines = 0
            while start > 0 and newlines <= n and size - start < max_bytes:
                step = min(max(64 * 1024, (size - start) or 0), start, max_bytes - (size - start))
                start -= step
                f.seek(start)
                block = f.read(step)
                chunks.insert(0, block)
                newlines += block.count(b"\n")
            data = b"".join(chunks)
    except FileNotFoundError:
        return []
    if start > 0:  # the first line read is probably partial
        data = data[data.find(b"\n") + 1:] if b"\n" in data else data
    a = LineAssembler()
    lines = a.feed(data) + a.finish()
    return lines[-n:] if n else []
