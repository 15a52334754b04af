"""The web server beside a run: where it listens, and that the sinks' feed never waits for it."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from pipeline.errors import GhostboxError
from pipeline.sinks.live_feed import LiveFeed
from pipeline.stream.endpoints import is_loopback_host
from pipeline.web.server import WebServer, parse_address
from tests.helpers.raw_http import raw_http


def test_addresses() -> None:
    assert parse_address("8080") == ("127.0.0.1", 8080)
    assert parse_address("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_address("[::1]:9000") == ("::1", 9000)
    for bad in ("http", "host:", "1:99999"):
        with pytest.raises(GhostboxError, match="expected \\[HOST:\\]PORT"):
            parse_address(bad)
    assert is_loopback_host("127.0.0.1") and is_loopback_host("::1") and is_loopback_host("localhost")
    assert not any(is_loopback_host(h) for h in ("0.0.0.0", "10.1.2.3", "example.org"))


def test_a_token_beyond_loopback_and_a_taken_port_is_one_clear_error(tmp_path: Path) -> None:
    assert WebServer(tmp_path, "127.0.0.1:0").token is None
    server = WebServer(tmp_path, "0.0.0.0:0")
    try:
        assert server.token and f"?token={server.token}" in server.url
        with pytest.raises(GhostboxError, match=f"--web 127.0.0.1:{server.port}: cannot listen there"):
            WebServer(tmp_path, f"127.0.0.1:{server.port}")
    finally:
        server.stop()


def test_the_server_starts_serves_and_stops(tmp_path: Path) -> None:
    server = WebServer(tmp_path, "127.0.0.1:0").start()
    try:
        reply = raw_http(server.port, b"GET /api/state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200") and b'"live_view":false' in reply
    finally:
        server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1)


def test_the_feed_never_waits_for_a_subscriber_that_stops_reading(tmp_path: Path) -> None:
    """As the sink sets it up: a PUB with a small queue, sent to without blocking. A subscriber that
    reads nothing (a frozen web view) costs the sink no time: what does not fit is dropped."""
    ctx = zmq.Context()
    url = f"ipc://{tmp_path}/feed.sock"
    pub = ctx.socket(zmq.PUB)
    pub.sndhwm, pub.linger = 8, 0
    pub.bind(url)
    sub = ctx.socket(zmq.SUB)
    sub.rcvhwm = 8
    sub.subscribe(b"")
    sub.connect(url)
    time.sleep(0.3)

    def send(data: bytes) -> bool:
        try:
            pub.send(data, zmq.NOBLOCK)
            return True
        except zmq.ZMQError:
            return False

    feed = LiveFeed(send, fps=1e9)
    frame = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), np.uint8)  # ~1 MB JPEGs, incompressible
    started = time.perf_counter()
    for seq in range(300):
        feed.frame("cam", seq, frame)
    elapsed = time.perf_counter() - started
    try:
        received = 0
        while sub.poll(200):
            sub.recv()
            received += 1
        assert feed.sent == 300 and received < 100, received  # PUB drops, silently, what does not fit
        # the time is the JPEG encoding's, not waiting: compare with encoding alone
        started = time.perf_counter()
        for seq in range(300):
            LiveFeed(lambda data: True, fps=1e9).frame("cam", seq, frame)
        assert elapsed < 1.5 * (time.perf_counter() - started) + 0.5
    finally:
        sub.close()
        pub.close()
        ctx.term()


def test_review_refuses_a_folder_without_a_gallery(tmp_path: Path) -> None:
    from tests.helpers.stream_helpers import ghostbox

    proc = ghostbox("review", tmp_path, "--web", "0", timeout=60)
    assert proc.returncode == 2 and "no tracks/index.jsonl" in proc.stderr and "--tracks" in proc.stderr
