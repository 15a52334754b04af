"""One HTTP request over a plain socket, read to the end: what a test needs to see the exact bytes a server sends."""

from __future__ import annotations

import socket


def raw_http(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send `request` (a whole HTTP/1.1 request, `Connection: close`) to 127.0.0.1:`port`; the full reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply
