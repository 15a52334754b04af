"""`ghostbox finetune`: the training set, the comparison, and a short real fine-tune end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.bundled import default_model
from pipeline.errors import GhostboxError
from pipeline.finetune.comparison import compare_reports, comparison_markdown, write_comparison
from pipeline.finetune.training_set import build_training_set
from pipeline.proxies import ProxySettings, build_proxy_set
from pipeline.synth import WorldConfig, generate_world

CLASSES = ("pedestrian", "car", "traffic light", "traffic sign")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ftworld") / "w"
    generate_world(WorldConfig(seed=7, train=16, val=6, near_test=4, far_test=2, pool=8, mixed_test=2, contaminated=2,
                               stream_frames=2), out, workers=1)
    return out


@pytest.fixture(scope="module")
def proxies(world: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ftproxies") / "P"
    build_proxy_set(ProxySettings(id_spec=f"{world / 'id/train'}:classes={','.join(CLASSES)}", out=out,
                                  strategies=("background", "paste"), count=6, seed=0, pool=str(world / "ood/pool")))
    return out


def test_training_set_lists_id_images_then_seeded_proxies(world: Path, proxies: Path, tmp_path: Path):
    a = build_training_set(str(world / "id/train"), [proxies], tmp_path / "a", CLASSES, proxy_ratio=0.5, seed=1,
                           val_spec=str(world / "id/val"))
    lines = (tmp_path / "a" / "train.txt").read_text().splitlines()
    assert a.id_images == 16 and a.proxy_images == 8 and a.proxies_available == 12 and len(lines) == 24
    assert a.proxy_sources == {str(proxies): 8}
    # every listed image is an index-named link in one folder, in list order, its label beside it
    assert [Path(line).name for line in lines] == [f"{i:06d}.jpg" for i in range(24)]
    sources = dict(row.split("\t") for row in (tmp_path / "a/train/sources.txt").read_text().splitlines())
    for line in lines:
        image = Path(line)
        label = image.parent.parent / "labels" / f"{image.stem}.txt"
        assert image.parent == tmp_path / "a/train/images" and label.is_file(), line
        source = Path(sources[image.name])
        assert image.read_bytes() == source.read_bytes()
        original_label = Path(str(source.parent).replace("/images", "/labels")) / f"{source.stem}.txt"
        assert label.read_text() == original_label.read_text(), line
    proxy_lines = [sources[Path(line).name] for line in lines if sources[Path(line).name].startswith(
        str(proxies.resolve()))]
    assert len(proxy_lines) == 8
    assert all(sources[Path(line).name].startswith(str((tmp_path / "a/id").resolve())) for line in lines[:16])
    # ID labels come over unchanged in count: one YOLO line per ground-truth box
    from pipeline.data import parse_dataset_spec

    truth = parse_dataset_spec(str(world / "id/train"), class_names=list(CLASSES))
    written = sum(len(p.read_text().splitlines()) for p in (tmp_path / "a/id/labels/train").glob("*.txt"))
    assert written == sum(len(r.class_ids) for r in truth)
    import yaml

    config = yaml.safe_load((tmp_path / "a" / "data.yaml").read_text())
    assert config["train"] == "train.txt" and config["val"] == "id/images/val" and config["names"][3] == "traffic sign"
    # seeded: same seed, same draw; another seed, another draw
    build_training_set(str(world / "id/train"), [proxies], tmp_path / "b", CLASSES, proxy_ratio=0.5, seed=1)
    build_training_set(str(world / "id/train"), [proxies], tmp_path / "c", CLASSES, proxy_ratio=0.5, seed=2)

    def draw(d):
        return [x.split("\t")[1] for x in (tmp_path / d / "train/sources.txt").read_text().splitlines()
                if str(proxies) in x]

    assert draw("b") == proxy_lines and draw("c") != proxy_lines
    # asking for more than there is takes all of them
    many = build_training_set(str(world / "id/train"), [proxies], tmp_path / "d", CLASSES, proxy_ratio=5.0)
    assert many.proxy_images == 12


def test_training_set_is_the_same_wherever_its_inputs_lie(world: Path, proxies: Path, tmp_path: Path):
    """Ultralytics sorts training images by path: the list must not depend on folder names."""
    import shutil

    moved = tmp_path / "zz-elsewhere" / "sets" / "a-proxies"
    shutil.copytree(proxies, moved)
    runs = []
    for name, folder in (("one", proxies), ("two", moved)):
        build_training_set(str(world / "id/train"), [folder], tmp_path / name / "data", CLASSES, proxy_ratio=0.5,
                           seed=3)
        train = tmp_path / name / "data" / "train"
        runs.append([(p.name, p.read_bytes(), (train / "labels" / f"{p.stem}.txt").read_text())
                     for p in sorted((train / "images").iterdir())])
    assert runs[0] == runs[1] and len(runs[0]) == 24
    # built again in place: the same list, no stale Ultralytics cache left behind
    (tmp_path / "one/data/train/labels.cache").write_text("stale")
    build_training_set(str(world / "id/train"), [proxies], tmp_path / "one" / "data", CLASSES, proxy_ratio=0.5,
                       seed=3)
    assert not (tmp_path / "one/data/train/labels.cache").exists()
    assert len(list((tmp_path / "one/data/train/images").iterdir())) == 24


def test_training_set_refuses_what_it_cannot_use(world: Path, proxies: Path, tmp_path: Path):
    with pytest.raises(GhostboxError, match="expected images/ and labels/"):
        build_training_set(str(world / "id/train"), [world / "ood/pool"], tmp_path / "x", CLASSES)
    with pytest.raises(GhostboxError, match="was made for classes"):
        build_training_set(str(world / "id/train"), [proxies], tmp_path / "y",
                           ("car", "pedestrian", "traffic light", "traffic sign"))
    with pytest.raises(GhostboxError, match="proxy_ratio must be >= 0"):
        build_training_set(str(world / "id/train"), [proxies], tmp_path / "z", CLASSES, proxy_ratio=-1)
    lonely = tmp_path / "lonely"
    (lonely / "images").mkdir(parents=True)
    (lonely / "labels").mkdir()
    (lonely / "images" / "a.jpg").write_bytes(b"x")
    with pytest.raises(GhostboxError, match="lack a label file"):
        build_training_set(str(world / "id/train"), [lonely], tmp_path / "w", CLASSES)


def _report(map50: float, halluc: int, filtered: int | None, fpr: float) -> dict:
    after = {"hallucinations": filtered} if filtered is not None else {}
    return {"id": {"map50": map50, "map50_95": map50 - 0.2, "tp_lost_fraction": 0.05},
            "ood": {"near": {"images": 10, "hallucinations": halluc, "after_filter": after,
                             "scores": {"energy": {"fpr95": fpr}}}}}


def test_comparison_measures_against_the_original_model_without_filter(tmp_path: Path):
    comparison = compare_reports(_report(0.978, 1000, 300, 0.38), _report(0.972, 400, 60, 0.2))
    near = comparison["ood"]["near"]
    assert near["hallucinations"] == {"original": 1000, "original_filtered": 300, "finetuned": 400,
                                      "finetuned_filtered": 60}
    assert near["reduction"] == {"original_filtered": 0.7, "finetuned": 0.6, "finetuned_filtered": 0.94}
    assert comparison["id"]["map50"]["change_points"] == pytest.approx(-0.6)
    assert near["fpr95"]["energy"] == {"before": 0.38, "after": 0.2}
    text = comparison_markdown(comparison)
    assert "| near | 1000 | 300 (70.0% less) | 400 (60.0% less) | 60 (94.0% less) |" in text
    paths = write_comparison(comparison, tmp_path)
    assert [p.name for p in paths] == ["comparison.json", "comparison.md", "comparison.png"]
    import cv2

    assert cv2.imread(str(paths[2])).shape[0] > 200


def test_short_finetune_end_to_end(world: Path, proxies: Path, tmp_path: Path):
    """A real (one-epoch, tiny) fine-tune through the CLI: outputs, re-fitted filter, comparison."""
    out = tmp_path / "ft"
    original_filter = tmp_path / "energy.filter.safetensors"
    base = [sys.executable, "-m", "pipeline"]
    proc = subprocess.run([*base, "calibrate", "--id", str(world / "id/train"), "--method", "energy",
                           "--min-boxes", "5", "--out", str(original_filter), "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cmd = [*base, "finetune", "--id", str(world / "id/train"), "--val", str(world / "id/val"),
           "--ood", str(world / "ood/near_test"), "--proxies", str(proxies), "--filter", str(original_filter),
           "--epochs", "1", "--batch", "8", "--workers", "0", "--proxy-ratio", "0.5", "--threads", "2",
           "--mosaic", "0.5", "--close-mosaic", "0", "--lrf", "0.05", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| near_test |" in proc.stdout
    # it reaches Ultralytics' trainer, which would otherwise train on cpu_count - 1 threads
    assert "training on 2 CPU thread(s)" in proc.stderr
    import yaml

    trained_with = yaml.safe_load((out / "train" / "args.yaml").read_text())
    assert (trained_with["mosaic"], trained_with["close_mosaic"], trained_with["lrf"]) == (0.5, 0, 0.05)
    summary = json.loads((out / "finetune.json").read_text())
    assert summary["training_set"]["id_images"] == 16 and summary["training_set"]["proxy_images"] == 8
    assert summary["filter"]["method"] == "energy" and summary["filter"]["tpr"] == 0.95
    comparison = json.loads((out / "comparison.json").read_text())
    assert set(comparison["ood"]) == {"near_test"}
    assert 0 <= comparison["id"]["map50"]["after"] <= 1
    for name in ("comparison.md", "comparison.png", "model.pt", "before/report.json", "after/report.json"):
        assert (out / name).is_file(), name

    from pipeline.detect.detector import Detector
    from pipeline.filter.filter_file import load_filter

    tuned = Detector(model=str(out / "model.pt"), device="cpu")
    assert tuned.class_names == CLASSES
    assert tuned.fingerprint()["weights_sha256"] != Detector(model=str(default_model()), device="cpu").fingerprint()[
        "weights_sha256"]
    # the old filter refuses the fine-tuned detector; the re-fitted one takes it
    with pytest.raises(GhostboxError, match="weights_sha256"):
        load_filter(original_filter).check_detector(tuned.fingerprint())
    refit = load_filter(out / "filters" / "finetuned.filter.safetensors")
    refit.check_detector(tuned.fingerprint())
    assert refit.method == "energy"
    # --resume on a finished run trains nothing more and keeps the weights
    from pipeline.finetune.training_run import FinetuneSettings, train_detector

    before = (out / "model.pt").read_bytes()
    last = train_detector(str(default_model()), out / "data" / "data.yaml", out, FinetuneSettings(epochs=1),
                          resume=True, verbose=False)
    assert np.array_equal(np.frombuffer(last.read_bytes(), np.uint8), np.frombuffer(before, np.uint8))


def test_finetune_settings_refuse_bad_values():
    from pipeline.finetune.training_run import FinetuneSettings

    for bad in ({"threads": 0}, {"epochs": 0}, {"lr0": 0}, {"lrf": 0}, {"mosaic": 1.5}, {"close_mosaic": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FinetuneSettings(**bad)
    assert "threads" not in FinetuneSettings(threads=2).ultralytics_args()  # not an Ultralytics argument


def test_mining_rounds_train_the_next_round_on_what_the_last_model_still_reports(world: Path, proxies: Path,
                                                                                 tmp_path: Path):
    """--rounds 2: round 2 mines round 1's model on the pool, continues from it with both proxy sets, and a
    resumed run reuses finished rounds."""
    import yaml

    from pipeline.finetune.training_run import FinetuneJob, FinetuneSettings
    from pipeline.finetune.workflow import run_finetune

    out = tmp_path / "rounds"
    job = FinetuneJob(model=str(default_model()), id_spec=str(world / "id/train"), proxies=[str(proxies)], out=out,
                      val_spec=str(world / "id/val"), ood_specs=[str(world / "ood/near_test")], proxy_ratio=0.5,
                      rounds=2, mine_pool=str(world / "ood/pool"), mine_count=4, mine_images=8,
                      mine_conf=0.05,
                      training=FinetuneSettings(epochs=1, batch=8, workers=0, threads=2, close_mosaic=0))
    summary = run_finetune(job)
    mined = out / "round-2" / "mined"
    manifest = json.loads((mined / "manifest.json").read_text())
    part = manifest["strategies"]["mined"]
    assert part["written"] == 4 and part["parameters"]["images_run"] == 8
    # mined with round 1's model, at the measurement's confidence; hosts from the ID training set only
    assert manifest["sources"]["model"]["path"] == str(out / "round-1" / "model.pt")
    assert summary["rounds"]["done"] == 2 and summary["rounds"]["mined_proxies"] == [str(mined)]
    round_two = json.loads((out / "round-2" / "round.json").read_text())
    assert str(mined) in round_two["training_set"]["proxy_sources"]
    assert str(proxies) in round_two["training_set"]["proxy_sources"]
    args = yaml.safe_load((out / "round-2" / "train" / "args.yaml").read_text())
    assert args["model"] == str(out / "round-1" / "model.pt")
    assert (out / "model.pt").read_bytes() == (out / "round-2" / "model.pt").read_bytes()
    assert set(summary["round_comparisons"]) == {"1", "2"}
    assert summary["comparison"] == summary["round_comparisons"]["2"]
    for name in ("round-1/comparison.json", "round-2/comparison.json", "comparison.json", "before/report.json"):
        assert (out / name).is_file(), name
    # resumed: both rounds are reused, nothing is trained or mined again
    stamp = (out / "round-2" / "model.pt").stat().st_mtime_ns
    again = run_finetune(job.model_copy(update={"resume": True}))
    assert (out / "round-2" / "model.pt").stat().st_mtime_ns == stamp
    assert again["round_comparisons"] == summary["round_comparisons"]
    assert not any(name.startswith("round_") or name == "train_s" for name in again["timings"])


def test_rounds_need_a_pool_to_mine(world: Path, proxies: Path, tmp_path: Path):
    from pipeline.finetune.training_run import FinetuneJob
    from pipeline.finetune.workflow import run_finetune

    job = FinetuneJob(model=str(default_model()), id_spec=str(world / "id/train"), proxies=[str(proxies)],
                      out=tmp_path / "x", rounds=2)
    with pytest.raises(GhostboxError, match="--mine-pool"):
        run_finetune(job)
    assert not (tmp_path / "x" / "round-1").exists()


def test_unknown_class_labels_the_pasted_regions(world: Path, proxies: Path, tmp_path: Path):
    from pipeline.detect.unknown_class import UNKNOWN_CLASS

    made = build_training_set(str(world / "id/train"), [proxies], tmp_path / "u", CLASSES, proxy_ratio=0.75, seed=0,
                              unknown_class=True)
    import yaml

    assert yaml.safe_load(made.data_yaml.read_text())["names"] == {**dict(enumerate(CLASSES)), 4: UNKNOWN_CLASS}
    manifest = json.loads((proxies / "manifest.json").read_text())
    pasted = {str((proxies / e["file"]).resolve()): len(e["pasted"]) for e in manifest["images"]}
    sources = dict(line.split("\t") for line in (tmp_path / "u/train/sources.txt").read_text().splitlines())
    seen = 0
    for link, source in sources.items():
        lines = (tmp_path / "u/train/labels" / f"{Path(link).stem}.txt").read_text().splitlines()
        unknown = [line for line in lines if line.split()[0] == "4"]
        if source in pasted:  # a proxy: its pasted regions, in YOLO form inside the image; backgrounds none
            assert len(unknown) == pasted[source]
            seen += len(unknown)
            assert all(0 < float(v) <= 1 for line in unknown for v in line.split()[1:])
        else:  # an ID image keeps its labels and gets no unknown box
            assert not unknown and lines
    assert seen > 0
    # the same set without the option: pasted regions are background, as before
    plain = build_training_set(str(world / "id/train"), [proxies], tmp_path / "p", CLASSES, proxy_ratio=0.75, seed=0)
    assert not any(line.startswith("4 ") for f in (tmp_path / "p/train/labels").iterdir()
                   for line in f.read_text().splitlines())
    assert plain.proxy_images == made.proxy_images


def test_a_model_with_an_unknown_class_detects_as_before_until_trained(world: Path, tmp_path: Path):
    import cv2

    from pipeline.detect.detector import Detector
    from pipeline.finetune.training_run import with_unknown_class

    grown = with_unknown_class(default_model(), tmp_path / "grown.pt")
    assert with_unknown_class(grown, tmp_path / "again.pt") == grown  # it has the class already
    before, after = Detector(model=str(default_model()), device="cpu"), Detector(model=str(grown), device="cpu")
    assert after.class_names == before.class_names and after.unknown_class == len(CLASSES)
    assert after.fingerprint()["unknown_class"] is True and "unknown_class" not in before.fingerprint()
    frames = [cv2.imread(str(p)) for p in sorted((world / "id/val/images").glob("*.jpg"))[:4]]
    for a, b in zip(before.detect(frames, conf=0.05), after.detect(frames, conf=0.05)):
        assert len(a) == len(b) and np.allclose(a.xyxy, b.xyxy) and np.allclose(a.logits, b.logits)
        assert b.logits.shape[1] == len(CLASSES)
    assert after.unknown_boxes == 0


def test_unknown_class_boxes_are_dropped_and_counted(tmp_path: Path):
    """A grown model whose unknown class always wins: every box it reports is dropped, and counted."""
    import torch

    from pipeline.detect.detector import Detector
    from pipeline.finetune.training_run import with_unknown_class
    from pipeline.ultralytics_env import import_ultralytics

    import_ultralytics()
    from ultralytics import YOLO

    grown = with_unknown_class(default_model(), tmp_path / "grown.pt")
    yolo = YOLO(str(grown))
    for branch in yolo.model.model[-1].cv3:
        with torch.no_grad():
            branch[-1].bias[-1] = 20.0  # sigmoid ~ 1 everywhere, above every ID class
    yolo.save(str(tmp_path / "unknown-wins.pt"))
    detector = Detector(model=str(tmp_path / "unknown-wins.pt"), device="cpu")
    frame = np.full((320, 320, 3), 127, np.uint8)
    [dets] = detector.detect([frame])
    assert len(dets) == 0 and detector.unknown_boxes > 0


def test_unknown_class_finetune_end_to_end(world: Path, proxies: Path, tmp_path: Path):
    """--unknown-class through the CLI: the model trains with the extra class, ghostbox sees only the ID ones."""
    out = tmp_path / "unknown"
    cmd = [sys.executable, "-m", "pipeline", "finetune", "--id", str(world / "id/train"),
           "--val", str(world / "id/val"), "--ood", str(world / "ood/near_test"), "--proxies", str(proxies),
           "--unknown-class", "--filter-method", "energy", "--epochs", "1", "--batch", "8", "--workers", "0",
           "--proxy-ratio", "0.5", "--threads", "2", "--close-mosaic", "0", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import yaml

    from pipeline.detect.detector import Detector
    from pipeline.detect.unknown_class import UNKNOWN_CLASS
    from pipeline.filter.filter_file import load_filter

    trained_with = yaml.safe_load((out / "data" / "data.yaml").read_text())
    assert list(trained_with["names"].values()) == [*CLASSES, UNKNOWN_CLASS]
    tuned = Detector(model=str(out / "model.pt"), device="cpu")
    assert tuned.class_names == CLASSES and tuned.unknown_class == len(CLASSES)
    load_filter(out / "filters" / "finetuned.filter.safetensors").check_detector(tuned.fingerprint())
    summary = json.loads((out / "finetune.json").read_text())
    assert summary["method"]["unknown_class"] is True and "near_test" in summary["comparison"]["ood"]
    # the eval reports count what the open-set model called unknown; the original model has no such class
    after = json.loads((out / "after" / "report.json").read_text())["ood"]["near_test"]
    before = json.loads((out / "before" / "report.json").read_text())["ood"]["near_test"]
    assert isinstance(after["unknown_boxes"], int) and after["unknown_boxes"] >= 0 and before["unknown_boxes"] is None
