"""`ghostbox demo`: the synthetic street world through the bundled model and filter.

The graph is an ordinary one (a `synth:` source, the supervisor, the usual sinks); after the run
its JSONL is scored against the world's ground truth (`pipeline.synth.truth_judging`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.bundled import default_model
from pipeline.filter.filter_file import default_filter
from pipeline.synth.config import WorldConfig

log = logging.getLogger(__name__)


def demo_config(out: str, frames: int | None = None, seed: int | None = None, workers: int | None = None,
                mode: str | None = None, model: str | None = None, filter_path: str | None = None,
                imgsz: int | None = None, metrics_port: int | None = None, video: bool | None = None,
                batch: int | None = None, tracks: bool | None = None) -> dict[str, Any]:
    """The demo graph as a config mapping (validated by the caller like any other). What is not given is the
    default of the world (`WorldConfig`: seed, stream frames) or of the graph (workers, mode, tracks, video)."""
    bundled_model = model is None or Path(model).resolve() == default_model().resolve()
    if filter_path is None and bundled_model:  # the bundled filter fits the bundled model only
        found = default_filter()
        filter_path = str(found) if found else None
    if filter_path is None:
        log.warning("no filter for this model: boxes pass through unflagged (pass --filter FILE)")
    world = WorldConfig(**{k: v for k, v in (("seed", seed), ("stream_frames", frames)) if v is not None})
    detector = {"model": model or str(default_model()), **({"imgsz": imgsz} if imgsz is not None else {}),
                **({"batch": batch} if batch is not None else {})}
    sink: dict[str, Any] = {"name": "out", "out": out, **({"video": video} if video is not None else {})}
    data: dict[str, Any] = {
        "sources": [{"id": "street", "uri": f"synth:seed={world.seed},frames={world.stream_frames}"}],
        "detector": detector, "filter": {"path": filter_path}, "sinks": [sink], "metrics": {"port": metrics_port},
    }
    if mode is not None:
        data["mode"] = mode
    if workers is not None:
        data["workers"] = {"count": workers}
    if tracks is not None:
        data["tracks"] = {"enabled": tracks}
    return data
