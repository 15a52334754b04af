"""Filter files: one safetensors file, identical scores after loading, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import pipeline
from pipeline.errors import GhostboxError
from pipeline.filter.calibrate import calibrate
from pipeline.filter.filter_file import FILTER_SUFFIX, load_filter, read_filter_header, save_filter
from pipeline.filter.hallucination_filter import HallucinationFilter
from pipeline.filter.registry import create
from tests.helpers.filter_fixtures import CLASS_NAMES, TEST_PARAMS, WORLD, fitted, id_test, ood_hidden

ALL = ["msp", "maxlogit", "energy", "mahalanobis", "knn", "vim", "bam", "abet", "fusion"]
FINGERPRINT = {"weights_sha256": "a" * 64, "imgsz": 320, "feature_dim": 32, "class_names": list(CLASS_NAMES)}


def _filter(name: str, **params) -> HallucinationFilter:
    scorer = create(name, **params).fit(WORLD.id_boxes(3000, seed=1)) if params else fitted(name)
    cal = calibrate(scorer, WORLD.id_boxes(800, seed=42), class_names=CLASS_NAMES)
    return HallucinationFilter(scorer, cal, CLASS_NAMES, FINGERPRINT, metadata={"note": "toy"})


@pytest.mark.parametrize("name", ALL)
def test_round_trip_gives_identical_scores(name, tmp_path):
    filt = _filter(name)
    path = save_filter(filt, tmp_path / f"toy{FILTER_SUFFIX}")
    loaded = load_filter(path)
    for boxes in (id_test(), ood_hidden()):
        np.testing.assert_array_equal(loaded.scorer.score(boxes), filt.scorer.score(boxes))
    np.testing.assert_array_equal(loaded.thresholds.per_class, filt.thresholds.per_class)
    assert loaded.thresholds.classes == filt.thresholds.classes
    assert (loaded.method, loaded.class_names, loaded.fingerprint) == (name, CLASS_NAMES, FINGERPRINT)
    assert loaded.scorer.params == filt.scorer.params
    assert loaded.metadata == {"note": "toy"}


def test_round_trip_of_nested_fusion_and_ivf_knn(tmp_path):
    pytest.importorskip("faiss")
    filt = _filter("fusion", members=[{"name": "knn", "params": {"k": 10, "index": "ivf"}}, "vim", "bam"],
                   method="zscore", weights=[2, 1, 1])
    path = save_filter(filt, tmp_path / "nested.filter.safetensors")
    keys = set(load_file(str(path)))
    assert {"scorer.members.0.bank", "scorer.members.0.ivf_centroids", "scorer.members.1.null",
            "scorer.members.2.lo", "scorer.reference.2.cdf", "thresholds.per_class"} <= keys
    loaded = load_filter(path)
    assert loaded.scorer.members[0].nprobe_used == filt.scorer.members[0].nprobe_used
    np.testing.assert_array_equal(loaded.scorer.score(ood_hidden()), filt.scorer.score(ood_hidden()))


def test_header_holds_what_the_format_promises(tmp_path):
    path = save_filter(_filter("knn"), tmp_path / "knn.filter.safetensors")
    header = read_filter_header(path)
    assert header["format"] == "ghostbox-filter" and header["format_version"] == 1
    assert header["method"] == "knn" and header["scorer"]["params"]["k"] == TEST_PARAMS["knn"]["k"]
    assert header["ghostbox_version"] == pipeline.__version__
    assert header["calibration"]["target_tpr"] == 0.95 and len(header["calibration"]["classes"]) == 4
    assert header["fingerprint"]["weights_sha256"] == "a" * 64 and header["class_names"] == list(CLASS_NAMES)
    assert header["created"].endswith("+00:00") and header["feature_dim"] == 32


def _rewrite_header(path, change):
    tensors = load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as handle:
        header = json.loads(handle.metadata()["ghostbox_filter"])
    change(header)
    save_file(tensors, str(path), metadata={"ghostbox_filter": json.dumps(header)})


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.filter.safetensors"
    with pytest.raises(GhostboxError, match="nope.filter.safetensors: no such filter file"):
        load_filter(missing)
    garbage = tmp_path / "garbage.filter.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(GhostboxError, match="garbage.filter.safetensors: not a readable safetensors"):
        load_filter(garbage)
    good = save_filter(_filter("energy"), tmp_path / "good.filter.safetensors")
    truncated = tmp_path / "truncated.filter.safetensors"
    truncated.write_bytes(good.read_bytes()[:-5])
    with pytest.raises(GhostboxError, match="truncated.filter.safetensors"):
        load_filter(truncated)
    plain = tmp_path / "plain.safetensors"
    save_file({"x": np.zeros(3)}, str(plain))
    with pytest.raises(GhostboxError, match="plain.safetensors: safetensors file without a 'ghostbox_filter' header"):
        load_filter(plain)


@pytest.mark.parametrize("change,message", [
    (lambda h: h.update(format_version=99), "filter format version 99; this ghostbox reads version 1"),
    (lambda h: h.update(method="odin"), "unknown OOD method 'odin'"),
    (lambda h: h.pop("scorer"), "filter header is incomplete"),
    (lambda h: h["calibration"]["classes"][0].update(threshold=123.0), "disagrees with the calibration report"),
])
def test_bad_headers_are_refused(tmp_path, change, message):
    path = save_filter(_filter("mahalanobis"), tmp_path / "m.filter.safetensors")
    _rewrite_header(path, change)
    with pytest.raises(GhostboxError, match=f"m.filter.safetensors: .*{message}"):
        load_filter(path)


def test_missing_scorer_array_is_refused(tmp_path):
    path = save_filter(_filter("vim"), tmp_path / "v.filter.safetensors")
    tensors = load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as handle:
        meta = handle.metadata()
    del tensors["scorer.null"]
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(GhostboxError, match=r"v.filter.safetensors: vim: stored state lacks array\(s\) null"):
        load_filter(path)


def test_files_hold_no_pickle(tmp_path):
    path = save_filter(_filter("abet"), tmp_path / "a.filter.safetensors")
    data = path.read_bytes()
    assert b"\x80\x04\x95" not in data and b"\x80\x05\x95" not in data  # pickle protocol 4/5 headers
