"""One way to write a file that others read whole: a temporary file beside it, made new (O_EXCL,
never through a link), written, flushed to disk, given its mode and owner, then renamed into place.
A reader sees the old file or the new one, never a part; a name someone planted is never followed.

The same for a folder (`make_dir`): filled under a temporary name of our own (0700 while it is
filled, so nobody can plant a link in it), given its mode, then renamed into place.

Standard library only and no pathlib (the shim, `python -I -S shim.py`, loads this file by its path
and must start in ~10 ms); a Path is taken wherever a path is.
"""

from __future__ import annotations

import json
import os

_STEM_MAX = 200
"""The most characters of the final name kept in a temporary name (NAME_MAX is 255: room for the rest)."""


class NotPlaced(OSError):
    """make_dir's folder was made but could not be renamed to its name: something is there."""


def _tmp_name(path, tmp_dir=None) -> str:
    """A hidden name of our own beside `path` (or in `tmp_dir`) that no earlier writer used."""
    folder, name = os.path.split(os.fspath(path))
    if tmp_dir is not None:
        folder = os.fspath(tmp_dir)
    return os.path.join(folder, f".{name[:_STEM_MAX]}.{os.getpid()}.{os.urandom(4).hex()}")


def reserve(path, size: int, mode: int = 0o644, tmp_dir=None):
    """A temporary file for a later `write_bytes(path, ..., reserved=it)`, made now with `size` bytes of
    disk space allocated, so that the write still succeeds on a full disk (the shim's exit.json).
    None when it cannot be made; a filesystem without fallocate gives a plain empty file."""
    tmp = _tmp_name(path, tmp_dir)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except OSError:
        return None
    try:
        os.posix_fallocate(fd, 0, size)
    except (OSError, AttributeError):
        pass
    return tmp, fd


def _write_all(fd: int, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _discard(tmp: str):
    try:
        os.unlink(tmp)
    except OSError:
        pass


def write_bytes(path, data, mode: int | None = 0o644, owner: tuple[int, int] | None = None, *,
                fsync: bool = True, tmp_dir=None, reserved=None):
    """Replace `path` with `data` atomically, with this mode and (when given) this (uid, gid).

    `data`: bytes, or a binary file object read to its end in chunks (never opened again by name).
    `mode` None: the file keeps what its creation with 0644 and the umask gave (no chmod).
    `fsync` False: no flush to disk before the rename (a copy that can be made again).
    `tmp_dir`: where the temporary file is made when not beside `path` (on the same filesystem), for a
    folder whose readers must never see it (the spool, watched by the daemon).
    `reserved`: what `reserve(path, ...)` gave; it is written over and truncated to the data.
    A failure leaves no temporary file behind and `path` as it was."""
    if reserved is not None:
        tmp, fd = reserved
    else:
        tmp = _tmp_name(path, tmp_dir)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644 if mode is None else mode)
    try:
        try:
            if reserved is not None:
                os.lseek(fd, 0, os.SEEK_SET)
            if isinstance(data, (bytes, bytearray, memoryview)):
                _write_all(fd, data)
                size = len(data)
            else:
                size = 0
                while chunk := data.read(1 << 20):
                    _write_all(fd, chunk)
                    size += len(chunk)
            if reserved is not None:
                os.ftruncate(fd, size)
            if fsync:
                os.fsync(fd)
            if mode is not None:
                os.fchmod(fd, mode)
            if owner is not None and owner[0] != os.geteuid():
                os.fchown(fd, owner[0], owner[1])
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise


def fill_file(path, fill, mode: int = 0o644, *, fsync: bool = True, fsync_dir: bool = False, tmp_dir=None):
    """Replace `path` atomically with a file that `fill(tmp)` writes by its name (for a writer that opens the
    file itself, such as SQLite's backup into a new database): the temporary file is made new and empty first
    (O_EXCL, never through a link, `mode`), filled, flushed to disk (`fsync`), given `mode`, renamed into place,
    and with `fsync_dir` the folder is flushed too, so that the rename outlives a crash. A failure leaves no
    temporary file behind and `path` as it was. Returns what `fill` returned."""
    tmp = _tmp_name(path, tmp_dir)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode))
    try:
        out = fill(tmp)
        fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            if fsync:
                os.fsync(fd)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if fsync_dir:
            dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except BaseException:
        _discard(tmp)
        raise
    return out


def write_json(path, data, mode: int | None = 0o644, owner: tuple[int, int] | None = None, indent: int | None = None,
               **how):
    """write_bytes of data as JSON (`how`: write_bytes' keywords)."""
    write_bytes(path, json.dumps(data, indent=indent).encode(), mode, owner, **how)


def _umask_mode() -> int:
    """What a plain mkdir gives under this process's umask, read without changing it: the daemon is
    threaded, and a umask set to 0 for a moment would be every other thread's too (Linux's
    /proc/self/status says it; elsewhere it is set and put back)."""
    try:
        with open("/proc/self/status") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0)
        os.umask(umask)
    return 0o777 & ~umask


def make_dir(path, fill, mode: int | None = -1):
    """Make the folder `path` whole or not at all: `fill(tmp)` fills a new folder of our own beside it
    (made with mkdtemp: 0700, a name nobody could have planted), which is then given `mode` (-1: what
    a plain mkdir gives under the umask; None: as `fill` left it) and renamed to `path`.

    The rename never follows a link; it fails (NotPlaced, an OSError; the temporary folder removed) when `path` is
    there already, a file, a link or a folder with anything in it (an empty one is replaced), so that
    two makers of the same folder never mix their files: the first one's stays. A failure of `fill` removes the temporary
    folder and raises. Returns `path`."""
    import shutil
    import tempfile
    from pathlib import Path

    path = os.fspath(path)
    folder, name = os.path.split(path)
    tmp = tempfile.mkdtemp(prefix=f".{name[:_STEM_MAX]}.", dir=folder or ".")
    try:
        fill(Path(tmp))
        if mode is not None:
            os.chmod(tmp, _umask_mode() if mode == -1 else mode)
        try:
            os.rename(tmp, path)
        except OSError as e:
            raise NotPlaced(e.errno, e.strerror, path) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Path(path)
