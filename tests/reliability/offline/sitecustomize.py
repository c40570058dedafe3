"""Test helper: with this folder first on PYTHONPATH, every network connection of a Python process
fails and is recorded (the path in $BLOCKED_NET_LOG gets one line per attempt).

Blocked: TCP/UDP connect and connect_ex, sendto, DNS lookups (getaddrinfo, gethostbyname*),
socket.create_connection. Unix sockets (local IPC) stay allowed.
"""

import os
import socket

_LOG = os.environ.get("BLOCKED_NET_LOG")
_INET = (socket.AF_INET, socket.AF_INET6)


def _blocked(what, target):
    if _LOG:
        with open(_LOG, "a") as f:
            f.write(f"pid {os.getpid()}: {what} {target!r}\n")
    raise OSError(101, f"network access blocked by the offline test: {what} {target!r}")


_connect, _connect_ex, _sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto


def connect(self, address):
    if self.family in _INET:
        _blocked("connect", address)
    return _connect(self, address)


def connect_ex(self, address):
    if self.family in _INET:
        _blocked("connect_ex", address)
    return _connect_ex(self, address)


def sendto(self, *args):
    if self.family in _INET:
        _blocked("sendto", args[-1])
    return _sendto(self, *args)


socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
socket.socket.sendto = sendto
socket.getaddrinfo = lambda host, *a, **k: _blocked("getaddrinfo", host)
socket.gethostbyname = lambda host: _blocked("gethostbyname", host)
socket.gethostbyname_ex = lambda host: _blocked("gethostbyname_ex", host)
socket.create_connection = lambda address, *a, **k: _blocked("create_connection", address)
