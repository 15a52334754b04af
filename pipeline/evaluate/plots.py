"""PNG plots of an evaluation: score histograms, ROC curves, hallucinations, worst crops."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.evaluate.runner import Worst


def pyplot():  # noqa: ANN202
    import matplotlib  # imported when used: matplotlib is slow to import and only plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def score_histograms(raw: dict[str, dict[str, np.ndarray]], out: Path) -> list[str]:
    plt = pyplot()
    written = []
    for score, sets in raw.items():
        fig, ax = plt.subplots(figsize=(6, 3.6))
        values = [v for v in sets.values() if len(v)]
        if not values:
            plt.close(fig)
            continue
        lo, hi = min(float(v.min()) for v in values), max(float(v.max()) for v in values)
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 50)
        for name, v in sets.items():
            if len(v):
                ax.hist(v, bins=bins, density=True, histtype="stepfilled" if name == "id" else "step",
                        alpha=0.35 if name == "id" else 1.0, linewidth=1.6,
                        label=f"{'ID true positives' if name == 'id' else name} (n={len(v)})")
        ax.set_xlabel(f"{score} score (higher = more ID)")
        ax.set_ylabel("density")
        ax.set_title(f"{score}: ID vs OoD boxes")
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = f"scores_{score}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)
    return written


def roc_curves(raw: dict[str, dict[str, np.ndarray]], out: Path) -> list[str]:
    plt = pyplot()
    sets = sorted({s for v in raw.values() for s in v if s != "id"})
    if not sets:
        return []
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 4), squeeze=False)
    for ax, set_name in zip(axes[0], sets):
        for score, values in raw.items():
            id_scores, ood_scores = values["id"], values.get(set_name, np.zeros(0))
            if not len(id_scores) or not len(ood_scores):
                continue
            thresholds = np.unique(np.concatenate([id_scores, ood_scores]))[::-1]
            id_sorted, ood_sorted = np.sort(id_scores), np.sort(ood_scores)
            tpr = 1 - np.searchsorted(id_sorted, thresholds, side="left") / len(id_sorted)
            fpr = 1 - np.searchsorted(ood_sorted, thresholds, side="left") / len(ood_sorted)
            ax.plot([0, *fpr, 1], [0, *tpr, 1], label=score, linewidth=1.4)
        ax.axhline(0.95, color="grey", linestyle=":", linewidth=1)
        ax.plot([0, 1], [0, 1], color="lightgrey", linewidth=0.8)
        ax.set_xlabel("FPR (OoD boxes kept)")
        ax.set_ylabel("TPR (ID boxes kept)")
        ax.set_title(set_name)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=110)
    plt.close(fig)
    return ["roc.png"]


def hallucination_bars(report: dict[str, Any], out: Path) -> list[str]:
    plt = pyplot()
    names = list(report["ood"])
    if not names:
        return []
    before = [report["ood"][n]["per_image"] or 0 for n in names]
    after = [((report["ood"][n]["after_filter"] or {}).get("per_image")) for n in names]
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(names) + 2), 3.6))
    x = np.arange(len(names))
    ax.bar(x - 0.18, before, width=0.36, label="detector", color="#d95f02")
    if any(a is not None for a in after):
        ax.bar(x + 0.18, [a or 0 for a in after], width=0.36, label="detector + filter", color="#1b9e77")
    ax.set_xticks(x, names, rotation=15)
    ax.set_ylabel("hallucinations per image")
    ax.set_title(f"hallucinations at conf >= {report['settings'].get('conf')}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "hallucinations.png", dpi=110)
    plt.close(fig)
    return ["hallucinations.png"]


def worst_grid(worst: list[Worst], out: Path, tile: int = 128, columns: int = 6) -> list[str]:
    """The most confident hallucinations, each crop letterboxed into a tile with its caption."""
    if not worst:
        return []
    rows = math.ceil(len(worst) / columns)
    caption = 34
    canvas = np.full((rows * (tile + caption), columns * tile, 3), 255, np.uint8)
    for i, item in enumerate(worst):
        r, c = divmod(i, columns)
        crop = item.crop
        scale = min(tile / max(crop.shape[1], 1), (tile - 4) / max(crop.shape[0], 1))
        resized = cv2.resize(crop, (max(1, int(crop.shape[1] * scale)), max(1, int(crop.shape[0] * scale))))
        y0, x0 = r * (tile + caption), c * tile
        oy, ox = (tile - resized.shape[0]) // 2, (tile - resized.shape[1]) // 2
        canvas[y0 + oy:y0 + oy + resized.shape[0], x0 + ox:x0 + ox + resized.shape[1]] = resized
        first = f"{item.label} {item.conf:.2f}"
        second = item.set_name if item.score is None else f"{item.set_name} s={item.score:.2f}"
        cv2.putText(canvas, first, (x0 + 3, y0 + tile + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 200), 1, cv2.LINE_AA)
        cv2.putText(canvas, second[:22], (x0 + 3, y0 + tile + 28), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (60, 60, 60), 1,
                    cv2.LINE_AA)
        cv2.rectangle(canvas, (x0, y0), (x0 + tile - 1, y0 + tile + caption - 1), (220, 220, 220), 1)
    cv2.imwrite(str(out / "worst_hallucinations.png"), canvas)
    return ["worst_hallucinations.png"]
