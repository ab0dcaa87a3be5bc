"""Personal tokens: who is behind an HTTP request.

Each user has one token in $RUNNER_HOME/tokens/UID, a file she owns and alone may read (the
daemon reads it as root). `runner token` prints it, asking the daemon (through the spool, which
knows her by the file's owner) to make it the first time or to replace it with --rotate. A request
with `Authorization: Bearer TOKEN` acts as that user; nothing in a request's body says who it is.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

PREFIX = "rn_"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_path(home, uid: int) -> Path:
    """Where the token of uid is kept."""
    return home.tokens / str(uid)


def ensure_dir(home):
    """The tokens folder: the daemon's, searchable (not listable) by everyone, so each user reaches her own file."""
    try:
        os.mkdir(home.tokens, 0o711)
    except FileExistsError:
        pass
    os.chmod(home.tokens, 0o711)


def write(home, uid: int, gid: int, rotate: bool = False) -> str:
    """Make (or, with rotate, replace) the token of uid; returns it. Written atomically, 0600, owned by uid."""
    path = token_path(home, uid)
    if path.exists() and not rotate:
        return read(home, uid)
    from .atomic import write_bytes

    token = PREFIX + secrets.token_urlsafe(32)
    write_bytes(path, (token + "\n").encode(), mode=0o600, owner=(uid, gid))
    return token


def read(home, uid: int) -> str | None:
    """The token of uid, if it has one (and the caller may read it)."""
    try:
        return token_path(home, uid).read_text().strip() or None
    except (FileNotFoundError, PermissionError):
        return None


class TokenBook:
    """token -> uid for the daemon, re-read when the tokens folder changes (a new or rotated token)."""

    def __init__(self, home):
        self.home = home
        self._stamp = None
        self._by_hash: dict[str, int] = {}

    def _load(self):
        try:
            stamp = os.stat(self.home.tokens).st_mtime_ns
        except FileNotFoundError:
            self._by_hash, self._stamp = {}, None
            return
        if stamp == self._stamp:
            return
        by_hash = {}
        for name in os.listdir(self.home.tokens):
            if not name.isdigit():
                continue
            path = self.home.tokens / name
            try:
                st = os.lstat(path)
                if st.st_uid != int(name) and st.st_uid != os.geteuid():
                    continue  # a token file must belong to its user (or be the daemon's own making)
                token = path.read_text().strip()
            except OSError:
                continue
            if token:
                by_hash[_hash(token)] = int(name)
        self._by_hash, self._stamp = by_hash, stamp

    def hash_of(self, uid: int) -> str | None:
        """The hash of uid's current token (what sessions and sign-in links are bound to), or None."""
        self._load()
        return next((h for h, u in self._by_hash.items() if u == uid), None)

    def uid(self, token: str) -> int | None:
        """The user a token belongs to, or None."""
        self._load()
        h = _hash(token)
        for known, uid in self._by_hash.items():
            if hmac.compare_digest(known, h):
                return uid
        return None
