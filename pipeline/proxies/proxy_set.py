"""One proxy set: the strategies that make its images and the writer that lays them out.

Layout of ``P`` (Ultralytics, so ``yolo:P/data.yaml:train`` or a training list can take it)::

    P/images/<strategy>_<index>.jpg
    P/labels/<strategy>_<index>.txt   the host's ID boxes (YOLO lines); empty for backgrounds
    P/data.yaml                       path, train: images, val: images, names
    P/manifest.json                   how each image was made (``pipeline.proxies.manifest``)

Strategies:

- ``background``: whole pool images without ID objects, with empty labels.
- ``paste``: pool crops and flagged crops pasted into ID training images.
- ``transform``: ID-object crops made non-ID (``id_transforms``) pasted into ID images.
- ``mined``: the detector's hallucinations on the pool (``mining``) pasted into ID images.

Pasted regions are never labelled and keep clear of ID objects (``placement``); the host's
ID labels are written as they are. Every random choice of image ``i`` of a strategy comes from
``numpy.random.default_rng([seed, strategy key, i])``, so an image does not depend on the
others, and the same seed and inputs give the same files.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.box_geometry import pixel_box
from pipeline.data import Dataset, ImageRecord, load_image, parse_dataset_spec
from pipeline.data.convert import yolo_label_text
from pipeline.detect.config import DetectorConfig
from pipeline.errors import GhostboxError
from pipeline.proxies import id_transforms
from pipeline.proxies.blend import paste
from pipeline.proxies.manifest import ProxyImage, ProxyManifest
from pipeline.proxies.mining import MATCH_IOU, MiningResult, mine_hard_negatives
from pipeline.proxies.outlier_sources import (
    BoxCrop,
    BoxCrops,
    CropDrawer,
    Cut,
    ImageCache,
    OutlierPool,
    RandomCrops,
    load_flagged,
    open_pool,
)
from pipeline.proxies.placement import IdBoxPrior, PlacementRules, find_spot

STRATEGIES = ("background", "paste", "transform", "mined")
# Fixed per strategy, so adding a strategy to a run does not change the images of the others.
_STREAM_KEY = {"background": 1, "paste": 2, "transform": 3, "mined": 4}
PRIOR_IMAGES = 2000  # ID images whose boxes give sizes and ID crops; spread over the whole set
HOST_TRIES = 5  # hosts tried for one output image before giving up on it
MIN_ID_CROP_SIDE = 8
JPEG_QUALITY = 95


def _names(value: Any) -> Any:
    """A comma-separated string (a flag's value) as a tuple of names; anything else as it is."""
    if isinstance(value, str):
        return tuple(s.strip() for s in value.split(",") if s.strip())
    return value


class ProxySettings(BaseModel):
    """What one proxy set is made of; validated when made (errors name the field and the value)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id_spec: str = Field(description="labelled ID training set (dataset SPEC): host images and ID boxes")
    out: Path = Field(description="proxy-set folder (must be empty, or overwrite)")
    strategies: tuple[str, ...] = Field(description=f"comma-separated, of: {', '.join(STRATEGIES)}")
    count: int = Field(100, ge=1, description="images per strategy")
    seed: int = Field(0, ge=0, description="seed of every random choice")
    pool: str | None = Field(None, description="outlier pool: a labelled set whose non-ID boxes are crops (COCO "
                             '"ood" categories), or a folder of images without ID objects')
    flagged: str | None = Field(None, description="flagged-crop archive of `ghostbox run` (OUT or OUT/flagged)")
    rules: PlacementRules = Field(default_factory=PlacementRules, description="where pasted regions may go")
    max_pastes: int = Field(3, ge=1, description="pasted regions per image, 1..N")
    conf: float = Field(DetectorConfig.model_fields["conf"].default, ge=0.0, le=1.0,
                        description="confidence of the detector's boxes for `mined`")
    mine_images: int = Field(500, ge=1, description="pool images the detector runs on for `mined` (a seeded "
                             "sample)")
    transforms: tuple[str, ...] = Field(id_transforms.DEFAULT_TRANSFORMS, description="comma-separated ID "
                                        f"transforms for `transform`, of: {', '.join(id_transforms.TRANSFORMS)}")
    feather: float = Field(0.15, ge=0.0, description="feathered rim of a paste, as a fraction of its "
                           "short side")
    color_match: float = Field(0.5, ge=0.0, le=1.0, description="how far a paste's colours move towards its host's")
    flip: float = Field(0.5, ge=0.0, le=1.0, description="chance of mirroring a pasted crop")
    overwrite: bool = Field(False, description="replace the proxy set in a non-empty out folder")

    @field_validator("strategies", mode="before")
    @classmethod
    def _strategies(cls, value: Any) -> Any:
        names = _names(value)
        if isinstance(names, (list, tuple)):
            names = tuple(str(s).strip().lower() for s in names)
            if not names:
                raise ValueError(f"none given; choose from {', '.join(STRATEGIES)}")
            unknown = [s for s in names if s not in STRATEGIES]
            if unknown:
                raise ValueError(f"unknown {', '.join(unknown)}; choose from {', '.join(STRATEGIES)}")
            if len(set(names)) != len(names):
                raise ValueError(f"{','.join(names)} names a strategy twice")
        return names

    @field_validator("transforms", mode="before")
    @classmethod
    def _transforms(cls, value: Any) -> Any:
        names = _names(value)
        if isinstance(names, (list, tuple)):
            unknown = [t for t in names if t not in id_transforms.TRANSFORMS]
            if unknown or not names:
                raise ValueError(f"{'unknown ' + ', '.join(unknown) if unknown else 'none given'}; choose from "
                                 f"{', '.join(id_transforms.TRANSFORMS)}")
        return names


def parse_strategies(text: str) -> tuple[str, ...]:
    return tuple(s.strip().lower() for s in text.split(",") if s.strip())


_OUR_FILE = re.compile(r"({})_\d{{6}}\.(jpg|txt)".format("|".join(STRATEGIES)))


def check_out_folder(out: Path, overwrite: bool) -> None:
    """Refuse a folder that holds anything, unless told to replace a proxy set (checked before any work).

    Even with ``overwrite``, images/ and labels/ that this command did not write are refused:
    ``--out`` pointed at a dataset by mistake must not delete it.
    """
    if out.exists() and not out.is_dir():
        raise GhostboxError(f"--out {out}: exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise GhostboxError(f"--out {out}: folder is not empty; pass --overwrite to replace the proxy set there")
    foreign = [p for name in ("images", "labels") if (out / name).is_dir()
               for p in (out / name).iterdir() if not _OUR_FILE.fullmatch(p.name)]
    if foreign:
        raise GhostboxError(f"--out {out}: {foreign[0]} was not written by `ghostbox proxies`; not replacing "
                            "that folder even with --overwrite (choose another --out)")


class ProxySetWriter:
    """Writes images and label files as they come, then data.yaml, then the manifest (last)."""

    def __init__(self, out: Path, overwrite: bool) -> None:
        check_out_folder(out, overwrite)
        self.out = out
        # The old manifest goes first: if this run dies, no manifest describes a half-replaced set.
        (out / "manifest.json").unlink(missing_ok=True)
        for name in ("images", "labels"):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
        # labels.cache: Ultralytics' parse of the old labels; manifest.json.tmp: a run that died writing it
        for name in ("data.yaml", "labels.cache", "manifest.json.tmp"):
            (out / name).unlink(missing_ok=True)
        (out / "images").mkdir(parents=True)
        (out / "labels").mkdir()

    def write(self, stem: str, image: np.ndarray | bytes, label_text: str) -> tuple[str, str]:
        if isinstance(image, np.ndarray):
            ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise GhostboxError(f"{stem}: JPEG encoding failed")
            image = encoded.tobytes()
        (self.out / "images" / f"{stem}.jpg").write_bytes(image)
        (self.out / "labels" / f"{stem}.txt").write_text(label_text, encoding="utf-8")
        return f"images/{stem}.jpg", f"labels/{stem}.txt"

    def finish(self, manifest: ProxyManifest) -> None:
        content = {"path": str(self.out.resolve()), "train": "images", "val": "images",
                   "names": dict(enumerate(manifest.class_names))}
        (self.out / "data.yaml").write_text(
            "# Proxy set written by `ghostbox proxies`; manifest.json says how each image was made.\n"
            + yaml.safe_dump(content, sort_keys=False, allow_unicode=True), encoding="utf-8")
        manifest.write(self.out / "manifest.json")


def spread_indices(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n) (all of them when k >= n): no RNG, same for every seed."""
    if n <= k:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))


