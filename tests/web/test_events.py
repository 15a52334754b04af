"""`/events` against the real server (uvicorn on a socket). Clients that stop reading: each is dropped
once its connection has taken no write for the send timeout, and until then what the server holds
for it is bounded (its queue, its transport's write buffer and the kernel's send queue), while a
client that reads gets every event throughout. And a stream's start and end."""

from __future__ import annotations

import fcntl
import json
import socket
import struct
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from pipeline.sinks.live_feed import decode
from pipeline.web import events
from pipeline.web.server import WebServer
from tests.helpers.raw_http import raw_http

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads the kernel's send queues (TIOCOUTQ)")

SLOW_CLIENTS = 30
DROP_S = 1.5  # the send timeout for this test (5 s in a run)
EVERY_S = 0.05  # an event every 50 ms, ~40 KB each: a stalled client's buffers fill in well under a second
RUN_S = 5.0
SOURCES = 8
BOUND = 256 * 1024  # bytes the server may hold for one client: transport write buffer + kernel send queue


def _request(token: str | None) -> bytes:
    path = f"/events?token={token}" if token else "/events"
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()


def _stats(t: float) -> dict[str, Any] | None:
    return decode(msgpack.packb({"kind": "stats", "t": t, "sources": {
        f"cam{i}": {"frames": int(8 * t), "boxes": int(40 * t), "flagged": int(4 * t) + i % 3}
        for i in range(SOURCES)}}))


def _stalled(port: int, token: str | None) -> socket.socket:
    """A client that asks for the event stream and never reads a byte of it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(_request(token))
    return sock


def _held(server: WebServer) -> dict[Any, int]:
    """Per open connection: the bytes its transport has not written yet plus the kernel's send queue."""
    connections = []
    for _ in range(100):
        try:
            connections = list(server.server.server_state.connections)  # the server's thread changes the set
            break
        except RuntimeError:
            continue
    held = {}
    for conn in connections:
        transport = conn.transport
        try:
            fd = transport.get_extra_info("socket").fileno()
            queued = struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0" * 4))[0]
        except (AttributeError, OSError, ValueError):
            continue  # closed meanwhile
        held[conn.client] = transport.get_write_buffer_size() + queued
    return held


def _closed_by_server(sock: socket.socket, within_s: float) -> bool:
    """Whether the server has closed (or reset) `sock`: what it had buffered is read, then EOF or a reset."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            continue
    return False


class _Reader(threading.Thread):
    """A client that reads the event stream as it comes: the time and version of every state event."""

    def __init__(self, port: int, token: str | None) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(_request(token))
        self.got: list[tuple[float, int]] = []
        self.ended: str | None = None

    def run(self) -> None:
        buffer = b""
        try:
            while chunk := self.sock.recv(65536):
                buffer = (buffer + chunk).replace(b"\r\n", b"\n")
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    lines = block.split(b"\n")
                    if b"event: state" in lines:
                        data = next(line[6:] for line in lines if line.startswith(b"data: "))
                        self.got.append((time.monotonic(), json.loads(data)["version"]))
            self.ended = "EOF"
        except OSError as exc:
            self.ended = repr(exc)


@pytest.mark.parametrize("address", ["127.0.0.1:0", "0.0.0.0:0"], ids=["loopback", "behind-the-token"])
def test_clients_that_never_read_are_dropped_and_what_they_cost_is_bounded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    monkeypatch.setattr(events, "SEND_TIMEOUT_S", DROP_S)
    monkeypatch.setattr(events, "EVENT_EVERY_S", EVERY_S)
    server = WebServer(tmp_path, address, feeds=[f"ipc://{tmp_path}/feed.sock"]).start()
    token = server.token
    live = server.live
    assert live is not None
    for t in range(events_history := 300):  # a full flag-rate history: every event is ~40 KB
        live.take(_stats(float(t)))
    stop = threading.Event()

    def feed() -> None:
        t = float(events_history)
        while not stop.is_set():
            t += 1
            live.take(_stats(t))
            time.sleep(EVERY_S / 2)

    feeder = threading.Thread(target=feed, daemon=True)
    reader: _Reader | None = None
    stalled: list[socket.socket] = []
    try:
        feeder.start()
        reader = _Reader(server.port, token)
        reader.start()
        stalled = [_stalled(server.port, token) for _ in range(SLOW_CLIENTS)]
        started = time.monotonic()
        timeline = []  # (seconds, open connections, most bytes held for one, all bytes held, longest queue)
        while (now := time.monotonic() - started) < RUN_S:
            held = _held(server)
            hub = getattr(getattr(server, "app", None), "state", None)
            queues = [c.queue.qsize() for c in list(hub.events.clients)] if hub is not None else [-1]
            timeline.append((round(now, 2), len(held), max(held.values(), default=0), sum(held.values()),
                             max(queues, default=0)))
            time.sleep(0.1)
        print("\n".join(str(row) for row in timeline[::5]))

        # what the server holds for a client is bounded all along, whether it reads or not
        most = max(row[2] for row in timeline)
        assert most <= BOUND, f"one client held {most} bytes (bound {BOUND}); timeline: {timeline[-3:]}"
        # every client that never read is gone, and not before the send timeout
        assert timeline[-1][1] == 1, f"{timeline[-1][1] - 1} of {SLOW_CLIENTS} slow clients still connected"
        all_in = next(i for i, row in enumerate(timeline) if row[1] == SLOW_CLIENTS + 1)
        first_drop = next(row[0] for row in timeline[all_in:] if row[1] < SLOW_CLIENTS + 1)
        assert first_drop >= DROP_S - 0.2, first_drop
        assert all(_closed_by_server(sock, 2.0) for sock in stalled)
        hub = server.app.state.events
        assert max(row[4] for row in timeline) <= events.EVENT_QUEUE
        assert len(hub.clients) == 1 and hub.dropped == SLOW_CLIENTS
        # the client that reads got the events all along, before the drops and after
        assert reader.is_alive() and reader.ended is None, reader.ended
        times = [t for t, _ in reader.got if t >= started]
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert len(times) > RUN_S / EVERY_S / 3 and max(gaps) < 0.5, (len(times), max(gaps, default=None))
        assert times[-1] > started + RUN_S - 0.5
        versions = [v for _, v in reader.got]
        assert versions == sorted(set(versions))  # each state once, in order
    finally:
        stop.set()
        for sock in stalled:
            sock.close()
        if reader is not None:
            reader.sock.close()
        server.stop()


def test_a_stream_starts_with_the_state_and_ends_cleanly_when_the_server_stops(tmp_path: Path) -> None:
    server = WebServer(tmp_path, "127.0.0.1:0", feeds=[f"ipc://{tmp_path}/feed.sock"]).start()
    assert server.live is not None
    server.live.take(_stats(1.0))
    try:
        reply = raw_http(server.port, b"HEAD /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200") and b"text/event-stream" in reply and b"event:" not in reply
        reader = _Reader(server.port, None)
        reader.start()
        deadline = time.monotonic() + 5
        while not reader.got and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reader.got and reader.got[0][1] == server.live.version  # at once, not after a tick
        reply = raw_http(server.port, b"GET /api/state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert b'"event_clients":{"clients":1,"dropped_slow":0,"lagged_events":0}' in reply
        started = time.monotonic()
    finally:
        server.stop()
    reader.join(timeout=2)
    assert time.monotonic() - started < 1.5 and reader.ended == "EOF"  # a complete response, not a cut
