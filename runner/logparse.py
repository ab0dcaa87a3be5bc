"""A running job's log parsed by a helper that has dropped to the job's user, never by the root
daemon (#30; the rule of runner.privsep: root does not parse what a user supplied).

One helper per followed job: `python -I -m runner.logparse UID GID GROUPS`, started by the daemon
as root, loads log_parsers, drops to the job's user for good (runner.privdrop._drop: no way back,
no_new_privs, not dumpable), and only then reads its one command (the log's path, the offset and
parser state the store holds, the parser spec) from stdin. It reads the log on from that offset as
the job writes it, 64 KiB at a time, and writes one JSON line a batch to stdout: the points of the
batch's whole lines, the offset just past them and the parser's state there. The daemon stores a
batch's points with its offset and state in one transaction, as it stored its own parse before:
a helper or daemon killed at any moment loses nothing and repeats nothing, since the next helper
starts at the committed offset. A helper ends when its stdin closes (the daemon let it go, or died).

Parsing runs beside the daemon's one core, which only stores: on a 2-core Intel Xeon, 8 jobs flooding
their logs are stored at 513-521 k points/s (314-323 k when the daemon parsed them itself), one
job's million-line log at 0.21 M lines/s (0.11); docs/bench/metrics-ingest.md. A helper costs about
12 MB of memory and 30 ms of CPU to start; a job whose log asks for no metrics (`parser: none`) has none.

The daemon treats a batch as its user's input: bounded lines, every field's type checked, an offset
that only moves forward and never past what may be read. A helper that breaks that, dies, or is held
stopped is ended and another starts from the committed offset after RETRY_SECONDS, doubled each time;
once more than RESPAWNS have broken, the job's log is no longer parsed (the daemon's log says why), the job runs on.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time

from .privdrop import _stopped  # whether a process is held stopped (its state in /proc)

CHUNK = 64 << 10  # log bytes a helper reads, parses and sends at a time
MAX_MESSAGE = 64 << 20  # longest batch line the daemon takes from a helper
MAX_NAME = 256  # longest metric name a helper sends (longer ones are cut)
RESPAWNS = 5  # helpers of one job that may break before its log is given up (said in the daemon's log)
RETRY_SECONDS = 0.2  # a helper broke: the next starts this long after (doubled each time: 6 s over all five)
FINAL_SECONDS = 120.0  # an ended job's helper that sends nothing this long is ended (its last lines lost)
STOPPED_SECONDS = 2.0  # a helper held stopped this long (SIGSTOP from its user) is ended
PIPE_SIZE = 1 << 20  # the helper's stdout pipe: a batch or more in flight while the daemon stores
IDLE_MAX = 0.05  # longest a helper sleeps between looks at a quiet log (a printed line is seen within it)


# -- the helper ---------------------------------------------------------------------------------

def serve(argv: list[str]) -> int:
    """The helper's life: load, drop to UID, read the command, follow the log."""
    import resource

    from .privdrop import HELPER_MEMORY, _drop

    uid, gid, groups = int(argv[0]), int(argv[1]), [int(g) for g in argv[2].split(",") if g]
    resource.setrlimit(resource.RLIMIT_AS, (HELPER_MEMORY, HELPER_MEMORY))
    import ctypes  # noqa: F401  (what the drop and the follow need, loaded while the daemon's files can be
    import select as _select  # noqa: F401  read: a user may not read root's interpreter's library)
    import log_parsers  # noqa: F401  (and every parser it may build)
    import log_parsers.regex  # noqa: F401
    import log_parsers.table  # noqa: F401

    if os.geteuid() == 0 and uid != 0:
        _drop(uid, gid, groups)
    elif os.geteuid() != uid:
        raise SystemExit("logparse: cannot run as another user without root")
    control, got = sys.stdin.fileno(), b""
    while b"\n" not in got and len(got) < 1 << 20:  # the command line, read unbuffered: what follows it is the follow's
        more = os.read(control, 1 << 16)
        if not more:
            return 0
        got += more
    line, _, rest = got.partition(b"\n")
    follow(json.loads(line), control, sys.stdout.buffer, rest)
    return 0


