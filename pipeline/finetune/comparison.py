"""Before/after figures of a fine-tune, from two `ghostbox eval` reports, as JSON, Markdown and a plot.

Reductions are measured against the *original* model's hallucinations without a filter:
"fine-tuned" is what fine-tuning alone removes, "fine-tuned + filter" what the fine-tuned
detector and its re-fitted filter remove together (M-Hood's headline comparison).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluate.plots import pyplot
from pipeline.json_files import write_json


def _reduction(before: int, after: int | None) -> float | None:
    if after is None or before == 0:
        return None
    return round(1.0 - after / before, 4)


def compare_reports(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    id_b, id_a = before["id"], after["id"]
    out: dict[str, Any] = {
        "id": {
            key: {"before": id_b[key], "after": id_a[key], "change_points": round(100 * (id_a[key] - id_b[key]), 2)}
            for key in ("map50", "map50_95")
        },
        "id_tp_lost_by_filter": {"before": id_b.get("tp_lost_fraction"), "after": id_a.get("tp_lost_fraction")},
        "ood": {},
    }
    for name, part_b in before["ood"].items():
        part_a = after["ood"].get(name)
        if part_a is None:
            continue
        base = int(part_b["hallucinations"])
        filt_b = (part_b.get("after_filter") or {}).get("hallucinations")
        filt_a = (part_a.get("after_filter") or {}).get("hallucinations")
        scores = sorted(set(part_b["scores"]) | set(part_a["scores"]))
        out["ood"][name] = {
            "images": part_b["images"],
            "hallucinations": {"original": base, "original_filtered": filt_b,
                               "finetuned": int(part_a["hallucinations"]), "finetuned_filtered": filt_a},
            "reduction": {"original_filtered": _reduction(base, filt_b),
                          "finetuned": _reduction(base, int(part_a["hallucinations"])),
                          "finetuned_filtered": _reduction(base, filt_a)},
            "fpr95": {s: {"before": part_b["scores"].get(s, {}).get("fpr95"),
                          "after": part_a["scores"].get(s, {}).get("fpr95")} for s in scores},
        }
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def comparison_markdown(comparison: dict[str, Any]) -> str:
    id_part = comparison["id"]
    lines = ["# Fine-tuning: before and after", "",
             "| ID metric | before | after | change |", "|---|---|---|---|"]
    for key, label in (("map50", "mAP50"), ("map50_95", "mAP50-95")):
        m = id_part[key]
        lines.append(f"| {label} | {m['before']:.4f} | {m['after']:.4f} | {m['change_points']:+.2f} pt |")
    lost = comparison["id_tp_lost_by_filter"]
    if lost["before"] is not None or lost["after"] is not None:
        lines.append(f"| ID true positives lost to the filter | {_pct(lost['before'])} | {_pct(lost['after'])} | |")
    lines += ["", "Hallucinations (detections on OoD objects at the report confidence); reductions are against the "
              "original model without a filter.", "",
              "| OoD set | original | original + filter | fine-tuned | fine-tuned + filter |", "|---|---|---|---|---|"]
    for name, part in comparison["ood"].items():
        h, r = part["hallucinations"], part["reduction"]

        def cell(count: int | None, red: float | None) -> str:
            return "-" if count is None else f"{count} ({_pct(red)} less)" if red is not None else str(count)

        lines.append(f"| {name} | {h['original']} | {cell(h['original_filtered'], r['original_filtered'])} | "
                     f"{cell(h['finetuned'], r['finetuned'])} | "
                     f"{cell(h['finetuned_filtered'], r['finetuned_filtered'])} |")
    lines += ["", "| OoD set | score | FPR95 before | FPR95 after |", "|---|---|---|---|"]
    for name, part in comparison["ood"].items():
        for score, v in part["fpr95"].items():
            lines.append(f"| {name} | {score} | {_pct(v['before'])} | {_pct(v['after'])} |")
    return "\n".join(lines) + "\n"


def comparison_plot(comparison: dict[str, Any], path: Path) -> Path:
    plt = pyplot()

    sets = list(comparison["ood"])
    columns = [("original", "original", "#9e9e9e"), ("original_filtered", "original + filter", "#64b5f6"),
               ("finetuned", "fine-tuned", "#ffb74d"), ("finetuned_filtered", "fine-tuned + filter", "#43a047")]
    fig, (ax, ax_map) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / len(columns)
    x = np.arange(len(sets))
    for k, (key, label, colour) in enumerate(columns):
        values = [comparison["ood"][s]["hallucinations"][key] for s in sets]
        heights = [v if v is not None else 0 for v in values]
        bars = ax.bar(x + (k - (len(columns) - 1) / 2) * width, heights, width, label=label, color=colour)
        for bar, v in zip(bars, values):
            if v is not None:
                ax.annotate(str(v), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                            va="bottom", fontsize=7)
    ax.set_xticks(x, sets)
    ax.set_ylabel("hallucinations")
    ax.set_title("Hallucinations on OoD sets")
    ax.legend(fontsize=8)
    m = comparison["id"]
    labels = ["mAP50", "mAP50-95"]
    before = [m["map50"]["before"], m["map50_95"]["before"]]
    after = [m["map50"]["after"], m["map50_95"]["after"]]
    xm = np.arange(2)
    ax_map.bar(xm - 0.2, before, 0.4, label="before", color="#9e9e9e")
    ax_map.bar(xm + 0.2, after, 0.4, label="after", color="#ffb74d")
    ax_map.set_xticks(xm, labels)
    ax_map.set_ylim(0, 1)
    ax_map.set_title("ID accuracy")
    ax_map.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_comparison(comparison: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "comparison.json"
    write_json(json_path, comparison)
    md_path = out_dir / "comparison.md"
    md_path.write_text(comparison_markdown(comparison))
    return [json_path, md_path, comparison_plot(comparison, out_dir / "comparison.png")]
