"""Hallucination filter: box-level OOD scores, per-class thresholds, one filter file.

    id_set  = BoxSet(Detections.merge(id_frames))            # many frames' boxes as one set
    filt    = HallucinationFilter.fit("knn", id_set, class_names, detector.fingerprint())
    save_filter(filt, "street.filter.safetensors")
    filt    = load_filter("street.filter.safetensors")
    filt.check_detector(detector.fingerprint())
    dets    = filt.apply(dets)                               # + score, threshold, hallucination

Every score: higher = more in-distribution. Methods: `names()`, defined in
`pipeline.filter.scores`; importing that package here registers them all, before any
module of this package can look one up.
"""

from pipeline.filter import scores  # noqa: F401  -- registers the built-in scores
from pipeline.filter.box_set import BoxSet
from pipeline.filter.calibrate import Calibration, ClassCalibration, calibrate
from pipeline.filter.filter_file import FILTER_SUFFIX, load_filter, read_filter_header, save_filter
from pipeline.filter.hallucination_filter import HallucinationFilter
from pipeline.filter.registry import create, names, register, scorer_class
from pipeline.filter.scorer import Scorer
from pipeline.filter.splits import split_fit_calibration

__all__ = [
    "FILTER_SUFFIX", "BoxSet", "Calibration", "ClassCalibration", "HallucinationFilter", "Scorer",
    "calibrate", "create", "load_filter", "names", "read_filter_header", "register", "save_filter",
    "scorer_class", "split_fit_calibration",
]
