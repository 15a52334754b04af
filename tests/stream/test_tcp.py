"""Stages as separate processes over tcp on loopback, as across machines, with CURVE and with
`insecure: true` (the graph token); malformed messages and a worker that never answers, sent to
every bound endpoint by a peer holding the token, stop no stage; strangers are refused."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from tests.helpers.stream_helpers import (
    REPO,
    assert_exactly_once_in_order,
    base_config,
    env,
    free_ports,
    guard_leftovers,
    records,
    short_dir,
    tiny_filter,
    video,
    write_config,
)

pytestmark = pytest.mark.slow

FRAMES = 45


def _forged_detections(nan: bool) -> list:
    """Well-formed detections with a bad value (NaN box) or from an unknown detector, far beyond the stream."""
    import numpy as np

    from pipeline.detections import Detections
    from pipeline.stream import protocol as P

    dets = Detections(xyxy=[[float("nan") if nan else 1.0, 1, 5, 5]], confidence=[0.9], class_id=[0],
                      logits=np.zeros((1, 4)), box_features=np.zeros((1, 32)), level=[0],
                      class_names=("pedestrian", "car", "traffic light", "traffic sign"), image_size=(160, 128))
    fields, parts = P.detections_parts(dets, "none")
    return P.encode(P.DETECTIONS, "clip", parts, seq=10**6, detector={"weights_sha256": "forged"}, **fields)


def _garbage() -> list[list[bytes]]:
    frame_header = {"v": 1, "type": "frame", "seq": 0, "frame": 0, "origin": "x", "epoch": 1, "dropped": 0,
                    "parts": [{"name": "image", "enc": "raw", "dtype": "uint8", "shape": [99999, 99999, 3]}]}
    return [
        [b"x"],
        [b"clip", b"\xc1\xc1 not msgpack"],
        [b"clip", msgpack.packb({"v": 99, "type": "frame"})],
        [b"clip", msgpack.packb(frame_header), b"tiny"],
        [b"clip", msgpack.packb({"v": 1, "type": "detections", "seq": 0, "class_names": [], "image_size": [1, 1],
                                 "crops": "none", "parts": []})],
        [b"nope", msgpack.packb({"v": 1, "type": "eos", "status": "ok"})],
        [b"clip", msgpack.packb({"v": 1, "type": "shutdown"})],
        [b"\xff" * 300, b""],
        _forged_detections(nan=True),
        _forged_detections(nan=False),
    ]


class _Vandal(threading.Thread):
    """Sends malformed messages to every bound endpoint (and raw bytes to the tcp ports) until stopped;
    also joins as a worker that asks for frames and never answers."""

    def __init__(self, routers: list[str], pulls: list[str], token: bytes) -> None:
        super().__init__(daemon=True)
        self.routers, self.pulls, self.token = routers, pulls, token
        self.stop_event = threading.Event()
        self.sent = 0

    def run(self) -> None:
        ctx = zmq.Context()
        socks = []

        def insider(kind: int) -> zmq.Socket:  # holds the graph token, as a buggy or compromised stage would
            s = ctx.socket(kind)
            s.linger = 0
            s.sndhwm = 100
            s.plain_username, s.plain_password = b"ghostbox", self.token
            return s

        for url in self.routers:
            s = insider(zmq.DEALER)
            s.connect(url)
            socks.append(s)
        for url in self.pulls:
            s = insider(zmq.PUSH)
            s.connect(url)
            socks.append(s)
        for url in self.routers + self.pulls:  # strangers without the token: refused at the handshake
            s = ctx.socket(zmq.DEALER)
            s.linger = 0
            s.connect(url)
            s.send_multipart(_forged_detections(nan=False), zmq.NOBLOCK)
            socks.append(s)
        lazy = insider(zmq.DEALER)  # a "worker" that takes frames and dies silently
        lazy.connect(self.routers[1])
        lazy.send_multipart([b"lazy", msgpack.packb({"v": 1, "type": "hello", "role": "worker", "batch": 2})])
        lazy.send_multipart([b"lazy", msgpack.packb({"v": 1, "type": "credit", "n": 2})])
        try:
            while not self.stop_event.wait(0.05):
                for sock in socks:
                    for message in _garbage():
                        try:
                            sock.send_multipart(message, zmq.NOBLOCK)
                            self.sent += 1
                        except zmq.Again:
                            pass
                for url in self.routers + self.pulls:  # not even ZMTP
                    host, port = url[6:].rsplit(":", 1)
                    try:
                        with socket.create_connection((host, int(port)), timeout=0.5) as raw:
                            raw.sendall(b"GET / HTTP/1.0\r\n\r\n" + bytes(range(256)))
                    except OSError:
                        pass
        finally:
            ctx.destroy(linger=0)


def _start(name: str, config: Path, logs: Path, cli: bool = False) -> subprocess.Popen:
    if cli:  # `ghostbox stage`, the command users run on each machine
        command = [sys.executable, "-m", "pipeline", "stage", name, "--config", str(config)]
    else:  # the same code without the CLI's imports: faster to start
        command = [sys.executable, "-m", "pipeline.stream.stage_main", name, "--config", str(config)]
    log = open(logs / f"{name.replace(':', '_')}.log", "w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env(), cwd=REPO)


@pytest.mark.parametrize("curve", [False, True], ids=["insecure-token", "curve"])
def test_stages_in_separate_processes_over_tcp(tmp_path: Path, curve: bool) -> None:
    run_dir, start = short_dir(), time.time()
    out, logs, keys = tmp_path / "out", tmp_path / "logs", tmp_path / "keys"
    logs.mkdir()
    p_sources, p_workers, p_filter, p_sink = free_ports(4)
    url = "tcp://127.0.0.1:{}".format
    config = base_config(out, [{"id": "clip", "uri": str(video(FRAMES)), "fps": 20}], run_dir,
                         filter={"path": str(tiny_filter())},
                         endpoints={"sources": {"url": url(p_sources)}, "workers": {"url": url(p_workers)},
                                    "filter": {"url": url(p_filter), "binder": "filter"}},
                         sinks=[{"name": "out", "out": str(out), "video": False,
                                 "endpoint": {"url": url(p_sink)}}])
    if curve:
        # as across machines: frames and crops travel as JPEG
        config["sources"][0]["encoding"] = "jpeg"
        config["workers"]["crops"] = "jpeg"
        from pipeline.cli.main import main

        assert main(["keys", "--out", str(keys), "server", "client"]) == 0  # in-process: its imports are paid
        assert (keys / "server.key_secret").stat().st_mode & 0o077 == 0
        config["security"] = {"keys": str(keys)}  # tcp: CURVE by default
    else:
        from pipeline.cli.main import main

        assert main(["keys", "--out", str(keys), "--token"]) == 0  # the token and the seal key
        config["security"] = {"insecure": True, "keys": str(keys)}
    path = write_config(tmp_path / "graph.yaml", config)
    names = ["sink:out", "filter", "broker", "worker:0", "source:clip"]
    procs = {name: _start(name, path, logs, cli=name == "sink:out") for name in names}
    vandal = (_Vandal([url(p_sources), url(p_workers)], [url(p_filter), url(p_sink)],
                      (keys / "graph.token").read_text().strip().encode()) if not curve else None)
    try:
        if vandal:
            vandal.start()
        else:
            assert _unauthorized_client_is_refused(url(p_sources), keys)
        deadline = time.monotonic() + 120
        for _name, proc in procs.items():
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if vandal:
            vandal.stop_event.set()
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        leftovers = guard_leftovers(start, str(path))
    text = {name: (logs / f"{name.replace(':', '_')}.log").read_text() for name in names}
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{text[name][-2000:]}"
    assert not leftovers
    assert_exactly_once_in_order(records(out), {"clip": FRAMES})
    assert all("score" in b for r in records(out) for b in r["boxes"])
    if vandal:
        assert vandal.sent > 100
        assert "sources endpoint" in text["broker"] and "workers endpoint" in text["broker"]
        assert "bad message on filter input" in text["filter"] and "bad message on sink input" in text["sink:out"]
        # results without a frame's seal (NaN boxes, a foreign detector) are refused before they are read
        assert "forged" in text["filter"] and "without its frame's seal" in text["filter"]
        assert "without the filter's seal" in text["sink:out"]
        assert "silent for" in text["broker"]  # the worker that never answered was declared dead
        assert "refused-peer" in text["broker"] and "refused-peer" in text["sink:out"]  # the strangers


def _unauthorized_client_is_refused(url: str, keys: Path) -> bool:
    """A client with a key pair the servers do not list fails the CURVE handshake."""
    from pipeline.stream.security import make_keypair

    _, secret = make_keypair(keys / "rogue", "rogue")
    public, secret_key = zmq.auth.load_certificate(str(secret))
    server_public, _ = zmq.auth.load_certificate(str(keys / "server.key"))
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret_key, server_public
        monitor = sock.get_monitor_socket()
        sock.connect(url)
        sock.send_multipart([b"clip", msgpack.packb({"v": 1, "type": "hello", "role": "source"})], zmq.NOBLOCK)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if monitor.poll(500):
                event = recv_monitor_message(monitor)
                if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    return False
                if event["event"] in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
                    return True
        return False
    finally:
        ctx.destroy(linger=0)


def test_keys_are_written_as_zmq_certificates(tmp_path: Path) -> None:
    from pipeline.errors import GhostboxError
    from pipeline.stream.security import make_keypair

    public, secret = make_keypair(tmp_path, "server")
    assert zmq.auth.load_certificate(str(public))[1] is None and zmq.auth.load_certificate(str(secret))[1]
    with pytest.raises(GhostboxError, match="already exists"):
        make_keypair(tmp_path, "server")

