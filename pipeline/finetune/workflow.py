"""`ghostbox finetune` end to end: training set, before-evaluation, fine-tune, re-fitted filter, after-evaluation.

    OUT/data/               the Ultralytics training set (ID in YOLO layout, train/ links, train.txt)
    OUT/train/              Ultralytics' run (weights/last.pt; resumable)
    OUT/model.pt            the fine-tuned detector
    OUT/filters/original.filter.safetensors   the filter on the original model (given or fitted)
    OUT/filters/finetuned.filter.safetensors  the same method re-fitted on the fine-tuned model
    OUT/before/, OUT/after/  `ghostbox eval` reports of each model with its filter
    OUT/comparison.json|md|png, OUT/finetune.json (settings, timings, figures)
    OUT/round-K/            with --rounds N > 1: each round's mined proxies, run, model, filter
                            and comparison (pipeline.finetune.mining_rounds); the top level holds
                            the last round's model, filter and comparison

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
from pipeline.finetune.mining_rounds import (
    METHOD_FIELDS,
    finished_round,
    mine_round,
    mining_seed,
    round_dir,
    write_round,
)
from pipeline.finetune.training_run import FinetuneJob, train_detector, with_unknown_class
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


def _check_rounds(job: FinetuneJob) -> str | None:
    """The pool the rounds mine, refused early (before the slow parts) when rounds > 1 has none."""
    if job.rounds == 1:
        return None
    pool = job.mine_pool or (job.outliers[0] if job.outliers else None)
    if pool is None:
        raise GhostboxError(f"--rounds {job.rounds} mines the fine-tuned model's hallucinations on a pool of images "
                            "without ID objects: give --mine-pool SPEC (or --outliers)")
    return pool


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
    pool = _check_rounds(job)
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

    model, proxies = job.model, list(job.proxies)
    if job.unknown_class:  # the head grows one class; the ID classes' weights stay as they are
        model = str(with_unknown_class(job.model, out / "unknown-class" / "start.pt"))
    rounds: list[dict[str, Any]] = []
    for index in range(1, job.rounds + 1):
        folder = round_dir(out, index, job.rounds)
        done = finished_round(folder) if job.resume and job.rounds > 1 else None
        if done is not None:
            log.info("round %d of %d finished before; reused", index, job.rounds)
        else:
            if index > 1:
                t0 = time.perf_counter()
                assert pool is not None
                mined = mine_round(model, id_spec=job.id_spec, pool=pool, out=folder / "mined",
                                   count=job.mine_count, mine_images=job.mine_images,
                                   seed=mining_seed(job.training.seed, index),
                                   conf=job.hallucination_conf if job.mine_conf is None else job.mine_conf,
                                   device=device, batch=job.detector_batch)
                timings[f"round_{index}_mining_s"] = round(time.perf_counter() - t0, 1)
                if mined is None:
                    log.info("round %d: nothing left to mine; the rounds end at %d", index, index - 1)
                    break
                proxies.append(str(mined))
            done = _train_round(job, model, proxies, folder, class_names, method, params, tpr, device, before,
                                timings, prefix="" if index == 1 else f"round_{index}_")
            done["round"] = index
            if job.rounds > 1:
                write_round(folder, done)
        model, proxies = done["model"], list(done["proxies"])
        rounds.append(done)

    last = rounds[-1]
    model_path = out / "model.pt"
    if Path(last["model"]) != model_path:
        shutil.copyfile(last["model"], model_path)
    finetuned_filter = None
    if last["filter"]:
        finetuned_filter = filters_dir / "finetuned.filter.safetensors"
        if Path(last["filter"]) != finetuned_filter:
            filters_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(last["filter"], finetuned_filter)

    summary: dict[str, Any] = {
        "model": job.model, "finetuned_model": str(model_path), "id": job.id_spec, "val": job.val_spec,
        "ood": job.ood_specs, "proxies": job.proxies, "training_set": last["training_set"],
        "settings": job.training.model_dump(), "proxy_ratio": job.proxy_ratio,
        "method": job.model_dump(mode="json", include=METHOD_FIELDS),
        # the settings are in "method"; these are what the rounds did
        "rounds": {"done": len(rounds), "mine_pool": pool, "mined_proxies": last["proxies"][len(job.proxies):]},
        "filter": {"method": method, "params": params, "tpr": tpr,
                   "original": str(original_filter) if original_filter else None,
                   "finetuned": str(finetuned_filter) if finetuned_filter else None},
    }
    if before is not None:
        comparison = last["comparison"]
        summary["comparison"] = comparison
        if job.rounds > 1:
            summary["round_comparisons"] = {str(r["round"]): r["comparison"] for r in rounds}
        summary["outputs"] = [str(p) for p in write_comparison(comparison, out)]
    timings["total_s"] = round(time.perf_counter() - started, 1)
    summary["timings"] = timings
    write_json(out / "finetune.json", summary)
    return summary


def _train_round(job: FinetuneJob, model: str, proxies: list[str], folder: Path, class_names: tuple[str, ...],
                 method: str | None, params: dict[str, Any], tpr: float, device: str,
                 before: dict[str, Any] | None, timings: dict[str, float], prefix: str) -> dict[str, Any]:
    """One fine-tune from `model` with `proxies` into `folder`: training set, training, re-fitted filter and
    the after-evaluation against the original model's `before`."""
    t0 = time.perf_counter()
    training = build_training_set(job.id_spec, proxies, folder / "data", class_names, job.proxy_ratio,
                                  job.training.seed, val_spec=job.val_spec, unknown_class=job.unknown_class)
    timings[f"{prefix}training_set_s"] = round(time.perf_counter() - t0, 1)
    log.info("training set: %d ID images + %d proxy images (of %d)", training.id_images, training.proxy_images,
             training.proxies_available)

    t0 = time.perf_counter()
    last = train_detector(model, training.data_yaml, folder, job.training, resume=job.resume)
    model_path = folder / "model.pt"
    shutil.copyfile(last, model_path)
    timings[f"{prefix}train_s"] = round(time.perf_counter() - t0, 1)

    finetuned_filter = None
    if method:
        t0 = time.perf_counter()
        finetuned_filter = _fit(str(model_path), job, method, params, tpr,
                                folder / "filters" / "finetuned.filter.safetensors", device)
        timings[f"{prefix}filter_finetuned_s"] = round(time.perf_counter() - t0, 1)
    record: dict[str, Any] = {"model": str(model_path), "proxies": list(proxies),
                              "filter": str(finetuned_filter) if finetuned_filter else None,
                              "training_set": training.describe(), "comparison": None}
    if before is not None:
        t0 = time.perf_counter()
        after = _evaluate(str(model_path), finetuned_filter, job, folder / "after", device)
        timings[f"{prefix}eval_after_s"] = round(time.perf_counter() - t0, 1)
        comparison = compare_reports(before, after)
        comparison["filter_method"] = method
        record["comparison"] = comparison
        if job.rounds > 1:
            write_comparison(comparison, folder)
    return record
