"""Follow a running job's files: new log bytes -> metric points; new checkpoints -> artifacts."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from log_parsers import LineAssembler, build_parser

from . import defaults

READ_CHUNK = 4 << 20


class LogWatcher:
    """Reads a job's output.log from a saved offset and stores what the parser finds."""

    def __init__(self, job_id: str, job_dir: Path, parser_spec, offset: int = 0, parser_state=None, checkpoints=None):
        self.job_id = job_id
        self.job_dir = Path(job_dir)
        self.path = self.job_dir / "output.log"
        self.assembler = LineAssembler(offset)
        self.parser = build_parser(parser_spec, parser_state)
        self.checkpoints = checkpoints or []
        self.offset = offset
        self._fh = None
        self._known = {}

    def poll(self, store, final: bool = False) -> int:
        """Read what is new (all of it when `final`), store the points; returns how many."""
        if self._fh is None:
            try:
                self._fh = open(self.path, "rb")
            except FileNotFoundError:
                return 0
            self._fh.seek(self.offset)
        total = 0
        while True:
            data = self._fh.read(READ_CHUNK)
            if not data and not final:
                break
            lines = self.assembler.feed(data) if data else []
            if not data:
                lines += self.assembler.finish()
            points = []
            feed = self.parser.feed_line
            for line in lines:
                points += feed(line)
            consumed = self.assembler.consumed
            for i in range(0, max(len(points), 1), defaults.METRICS_BATCH):
                batch = points[i:i + defaults.METRICS_BATCH]
                last = i + defaults.METRICS_BATCH >= len(points)
                store.record_progress(self.job_id, batch, consumed if last else self.offset, self.parser.state())
            self.offset = consumed
            total += len(points)
            if not data:
                break
        if self.checkpoints:
            self.scan_artifacts(store)
        return total

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
                sig = (st.st_size, st.st_mtime_ns)
                if self._known.get(path) != sig:
                    self._known[path] = sig
                    store.add_artifact(self.job_id, path, "checkpoint", st.st_size)

    def close(self):
        if self._fh:
            self._fh.close()
            self._fh = None


def tail_lines(path: Path, n: int = defaults.LOG_TAIL_LINES) -> list[str]:
    """The last n lines of a log (as a person would see them: \\r redraws resolved)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except FileNotFoundError:
        return []
    a = LineAssembler()
    lines = a.feed(data) + a.finish()
    return lines[-n:]
