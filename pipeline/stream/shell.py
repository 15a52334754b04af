"""What every stage process shares: its ZeroMQ context and sockets, signals, the parent watch,
metrics, and receiving with validation.

A stage's pure core never sees a socket; the shell (a subclass of `StageShell`) owns the
loop. SIGTERM/SIGINT only set a flag: the loop notices it within one poll period and ends
the stage its own way (a source sends EOS, a sink flushes its files). When started by the
supervisor a stage also watches its parent pid and ends when the parent is gone, so no
stage outlives `ghostbox run`, even one killed with SIGKILL.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from pipeline.json_files import write_json
from pipeline.stream import protocol as P
from pipeline.stream.config import ORPHAN_REMOVES, GraphConfig, progress_file
from pipeline.stream.endpoints import open_socket, parse_url
from pipeline.stream.metrics import BadMessageLog, StageMetrics
from pipeline.stream.provenance import Seal, make_seal_key, peer_name
from pipeline.stream.security import PeerAuth

log = logging.getLogger(__name__)

MAX_NAMED_PEERS = 20  # forgers named one by one; more are counted together


class StageShell:
    def __init__(self, graph: GraphConfig, name: str, parent_pid: int | None = None) -> None:
        self.graph = graph
        self.name = name
        self.parent_pid = parent_pid
        self.ctx = zmq.Context()
        self.auth = PeerAuth.from_graph(graph, role=name.split(":")[0])
        self.limits = P.Limits.from_config(graph.limits)
        self.refused = 0  # peers that failed the CURVE / token handshake on a bound socket
        self._monitors: list[tuple[zmq.Socket, zmq.Socket, str]] = []
        self.metrics = StageMetrics(name, graph.metrics_port(name), graph.metrics.host)
        if self.metrics.port is not None:
            log.info("%s: metrics on http://%s:%d/metrics", name, graph.metrics.host, self.metrics.port)
        self.bad = BadMessageLog(self.metrics, logging.getLogger(f"pipeline.stream.{name.split(':')[0]}"))
        self.stopping: str | None = None
        self._sockets: list[zmq.Socket] = []
        self._progress_counts: dict[str, int] = {}
        self.forgeries: dict[str, int] = {}  # peer -> messages refused for their seal
        self._last_frame: Any = None
        self._progress_written_at = 0.0
        self._progress_path = (progress_file(graph.run_dir, name)
                               if graph.run_dir else None)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)

    # -- lifecycle ------------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop(signal.Signals(signum).name)

    def stop(self, reason: str) -> None:
        if self.stopping is None:
            self.stopping = reason
            log.info("%s: stopping (%s)", self.name, reason)
        self.on_stop()

    def on_stop(self) -> None:
        """Hook for subclasses (e.g. wake a thread)."""

    def parent_gone(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def should_stop(self) -> bool:
        if self._monitors:
            self._poll_monitors()
        if self.stopping is None and self.parent_gone():
            self.stop("parent exited")
        return self.stopping is not None

    def report_progress(self, force: bool = False, **counts: int) -> None:
        """Counters the supervisor reads to tell a stage that is still working from one that is stuck
        (`done`: messages finished, `sent`: passed downstream, `held`: in hand); written at most twice a second."""
        self._progress_counts.update(counts)
        now = time.monotonic()
        if self._progress_path is None or (not force and now - self._progress_written_at < 0.5):
            return
        self._progress_written_at = now
        try:
            self._progress_path.parent.mkdir(mode=0o700, exist_ok=True)
            write_json(self._progress_path, {**self._progress_counts, "bad": self.bad.total, "refused": self.refused,
                                             **({"forgers": dict(self.forgeries)} if self.forgeries else {}),
                                             "pid": os.getpid(), "t": time.time()}, indent=None, newline=False)
        except OSError as exc:  # the supervisor then only sees the process, not its counters
            log.debug("progress file %s: %s", self._progress_path, exc)

    def close(self) -> None:
        for sock, monitor, _ in self._monitors:
            sock.disable_monitor()
            monitor.close(0)
        self._monitors.clear()
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        self.auth.stop()
        self.ctx.term()
        run_dir = Path(self.graph.run_dir) if self.graph.run_dir else None
        if self.parent_gone() and run_dir is not None and (run_dir / ORPHAN_REMOVES).is_file():
            # the supervisor died without cleaning up a run folder it made for this run alone
            shutil.rmtree(run_dir, ignore_errors=True)

    # -- sockets --------------------------------------------------------------------------------

    def socket(self, kind: int, url: str | None, bind: bool, bind_url: str | None = None, hwm: int | None = None,
               identity: bytes | None = None, edge: str = "") -> zmq.Socket:
        """`edge`: which graph edge this socket is on (sources, workers, filter, sink:NAME): with per-role
        keys, what a bound socket accepts."""
        if url is None:
            raise ValueError("endpoint URL not resolved")
        sock = open_socket(self.ctx, kind, url, bind, self.auth, bind_url=bind_url, hwm=hwm, identity=identity,
                           max_message_bytes=self.graph.limits.max_message_bytes, edge=edge)
        self._sockets.append(sock)
        target = (bind_url or url) if bind else url
        if bind and self.auth.active and parse_url(target).scheme == "tcp":
            events = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                      | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
            self._monitors.append((sock, sock.get_monitor_socket(events), target))
        return sock

    def _poll_monitors(self) -> None:
        for _, monitor, target in self._monitors:
            while monitor.poll(0):
                try:
                    event = recv_monitor_message(monitor, zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.refused += 1
                self.metrics.event("refused_peer")
                self.bad("refused-peer", f"{event.get('endpoint', b'')!r:.60} failed the handshake", target)

    def load_seal(self) -> Seal:
        """The seal key of sources, the filter and sinks (see provenance.py)."""
        path = self.graph.seal_path()
        if not self.graph.security.seal and not self.graph.uses_tcp():
            make_seal_key(path, exist_ok=True)  # one machine, no supervisor: the first stage up makes it
        return Seal.from_file(path)

    def forged(self, detail: str, where: str) -> None:
        """A message whose seal is missing or wrong: refused, counted per peer (progress `forged`, which the
        supervisor puts in summary.json), logged; a run that saw one is not complete."""
        peer = self.last_peer()
        if peer not in self.forgeries and len(self.forgeries) >= MAX_NAMED_PEERS:
            peer = "other peers"
        self.forgeries[peer] = self.forgeries.get(peer, 0) + 1
        self.bad("forged", f"{detail}; from {peer}", where)
        self.report_progress(forged=sum(self.forgeries.values()))

    def last_peer(self) -> str:
        return peer_name(self._last_frame) if self._last_frame is not None else "unknown peer"

    def wake_socket(self, url: str) -> zmq.Socket:
        """The bound end of an inproc PAIR a helper thread pokes when it has something."""
        sock = self.ctx.socket(zmq.PAIR)
        sock.linger = 0
        sock.bind(url)
        self._sockets.append(sock)
        return sock

    def send(self, sock: zmq.Socket, message: list[Any], block: bool = False) -> bool:
        """Send without blocking unless asked; False when the peer's queue is full or absent."""
        try:
            sock.send_multipart(message, flags=0 if block else zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            return False

    def receive(self, sock: zmq.Socket, where: str) -> P.Message | None:
        """One validated message; a bad one is counted, logged (rate-limited) and dropped."""
        return self._decode(sock.recv_multipart(copy=False), where)

    def receive_routed(self, sock: zmq.Socket, where: str) -> tuple[bytes, P.Message | None]:
        """From a ROUTER: (the peer's routing id, its validated message or None)."""
        frames = sock.recv_multipart(copy=False)
        return frames[0].bytes, self._decode(frames[1:], where)

    def _decode(self, frames: list[Any], where: str) -> P.Message | None:
        self._last_frame = frames[0] if frames else None  # who sent it, if it turns out forged
        try:
            return P.decode(frames, self.limits)
        except P.ProtocolError as exc:
            self.bad(exc.reason, exc.detail, where)
            return None
