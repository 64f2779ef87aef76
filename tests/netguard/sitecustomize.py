"""Network guard for the no-network tests, loaded by putting this folder on PYTHONPATH.

Every call that would reach past loopback (connect, sendto, a DNS lookup of a name other than
localhost, binding a non-loopback address) is appended as one line to the file named by
``LABELTOOL_NET_LOG``; outbound calls then raise ``PermissionError`` as a host without a network
would. Child processes inherit the environment, so they are guarded too.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import traceback
from typing import Any

LOG = os.environ.get("LABELTOOL_NET_LOG")
LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
INET = (socket.AF_INET, socket.AF_INET6)


def is_local_host(host: Any, *, wildcard_ok: bool) -> bool:
    """True for loopback addresses and names; IP literals need no lookup, other names do."""
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).split("%", 1)[0].strip("[]")
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or (wildcard_ok and ip.is_unspecified)


def record(kind: str, target: Any) -> None:
    """Append one line ``kind target  (where)`` to the log."""
    frames = [f for f in traceback.extract_stack()[:-2] if f.filename != __file__][-3:]
    where = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno}" for f in reversed(frames))
    if LOG:
        with open(LOG, "a", encoding="utf-8") as fh:
            fh.write(f"pid {os.getpid()} {kind} {target!r}  ({where})\n")


def blocked(kind: str, target: Any) -> PermissionError:
    record(kind, target)
    return PermissionError(f"network use blocked by the test guard: {kind} {target!r}")


def guard_socket() -> None:
    """Patch ``socket.socket`` methods and the resolver functions."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_sendto, real_bind = socket.socket.sendto, socket.socket.bind
    real_getaddrinfo = socket.getaddrinfo

    def outbound(sock: socket.socket, address: Any) -> bool:
        return sock.family in INET and isinstance(address, tuple) and not is_local_host(address[0], wildcard_ok=True)

    def connect(self: socket.socket, address: Any) -> None:
        if outbound(self, address):
            raise blocked("connect", address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if outbound(self, address):
            raise blocked("connect_ex", address)
        return real_connect_ex(self, address)

    def sendto(self: socket.socket, data: Any, *args: Any) -> int:
        if outbound(self, args[-1]):
            raise blocked("sendto", args[-1])
        return int(real_sendto(self, data, *args))

    def bind(self: socket.socket, address: Any) -> None:
        if self.family in INET and isinstance(address, tuple) and not is_local_host(address[0], wildcard_ok=False):
            record("bind", address)  # listening beyond loopback; recorded, left to the listening-address check
        real_bind(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not is_local_host(host, wildcard_ok=True):
            raise blocked("getaddrinfo", host)
        return real_getaddrinfo(host, *args, **kwargs)

    def by_name(name: str) -> Any:
        real = getattr(socket, name)

        def lookup(host: Any, *args: Any) -> Any:
            if not is_local_host(host, wildcard_ok=True):
                raise blocked(name, host)
            return real(host, *args)
        return lookup

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = sendto  # type: ignore[method-assign,assignment]
    socket.socket.bind = bind  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo
    for name in ("gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        setattr(socket, name, by_name(name))


if LOG:
    guard_socket()
