"""The web view as a server beside a run: uvicorn in a thread, and a thread that takes the sinks'
feed (ZeroMQ SUB) into the live state. Both are daemon threads of the process that starts them
(`ghostbox run --web` or `ghostbox review`); the pipeline's stages never wait for either.
"""

from __future__ import annotations

import logging
import secrets
import socket
import struct
import threading
from pathlib import Path
from typing import Any

import uvicorn
import zmq

from pipeline.errors import GhostboxError
from pipeline.sinks.live_feed import MAX_MESSAGE_BYTES, decode
from pipeline.stream.endpoints import is_loopback_host
from pipeline.web.app import make_app
from pipeline.web.state import Gallery, LiveState

log = logging.getLogger(__name__)
DEFAULT_HOST = "127.0.0.1"
UNSENT_BYTES = 16384  # what the kernel may hold unsent per connection (TCP_NOTSENT_LOWAT): a client that
# stops reading stalls the server's writes after that much, instead of after megabytes of send buffer


def parse_address(text: str) -> tuple[str, int]:
    """`[HOST:]PORT` (HOST may be a bracketed IPv6 address); loopback when no host is given."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or DEFAULT_HOST
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise GhostboxError(f"--web {text!r}: expected [HOST:]PORT, e.g. 8080 or 0.0.0.0:8080")
    return host, int(port)


class WebServer:
    """Serves the page for the run writing to `out`; `feeds`: the sinks' feed URLs (none: review only)."""

    def __init__(self, out: str | Path, address: str, feeds: list[str] | None = None, title: str = "") -> None:
        host, port = parse_address(address)
        self.token = None if is_loopback_host(host) else secrets.token_urlsafe(18)
        self.gallery = Gallery(out)
        self.live = LiveState() if feeds else None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "TCP_NOTSENT_LOWAT"):  # Linux and macOS; accepted connections inherit it
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, UNSENT_BYTES)
        try:
            self.sock.bind((host, port))  # here, so a taken port is one clear error before the run starts
        except OSError as exc:
            self.sock.close()
            raise GhostboxError(f"--web {address}: cannot listen there ({exc.strerror or exc})") from exc
        self.sock.listen(64)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.app = make_app(self.gallery, self.live, self.token, title or Path(out).name, reset=self._reset)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="off",
                                                   timeout_graceful_shutdown=2))
        self.feeds = list(feeds or [])
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "[::]") else host
        return f"http://{shown}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def start(self) -> WebServer:
        self._threads.append(threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                              name="web-http", daemon=True))
        if self.live is not None:
            self._threads.append(threading.Thread(target=self._take_feed, name="web-feed", daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def _reset(self, scope: Any) -> bool:
        """Resets the connection of `scope`'s request (in the server's thread): closed at once, what the
        transport and the kernel still buffer for it thrown away (a plain close would wait for a client
        that reads nothing to read it). False when that connection is not (or no longer) open."""
        client = tuple(scope.get("client") or ())
        for conn in list(self.server.server_state.connections):
            transport = getattr(conn, "transport", None)
            if client and getattr(conn, "client", None) == client and transport is not None:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
                transport.abort()
                return True
        return False

    def _take_feed(self) -> None:
        ctx: zmq.Context = zmq.Context.instance()
        sub = ctx.socket(zmq.SUB)
        sub.rcvhwm, sub.linger = 16, 0
        sub.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        sub.subscribe(b"")
        for url in self.feeds:
            sub.connect(url)  # ipc: connects before the sink binds, and again after a sink restarts
        try:
            while not self._stop.is_set():
                if sub.poll(200) and self.live is not None:
                    self.live.take(decode(sub.recv(zmq.NOBLOCK)))
        except zmq.ZMQError as exc:
            log.warning("web view: the feed stopped (%s); frames and counters stay as they were", exc)
        finally:
            sub.close()

    def stop(self) -> None:
        self._stop.set()
        self.app.state.events.close()  # the event streams end now, not at the shutdown's timeout
        self.server.should_exit = True
        for thread in self._threads:
            thread.join(timeout=5)
        self.sock.close()
