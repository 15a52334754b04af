"""One file per fitted filter: safetensors arrays plus a JSON header, never pickle.

Suffix: `.filter.safetensors` (`FILTER_SUFFIX`): any safetensors tool can list the arrays,
and the name says what the file is. Loading accepts any name.

Layout (format version 1):
    tensors   scorer.<key>               the scorer's arrays (`Scorer.get_state`); a fusion
                                         nests its members as scorer.members.<i>.<key>
              thresholds.per_class       (nc,) float64, threshold by predicted class
              thresholds.per_bin         (nc, bins) float64, by class and confidence bin (files
                                         without it use per_class in one bin)
    metadata  {"ghostbox_filter": JSON}  with
              format "ghostbox-filter", format_version 1, method, scorer (the JSON half of
              the scorer state: constructor params and fitted scalars), feature_dim,
              num_classes, class_names, fingerprint (the detector it was fitted for),
              policy, calibration (target TPR, global threshold, confidence bin edges,
              per-class report, held-out check),
              metadata (free-form: fit/calibration box counts, ...), created (UTC ISO 8601),
              ghostbox_version
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

import pipeline
from pipeline.bundled import ASSETS, DEFAULT_MODEL_NAME
from pipeline.detect.config import DetectorConfig, box_features_for
from pipeline.errors import GhostboxError
from pipeline.filter.calibrate import Calibration
from pipeline.filter.hallucination_filter import HallucinationFilter
from pipeline.filter.registry import scorer_class

FORMAT = "ghostbox-filter"
FORMAT_VERSION = 1
FILTER_SUFFIX = ".filter.safetensors"
METADATA_KEY = "ghostbox_filter"


def save_filter(filt: HallucinationFilter, path: str | Path) -> Path:
    """Write the filter to one safetensors file (atomically: a temp file, then rename)."""


    path = Path(path)
    arrays, scorer_json = filt.scorer.get_state()
    tensors = {f"scorer.{key}": np.ascontiguousarray(value) for key, value in arrays.items()}
    tensors["thresholds.per_class"] = np.ascontiguousarray(filt.thresholds.per_class, np.float64)
    tensors["thresholds.per_bin"] = np.ascontiguousarray(filt.thresholds.per_bin, np.float64)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": filt.method,
        "scorer": scorer_json,
        "feature_dim": filt.feature_dim,
        "num_classes": filt.num_classes,
        "class_names": list(filt.class_names),
        "fingerprint": filt.fingerprint,
        "policy": filt.policy,
        "calibration": filt.thresholds.to_json(),
        "metadata": filt.metadata,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "ghostbox_version": pipeline.__version__,
    }
    try:
        text = json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise GhostboxError(f"{path}: filter metadata is not plain JSON ({exc})") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={METADATA_KEY: text})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_filter_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a filter file (no arrays loaded)."""
    header, _ = _read(Path(path), arrays=False)
    return header


def header_needs_crops(header: dict[str, Any]) -> bool:
    """Whether the filter a header describes has a crop model (a score that reads each box's pixels),
    told without loading its arrays: a worker decides from it whether to send crops."""
    method = header.get("method")
    members = ((header.get("scorer") or {}).get("params") or {}).get("members") or [] if method == "fusion" else []
    names = [m.get("name") if isinstance(m, dict) else m for m in members] or [method]
    return any(scorer_class(str(name)).uses_crops for name in names)


def box_features_needed(paths: Sequence[str | Path]) -> str | None:
    """The detector's `box_features` the filters were fitted with; None without filters.

    A filter fitted on RoI-aligned features needs a detector that computes them, so the
    commands that take --filter set the detector up from the file instead of asking the user.
    """
    needed = {str(p): box_features_for(read_filter_header(p).get("fingerprint", {})) for p in paths}
    kinds = set(needed.values())
    if len(kinds) > 1:
        raise GhostboxError("filters need different detector box features ("
                            + ", ".join(f"{p}: {k}" for p, k in needed.items()) + "); run them separately")
    return kinds.pop() if kinds else None


def with_filter_features(config: DetectorConfig, filters: Sequence[str | Path]) -> DetectorConfig:
    """The one rule for every command and the stream's workers: unless `box_features` was set, the
    filters choose it (a filter fitted on RoI features needs a detector that computes them)."""
    if config.box_features is not None or not filters:
        return config
    return config.model_copy(update={"box_features": box_features_needed(filters)})


def _read(path: Path, arrays: bool) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if not path.is_file():
        raise GhostboxError(f"{path}: no such filter file")
    try:
        with safe_open(str(path), framework="np") as handle:
            meta = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()} if arrays else {}
    except Exception as exc:  # safetensors raises its own error types for broken headers and data
        raise GhostboxError(f"{path}: not a readable safetensors filter file ({type(exc).__name__}: {exc})") from exc
    if METADATA_KEY not in meta:
        raise GhostboxError(f"{path}: safetensors file without a '{METADATA_KEY}' header: not a ghostbox filter")
    try:
        header = json.loads(meta[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise GhostboxError(f"{path}: corrupt filter header ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise GhostboxError(f"{path}: header is not a '{FORMAT}' header")
    if header.get("format_version") != FORMAT_VERSION:
        raise GhostboxError(f"{path}: filter format version {header.get('format_version')!r}; "
                            f"this ghostbox reads version {FORMAT_VERSION}")
    return header, tensors


def load_filter(path: str | Path) -> HallucinationFilter:
    """Read a filter written by `save_filter`; any problem raises GhostboxError naming the file."""
    path = Path(path)
    header, tensors = _read(path, arrays=True)
    try:
        method = header["method"]
        try:
            cls = scorer_class(method)
        except GhostboxError as exc:
            raise GhostboxError(f"{path}: {exc}") from None
        scorer_arrays = {key[len("scorer."):]: value for key, value in tensors.items() if key.startswith("scorer.")}
        scorer = cls.from_state(scorer_arrays, header["scorer"])
        calibration = Calibration.from_json(header["calibration"], tensors.get("thresholds.per_bin"))
        if "thresholds.per_class" not in tensors:
            raise GhostboxError("array thresholds.per_class missing")
        per_class = np.asarray(tensors["thresholds.per_class"], np.float64)
        if not np.array_equal(per_class, calibration.per_class):
            raise GhostboxError("thresholds.per_class disagrees with the calibration report")
        return HallucinationFilter(scorer, calibration, header["class_names"], header["fingerprint"],
                                   policy=header.get("policy", "flag"), metadata=header.get("metadata", {}))
    except GhostboxError as exc:
        message = str(exc)
        raise GhostboxError(message if message.startswith(str(path)) else f"{path}: {message}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise GhostboxError(f"{path}: filter header is incomplete or invalid ({type(exc).__name__}: {exc})") from exc


def default_filter() -> Path | None:
    """The bundled filter for the bundled model, when the package ships one."""
    named = ASSETS / "filters" / f"{DEFAULT_MODEL_NAME}{FILTER_SUFFIX}"
    if named.is_file():
        return named
    found = sorted((ASSETS / "filters").glob(f"*{FILTER_SUFFIX}"))
    return found[0] if found else None
