"""What every request to the daemon's HTTP server passes before a route sees it, and the bounds of
the server itself (the API and the dashboard alike).

- Its Host must be a name of this server (`Hosts`): the bind's host, for a loopback bind
  127.0.0.1, localhost and [::1], and the names a site lists in `[server] hostnames`. A page of
  another site that rebinds its DNS name to 127.0.0.1 sends its own name and gets 421.
- Its body is capped (`[server] max_body_bytes`, default MAX_BODY_BYTES): a declared length over
  the cap is refused before a byte is read, a body that grows past it is cut off with 413.
- Every answer carries headers that keep what a page shows inert: nosniff, no framing, and on
  HTML a Content-Security-Policy that runs only the server's own script files.

`server(app, bind, settings)` makes the uvicorn server: a connection must send a complete request
head within HEADER_SECONDS and then its whole body within BODY_SECONDS, idle keep-alive connections
close after KEEP_ALIVE_SECONDS, and at most `max_connections` are open at once: a new one displaces
the longest-idle one, else the one that has waited longest for the rest of its body, else the one
whose answer has waited longest for its client to read it. An answer its client reads nothing of
for WRITE_SECONDS is dropped with its connection, and answers held for clients that do not read
are STALLED_BYTES at most (the longest stalled go first). So neither a flood of idle connections,
nor one of requests whose bodies never come (sent with a valid token: the body is read before the
route knows who asks), nor one of requests whose answers are never read, can exhaust the daemon's
file descriptors or memory or lock everyone out.
"""

from __future__ import annotations

import ipaddress
import json
import resource
import socket

MAX_BODY_BYTES = 1 << 20
"""Largest request body by default (a job spec is a few KB); a site raises it with [server] max_body_bytes."""

MAX_CONNECTIONS = 1000
"""Most connections open at once by default ([server] max_connections); never more than half the fd limit."""

HEADER_SECONDS = 10.0
"""How long a connection may take to send a complete request head (after it opens, or after its last answer)."""

BODY_SECONDS = 30.0
"""How long a request may take to send its whole body once its head is in ([server] body_seconds)."""

KEEP_ALIVE_SECONDS = 5
"""How long an idle keep-alive connection is kept."""

WRITE_SECONDS = 60.0
"""How long an answer may wait for its client to read any of it ([server] write_seconds): a client
that reads nothing that long is closed, and the answer's bytes with it."""

STALLED_BYTES = 256 << 20
"""Most bytes of answers held for clients that do not read them ([server] stalled_mb): past it the
one stalled longest is closed. (A hostile pass held 1,000 connections each on an 8 MB answer it
never read: 8 GB of the daemon's memory, and every slot of the server, /healthz's too.)"""

BACKLOG = 128
"""Pending connections the kernel queues; asyncio accepts up to this many at once before any is
looked at, so it counts against the descriptors too."""

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
"""The dashboard's pages run the server's own script files only: no inline script, no event handler attribute."""

OWN_SCRIPTS = ("/docs", "/docs/oauth2-redirect", "/redoc")
"""FastAPI's API browsers: pages of its own making (inline script, assets from its CDN) that show no job's data."""


class BodyTooLarge(Exception):
    """A request body past the cap (answered 413 with one line)."""

    def __init__(self, limit: int):
        super().__init__(f"request body: larger than {limit} bytes; expected at most {limit} "
                         f"(a site raises it with [server] max_body_bytes)")
        self.limit = limit


