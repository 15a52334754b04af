"""`ghostbox synth`: write the deterministic synthetic street world."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pipeline.cli.progress import progress_bar

COUNTS = ("train", "val", "near_test", "far_test", "pool", "mixed_test", "contaminated", "stream_frames")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "synth", help="generate the synthetic street world (ID sets, OoD sets, stream)",
        description="Writes DIR/world.json, id/{train,val} (BDD det_20), ood/* (COCO), yolo/ and stream/.",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", "-o", required=True)
    parser.add_argument("--size", default="320x320", help="image size WxH (default 320x320)")
    for name in COUNTS:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, help=f"number of {name} images")
    parser.add_argument("--contamination-fraction", type=float)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.errors import GhostboxError
    from pipeline.synth import WorldConfig, generate_world

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError as exc:
        raise GhostboxError(f"--size: expected WxH like 320x320, got '{args.size}'") from exc
    fields = {"seed": args.seed, "width": width, "height": height}
    fields.update({name: getattr(args, name) for name in COUNTS if getattr(args, name) is not None})
    if args.contamination_fraction is not None:
        fields["contamination_fraction"] = args.contamination_fraction
    config = WorldConfig(**fields)
    started = time.perf_counter()
    with progress_bar("synth", None) as bar:
        manifest = generate_world(config, Path(args.out), progress=bar.update)
    world = json.loads(Path(manifest).read_text())
    summary = ", ".join(f"{split['name']} {split['count']}" for split in world.get("splits", []))
    print(f"world seed {args.seed} -> {manifest} in {time.perf_counter() - started:.1f} s ({summary})")
    return 0