@dataclass
class _IdCrops:
    """Boxes of ID objects big enough to transform, with their class ids."""

    crops: list[BoxCrop]
    class_ids: np.ndarray

    @classmethod
    def from_records(cls, records: Sequence[ImageRecord], class_names: Sequence[str]) -> _IdCrops:
        crops, classes = [], []
        for record in records:
            if not record.width or not record.height:
                continue
            for k in np.flatnonzero(~record.crowd):
                box = pixel_box(record.boxes_xyxy[k], record.width, record.height)
                if min(box[2] - box[0], box[3] - box[1]) < MIN_ID_CROP_SIDE:
                    continue
                class_id = int(record.class_ids[k])
                crops.append(BoxCrop(record.path, box, {"kind": "id", "file": record.file_name, "box": list(box),
                                                        "label": class_names[class_id]}))
                classes.append(class_id)
        return cls(crops, np.asarray(classes, np.int64))


@dataclass
class ProxySetResult:
    out: Path
    manifest: ProxyManifest
    notes: list[str]


class ProxySetBuilder:
    """Loads and checks the inputs (nothing written yet), mines when asked, then writes the set."""

    def __init__(self, settings: ProxySettings, detector: Any | None = None) -> None:
        check_out_folder(Path(settings.out), settings.overwrite)  # before the slow parts, not after them
        self.settings = settings
        self.detector = detector
        self.images = ImageCache()
        self.notes: list[str] = []
        model_names = list(detector.class_names) if detector is not None else None
        self.id_set: Dataset = parse_dataset_spec(settings.id_spec, class_names=model_names)
        if not len(self.id_set):
            raise GhostboxError(f"--id {settings.id_spec}: the ID set has no images")
        sample = [self.id_set[i] for i in spread_indices(len(self.id_set), PRIOR_IMAGES)]
        self.prior = IdBoxPrior.from_records(sample)
        self.id_crops = _IdCrops.from_records(sample, self.id_set.class_names)
        self.id_textures = RandomCrops([(r.file_name, r.path) for r in sample], kind="id_random")
        if model_names is None:
            used = set(np.concatenate([r.class_ids for r in sample]).tolist()) if sample else set()
            unused = [n for k, n in enumerate(self.id_set.class_names) if k not in used]
            if unused:
                self.notes.append(
                    f"the ID set's classes {', '.join(unused)} have no box in the {len(sample)} images looked at; "
                    f"data.yaml lists all {len(self.id_set.class_names)} classes (choose them with classes= in the "
                    "ID spec, or pass --model to use the model's)")
        self.pool: OutlierPool | None = open_pool(settings.pool, self.id_set.class_names) if settings.pool else None
        self.flagged: BoxCrops | None = None
        self.review: dict[str, int] = {}
        if settings.flagged:
            self.flagged, missing, self.review = load_flagged(settings.flagged)
            if missing:
                self.notes.append(f"--flagged: {missing} crops listed in the index are missing; skipped")
            if self.review["left_out_real"] or self.review["confirmed_tracks"]:
                self.notes.append(
                    f"--flagged: the run's review: {self.review['confirmed_tracks']} track(s) confirmed "
                    f"hallucinations ({self.review['confirmed_crops']} of their crops added from tracks/), "
                    f"{self.review['left_out_real']} crop(s) of tracks confirmed real left out")
        self._check_requirements()
        self.mining: MiningResult | None = None
        self._background_order: np.ndarray | None = None

    def _check_requirements(self) -> None:
        s = self.settings
        if "background" in s.strategies:
            if self.pool is None:
                raise GhostboxError("background: needs --pool (images without ID objects, used whole)")
            if not self.pool.backgrounds:
                raise GhostboxError(f"background: every image of --pool {s.pool} holds an ID object")
            if s.count > len(self.pool.backgrounds):
                self.notes.append(f"background: {s.count} images from {len(self.pool.backgrounds)} pool images "
                                  "without ID objects: some repeat")
        if "paste" in s.strategies and not self.paste_groups():
            raise GhostboxError("paste: no outlier crops to paste; give --pool (a labelled pool with non-ID boxes, "
                                "or a folder of images) and/or --flagged (a `ghostbox run` flagged archive)")
        if "transform" in s.strategies and not len(self.id_crops.crops):
            raise GhostboxError(f"transform: the ID set {s.id_spec} has no box of at least {MIN_ID_CROP_SIDE} px "
                                "to transform")
        if "mined" in s.strategies and (self.detector is None or self.pool is None):
            raise GhostboxError("mined: needs --model (the detector to mine with) and --pool (the images to run "
                                "it on)")

    def paste_groups(self) -> list[CropDrawer]:
        groups: list[CropDrawer] = []
        if self.pool is not None and len(self.pool.crops):
            groups.append(self.pool.crops)
        if self.flagged is not None and len(self.flagged):
            groups.append(self.flagged)
        return groups

    @property
    def needs_mining(self) -> bool:
        return "mined" in self.settings.strategies and self.mining is None

    @property
    def mining_images(self) -> int:
        return min(len(self.pool.images), self.settings.mine_images) if self.pool is not None else 0

    def mine(self, advance: Callable[[int], None] | None = None) -> None:
        assert self.detector is not None and self.pool is not None
        self.mining = mine_hard_negatives(self.detector, self.pool, conf=self.settings.conf,
                                          max_images=self.settings.mine_images, seed=self.settings.seed,
                                          advance=advance)
        if not len(self.mining.crops):
            raise GhostboxError(
                f"mined: the detector reported no box outside the ID objects on {self.mining.images_run} pool images "
                f"at conf {self.settings.conf} ({self.mining.detections} boxes in all); lower --conf")

    def background(self, index: int) -> Any:
        """The pool image of background ``index``: a seeded permutation, so all are used before any repeats."""
        assert self.pool is not None
        backgrounds = self.pool.backgrounds
        if self._background_order is None:
            rng = np.random.default_rng([self.settings.seed, _STREAM_KEY["background"]])
            self._background_order = rng.permutation(len(backgrounds))
        return backgrounds[int(self._background_order[index % len(backgrounds)])]

    def write(self, advance: Callable[[int], None] | None = None) -> ProxySetResult:
        """Write every strategy's images, then data.yaml, then the manifest; ``advance(1)`` per image."""
        s = self.settings
        if self.needs_mining:
            self.mine()
        writer = ProxySetWriter(Path(s.out), s.overwrite)
        manifest = ProxyManifest(seed=s.seed, class_names=list(self.id_set.class_names), sources=self.sources(),
                                 placement=s.rules.model_dump(), notes=list(self.notes))
        for strategy in s.strategies:
            manifest.start_strategy(strategy, s.count, self.parameters(strategy))
            make = _background if strategy == "background" else _composite
            for index in range(s.count):
                make(self, writer, manifest, strategy, index)
                if advance is not None:
                    advance(1)
        writer.finish(manifest)
        return ProxySetResult(Path(s.out), manifest, list(self.notes))

    # -- the manifest's description of the inputs ---------------------------------------------------

    def sources(self) -> dict[str, Any]:
        s = self.settings
        model = None
        if self.detector is not None:
            model = {"path": str(self.detector.config.model), "weights_sha256": self.detector.info.weights_sha256,
                     "imgsz": self.detector.imgsz}
        flagged = None
        if self.flagged is not None:
            flagged = {"folder": s.flagged, "crops": len(self.flagged), "review": self.review}
        return {"id": s.id_spec, "id_images": len(self.id_set), "id_boxes_sampled": len(self.prior),
                "pool": self.pool.describe() if self.pool is not None else None, "flagged": flagged, "model": model}

    def parameters(self, strategy: str) -> dict[str, Any]:
        s = self.settings
        pasting = {"max_pastes": s.max_pastes, "feather": s.feather, "color_match": s.color_match, "flip": s.flip,
                   "host_tries": HOST_TRIES}
        if strategy == "background":
            return {"backgrounds": len(self.pool.backgrounds) if self.pool else 0}
        if strategy == "paste":
            return {**pasting, "groups": {g.kind: len(g) for g in self.paste_groups()},
                    "group_choice": "uniform over groups, then over crops"}
        if strategy == "transform":
            return {**pasting, "transforms": list(s.transforms), "id_crops": len(self.id_crops.crops),
                    "blend_weights": list(id_transforms.BLEND_WEIGHTS),
                    "cut_fractions": list(id_transforms.CUT_FRACTIONS),
                    "max_grid": id_transforms.MAX_GRID, "rim_fractions": list(id_transforms.RIM_FRACTIONS),
                    "outline_aspects": list(id_transforms.OUTLINE_ASPECTS),
                    "outline_exponents": list(id_transforms.OUTLINE_EXPONENTS),
                    "max_outline_iou": id_transforms.MAX_OUTLINE_IOU,
                    "content_fraction": id_transforms.CONTENT_FRACTION,
                    "textures": "pool" if self.pool is not None else "id_random"}
        assert self.mining is not None
        return {**pasting, "conf": s.conf, "mine_images": s.mine_images, "match_iou": MATCH_IOU,
                **self.mining.describe()}


