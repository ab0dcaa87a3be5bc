"""The daemon's end of the log-parsing helpers (runner/logparse.py, which says how they work):
ParseHelper, one helper process and its pipes; check_batch, a batch checked as its user's input;
HelperWatcher, the daemon's watcher of a running job, storing each batch with its offset and parser
state in one transaction and starting a helper again from the stored offset when one breaks."""

from __future__ import annotations

import json
import logging
import os
import select
import sys
import time

from . import defaults
from .logparse import MAX_NAME
from .privdrop import _stopped  # whether a process is held stopped (its state in /proc)
from .watch import FINAL_BYTES, SCAN_SECONDS, LogWatcher

MAX_MESSAGE = 64 << 20  # longest batch line the daemon takes from a helper
RESPAWNS = 5  # helpers of one job that may break before its log is given up (said in the daemon's log)
RETRY_SECONDS = 0.2  # a helper broke: the next starts this long after (doubled each time: 6 s over all five)
FINAL_SECONDS = 120.0  # an ended job's helper that sends nothing this long is ended (its last lines lost)
STOPPED_SECONDS = 2.0  # a helper held stopped this long (SIGSTOP from its user) is ended
PIPE_SIZE = 1 << 20  # the helper's stdout pipe: a batch or more in flight while the daemon stores


class HelperBroke(Exception):
    """A helper that died, sent what a helper never sends, or was held stopped."""


_NUMS = frozenset({float, int, type(None)})


def decode(head, payload: bytes, raw: bool = False) -> tuple[dict, dict]:
    """(the batch with every column a list, each binary column's types) of a header line (its
    bytes, or the object they hold) and the bytes after it (runner.logparse.encode); ValueError
    if they are not one. `raw` (the daemon's way): a batch whose every column is fixed-width, where
    runner/_packs_c.c is built, keeps them as bytes (the columns None, their bytes in the types'
    "raw"), which check_batch makes a store.packed.Packed."""
    from array import array

    from .store.packed import _packs_c

    msg = json.loads(head) if isinstance(head, (bytes, str)) else head
    if not isinstance(msg, dict):
        raise ValueError("not an object")
    size, codes = payload_size(msg)
    if len(payload) != size:
        raise ValueError(f"{len(payload)} bytes after the header, {size} expected")
    n, at, types = msg["n"], 0, {}
    if raw and _packs_c is not None and {name for name, _ in codes} == {"k", "v", "s", "e"}:
        # every column fixed-width (the usual batch): kept as bytes, for check_batch to hand to C (store.packed.Packed)
        cols = {}
        for name, code in codes:
            end = at + (0 if code == "-" else n * array(code).itemsize)
            cols[name], msg[name] = (payload[at:end] if code != "-" else None), None
            at = end
        return msg, {"raw": cols}
    for name, code in codes:
        if code == "-":
            msg[name], types[name] = [None] * n, {type(None)} if n else set()
            continue
        end = at + n * array(code).itemsize
        msg[name], types[name] = array(code, payload[at:end]).tolist(), ({float} if code == "d" else {int}) if n else set()
        at = end
    return msg, types


def payload_size(msg: dict) -> tuple[int, list]:
    """(bytes after the header line, [(column, code)] of its binary columns) that a header says;
    ValueError for a count or code that no helper sends."""
    from array import array

    from .logparse import CODES

    n = msg.get("n")
    if type(n) is not int or not 0 <= n <= MAX_MESSAGE:
        raise ValueError(f"n {n!r}: a count of points expected")
    codes = [(name, msg.get(name)) for name in CODES if type(msg.get(name)) is str]
    if any(code not in CODES[name] for name, code in codes):
        raise ValueError("a column's code that no helper sends")
    return sum(n * array(code).itemsize for _, code in codes if code != "-"), codes


