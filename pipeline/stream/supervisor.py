"""`ghostbox run`: start every stage of a graph on this machine as its own process, watch them,
and end the run in order, so that nothing is lost or killed without a word.

- Stages are `python -m pipeline.stream.stage_main NAME --graph run_dir/graph.json` processes
  in their own sessions (a Ctrl-C in the terminal reaches only the supervisor); each watches
  the supervisor's pid and exits if it is gone, so nothing is orphaned even after SIGKILL.
- Start: the detector workers first; once worker:0 loaded its model and accepted the filter
  (or refused it: then nothing else starts and the refusal is the one line printed), the
  broker, filter and sinks; once every sink is ready (its trackers loaded), the sources.
- A detector worker that dies is started again (the broker re-sends the frames it held);
  more than `workers.max_restarts` crashes in a minute end the run. A live source that
  crashes is started again too; a lossless source that crashes without its EOS gets one
  from the supervisor (status "failed"), so the graph still drains. A crash of the broker,
  the filter or a sink ends the run with exit code 1; a stage that refuses its configuration
  (exit code 2) ends it with 2.
- Shutdown is ordered: sources -> broker -> workers -> filter -> sinks. A stage whose
  upstream stages have all exited is expected to finish by itself; it gets
  `shutdown.stage_grace_s` plus `shutdown.per_item_s` per message it still holds (from the
  stages' progress counters), renewed while it makes progress; then SIGTERM (it flushes and
  writes what it has) and as long again; then SIGKILL, which is logged, named in the exit
  message and in summary.json (`killed`, with what the stage still held).
- Ctrl-C / SIGTERM: the sources are told to stop (each sends an EOS "interrupted") and get
  `shutdown_grace_s` to do so; the rest drains in the same order. A second one sends SIGTERM
  to every stage at once (each still flushes). Exit code 130 (SIGINT) or 143 (SIGTERM).
- Exit code 0 only when every sink's summary says "complete"; 1 when anything was skipped,
  cut, not written or killed (summary.json says what), 2 for a configuration refused.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from pipeline.detect.model_source import sha256_file
from pipeline.errors import GhostboxError
from pipeline.filter.filter_file import read_filter_header
from pipeline.filter.hallucination_filter import check_calibrated_conf
from pipeline.json_files import write_json
from pipeline.sinks.review_file import read_lines
from pipeline.sources.file_reader import check_file_source
from pipeline.sources.synth_reader import parse_synth_uri
from pipeline.stream import protocol as P
from pipeline.stream.config import ORPHAN_REMOVES, GraphConfig, dump_graph, progress_file
from pipeline.stream.endpoints import open_socket
from pipeline.stream.provenance import SEAL_FILE, Seal, make_seal_key
from pipeline.stream.security import PeerAuth

log = logging.getLogger(__name__)

RESTART_WINDOW_S = 60.0
READY_TIMEOUT_S = 600.0  # a worker loading a large model on a slow disk
TIERS = ("source", "broker", "worker", "filter", "sink")  # shutdown order
SOURCE_AFTER_SINKS_S = 5.0  # a source still running this long after every sink ended is stopped


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    restarts: deque[float] = field(default_factory=deque)
    exit_code: int | None = None
    stopped: bool = False  # SIGTERM sent by us
    finish_by: float | None = None  # SIGTERM after this, unless it exits or makes progress
    kill_at: float | None = None  # SIGKILL after this
    last_done: int | None = None  # its progress counter when last looked at

    @property
    def kind(self) -> str:
        return self.name.split(":")[0]

    @property
    def tier(self) -> int:
        return TIERS.index(self.kind)

    @property
    def alive(self) -> bool:
        return self.exit_code is None


def _check_run_dir(run_dir: Path) -> None:
    """ipc sockets live in the run folder: an existing one must be this user's alone."""
    try:
        info = run_dir.stat()
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        raise GhostboxError(f"run_dir '{run_dir}': not a folder")
    if info.st_uid != os.getuid():
        raise GhostboxError(f"run_dir '{run_dir}': owned by another user (uid {info.st_uid}); choose another folder")
    if info.st_mode & 0o077:
        raise GhostboxError(f"run_dir '{run_dir}': mode {stat.S_IMODE(info.st_mode):o} lets other users reach its "
                            f"ipc sockets; `chmod 700 {run_dir}` or choose another folder")


