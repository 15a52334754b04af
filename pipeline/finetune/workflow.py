"""`ghostbox finetune` end to end: training set, before-evaluation, fine-tune, re-fitted filter, after-evaluation.

    OUT/data/               the Ultralytics training set (ID in YOLO layout, train/ links, train.txt)
    OUT/train/              Ultralytics' run (weights/last.pt; resumable)
    OUT/model.pt            the fine-tuned detector
    OUT/filters/original.filter.safetensors   the filter on the original model (given or fitted)
    OUT/filters/finetuned.filter.safetensors  the same method re-fitted on the fine-tuned model
    OUT/before/, OUT/after/  `ghostbox eval` reports of each model with its filter
    OUT/comparison.json|md|png, OUT/finetune.json (settings, timings, figures)

The old filter is not reused after fine-tuning: it is tied to the old weights and refuses
the new detector, so the same method is fitted again on the same data.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from pipeline.detect.config import DetectorConfig, box_features_for
from pipeline.errors import GhostboxError
from pipeline.filter.filter_file import box_features_needed, load_filter, save_filter
from pipeline.finetune.comparison import compare_reports, write_comparison
from pipeline.finetune.training_run import FinetuneJob, train_detector
from pipeline.finetune.training_set import build_training_set
from pipeline.json_files import write_json

log = logging.getLogger(__name__)


def _evaluate(model: str, filter_path: Path | None, job: FinetuneJob, out: Path, device: str) -> dict[str, Any]:
    # torch loads with these (seconds): only when a job runs, not when the CLI parses its flags
    from pipeline.detect.detector import Detector
    from pipeline.evaluate.evaluation import EvalSettings, load_sets, run_evaluation

    features = box_features_needed([filter_path]) if filter_path else "head"
    detector = Detector(DetectorConfig(model=model, device=device, batch=job.detector_batch, box_features=features))
    id_set, ood_sets = load_sets(detector, job.val_spec, job.ood_specs, None)  # type: ignore[arg-type]
    filters = [(str(filter_path), load_filter(filter_path))] if filter_path else []
    return run_evaluation(detector, id_set, ood_sets, out, EvalSettings(conf=job.hallucination_conf), filters)


def _fit(model: str, job: FinetuneJob, method: str, params: dict[str, Any], tpr: float, path: Path,
         device: str) -> Path:
    from pipeline.detect.detector import Detector
    from pipeline.filter.fit_from_data import FitRequest, fit_filter

    request = FitRequest(method=method, id_spec=job.id_spec, params=params,
                         outliers=list(job.outliers if job.outliers is not None else job.proxies),
                         outlier_conf=job.outlier_conf, tpr=tpr, calibration_id=job.calibration_id)
    config = request.detector_config(DetectorConfig(model=model, device=device, batch=job.detector_batch))
    filt, notes = fit_filter(Detector(config), request)
    log.info("%s filter on %s: %s", method, Path(model).name, "; ".join(notes))
    return save_filter(filt, path)


def run_finetune(job: FinetuneJob) -> dict[str, Any]:
    from pipeline.detect.detector import Detector
    from pipeline.filter.fit_from_data import FitRequest

    started = time.perf_counter()
    timings: dict[str, float] = {}
    out = job.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    device = job.training.device
    if job.ood_specs and not job.val_spec:
        raise GhostboxError("--ood needs --val: the comparison measures ID mAP on the validation set")
    method, params, tpr = job.filter_method, dict(job.filter_params), FitRequest.model_fields["tpr"].default
    old_method = None
    if job.filter_path:
        old = load_filter(job.filter_path)
        original = Detector(DetectorConfig(model=job.model, device=device,
                                           box_features=box_features_for(old.fingerprint)))
        old.check_detector(original.fingerprint())
        old_method = old.method
        method = method or old.method
        if method == old.method:
            params = params or dict(old.scorer.params)
        tpr = float(old.thresholds.target_tpr)
    else:
        original = Detector(DetectorConfig(model=job.model, device=device))
    class_names = original.class_names
    del original

    t0 = time.perf_counter()
    training = build_training_set(job.id_spec, job.proxies, out / "data", class_names, job.proxy_ratio,
                                  job.training.seed, val_spec=job.val_spec)
    timings["training_set_s"] = round(time.perf_counter() - t0, 1)
    log.info("training set: %d ID images + %d proxy images (of %d)", training.id_images, training.proxy_images,
             training.proxies_available)

    filters_dir = out / "filters"
    original_filter: Path | None = None
    if method:
        t0 = time.perf_counter()
        if job.filter_path and method == old_method:
            original_filter = filters_dir / "original.filter.safetensors"
            filters_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(job.filter_path, original_filter)
        else:
            original_filter = _fit(job.model, job, method, params, tpr, filters_dir / "original.filter.safetensors",
                                   device)
        timings["filter_original_s"] = round(time.perf_counter() - t0, 1)

    before = None
    if job.ood_specs:
        t0 = time.perf_counter()
        before = _evaluate(job.model, original_filter, job, out / "before", device)
        timings["eval_before_s"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    last = train_detector(job.model, training.data_yaml, out, job.training, resume=job.resume)
    model_path = out / "model.pt"
    shutil.copyfile(last, model_path)
    timings["train_s"] = round(time.perf_counter() - t0, 1)

    finetuned_filter = None
    if method:
        t0 = time.perf_counter()
        finetuned_filter = _fit(str(model_path), job, method, params, tpr,
                                filters_dir / "finetuned.filter.safetensors", device)
        timings["filter_finetuned_s"] = round(time.perf_counter() - t0, 1)

    summary: dict[str, Any] = {
        "model": job.model, "finetuned_model": str(model_path), "id": job.id_spec, "val": job.val_spec,
        "ood": job.ood_specs, "proxies": job.proxies, "training_set": training.describe(),
        "settings": job.training.model_dump(), "proxy_ratio": job.proxy_ratio,
        "filter": {"method": method, "params": params, "tpr": tpr,
                   "original": str(original_filter) if original_filter else None,
                   "finetuned": str(finetuned_filter) if finetuned_filter else None},
    }
    if before is not None:
        t0 = time.perf_counter()
        after = _evaluate(str(model_path), finetuned_filter, job, out / "after", device)
        timings["eval_after_s"] = round(time.perf_counter() - t0, 1)
        comparison = compare_reports(before, after)
        comparison["filter_method"] = method
        summary["comparison"] = comparison
        summary["outputs"] = [str(p) for p in write_comparison(comparison, out)]
    timings["total_s"] = round(time.perf_counter() - started, 1)
    summary["timings"] = timings
    write_json(out / "finetune.json", summary)
    return summary
