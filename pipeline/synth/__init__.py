"""A deterministic procedural street world: ID classes, near/far OoD objects, a video stream.

`generate_world(WorldConfig(...), out_dir)` writes the whole world (layout in
`pipeline.synth.world`); `render_stream_frame(config, index)` draws one stream frame on demand.
"""

from __future__ import annotations

from pipeline.synth.config import WorldConfig
from pipeline.synth.id_objects import ID_CLASSES
from pipeline.synth.kinds import OOD_KINDS, OodKind
from pipeline.synth.stream import render_stream_frame
from pipeline.synth.world import generate_world, render_split_image

__all__ = ["ID_CLASSES", "OOD_KINDS", "OodKind", "WorldConfig", "generate_world", "render_split_image",
           "render_stream_frame"]