def _split_host(value: str) -> str:
    """The name part of a Host header value ("name:port", "[v6]:port" or a bare name), lowercased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class Hosts:
    """The names a request's Host header may carry for a server bound to `bind`."""

    def __init__(self, bind: str, extra=()):
        host = bind.rpartition(":")[0].strip("[]").lower() or "127.0.0.1"
        self.wildcard = host in ("0.0.0.0", "::")
        names = {host} if not self.wildcard else set()
        if self.wildcard or host in LOOPBACK_NAMES or host.startswith("127."):
            names.update(LOOPBACK_NAMES)
        if self.wildcard:  # bound to every address: the machine's own names
            names.update({socket.gethostname().lower(), socket.getfqdn().lower()})
        names.update(_split_host(str(n)) for n in extra)
        self.names = frozenset(n for n in names if n)

    def refuse(self, header: bytes | None) -> str | None:
        """Why a Host header is not one of this server's names (one line), or None."""
        if not header:
            return "Host: missing; expected this server's name (a site lists more in [server] hostnames)"
        try:
            value = header.decode("ascii")
        except UnicodeDecodeError:
            return "Host: not ASCII; expected this server's name"
        name = _split_host(value)
        if name in self.names or (self.wildcard and _is_ip(name)):  # an address cannot be rebound, a name can
            return None
        shown = ", ".join(sorted(self.names)) + (" or an address of this machine" if self.wildcard else "")
        return f"Host: {value[:80]!r} is not a name of this server; expected {shown} (a site lists more in [server] hostnames)"


async def _answer(send, status: int, message: str):
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), (b"x-content-type-options", b"nosniff")]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: the Host check, the body cap and the response headers (see the module)."""

    def __init__(self, app, hosts: Hosts, max_body: int = MAX_BODY_BYTES):
        self.app, self.hosts, self.max_body = app, hosts, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = length = None
        for k, v in scope["headers"]:
            if k == b"host":
                host = v
            elif k == b"content-length":
                length = v
        why = self.hosts.refuse(host)
        if why:
            return await _answer(send, 421 if host else 400, why)
        if length is not None:
            if not length.strip().isdigit():
                return await _answer(send, 400, f"Content-Length: {length[:20]!r}; expected a number of bytes")
            if int(length) > self.max_body:
                return await _answer(send, 413, str(BodyTooLarge(self.max_body)))
        limit, seen = self.max_body, 0
        csp = scope["path"] not in OWN_SCRIPTS

        async def bounded():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # no declared length (chunked): counted as it comes
                    raise BodyTooLarge(limit)
            return message

        async def inert(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                            (b"referrer-policy", b"same-origin")]
                if csp and any(k == b"content-type" and v.startswith(b"text/html") for k, v in headers):
                    headers.append((b"content-security-policy", CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, bounded, inert)


def fd_limit() -> int:
    """The soft limit of open files of this process."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft limit of open files to the hard one (systemd starts services at 1,024);
    returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard
    if hard == resource.RLIM_INFINITY:
        try:
            want = int(open("/proc/sys/fs/nr_open").read())
        except (OSError, ValueError):
            want = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, want
    return soft, soft


