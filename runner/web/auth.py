"""Who is signed in to the dashboard, and writes protected against cross-site requests.

A session is a signed cookie: `uid.expiry.signature`, signed with the daemon's secret
($RUNNER_HOME/web.key, 0600) and with the hash of the user's current token, so rotating one's
token (`runner token --rotate`) ends every session of hers. A person gets one by running
`runner web-login` on the server (a link valid for a few minutes, usable once, signed with her
token, which only she and the daemon can read) or by pasting her token into the sign-in page.

Writes from a page need the session and a CSRF value bound to it (a form field or the
X-Runner-CSRF header htmx sends). Writes, signing in and signing out are refused when the browser
says the request comes from another site (Sec-Fetch-Site, Origin or Referer), so no page elsewhere
can sign a person in as someone else or out. A `next=` address is followed only when it is a
path of this site. The cookie is HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time

COOKIE = "runner_session"
SESSION_SECONDS = 12 * 3600
LINK_SECONDS = 300


def _secret(home) -> bytes:
    """The daemon's signing key, made on first use (0600, the daemon's)."""
    path = home.root / "web.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        from ..atomic import write_bytes

        write_bytes(path, secrets.token_bytes(32), mode=0o600)
        return path.read_bytes()


def link_signature(token_hash: str, uid: int, expiry: int, nonce: str) -> str:
    """What `runner web-login` signs with (the hash of) her token and the server checks."""
    return hmac.new(token_hash.encode(), f"login.{uid}.{expiry}.{nonce}".encode(), hashlib.sha256).hexdigest()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Signs and reads session cookies; checks one-time login links."""

    def __init__(self, home, book):
        self.home = home
        self.book = book
        self.key = _secret(home)
        self._used: dict[str, float] = {}  # nonces of links already used, until they expire
        self._lock = threading.Lock()

    def _sig(self, uid: int, expiry: int) -> str | None:
        th = self.book.hash_of(uid)
        if th is None:
            return None
        return hmac.new(self.key, f"session.{uid}.{expiry}.{th}".encode(), hashlib.sha256).hexdigest()

    def make(self, uid: int, now: float | None = None) -> str:
        expiry = int((time.time() if now is None else now) + SESSION_SECONDS)
        return f"{uid}.{expiry}.{self._sig(uid, expiry)}"

    def uid(self, cookie: str | None, now: float | None = None) -> int | None:
        """The user of a valid, unexpired session cookie, else None."""
        if not cookie or cookie.count(".") != 2:
            return None
        uid_s, exp_s, sig = cookie.split(".")
        if not (uid_s.isdigit() and exp_s.isdigit()) or int(exp_s) < (time.time() if now is None else now):
            return None
        want = self._sig(int(uid_s), int(exp_s))
        return int(uid_s) if want and hmac.compare_digest(want, sig) else None

    def csrf(self, cookie: str) -> str:
        """The CSRF value of a session (its pages carry it; its writes must send it back)."""
        return hmac.new(self.key, f"csrf.{cookie}".encode(), hashlib.sha256).hexdigest()[:40]

    def check_link(self, uid: int, expiry: int, nonce: str, sig: str, now: float | None = None) -> str | None:
        """None when the one-time link is good (and marks it used), else why not, in one line."""
        now = time.time() if now is None else now
        if expiry < now:
            return "this sign-in link has expired: run `runner web-login` again"
        if expiry > now + LINK_SECONDS + 60:
            return "this sign-in link is not one `runner web-login` made"
        th = self.book.hash_of(uid)
        if th is None or not hmac.compare_digest(link_signature(th, uid, expiry, nonce), sig):
            return "this sign-in link is not valid (was the token rotated?): run `runner web-login` again"
        with self._lock:
            for n, t in list(self._used.items()):
                if t < now:
                    del self._used[n]
            if nonce in self._used:
                return "this sign-in link was already used: run `runner web-login` again"
            self._used[nonce] = expiry
        return None


def new_link(home, token: str, uid: int, base_url: str, now: float | None = None) -> str:
    """A one-time sign-in link for the holder of `token` (made by `runner web-login`, as her)."""
    expiry = int((time.time() if now is None else now) + LINK_SECONDS)
    nonce = secrets.token_urlsafe(12)
    sig = link_signature(token_hash(token), uid, expiry, nonce)
    return f"{base_url.rstrip('/')}/ui/login?u={uid}&e={expiry}&n={nonce}&s={sig}"


def cross_site(request) -> str | None:
    """Why the request comes from another site, in one line, or None when it comes from a page of
    this one (or from no page at all: a link pasted into the address bar, a script with a token)."""
    from urllib.parse import urlsplit

    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site in ("cross-site", "same-site"):
        return f"Sec-Fetch-Site: {fetch_site}; expected a request from a runner page (cross-site request refused)"
    host = request.headers.get("host", "").lower()
    for header in ("origin", "referer"):
        value = request.headers.get(header)
        if value is None:
            continue
        if value == "null":  # an opaque origin: a sandboxed frame, a data: page
            return f"{header.capitalize()}: null; expected a runner page of {host} (cross-site request refused)"
        if urlsplit(value).netloc.lower() != host:
            return f"{header.capitalize()}: {value[:80]} is another site; expected {host} (cross-site request refused)"
        return None
    return None  # neither header (an old browser, a privacy setting): a write still needs its CSRF value


def safe_next(value, default: str = "/ui/") -> str:
    """`value` when it is a path of this site ("/ui/jobs/x"), else `default`: never another site
    ("//evil", "https://evil", "/\\evil", "javascript:...")."""
    from urllib.parse import urlsplit

    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//") or len(value) > 2000:
        return default
    if "\\" in value or any(ord(c) < 0x21 or ord(c) == 0x7f for c in value):
        return default  # browsers read a backslash as a slash; control characters and spaces are dropped
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else default
