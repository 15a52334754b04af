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

Here: the checks before starting and the decisions (`Supervisor`). The processes, their graces and
the ordered shutdown are in `stage_processes.py`, the stages' counters in `stage_progress.py`,
the summary.json rules in `run_summary.py`, the EOS sent for a crashed source in `source_eos.py`.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import stat
import time
from pathlib import Path
from typing import Any

from pipeline.detect.model_source import sha256_file
from pipeline.errors import GhostboxError
from pipeline.filter.filter_file import read_filter_header
from pipeline.filter.hallucination_filter import check_calibrated_conf
from pipeline.sources.file_reader import check_file_source
from pipeline.sources.synth_reader import parse_synth_uri
from pipeline.stream.config import ORPHAN_REMOVES, GraphConfig, dump_graph
from pipeline.stream.provenance import SEAL_FILE, make_seal_key
from pipeline.stream.run_summary import annotate_summaries, log_status
from pipeline.stream.security import PeerAuth
from pipeline.stream.source_eos import send_eos_for
from pipeline.stream.stage_processes import Child, StageProcesses
from pipeline.stream.stage_progress import StageProgress

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 600.0  # a worker loading a large model on a slow disk


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
    """Decides what each stage's exit means (start it again, end its stream, end the run), drains the graph in
    order on Ctrl-C, and says how the run ended; `stages` runs the processes, `progress` reads their counters."""

    def __init__(self, graph: GraphConfig, log_level: str = "INFO", remove_run_dir: bool = False,
                 status_every_s: float = 10.0) -> None:
        self.graph = graph
        self.remove_run_dir = remove_run_dir
        self.status_every_s = status_every_s
        self.run_dir = Path(graph.run_dir or ".")
        self.graph_path = self.run_dir / "graph.json"
        self.progress = StageProgress(self.run_dir)
        self.stages = StageProcesses(self.graph_path, log_level, self.progress, graph.shutdown,
                                     graph.workers.max_restarts, graph.shutdown_grace_s)
        self.failure: str | None = None
        self.failure_code = 1  # 2 when a stage refused its configuration, as the CLI's own input errors
        self.interrupted: int | None = None  # the signal number of the first Ctrl-C / SIGTERM
        self.forced = False
        self.stopping = False  # sources were told to stop (signal or failure)
        self.drain_deadline: float | None = None
        self.failed_sources: list[str] = []
        self.created_run_dir = False
        self.code: int | None = None

    # -- start ----------------------------------------------------------------------------------

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
        children = self.stages.children
        # Everything but the sources starts at once: the workers' model loading (seconds) overlaps the other
        # stages' start. Preflight already held the filter against the model, so nothing waits on that.
        for name in names:
            if not name.startswith("source:"):
                self.stages.start(name)
        # Sources wait for a worker with its model and for the sinks' outputs and trackers: frames sent before
        # would wait in the broker and count that wait as latency.
        workers = [n for n in names if n.startswith("worker:")]
        for name in [workers[0], *(n for n in names if n.startswith("sink:"))]:
            if not self._wait_ready(name):
                return
        for name in names:
            if name not in children:
                self.stages.start(name)
        plan = self.graph.worker_plan()
        log.info("started %d stages (%s); %d worker(s) with %d torch thread(s) and batch %d each (%s); run folder %s",
                 len(children), ", ".join(children), plan.count, plan.threads, plan.batch, plan.why, self.run_dir)

    def _wait_ready(self, name: str) -> bool:
        """Wait until the stage is ready (a worker: its model loaded and the filter accepted; a sink: its
        outputs and trackers made); False if it refused or died."""
        child = self.stages.children[name]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and self.interrupted is None:
            if self.progress.read(name).get("ready"):
                return True
            code = child.proc.poll()
            if code is not None:
                child.exit_code = code
                error = self.progress.error(name)
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
            for child in self.stages.children.values():
                self.stages.signal(child, signal.SIGTERM)

    def _stop_sources(self, grace_s: float) -> None:
        self.stopping = True
        if self.drain_deadline is None:
            self.drain_deadline = time.monotonic() + grace_s
        for child in self.stages.children.values():
            if child.kind == "source" and not child.stopped:
                self.stages.signal(child, signal.SIGTERM)
                child.kill_at = self.drain_deadline

    # -- what an exit means ---------------------------------------------------------------------

    def _fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = why
            log.error("%s; stopping the run", why)
            self._stop_sources(5.0)

    def _restart(self, child: Child, why: str) -> None:
        failure = self.stages.restart(child, why)
        if failure is not None:
            self._fail(failure)

    def _reap(self) -> None:
        for child in self.stages.children.values():
            if not child.alive:
                continue
            code = child.proc.poll()
            if code is None:
                continue
            child.exit_code = code
            shutting_down = self.failure is not None or self.forced or child.stopped
            if code == 2 and not shutting_down:  # a configuration error: starting again cannot help
                error = self.progress.error(child.name)
                self.failure_code = 2
                self._fail(f"stage {child.name} refused its configuration: {error or 'see its error above'}")
            elif child.kind == "worker":
                broker = self.stages.children.get("broker")
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
                    send_eos_for(self.graph, sid, f"source process exited with code {code}")
            elif code != 0 and child.name not in self.stages.killed:
                if not shutting_down:
                    self._fail(f"stage {child.name} exited with code {code}")
                elif code not in (-signal.SIGTERM, 128 + signal.SIGTERM):
                    log.warning("stage %s exited with code %d while stopping", child.name, code)

    # -- the run --------------------------------------------------------------------------------

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
            self.stages.kill_all("was still running when the supervisor ended")
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            if self.remove_run_dir or (self.created_run_dir and self.code == 2):
                shutil.rmtree(self.run_dir, ignore_errors=True)  # a run that never started leaves nothing

    def _loop(self) -> int:
        last_status = time.monotonic()
        while any(c.alive for c in self.stages.children.values()):
            time.sleep(0.1)
            self._reap()
            now = time.monotonic()
            self.progress.refresh(self.stages.children, now)
            if (self.drain_deadline is not None and now > self.drain_deadline and not self.forced
                    and self.interrupted is not None
                    and any(c.alive and c.kind != "sink" for c in self.stages.children.values())):
                log.warning("the graph did not drain within %.0f s; each stage now gets its grace to finish",
                            self.graph.shutdown_grace_s)
                self.drain_deadline = float("inf")
            self.stages.advance_shutdown(now, self.forced)
            if now - last_status > self.status_every_s:
                last_status = now
                log_status(self.graph)
        return self._result()

    def _result(self) -> int:
        self.progress.refresh(self.stages.children, time.monotonic(), force=True)  # the stages' final counters
        summaries = self.annotate_summaries()
        for name, info in self.stages.killed.items():
            log.error("stage %s was killed (%s)%s", name, info["why"],
                      f"; about {info['held']} message(s) it held were not passed on or written"
                      if info["held"] else "")
        if self.failure is not None and (self.interrupted is None or self.failure_code == 2):
            if self.failure_code != 2:  # a refusal was the one line already; a crash may have scrolled away
                log.error("run failed: %s", self.failure)
            return self.failure_code
        if self.interrupted is not None:
            return 128 + int(self.interrupted)
        if self.failed_sources or self.stages.orphaned_sources:
            if self.failed_sources:
                log.error("source(s) failed: %s", ", ".join(self.failed_sources))
            return 1
        if self.stages.killed or not summaries or any(s.get("status") != "complete" for s in summaries):
            return 1
        return 0

    def annotate_summaries(self) -> list[dict[str, Any]]:
        """Each sink's summary.json, completed with what the supervisor knows (run_summary.py) and written."""
        return annotate_summaries(self.graph, self.stages, self.progress.latest, self.interrupted, self.failure)
