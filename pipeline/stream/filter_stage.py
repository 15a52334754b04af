"""The OOD filter stage: scores every box and marks hallucinations, between broker and sinks.

Pure core: `FilterCore.process(dets) -> dets` (with no filter configured, detections pass
through unchanged). The filter only marks (`score`, `threshold`, `hallucination` per box);
a filter with policy "drop" is honoured by the sinks' outputs (`pipeline.sinks.policy`),
which leave flagged boxes out of the JSONL and the video but still archive their crops (the
fine-tuning data). The sinks take the policy from the filter file; the header's copy is for
whoever reads the messages.

Shell: `FilterStage`
    input   PULL from the broker (the broker binds by default; `endpoints.filter.binder:
            filter` makes this side bind). PULL because the broker pushes, one way.
    output  one PUSH per sink: every message goes to every sink (lossless fan-out: a PUSH
            socket per sink blocks at its high-water mark instead of dropping, as PUB would).
Arrays and image parts are forwarded untouched (zero-copy); only the header is re-encoded
and the three score arrays are appended.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np
import zmq

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.drift import DriftMonitor, DriftState
from pipeline.filter.filter_file import header_needs_crops, load_filter, read_filter_header
from pipeline.stream import protocol as P
from pipeline.stream.config import GraphConfig
from pipeline.stream.provenance import Seal, part_specs
from pipeline.stream.shell import StageShell

log = logging.getLogger(__name__)


class FilterCore:
    def __init__(self, hallucination_filter: Any | None) -> None:
        self.filter = hallucination_filter
        self.policy = getattr(hallucination_filter, "policy", None)
        self._checked: set[str] = set()
        deciles = list(hallucination_filter.thresholds.margin_deciles) if hallucination_filter is not None else None
        self.drift = DriftMonitor(deciles)
        self._alarmed: set[str] = set()

    @classmethod
    def from_path(cls, path: str | None) -> FilterCore:
        if not path:
            return cls(None)
        if header_needs_crops(read_filter_header(path)):
            import torch  # the crop model's runtime: set before it loads, its ONNX session takes the count

            # one process among busy detector workers: more threads only fight them for the cores
            torch.set_num_threads(1)
        return cls(load_filter(path))

    def check_detector(self, fingerprint: dict[str, Any] | None) -> None:
        """Raise GhostboxError once per detector the filter was not fitted for."""
        if self.filter is None:
            return
        if not fingerprint:
            raise GhostboxError("detections carry no detector fingerprint; cannot check the filter matches")
        key = json.dumps(fingerprint, sort_keys=True, default=str)
        if key not in self._checked:
            self.filter.check_detector(fingerprint)
            self._checked.add(key)

    def process(self, dets: Detections) -> Detections:
        if self.filter is None:
            return dets
        return self.filter.apply(dets)

    def watch(self, source: str, scored: Detections) -> DriftState:
        """Feed a scored frame to the source's drift window; log once when an alarm starts or ends."""
        margins = np.asarray(scored.data["score"], np.float64) - np.asarray(scored.data["threshold"], np.float64)
        state = self.drift.update(source, margins, np.asarray(scored.data["hallucination"], bool))
        if state.alarm and source not in self._alarmed:
            self._alarmed.add(source)
            log.warning("source %s: scores have drifted from the filter's calibration (PSI %.2f > %.2f over the last "
                        "%d boxes, %.1f%% flagged); re-calibrate for this camera from its own frames "
                        "(see docs/filters.md)", source, state.psi, self.drift.alarm, state.boxes,
                        100 * state.flag_rate)
        elif not state.alarm and source in self._alarmed and state.psi is not None:
            self._alarmed.discard(source)
            log.info("source %s: score drift back within bounds (PSI %.2f)", source, state.psi)
        return state


SCORE_KEYS = ("score", "threshold", "hallucination")


