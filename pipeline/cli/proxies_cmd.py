"""`ghostbox proxies`: synthesise OoD proxy images for fine-tuning, offline, from data the user has."""

from __future__ import annotations

import argparse
import time

from pipeline.cli.detector_flags import add_detector_flags, detector_config, detector_notes, detector_section
from pipeline.cli.progress import progress_bar
from pipeline.cli.settings_args import SettingsFlags
from pipeline.config_files import defaults_yaml, only_sections, read_yaml, section
from pipeline.detect.config import DetectorConfig
from pipeline.errors import GhostboxError
from pipeline.proxies import PlacementRules, ProxySetBuilder, ProxySetResult, ProxySettings

SECTIONS = ("proxies", "detector")  # of a --config file


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
    flags = SettingsFlags("proxy_flags")
    flags.add(parser, "--id", model=ProxySettings, field="id_spec", metavar="SPEC")
    flags.add(parser, "--pool", model=ProxySettings, field="pool", metavar="SPEC|DIR")
    flags.add(parser, "--flagged", model=ProxySettings, field="flagged", metavar="DIR")
    flags.add(parser, "--strategies", model=ProxySettings, field="strategies")
    flags.add(parser, "--transforms", model=ProxySettings, field="transforms")
    flags.add(parser, "--count", model=ProxySettings, field="count")
    flags.add(parser, "--seed", model=ProxySettings, field="seed")
    flags.add(parser, "--out", "-o", model=ProxySettings, field="out")
    for name in ("max_iou", "max_cover", "tries"):
        flags.add(parser, "--" + name.replace("_", "-"), model=PlacementRules, field=name, path=("rules", name))
    flags.add(parser, "--max-pastes", model=ProxySettings, field="max_pastes")
    flags.add(parser, "--mine-images", model=ProxySettings, field="mine_images")
    flags.add(parser, "--overwrite", model=ProxySettings, field="overwrite")
    flags.attach(parser)
    add_detector_flags(parser, config_help="YAML config with `proxies:` (these settings) and `detector:` sections")
    parser.set_defaults(handler=run)


def proxy_settings(args: argparse.Namespace) -> tuple[ProxySettings, DetectorConfig]:
    """The proxy-set and detector settings: --config's `proxies:` and `detector:` sections, flags over them."""
    data, where = {}, f"config '{args.config}'"
    if args.config:
        data = read_yaml(args.config)
        only_sections(data, SECTIONS, where)
    own = section(data, "proxies", where)
    if "conf" in own:
        raise GhostboxError(f"{where}: field 'proxies.conf': the confidence of mined boxes is the detector's; set "
                            f"`detector: conf` (got {own['conf']!r})")
    detector = detector_config(args)
    flags: SettingsFlags = args.proxy_flags
    settings = flags.build(ProxySettings, args, own, args.config, "proxies", extra={"conf": detector.conf})
    return settings, detector


def default_config() -> str:
    """`ghostbox config proxies`: the defaults, as a --config file."""
    return ("# ghostbox proxies --config FILE: command-line flags win over these values.\n"
            + defaults_yaml({"proxies": ProxySettings, "detector": DetectorConfig}, notes=detector_notes(),
                            exclude=("proxies.conf",)))


def run(args: argparse.Namespace) -> int:
    settings, config = proxy_settings(args)
    detector = None
    if args.model or detector_section(args).get("model"):
        # torch: loaded only when a model is asked for
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


def _summary(result: ProxySetResult, seconds: float) -> None:
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
