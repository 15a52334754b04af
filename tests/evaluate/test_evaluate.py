"""`ghostbox eval`: exact figures with an oracle detector, and a CLI run with a real one.

The oracle is a test double with the detector's interface: it reads the ground truth of
the synthetic world and reports chosen boxes, so every count in the report is known.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.data import load_image, parse_dataset_spec
from pipeline.detections import Detections
from pipeline.evaluate.evaluation import EvalSettings, load_sets, run_evaluation
from pipeline.synth import WorldConfig, generate_world

CLASSES = ("pedestrian", "car", "traffic light", "traffic sign")
DIM = 16


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    config = WorldConfig(seed=5, train=6, val=10, near_test=8, far_test=6, pool=3, mixed_test=6, contaminated=20,
                         contamination_fraction=0.25, stream_frames=4)
    generate_world(config, root, workers=1)
    return root


class OracleDetector:
    """Reports ground truth: ID objects as themselves (conf 0.9, features near +3), OoD
    objects as class 0 hallucinations (conf 0.6, features near -3), plus one background
    box per mixed image."""

    def __init__(self, world: Path) -> None:
        self.class_names = CLASSES
        self.feature_dim = DIM
        self.imgsz = 320
        self.config = SimpleNamespace(model="oracle")
        self.batch = 4
        self.truth: dict[str, tuple[list, list]] = {}
        self.rng = np.random.default_rng(0)
        for spec in ("id/val", "ood/near_test", "ood/far_test", "ood/mixed_test", "ood/contaminated"):
            dataset = parse_dataset_spec(str(world / spec),
                                         class_names=list(CLASSES) if spec.startswith("id") else None)
            ood = [bool(c.get("ood", True)) for c in dataset.categories] if spec.startswith("ood") else None
            for record in dataset:
                key = hashlib.sha1(load_image(record).tobytes()).hexdigest()
                ids, oods = [], []
                for box, cls in zip(record.boxes_xyxy, record.class_ids):
                    if ood is not None and ood[cls]:
                        oods.append(box)
                    else:
                        ids.append((box, CLASSES.index(dataset.class_names[cls])))
                if spec == "ood/contaminated":  # the naive labels omit the ID object: add it from the audit truth
                    ids += self._contamination(world, record.file_name)
                self.truth[key] = (ids, oods, spec == "ood/mixed_test")

    @staticmethod
    def _contamination(world: Path, file_name: str) -> list:
        data = json.loads((world / "ood/contaminated/contamination.json").read_text())
        for image in data["images"]:
            if image["file_name"] == file_name:
                return [(np.array([o["box2d"][k] for k in ("x1", "y1", "x2", "y2")], np.float32),
                         CLASSES.index(o["category"])) for o in image["objects"]]
        return []

    def fingerprint(self) -> dict:
        return {"weights_sha256": "oracle", "imgsz": 320, "feature_dim": DIM, "class_names": list(CLASSES)}

    def detect(self, frames, crops=False, conf=None):
        out = []
        for frame in frames:
            ids, oods, mixed = self.truth[hashlib.sha1(frame.tobytes()).hexdigest()]
            boxes = [b for b, _ in ids] + oods + ([np.array([1, 1, 9, 9], np.float32)] if mixed else [])
            cls = [c for _, c in ids] + [0] * (len(oods) + int(mixed))
            confs = [0.9] * len(ids) + [0.6] * (len(oods) + int(mixed))
            n = len(boxes)
            feats = np.concatenate([self.rng.normal(3, 0.5, (len(ids), DIM)),
                                    self.rng.normal(-3, 0.5, (n - len(ids), DIM))]).reshape(n, DIM)
            logits = np.full((n, len(CLASSES)), -4.0)
            logits[np.arange(n), cls] = np.log(np.array(confs) / (1 - np.array(confs)))
            dets = Detections(
                xyxy=np.array(boxes, np.float32).reshape(n, 4), confidence=confs, class_id=cls, logits=logits,
                box_features=feats, level=np.zeros(n), class_names=CLASSES, image_size=(frame.shape[1], frame.shape[0]),
                crops=[frame[:8, :8].copy() for _ in range(n)] if crops else None,
            )
            keep = dets.confidence >= (conf or 0.0)
            out.append(dets[keep])
        return out


def fit_knn_filter(detector, world, tmp_path):
    from pipeline.detections import Detections
    from pipeline.filter.box_set import BoxSet
    from pipeline.filter.filter_file import load_filter, save_filter
    from pipeline.filter.hallucination_filter import HallucinationFilter

    dataset = parse_dataset_spec(str(world / "id/val"), class_names=list(CLASSES))
    boxes = Detections.merge(detector.detect([load_image(r) for r in dataset]))
    flt = HallucinationFilter.fit("knn", BoxSet(boxes), CLASSES, detector.fingerprint(), params={"k": 3})
    return load_filter(save_filter(flt, tmp_path / "knn.filter.safetensors"))


def test_oracle_counts_are_exact(world, tmp_path):
    detector = OracleDetector(world)
    id_set, ood_sets = load_sets(detector, str(world / "id/val"),
                                 [str(world / "ood/near_test"), str(world / "ood/mixed_test")], None)
    flt = fit_knn_filter(detector, world, tmp_path)
    report = run_evaluation(detector, id_set, ood_sets, tmp_path / "out", EvalSettings(),
                            filters=[("knn.filter.safetensors", flt)])
    assert report["id"]["map50"] == pytest.approx(1.0) and report["id"]["map50_95"] == pytest.approx(1.0)
    assert report["id"]["true_positives"] == id_set.num_boxes() and report["id"]["false_positives"] == 0
    near = report["ood"]["near_test"]
    assert near["hallucinations"] == ood_sets[0].num_boxes()  # one per OoD object
    assert near["per_image"] == pytest.approx(ood_sets[0].num_boxes() / len(ood_sets[0]), abs=1e-4)
    assert sum(k["hallucinations"] for k in near["per_kind"].values()) == near["hallucinations"]
    mixed = report["ood"]["mixed_test"]
    ood_objects = sum(1 for r in ood_sets[1] for c in r.class_ids if ood_sets[1].categories[c]["ood"])
    assert mixed["hallucinations"] == ood_objects
    assert mixed["background_false_positives"] == len(ood_sets[1])
    assert mixed["id_true_positives"] == ood_sets[1].num_boxes() - ood_objects
    # separable features: every score except the constant-logit ones separates perfectly
    assert near["scores"]["knn"]["fpr95"] == 0.0 and near["scores"]["knn"]["auroc"] == 1.0
    assert near["after_filter"]["hallucinations"] == 0 and near["after_filter"]["reduction"] == 1.0
    # every hallucination caught: each kind and each object (one box per object here)
    caught = near["caught"]
    assert caught["objects"] == caught["objects_caught"] == near["hallucinations"]
    assert all(row["caught"] == row["boxes"] for row in caught["per_kind"].values())
    assert sum(row["boxes"] for row in caught["per_kind"].values()) == near["hallucinations"]
    assert near["confidence_cut"]["caught"] is not None
    assert 0 <= report["id"]["tp_lost_fraction"] <= 0.2
    for part in report["ood"].values():
        for metrics in part["scores"].values():
            for key in ("fpr95", "auroc", "aupr_in", "aupr_out"):
                assert metrics[key] is None or 0.0 <= metrics[key] <= 1.0
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["id"]["map50"] == report["id"]["map50"]
    for picture in ("hallucinations.png", "roc.png", "scores_energy.png", "scores_knn.png", "worst_hallucinations.png"):
        assert (tmp_path / "out" / picture).stat().st_size > 1000
    assert "## Scores" in (tmp_path / "out" / "report.md").read_text()
    assert "caught by the filter, per OoD kind" in (tmp_path / "out" / "report.md").read_text()


def test_contamination_audit_finds_the_contaminated_images(world, tmp_path):
    detector = OracleDetector(world)
    id_set, [contaminated] = load_sets(detector, str(world / "id/val"), [str(world / "ood/contaminated")], None)
    report = run_evaluation(detector, id_set, [contaminated], tmp_path / "out",
                            EvalSettings(audit_conf=0.8, plots=False))
    truth = {i["file_name"] for i in json.loads((world / "ood/contaminated/contamination.json").read_text())["images"]}
    audited = {a["file_name"] for a in report["ood"]["contaminated"]["audit"]}
    assert truth and audited == truth
    # excluding the audited images removes them from the set
    listing = tmp_path / "exclude.txt"
    listing.write_text("\n".join(sorted(audited)) + "\n")
    _, [cleaned] = load_sets(detector, str(world / "id/val"), [str(world / "ood/contaminated")], str(listing))
    assert len(cleaned) == len(contaminated) - len(truth)
    report = run_evaluation(detector, id_set, [cleaned], tmp_path / "out2", EvalSettings(audit_conf=0.8, plots=False))
    assert report["ood"]["contaminated"]["audit"] == []


def test_eval_cli_with_a_real_detector(world, checkpoints, tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "eval", "--model", str(checkpoints["yolov8"]), "--id", str(world / "id/val"),
         "--ood", str(world / "ood/near_test"), "--ood", f"{world / 'ood/far_test'}:name=far", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report["ood"]) == {"near_test", "far"}
    assert {"map50", "map50_95", "per_class"} <= set(report["id"])
    for part in report["ood"].values():
        assert {"images", "hallucinations", "per_image", "after_filter", "scores", "audit"} <= set(part)
        assert set(part["scores"]) <= {"msp", "maxlogit", "energy"}
    assert "mAP50" in proc.stdout


def test_eval_bad_input(world, checkpoints, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "pipeline", "eval", "--model", str(checkpoints["yolov8"]), *args,
                               "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=300)

    proc = run("--id", str(world / "id/val"))
    assert proc.returncode == 2 and "--ood" in proc.stderr
    proc = run("--id", str(tmp_path / "nope.json"), "--ood", str(world / "ood/near_test"))
    assert proc.returncode == 2 and "nope.json" in proc.stderr and "Traceback" not in proc.stderr
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    proc = run("--id", str(world / "id/val"), "--ood", f"coco:{broken}")
    assert proc.returncode == 2 and "broken.json" in proc.stderr
