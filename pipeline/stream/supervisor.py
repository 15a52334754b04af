"""`ghostbox run`: start every stage of a graph on this machine as its own process, watch them,
and end the run cleanly.

- Stages are `python -m pipeline.stream.stage_main NAME --graph run_dir/graph.json` processes
  in their own sessions (a Ctrl-C in the terminal reaches only the supervisor, which then
  shuts the graph down in order); each watches the supervisor's pid and exits if it is gone,
  so nothing is orphaned even when the supervisor is killed with SIGKILL.
- A detector worker that dies is started again (the broker re-sends the frames it held);
  more than `workers.max_restarts` crashes in a minute end the run. A live source that
  crashes is started again too; a lossless source that crashes without its EOS gets one
  from the supervisor (status "failed", counting the frames the broker received), so the
  graph still drains and the other streams finish (exit code 1 at the end). A crash of the
  broker, the filter or a sink ends the run with exit code 1; a stage that refuses its
  configuration (exit code 2: a filter fitted for another model, a port in use) ends it with 2.
- The run is complete when every sink has exited 0 (each does once every source's EOS went
  through it and its files are flushed); the broker, filter and workers then exit by
  themselves. Exit code 0.
- First Ctrl-C / SIGTERM: the sources are told to stop (each sends an EOS "interrupted"), the
  graph drains for up to `shutdown_grace_s`, then every stage gets SIGTERM (sinks flush and
  write summary.json) and, 5 s later, SIGKILL. A second Ctrl-C skips the drain. Exit code
  130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import GhostboxError
from pipeline.stream.config import GraphConfig, dump_graph

log = logging.getLogger(__name__)

RESTART_WINDOW_S = 60.0
KILL_AFTER_S = 5.0


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    restarts: deque[float] = field(default_factory=deque)
    exit_code: int | None = None
    stopped: bool = False  # SIGTERM sent by us

    @property
    def kind(self) -> str:
        return self.name.split(":")[0]

    @property
    def alive(self) -> bool:
        return self.exit_code is None


def preflight(graph: GraphConfig) -> None:
    """Catch what would otherwise fail inside a stage process, as one-line errors, before starting."""
    from pipeline.stream.sources import check_file_source, parse_synth_uri

    for source in graph.sources:
        kind = source.resolved_kind
        if kind == "file":
            try:
                check_file_source(source.uri)
            except GhostboxError as exc:
                raise GhostboxError(f"source '{source.id}': {exc}") from None
        elif kind == "synth":
            parse_synth_uri(source.uri)
    model = graph.detector.model
    if "/" in model and not Path(model).exists():  # a bare name (yolo11n.pt) is Ultralytics' to fetch
        raise GhostboxError(f"detector.model '{model}': file not found")
    if graph.filter.path:
        from pipeline.filter.filter_file import read_filter_header

        read_filter_header(graph.filter.path)
    if graph.security.curve:
        from pipeline.stream.security import Curve

        curve = Curve(Path(graph.security.keys), graph.security.server, graph.security.client,
                      list(graph.security.authorized))
        curve.server_keys()
        curve.client_keys()
        curve.allowed_keys()
    for sink in graph.sinks:
        try:
            Path(sink.out).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GhostboxError(f"sinks[{sink.name}].out '{sink.out}': cannot create ({exc})") from None


class Supervisor:
    def __init__(self, graph: GraphConfig, log_level: str = "INFO", remove_run_dir: bool = False,
                 status_every_s: float = 10.0) -> None:
        self.graph = graph
        self.log_level = log_level
        self.remove_run_dir = remove_run_dir
        self.status_every_s = status_every_s
        self.run_dir = Path(graph.run_dir or ".")
        self.graph_path = self.run_dir / "graph.json"
        self.children: dict[str, Child] = {}
        self.failure: str | None = None
        self.failure_code = 1  # 2 when a stage refused its configuration, as the CLI's own input errors
        self.interrupted: int | None = None  # the signal number of the first Ctrl-C / SIGTERM
        self.forced = False
        self.drain_deadline: float | None = None
        self.kill_deadline: float | None = None
        self.restarts: dict[str, int] = {}
        self.failed_sources: list[str] = []

    # -- processes ------------------------------------------------------------------------------

    def _spawn(self, name: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "pipeline.stream.stage_main", name, "--graph", str(self.graph_path),
                   "--parent-pid", str(os.getpid()), "--log-level", self.log_level]
        # own session: the terminal's Ctrl-C goes to the supervisor only, which shuts down in order
        return subprocess.Popen(command, start_new_session=True, stdin=subprocess.DEVNULL)

    def start(self) -> None:
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # ipc sockets: this user only
        dump_graph(self.graph, self.graph_path)
        for name in self.graph.stage_names():
            self.children[name] = Child(name, self._spawn(name))
        log.info("started %d stages (%s); run folder %s", len(self.children), ", ".join(self.children), self.run_dir)

    def pids(self) -> dict[str, int]:
        return {name: child.proc.pid for name, child in self.children.items() if child.alive}

    def _signal(self, child: Child, sig: int) -> None:
        if child.alive:
            try:
                child.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            if sig == signal.SIGTERM:
                child.stopped = True

    def _terminate_all(self, kinds: tuple[str, ...] | None = None) -> None:
        for child in self.children.values():
            if kinds is None or child.kind in kinds:
                self._signal(child, signal.SIGTERM)
        if self.kill_deadline is None:
            self.kill_deadline = time.monotonic() + KILL_AFTER_S

    def _kill_all(self) -> None:
        for child in self.children.values():
            if child.alive:
                self._signal(child, signal.SIGKILL)
        for child in self.children.values():
            if child.alive:
                try:
                    child.exit_code = child.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    log.error("stage %s (pid %d) does not die", child.name, child.proc.pid)

    # -- signals --------------------------------------------------------------------------------

    def stop(self, signum: int = signal.SIGINT) -> None:
        """What Ctrl-C does: the first call drains the graph, the second stops it at once."""
        self._on_signal(signum, None)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.interrupted is None:
            self.interrupted = signum
            log.warning("%s: stopping the sources; the graph drains for up to %.0f s (again to stop at once)",
                        signal.Signals(signum).name, self.graph.shutdown_grace_s)
            for child in self.children.values():
                if child.kind == "source":
                    self._signal(child, signal.SIGTERM)
            self.drain_deadline = time.monotonic() + self.graph.shutdown_grace_s
        elif not self.forced:
            self.forced = True
            log.warning("stopping every stage now")
            self._terminate_all()

    # -- the loop -------------------------------------------------------------------------------

    def _fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = why
            log.error("%s; stopping the run", why)
            self._terminate_all()

    def _restart(self, child: Child, why: str) -> None:
        now = time.monotonic()
        while child.restarts and now - child.restarts[0] > RESTART_WINDOW_S:
            child.restarts.popleft()
        if len(child.restarts) >= self.graph.workers.max_restarts:
            self._fail(f"stage {child.name} crashed {len(child.restarts) + 1} times within a minute ({why})")
            return
        child.restarts.append(now)
        self.restarts[child.name] = self.restarts.get(child.name, 0) + 1
        log.warning("stage %s %s; starting it again", child.name, why)
        child.proc = self._spawn(child.name)
        child.exit_code = None

    def _eos_for(self, source_id: str, why: str) -> None:
        """Send the EOS a crashed lossless source could not send, so the graph can drain."""
        import zmq

        from pipeline.stream import protocol as P
        from pipeline.stream.endpoints import open_socket
        from pipeline.stream.security import Curve

        security = self.graph.security
        curve = (Curve(Path(security.keys), security.server, security.client, list(security.authorized))
                 if security.curve else None)
        ctx = zmq.Context()
        try:
            sock = open_socket(ctx, zmq.DEALER, self.graph.endpoints.sources.url or "", bind=False, curve=curve,
                               identity=source_id.encode(), linger_ms=0)
            message = P.control(P.EOS, source_id, total=None, status="failed", detail=why[:500])
            for _ in range(5):
                sock.send_multipart(message, flags=zmq.NOBLOCK)
                if sock.poll(1000):
                    reply = P.decode(sock.recv_multipart())
                    if reply.type == P.ACK:
                        return
            log.error("source %s: the broker did not acknowledge the EOS sent for it", source_id)
        except (zmq.ZMQError, P.ProtocolError, GhostboxError) as exc:
            log.error("source %s: cannot end its stream (%s)", source_id, exc)
        finally:
            ctx.destroy(linger=0)

    def _reap(self) -> None:
        for child in self.children.values():
            if not child.alive:
                continue
            code = child.proc.poll()
            if code is None:
                continue
            child.exit_code = code
            shutting_down = self.failure is not None or self.forced or child.stopped
            if code == 2 and not shutting_down:  # a configuration error: starting again cannot help
                self._fail(f"stage {child.name} refused its configuration (exit code 2; its error is above)")
                self.failure_code = 2
            elif child.kind == "worker":
                broker_alive = self.children["broker"].alive
                if code != 0 and broker_alive and not shutting_down:
                    self._restart(child, f"exited with code {code}")
            elif child.kind == "source":
                if code in (0, 3):
                    if code == 3:
                        self.failed_sources.append(child.name)
                    continue
                if shutting_down or self.interrupted is not None:
                    continue
                sid = child.name.split(":", 1)[1]
                if self.graph.source_mode(self.graph.source(sid)) == "live":
                    self._restart(child, f"exited with code {code}")
                else:
                    self.failed_sources.append(child.name)
                    log.error("source %s exited with code %d before its end; ending its stream", sid, code)
                    self._eos_for(sid, f"source process exited with code {code}")
            elif code != 0 and not shutting_down:
                self._fail(f"stage {child.name} exited with code {code}")
            elif code != 0 and child.stopped and code not in (-signal.SIGTERM, -signal.SIGKILL):
                log.warning("stage %s exited with code %d while stopping", child.name, code)

    def _sink_summaries(self) -> list[tuple[Path, dict[str, Any]]]:
        """Each sink's summary.json that can be read now (a sink rewrites it as it runs)."""
        found = []
        for sink in self.graph.sinks:
            path = Path(sink.out) / "summary.json"
            try:
                found.append((path, json.loads(path.read_text())))
            except (OSError, ValueError):
                continue
        return found

    def _status(self) -> None:
        for _, summary in self._sink_summaries()[:1]:
            log.info("%d frames, %.1f frames/s, latency p50 %.0f ms p99 %.0f ms, %d dropped, %d boxes, %d flagged",
                     summary["frames"], summary["fps"], summary["latency_ms"]["p50"], summary["latency_ms"]["p99"],
                     summary["dropped"], summary["boxes"], summary["flagged"])

    def run(self) -> int:
        preflight(self.graph)
        handlers = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            self.start()
            return self._loop()
        finally:
            self._kill_all()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            if self.remove_run_dir:
                shutil.rmtree(self.run_dir, ignore_errors=True)

    def _loop(self) -> int:
        sinks = [c for c in self.children.values() if c.kind == "sink"]
        last_status = time.monotonic()
        done_at: float | None = None
        while True:
            time.sleep(0.1)
            self._reap()
            now = time.monotonic()
            if all(not c.alive for c in self.children.values()):
                break
            if done_at is None and all(not c.alive for c in sinks):
                done_at = now  # sinks flushed: the others end by themselves, or are told to
                if any(c.exit_code != 0 for c in sinks) and self.failure is None:
                    self.failure = "a sink did not finish cleanly"
            if done_at is not None and now - done_at > 10.0:
                self._terminate_all()
            broker = self.children["broker"]
            if not broker.alive and broker.exit_code == 0:
                # workers exist for the broker; one restarted after it told the others to stop waits in vain
                self._terminate_all(("worker",))
            if self.drain_deadline is not None and now > self.drain_deadline and not self.forced:
                log.warning("the graph did not drain within %.0f s; stopping every stage", self.graph.shutdown_grace_s)
                self.forced = True
                self._terminate_all()
            if self.kill_deadline is not None and now > self.kill_deadline:
                self._kill_all()
            if now - last_status > self.status_every_s:
                last_status = now
                self._status()
        return self._result()

    def _result(self) -> int:
        summaries = self.annotate_summaries()
        if self.failure is not None:
            return self.failure_code
        if self.interrupted is not None:
            return 128 + int(self.interrupted)
        if self.failed_sources:
            log.error("source(s) failed: %s", ", ".join(self.failed_sources))
            return 1
        if not summaries or any(s.get("status") != "complete" for s in summaries):
            return 1
        return 0

    def annotate_summaries(self) -> list[dict[str, Any]]:
        """Add what only the supervisor knows (restarts, exit codes) to each sink's summary.json."""
        summaries = []
        for path, summary in self._sink_summaries():
            if self.interrupted is not None and summary.get("status") != "running":
                # the sink saw every stream end; it ended because it was asked to
                summary["drained"] = summary.get("status") == "complete"
                summary["status"] = "interrupted"
            summary["restarts"] = dict(self.restarts)
            summary["exit_codes"] = {name: child.exit_code for name, child in self.children.items()}
            if self.failure:
                summary["failure"] = self.failure
            path.write_text(json.dumps(summary, indent=2))
            summaries.append(summary)
        return summaries