def check_batch(msg, offset: int, max_offset: int | None, types: dict | None = None):
    """A helper's batch as (Columns of its points, offset, state, done), every field checked;
    ValueError if it is not one: metric names (`keys`, strings of at most MAX_NAME characters)
    and each point's index among them, values, steps and epochs (numbers or nulls, no bools)
    in lists of one length, an offset from `offset` on and not past `max_offset`, a state object.
    `types`: the set of types of each column decoded from bytes (known: not looked at again)."""
    from .store.metrics import Columns
    from .store.packed import Packed, raw_lists

    types = types or {}
    if not isinstance(msg, dict):
        raise ValueError("not an object")
    new, state, done = msg.get("offset"), msg.get("state"), msg.get("done")
    keys, k, v, s, e = (msg.get(f) for f in ("keys", "k", "v", "s", "e"))
    if type(new) is not int or new < offset or (max_offset is not None and new > max_offset):
        raise ValueError(f"offset {new!r} outside {offset}..{max_offset}")
    if not isinstance(state, dict) or type(done) is not bool:
        raise ValueError("state or done of the wrong type")
    if type(keys) is not list:
        raise ValueError("keys, k, v, s, e: lists of one length expected")
    if keys and (set(map(type, keys)) != {str} or max(map(len, keys)) > MAX_NAME):
        raise ValueError("a metric name that is not a string of at most MAX_NAME characters")
    raw = types.get("raw")
    if raw is not None:
        if len(keys) <= msg["n"] and len(set(keys)) == len(keys):  # each name once (and no more names than points: a helper
            # never sends a name without a point, and millions of them cost C's path more than the lists'): in C
            return Packed(keys, raw), new, state, done
        (k, v, s, e), types = raw_lists(raw, msg["n"]), {}  # the lists' way (their types looked at below)
    if not all(type(x) is list for x in (k, v, s, e)) or not len(k) == len(v) == len(s) == len(e):
        raise ValueError("keys, k, v, s, e: lists of one length expected")
    tk, tv, ts, te = (types.get(name) or set(map(type, col)) for name, col in (("k", k), ("v", v), ("s", s), ("e", e)))
    if k and (tk != {int} or not tv <= _NUMS or not ts <= _NUMS or not te <= _NUMS):
        raise ValueError("a point's index or numbers of the wrong type")
    try:
        names = list(map(keys.__getitem__, k))
    except IndexError:
        raise ValueError("a point names no metric of the batch") from None
    if int in tv:  # (a parser gives floats) a whole number is a value as a float, one past floats' range none
        v = [x if type(x) is not int else float(x) if -_FLOAT_MAX < x < _FLOAT_MAX else None for x in v]
    return Columns(names, v, _int64(s, ts), _int64(e, te)), new, state, done


_FLOAT_MAX = 2 ** 1023
_INT64 = 2 ** 63


def _int64(col: list, types: set) -> list:
    """Steps or epochs with a whole number past what the store's INTEGER holds made None (a position
    of 20 digits is not one): the column as it was when every one fits."""
    if int not in types:
        return col
    if types == {int} and -_INT64 <= min(col) and max(col) < _INT64:  # the usual column: min and max in C
        return col
    if types != {int} and all(-_INT64 <= x < _INT64 for x in col if type(x) is int):
        return col
    return [None if type(x) is int and not -_INT64 <= x < _INT64 else x for x in col]


class ParseHelper:
    """The daemon's end of one job's helper: started at (offset, state), read batch by batch."""

    def __init__(self, who, path, offset: int, parser, state, max_offset: int | None):
        import subprocess

        from .identity import drops_privileges

        uid, gid, groups = (who.uid, who.gid, who.groups) if drops_privileges(who.uid) else (os.geteuid(), os.getegid(), [])
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
        if drops_privileges(who.uid):  # isolated: nothing of the environment chooses what root loads
            argv = [sys.executable, "-I", "-m", "runner.logparse"]
        else:  # the daemon's own user: no boundary, and a personal daemon may run from a checkout
            argv = [sys.executable, "-m", "runner.logparse"]
            if os.environ.get("PYTHONPATH"):
                env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        argv += [str(uid), str(gid), ",".join(map(str, groups))]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, cwd="/", start_new_session=True, close_fds=True)
        try:
            import fcntl

            fcntl.fcntl(self.proc.stdout.fileno(), 1031, PIPE_SIZE)  # F_SETPIPE_SZ
        except OSError:
            pass
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.fd = self.proc.stdout.fileno()
        self.buf = bytearray()
        self._head = None  # (where the header line of the batch being read ends, the bytes after it, the header)
        self.eof = False
        self.last_heard = time.monotonic()
        self.send({"path": str(path), "offset": offset, "parser": parser, "state": state, "max_offset": max_offset})

    def _last_words(self) -> str:
        """The last line a dead helper wrote to stderr (a traceback's), for the daemon's log."""
        try:
            os.set_blocking(self.proc.stderr.fileno(), False)
            err = (self.proc.stderr.read(1 << 16) or b"").decode("utf-8", "replace").strip().splitlines()
        except (OSError, ValueError):
            return ""
        return f": {err[-1][:300]}" if err else ""

    def send(self, obj):
        try:
            self.proc.stdin.write((obj if isinstance(obj, str) else json.dumps(obj)).encode() + b"\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass  # it died: its next read says so

    def final(self, budget: int):
        self.send(f"final {max(0, int(budget))}")

    def next(self, timeout: float = 0.0):
        """The next batch as decode gives it (msg, types), or None when none came within `timeout`.
        HelperBroke when the helper ended, sent a batch too long, or is held stopped; ValueError
        when it sent what is not a batch."""
        deadline = time.monotonic() + timeout
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                if self._head is None:  # its header, read once, says how many bytes follow it
                    if nl > MAX_MESSAGE:
                        raise HelperBroke(f"a batch longer than {MAX_MESSAGE} bytes")
                    head = json.loads(bytes(self.buf[:nl]))
                    if not isinstance(head, dict):
                        raise ValueError("not an object")
                    self._head = nl, payload_size(head)[0], head
                nl, size, head = self._head
                if nl + size > MAX_MESSAGE:
                    raise HelperBroke(f"a batch longer than {MAX_MESSAGE} bytes")
                if len(self.buf) >= nl + 1 + size:
                    msg = decode(head, bytes(self.buf[nl + 1:nl + 1 + size]), raw=True)
                    del self.buf[:nl + 1 + size]
                    self._head = None
                    self.last_heard = time.monotonic()
                    return msg
            elif len(self.buf) > MAX_MESSAGE:
                raise HelperBroke(f"a batch longer than {MAX_MESSAGE} bytes")
            if self.eof:
                raise HelperBroke(f"it ended (exit {self.proc.poll()}){self._last_words()}")
            try:
                got = os.read(self.fd, 4 << 20)
            except BlockingIOError:
                got = None
            if got:
                self.buf += got
                continue
            if got == b"":
                self.eof = True
                self.proc.wait(5)
                continue
            now = time.monotonic()
            if now - self.last_heard >= STOPPED_SECONDS and _stopped(self.proc.pid):  # (a quiet one: privdrop's look at /proc)
                raise HelperBroke(f"held stopped for {STOPPED_SECONDS:.0f}s")
            left = deadline - now
            if left <= 0:
                return None
            select.select([self.fd], [], [], min(left, 0.1))

    def close(self):
        """Let it go: its pipes closed (a helper blocked on a full pipe ends on the broken one), then reaped."""
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                pipe.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=1)
        except Exception:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except Exception:
                pass

    def kill(self):
        self.proc.kill()
        self.close()