def _rng(seed: int, strategy: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAM_KEY[strategy], index])


def build_proxy_set(settings: ProxySettings, detector: Any | None = None, *,
                    advance: Callable[[int], None] | None = None,
                    mining_advance: Callable[[int], None] | None = None) -> ProxySetResult:
    """Make the proxy set ``settings`` describes; ``detector`` (a ``Detector``) is needed for ``mined``.

    ``advance(n)`` is called as output images are done, ``mining_advance(n)`` as pool images
    are run through the detector.
    """
    builder = ProxySetBuilder(settings, detector)
    if builder.needs_mining:
        builder.mine(mining_advance)
    return builder.write(advance)


# -- strategies ---------------------------------------------------------------------------------------

def _background(builder: ProxySetBuilder, writer: ProxySetWriter, manifest: ProxyManifest, strategy: str,
                index: int) -> None:
    entry = builder.background(index)
    if entry.path.suffix.lower() in (".jpg", ".jpeg") and entry.path.is_file():
        image: np.ndarray | bytes = entry.path.read_bytes()  # already a JPEG: no second compression
    else:
        image = builder.images.get(entry.path)
    file, label = writer.write(f"{strategy}_{index:06d}", image, "")
    manifest.add_image(ProxyImage(file=file, label=label, strategy=strategy, host=None, id_boxes=0,
                                  background={"kind": "pool", "file": entry.file}))


