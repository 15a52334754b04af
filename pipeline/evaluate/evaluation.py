"""`run_evaluation`: detector (+ filters) over an ID set and OoD sets -> report files and plots."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline.data import Dataset, exclude_images, parse_dataset_spec
from pipeline.detect.config import DEFAULT_CONF
from pipeline.errors import GhostboxError
from pipeline.evaluate import plots
from pipeline.evaluate.report import build_report, write_markdown
from pipeline.evaluate.runner import evaluate_id, evaluate_ood
from pipeline.filter.registry import create
from pipeline.json_files import write_json

log = logging.getLogger(__name__)

LOGIT_SCORES = ("msp", "maxlogit", "energy")

if TYPE_CHECKING:  # evaluation only calls the detector: importing it (torch) is the caller's cost
    from pipeline.detect.detector import Detector


class EvalSettings(BaseModel):
    """How `ghostbox eval` counts and reports: the one home of its defaults."""

    model_config = ConfigDict(extra="forbid")

    conf: float = Field(DEFAULT_CONF, ge=0.0, le=1.0, description="a reported box: confidence at or above this "
                        "(M-Hood's operating point); hallucinations and ID true positives are counted here")
    audit_conf: float = Field(0.5, ge=0.0, le=1.0, description="contamination audit: OoD images with an ID-class "
                              "detection at or above this confidence are listed for a person to check")
    scores: tuple[str, ...] = Field(LOGIT_SCORES, description="scores reported besides the filters' own")
    exclude: str | None = Field(None, description="file of OoD image names to leave out (one per line)")
    worst_k: int = Field(24, ge=0, description="most confident hallucinations shown in worst_hallucinations.png")
    plots: bool = Field(True, description="write the PNG plots")
    extra: dict[str, Any] = Field(default_factory=dict, description="further settings recorded in the report")


def load_sets(detector: Detector, id_spec: str, ood_specs: list[str],
              exclude: str | None) -> tuple[Dataset, list[Dataset]]:
    id_set = parse_dataset_spec(id_spec, class_names=list(detector.class_names))
    if len(id_set) == 0:
        raise GhostboxError(f"ID set '{id_spec}': no images")
    ood_sets = []
    for spec in ood_specs:
        dataset = parse_dataset_spec(spec)
        if exclude:
            dataset = exclude_images(dataset, exclude)
        if len(dataset) == 0:
            raise GhostboxError(f"OoD set '{spec}': no images (after exclusions)")
        ood_sets.append(dataset)
    names = [d.name for d in ood_sets]
    if len(set(names)) != len(names):
        raise GhostboxError(f"OoD sets need distinct names, got {names}; add :name=NAME to a spec")
    return id_set, ood_sets


def _scorers(settings: EvalSettings, filters: list[Any], id_boxes: Any) -> dict[str, Any]:
    scorers: dict[str, Any] = {}
    for name in settings.scores:
        if name not in LOGIT_SCORES:
            raise GhostboxError(f"--scores: '{name}' needs fitting; fit it with `ghostbox calibrate` and pass --filter")
    if len(id_boxes) == 0:
        # FPR95 is defined by ID true positives; without any, no score can be judged.
        log.warning("no ID true positives at the hallucination confidence: OOD score metrics are not computed")
        return scorers
    for name in settings.scores:
        scorers[name] = create(name).fit(id_boxes).score
    for path, loaded in filters:
        key = loaded.method
        if key in scorers:
            key = Path(path).name.split(".")[0]
        scorers[key] = loaded.scorer.score
    return scorers


def run_evaluation(
    detector: Detector, id_set: Dataset, ood_sets: list[Dataset], out: Path, settings: EvalSettings,
    filters: list[tuple[str, Any]] | None = None, progress: Any = None,
) -> dict[str, Any]:
    """Evaluate and write OUT/report.json, OUT/report.md and the plots; returns the report."""
    filters = filters or []
    loaded = [f for _, f in filters]
    for _path, flt in filters:
        flt.check_detector(detector.fingerprint())
        flt.check_conf(settings.conf)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    advance = progress.advance if progress is not None else (lambda n: None)
    crops = any(getattr(f, "needs_crops", False) for f in loaded)
    id_result = evaluate_id(detector, id_set, settings.conf, loaded, advance=advance, crops=crops)
    ood_results = [
        evaluate_ood(detector, dataset, settings.conf, loaded, settings.audit_conf, settings.worst_k, advance=advance,
                     crops=crops)
        for dataset in ood_sets
    ]
    id_boxes = id_result.tp
    scorers = _scorers(settings, filters, id_boxes)
    report_settings = {
        "model": detector.config.model, "imgsz": detector.imgsz, "conf": settings.conf,
        "audit_conf": settings.audit_conf, "map_conf": 0.001,
        "fpr_convention": "ID positive, TPR 95% of ID true positives",
        "filters": [{"path": str(p), "method": f.method, "policy": f.policy} for p, f in filters],
        "seconds": None, **settings.extra,
    }
    report, raw = build_report(id_result, ood_results, scorers, report_settings)
    report["warnings"] = {d.name: dict(d.warnings.counts) for d in [id_set, *ood_sets] if d.warnings.counts}
    pictures: list[str] = []
    if settings.plots:
        pictures += plots.hallucination_bars(report, out)
        pictures += plots.roc_curves(raw, out)
        pictures += plots.score_histograms(raw, out)
        worst = sorted((w for r in ood_results for w in r.worst), key=lambda w: -w.conf)
        pictures += plots.worst_grid(worst[: settings.worst_k], out)
    report["settings"]["seconds"] = round(time.perf_counter() - started, 1)
    report["plots"] = pictures
    write_json(out / "report.json", report)
    write_markdown(report, out / "report.md", pictures)
    return report
