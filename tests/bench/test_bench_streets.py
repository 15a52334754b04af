"""`ghostbox bench streets` on a tiny two-street configuration: the page, the groups kept apart, the cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.bench.street_streams import ON_ID, ON_OOD, judge_boxes, parse_seeds
from pipeline.bench.streets import RECIPES, confidence_cut, judge
from pipeline.cli.main import main
from pipeline.errors import GhostboxError
from tests.bench.test_bench_out import _header


def test_bench_streets_reports_development_and_held_out_streets_apart(tmp_path: Path) -> None:
    out, cache = tmp_path / "streets.md", tmp_path / "cache"
    argv = ["bench", "streets", "--development", "1", "--held-out", "100", "--frames", "120",
            "--calibration-frames", "60", "--no-refit", "--cache", str(cache), "--out", str(out)]
    assert main(argv) == 0
    text = out.read_text()
    assert _header(text) is not None and "--held-out 100" in text
    assert "## development streets (1)" in text and "## held-out streets (1)" in text
    assert "Development seeds 1 are the only ones" in text and "held-out seeds 100 were fixed" in text
    assert sorted(p.name for p in cache.iterdir()) == ["street-1.npz", "street-100.npz"]
    # the second run reads the cache and gives the same figures
    json_out = tmp_path / "streets.json"
    assert main([*argv[:-1], str(json_out)]) == 0
    result = json.loads(json_out.read_text())
    assert result["development_seeds"] == [1] and result["held_out_seeds"] == [100]
    for group in ("development", "held-out"):
        [row] = result["groups"][group]["rows"]
        recipes = row["recipes"]
        assert "bundled" in recipes and "refit" not in recipes  # --no-refit
        for entry in recipes.values():
            frame = entry["frame"]
            assert frame["id_detections"] == row["test_id_detections"]
            for share in (frame["id_flagged"], frame["caught"]):
                assert share is None or 0.0 <= share <= 1.0
        if row["clip_tracks"]:  # every recipe ran or said why it refused this street
            assert set(recipes) | set(row["refused"]) >= set(RECIPES) - {"refit", "confidence cut"}
            assert ("adapt" in recipes) == ("confidence cut" in recipes)
    assert f"| {row['seed']} |" in text


def test_judging_counts_classes_kinds_and_objects_on_a_hand_built_frame() -> None:
    truth = [{"xyxy": [0, 0, 10, 10], "full_xyxy": [0, 0, 10, 10], "kind": "car", "ood": False, "track_id": 1},
             {"xyxy": [20, 20, 40, 40], "full_xyxy": [20, 20, 40, 40], "kind": "bench", "ood": True, "track_id": 2},
             {"xyxy": [50, 50, 60, 60], "full_xyxy": [50, 50, 80, 80], "kind": "dog", "ood": True, "track_id": 3}]
    det = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [21, 21, 39, 39], [60, 60, 75, 75], [90, 90, 99, 99]],
                   np.float32)
    label, kind, obj = judge_boxes(det, truth)
    assert label.tolist() == [ON_ID, ON_OOD, ON_OOD, ON_OOD, 0]
    assert kind.tolist() == ["car", "bench", "bench", "dog", ""] and obj.tolist() == [1, 2, 2, 3, -1]

    class _Street:
        def concat(self, name: str) -> np.ndarray:
            return {"label": label, "kind": kind, "obj": obj}[name]

    flags = np.array([False, True, False, True, True])
    figures = judge(_Street(), flags)  # type: ignore[arg-type]
    assert figures["id_flagged"] == 0.0 and figures["caught"] == pytest.approx(2 / 3)
    assert figures["per_kind"] == {"bench": 0.5, "dog": 1.0} and figures["per_class"] == {"car": 0.0}
    # the bench's two boxes: half flagged is not "most", so one of two objects is caught
    assert figures["objects"] == 2 and figures["objects_caught"] == 1


def test_the_confidence_cut_flags_the_asked_share_of_id_detections() -> None:
    confidence = np.linspace(0.3, 0.9, 100)
    label = np.r_[np.full(50, ON_ID), np.full(50, ON_OOD)][np.argsort(np.random.default_rng(0).random(100))]
    flags = confidence_cut(confidence, label, 0.1)
    assert flags[label == ON_ID].mean() == pytest.approx(0.1, abs=0.021)
    assert not confidence_cut(confidence, label, 0.0).any()


def test_seed_lists_parse_and_bad_ones_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_seeds("0-3", "--development") == (0, 1, 2, 3)
    assert parse_seeds("100,102-103", "--held-out") == (100, 102, 103)
    for bad in ("3-1", "a", "-1"):
        with pytest.raises(GhostboxError, match="--held-out"):
            parse_seeds(bad, "--held-out")
    assert main(["bench", "streets", "--development", "0-3", "--held-out", "3-5", "--no-refit"]) == 2
    assert "share seeds [3]" in capsys.readouterr().err
