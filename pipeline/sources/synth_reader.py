"""The synthetic world as a frame source: the `synth[:key=value,...]` URI and its `FrameReader`.

`parse_synth_uri` is also what the supervisor, the demo and the benchmarks use to check or
rebuild a synth stream's world, so the URI grammar lives in one place.
"""

from __future__ import annotations

import time
from typing import Any

from pipeline.errors import GhostboxError
from pipeline.sources.frame_reader import Captured
from pipeline.synth import WorldConfig, render_stream_frame


def parse_synth_uri(uri: str) -> dict[str, Any]:
    """`synth` or `synth:seed=3,frames=600,width=320,height=320,fps=30,objects=5`."""
    keys = {"seed": "seed", "frames": "stream_frames", "width": "width", "height": "height", "fps": "stream_fps",
            "objects": "stream_objects_on_screen"}
    params: dict[str, Any] = {}
    body = uri[len("synth"):].lstrip(":")
    for item in filter(None, (p.strip() for p in body.split(","))):
        key, _, value = item.partition("=")
        if key not in keys or not value:
            raise GhostboxError(f"source '{uri}': expected synth:key=value,... with keys {sorted(keys)}, got '{item}'")
        try:
            params[keys[key]] = float(value) if key == "fps" else int(value)
        except ValueError:
            raise GhostboxError(f"source '{uri}': {key}={value!r} is not a number") from None
    WorldConfig(**params)  # validates (raises GhostboxError naming the field)
    return params


class SynthReader:
    """The synthetic world's stream (`pipeline.synth.render_stream_frame`), frame by frame."""

    live = False
    report = None

    def __init__(self, uri: str) -> None:
        self.config = WorldConfig(**parse_synth_uri(uri))
        self.fps = float(self.config.stream_fps)
        self.uri = uri
        self._index = 0

    def read(self) -> Captured | None:
        if self._index >= self.config.stream_frames:
            return None
        image, _ = render_stream_frame(self.config, self._index)
        self._index += 1
        return Captured(image, self.uri, self._index - 1, time.time())

    def close(self) -> None:
        pass
