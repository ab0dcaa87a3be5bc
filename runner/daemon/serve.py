"""The daemon's HTTP face: its socket bound in the main thread at the start (so a port that cannot
be had stops the daemon with one line), then uvicorn serving runner.http's app in a thread."""

from __future__ import annotations

import threading

from ..exceptions import RunnerError


def bind_http(http_bind: str):
    """(the listening socket of http_bind, the bind with the port the kernel chose for port 0).

    Made here in the main thread: a port that cannot be had stops the daemon with one line
    (uvicorn, left to bind in its thread, logs the error and ends only that thread: the daemon
    ran on without HTTP)."""
    import socket

    from ..web.guard import BACKLOG

    host, _, port = http_bind.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, ValueError) as e:
        raise RunnerError(f"cannot serve HTTP on {http_bind}: {getattr(e, 'strerror', None) or e} "
                          "(expected HOST:PORT; set --http or [daemon] http)") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart while old connections linger
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        import errno

        why = (e.strerror or str(e)).lower()
        hint = "another daemon? " if e.errno == errno.EADDRINUSE else ""
        raise RunnerError(f"cannot serve HTTP on {http_bind}: {why} ({hint}set --http or [daemon] http)") from None
    if int(port) == 0:
        http_bind = f"{http_bind.rpartition(':')[0]}:{sock.getsockname()[1]}"
    return sock, http_bind


def start_http(home, daemon, http_bind: str, sock):
    """Serve the API and the dashboard on `sock` in a thread of its own; returns the server (set
    its should_exit to stop it). `daemon`: what the status and /metrics read of the running daemon."""
    from ..http import create_app
    from ..web.guard import server

    app = create_app(home, daemon=daemon)
    http_server = server(app, http_bind, home.config.get("server", {}))  # bounded connections
    t = threading.Thread(target=http_server.run, kwargs={"sockets": [sock]}, name="http", daemon=True)
    t.start()
    return http_server
