"""The graph config: which stages run, how they are joined, and their settings.

One pydantic model, validated once where it enters (a YAML file or `ghostbox run` flags),
then resolved (`resolve()`): every endpoint gets a concrete URL and every stage a metrics
port, and the resolved graph is what each stage process reads. Documented example:
`configs/pipeline.yaml`.

Stage names (`ghostbox stage NAME`): `broker`, `worker:<i>`, `filter`, `sink:<name>`,
`source:<id>`.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.bundled import default_model
from pipeline.config_files import merged, read_yaml, validate
from pipeline.detect.config import DetectorConfig
from pipeline.errors import GhostboxError
from pipeline.filter import track_verdicts
from pipeline.json_files import write_json
from pipeline.sinks import live_feed
from pipeline.sinks.source_names import safe_name
from pipeline.sources.media_files import VIDEO_SUFFIXES
from pipeline.stream.endpoints import parse_url
from pipeline.stream.provenance import SEAL_FILE
from pipeline.stream.run_paths import config_run_dir, progress_file  # noqa: F401 - re-exported
from pipeline.stream.worker_plan import MAX_CPU_WORKERS, WorkerPlan, plan_workers
from pipeline.tracks import TRACKER_DEFAULTS

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
Mode = Literal["lossless", "live"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Endpoint(_Model):
    """One socket edge. `url` is where connecting sides connect (and the binder binds, unless
    `bind_url` says otherwise, e.g. tcp://0.0.0.0:5550 behind a routable `url`)."""

    url: str | None = Field(None, description="where connecting sides connect (ipc:// or tcp://); null: an ipc "
                            "socket in the run folder")
    bind_url: str | None = Field(None, description="where the binding side binds, when not at `url` (e.g. "
                                 "tcp://0.0.0.0:5550)")
    binder: str | None = Field(None, description="which side binds; null: the edge's default")

    @field_validator("url", "bind_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_url(value)  # raises ValueError with the reason
        return value


class SourceConfig(_Model):
    id: str = Field(description="the stream's name: 1-64 letters, digits, '_', '.', '-'")
    uri: str = Field(description="file, folder, glob, webcam index, rtsp/http URL, or synth[:key=value,...]")
    kind: Literal["auto", "file", "webcam", "stream", "synth"] = Field(
        "auto", description="what `uri` is; auto: guessed from it")
    mode: Mode | None = Field(None, description="lossless or live; null: the graph's mode")
    fps: float | None = Field(None, gt=0, le=1000, description="frame-rate limit; live files and synth play at "
                              "this rate")
    resize: tuple[int, int] | int | None = Field(None, description="[width, height], or the longest side (aspect "
                                                 "kept); null: as captured")
    encoding: Literal["auto", "raw", "jpeg"] = Field("auto", description="frame encoding on the wire; auto: JPEG "
                                                      "when the hop leaves the machine")
    jpeg_quality: int = Field(90, ge=10, le=100, description="JPEG quality when frames are encoded")
    loop: bool = Field(False, description="files: start again at the end (a file standing in for a camera)")
    max_frames: int | None = Field(None, ge=1, description="end the stream after this many frames read")
    reconnect_initial_s: float = Field(0.5, gt=0, description="first wait before reconnecting a lost stream")
    reconnect_max_s: float = Field(10.0, gt=0, description="longest wait between reconnect attempts")
    reconnect_attempts: int | None = Field(None, ge=0, description="reconnect attempts before giving up; null: "
                                           "for ever (live cameras)")

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not ID_PATTERN.match(value):
            raise ValueError("must be 1-64 characters of letters, digits, '_', '.', '-', "
                             "starting with a letter or digit")
        return value

    @field_validator("resize")
    @classmethod
    def _resize(cls, value: Any) -> Any:
        sizes = [value] if isinstance(value, int) else list(value or [])
        if any(not 16 <= s <= 16384 for s in sizes):
            raise ValueError("sizes must be between 16 and 16384 pixels")
        return value

    @property
    def is_sequence(self) -> bool:
        """A camera, a stream, synth or a video file: frames that follow one another (not a folder of photos)."""
        if self.resolved_kind != "file":
            return True
        return Path(self.uri).suffix.lower() in VIDEO_SUFFIXES

    @property
    def resolved_kind(self) -> str:
        if self.kind != "auto":
            return self.kind
        uri = self.uri.strip()
        if uri.isdigit():
            return "webcam"
        if uri == "synth" or uri.startswith("synth:"):
            return "synth"
        if re.match(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp|srt)://", uri, re.IGNORECASE):
            return "stream"
        return "file"


class TracksConfig(_Model):
    """Verdicts per track (`pipeline.filter.track_verdicts`), decided in the sink where each source's
    frames are back in order; boxes get track_id, track_score and track_hallucination."""

    enabled: bool | None = Field(None, description="true: every source; null: video files, cameras, streams and "
                                 "synth, not folders of photos; false: none (the tracker loads Ultralytics and "
                                 "torch into the sink: about 480 MB more memory and 2 s more start-up)")
    hysteresis: float = Field(track_verdicts.HYSTERESIS, ge=0, description="a track's verdict changes when its "
                              "mean margin (score - threshold) passes this far beyond 0")
    settle_boxes: int = Field(track_verdicts.SETTLE_BOXES, ge=1, description="a track's first boxes follow the "
                              "sign of its mean margin")
    idle_frames: int = Field(track_verdicts.IDLE_FRAMES, ge=1, description="a track unseen for this many frames is "
                             "forgotten")
    crops_per_track: int = Field(3, ge=0, description="crops archived per track: of a flagged track in OUT/flagged/, "
                                 "of every track in OUT/tracks/")
    crop_gap: int = Field(15, ge=1, description="frames between two archived crops of one track")
    bytetrack: dict[str, Any] = Field(default_factory=dict, description="Ultralytics ByteTrack settings (keys of "
                                      "its bytetrack.yaml) over its defaults")

    @field_validator("bytetrack")
    @classmethod
    def _bytetrack(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(TRACKER_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown ByteTrack setting(s) {unknown}; known: {sorted(TRACKER_DEFAULTS)}")
        return value

    def on_for(self, source: SourceConfig) -> bool:
        return source.is_sequence if self.enabled is None else self.enabled


class GraphDetector(DetectorConfig):
    """The `detector:` section: `ghostbox detect`'s settings, where a missing model means the bundled one."""

    model: str = Field("", description="the detector; empty: the bundled street-world model (filled in by "
                       "resolve())")


class WorkersConfig(_Model):
    count: int | Literal["auto"] = Field("auto", description="detector worker processes; auto: on a CPU one per "
                                         f"core (at most {MAX_CPU_WORKERS}), or one with every core for an ONNX "
                                         "model; one on a GPU (stream/worker_plan.py)")
    batch_timeout_ms: float = Field(10.0, ge=0, le=10_000, description="how long a worker waits to fill a batch")
    threads: int | None = Field(None, ge=1, le=256, description="torch threads per worker; null: cores / workers")

    @field_validator("count")
    @classmethod
    def _count(cls, value: int | str) -> int | str:
        if value != "auto" and not 1 <= int(value) <= 64:
            raise ValueError(f"count must be 'auto' or 1..64, got {value}")
        return value
    crops: Literal["auto", "raw", "jpeg", "none"] = Field("auto", description="how box crops travel to the filter")
    prefetch: int | None = Field(None, ge=0, le=8, description="batches held ready; null: 1 lossless, 0 live")
    max_restarts: int = Field(5, ge=0, description="crashes per minute before the supervisor gives up")


class BrokerConfig(_Model):
    prefetch: int = Field(4, ge=1, le=1024, description="frames queued at the broker per lossless source")
    heartbeat_ms: int = Field(1000, ge=20, le=60_000, description="heartbeat interval between broker and workers")
    liveness: int = Field(3, ge=2, le=100, description="missed heartbeats before a worker counts as dead")
    max_attempts: int = Field(3, ge=1, le=100, description="a frame that was on this many dead workers is given up")
    frame_lease_s: float = Field(60.0, ge=0, description="a worker holding a frame longer than this is lost and its "
                                 "frames go to other workers (raise it for detectors slower than this a batch; "
                                 "0: never)")
    hwm: int = Field(64, ge=1, le=100_000, description="messages queued towards the filter")


class FilterConfig(_Model):
    path: str | None = Field(None, description="a fitted filter file; null passes detections through unchanged")


class SinkConfig(_Model):
    name: str = Field("out", description="the sink's name (stage sink:NAME)")
    out: str = Field("runs/stream", description="output folder")
    video: bool = Field(True, description="OUT/annotated/<source>.mp4")
    jsonl: bool = Field(True, description="OUT/detections.jsonl")
    crops: bool = Field(True, description="OUT/flagged/: crops of flagged boxes + index.jsonl")
    gallery: bool = Field(True, description="tracked sources: OUT/tracks/, a few crops of every track (flagged or "
                          "kept) with their logits and box features, for the review page and `ghostbox calibrate "
                          "--reviewed`")
    summary: bool = Field(True, description="OUT/summary.json")
    calibration_clip_frames: int = Field(0, ge=0, description="OUT/calibration/<source>.avi: the first N frames "
                                         "as captured (no boxes drawn), for `ghostbox calibrate --from FILTER "
                                         "--calibration-id` on this camera's own footage; 0: none")
    reorder_wait_ms: float = Field(500.0, ge=0, description="live: how long a missing frame is waited for")
    endpoint: Endpoint = Field(default_factory=Endpoint, description="filter -> this sink; binder: sink "
                               "(default) or filter")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not ID_PATTERN.match(value):
            raise ValueError("must be 1-64 characters of letters, digits, '_', '.', '-'")
        return value


class Endpoints(_Model):
    sources: Endpoint = Field(default_factory=Endpoint, description="sources -> broker; the broker binds")
    workers: Endpoint = Field(default_factory=Endpoint, description="broker <-> workers; the broker binds")
    filter: Endpoint = Field(default_factory=Endpoint, description="broker -> filter; binder: broker (default) "
                             "or filter")


class MetricsConfig(_Model):
    host: str = Field("127.0.0.1", description="address the Prometheus endpoints listen on")
    port: int | None = Field(None, ge=1, le=65535, description="stage k of `ghostbox stage --list` serves on "
                             "port + k; null: no metrics")


class SecurityConfig(_Model):
    """tcp endpoints: CurveZMQ (encrypted, clients authorized by public key) unless `insecure: true`.
    ipc endpoints rely on the run folder's 0700 mode."""

    curve: bool | None = Field(None, description="CurveZMQ on tcp endpoints; null: on when any endpoint is tcp")
    insecure: bool = Field(False, description="tcp without CURVE: not encrypted, peers still need the graph token "
                           "(ZMQ PLAIN)")
    keys: str = Field("keys", description="folder written by `ghostbox keys --out DIR server client` (made on the "
                      "first `ghostbox run`)")
    server: str = Field("server", description="key pair of binding sides")
    client: str = Field("client", description="key pair of connecting sides")
    authorized: list[str] = Field(default_factory=lambda: ["client"], description="client public keys (names in "
                                  "`keys`, or paths) servers accept")
    roles: bool = Field(False, description="CURVE with one key pair per role (source, worker, broker, filter, "
                        "sink; named so in `keys`): each bound endpoint accepts only the role that belongs on it, "
                        "so a machine holding a worker's key cannot write rows at a sink or speak for a source "
                        "(`client` and `authorized` are then unused)")
    seal: str | None = Field(None, description="file holding the seal key that sources, the filter and sinks "
                             "share: a row is written only for a frame its source sealed, with the filter's seal "
                             "(docs/protocol.md); null: a new key per `ghostbox run`, `KEYS/seal.key` for "
                             "`ghostbox stage`")

    @model_validator(mode="after")
    def _check(self) -> SecurityConfig:
        if self.curve and self.insecure:
            raise ValueError("curve: true and insecure: true contradict each other; choose one")
        return self


class LimitsConfig(_Model):
    """What a stage accepts from a peer, checked before anything is decoded or held."""

    max_image_pixels: int = Field(50_000_000, ge=1, description="one frame or crop, from its declared shape or "
                                  "JPEG header")
    max_message_bytes: int = Field(256 << 20, ge=1 << 16, description="one message part; ZeroMQ drops a larger "
                                   "one unread")
    reorder_max_bytes: int = Field(256 << 20, ge=1 << 20, description="per sink and source: frames held to "
                                   "restore order")


class WebConfig(_Model):
    """What the sinks publish for the live web view (`ghostbox run --web`): each source's newest annotated
    frame and the counters, on a PUB socket in run_dir that drops what nobody takes."""

    feed: bool = Field(False, description="publish the feed (`--web` turns it on)")
    fps: float = Field(live_feed.FPS, gt=0, le=60, description="annotated frames a second, per source")
    max_width: int = Field(live_feed.MAX_WIDTH, ge=64, le=8192, description="frames wider than this are scaled "
                           "down")
    quality: int = Field(live_feed.QUALITY, ge=10, le=100, description="JPEG quality of the frames")


def feed_url(run_dir: str | Path, sink: str) -> str:
    """Where sink `sink` publishes the web view's feed (ipc: the run folder is 0700)."""
    return f"ipc://{Path(run_dir)}/feed-{sink}.sock"


class ShutdownConfig(_Model):
    """How long the supervisor waits for each stage once everything upstream of it has ended."""

    stage_grace_s: float = Field(10.0, ge=0.1, description="base time to finish, before SIGTERM (and again "
                                 "before SIGKILL)")
    per_item_s: float = Field(0.1, ge=0, description="more time per message the stage still holds")


class GraphConfig(_Model):
    version: Literal[1] = Field(1, description="config format version")
    mode: Mode = Field("lossless", description="lossless (files: every frame, in order) or live (cameras: newest "
                       "frame wins)")
    run_dir: str | None = Field(None, description="ipc sockets live here; null: a fresh temporary folder")
    sources: list[SourceConfig] = Field(min_length=1, description="one stream each (`--source` on the command "
                                        "line)")
    detector: GraphDetector = Field(default_factory=GraphDetector, description="`ghostbox detect`'s settings")
    workers: WorkersConfig = Field(default_factory=WorkersConfig, description="the detector worker pool")
    broker: BrokerConfig = Field(default_factory=BrokerConfig, description="the broker between sources and "
                                 "workers")
    filter: FilterConfig = Field(default_factory=FilterConfig, description="the hallucination filter stage")
    sinks: list[SinkConfig] = Field(default_factory=lambda: [SinkConfig()], min_length=1,
                                    description="where results are written")
    endpoints: Endpoints = Field(default_factory=Endpoints, description="how the stages are joined")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Prometheus metrics")
    security: SecurityConfig = Field(default_factory=SecurityConfig, description="who may connect to tcp "
                                     "endpoints")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="what a stage accepts from a peer")
    tracks: TracksConfig = Field(default_factory=TracksConfig, description="verdicts per track instead of per "
                                 "frame")
    web: WebConfig = Field(default_factory=WebConfig, description="the live web view's feed")
    shutdown: ShutdownConfig = Field(default_factory=ShutdownConfig, description="how long stages get to finish")
    shutdown_grace_s: float = Field(15.0, ge=0, description="Ctrl-C: how long the graph may drain before SIGTERM")

    @model_validator(mode="after")
    def _check(self) -> GraphConfig:
        ids = [s.id for s in self.sources]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"source ids must be unique, repeated: {dup}")
        names = [s.name for s in self.sinks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"sink names must be unique, repeated: {dup}")
        if self.endpoints.filter.binder not in (None, "broker", "filter"):
            raise ValueError(f"endpoints.filter.binder must be 'broker' or 'filter', "
                             f"got {self.endpoints.filter.binder!r}")
        for sink in self.sinks:
            if sink.endpoint.binder not in (None, "sink", "filter"):
                raise ValueError(f"sinks[{sink.name}].endpoint.binder must be 'sink' or 'filter', "
                                 f"got {sink.endpoint.binder!r}")
        for name in ("sources", "workers"):
            if getattr(self.endpoints, name).binder not in (None, "broker"):
                raise ValueError(f"endpoints.{name}.binder: the broker always binds this edge")
        return self

    # -- derived ------------------------------------------------------------------------------

    def source_mode(self, source: SourceConfig) -> str:
        return source.mode or self.mode

    def stage_names(self) -> list[str]:
        """Every stage, in start order (binders first) and metrics-port order."""
        return (["broker", "filter"] + [f"sink:{s.name}" for s in self.sinks]
                + [f"worker:{i}" for i in range(self.worker_plan().count)] + [f"source:{s.id}" for s in self.sources])

    def worker_plan(self) -> WorkerPlan:
        """How many workers run, with how many threads and what batch each (`auto` chosen for this machine)."""
        return plan_workers(self.workers.count, self.workers.threads, self.detector.device, model=self.detector.model,
                            batch=self.detector.batch)

    def metrics_port(self, stage: str) -> int | None:
        if self.metrics.port is None:
            return None
        return self.metrics.port + self.stage_names().index(stage)

    def source(self, source_id: str) -> SourceConfig:
        for source in self.sources:
            if source.id == source_id:
                return source
        raise GhostboxError(f"no source '{source_id}' in the config (sources: {[s.id for s in self.sources]})")

    def sink(self, name: str) -> SinkConfig:
        for sink in self.sinks:
            if sink.name == name:
                return sink
        raise GhostboxError(f"no sink '{name}' in the config (sinks: {[s.name for s in self.sinks]})")

    def uses_tcp(self) -> bool:
        urls = [getattr(self.endpoints, n) for n in ("sources", "workers", "filter")] + [s.endpoint for s in self.sinks]
        return any((e.url or "").startswith("tcp://") or (e.bind_url or "").startswith("tcp://") for e in urls)

    def curve_on(self) -> bool:
        """CURVE on tcp endpoints: asked for, or by default whenever the graph uses tcp and is not `insecure`."""
        if self.security.curve is not None:
            return self.security.curve
        return self.uses_tcp() and not self.security.insecure

    def edge_roles(self) -> dict[str, str]:
        """Each edge (a ZAP domain) and the one role that may connect to its bound side."""
        edges = {"sources": "source", "workers": "worker",
                 "filter": "filter" if (self.endpoints.filter.binder or "broker") == "broker" else "broker"}
        for sink in self.sinks:
            edges[f"sink:{sink.name}"] = "filter" if (sink.endpoint.binder or "sink") == "sink" else "sink"
        return edges

    def seal_path(self) -> Path:
        """The seal key file of sources, the filter and sinks: `security.seal` (`ghostbox run` names its own, new
        each run), else the keys folder's, which every machine of a tcp graph gets a copy of, else (one machine,
        ipc only) the run folder's."""
        if self.security.seal:
            return Path(self.security.seal)
        return (Path(self.security.keys) if self.uses_tcp() else Path(self.run_dir or ".")) / SEAL_FILE

    def token_on(self) -> bool:
        """The graph token (ZMQ PLAIN) on tcp endpoints: an insecure tcp graph still keeps strangers out."""
        return self.uses_tcp() and not self.curve_on()

    def any_live(self) -> bool:
        return any(self.source_mode(s) == "live" for s in self.sources)

    def all_live(self) -> bool:
        return all(self.source_mode(s) == "live" for s in self.sources)

    def filter_needs_crops(self) -> bool:
        """The filter has a crop model: the workers must send each box's crop (read from its file's header)."""
        if not self.filter.path:
            return False
        from pipeline.filter.filter_file import header_needs_crops, read_filter_header  # the filter's, not the graph's

        return header_needs_crops(read_filter_header(self.filter.path))

    def check_filter_crops(self) -> None:
        """Refuse, before any frame, a graph whose workers would not send the crops its filter reads."""
        if self.workers.crops == "none" and self.filter_needs_crops():
            raise GhostboxError(
                f"filter '{self.filter.path}' has a crop model, which reads each box's pixels, but workers.crops is "
                f"'none': set workers.crops to auto (or raw/jpeg), or use a filter without a crop model")


def load_graph(path: str | Path) -> GraphConfig:
    return graph_from_dict(read_yaml(path), f"config '{path}'")


def graph_from_dict(data: dict[str, Any], where: str) -> GraphConfig:
    return validate(GraphConfig, data, where)


def default_run_dir(config_path: str | Path | None) -> Path:
    """Where ipc sockets go: given, or per config file (so `ghostbox stage` processes started
    from one config on one machine meet), or a fresh temporary folder."""
    if config_path is None:
        return Path(tempfile.mkdtemp(prefix="gbx-"))
    return config_run_dir(config_path)


def resolve(graph: GraphConfig, run_dir: str | Path) -> GraphConfig:
    """A copy with every endpoint URL filled in (ipc sockets in `run_dir` where none was given),
    absolute paths, and the bundled model where none was named."""
    run_dir = Path(graph.run_dir or run_dir).resolve()
    data = graph.model_dump()
    data["run_dir"] = str(run_dir)

    def ipc(name: str) -> str:
        url = f"ipc://{run_dir}/{name}.sock"
        if len(url) > 100:  # sun_path is 107 bytes on Linux
            raise GhostboxError(f"run_dir '{run_dir}': path too long for ipc sockets (keep it under 80 characters)")
        return url

    defaults = {"sources": "broker", "workers": "broker", "filter": "broker"}
    for name, binder in defaults.items():
        endpoint = data["endpoints"][name]
        endpoint["url"] = endpoint["url"] or ipc(name)
        endpoint["binder"] = endpoint["binder"] or binder
    for sink in data["sinks"]:
        sink["endpoint"]["url"] = sink["endpoint"]["url"] or ipc(f"sink-{sink['name']}")
        sink["endpoint"]["binder"] = sink["endpoint"]["binder"] or "sink"
        sink["out"] = str(Path(sink["out"]).expanduser().resolve())
    if not data["detector"]["model"]:
        data["detector"]["model"] = str(default_model())
    model = Path(data["detector"]["model"]).expanduser()
    if model.suffix.lower() in (".pt", ".onnx", ".yaml", ".yml") and model.exists():
        data["detector"]["model"] = str(model.resolve())
    if data["filter"]["path"]:
        data["filter"]["path"] = str(Path(data["filter"]["path"]).expanduser().resolve())
    data["security"]["keys"] = str(Path(data["security"]["keys"]).expanduser().resolve())
    if data["security"]["seal"]:
        data["security"]["seal"] = str(Path(data["security"]["seal"]).expanduser().resolve())
    urls = [data["endpoints"][n]["url"] for n in defaults] + [s["endpoint"]["url"] for s in data["sinks"]]
    dup = sorted({u for u in urls if urls.count(u) > 1})
    if dup:
        raise GhostboxError(f"endpoints: the same URL is used for two edges: {dup}")
    return GraphConfig.model_validate(data)


ORPHAN_REMOVES = "remove-when-orphaned"  # in a run folder the supervisor made for one run: its stages remove
# the folder when they find the supervisor gone (killed with SIGKILL, it cannot)




def dump_graph(graph: GraphConfig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, graph.model_dump(mode="json"), newline=False)
    return path


def read_graph_json(path: str | Path) -> GraphConfig:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise GhostboxError(f"graph '{path}': cannot read ({exc})") from exc
    return validate(GraphConfig, data, f"graph '{path}'")


def source_id_for(uri: str, taken: set[str]) -> str:
    """A readable, unique source id for a `--source` flag: the file stem, webcam0, rtsp0..."""
    uri = uri.strip()
    numbered = False  # kinds that read best with a number: webcam0, rtsp0, rtsp1
    if uri.isdigit():
        stem = f"webcam{uri}"
    elif uri == "synth" or uri.startswith("synth:"):
        stem = "synth"
    elif "://" in uri:
        stem, numbered = uri.split("://", 1)[0].lower(), True
    else:
        glob_at = min([uri.find(c) for c in "*?[" if c in uri] or [len(uri)])
        path = Path(uri[:glob_at].rstrip("/")) if glob_at < len(uri) else Path(uri.rstrip("/"))
        stem = (path.name if glob_at < len(uri) or not path.suffix else path.stem) or "images"
    stem = safe_name(stem).strip("_.-")[:56] or "source"
    if numbered:
        name = next(f"{stem}{k}" for k in range(len(taken) + 1) if f"{stem}{k}" not in taken)
    else:
        name = next(n for n in [stem] + [f"{stem}_{k}" for k in range(2, len(taken) + 3)] if n not in taken)
    taken.add(name)
    return name


def with_overrides(data: dict[str, Any], given: dict[str, Any], *, sources: list[str] | None = None,
                   fps: float | None = None, first_sink: dict[str, Any] | None = None,
                   every_sink: dict[str, Any] | None = None, web: bool = False) -> dict[str, Any]:
    """A config mapping with `ghostbox run` flags applied (flags win over the file): `given`, a mapping of
    settings by their place in the graph (`SettingsFlags.given`), merged over the file; the flags that
    speak for list entries: `sources` (replacing the file's), `fps` (every source), `first_sink` and
    `every_sink` (sink settings); `web`: the live feed on."""
    data = merged(json.loads(json.dumps(data)), given)  # a deep copy of plain YAML data, flags over it
    if sources:
        taken: set[str] = set()
        data["sources"] = [{"id": source_id_for(uri, taken), "uri": uri} for uri in sources]
    if fps is not None:
        for source in data.get("sources", []):
            if isinstance(source, dict):
                source["fps"] = fps
    data["detector"] = data.get("detector") or {}
    data["detector"].setdefault("model", "")
    if web:
        data.setdefault("web", {})["feed"] = True
    if first_sink or every_sink:
        sinks = data.get("sinks") or [{}]
        data["sinks"] = sinks
        sinks[0].update(first_sink or {})
        for sink in sinks:
            sink.update(every_sink or {})
    return data