class HelperWatcher(LogWatcher):
    """The daemon's watcher: the log parsed by a helper running as the job's user
    (runner.logparse), the daemon storing each batch with its offset and parser state in one
    transaction (exactly once, as LogWatcher). Checkpoints are scanned here, as LogWatcher does."""

    def __init__(self, *args, **kwargs):
        self.helper = None
        self.deaths = 0  # helpers of this job that broke
        self.gave_up: str | None = None  # why its log is no longer parsed
        self._final_sent = False
        self._retry_at = 0.0  # (monotonic) no helper is started again before then
        self.names: set | None = None  # the job's metric names (at most MAX_METRIC_NAMES), read from the store at first
        self.name_bytes = 0  # their UTF-8 bytes (at most MAX_METRIC_NAME_BYTES)
        self._final_since: float | None = None  # (monotonic) when a final read was first asked for
        self._said_names = False
        super().__init__(*args, **kwargs)

    def _parser_from(self, spec, state):
        self.spec, self.state = spec, state  # the helper builds the parser; the daemon never does

    def _helper(self):
        from .identity import Person, person

        if self.helper is None:
            try:
                who = person(self.owner)
            except KeyError:  # a uid without a passwd entry (its user removed): no groups, nobody's group
                who = Person(self.owner, 65534, (), str(self.owner), "/")
            self.helper = ParseHelper(who, self.path, self.offset, self.spec, self.state, self.max_offset)
            self._final_sent = False
        return self.helper

    def poll(self, store, final: bool = False, seconds: float | None = None) -> int:
        """Store the batches the helper has sent (an ended job, `final`: wait up to `seconds`
        for them, all of them when None, until the helper says it read to the end: `done`)."""
        self.behind = False
        total = 0
        if self.spec == "none" or self.gave_up:  # a log that asked for no metrics, or one given up
            self.done = final
        elif self._final_over(final):  # an ended job's log read on long enough: the rest is not parsed
            self._let_go(kill=True)
            self.done = True
            self._say(f"runner: the rest of this log, from byte {self.offset}, was not made into metrics: "
                      f"still unread {defaults.FINAL_READ_SECONDS:g}s after the job ended")
        elif self.helper is None and time.monotonic() < self._retry_at:
            pass  # one broke just now: the next waits a little
        else:
            budget = seconds if seconds is not None else FINAL_SECONDS if final else defaults.FOLLOW_PASS_SECONDS
            until = time.monotonic() + budget
            try:
                try:
                    h = self._helper()
                except OSError as e:  # no process to be had now (EAGAIN, ENOMEM): the daemon's trouble, not the job's
                    self._retry_at = time.monotonic() + 1.0
                    logging.getLogger("runner.watch").warning("job %s: cannot start its log parser (%s); trying again in 1s",
                                                              self.job_id, e)
                    return total
                if final and not self._final_sent:
                    h.final(FINAL_BYTES)
                    self._final_sent = True
                while True:
                    got = h.next(max(0.0, until - time.monotonic()) if final else 0.0)
                    if got is None:
                        if final and time.monotonic() - h.last_heard > FINAL_SECONDS:
                            raise HelperBroke(f"sent nothing for {FINAL_SECONDS:.0f}s after the job's end")
                        break
                    msg, types = got
                    pts, offset, state, done = check_batch(msg, self.offset, self.max_offset, types)
                    pts = self._known_names(store, pts)
                    if pts or offset != self.offset:
                        try:
                            store.record_progress(self.job_id, pts, offset, state, redo_before=self.redo_before)
                        except BaseException:  # not stored (the daemon's disk, its store): the next helper reads it again
                            self._let_go(kill=True)
                            raise
                    self.offset, self.state = offset, state
                    total += len(pts)
                    if done:
                        self.done = True
                        self._let_go()
                        break
                    if time.monotonic() >= until:
                        self.behind = True
                        break
            except (HelperBroke, ValueError, RecursionError) as e:  # (a JSON error is a ValueError; nested too deep, a RecursionError)
                self._let_go(kill=True)
                self.deaths += 1
                log = logging.getLogger("runner.watch")
                if self.deaths > RESPAWNS:
                    self.gave_up = f"its log parser broke {self.deaths} times ({e})"
                    log.warning("job %s: metrics no longer read: %s", self.job_id, self.gave_up)
                    self.done = final
                else:
                    wait = RETRY_SECONDS * 2 ** (self.deaths - 1)
                    self._retry_at = time.monotonic() + wait
                    log.warning("job %s: its log parser broke (%s); another starts from offset %d in %.1fs", self.job_id, e,
                                self.offset, wait)
        if self.checkpoints and (final or time.monotonic() - self._scanned >= SCAN_SECONDS):
            self.scan_artifacts(store)
        return total

    def _final_over(self, final: bool) -> bool:
        """Whether the job's end is known (`final`) since more than FINAL_READ_SECONDS."""
        if not final:
            return False
        if self._final_since is None:
            self._final_since = time.monotonic()
        return time.monotonic() - self._final_since > defaults.FINAL_READ_SECONDS

    def _known_names(self, store, pts):
        """The batch's points of the job's first MAX_METRIC_NAMES metric names, MAX_METRIC_NAME_BYTES
        of them at most (those stored, then new ones in the order they come); past them, points are
        not kept, said once in its log."""
        from .store.metrics import Columns
        from .store.packed import Packed
        from .store.pages import metric_names

        if self.names is None:
            self.names = set(metric_names(store, self.job_id))
            self.name_bytes = sum(len(n.encode()) for n in self.names)
        new = (pts.present() if isinstance(pts, Packed) else set(pts.names)) - self.names
        if not new:
            return pts
        room, size = defaults.MAX_METRIC_NAMES - len(self.names), defaults.MAX_METRIC_NAME_BYTES - self.name_bytes
        grows = sum(len(n.encode()) for n in new)
        if len(new) <= room and grows <= size:
            self.names |= new
            self.name_bytes += grows
            return pts
        if isinstance(pts, Packed):  # (as lists: a batch past the names' bound is not the fast path)
            pts = pts.columns()
        for n in dict.fromkeys(pts.names):  # as many new names as there is room for, the first to come
            if n not in self.names and room > 0 and len(n.encode()) <= size:
                self.names.add(n)
                room, size = room - 1, size - len(n.encode())
        self.name_bytes = defaults.MAX_METRIC_NAME_BYTES - size
        if not self._said_names:
            self._said_names = True
            self._say(f"runner: this job printed more than {defaults.MAX_METRIC_NAMES} metric names (or "
                      f"{defaults.MAX_METRIC_NAME_BYTES // 1024} KiB of them); the points of further names are not kept")
        keep = [i for i, n in enumerate(pts.names) if n in self.names]
        return Columns(*([col[i] for i in keep] for col in pts))

    def _say(self, line: str):
        """A line of runner's into the job's log, as the daemon writes its others (daemon/logs.job_log)."""
        logging.getLogger("runner.watch").warning("job %s: %s", self.job_id, line)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
        except OSError:
            return
        try:
            os.write(fd, ("\n" + line + "\n").encode())
        except OSError:
            pass
        finally:
            os.close(fd)

    def _let_go(self, kill: bool = False):
        if self.helper is not None:
            self.helper.kill() if kill else self.helper.close()
            self.helper = None

    def close(self):
        self._let_go()
