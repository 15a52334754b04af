"""Assemble `report.json` and `report.md` from the evaluation results (schema in docs/datasets-and-eval.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluate.runner import IdResult, OodResult
from pipeline.filter.ood_metrics import TARGET_TPR, aupr_in, aupr_out, auroc, fpr_at_tpr
from pipeline.kind_tally import KindTally, confidence_cut

ScoreFn = Callable[[Any], np.ndarray]  # Detections -> scores, higher = more ID


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def score_metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float | None]:
    if len(id_scores) == 0 or len(ood_scores) == 0:
        return {"fpr95": None, "auroc": None, "aupr_in": None, "aupr_out": None, "id_boxes": len(id_scores),
                "ood_boxes": len(ood_scores)}
    return {
        "fpr95": _round(fpr_at_tpr(id_scores, ood_scores, TARGET_TPR)),
        "auroc": _round(auroc(id_scores, ood_scores)),
        "aupr_in": _round(aupr_in(id_scores, ood_scores)),
        "aupr_out": _round(aupr_out(id_scores, ood_scores)),
        "id_boxes": int(len(id_scores)),
        "ood_boxes": int(len(ood_scores)),
    }


def build_report(
    id_result: IdResult, ood_results: list[OodResult], scorers: Mapping[str, ScoreFn],
    settings: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """The report dict, and the raw scores per score name ({"id": ..., SET: ...}) for plots."""
    id_boxes = id_result.tp
    raw: dict[str, dict[str, np.ndarray]] = {
        name: {"id": np.asarray(fn(id_boxes), np.float64)} for name, fn in scorers.items()}
    report: dict[str, Any] = {
        "settings": settings,
        "id": {
            "name": id_result.name,
            "images": id_result.images,
            "map50": _round(id_result.map.map50),
            "map50_95": _round(id_result.map.map50_95),
            "per_class": id_result.map.per_class,
            "gt_boxes": id_result.gt_boxes,
            "true_positives": id_result.tp_boxes,
            "false_positives": id_result.fp_boxes,
            "tp_lost_to_filter": id_result.tp_lost,
            "tp_lost_fraction": _round(id_result.tp_lost / id_result.tp_boxes)
            if id_result.tp_lost is not None and id_result.tp_boxes else None,
        },
        "ood": {},
    }
    for result in ood_results:
        boxes = result.hallucinations
        per_image = result.hallucination_count / max(result.images, 1)
        scores: dict[str, Any] = {}
        for name, fn in scorers.items():
            ood_scores = np.asarray(fn(boxes), np.float64)
            raw[name][result.name] = ood_scores
            scores[name] = score_metrics(raw[name]["id"], ood_scores)
            per_kind = {}
            for k, kind in enumerate(result.kinds):
                mask = result.kind_of_hallucination == k
                if mask.any():
                    per_kind[kind] = score_metrics(raw[name]["id"], ood_scores[mask])["fpr95"]
            scores[name]["fpr95_per_kind"] = per_kind
        after = None
        if result.after_filter is not None:
            after = {
                "hallucinations": result.after_filter,
                "per_image": _round(result.after_filter / max(result.images, 1)),
                "reduction": _round(1 - result.after_filter / result.hallucination_count)
                if result.hallucination_count else None,
                "id_tp_lost": result.id_tp_lost if result.id_tp_lost is not None else id_result.tp_lost,
            }
        kinds = {}
        for k, kind in enumerate(result.kinds):
            if kind in result.objects_per_kind:
                n = int((result.kind_of_hallucination == k).sum())
                objects = result.objects_per_kind[kind]
                kinds[kind] = {"objects": objects, "hallucinations": n,
                               "per_object": _round(n / objects) if objects else None}
        caught_by_kind: dict[str, Any] = {}
        baseline = None
        if result.flagged is not None and len(result.flagged) == len(result.kind_of_hallucination):
            on_object = result.kind_of_hallucination >= 0
            tally = KindTally()
            tally.add([result.kinds[k] for k in result.kind_of_hallucination[on_object]],
                      result.object_of_hallucination[on_object].tolist(), result.flagged[on_object])
            caught_by_kind = {"per_kind": tally.rows(), **tally.totals()}
            if id_result.tp_flagged is not None:
                baseline = confidence_cut(id_boxes.confidence, id_result.tp_flagged, boxes.confidence)
        report["ood"][result.name] = {
            "images": result.images,
            "hallucinations": result.hallucination_count,
            "per_image": _round(per_image),
            "background_false_positives": result.background_fp,
            "unknown_boxes": result.unknown_boxes,
            "id_true_positives": result.id_tp,
            "after_filter": after,
            "scores": scores,
            "per_kind": kinds,
            "caught": caught_by_kind or None,
            "confidence_cut": baseline,
            "audit": result.audit,
        }
    return report, raw


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "-"
    if pct:
        return f"{100 * value:.1f}%"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def write_markdown(report: dict[str, Any], path: Path, plots: list[str]) -> None:
    id_part = report["id"]
    lines = [
        "# ghostbox evaluation",
        "",
        f"Model `{report['settings'].get('model')}`, imgsz {report['settings'].get('imgsz')}, "
        f"hallucinations counted at conf >= {report['settings'].get('conf')}. "
        "FPR95: false-positive rate on OoD boxes at the threshold keeping 95% of ID true-positive boxes "
        "(ID positive); lower is better.",
        "",
        f"## ID: {id_part['name']} ({id_part['images']} images)",
        "",
        f"mAP50 **{_fmt(id_part['map50'])}**, mAP50-95 **{_fmt(id_part['map50_95'])}**; "
        f"{id_part['true_positives']} true positives, {id_part['false_positives']} false positives at conf "
        f"{report['settings'].get('conf')}"
        + (f"; ID true positives lost to the filter: {id_part['tp_lost_to_filter']} "
           f"({_fmt(id_part['tp_lost_fraction'], pct=True)})" if id_part["tp_lost_to_filter"] is not None else ""),
        "",
        "| class | AP50 | AP50-95 | GT boxes |",
        "|---|---|---|---|",
    ]
    for name, values in id_part["per_class"].items():
        lines.append(f"| {name} | {_fmt(values['ap50'])} | {_fmt(values['ap50_95'])} | {values['gt']} |")
    lines += ["", "## OoD sets", "",
              "| set | images | hallucinations | per image | after filter | per image after | reduction |",
              "|---|---|---|---|---|---|---|"]
    for name, part in report["ood"].items():
        after = part["after_filter"] or {}
        lines.append(
            f"| {name} | {part['images']} | {part['hallucinations']} | {_fmt(part['per_image'])} | "
            f"{_fmt(after.get('hallucinations'))} | {_fmt(after.get('per_image'))} | "
            f"{_fmt(after.get('reduction'), pct=True)} |"
        )
    score_names = sorted({s for part in report["ood"].values() for s in part["scores"]})
    if score_names:
        sets = list(report["ood"])
        lines += ["", "## Scores (FPR95 / AUROC)", "", "| score | " + " | ".join(sets) + " |",
                  "|---|" + "---|" * len(sets)]
        for score in score_names:
            cells = []
            for name in sets:
                metrics = report["ood"][name]["scores"].get(score, {})
                cells.append(f"{_fmt(metrics.get('fpr95'), pct=True)} / {_fmt(metrics.get('auroc'))}")
            lines.append(f"| {score} | " + " | ".join(cells) + " |")
    for name, part in report["ood"].items():
        if part["per_kind"]:
            lines += ["", f"### {name}: per OoD kind", "", "| kind | objects | hallucinations | per object |",
                      "|---|---|---|---|"]
            for kind, values in sorted(part["per_kind"].items()):
                lines.append(f"| {kind} | {values['objects']} | {values['hallucinations']} | "
                             f"{_fmt(values['per_object'])} |")
    for name, part in report["ood"].items():
        caught = part.get("caught")
        if caught:
            cut = part.get("confidence_cut") or {}
            lines += ["", f"### {name}: caught by the filter, per OoD kind", "",
                      f"{caught['objects_caught']} of {caught['objects']} hallucinated objects caught (most of "
                      f"their boxes flagged)"
                      + (f"; a confidence cut flagging as many ID true positives ({_fmt(cut.get('id_flagged'), True)}, "
                         f"conf < {_fmt(cut.get('cut'))}) catches {_fmt(cut.get('caught'), True)} of the boxes"
                         if cut.get("caught") is not None else "") + ".", "",
                      "| kind | boxes | caught | objects | objects caught |", "|---|---|---|---|---|"]
            for kind, row in caught["per_kind"].items():
                lines.append(f"| {kind} | {row['boxes']} | {_fmt(row['caught'] / row['boxes'], True)} | "
                             f"{row['objects']} | {row['objects_caught']} |")
    audits = [(name, part["audit"]) for name, part in report["ood"].items() if part["audit"]]
    if audits:
        lines += ["", "## Contamination audit", "",
                  "OoD images where the detector finds high-confidence ID objects: check them by eye; list the "
                  "contaminated ones in a file and re-run with `--ood SPEC:exclude=FILE`.", ""]
        for name, audit in audits:
            lines.append(f"- **{name}**: {len(audit)} images, e.g. "
                         + ", ".join(f"`{a['file_name']}` ({a['max_conf']:.2f})" for a in audit[:5]))
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    path.write_text("\n".join(lines) + "\n")
