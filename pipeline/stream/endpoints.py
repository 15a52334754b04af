"""Endpoint URLs and opening sockets on them (bind or connect, CURVE on tcp when configured).

Only `ipc://` and `tcp://` are accepted: stages are separate processes. tcp binds default to
loopback in every generated config; binding anything else without CURVE is allowed but logged
as a warning, since anyone who can reach the port could inject frames.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass

import zmq

from pipeline.errors import GhostboxError
from pipeline.stream.security import PeerAuth

log = logging.getLogger(__name__)

_TCP = re.compile(r"^tcp://(\[[0-9a-fA-F:.]+\]|[^:/\[\]]+):(\d+|\*)$")


@dataclass(frozen=True)
class Url:
    scheme: str  # "ipc" | "tcp"
    host: str  # tcp host, "" for ipc
    port: str  # tcp port ("*" only when binding), "" for ipc
    path: str  # ipc path, "" for tcp


def parse_url(url: str) -> Url:
    if url.startswith("ipc://"):
        path = url[6:]
        if not path or len(path) > 100:
            raise ValueError(f"ipc endpoint '{url}': path empty or longer than 100 characters")
        return Url("ipc", "", "", path)
    match = _TCP.match(url)
    if match is None:
        raise ValueError(f"endpoint '{url}': expected ipc://PATH or tcp://HOST:PORT")
    host, port = match.group(1), match.group(2)
    if port != "*" and not 1 <= int(port) <= 65535:
        raise ValueError(f"endpoint '{url}': port out of range")
    return Url("tcp", host.strip("[]"), port, "")


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def leaves_machine(url: str) -> bool:
    """True for a tcp hop to another host: frames then travel as JPEG when encoding is auto."""
    parsed = parse_url(url)
    return parsed.scheme == "tcp" and not is_loopback_host(parsed.host)


def open_socket(ctx: zmq.Context, kind: int, url: str, bind: bool, auth: PeerAuth | None, *,
                bind_url: str | None = None, hwm: int | None = None, identity: bytes | None = None,
                linger_ms: int = 2000, max_message_bytes: int | None = None, edge: str = "") -> zmq.Socket:
    """A socket of `kind` bound to or connected to `url`; peer authentication (CURVE or the graph
    token) applies to tcp only (ipc is protected by the file permissions of the run folder)."""
    sock = ctx.socket(kind)
    sock.linger = linger_ms  # closing flushes queued messages, but never hangs for ever
    if hwm is not None:
        sock.sndhwm = hwm
        sock.rcvhwm = hwm
    if identity is not None:
        sock.identity = identity
    if max_message_bytes is not None:
        sock.maxmsgsize = max_message_bytes  # a larger part disconnects its sender before it is read
    target = (bind_url or url) if bind else url
    parsed = parse_url(target)
    secured = auth is not None and auth.active and parsed.scheme == "tcp"
    if auth is not None and secured:
        auth.configure(ctx, sock, bind, edge)
    try:
        if bind:
            if parsed.scheme == "tcp" and not is_loopback_host(parsed.host) and not secured:
                log.warning("binding %s without authentication: anyone who reaches this port can send to it", target)
            sock.bind(target)
        else:
            sock.connect(target)
    except zmq.ZMQError as exc:
        sock.close(0)
        raise GhostboxError(f"endpoint '{target}': cannot {'bind' if bind else 'connect'} ({exc})") from exc
    return sock