def _writable_target(path: Path) -> bool:
    """The folder exists and is writable, or the nearest existing parent is (it is made by the sink)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate.is_dir() and os.access(candidate, os.W_OK | os.X_OK)
    return False


def _check_filter_before_start(graph: GraphConfig, model: Path) -> None:
    """What the workers would refuse after loading torch and the model (seconds in), refused now: a filter
    calibrated above the detector's conf, fitted for other weights (a local .pt: its sha256), or needing
    crops the workers are told not to send."""
    path = str(graph.filter.path)
    header = read_filter_header(path)
    check_calibrated_conf((header.get("metadata") or {}).get("detector_conf"), graph.detector.conf,
                          f"filter '{path}' was")
    expected = (header.get("fingerprint") or {}).get("weights_sha256")
    if expected and model.suffix == ".pt" and model.is_file():
        actual = sha256_file(model)
        if actual != expected:
            raise GhostboxError(f"filter '{path}' was fitted for another detector (filter vs detector): "
                                f"weights_sha256 {str(expected)[:12]} vs {actual[:12]} ({model})")
    graph.check_filter_crops()


def preflight(graph: GraphConfig) -> None:
    """Catch what would otherwise fail inside a stage process, as one-line errors, before starting."""
    for source in graph.sources:
        kind = source.resolved_kind
        if kind == "file":
            try:
                check_file_source(source.uri)
            except GhostboxError as exc:
                raise GhostboxError(f"source '{source.id}': {exc}") from None
        elif kind == "synth":
            parse_synth_uri(source.uri)
    model = Path(graph.detector.model)
    if "/" in graph.detector.model:  # a bare name (yolo11n.pt) is Ultralytics' to fetch
        if not model.exists():
            raise GhostboxError(f"detector.model '{model}': file not found")
        if not os.access(model, os.R_OK):
            raise GhostboxError(f"detector.model '{model}': not readable by this user")
    if graph.filter.path:
        _check_filter_before_start(graph, model)
    if graph.run_dir and graph.endpoints.sources.url and graph.endpoints.sources.url.startswith("ipc://"):
        _check_run_dir(Path(graph.run_dir))
    PeerAuth.from_graph(graph).check()
    for sink in graph.sinks:
        if not _writable_target(Path(sink.out)):
            raise GhostboxError(f"sinks[{sink.name}].out '{sink.out}': cannot be written by this user")


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
        self.stopping = False  # sources were told to stop (signal or failure)
        self.drain_deadline: float | None = None
        self.restarts: dict[str, int] = {}
        self.failed_sources: list[str] = []
        self.orphaned_sources: list[str] = []  # stopped because every sink had ended before them
        self.sinks_ended_at: float | None = None
        self.killed: dict[str, dict[str, Any]] = {}
        self._progress: dict[str, dict[str, Any]] = {}
        self._progress_at = 0.0
        self.created_run_dir = False
        self.code: int | None = None

    # -- processes ------------------------------------------------------------------------------

    def _spawn(self, name: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "pipeline.stream.stage_main", name, "--graph", str(self.graph_path),
                   "--parent-pid", str(os.getpid()), "--log-level", self.log_level]
        # own session: the terminal's Ctrl-C goes to the supervisor only, which shuts down in order
        return subprocess.Popen(command, start_new_session=True, stdin=subprocess.DEVNULL)

    def start(self) -> None:
        created = self.created_run_dir = not self.run_dir.exists()
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # ipc sockets: this user only
        if created:
            os.chmod(self.run_dir, 0o700)  # mkdir's mode is cut by the umask; the parents' are not ours
        if not self.graph.security.seal:
            # a new seal key each run, for this run's sources, filter and sinks only (provenance.py)
            key = self.run_dir / SEAL_FILE
            key.unlink(missing_ok=True)
            make_seal_key(key)
            security = self.graph.security.model_copy(update={"seal": str(key)})
            self.graph = self.graph.model_copy(update={"security": security})
        dump_graph(self.graph, self.graph_path)
        os.chmod(self.graph_path, 0o600)
        if self.remove_run_dir:  # a supervisor killed with SIGKILL cannot clean up: its stages do (shell.close)
            (self.run_dir / ORPHAN_REMOVES).touch(mode=0o600)
        names = self.graph.stage_names()
        workers = [n for n in names if n.startswith("worker:")]
        for name in workers:
            self.children[name] = Child(name, self._spawn(name))
        if not self._wait_ready(workers[0]):
            return
        for name in names:
            if name not in self.children and not name.startswith("source:"):
                self.children[name] = Child(name, self._spawn(name))
        # a sink that loads its tracker takes seconds: frames sent meanwhile would wait, and count it as latency
        for name in names:
            if name.startswith("sink:") and not self._wait_ready(name):
                return
        for name in names:
            if name not in self.children:
                self.children[name] = Child(name, self._spawn(name))
        log.info("started %d stages (%s); run folder %s", len(self.children), ", ".join(self.children), self.run_dir)

    def _wait_ready(self, name: str) -> bool:
        """Wait until the stage is ready (a worker: its model loaded and the filter accepted; a sink: its
        outputs and trackers made); False if it refused or died."""
        child = self.children[name]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and self.interrupted is None:
            if self._read_progress(name).get("ready"):
                return True
            code = child.proc.poll()
            if code is not None:
                child.exit_code = code
                error = self._stage_error(name)
                if code == 2:
                    self.failure_code = 2
                    self._fail(f"stage {name} refused its configuration: {error or 'see its error above'}")
                else:
                    self._fail(f"stage {name} exited with code {code} while starting"
                               + (f": {error}" if error else ""))
                return False
            time.sleep(0.05)
        if self.interrupted is None:
            self._fail(f"stage {name} did not get ready within {READY_TIMEOUT_S:.0f} s")
        return False

    def _stage_error(self, name: str) -> str:
        try:
            return progress_file(self.run_dir, name, ".error").read_text().strip()
        except OSError:
            return ""

    def pids(self) -> dict[str, int]:
        return {name: child.proc.pid for name, child in self.children.items() if child.alive}

    def _signal(self, child: Child, sig: int) -> None:
        if child.alive:
            try:
                child.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            if sig == signal.SIGTERM and not child.stopped:
                child.stopped = True
                child.kill_at = time.monotonic() + self._grace(child)

    def _kill(self, child: Child, why: str) -> None:
        held = self._held(child)
        self.killed[child.name] = {"why": why, "held": held}
        log.error("stage %s %s; killing it (SIGKILL)%s", child.name, why,
                  f": it still held about {held} message(s), lost" if held else "")
        self._signal(child, signal.SIGKILL)
        try:
            child.exit_code = child.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.error("stage %s (pid %d) does not die", child.name, child.proc.pid)

    def _kill_all(self, why: str) -> None:
        for child in self.children.values():
            if child.alive:
                self._kill(child, why)

    # -- progress -------------------------------------------------------------------------------

    def _read_progress(self, name: str) -> dict[str, Any]:
        try:
            return json.loads(progress_file(self.run_dir, name).read_text())
        except (OSError, ValueError):
            return {}

    def _refresh_progress(self, now: float) -> None:
        if now - self._progress_at >= 0.25:
            self._progress_at = now
            self._progress = {name: self._read_progress(name) for name in self.children}

    def _count(self, names: list[str], key: str) -> int:
        return sum(int(self._progress.get(n, {}).get(key, 0) or 0) for n in names)

    def _held(self, child: Child) -> int:
        """Messages the stage still has to pass on, from its own counters and its upstream's."""
        mine = self._progress.get(child.name, {})
        if child.kind in ("broker", "worker"):
            return int(mine.get("held", 0) or 0)
        if child.kind == "filter":
            return max(0, self._count(["broker"], "sent") - int(mine.get("done", 0) or 0))
        if child.kind == "sink":
            return max(0, self._count(["filter"], "sent") - int(mine.get("done", 0) or 0))
        return 0

    def _grace(self, child: Child) -> float:
        cfg = self.graph.shutdown
        return cfg.stage_grace_s + cfg.per_item_s * self._held(child)

    # -- signals --------------------------------------------------------------------------------

    def stop(self, signum: int = signal.SIGINT) -> None:
        """What Ctrl-C does: the first call drains the graph, the second stops it at once."""
        self._on_signal(signum, None)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.interrupted is None:
            self.interrupted = signum
            log.warning("%s: stopping the sources; the graph drains in order (again to stop every stage now)",
                        signal.Signals(signum).name)
            self._stop_sources(self.graph.shutdown_grace_s)
        elif not self.forced:
            self.forced = True
            log.warning("stopping every stage now")
            for child in self.children.values():
                self._signal(child, signal.SIGTERM)

    def _stop_sources(self, grace_s: float) -> None:
        self.stopping = True
        if self.drain_deadline is None:
            self.drain_deadline = time.monotonic() + grace_s
        for child in self.children.values():
            if child.kind == "source" and not child.stopped:
                self._signal(child, signal.SIGTERM)
                child.kill_at = self.drain_deadline

    # -- the loop -------------------------------------------------------------------------------

    def _fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = why
            log.error("%s; stopping the run", why)
            self._stop_sources(5.0)

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
        child.finish_by = child.kill_at = None
        child.stopped = False

    def _eos_for(self, source_id: str, why: str) -> None:
        """Send the EOS a crashed lossless source could not send, so the graph can drain."""
        auth = PeerAuth.from_graph(self.graph, role="source")  # it speaks for a source
        ctx = zmq.Context()
        try:
            sock = open_socket(ctx, zmq.DEALER, self.graph.endpoints.sources.url or "", bind=False, auth=auth,
                               identity=source_id.encode(), linger_ms=0, edge="sources")
            fields = {"total": None, "status": "failed"}
            seal = Seal.from_file(self.graph.seal_path()).eos(source_id, fields)
            message = P.control(P.EOS, source_id, **fields, seal=seal, detail=why[:500])
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
            auth.stop()
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
                error = self._stage_error(child.name)
                self.failure_code = 2
                self._fail(f"stage {child.name} refused its configuration: {error or 'see its error above'}")
            elif child.kind == "worker":
                broker = self.children.get("broker")
                if code != 0 and broker is not None and broker.alive and not shutting_down:
                    self._restart(child, f"exited with code {code}")
            elif child.kind == "source":
                if code in (0, 3):
                    if code == 3:
                        self.failed_sources.append(child.name)
                    continue
                if shutting_down or self.stopping:
                    continue
                sid = child.name.split(":", 1)[1]
                if self.graph.source_mode(self.graph.source(sid)) == "live":
                    self._restart(child, f"exited with code {code}")
                else:
                    self.failed_sources.append(child.name)
                    log.error("source %s exited with code %d before its end; ending its stream", sid, code)
                    self._eos_for(sid, f"source process exited with code {code}")
            elif code != 0 and child.name not in self.killed:
                if not shutting_down:
                    self._fail(f"stage {child.name} exited with code {code}")
                elif code not in (-signal.SIGTERM, 128 + signal.SIGTERM):
                    log.warning("stage %s exited with code %d while stopping", child.name, code)

    def _upstream_done(self, child: Child) -> bool:
        if all(not c.alive for c in self.children.values() if c.kind == "sink"):
            return True  # nothing downstream is left to wait for
        return all(not c.alive for c in self.children.values() if c.tier < child.tier)

    def _advance_shutdown(self, now: float) -> None:
        """Ask, then tell, each stage whose upstream has ended to finish; kill only past its grace."""
        broker = self.children.get("broker")
        for child in self.children.values():
            if not child.alive:
                continue
            if child.kind == "source":
                sinks = [c for c in self.children.values() if c.kind == "sink"]
                if sinks and not any(c.alive for c in sinks) and self.sinks_ended_at is None:
                    self.sinks_ended_at = now
                if (self.sinks_ended_at is not None and now > self.sinks_ended_at + SOURCE_AFTER_SINKS_S
                        and not child.stopped):
                    # still sending with nobody left to write: its frames are lost, and a run that never ends
                    # is worse (a forged or early end of stream reached the sinks before the source finished)
                    log.error("source stage %s is still running %.0f s after every sink ended; stopping it",
                              child.name, SOURCE_AFTER_SINKS_S)
                    self.orphaned_sources.append(child.name)
                    self._signal(child, signal.SIGTERM)
                if child.kill_at is not None and now > child.kill_at:
                    self._kill(child, f"did not end its stream within {self.graph.shutdown_grace_s:.0f} s of being "
                                      f"asked to stop")
                continue
            if child.kind == "worker" and broker is not None and not broker.alive and broker.exit_code == 0:
                # the broker handed out and took back every frame; a worker still here holds nothing of value
                self._signal(child, signal.SIGTERM)
            if not (self._upstream_done(child) or self.forced):
                continue
            done = int(self._progress.get(child.name, {}).get("done", 0) or 0)
            if child.finish_by is None or done != child.last_done:
                child.last_done = done
                child.finish_by = now + self._grace(child)  # renewed while it makes progress
                if child.stopped:
                    child.kill_at = max(child.kill_at or 0.0, now + self._grace(child))
            if not child.stopped and now > child.finish_by:
                log.warning("stage %s has not finished %.0f s after its upstream ended (about %d message(s) "
                            "left); asking it to stop", child.name, self._grace(child), self._held(child))
                self._signal(child, signal.SIGTERM)
            elif child.stopped and child.kill_at is not None and now > child.kill_at:
                self._kill(child, f"did not finish within {self._grace(child):.0f} s of SIGTERM")

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
            try:
                log.info("%d frames, %.1f frames/s, latency p50 %.0f ms p99 %.0f ms, %d dropped, %d boxes, %d flagged",
                         summary["frames"], summary["fps"], summary["latency_ms"]["p50"],
                         summary["latency_ms"]["p99"], summary["dropped"], summary["boxes"], summary["flagged"])
            except (KeyError, TypeError):
                pass

    def run(self) -> int:
        handlers = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            PeerAuth.from_graph(self.graph).ensure_keys()  # first run on this machine: made, not asked for
            preflight(self.graph)
            self.start()
            self.code = self._loop()
            return self.code
        finally:
            self._kill_all("was still running when the supervisor ended")
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            if self.remove_run_dir or (self.created_run_dir and self.code == 2):
                shutil.rmtree(self.run_dir, ignore_errors=True)  # a run that never started leaves nothing

    def _loop(self) -> int:
        last_status = time.monotonic()
        while any(c.alive for c in self.children.values()):
            time.sleep(0.1)
            self._reap()
            now = time.monotonic()
            self._refresh_progress(now)
            if (self.drain_deadline is not None and now > self.drain_deadline and not self.forced
                    and self.interrupted is not None
                    and any(c.alive and c.kind != "sink" for c in self.children.values())):
                log.warning("the graph did not drain within %.0f s; each stage now gets its grace to finish",
                            self.graph.shutdown_grace_s)
                self.drain_deadline = float("inf")
            self._advance_shutdown(now)
            if now - last_status > self.status_every_s:
                last_status = now
                self._status()
        return self._result()

    def _result(self) -> int:
        self._progress_at = 0.0
        self._refresh_progress(time.monotonic())  # the stages' final counters
        summaries = self.annotate_summaries()
        for name, info in self.killed.items():
            log.error("stage %s was killed (%s)%s", name, info["why"],
                      f"; about {info['held']} message(s) it held were not passed on or written"
                      if info["held"] else "")
        if self.failure is not None and (self.interrupted is None or self.failure_code == 2):
            if self.failure_code != 2:  # a refusal was the one line already; a crash may have scrolled away
                log.error("run failed: %s", self.failure)
            return self.failure_code
        if self.interrupted is not None:
            return 128 + int(self.interrupted)
        if self.failed_sources or self.orphaned_sources:
            if self.failed_sources:
                log.error("source(s) failed: %s", ", ".join(self.failed_sources))
            return 1
        if self.killed or not summaries or any(s.get("status") != "complete" for s in summaries):
            return 1
        return 0

    def _check_sent_against_written(self, sink: str, summary: dict[str, Any]) -> None:
        """Each source's frames as its own stage counted them, against what the sink wrote or knows was dropped:
        a sink that stopped early (an end of stream that came too soon, forged or not) cannot say complete."""
        per_source = summary.get("per_source") or {}
        for source in self.graph.sources:
            sent = self._progress.get(f"source:{source.id}", {}).get("sent")
            if not isinstance(sent, int):
                continue
            entry = per_source.get(source.id) or {}
            # error frames may or may not be rows: counting them here can hide a loss, never invent one
            accounted = sum(int(entry.get(key) or 0) for key in ("frames", "dropped", "errors"))
            if sent > accounted:
                line = (f"source {source.id} sent {sent} frames; sink {sink} wrote or counted as dropped "
                        f"{accounted}: {sent - accounted} missing")
                if line not in summary.setdefault("problems", []):
                    summary["problems"].append(line)
                if summary.get("status") == "complete":
                    summary["status"] = "incomplete"

    def _count_rows_on_disk(self, sink: Any, summary: dict[str, Any]) -> None:
        """A killed sink's summary from the rows it did write: its last periodic summary (or none) lags them."""
        path = Path(sink.out) / "detections.jsonl"
        if not sink.jsonl or not path.is_file():
            return
        ids = {s.uri: str(s.id or s.uri) for s in self.graph.sources}
        per_source: dict[str, int] = {}
        try:
            lines, _ = read_lines(path)  # whole lines only: a torn last line is not a row
        except GhostboxError as exc:
            log.error("sink %s: %s", sink.name, exc)
            return
        for row in lines:
            if isinstance(row.get("source"), str):
                sid = ids.get(row["source"], str(row["source"]))
                per_source[sid] = per_source.get(sid, 0) + 1
        rows = sum(per_source.values())
        if rows > int(summary.get("frames") or 0):
            summary["frames"] = rows
            known = summary.setdefault("per_source", {})
            for sid, count in per_source.items():
                entry = known.setdefault(sid, {})
                entry["frames"] = max(int(entry.get("frames") or 0), count)
            line = f"the sink was killed: frames and per_source count the {rows} rows in {path.name}"
            if line not in summary.setdefault("problems", []):
                summary["problems"].append(line)

    @staticmethod
    def _name_forgers(peers: dict[str, dict[str, Any]], summary: dict[str, Any]) -> None:
        """Messages any stage refused for their seal: the run is not complete, and who sent them is named."""
        for stage, counts in peers.items():
            forgers = counts.get("forged") or {}
            if not forgers:
                continue
            named = ", ".join(f"{peer} ({n})" for peer, n in list(forgers.items())[:5])
            line = (f"{stage} refused {sum(int(n) for n in forgers.values())} forged message(s) (no valid seal; none "
                    f"written or believed) from {named}")
            if line not in summary.setdefault("problems", []):
                summary["problems"].append(line)
            if summary.get("status") == "complete":
                summary["status"] = "incomplete"

    def annotate_summaries(self) -> list[dict[str, Any]]:
        """Add what only the supervisor knows (restarts, exit codes, killed stages) to each sink's summary.json;
        write one for a sink that could not (killed before it wrote any)."""
        summaries = []
        found = {str(path): summary for path, summary in self._sink_summaries()}
        for sink in self.graph.sinks:
            path = Path(sink.out) / "summary.json"
            summary = found.get(str(path))
            if summary is None:
                if f"sink:{sink.name}" not in self.children or not sink.summary:
                    continue  # never started: nothing to say about it
                summary = {"status": "running", "frames": 0, "problems": []}
            child = self.children.get(f"sink:{sink.name}")
            if child is not None and child.name in self.killed:
                summary["status"] = "incomplete"  # its last periodic summary is all it left
                self._count_rows_on_disk(sink, summary)
            for name in self.orphaned_sources:
                line = f"{name} was still sending when every sink had ended: frames after the sink's end are missing"
                if line not in summary.setdefault("problems", []):
                    summary["problems"].append(line)
                if summary.get("status") == "complete":
                    summary["status"] = "incomplete"
            self._check_sent_against_written(sink.name, summary)
            if self.interrupted is None and summary.get("status") == "interrupted":
                # nobody pressed Ctrl-C: the sink was stopped before every stream ended, so frames are missing
                summary["status"] = "incomplete"
                summary.setdefault("problems", []).append(
                    "the sink was stopped before every source's stream ended (no Ctrl-C or SIGTERM was given): "
                    "frames are missing")
            if self.interrupted is not None and summary.get("status") not in ("running", "incomplete"):
                # the sink saw every stream end; it ended because it was asked to
                summary["drained"] = summary.get("status") == "complete"
                summary["status"] = "interrupted"
            summary["restarts"] = dict(self.restarts)
            summary["exit_codes"] = {name: c.exit_code for name, c in self.children.items()}
            if self.killed:
                summary["killed"] = self.killed
                problems = summary.setdefault("problems", [])
                for name, info in self.killed.items():
                    line = f"stage {name} was killed ({info['why']}); about {info['held']} message(s) it held were lost"
                    if line not in problems:
                        problems.append(line)
                if summary.get("status") == "complete":
                    summary["status"] = "incomplete"
            peers = {name: {"refused": int(p.get("refused", 0) or 0), "bad_messages": int(p.get("bad", 0) or 0),
                            **({"forged": p["forgers"]} if isinstance(p.get("forgers"), dict) else {})}
                     for name, p in self._progress.items() if p.get("refused") or p.get("bad")}
            if peers:  # messages dropped and handshakes refused: the data is intact, but someone tried
                summary["peers"] = peers
            self._name_forgers(peers, summary)
            if self.failure:
                summary["failure"] = self.failure
            try:
                write_json(path, summary, newline=False)
            except OSError as exc:
                log.error("sink %s: summary %s cannot be written (%s)", sink.name, path, exc)
                summary["status"] = "incomplete"
            summaries.append(summary)
        return summaries