def _composite(builder: ProxySetBuilder, writer: ProxySetWriter, manifest: ProxyManifest, strategy: str,
               index: int) -> None:
    """An ID image with 1..max_pastes unlabelled crops pasted where they cover no ID object."""
    s = builder.settings
    rng = _rng(s.seed, strategy, index)
    draw = {"paste": _draw_outlier, "transform": _draw_transformed, "mined": _draw_mined}[strategy]
    for _ in range(HOST_TRIES):
        host = builder.id_set[int(rng.integers(len(builder.id_set)))]
        image = load_image(host).copy()
        height, width = image.shape[:2]
        id_boxes = host.boxes_xyxy.astype(np.float64)  # crowd regions too: they hold ID objects
        wanted = int(rng.integers(1, s.max_pastes + 1))
        spots: list[np.ndarray] = []
        regions: list[dict[str, Any]] = []
        for _ in range(wanted):
            cut, transform = draw(builder, rng)
            spot = find_spot(rng, builder.prior, cut.pixels.shape[1] / cut.pixels.shape[0], width, height, id_boxes,
                             np.array(spots).reshape(-1, 4), s.rules)
            if spot is None:
                break  # the image is as full as it gets
            flipped = bool(rng.uniform() < s.flip)
            pixels, mask = cut.pixels, cut.mask
            if flipped:
                pixels, mask = pixels[:, ::-1], (mask[:, ::-1] if mask is not None else None)
            paste(image, pixels, spot, feather_fraction=s.feather, color_match=s.color_match, mask=mask)
            spots.append(spot)
            regions.append({"xyxy": spot.tolist(), "source": cut.source, "transform": transform,
                            "silhouette": mask is not None, "flipped": flipped})
        if regions:
            label_text = yolo_label_text(host.boxes_xyxy, host.class_ids, host.crowd, width, height)
            file, label = writer.write(f"{strategy}_{index:06d}", image, label_text)
            manifest.add_image(ProxyImage(file=file, label=label, strategy=strategy, host=host.file_name,
                                          id_boxes=int((~host.crowd).sum()), wanted_pastes=wanted, pasted=regions))
            return
        manifest.note_gave_up(strategy, index, host.file_name,
                              f"no spot clear of its ID boxes in {s.rules.tries} tries")


