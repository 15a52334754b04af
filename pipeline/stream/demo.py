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

log = logging.getLogger(__name__)


def demo_config(out: str, frames: int = 300, seed: int = 0, workers: int = 1, mode: str = "lossless",
                model: str | None = None, filter_path: str | None = None, imgsz: int | None = None,
                metrics_port: int | None = None, video: bool = True, batch: int | None = None,
                tracks: bool = True) -> dict[str, Any]:
    """The demo graph as a config mapping (validated by the caller like any other)."""
    bundled_model = model is None or Path(model).resolve() == default_model().resolve()
    if filter_path is None and bundled_model:  # the bundled filter fits the bundled model only
        found = default_filter()
        filter_path = str(found) if found else None
    if filter_path is None:
        log.warning("no filter for this model: boxes pass through unflagged (pass --filter FILE)")
    detector: dict[str, Any] = {"model": model or str(default_model())}
    if imgsz is not None:
        detector["imgsz"] = imgsz
    if batch is not None:
        detector["batch"] = batch
    return {
        "mode": mode,
        "sources": [{"id": "street", "uri": f"synth:seed={seed},frames={frames}"}],
        "detector": detector,
        "workers": {"count": workers},
        "filter": {"path": filter_path},
        "sinks": [{"name": "out", "out": out, "video": video, "jsonl": True, "crops": True, "summary": True}],
        "metrics": {"port": metrics_port},
        "tracks": {"enabled": tracks},
    }
