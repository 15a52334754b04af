"""`ghostbox eval`: ID mAP, hallucinations on OoD sets, OOD-score metrics, audit, plots."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.cli.detector_flags import add_detector_flags, detector_config
from pipeline.cli.progress import progress_bar
from pipeline.cli.settings_args import SettingsHelpFormatter, add_setting
from pipeline.errors import GhostboxError
from pipeline.filter.filter_file import load_filter
from pipeline.kind_tally import describe_kinds

# The evaluation's settings and their defaults: `EvalSettings` (its module loads torch: read when needed).
EVAL = "pipeline.evaluate.evaluation:EvalSettings"

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "eval",
        help="evaluate detector + filter on an ID set and OoD sets",
        description="Dataset SPEC: [bdd:|coco:|yolo:]PATH[:split][:images=DIR][:name=NAME][:exclude=FILE] "
        "(see docs/datasets-and-eval.md). Writes OUT/report.json, OUT/report.md and PNG plots.",
        formatter_class=SettingsHelpFormatter,
    )
    parser.add_argument("--id", dest="id_spec", required=True, metavar="SPEC", help="labelled ID set (e.g. BDD val)")
    parser.add_argument("--ood", dest="ood_specs", action="append", default=[], metavar="SPEC",
                        help="OoD set, repeatable (COCO format; categories with \"ood\": false count as ID objects)")
    parser.add_argument("--filter", dest="filters", action="append", default=[], metavar="FILE",
                        help="fitted filter (ghostbox calibrate), repeatable; "
                        "the first one gives the after-filter counts")
    add_setting(parser, "--scores", model=EVAL, field="scores", help="logit scores to report besides the filters'")
    parser.add_argument("--exclude", help="file listing OoD image names to drop (from a contamination audit)")
    add_setting(parser, "--hallucination-conf", model=EVAL, field="conf", dest="hconf", type=float,
                help="detections at or above this confidence count")
    add_setting(parser, "--audit-conf", model=EVAL, field="audit_conf", type=float,
                help="confidence that puts an OoD image in the audit")
    parser.add_argument("--no-plots", dest="plots", action="store_false")
    parser.add_argument("--out", "-o", required=True)
    add_detector_flags(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # torch loads with the detector and the evaluation (seconds): only when it runs, not for --help
    from pipeline.detect.detector import Detector
    from pipeline.evaluate.evaluation import EvalSettings, load_sets, run_evaluation

    if not args.ood_specs:
        raise GhostboxError("--ood: give at least one OoD set")
    config = detector_config(args, args.filters or ())
    detector = Detector(config)
    id_set, ood_sets = load_sets(detector, args.id_spec, args.ood_specs, args.exclude)
    filters = [(path, load_filter(path)) for path in args.filters]
    given = {"conf": args.hconf, "audit_conf": args.audit_conf,
             "scores": None if args.scores is None else tuple(s.strip() for s in args.scores.split(",") if s.strip())}
    settings = EvalSettings(plots=args.plots, **{k: v for k, v in given.items() if v is not None})
    total = len(id_set) + sum(len(d) for d in ood_sets)
    with progress_bar("eval", total) as bar:
        report = run_evaluation(detector, id_set, ood_sets, Path(args.out), settings, filters, progress=bar)
    _summary(report, Path(args.out))
    return 0


def _summary(report: dict, out: Path) -> None:
    id_part = report["id"]
    print(f"ID {id_part['name']}: mAP50 {id_part['map50']:.4f}  mAP50-95 {id_part['map50_95']:.4f}  "
          f"({id_part['images']} images)")
    for name, part in report["ood"].items():
        after = part["after_filter"]
        line = f"OoD {name}: {part['hallucinations']} hallucinations ({part['per_image']:.3f}/image)"
        if after:
            line += f" -> {after['hallucinations']} after filter ({after['per_image']:.3f}/image)"
        scores = "  ".join(f"{s} FPR95 {m['fpr95']:.3f}" for s, m in part["scores"].items() if m["fpr95"] is not None)
        print(line + ("  | " + scores if scores else ""))
        caught, cut = part.get("caught"), part.get("confidence_cut") or {}
        if caught:
            print(f"  caught per kind: {describe_kinds(caught['per_kind'])}; objects {caught['objects_caught']} of "
                  f"{caught['objects']}" + (f"; confidence cut at the same ID loss catches {100 * cut['caught']:.1f}%"
                                            if cut.get("caught") is not None else ""))
    print(f"report: {out / 'report.json'}  {out / 'report.md'}")
