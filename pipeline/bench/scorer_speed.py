"""Per-frame cost of each box-level OOD score, on synthetic boxes of a chosen shape.

For every registered scorer: fit on `fit_boxes` ID boxes (D = `feature_dim`, nc =
`num_classes`, from `ToyBoxWorld`), then time scoring one frame's `batch` boxes (half ID,
half OOD), median over `repeats` calls. KNN is also timed against a `knn_bank`-feature bank
with each search backend (faiss IVF as chosen at fit, faiss exact flat, numpy brute force),
and AbeT's training time is measured on `abet_boxes` boxes. Compare the figures with the
detector's time per frame (`ghostbox bench detector`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from pipeline.detections import Detections
from pipeline.filter.registry import create, names
from pipeline.filter.scorer import Scorer
from pipeline.filter.scores.knn import KNN, faiss_available
from pipeline.filter.toy_boxes import ToyBoxWorld


def _median_ms(call: Callable[[], Any], repeats: int) -> float:
    call()  # warm-up: first calls pay for allocation and lazy set-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _timed_fit(scorer: Scorer, boxes: Detections, outliers: Detections | None = None) -> float:
    start = time.perf_counter()
    scorer.fit(boxes, outliers if scorer.needs_outliers else None)
    return time.perf_counter() - start


def detector_frame_ms(model: str, imgsz: int = 640, frames: int = 20) -> tuple[Any, float]:
    """The yardstick scoring costs are held against: a detector (CPU, batch 1) and its median ms per 1280x720
    frame of the bundled samples."""
    # loaded here: the detector pulls torch
    from pipeline.bench.detector_speed import sample_frames
    from pipeline.detect.detector import Detector

    detector = Detector(model=model, imgsz=imgsz, device="cpu", batch=1)
    images = sample_frames(None, frames, "1280x720")
    detector.detect(images[:2])  # warm-up
    times = []
    for image in images:
        start = time.perf_counter()
        detector.detect([image])
        times.append(time.perf_counter() - start)
    return detector, 1000 * statistics.median(times)


def bench_scorers(feature_dim: int = 64, num_classes: int = 4, fit_boxes: int = 20_000, batch: int = 50,
                  repeats: int = 200, knn_bank: int = 100_000, abet_boxes: int = 50_000,
                  methods: Sequence[str] | None = None, seed: int = 0) -> dict[str, Any]:
    """Milliseconds per `batch` boxes for each scorer, KNN per backend, AbeT training seconds."""
    world = ToyBoxWorld(num_classes=num_classes, feature_dim=feature_dim, seed=seed)
    fit_set = world.id_boxes(fit_boxes, seed=seed + 1)
    outliers = world.ood_boxes(max(fit_boxes // 5, 10), seed=seed + 6, mode="hidden")  # for oe
    frame = Detections.merge([world.id_boxes(batch - batch // 2, seed=seed + 2),
                           world.ood_boxes(batch // 2, seed=seed + 3, mode="hidden")])
    result: dict[str, Any] = {
        "feature_dim": feature_dim, "num_classes": num_classes, "fit_boxes": fit_boxes, "batch": batch,
        "repeats": repeats, "faiss": faiss_available(), "ms_per_batch": {}, "fit_s": {},
    }
    for name in methods or names():
        scorer = create(name)
        result["fit_s"][name] = round(_timed_fit(scorer, fit_set, outliers), 4)
        result["ms_per_batch"][name] = round(_median_ms(partial(scorer.score, frame), repeats), 4)

    if knn_bank:
        bank_set = world.id_boxes(knn_bank, seed=seed + 4)
        knn: dict[str, Any] = {"bank": knn_bank}
        variants = {"numpy": {"backend": "numpy"}}
        if faiss_available():
            variants = {"faiss_auto": {}, "faiss_flat": {"index": "flat"}, **variants}
        for label, params in variants.items():
            scorer = create("knn", bank_size=None, **params)
            assert isinstance(scorer, KNN)
            knn[f"{label}_fit_s"] = round(_timed_fit(scorer, bank_set), 3)
            # exact searches over the full bank take tens of ms: fewer repeats
            runs = repeats if label == "faiss_auto" else max(5, repeats // 10)
            knn[f"{label}_ms"] = round(_median_ms(partial(scorer.score, frame), runs), 4)
            if label == "faiss_auto":
                knn["faiss_auto_index"] = "ivf" if scorer.ivf_centroids is not None else "flat"
                knn["ivf_cells"] = None if scorer.ivf_centroids is None else len(scorer.ivf_centroids)
                knn["ivf_nprobe"] = scorer.nprobe_used
                knn["ivf_error"] = scorer.ivf_error
        result["knn_bank"] = knn

    if abet_boxes:
        abet_set = world.id_boxes(abet_boxes, seed=seed + 5)
        scorer = create("abet")
        result["abet_train_s"] = {"boxes": abet_boxes, "epochs": scorer.params["epochs"],
                                  "seconds": round(_timed_fit(scorer, abet_set), 3)}
    return result
