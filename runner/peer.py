"""Who is at the other end of a loopback TCP connection: the uid that owns the client's socket,
read from the kernel's socket tables (/proc/net/tcp and tcp6), as identd answers it.

The HTTP API takes reads on loopback without a token (anyone on the host may read the queue), so
the daemon knows a reader only by her socket. It uses the uid to share its one thread of long reads
fairly among the people asking (http._Reads), never to decide what she may see or do: a token or a
signed-in session does that."""

from __future__ import annotations

import ipaddress


def _v4(ip) -> str:
    return "%08X" % int.from_bytes(ip.packed, "little")


def _v6(ip) -> str:
    raw = ip.packed  # four 32-bit words, each printed in the host's (little-endian) order
    return "".join("%08X" % int.from_bytes(raw[i:i + 4], "little") for i in range(0, 16, 4))


def loopback_uid(host: str, port: int, tables: dict | None = None) -> int | None:
    """The uid owning the local TCP socket at host:port (the client end of a loopback connection
    to this host), or None when there is none or the address is not a loopback one. `tables`:
    {path: text} read instead of the files (tests)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    v4 = ip if ip.version == 4 else ip.ipv4_mapped  # a dual-stack server sees an IPv4 client as ::ffff:a.b.c.d
    if not (v4 or ip).is_loopback:
        return None
    # the client's socket is an IPv4 one (in tcp) or an IPv6 one (in tcp6, an IPv4 address mapped)
    wanted = [("/proc/net/tcp", f"{_v4(v4)}:{port:04X}"), ("/proc/net/tcp6", f"{_v6(ipaddress.IPv6Address('::ffff:' + str(v4)))}:{port:04X}")] \
        if v4 else [("/proc/net/tcp6", f"{_v6(ip)}:{port:04X}")]
    for p, want in wanted:
        try:
            text = tables[p] if tables is not None else open(p).read()
        except (OSError, KeyError):
            continue
        for line in text.splitlines()[1:]:
            f = line.split()
            if len(f) > 7 and f[1] == want:
                return int(f[7]) if f[7].isdigit() else None
    return None
