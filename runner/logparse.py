"""A running job's log parsed by a helper that has dropped to the job's user, never by the root
daemon (#30; the rule of runner.privsep: root does not parse what a user supplied).

One helper per followed job: `python -I -m runner.logparse UID GID GROUPS`, started by the daemon
as root, loads log_parsers, drops to the job's user for good (runner.privdrop._drop: no way back,
no_new_privs, not dumpable), and only then reads its one command (the log's path, the offset and
parser state the store holds, the parser spec) from stdin. It reads the log on from that offset as
the job writes it, 64 KiB at a time, and writes one batch to stdout (`encode`: a JSON header line, then
its columns as bytes): the points of the batch's whole lines, the offset just past them and the parser's state there. The daemon stores a
batch's points with its offset and state in one transaction, as it stored its own parse before:
a helper or daemon killed at any moment loses nothing and repeats nothing, since the next helper
starts at the committed offset. A helper ends when its stdin closes (the daemon let it go, or died).

Parsing runs beside the daemon's one core, which only stores: on a 2-core Intel Xeon, 8 jobs flooding
their logs are stored at 729-758 k points/s (314-323 k when the daemon parsed them itself), one
job's million-line log at 0.37-0.38 M lines/s (0.11), the generic parser's loop in C where it is built
(log_parsers/_generic_c.c; 0.29 in Python); docs/bench/metrics-ingest.md. A helper costs about
12 MB of memory and 30 ms of CPU to start; a job whose log asks for no metrics (`parser: none`) has none.

The daemon treats a batch as its user's input: bounded lines, every field's type checked, an offset
that only moves forward and never past what may be read. A helper that breaks that, dies, or is held
stopped is ended and another starts from the committed offset after RETRY_SECONDS, doubled each time;
once more than RESPAWNS have broken, the job's log is no longer parsed (the daemon's log says why), the job runs on.
The daemon's end is runner/logbatches.py (ParseHelper, check_batch, HelperWatcher).
"""

from __future__ import annotations

import json
import os
import select
import sys

CHUNK = 64 << 10  # log bytes a helper reads, parses and sends at a time
MAX_NAME = 256  # longest metric name a helper sends (longer ones are cut)
IDLE_MAX = 0.05  # longest a helper sleeps between looks at a quiet log (a printed line is seen within it)


CODES = {"k": ("I",), "v": ("d",), "s": ("q", "-"), "e": ("q", "-")}
"""How each column of a batch may come as bytes after its header line: "I" unsigned 32-bit ints,
"d" doubles, "q" signed 64-bit ints, "-" every one null (no bytes); native byte order (one host).
A column that fits none (a step past 64 bits, some steps null) comes as a JSON list in the header."""


def encode(head: dict, k: list, vals: list, steps: list, epochs: list) -> bytes:
    """A batch on the wire: a JSON header line (offset, state, done, keys, `n` points and each
    column's code or its JSON list), then the bytes of the coded columns in the order k, v, s, e.
    Doubles and ints as bytes cost ~0.1 us a point to write and read; as JSON text (a float's repr,
    then parsing it back) they cost ~1 us a line's worth."""
    from array import array

    blobs = []
    head["n"] = len(k)
    for name, col in (("k", k), ("v", vals), ("s", steps), ("e", epochs)):
        if name in ("s", "e") and col.count(None) == len(col):
            head[name] = "-"
            continue
        code = CODES[name][0]
        try:
            blob = array(code, col)
        except (TypeError, OverflowError):  # a null among them, or a number past the code's range
            head[name] = col
            continue
        head[name] = code
        blobs.append(blob.tobytes())
    return b"".join([json.dumps(head, separators=(",", ":")).encode(), b"\n", *blobs])


def encode_columns(head: dict, n: int, k: bytes, v: bytes, s: bytes, e: bytes) -> bytes:
    """encode() of columns already as bytes (log_parsers.generic.columns: uint32 key indexes, double
    values, int64 steps and epochs with -1 for None): a position column all None is "-", one with
    some None a JSON list (as encode sends them), else its bytes as they are."""
    from array import array

    head["n"] = n
    blobs = [k, v]
    head["k"], head["v"] = "I", "d"
    for name, col in (("s", s), ("e", e)):
        nones = array("q", col).count(-1) if n else 0
        if nones == n:
            head[name] = "-"
        elif nones:
            head[name] = [None if x < 0 else x for x in array("q", col)]
        else:
            head[name] = "q"
            blobs.append(col)
    return b"".join([json.dumps(head, separators=(",", ":")).encode(), b"\n", *blobs])


def serve(argv: list[str]) -> int:
    """The helper's life: load, drop to UID, read the command, follow the log."""
    import resource

    from .privdrop import HELPER_MEMORY, _drop

    uid, gid, groups = int(argv[0]), int(argv[1]), [int(g) for g in argv[2].split(",") if g]
    resource.setrlimit(resource.RLIMIT_AS, (HELPER_MEMORY, HELPER_MEMORY))
    # what the drop and the parse need, loaded while root's interpreter and libraries can still be read
    import array  # noqa: F401  (encode's; an extension module in the interpreter's lib-dynload, which she may not read)
    import ctypes  # noqa: F401  (privdrop's prctl)
    import log_parsers  # noqa: F401  (and every parser it may build)
    import log_parsers.regex  # noqa: F401
    import log_parsers.table  # noqa: F401

    import gc

    gc.freeze()  # what was loaded is never garbage: collections do not walk it
    gc.set_threshold(100_000, 50, 50)  # a batch's points are thousands of tuples kept a moment: not collected at every 700 (~20% of the parse)
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
    from log_parsers.generic import columns
    from log_parsers.regex import feed_lines

    offset = int(cmd["offset"])
    max_offset = cmd.get("max_offset")
    asm = LineAssembler(offset)
    parser = build_parser(cmd.get("parser"), cmd.get("state"))
    fh = None
    final_left = None  # bytes left to read once the job has ended
    idle = 0.005

    def send(lines, done=False):
        fast = columns(parser, lines)  # the generic parser's loop in C, where it is built
        if fast is not None:
            keys, n, k, v, s, e = fast
            if n or asm.consumed != send.offset or done:
                out.write(encode_columns({"offset": asm.consumed, "state": parser.state(), "done": done,
                                          "keys": [n[:MAX_NAME] for n in keys]}, n, k, v, s, e))
                out.flush()
                send.offset = asm.consumed
            return
        names, vals, steps, epochs = feed_lines(parser, lines)  # (a line a parser chokes on, 5,000 digits, passed over)
        if names or asm.consumed != send.offset or done:
            index = {n: i for i, n in enumerate(dict.fromkeys(names))}  # each name once a batch, its points by index
            k = list(map(index.__getitem__, names))
            out.write(encode({"offset": asm.consumed, "state": parser.state(), "done": done, "keys": [n[:MAX_NAME] for n in index]},
                             k, vals, steps, epochs))
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


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))
