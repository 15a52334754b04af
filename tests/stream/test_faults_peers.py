"""Hostile peers on a tcp graph run by `ghostbox run`: strangers (no token, no keys) are refused at
the handshake on every endpoint and counted; a peer holding the token (a buggy or compromised
stage) gets its JPEG bombs, junk and forged future frames refused or bounded, the sink stays
under 500 MB, no forged row is written and the run says what happened."""

from __future__ import annotations

import json
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
import zmq
import zmq.auth

from tests.helpers.stream_helpers import (
    assert_exactly_once_in_order,
    base_config,
    free_port_block,
    free_ports,
    kill_run_stages,
    metric,
    records,
    short_dir,
    stage_processes,
    start_run,
    video,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slow

FRAMES = 120
# growth of the sink's memory from the attack's start (its tracker's torch is there before: ~500 MB)
SINK_RSS_GROWTH_BOUND = 400 << 20
CLASSES = ("pedestrian", "car", "traffic light", "traffic sign")


def _detections(seq: int, policy: str | None = None, image: np.ndarray | None = None) -> list:
    from pipeline.detections import Detections
    from pipeline.stream import protocol as P

    dets = Detections(xyxy=[[1.0, 1, 5, 5]], confidence=[0.9], class_id=[0], logits=np.zeros((1, 4)),
                      box_features=np.zeros((1, 32)), level=[0], class_names=CLASSES, image_size=(160, 128))
    fields, parts = P.detections_parts(dets, "none")
    if image is not None:
        parts.append(P.raw_part("image", image))
    extra = {"policy": policy} if policy else {}
    return P.encode(P.DETECTIONS, "clip", parts, seq=seq, frame=seq, origin="forged", epoch=1, dropped=0, **fields,
                    **extra)


def _bomb_crops(honest_shape: bool) -> list:
    """Six ~1 kB JPEG crops whose headers claim 10000 x 10000 pixels (300 MB each once decoded)."""
    from pipeline.stream import protocol as P

    ok, data = cv2.imencode(".jpg", np.full((16, 24, 3), 127, np.uint8))
    assert ok
    raw = data.tobytes()
    sof = raw.index(b"\xff\xc0")
    bomb = raw[:sof + 5] + struct.pack(">HH", 10_000, 10_000) + raw[sof + 9:]
    side = 10_000 if honest_shape else 16
    message = _detections(7)
    header = P.decode(message).header
    parts = [({"name": s.name, "enc": s.encoding, "dtype": s.dtype, "shape": list(s.shape)}, p)
             for s, p in zip(P.decode(message).specs, message[2:])]
    parts += [({"name": "crop", "enc": "jpeg", "dtype": "uint8", "shape": [side, side, 3]}, bomb)] * 6
    fields = {k: header[k] for k in ("class_names", "frame", "origin", "epoch", "dropped")}
    return P.encode(P.DETECTIONS, "clip", parts, seq=7, crops="jpeg", crop_shapes=[[side, side]] * 6,
                    image_size=[side, side], **fields)


class _Attacker(threading.Thread):
    """Runs every attack while the stream flows and records the sink's peak memory."""

    def __init__(self, urls: dict[str, str], token: bytes | None, run_dir: Path,
                 curve: tuple[bytes, bytes, bytes] | None = None) -> None:
        super().__init__(daemon=True)
        self.urls, self.token, self.run_dir, self.curve = urls, token, run_dir, curve
        self.stop_event = threading.Event()
        self.peak_rss = 0
        self.base_rss = 0  # the sink's memory when the attack began
        self.sent = 0

    def _socket(self, ctx: zmq.Context, kind: int, url: str, identity: bytes | None = None) -> zmq.Socket:
        sock = ctx.socket(kind)
        sock.linger = 0
        sock.sndhwm = 1000
        if identity is not None:
            sock.identity = identity
        if self.token is not None:
            sock.plain_username, sock.plain_password = b"ghostbox", self.token
        if self.curve is not None:
            sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = self.curve
        sock.connect(url)
        return sock

    def _send(self, sock: zmq.Socket, message: list) -> None:
        try:
            sock.send_multipart(message, zmq.NOBLOCK)
            self.sent += 1
        except zmq.Again:
            pass

    def _watch_sink(self) -> None:
        for proc in stage_processes(str(self.run_dir)):
            try:
                if "sink:out" in proc.cmdline():
                    rss = proc.memory_info().rss
                    self.base_rss = self.base_rss or rss
                    self.peak_rss = max(self.peak_rss, rss)
            except psutil.Error:
                pass

    def run(self) -> None:
        from pipeline.stream import protocol as P

        self._watch_sink()  # the baseline, before anything is sent
        ctx = zmq.Context()
        try:
            sink = self._socket(ctx, zmq.PUSH, self.urls["sink"])
            filter_in = self._socket(ctx, zmq.PUSH, self.urls["filter"])
            takeover = self._socket(ctx, zmq.DEALER, self.urls["sources"], identity=b"clip")
            other_id = self._socket(ctx, zmq.DEALER, self.urls["sources"])
            stray = None if self.token is not None else self._socket(ctx, zmq.PULL, self.urls["filter"])
            if self.token is None:
                # a holder of the token or the shared client key could do these too; per-role keys stop it
                self._send(sink, P.control(P.EOS, "clip", total=5, status="ok"))  # a stream cut short
                self._send(sink, P.control(P.EOS, "clip", status="ok"))  # no `dropped`, no `total`
                self._send(filter_in, P.control(P.EOS, "clip", total=5, status="ok"))
                for seq in range(3):  # plausible rows, and a policy the graph never set
                    self._send(sink, _detections(seq, policy="drop"))
            self._send(sink, _bomb_crops(honest_shape=True))
            self._send(sink, _bomb_crops(honest_shape=False))
            for message in (takeover, other_id):
                self._send(message, P.control(P.HELLO, "clip", role="source", mode="lossless", epoch=99))
            image = np.zeros((600, 580, 3), np.uint8)  # ~1 MB each
            seq = 1000
            while not self.stop_event.wait(0.02):
                self._watch_sink()
                for _ in range(10):  # forged frames ahead of the stream, which the sink would have to hold
                    self._send(sink, _detections(seq, policy="drop", image=image))
                    seq += 1
                self._send(sink, [b"clip", b"\xc1 junk"])
                if stray is not None and stray.poll(0):
                    raise AssertionError("a stray PULL received detections")
        finally:
            ctx.destroy(linger=0)


def _tcp_graph(tmp_path: Path, frames: int, fps: float, security: dict) -> tuple[dict, dict[str, str], int, Path]:
    """A graph whose every edge is tcp on loopback (so peers can reach each edge): (config, urls, metrics port,
    run folder); outputs in tmp_path/out, keys in tmp_path/keys."""
    run_dir = short_dir()
    p_sources, p_workers, p_filter, p_sink = free_ports(4)
    urls = {name: f"tcp://127.0.0.1:{port}" for name, port in
            (("sources", p_sources), ("workers", p_workers), ("filter", p_filter), ("sink", p_sink))}
    metrics = free_port_block(5)
    out = tmp_path / "out"
    config = base_config(out, [{"id": "clip", "uri": str(video(frames)), "fps": fps}], run_dir,
                         metrics={"port": metrics},
                         endpoints={"sources": {"url": urls["sources"]}, "workers": {"url": urls["workers"]},
                                    "filter": {"url": urls["filter"]}},
                         sinks=[{"name": "out", "out": str(out), "video": False, "endpoint": {"url": urls["sink"]}}],
                         security={"keys": str(tmp_path / "keys"), **security})
    return config, urls, metrics, run_dir


@pytest.mark.parametrize("security", ["insecure", "curve", "roles"])
def test_strangers_are_refused_and_insiders_cannot_write_forged_rows(tmp_path: Path, security: str) -> None:
    out, keys = tmp_path / "out", tmp_path / "keys"
    config, urls, metrics, run_dir = _tcp_graph(tmp_path, FRAMES, 30, {
        **({"insecure": True} if security == "insecure" else {}), **({"roles": True} if security == "roles" else {})})
    proc = start_run(write_config(tmp_path / "graph.yaml", config))
    strangers = insider = worker_key = None
    try:
        assert wait_for(lambda: metric(metrics, "ghostbox_frames_in_total") > 0, 90), "no frame reached the broker"
        # keys / token were made by the first run, 0600 from the start
        assert all(p.stat().st_mode & 0o077 == 0 for p in keys.iterdir() if not p.name.endswith(".key"))
        strangers = _Attacker(urls, None, run_dir)
        strangers.start()
        if security == "insecure":
            insider = _Attacker(urls, (keys / "graph.token").read_text().strip().encode(), run_dir)
            insider.start()
        if security == "roles":  # a compromised worker machine: the worker's key pair, used everywhere else
            public, secret = zmq.auth.load_certificate(str(keys / "worker.key_secret"))
            server, _ = zmq.auth.load_certificate(str(keys / "server.key"))
            worker_key = _Attacker(urls, None, run_dir, curve=(public, secret, server))
            worker_key.start()
        _, stderr = proc.communicate(timeout=180)
    finally:
        for attacker in (strangers, insider, worker_key):
            if attacker is not None:
                attacker.stop_event.set()
                attacker.join(5)
        if proc.poll() is None:
            proc.kill()
        kill_run_stages(str(run_dir))
    summary = json.loads((out / "summary.json").read_text())
    rows = records(out)
    assert all(r.get("source") != "forged" for r in rows), "a forged row was written"
    assert [r["seq"] for r in rows] == list(range(FRAMES)), "the real stream was not delivered exactly once"
    assert summary["policy"] in (None, "flag")  # no filter in this graph: nothing may switch to drop
    refused = {stage: counts["refused"] for stage, counts in summary.get("peers", {}).items()}
    assert refused.get("sink:out", 0) > 0 and refused.get("broker", 0) > 0, summary.get("peers")
    if security in ("curve", "roles"):
        assert proc.returncode == 0, stderr[-3000:]
        assert summary["status"] == "complete"
    if security == "roles":  # the worker key opens the workers endpoint only: refused at the sink and sources
        assert worker_key is not None and worker_key.sent > 0
        assert "is not allowed there" in stderr
    if security == "insecure":
        assert insider is not None and insider.sent > 100
        growth = insider.peak_rss - insider.base_rss
        print(f"sink RSS under bombs and a {insider.sent}-message flood: {insider.base_rss / 2**20:.0f} MB at the "
              f"start, peak {insider.peak_rss / 2**20:.0f} MB")
        assert insider.base_rss > 0 and growth < SINK_RSS_GROWTH_BOUND, f"sink grew by {growth / 2**20:.0f} MB"
        assert summary["peers"]["sink:out"]["bad_messages"] > 0
        # forged frames ahead of the stream were held only up to limits.reorder_max_bytes, then refused;
        # the sink cannot tell them from real ones it lost, so the run is not reported complete
        assert proc.returncode == 1, stderr[-3000:]
        assert summary["status"] == "incomplete" and summary["problems"], summary
    assert_exactly_once_in_order(rows, {"clip": FRAMES})


def _insider(ctx: zmq.Context, kind: int, url: str, keys: Path, identity: bytes | None = None) -> zmq.Socket:
    """A socket holding the graph's shared CURVE client key: what any machine of the graph has."""
    sock = ctx.socket(kind)
    sock.linger = 1000
    if identity is not None:
        sock.identity = identity
    sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(str(keys / "client.key_secret"))
    sock.curve_serverkey = zmq.auth.load_certificate(str(keys / "server.key"))[0]
    sock.connect(url)
    return sock


def _steal_a_frame(ctx: zmq.Context, url: str, keys: Path) -> dict:
    """Join the workers endpoint as a worker with the client key and take one frame: its header (the stream's
    real epoch, seq and its source's seal) is what a forger needs to pass for the real stream."""
    from pipeline.stream import protocol as P

    sock = _insider(ctx, zmq.DEALER, url, keys, identity=b"w9-rogue")
    sock.send_multipart(P.control(P.HELLO, "w9-rogue", role="worker", capacity=64, batch=1))
    sock.send_multipart(P.control(P.CREDIT, "w9-rogue", n=64))  # more room than the real worker: chosen first
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if sock.poll(500):
            message = P.decode(sock.recv_multipart())
            if message.type == P.FRAME:
                sock.close(0)  # gone without an answer: the broker gives the frame to a real worker
                return message.header
    raise AssertionError("the broker gave the rogue worker no frame")


def _forged_result(header: dict, seq: int) -> list:
    """A plausible result for `seq` of the real stream, with its epoch and the stolen frame's seal."""
    from pipeline.stream import protocol as P

    decoded = P.decode(_detections(seq))
    fields = {**decoded.header, "epoch": header["epoch"], "origin": header["origin"], "frame": seq,
              "seal": header.get("seal", b"")}
    return P.reencode(decoded, fields)


FORGED_RUN_FRAMES = 150


def _attacked_run(tmp_path: Path, ready: Callable[[int], bool], attack: Callable[[zmq.Context, dict[str, str], Path],
                                                                               None]) -> tuple[subprocess.Popen, str]:
    """A 150-frame tcp run (CURVE, the shared client key in tmp_path/keys); `attack(ctx, urls, keys)` once
    `ready(metrics_port)`; returns the ended run and its stderr."""
    keys = tmp_path / "keys"
    config, urls, metrics, run_dir = _tcp_graph(tmp_path, FORGED_RUN_FRAMES, 30, {})
    proc = start_run(write_config(tmp_path / "graph.yaml", config))
    try:
        assert wait_for(lambda: ready(metrics), 120), "the run did not get going"
        ctx = zmq.Context()
        try:
            attack(ctx, urls, keys)
            time.sleep(0.5)
        finally:
            ctx.destroy(linger=1000)
        _, stderr = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_run_stages(str(run_dir))
    return proc, stderr


def _assert_refused_and_named(proc: subprocess.Popen, stderr: str, out: Path, frames: int) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    rows = records(out)
    assert proc.returncode == 1, stderr[-3000:]
    assert summary["status"] == "incomplete", summary
    assert not any(r.get("boxes") and r["boxes"][0].get("xyxy") == [1.0, 1.0, 5.0, 5.0] for r in rows), \
        "a forged row was written"
    assert_exactly_once_in_order(rows, {"clip": frames})  # every real frame, once, none replaced
    forgers = summary["peers"]["sink:out"]["forged"]
    assert any(peer.startswith("127.0.0.1 (CURVE key") for peer in forgers), forgers
    assert any("forged message(s)" in line and "127.0.0.1" in line for line in summary["problems"]), \
        summary["problems"]
    return summary


def test_forged_rows_with_the_real_epoch_or_another_are_refused_and_their_peer_named(tmp_path: Path) -> None:
    """Issue 25, failure 1: a peer holding the shared client key takes a real frame as a rogue worker (so it knows
    the stream's epoch and the frame's seal) and sends the sink results for frames ahead of the stream, with that
    epoch, and for seq 300-309 with another epoch: none is written, every real frame is, the run is incomplete
    and names the peer."""

    def forge(ctx: zmq.Context, urls: dict[str, str], keys: Path) -> None:
        stolen = _steal_a_frame(ctx, urls["workers"], keys)
        sink = _insider(ctx, zmq.PUSH, urls["sink"], keys)
        ahead = stolen["seq"] + 30  # the real frames arrive later
        for seq in range(ahead, ahead + 10):
            sink.send_multipart(_forged_result(stolen, seq))
        for seq in range(300, 310):
            sink.send_multipart(_forged_result({**stolen, "epoch": stolen["epoch"] + 1}, seq))

    proc, stderr = _attacked_run(tmp_path, lambda port: metric(port, "ghostbox_frames_in_total") > 0, forge)
    summary = _assert_refused_and_named(proc, stderr, tmp_path / "out", FORGED_RUN_FRAMES)
    assert summary["per_source"]["clip"]["forged"] == 20


@pytest.mark.parametrize("offset", [60, -10])
def test_a_forged_end_of_stream_is_refused_and_the_run_still_ends(tmp_path: Path, offset: int) -> None:
    """Issue 25, failure 2: an insider (the shared client key) tells the sink the stream ends 60 frames after
    what it has, or 10 before: refused (no source's seal), the real stream is written whole, the run ends by
    itself, incomplete, naming the peer."""
    from pipeline.stream import protocol as P

    written = 0

    def rows(port: int) -> bool:
        nonlocal written
        written = int(metric(port + 2, "ghostbox_frames_out_total"))  # stage order: broker, filter, sink:out
        return written >= 20

    def end_early(ctx: zmq.Context, urls: dict[str, str], keys: Path) -> None:
        sink = _insider(ctx, zmq.PUSH, urls["sink"], keys)
        sink.send_multipart(P.control(P.EOS, "clip", total=written + offset, status="ok", dropped=0))
        sink.send_multipart(P.control(P.EOS, "clip", total=written + offset, status="ok", dropped=0,
                                      seal=b"\0" * 16))  # a made-up seal

    started = time.monotonic()
    proc, stderr = _attacked_run(tmp_path, rows, end_early)
    elapsed = time.monotonic() - started
    summary = _assert_refused_and_named(proc, stderr, tmp_path / "out", FORGED_RUN_FRAMES)
    assert summary["per_source"]["clip"]["forged"] == 2
    assert elapsed < 90, f"the run took {elapsed:.0f} s to end"
