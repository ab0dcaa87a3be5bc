"""Spool intake: every file that lands in the spool is moved into spool/.taking, handed to the
handler of its kind (daemon/requests.py's table: a job, a cancel, tags, a token, an export) or set
aside with a reason, and never crashes or stalls the daemon."""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

from ..exceptions import RunnerError
from ..spool import SpoolFileError, pending, quarantine, read_record, user_name
from .faults import Backoff, own_trouble, rollback

log = logging.getLogger("runner.daemon.intake")

MAX_NAME = 200
"""The longest spool file name taken (runner's own are under 60 characters)."""


class Intake:
    """Takes the spool's files; `handlers`: {name suffix: handler(record, uid, now, again, born)}."""

    def __init__(self, store, home, handlers: dict):
        self.store = store
        self.home = home
        self.handlers = handlers  # a spool file's kind (the end of its name) -> what applies it
        self.unmovable = set()  # spool names the daemon may not move (another user's, with a non-root daemon)
        self.later = Backoff()  # spool names (and loop parts) waiting out the daemon's own trouble (a full disk)
        self.held = {}  # spool name -> its path in .taking, when it could not go back to the spool
        self.born = {}  # spool file name -> its ctime when taken (no backdated job)

    def ingest(self, now: float):
        """Take every spool file: jobs into the store, cancel requests applied, bad files quarantined.

        Each file is first moved into spool/.taking/ (the daemon's own folder), so a user can no
        longer swap it, and so a file that takes the daemon down with it is not taken twice: one
        left there by a daemon that died is retried once (a SIGKILL mid-intake loses no job), and
        set aside if it is found there again. A file the daemon could not take for a trouble of
        its own (a full disk, a read-only store) goes back to the spool and is taken later.
        """
        mono = time.monotonic()
        for name, path in list(self.held.items()):  # waiting in .taking: they could not go back
            if self.later.due(name, mono):
                self.take(path, now)
        for path in pending(self.home):
            if path.name in self.unmovable or path.name in self.held or not self.later.due(path.name, mono):
                continue  # (a name held in .taking is not moved over: the held file is someone's)
            taking = self.home.taking / path.name
            try:
                # When the file was last changed, by the kernel's clock: its writer can make this
                # later (any change does), never earlier, so a record's own submitted_at may not
                # backdate the job before it (a forged 1970 would head the queue).
                born = os.lstat(path).st_ctime
                os.rename(path, taking)
            except FileNotFoundError:
                continue
            except OSError as e:
                if os.geteuid() == 0 or e.errno not in (errno.EPERM, errno.EACCES):
                    self._wait(path.name, f"cannot move it into spool/.taking: {e.strerror}")
                    continue
                self.unmovable.add(path.name)
                why = (f"this daemon runs as {user_name(os.geteuid())} and runs only that user's jobs; a daemon "
                       f"that serves a team runs as root (docs/server.md)")
                try:
                    fd = os.open(self.home.quarantine / (path.name[:200] + ".reason"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
                    os.write(fd, (why + " (the file is left in the spool: only its owner may remove it)\n").encode())
                    os.close(fd)
                except OSError:
                    pass
                log.warning("cannot take spool file %s: %s", path.name, why)
                continue
            self.born[path.name] = born
            if len(path.name) > MAX_NAME:  # no room for .retry or .reason beside it; runner's names are short
                self.born.pop(path.name, None)
                self._set_aside(taking, path.name, f"a name of {len(path.name)} characters; a spool file's name has at most {MAX_NAME}")
                continue
            self.take(taking, now)

    def resume(self, now: float):
        """Files a previous daemon was taking in when it died: retry each once, then set it aside."""
        try:
            names = sorted(os.listdir(self.home.taking))
        except OSError as e:
            log.error("cannot read %s: %s", self.home.taking, e.strerror)
            return
        for name in names:
            path = self.home.taking / name
            if name.endswith(".retry"):
                self._set_aside(path, name.removesuffix(".retry"), "the daemon stopped twice while taking this file in; "
                                "it is set aside (submit it again if it is yours)")
                continue
            retry = path.with_name(name + ".retry")
            try:
                os.rename(path, retry)
            except OSError as e:  # a read-only disk: take it unmarked
                log.warning("cannot mark %s as retried: %s", name, e.strerror)
                retry = path
            self.take(retry, now)

    def take(self, path: Path, now: float):
        """Take one file from spool/.taking; whatever it holds, it costs that file at most, never the daemon."""
        name = path.name.removesuffix(".retry")
        born = self.born.pop(name, None)
        try:
            owner = os.lstat(path).st_uid
            if owner != os.geteuid() and os.geteuid() != 0:
                raise SpoolFileError(f"this daemon runs as {user_name(os.geteuid())} and runs only that user's jobs; "
                                     f"{user_name(owner)}'s file is set aside (a daemon that serves a team runs as root)")
            rec, uid = read_record(path)
            kind = next((k for k in self.handlers if name.endswith(k)), None)
            if kind is None:
                *most, last = self.handlers
                raise SpoolFileError(f"not a {', '.join(most)} or {last} file")
            self.handlers[kind](rec, uid, now, again=path.name != name, born=born)
        except (SpoolFileError, RunnerError) as e:
            rollback(self.store)
            self._set_aside(path, name, f"{type(e).__name__}: {e}")
            return
        except Exception as e:  # a bug here must cost one file, never the daemon (signals are not Exceptions)
            rollback(self.store)
            why = own_trouble(e)
            if why:
                self._wait(name, why, path)
                return
            log.exception("quarantined %s: intake failed", name)
            self._set_aside(path, name, f"internal error while taking it in: {type(e).__name__}: {str(e)[:200]}")
            return
        self.later.done(name)
        self.held.pop(name, None)
        try:
            path.unlink(missing_ok=True)
        except OSError as e:  # taken; a restart finds it in .taking and knows its job (see take_job)
            log.warning("took %s but cannot remove it: %s", name, e.strerror)

    def _set_aside(self, path: Path, name: str, reason: str):
        self.later.done(name)
        self.held.pop(name, None)
        quarantine(self.home, path, reason)
        log.warning("quarantined %s: %s", name, reason)

    def _wait(self, name: str, why: str, path: Path | None = None):
        """The daemon's own trouble kept it from taking this file: it goes back to the spool (or
        stays in .taking when it cannot) and is tried again after a while, without end."""
        first = name not in self.later
        delay = self.later.failed(name, time.monotonic())
        if path is not None:
            back = self.home.spool / name
            try:
                os.link(path, back)  # never over a name someone made meanwhile
            except OSError:
                self.held[name] = path
            else:
                try:
                    os.unlink(path)
                    self.held.pop(name, None)
                except OSError:
                    try:
                        os.unlink(back)
                    except OSError:
                        pass
                    self.held[name] = path
        if first:
            log.warning("cannot take %s now (%s); it waits in the spool and is tried again every %.0fs at most",
                        name, why, self.later.cap)
        else:
            log.debug("cannot take %s yet (%s); next try in %.0fs", name, why, delay)
