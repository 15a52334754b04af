"""`ghostbox eval`: ID mAP, hallucinations on OoD sets, OOD-score metrics, audit, plots."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.cli.detector_flags import add_detector_flags, detector_config
from pipeline.cli.progress import progress_bar

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "eval",
        help="evaluate detector + filter on an ID set and OoD sets",
        description="Dataset SPEC: [bdd:|coco:|yolo:]PATH[:split][:images=DIR][:name=NAME][:exclude=FILE] "
        "(see README). Writes OUT/report.json, OUT/report.md and PNG plots.",
    )
    parser.add_argument("--id", dest="id_spec", required=True, metavar="SPEC", help="labelled ID set (e.g. BDD val)")
    parser.add_argument("--ood", dest="ood_specs", action="append", default=[], metavar="SPEC",
                        help="OoD set, repeatable (COCO format; categories with \"ood\": false count as ID objects)")
    parser.add_argument("--filter", dest="filters", action="append", default=[], metavar="FILE",
                        help="fitted filter (ghostbox calibrate), repeatable; "
                        "the first one gives the after-filter counts")
    parser.add_argument("--scores", default="msp,maxlogit,energy", help="logit scores to report besides the filters'")
    parser.add_argument("--exclude", help="file listing OoD image names to drop (from a contamination audit)")
    parser.add_argument("--hallucination-conf", dest="hconf", type=float, default=0.25,
                        help="detections at or above this confidence count (default 0.25)")
    parser.add_argument("--audit-conf", type=float, default=0.5, help="confidence that puts an OoD image in the audit")
    parser.add_argument("--no-plots", dest="plots", action="store_false")
    parser.add_argument("--out", "-o", required=True)
    add_detector_flags(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.detect.detector import Detector
    from pipeline.errors import GhostboxError
    from pipeline.evaluate.evaluation import EvalSettings, load_sets, run_evaluation

    if not args.ood_specs:
        raise GhostboxError("--ood: give at least one OoD set")
    config = detector_config(args, args.filters or ())
    detector = Detector(config)
    id_set, ood_sets = load_sets(detector, args.id_spec, args.ood_specs, args.exclude)
    filters = []
    if args.filters:
        from pipeline.filter.filter_file import load_filter

        filters = [(path, load_filter(path)) for path in args.filters]
    settings = EvalSettings(conf=args.hconf, audit_conf=args.audit_conf,
                            scores=tuple(s.strip() for s in args.scores.split(",") if s.strip()), plots=args.plots)
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
    print(f"report: {out / 'report.json'}  {out / 'report.md'}")
