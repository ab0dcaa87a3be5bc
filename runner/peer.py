"""Who is at the other end of a loopback TCP connection: the uid that owns the client's socket,
asked of the kernel for that one socket (netlink's sock_diag, by its address and port and the
server's), else read from its socket tables (/proc/net/tcp and tcp6), as identd answers it. The
tables are the kernel's text of every socket: 3 ms to read with 2,000 sockets open, which a
teammate could make the daemon pay a request; the one-socket question costs the same at any count.

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


def _diag_uid(family: int, src: bytes, sport: int, dst: bytes, dport: int) -> int | None:
    """sock_diag's uid of the TCP socket whose own address is src:sport and whose peer is
    dst:dport (addresses packed, 4 or 16 bytes), or None when there is none. OSError when netlink
    cannot be asked."""
    import socket
    import struct

    sockid = struct.pack("!HH16s16s", sport, dport, src.ljust(16, b"\0"), dst.ljust(16, b"\0")) + struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)
    req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + sockid
    msg = struct.pack("=IHHII", 16 + len(req), 20, 1, 1, 0) + req  # SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST: one socket
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4) as nl:  # NETLINK_SOCK_DIAG
        nl.settimeout(1.0)
        nl.sendto(msg, (0, 0))
        data = nl.recv(65536)
    if len(data) < 16:
        raise OSError("a short answer from sock_diag")
    kind = struct.unpack_from("=H", data, 4)[0]
    if kind == 2:  # NLMSG_ERROR: no such socket (ENOENT), or the question refused
        err = -struct.unpack_from("=i", data, 16)[0]
        if err == 2:
            return None
        raise OSError(err, "sock_diag refused the question")
    if kind != 20 or len(data) < 16 + 68:
        raise OSError("an answer sock_diag does not give")
    return struct.unpack_from("=I", data, 16 + 64)[0]  # inet_diag_msg: 4 bytes, the 48 of its sockid, 3 counts, then uid


def loopback_uid(host: str, port: int, tables: dict | None = None, server: tuple | None = None) -> int | None:
    """The uid owning the local TCP socket at host:port (the client end of a loopback connection
    to this host), or None when there is none or the address is not a loopback one. `server`:
    (address, port) of the server's end, to ask sock_diag for the one socket; `tables`: {path:
    text} read instead of the files (tests)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    v4 = ip if ip.version == 4 else ip.ipv4_mapped  # a dual-stack server sees an IPv4 client as ::ffff:a.b.c.d
    if not (v4 or ip).is_loopback:
        return None
    if server is not None and tables is None:
        try:
            sip = ipaddress.ip_address(server[0])
            s4 = sip if sip.version == 4 else sip.ipv4_mapped
            import socket

            if v4 and s4:  # the client's socket is an IPv4 one, or an IPv6 one with mapped addresses
                asks = [(socket.AF_INET, v4.packed, s4.packed),
                        (socket.AF_INET6, ipaddress.IPv6Address("::ffff:" + str(v4)).packed, ipaddress.IPv6Address("::ffff:" + str(s4)).packed)]
            else:
                asks = [(socket.AF_INET6, ip.packed, sip.packed)]
            for family, src, dst in asks:
                uid = _diag_uid(family, src, port, dst, int(server[1]))
                if uid is not None:
                    return uid
            return None
        except (OSError, ValueError, TypeError, IndexError):
            pass  # no netlink here (a container without it): the tables
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
