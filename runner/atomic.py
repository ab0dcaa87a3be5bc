"""One way to write a file that others read whole: a temporary file beside it, made new (O_EXCL,
never through a link), written, flushed to disk, given its mode and owner, then renamed into place.
A reader sees the old file or the new one, never a part; a name someone planted is never followed."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path


def write_bytes(path: Path, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None):
    """Replace `path` with `data` atomically, with this mode and (when given) this (uid, gid)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
        os.fchmod(fd, mode)
        if owner is not None and owner[0] != os.geteuid():
            os.fchown(fd, owner[0], owner[1])
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)


def write_json(path: Path, data, mode: int = 0o644, owner: tuple[int, int] | None = None, indent: int | None = None):
    """write_bytes of data as JSON."""
    write_bytes(path, json.dumps(data, indent=indent).encode(), mode, owner)