def _draw_outlier(builder: ProxySetBuilder, rng: np.random.Generator) -> tuple[Cut, None]:
    groups = builder.paste_groups()
    # Groups first, so a few flagged crops are not drowned by a large pool.
    group = groups[int(rng.integers(len(groups)))]
    return group.draw(rng, builder.images), None


def _draw_mined(builder: ProxySetBuilder, rng: np.random.Generator) -> tuple[Cut, None]:
    assert builder.mining is not None
    return builder.mining.crops.draw(rng, builder.images), None


def _draw_transformed(builder: ProxySetBuilder, rng: np.random.Generator) -> tuple[Cut, dict[str, Any]]:
    """An ID crop made non-ID; the Cut's source is the ID crop, the transform says what was done to it."""
    id_crops = builder.id_crops
    pick = int(rng.integers(len(id_crops.crops)))
    item = id_crops.crops[pick]
    crop = item.cut(builder.images).pixels
    name = builder.settings.transforms[int(rng.integers(len(builder.settings.transforms)))]
    if name == "cross_class_blend":
        partner = _other_class_crop(id_crops, pick, rng)
        if partner is not None:
            out, params = id_transforms.cross_class_blend(crop, partner.cut(builder.images).pixels, rng)
            return Cut(out, None, dict(item.source)), {**params, "other": dict(partner.source)}
        return _shuffled_instead(crop, item, rng, "cross_class_blend")  # one class only: nothing to blend with
    if name == "texture_swap":
        textures = builder.pool.crops if builder.pool is not None and len(builder.pool.crops) else builder.id_textures
        texture = textures.draw(rng, builder.images)
        context, box = item.context(builder.images)
        out, mask, params = id_transforms.texture_swap(context, box, texture.pixels, rng)
        return Cut(out, mask, dict(item.source)), {**params, "texture": texture.source}
    if name == "interior_swap":
        context, box = item.context(builder.images)
        partner = _other_class_crop(id_crops, pick, rng) if rng.uniform() < 0.5 else None
        swapped = id_transforms.interior_swap(context, box,
                                              partner.cut(builder.images).pixels if partner else None, rng)
        if swapped is not None:
            out, mask, params = swapped
            extra = {"other": dict(partner.source)} if partner else {}
            return Cut(out, mask, dict(item.source)), {**params, **extra}
        return _shuffled_instead(crop, item, rng, "interior_swap")  # too thin to have an inside
    if name == "framed_outlier":
        context, box = item.context(builder.images)
        pool = builder.pool.crops if builder.pool is not None and len(builder.pool.crops) else None
        if pool is not None:
            filling = pool.draw(rng, builder.images)
            framed = id_transforms.interior_swap(context, box, filling.pixels, rng, outlier=True)
            if framed is not None:
                out, mask, params = framed
                return Cut(out, mask, dict(item.source)), {**params, "filling": filling.source}
        return _shuffled_instead(crop, item, rng, "framed_outlier")  # no pool to frame, or too thin
    if name == "outline_swap":
        context, box = item.context(builder.images)
        partner = _other_class_crop(id_crops, pick, rng) if rng.uniform() < 0.5 else None
        outline = id_transforms.outline_of(*partner.context(builder.images)) if partner else None
        swapped = id_transforms.outline_swap(context, box, outline, rng)
        if swapped is not None:
            out, mask, params = swapped
            extra = {"other": dict(partner.source)} if partner and params["outline"] == "other_class" else {}
            return Cut(out, mask, dict(item.source)), {**params, **extra}
        return _shuffled_instead(crop, item, rng, "outline_swap")  # too thin to have an inside
    out, params = id_transforms.patch_shuffle(crop, rng)
    return Cut(out, None, dict(item.source)), params


def _shuffled_instead(crop: np.ndarray, item: Any, rng: np.random.Generator,
                      wanted: str) -> tuple[Cut, dict[str, Any]]:
    """The fallback of every transform that cannot apply: the crop patch-shuffled, saying what it replaces."""
    out, params = id_transforms.patch_shuffle(crop, rng)
    return Cut(out, None, dict(item.source)), {**params, "instead_of": wanted}


def _other_class_crop(id_crops: _IdCrops, pick: int, rng: np.random.Generator) -> Any:
    """A random ID crop of another class than crop ``pick``, or None when the set has one class."""
    others = np.flatnonzero(id_crops.class_ids != id_crops.class_ids[pick])
    return id_crops.crops[int(others[rng.integers(len(others))])] if len(others) else None
