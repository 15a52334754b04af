"""`ghostbox proxies`: synthesise OoD proxy images for fine-tuning, offline, from data the user has."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline.cli.detector_flags import add_detector_flags, detector_config
from pipeline.cli.progress import progress_bar


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "proxies",
        help="make a proxy set of OoD training images (backgrounds, pastes, transformed ID crops, mined negatives)",
        description="Writes one proxy set in Ultralytics layout: OUT/images/*.jpg, OUT/labels/*.txt (the host "
        "image's ID boxes; pasted regions are never labelled; empty for backgrounds), OUT/data.yaml and "
        "OUT/manifest.json (how every image was made). Strategies: background (whole --pool images without ID "
        "objects), paste (--pool crops and --flagged crops pasted into ID images, clear of ID objects), "
        "transform (ID-object crops patch-shuffled, blended across classes, texture-swapped or interior-swapped, "
        "then pasted), "
        "mined (the --model's boxes on the --pool that match no ID object, pasted). With --model, the class "
        "list is the model's; otherwise the ID set's.",
    )
    parser.add_argument("--id", dest="id_spec", required=True, metavar="SPEC",
                        help="labelled ID training set (dataset SPEC): host images and ID boxes")
    parser.add_argument("--pool", metavar="SPEC|DIR",
                        help="outlier pool: a labelled set whose non-ID boxes are crops (COCO \"ood\" categories), "
                        "or a folder of images without ID objects")
    parser.add_argument("--flagged", metavar="DIR", help="flagged-crop archive of `ghostbox run` (OUT or OUT/flagged)")
    parser.add_argument("--strategies", required=True, help="comma-separated: background,paste,transform,mined")
    parser.add_argument("--transforms", default=None,
                        help="comma-separated ID transforms for `transform`: patch_shuffle,cross_class_blend,"
                        "texture_swap,interior_swap (the default), outline_swap, framed_outlier")
    parser.add_argument("--count", type=int, default=100, help="images per strategy (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", "-o", required=True, help="proxy-set folder (must be empty, or --overwrite)")
    parser.add_argument("--max-iou", type=float, default=0.05,
                        help="largest IoU of a pasted region with an ID box or another paste (default 0.05)")
    parser.add_argument("--max-cover", type=float, default=0.1,
                        help="largest fraction of an ID box a pasted region may cover (default 0.1)")
    parser.add_argument("--max-pastes", type=int, default=3, help="pasted regions per image, 1..N (default 3)")
    parser.add_argument("--tries", type=int, default=50, help="spots tried per pasted region (default 50)")
    parser.add_argument("--mine-images", type=int, default=500,
                        help="pool images the detector runs on for `mined` (a seeded sample; default 500)")
    parser.add_argument("--overwrite", action="store_true", help="replace the proxy set in a non-empty --out")
    add_detector_flags(parser)
    parser.set_defaults(handler=run)


def _model_given(args: argparse.Namespace) -> bool:
    if args.model:
        return True
    if args.config:
        from pipeline.config_files import read_yaml

        return bool((read_yaml(args.config).get("detector") or {}).get("model"))
    return False


def run(args: argparse.Namespace) -> int:
    from pipeline.proxies import PlacementRules, ProxySetBuilder, ProxySettings, parse_strategies

    config = detector_config(args)
    settings = ProxySettings(
        id_spec=args.id_spec, out=Path(args.out), strategies=parse_strategies(args.strategies), count=args.count,
        seed=args.seed, pool=args.pool, flagged=args.flagged,
        rules=PlacementRules(max_iou=args.max_iou, max_cover=args.max_cover, tries=args.tries),
        max_pastes=args.max_pastes, conf=config.conf, mine_images=args.mine_images, overwrite=args.overwrite,
        **({"transforms": tuple(t.strip() for t in args.transforms.split(",") if t.strip())}
           if args.transforms else {}),
    )
    settings.check()
    detector = None
    if _model_given(args):
        from pipeline.detect.detector import Detector

        detector = Detector(config)
    started = time.perf_counter()
    builder = ProxySetBuilder(settings, detector)
    if builder.needs_mining:
        with progress_bar("mining", builder.mining_images) as bar:
            builder.mine(bar.advance)
    with progress_bar("proxies", settings.count * len(settings.strategies)) as bar:
        result = builder.write(bar.advance)
    _summary(result, time.perf_counter() - started)
    return 0


def _summary(result, seconds: float) -> None:
    manifest = result.manifest
    print(f"proxy set -> {result.out} in {seconds:.1f} s (seed {manifest.seed}, classes: "
          f"{', '.join(manifest.class_names)})")
    for name, part in manifest.strategies.items():
        line = f"  {name:<11}{part['written']:>6} of {part['requested']} images"
        if name != "background":
            line += f", {part['pasted_regions']} pasted regions"
        if part["gave_up"]:
            line += f", {part['gave_up']} hosts without room"
        if name == "mined":
            params = part["parameters"]
            line += (f" (from {params['kept']} boxes of {params['detections']} on {params['images_run']} pool images;"
                     f" {params['matched_id_ground_truth']} matched ID objects)")
        print(line)
    for note in result.notes:
        print(f"note: {note}")
    print(f"train with: yolo:{result.out / 'data.yaml'}:train   manifest: {result.out / 'manifest.json'}")
