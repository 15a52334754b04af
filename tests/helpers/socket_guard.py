"""Run a Python snippet with every non-loopback network attempt recorded and refused.

Used as `python socket_guard.py LOG -- CODE`: DNS look-ups of other hosts and connects to
non-loopback addresses are appended to LOG as JSON lines and fail with OSError.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import traceback

LOG = sys.argv[1]
CODE = sys.argv[3]
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _loopback(host: object) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _record(kind: str, target: object) -> None:
    with open(LOG, "a", encoding="utf-8") as handle:
        stack = [f"{f.filename}:{f.lineno} {f.name}" for f in traceback.extract_stack()[-30:-12]]
        handle.write(json.dumps({"kind": kind, "target": repr(target), "stack": stack}) + "\n")


def _check(sock: socket.socket, address: object) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
        if not _loopback(address[0]):
            _record("connect", address)
            raise OSError(f"socket guard: connection to {address} refused")


def connect(self, address):  # noqa: ANN001
    _check(self, address)
    return _real_connect(self, address)


def connect_ex(self, address):  # noqa: ANN001
    _check(self, address)
    return _real_connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):  # noqa: ANN001
    if not _loopback(host):
        _record("dns", host)
        raise socket.gaierror(socket.EAI_NONAME, "socket guard: name resolution refused")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
socket.getaddrinfo = getaddrinfo
exec(compile(CODE, "<guarded>", "exec"), {"__name__": "__main__"})