class FilterStage(StageShell):
    def __init__(self, graph: GraphConfig, parent_pid: int | None = None, exit_when_done: bool = True) -> None:
        super().__init__(graph, "filter", parent_pid)
        self.core = FilterCore.from_path(graph.filter.path)
        if self.core.filter is not None:
            log.info("filter %s (%s, policy %s)", graph.filter.path, self.core.filter.method, self.core.policy)
        else:
            log.info("no filter configured: detections pass through unchanged")
        ep = graph.endpoints.filter
        self.input = self.socket(zmq.PULL, ep.url, bind=ep.binder == "filter", bind_url=ep.bind_url,
                                 hwm=graph.broker.hwm, edge="filter")
        self.outputs = []
        for sink in graph.sinks:
            sock = self.socket(zmq.PUSH, sink.endpoint.url, bind=sink.endpoint.binder == "filter",
                               bind_url=sink.endpoint.bind_url, hwm=graph.broker.hwm, edge=f"sink:{sink.name}")
            sock.sndtimeo = 200  # blocking sends, but the loop still sees a stop request
            sock.linger = -1  # exiting never drops what a slow sink has not taken yet; the supervisor times us
            self.outputs.append(sock)
        self.seal = self.load_seal()
        self.required = {s.id for s in graph.sources}
        self.ended: set[str] = set()
        self.exit_when_done = exit_when_done
        self.done = 0  # messages taken from the broker
        self.sent = 0  # messages passed to the sinks

    def _fan_out(self, message: list[Any]) -> None:
        for sock in self.outputs:
            while True:
                try:
                    sock.send_multipart(message, copy=False)
                    break
                except zmq.Again:
                    if self.should_stop():
                        return

    def _detections(self, message: P.Message) -> list[Any] | None:
        if message.topic not in self.required:
            self.bad("unknown-source", message.topic, "filter input")
            return None
        header = dict(message.header)
        if not Seal.same(self.seal.frame(message.topic, header), header.get("seal")):
            # only the source and the supervisor hold the key: a result for a frame that was never sent
            self.forged(f"{message.topic} frame {message.seq}: a result without its frame's seal", "filter input")
            return None
        t_in = time.time()
        stamps = {**message.stamps, "filter_in": t_in}
        self.metrics.inc_in(message.topic)
        self.metrics.observe_hop("broker->filter", t_in - stamps.get("broker_out", t_in))
        extra = []
        if header.get("error") is None:
            try:
                dets = P.detections_from(message)
            except P.ProtocolError as exc:
                self.bad(exc.reason, exc.detail, "filter input")
                return None
            if self.core.filter is not None:
                if any(message.has(f"data.{k}") for k in SCORE_KEYS):
                    self.bad("already-scored", message.topic, "filter input")
                    return None
                try:
                    self.core.check_detector(header.get("detector"))
                    scored = self.core.process(dets)
                except GhostboxError as exc:
                    # workers check the filter against their detector at start, so this is a stray
                    # message: it goes on unscored and marked, so lossless delivery still holds
                    self.bad("filter-does-not-fit", str(exc)[:300], "filter input")
                    header["error"] = f"not scored: {exc}"[:500]
                else:
                    extra = [P.raw_part(f"data.{k}", np.asarray(scored.data[k])) for k in SCORE_KEYS]
                    flagged = int(np.count_nonzero(scored.data["hallucination"]))
                    self.metrics.inc_boxes(message.topic, len(scored) - flagged, flagged)
                    header["policy"] = self.core.policy
                    if len(scored):
                        drift = self.core.watch(message.topic, scored)
                        self.metrics.set_drift(message.topic, drift.flag_rate, drift.psi)
                        header["drift"] = drift.model_dump()
        t_out = time.time()
        self.metrics.observe_stage(t_out - t_in)
        header["t"] = {**stamps, "filter_out": t_out}
        header.pop("sealed", None)
        specs = part_specs(message) + [spec for spec, _ in extra]
        header["sealed"] = self.seal.result(message.topic, header, specs, [*message.parts, *(p for _, p in extra)])
        return P.reencode(message, header, extra)

    def run(self) -> int:
        while not self.should_stop():
            self.report_progress(done=self.done, sent=self.sent)
            if not self.input.poll(100):
                continue
            self.done += 1
            message = self.receive(self.input, "filter input")
            if message is None:
                continue
            if message.type == P.DETECTIONS:
                out = self._detections(message)
                if out is not None:
                    self._fan_out(out)
                    self.sent += 1
                    self.metrics.inc_out(message.topic)
            elif message.type == P.EOS:
                if message.topic not in self.required:
                    self.bad("unknown-source", message.topic, "filter input")
                    continue
                if not Seal.same(self.seal.eos(message.topic, message.header), message.header.get("seal")):
                    self.forged(f"{message.topic}: an end of stream without its source's seal", "filter input")
                    continue
                self._fan_out(P.reencode(message))
                self.sent += 1
                self.ended.add(message.topic)
                self.core.drift.forget(message.topic)
                log.info("source %s ended (%s)", message.topic, message.header["status"])
                if self.exit_when_done and self.ended >= self.required:
                    break
            else:  # shutdown included: only signals and EOS end this stage, not a peer on the data path
                self.bad(f"unexpected-{message.type}", "", "filter input")
        self.report_progress(force=True, done=self.done, sent=self.sent)
        self.close()
        return 0
