"""Follow a running job's files: new log bytes -> metric points; new checkpoints -> artifacts."""

from __future__ import annotations

import fnmatch
import json
import os
import stat
import time
from pathlib import Path
from typing import NamedTuple

from log_parsers import LineAssembler, build_parser

from . import defaults
from .specrules import checkpoint_pattern_problem  # one rule for runner submit's check and the daemon's watch

READ_CHUNK = 4 << 20
POLL_BYTES = 64 << 20  # most log bytes one look at a running job reads
FINAL_BYTES = 256 << 20  # most log bytes the last look at an ended job reads (the rest is not parsed)
CHECKPOINT_MAX_BYTES = 1 << 40  # larger than any checkpoint: a sparse file of exabytes is not one
SCAN_MAX_ENTRIES = 20_000  # most folder entries one scan of a job's checkpoint globs looks at, all patterns together
MAX_CHECKPOINTS = 1000  # most checkpoint files recorded for one job (a job making more keeps its first ones)
SCAN_SECONDS = 5.0  # a running job's checkpoint globs are looked at this often (and once more when it ends)
IDENTITIES = "checkpoints.json"  # in the daemon's run folder: what each recorded checkpoint was when scanned


class Refused(Exception):
    """A file in a job folder that the daemon will not take as the job's own (the message says why)."""


class Identity(NamedTuple):
    """What a checkpoint was when it was recorded; a file that differs later is another file."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> "Identity":
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def open_job_file(job_dir: Path, rel: str | os.PathLike, uid: int, max_bytes: int = CHECKPOINT_MAX_BYTES):
    """Open a file a job wrote, for the daemon to read: (binary file, its stat).

    Every component from the job folder down is opened without following a symbolic link
    (O_NOFOLLOW, one directory descriptor after another), the file itself with O_NONBLOCK so a FIFO
    or a device never blocks the daemon, and what was opened is checked on its descriptor: a
    regular file of the job's user with one link (a hard link to someone else's file is not hers),
    at most `max_bytes`. Raises Refused with the reason, or OSError when it is missing.
    """
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or ".." in parts:
        raise Refused("outside the job folder")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    dfd = os.open(job_dir, flags | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, flags | os.O_DIRECTORY, dir_fd=dfd)
            except OSError as e:
                if e.errno in (20, 40):  # ENOTDIR, ELOOP: a link (or a file) where a folder should be
                    raise Refused(f"{part} is a symbolic link or not a folder") from None
                raise
            os.close(dfd)
            dfd = nxt
        st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            raise Refused("a symbolic link")
        if not stat.S_ISREG(st.st_mode):
            raise Refused("not a regular file")  # a FIFO, a socket or a device is never opened
        try:
            fd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=dfd)
        except OSError as e:
            if e.errno == 40:
                raise Refused("a symbolic link") from None
            raise
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        why = _refusal(st, uid, max_bytes)
        if why:
            raise Refused(why)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st
    except BaseException:
        os.close(fd)
        raise


def find(job_dir: Path, pattern: str, budget: int = SCAN_MAX_ENTRIES, spent: list | None = None) -> list[str]:
    """Paths (relative to job_dir) that a checkpoint glob matches, as glob.glob would find them
    (`**` for any depth, `*` not matching a leading dot), except that no symbolic link to a folder
    is entered: a job's links never make the daemon list another folder, nor loop. At most
    `budget` entries are looked at."""
    parts = [p for p in pattern.split("/") if p not in ("", ".")]
    found: set[str] = set()
    left = [budget]

    def entries(rel: str):
        try:
            with os.scandir(job_dir / rel if rel else job_dir) as it:
                for e in it:
                    left[0] -= 1
                    if left[0] < 0:
                        return
                    yield e
        except OSError:
            return

    def walk(rel: str, i: int):
        if left[0] < 0:
            return
        if i == len(parts):
            if rel:
                found.add(rel)
            return
        part, last = parts[i], i == len(parts) - 1
        if part == "**":
            walk(rel, i + 1)
            for e in entries(rel):
                if e.name.startswith("."):
                    continue
                if e.is_dir(follow_symlinks=False):
                    walk(f"{rel}/{e.name}" if rel else e.name, i)
                elif last:
                    found.add(f"{rel}/{e.name}" if rel else e.name)
            return
        for e in entries(rel):
            if e.name.startswith(".") and not part.startswith("."):
                continue
            if fnmatch.fnmatchcase(e.name, part) and (last or e.is_dir(follow_symlinks=False)):
                walk(f"{rel}/{e.name}" if rel else e.name, i + 1)

    walk("", 0)
    if spent is not None:  # how many entries this look cost, for a caller that shares one budget
        spent.append(budget - max(left[0], 0))
    return sorted(found)


def _refusal(st: os.stat_result, uid: int, max_bytes: int) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid != uid:
        return f"owned by uid {st.st_uid}, not by the job's user (uid {uid})"
    if st.st_nlink != 1:
        return f"{st.st_nlink} hard links (another of its names may be someone else's file)"
    if st.st_size > max_bytes:
        return f"{st.st_size} bytes, more than {max_bytes}"
    return None


def read_identities(run_dir: Path | None) -> dict[str, Identity]:
    """The identities recorded for a job's checkpoints (path -> Identity), from its run folder."""
    if run_dir is None:
        return {}
    try:
        with open(Path(run_dir) / IDENTITIES, "rb") as f:
            data = json.loads(f.read(16 << 20))
        return {p: Identity(*v) for p, v in data.items() if isinstance(v, list) and len(v) == 4}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


