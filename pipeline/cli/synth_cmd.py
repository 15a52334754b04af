"""`ghostbox synth`: write the deterministic synthetic street world."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pipeline.cli.progress import progress_bar
from pipeline.cli.settings_args import SettingsHelpFormatter, add_setting
from pipeline.errors import GhostboxError

WORLD = "pipeline.synth.config:WorldConfig"  # the defaults' home; read when help is printed (slow to import)
COUNTS = ("train", "val", "near_test", "far_test", "pool", "mixed_test", "contaminated", "stream_frames")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "synth", help="generate the synthetic street world (ID sets, OoD sets, stream)",
        description="Writes DIR/world.json, id/{train,val} (BDD det_20), ood/* (COCO), yolo/ and stream/.",
        formatter_class=SettingsHelpFormatter,
    )
    add_setting(parser, "--seed", model=WORLD, field="seed", type=int, help="the world's seed")
    parser.add_argument("--out", "-o", required=True)
    add_setting(parser, "--size", model=WORLD, field=("width", "height"), dest="size", help="image size WxH")
    for name in COUNTS:
        add_setting(parser, f"--{name.replace('_', '-')}", model=WORLD, field=name, type=int,
                    help=f"number of {name} images")
    add_setting(parser, "--contamination-fraction", model=WORLD, field="contamination_fraction", type=float,
                help="share of the contaminated set's images holding an ID object")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # the synthetic world's modules take a while to load: only when it is generated, not for --help
    from pipeline.synth import WorldConfig, generate_world

    fields = {name: getattr(args, name) for name in ("seed", *COUNTS, "contamination_fraction")
              if getattr(args, name) is not None}
    if args.size is not None:
        try:
            fields["width"], fields["height"] = (int(v) for v in args.size.lower().split("x"))
        except ValueError as exc:
            raise GhostboxError(f"--size: expected WxH like 320x320, got '{args.size}'") from exc
    config = WorldConfig(**fields)
    started = time.perf_counter()
    with progress_bar("synth", None) as bar:
        manifest = generate_world(config, Path(args.out), progress=bar.update)
    world = json.loads(Path(manifest).read_text())
    summary = ", ".join(f"{split['name']} {split['count']}" for split in world.get("splits", []))
    print(f"world seed {config.seed} -> {manifest} in {time.perf_counter() - started:.1f} s ({summary})")
    return 0
