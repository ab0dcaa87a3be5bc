"""Who is at the other end of a loopback TCP connection: the uid that owns the client's socket,
asked of the kernel for that one connection (netlink's sock_diag, by both its ends), as identd
answers it.

The HTTP API takes reads on loopback without a token (anyone on the host may read the queue), so
the daemon knows a reader only by her socket. It uses the uid to share its one thread of long reads
fairly among the people asking (web.reads.Reads), never to decide what she may see or do: a token or a
signed-in session does that.

Not the socket tables (/proc/net/tcp): a teammate broke both ways of reading them (a hostile pass).
Matched by the client's address alone, a line of hers came first for his connection once he had
cycled through ports to one she had in use towards another peer, and TIME_WAIT lines (uid 0) of
ports he had churned made everyone root; and the tables are the kernel's text of every socket, 0.12 s
to read with 84,000 TIME_WAITs he made in 2 s, on the event loop, a request. sock_diag answers for
the one connection (both addresses and ports) in ~0.02 ms however many sockets there are."""

from __future__ import annotations

import ipaddress

ESTABLISHED = frozenset({1, 4, 5})  # TCP_ESTABLISHED, FIN_WAIT1, FIN_WAIT2 (a client that sent its request and shut its side)


def _diag(family: int, src: bytes, sport: int, dst: bytes, dport: int) -> tuple[int, int] | None:
    """(state, uid) that sock_diag gives the TCP socket whose own end is src:sport and whose peer
    is dst:dport (addresses packed, 4 or 16 bytes), or None when there is none. OSError when
    netlink cannot be asked."""
    import socket
    import struct

    sockid = struct.pack("!HH16s16s", sport, dport, src.ljust(16, b"\0"), dst.ljust(16, b"\0")) + struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)
    req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + sockid
    msg = struct.pack("=IHHII", 16 + len(req), 20, 1, 1, 0) + req  # SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST: one socket, no dump
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
    # inet_diag_msg: family, state, timer, retrans; its sockid (48 bytes); expires, rqueue, wqueue; uid
    return data[16 + 1], struct.unpack_from("=I", data, 16 + 64)[0]


def loopback_uid(host: str, port: int, server: tuple | None) -> int | None:
    """The uid owning the client's socket of the loopback TCP connection from host:port to
    `server` (its (address, port): the accepted socket's own), or None: not a loopback address, no
    such live connection (a socket in TIME_WAIT is no one's), or no netlink to ask."""
    import socket

    try:
        ip, sip = ipaddress.ip_address(host), ipaddress.ip_address(server[0])
        sport = int(server[1])
    except (ValueError, TypeError, IndexError):
        return None
    v4 = ip if ip.version == 4 else ip.ipv4_mapped  # a dual-stack server sees an IPv4 client as ::ffff:a.b.c.d
    s4 = sip if sip.version == 4 else sip.ipv4_mapped
    if not (v4 or ip).is_loopback:
        return None
    if v4 and s4:  # the client's socket is an IPv4 one, or an IPv6 one with mapped addresses
        asks = [(socket.AF_INET, v4.packed, s4.packed),
                (socket.AF_INET6, ipaddress.IPv6Address("::ffff:" + str(v4)).packed, ipaddress.IPv6Address("::ffff:" + str(s4)).packed)]
    elif v4 or s4:
        return None
    else:
        asks = [(socket.AF_INET6, ip.packed, sip.packed)]
    try:
        for family, src, dst in asks:
            got = _diag(family, src, port, dst, sport)
            if got is not None:
                return got[1] if got[0] in ESTABLISHED else None
    except OSError:
        pass
    return None