def connection_cap(max_connections: int = MAX_CONNECTIONS) -> int:
    """How many connections may be open now: the site's cap, within half the open files limit less
    an accept burst (the other half is for the store, the spool and the jobs' logs and pipes)."""
    return max(8, min(max_connections, fd_limit() // 2 - BACKLOG))


def _protocol(max_connections: int, header_seconds: float, body_seconds: float = BODY_SECONDS,
              write_seconds: float = WRITE_SECONDS, stalled_bytes: int = STALLED_BYTES):
    """uvicorn's HTTP/1.1 protocol (h11) with runner's connection bounds (see `server`)."""
    from collections import OrderedDict

    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    idle: OrderedDict = OrderedDict()  # connections with no request in progress, longest idle first
    waiting: OrderedDict = OrderedDict()  # connections whose request head came and whose body has not, longest first
    stalled: OrderedDict = OrderedDict()  # connections whose answer waits for them to read (their writing paused), longest first

    class Bounded(H11Protocol):
        """A connection that must send a request head in time, and that gives way when the server
        is full and it is the longest idle. Relies on H11Protocol's `cycle`, `transport` and the
        shared `connections` set (uvicorn 0.3x-0.5x)."""

        def connection_made(self, transport):
            super().connection_made(transport)
            self.head_timer = self.loop.call_later(header_seconds, self._head_late)
            self.body_timer = None
            self._idle()
            if len(self.connections) > connection_cap(max_connections):
                oldest = next(iter(idle))
                if oldest is not self:
                    oldest._busy()
                    oldest.transport.close()
                elif waiting:  # none idle: the one that has waited longest for its body gives way
                    next(iter(waiting))._drop()
                elif stalled:  # else the one whose answer has waited longest for it to read
                    next(iter(stalled))._drop()
                else:  # every other connection has a request in progress: this one waits its turn elsewhere
                    self._busy()
                    transport.close()

        def _idle(self):
            idle.pop(self, None)
            idle[self] = None

        def _busy(self):
            idle.pop(self, None)

        def handle_events(self):
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                self._busy()  # a request is in progress: its head arrived
                self.head_timer.cancel()
            if self.conn.their_state is h11.SEND_BODY:  # its head came, the rest of its body has not
                if self not in waiting:
                    waiting[self] = None
                    self.body_timer = self.loop.call_later(body_seconds, self._body_late)
            else:
                self._body_done()

        def _body_done(self):
            waiting.pop(self, None)
            if self.body_timer is not None:
                self.body_timer.cancel()
                self.body_timer = None

        def _body_late(self):
            if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
                self._drop()  # no whole body in time (a slow or stalled upload)

        def _drop(self):
            self._body_done()
            self._read_again()
            self._busy()
            self.transport.abort()  # (close() would still write what is buffered, to a client that does not read)

        def pause_writing(self):
            """The answer's bytes went past what the socket takes: the client is not reading (yet)."""
            super().pause_writing()
            if self in stalled:
                return
            stalled[self] = None
            self.write_timer = self.loop.call_later(write_seconds, self._write_late)
            held = 0
            for c in reversed(stalled):  # newest first: past the bound, the longest stalled go
                held += c.transport.get_write_buffer_size()
                if held > stalled_bytes and c is not self:
                    c._drop()

        def resume_writing(self):
            super().resume_writing()
            self._read_again()

        def _read_again(self):
            stalled.pop(self, None)
            if getattr(self, "write_timer", None) is not None:
                self.write_timer.cancel()
                self.write_timer = None

        def _write_late(self):
            if self in stalled and not self.transport.is_closing():
                self._drop()  # its client read nothing of its answer for write_seconds

        def on_response_complete(self):
            super().on_response_complete()
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self._idle()
                self.head_timer.cancel()
                self.head_timer = self.loop.call_later(header_seconds, self._head_late)

        def connection_lost(self, exc):
            self.head_timer.cancel()
            self._body_done()
            self._read_again()
            self._busy()
            super().connection_lost(exc)

        def _head_late(self):
            if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
                self._busy()
                self.transport.close()  # no complete request head in time (or an idle slowloris)

    return Bounded


def server(app, bind: str, settings: dict | None = None):
    """The uvicorn server for `app` on `bind` (host:port), with runner's bounds: `settings` is the
    config's [server] table (max_connections, header_seconds, body_seconds, write_seconds, stalled_mb)."""
    import uvicorn

    settings = settings or {}
    cap = int(settings.get("max_connections", MAX_CONNECTIONS))
    host, _, port = bind.rpartition(":")
    config = uvicorn.Config(app, host=host.strip("[]") or "127.0.0.1", port=int(port), log_level="warning", access_log=False,
                            lifespan="off", ws="none", http=_protocol(cap, float(settings.get("header_seconds", HEADER_SECONDS)),
                                                                          float(settings.get("body_seconds", BODY_SECONDS)),
                                                                          float(settings.get("write_seconds", WRITE_SECONDS)),
                                                                          int(float(settings.get("stalled_mb", STALLED_BYTES >> 20)) * (1 << 20))),
                            timeout_keep_alive=KEEP_ALIVE_SECONDS, limit_concurrency=cap + 1, backlog=BACKLOG)
    return uvicorn.Server(config)
