"""Whose fault is an error the daemon met: its own (a full disk, a read-only or failing store) or
the file's or the job's. The daemon's own trouble costs no file and no job: what it was doing waits
and is done again when the cause is gone. Only a file's or a job's own fault sets it aside."""

from __future__ import annotations

import errno
import sqlite3

_OWN_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.ENOMEM, errno.EMFILE, errno.ENFILE})


def own_trouble(e: BaseException) -> str | None:
    """A short description when `e` is the daemon's own trouble (its disk, its store), else None."""
    if isinstance(e, sqlite3.OperationalError):  # read-only, disk I/O, full, locked: never what a file says
        return f"the store: {e}"
    if isinstance(e, OSError) and e.errno in _OWN_ERRNOS:
        return (e.strerror or str(e)).lower()
    return None


def rollback(store):
    """End a transaction the error left open on this thread's connection (a COMMIT that failed)."""
    store.rollback_open()


class Backoff:
    """When to try again each thing that met the daemon's own trouble: 1 s, doubling to a cap."""

    def __init__(self, cap: float = 8.0):
        self.cap = cap
        self._due: dict[str, tuple[float, float]] = {}  # key -> (monotonic time it is due, last delay)

    def due(self, key: str, now: float) -> bool:
        """Whether `key` may be tried at monotonic time `now`."""
        entry = self._due.get(key)
        return entry is None or now >= entry[0]

    def failed(self, key: str, now: float) -> float:
        """Record one more failure of `key`; returns the delay until its next try."""
        delay = min(self.cap, self._due.get(key, (0.0, 0.5))[1] * 2)
        self._due[key] = (now + delay, delay)
        return delay

    def done(self, key: str):
        """`key` went through (or is gone): no more waiting for it."""
        self._due.pop(key, None)

    def __contains__(self, key: str) -> bool:
        return key in self._due

    def clear(self):
        """Forget every wait (everything is due now)."""
        self._due.clear()


class Guard:
    """Runs the parts of the loop so that an error costs the part's file or job, never the daemon,
    and says each trouble once while it repeats (keyed by part, or by "job ID" for one job's)."""

    def __init__(self, store, log):
        self.store = store
        self.log = log
        self._trouble: dict[str, str] = {}  # part of the loop (or "job ID") -> the error it last met

    def run(self, part: str, fn, now: float):
        """fn(now); an Exception it raises is logged (once while it repeats) and returned, never raised."""
        try:
            fn(now)
        except Exception as e:  # signals and SystemExit are not Exceptions: they still stop the daemon
            rollback(self.store)
            said = f"{type(e).__name__}: {e}"
            if self.first(part, said):
                why = own_trouble(e)
                if why:
                    self.log.error("%s: the daemon's own trouble (%s); it goes on and tries again", part, why)
                else:
                    self.log.exception("%s failed; the daemon goes on", part)
            return e
        self._trouble.pop(part, None)
        return None

    def first(self, key: str, said: str) -> bool:
        """Record that `key` met `said`; True when that is news (not what it last met)."""
        if self._trouble.get(key) == said:
            return False
        self._trouble[key] = said
        return True