class LogWatcher:
    """Reads a job's output.log from a saved offset and stores what the parser finds."""

    def __init__(self, job_id: str, job_dir: Path, parser_spec, offset: int = 0, parser_state=None, checkpoints=None,
                 log_path: Path | None = None, owner: int | None = None, max_offset: int | None = None,
                 redo_before: float | None = None):
        self.job_id = job_id
        self.redo_before = redo_before  # a resumed run: what it does again replaces the earlier run's points
        # The log is its user's file: she may write it by hand, past what the shim's cap lets
        # through. Nothing past max_offset is read, so no log costs more than the cap allows.
        self.max_offset = max_offset
        self.job_dir = Path(job_dir)
        self.path = Path(log_path) if log_path else self.job_dir / "output.log"
        # checkpoints are recorded only when they are files of the job's user (the daemon's own
        # when it runs its own jobs), and their identities kept in the daemon's run folder, beside
        # the log: never in the job folder, which the job can write
        self.owner = owner if owner is not None else os.geteuid()
        self.run_dir = Path(log_path).parent if log_path else None
        self.offset = offset
        self._parser_from(parser_spec, parser_state)
        self.checkpoints = checkpoints or []
        self._fh = None
        self._final_read = 0  # log bytes read since the job's end was known (at most FINAL_BYTES)
        self.behind = False  # the last poll stopped before the end of the log (its budget spent)
        self.done = False  # a final poll has read to the end (or to FINAL_BYTES): the job's points are all in
        self._known = read_identities(self.run_dir)
        self._scanned = float("-inf")  # monotonic time of the last checkpoint scan

    def _parser_from(self, spec, state):
        """The log's line assembler and parser, at the watcher's offset."""
        self.assembler = LineAssembler(self.offset)
        self.parser = build_parser(spec, state)

    def poll(self, store, final: bool = False, seconds: float | None = None) -> int:
        """Read what is new (up to FINAL_BYTES of it after the job's end, `final`), store the
        points; returns how many.

        Every transaction holds the points of whole lines and the offset just past those lines
        (and the parser's state there), so a daemon killed between two transactions reads on from
        the last one and stores each point exactly once. One call reads at most POLL_BYTES, and
        with `seconds` it stops after the batch (METRICS_BATCH_BYTES) that spends them: a job
        that floods its log waits for the next call while the daemon reads the other jobs' lines.
        `behind` says that a call stopped before the end of what was there; `done`, that a final
        read reached it (or FINAL_BYTES, counted over the final calls: the rest is not parsed).
        """
        self.behind = False
        if self._fh is None:
            try:
                self._fh = open(self.path, "rb")
            except FileNotFoundError:
                if self.checkpoints:
                    self.scan_artifacts(store)  # checkpoints count even before a first line of log
                self.done = final
                return 0
            self._fh.seek(self.offset)
        total = read = 0
        budget = FINAL_BYTES - self._final_read if final else POLL_BYTES
        until = None if seconds is None else time.monotonic() + seconds
        batch = defaults.METRICS_BATCH_BYTES
        while True:
            if read >= budget:
                if final:  # the cap after the job's end: what is left is not read
                    total += self._store(store, self.assembler.finish())
                    self.done = True
                else:
                    self.behind = True
                break
            want = min(READ_CHUNK, batch, budget - read)
            if self.max_offset is not None:
                want = max(0, min(want, self.max_offset - self._fh.tell()))
            data = self._fh.read(want) if want else b""
            read += len(data)
            if final:
                self._final_read += len(data)
            if not data:
                if final:
                    total += self._store(store, self.assembler.finish())
                    self.done = True
                break
            total += self._store(store, self.assembler.feed(data))
            if until is not None and time.monotonic() >= until:
                self.behind = True
                break
        if self.checkpoints and (final or time.monotonic() - self._scanned >= SCAN_SECONDS):
            self.scan_artifacts(store)
        return total

    def _store(self, store, lines: list[str]) -> int:
        points = []
        feed = self.parser.feed_line
        for line in lines:
            points += feed(line)
        consumed = self.assembler.consumed
        if points or consumed != self.offset:
            store.record_progress(self.job_id, points, consumed, self.parser.state(), redo_before=self.redo_before)
        self.offset = consumed
        return len(points)

    def scan_artifacts(self, store):
        """Record checkpoint files matching the globs (relative to the job dir) that are new or changed.

        Each is opened the safe way (open_job_file) and taken only when it is a regular file of the
        job's user; its identity is kept so that whoever reads it later (an exporter) opens
        the same file or none."""
        self._scanned = time.monotonic()
        new = []
        budget = SCAN_MAX_ENTRIES  # for all the patterns together: many patterns cost no more than one
        for pattern in self.checkpoints:
            if checkpoint_pattern_problem(pattern) or budget <= 0:
                continue  # refused at submit; a record that got past it is not followed out of the folder
            spent: list[int] = []
            found = find(self.job_dir, pattern, budget, spent)
            budget -= max(spent[0], 1)
            for rel in found:
                if any(part.endswith(".tmp") or ".tmp." in part for part in Path(rel).parts):
                    continue  # still being written (atomic writes rename it into place)
                path = str(self.job_dir / rel)
                if path not in self._known and len(self._known) >= MAX_CHECKPOINTS:
                    continue
                try:
                    seen = os.lstat(path)  # unchanged since recorded: not opened again
                    if self._known.get(path) == Identity.of(seen):
                        continue
                except OSError:
                    continue
                try:
                    f, st = open_job_file(self.job_dir, rel, self.owner)
                except (OSError, Refused):
                    continue  # a link, a FIFO, someone else's file, or gone since the glob
                f.close()
                path, ident = str(self.job_dir / rel), Identity.of(st)
                if self._known.get(path) != ident:
                    self._known[path] = ident
                    new.append((path, st.st_size))
        if new and self.run_dir is not None:  # the identities first: a recorded checkpoint always has one
            from .atomic import write_json

            write_json(self.run_dir / IDENTITIES, {p: list(i) for p, i in self._known.items()}, mode=0o600)
        for path, size in new:
            store.add_artifact(self.job_id, path, "checkpoint", size)

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