def follow(cmd: dict, control: int, out, pending: bytes = b"") -> None:
    """Follow cmd["path"] from cmd["offset"] and write batches to `out` until `control` closes.
    A line "final BUDGET" on `control`: the job has ended; read to the end of the log (at most
    BUDGET more bytes), finish its last line, send a batch with done, and wait to be let go."""
    from log_parsers import LineAssembler, build_parser

    offset = int(cmd["offset"])
    max_offset = cmd.get("max_offset")
    asm = LineAssembler(offset)
    parser = build_parser(cmd.get("parser"), cmd.get("state"))
    feed = parser.feed_line
    fh = None
    final_left = None  # bytes left to read once the job has ended
    idle = 0.005

    def send(lines, done=False):
        pts = []
        for line in lines:
            try:
                pts += feed(line)
            except (ValueError, OverflowError, RecursionError):  # a line no parser should choke on (5,000 digits)
                pass
        if pts or asm.consumed != send.offset or done:
            names, vals, steps, epochs = map(list, zip(*pts)) if pts else ([], [], [], [])
            keys: dict = {}
            k = [keys.setdefault(n, len(keys)) for n in names]  # each name once a batch, its points by index
            out.write(json.dumps({"offset": asm.consumed, "state": parser.state(), "done": done, "keys": [n[:MAX_NAME] for n in keys],
                                  "k": k, "v": vals, "s": steps, "e": epochs}, separators=(",", ":")).encode() + b"\n")
            out.flush()
            send.offset = asm.consumed
    send.offset = offset

    def opened():
        try:
            f = open(cmd["path"], "rb")
        except FileNotFoundError:
            return None
        f.seek(offset)
        return f

    def let_go():  # the last batch is sent: wait for the daemon to close the control pipe
        while os.read(control, 1 << 16):
            pass

    while True:
        while b"\n" in pending:  # the daemon's word: "final BUDGET"
            line, pending = pending.split(b"\n", 1)
            if line.startswith(b"final "):
                final_left = max(0, int(line.split()[1]))
        if fh is None:
            fh = opened()
        data = b""
        if fh is not None:
            want = CHUNK
            if max_offset is not None:
                want = max(0, min(want, int(max_offset) - fh.tell()))
            if final_left is not None:
                want = min(want, final_left)
            data = fh.read(want) if want else b""
        if data:
            idle, wait = 0.005, 0.0
            if final_left is not None:
                final_left -= len(data)
            send(asm.feed(data))
        elif final_left is not None:  # the job has ended and its log is read (or its budget spent)
            send(asm.finish(), done=True)
            let_go()
            return
        else:
            wait = idle if fh is not None else 0.05
            idle = min(idle * 2, IDLE_MAX)
        r, _, _ = select.select([control], [], [], wait)
        if r:
            got = os.read(control, 1 << 16)
            if not got:
                return  # the daemon let it go, or died
            pending += got


# -- the daemon's side --------------------------------------------------------------------------

class HelperBroke(Exception):
    """A helper that died, sent what a helper never sends, or was held stopped."""


_NUMS = frozenset({float, int, type(None)})


def check_batch(msg, offset: int, max_offset: int | None):
    """A helper's batch as (Columns of its points, offset, state, done), every field checked;
    ValueError if it is not one: metric names (`keys`, strings of at most MAX_NAME characters)
    and each point's index among them, values, steps and epochs (numbers or nulls, no bools)
    in lists of one length, an offset from `offset` on and not past `max_offset`, a state object."""
    from .store.metrics import Columns

    if not isinstance(msg, dict):
        raise ValueError("not an object")
    new, state, done = msg.get("offset"), msg.get("state"), msg.get("done")
    keys, k, v, s, e = (msg.get(f) for f in ("keys", "k", "v", "s", "e"))
    if type(new) is not int or new < offset or (max_offset is not None and new > max_offset):
        raise ValueError(f"offset {new!r} outside {offset}..{max_offset}")
    if not isinstance(state, dict) or type(done) is not bool:
        raise ValueError("state or done of the wrong type")
    if not all(type(x) is list for x in (keys, k, v, s, e)) or not len(k) == len(v) == len(s) == len(e):
        raise ValueError("keys, k, v, s, e: lists of one length expected")
    if keys and (set(map(type, keys)) != {str} or max(map(len, keys)) > MAX_NAME):
        raise ValueError("a metric name that is not a string of at most MAX_NAME characters")
    if k and (set(map(type, k)) != {int} or not set(map(type, v)) <= _NUMS or not set(map(type, s)) <= _NUMS
              or not set(map(type, e)) <= _NUMS):
        raise ValueError("a point's index or numbers of the wrong type")
    try:
        names = list(map(keys.__getitem__, k))
    except IndexError:
        raise ValueError("a point names no metric of the batch") from None
    if int in set(map(type, v)):  # (a parser gives floats) a whole number is a value as a float, one past floats' range none
        v = [x if type(x) is not int else float(x) if -_FLOAT_MAX < x < _FLOAT_MAX else None for x in v]
    s, e = _int64(s), _int64(e)
    return Columns(names, v, s, e), new, state, done


_FLOAT_MAX = 2 ** 1023
_INT64 = 2 ** 63


def _int64(col: list) -> list:
    """Steps or epochs with a whole number past what the store's INTEGER holds made None (a position
    of 20 digits is not one): the column as it was when every one fits."""
    if int not in set(map(type, col)) or all(-_INT64 <= x < _INT64 for x in col if type(x) is int):
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
        """The next batch line (bytes), or None when none came within `timeout`. HelperBroke
        when the helper ended, sent a line too long, or is held stopped."""
        deadline = time.monotonic() + timeout
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line = bytes(self.buf[:nl])
                del self.buf[:nl + 1]
                self.last_heard = time.monotonic()
                return line
            if len(self.buf) > MAX_MESSAGE:
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


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))
