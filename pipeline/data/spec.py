"""Dataset specs: the one string the CLI takes to name a ground-truth image set.

Grammar::

    SPEC    := [TYPE ":"] PATH [":" SPLIT] {":" KEY "=" VALUE}
    TYPE    := "bdd" | "coco" | "yolo"
    KEY     := "images" | "name" | "exclude" | "strict" | "size" | "classes" | "split"

Examples::

    bdd:/data/bdd100k/labels/det_20/det_val.json
    bdd:/data/bdd/det_val.json:images=/data/bdd/val:size=1280x720
    coco:/data/vos/instances_val2017_ood_rm_overlap.json:exclude=audit/contaminated.txt
    yolo:/data/world/data.yaml:val
    runs/world/ood_far                      (a folder: detected, see below)
    /data/world/labels.json:name=world-id:classes=pedestrian,car,traffic light,traffic sign

- PATH may contain colons: options start only at ``:KEY=`` with one of the keys above,
  and SPLIT only right after a path ending in ``.yaml``/``.yml``. A PATH that exists as
  written is never split. Option values run to the next ``:KEY=``.
- Without TYPE the format is detected: a ``.json`` whose first character is ``[`` is BDD,
  ``{`` is COCO; ``.yaml``/``.yml`` is YOLO; a folder holding ``labels.json`` (our
  synthetic worlds: DIR/labels.json + DIR/images/) is BDD, ``instances.json`` is COCO,
  ``data.yaml`` is YOLO.
- ``images=DIR`` sets the image folder (defaults: see the loaders). ``name=`` renames the
  dataset in reports. ``exclude=FILE`` drops the images listed in FILE (see
  ``exclude_images``). ``strict=false`` counts unknown categories instead of failing.
  ``size=WxH`` gives BDD images a size without reading them. ``classes=a,b,c`` picks and
  orders the classes. ``split=`` is the YOLO split (default ``val``), same as ``:SPLIT``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.data.bdd import BDD10, load_bdd
from pipeline.data.coco import load_coco
from pipeline.data.dataset import Dataset
from pipeline.data.jsonio import first_json_char, read_text
from pipeline.data.yolo import load_yolo
from pipeline.errors import GhostboxError

DATASET_TYPES = ("bdd", "coco", "yolo")
SPEC_KEYS = ("images", "name", "exclude", "strict", "size", "classes", "split")
_OPTION_START = re.compile(r":(?=(?:{})=)".format("|".join(SPEC_KEYS)))
_TYPE_PREFIX = re.compile(r"([A-Za-z][A-Za-z0-9_+-]*):(.*)", re.DOTALL)
_YAML_SPLIT = re.compile(r"(.+\.ya?ml):([A-Za-z0-9_.-]+)", re.IGNORECASE)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_dataset_spec(spec: str, *, class_names: Sequence[str] | None = None,
                       strict: bool = True) -> Dataset:
    """Load the dataset a spec string names (grammar in the module docstring).

    ``class_names`` and ``strict`` are defaults that the spec's ``classes=`` and
    ``strict=`` override. BDD specs default to the 10 BDD classes.
    """
    kind, path, options = split_dataset_spec(spec)
    if not path.exists():
        hint = ""
        if re.search(r":[A-Za-z_]+=", str(path)):
            hint = f" (options are {', '.join(k + '=' for k in SPEC_KEYS)})"
        raise GhostboxError(f"dataset spec {spec!r}: {path} not found{hint}")
    if kind is None:
        kind, path, detected_images = _detect(path, spec)
        if detected_images is not None and "images" not in options:
            options["images"] = str(detected_images)
    elif path.is_dir():
        raise GhostboxError(f"dataset spec {spec!r}: {path} is a folder; give the {kind} "
                            "label file, or drop the type to detect it")

    strict = _parse_bool(options.pop("strict"), spec) if "strict" in options else strict
    if "classes" in options:
        class_names = [c.strip() for c in options.pop("classes").split(",") if c.strip()]
        if not class_names:
            raise GhostboxError(f"dataset spec {spec!r}: 'classes=' lists no class")
    images = options.pop("images", None)
    name = options.pop("name", None)
    exclude = options.pop("exclude", None)
    size = _parse_size(options.pop("size"), spec) if "size" in options else None
    split = options.pop("split", None)
    if size is not None and kind != "bdd":
        raise GhostboxError(f"dataset spec {spec!r}: 'size=' applies to bdd only "
                            f"({kind} files give sizes or read them from the images)")
    if split is not None and kind != "yolo":
        raise GhostboxError(f"dataset spec {spec!r}: a split applies to yolo data.yaml only")
    if images is not None and kind == "yolo":
        raise GhostboxError(f"dataset spec {spec!r}: 'images=' does not apply to yolo "
                            "(data.yaml names the image folders)")

    if kind == "bdd":
        dataset = load_bdd(path, images, class_names=class_names or BDD10, strict=strict,
                           image_size=size, name=name)
    elif kind == "coco":
        dataset = load_coco(path, images, class_names=class_names, strict=strict, name=name)
    else:
        dataset = load_yolo(path, split or "val", class_names=class_names, strict=strict,
                            name=name)
    if exclude is not None:
        dataset = exclude_images(dataset, exclude)
    return dataset


def split_dataset_spec(spec: str) -> tuple[str | None, Path, dict[str, str]]:
    """Split a spec into (type or None, path, options) without touching the data."""
    if not isinstance(spec, str) or not spec.strip():
        raise GhostboxError(f"dataset spec {spec!r}: empty")
    spec = spec.strip()
    kind = None
    rest = spec
    prefix = _TYPE_PREFIX.fullmatch(spec)
    if prefix and not Path(spec).exists():
        word = prefix.group(1)
        if word.lower() in DATASET_TYPES:
            kind, rest = word.lower(), prefix.group(2)
        elif not Path(_OPTION_START.split(spec)[0]).exists():
            raise GhostboxError(f"dataset spec {spec!r}: unknown dataset type {word!r} "
                                f"(expected {', '.join(t + ':' for t in DATASET_TYPES)} "
                                "or a path)")
    if not rest.strip():
        raise GhostboxError(f"dataset spec {spec!r}: no path")
    if Path(rest).exists():
        return kind, Path(rest), {}
    pieces = _OPTION_START.split(rest)
    path_text, options = pieces[0], {}
    for piece in pieces[1:]:
        key, _, value = piece.partition("=")
        if key in options:
            raise GhostboxError(f"dataset spec {spec!r}: option {key!r} given twice")
        if not value:
            raise GhostboxError(f"dataset spec {spec!r}: option {key!r} has no value")
        options[key] = value
    split = _YAML_SPLIT.fullmatch(path_text)
    if split and not Path(path_text).exists():
        path_text = split.group(1)
        if "split" in options:
            raise GhostboxError(f"dataset spec {spec!r}: split given twice")
        options["split"] = split.group(2)
    if not path_text:
        raise GhostboxError(f"dataset spec {spec!r}: no path")
    return kind, Path(path_text).expanduser(), options


def exclude_images(dataset: Dataset, exclude_file: str | Path) -> Dataset:
    """A view of ``dataset`` without the images listed in ``exclude_file``.

    The file holds image file names one per line (blank lines and ``#`` comments
    skipped) or a JSON list of names. A name matches a record's ``file_name`` exactly, or
    its last path component when it has no folder part. The result's warnings count
    ``image_excluded`` and ``exclude_not_found`` (listed names that matched nothing).
    """
    exclude_file = Path(exclude_file)
    names = _read_name_list(exclude_file)
    wanted = set(names)
    wanted_basenames = {n for n in wanted if "/" not in n}
    keep = []
    matched: set[str] = set()
    for k, file_name in enumerate(dataset.file_names()):
        base = file_name.rsplit("/", 1)[-1]
        if file_name in wanted:
            matched.add(file_name)
        elif base in wanted_basenames:
            matched.add(base)
        else:
            keep.append(k)
    result = dataset.select(np.asarray(keep, dtype=np.int64))
    excluded = len(dataset) - len(keep)
    result.warnings.add("image_excluded", str(exclude_file), excluded)
    for name in sorted(wanted - matched):
        result.warnings.add("exclude_not_found", name)
    return result


def _read_name_list(path: Path) -> list[str]:
    text = read_text(path)
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GhostboxError(f"{path}: invalid JSON at line {exc.lineno} column "
                                f"{exc.colno}: {exc.msg}") from None
        bad = next((n for n in names if not isinstance(n, str)), None)
        if bad is not None:
            raise GhostboxError(f"{path}: expected a list of file names, found {bad!r}")
        return [n.strip() for n in names if n.strip()]
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _detect(path: Path, spec: str) -> tuple[str, Path, Path | None]:
    """(type, label file, image folder or None) for a path given without a type."""
    if path.is_dir():
        for file_name, kind in (("labels.json", "bdd"), ("instances.json", "coco"),
                                ("data.yaml", "yolo")):
            if (path / file_name).is_file():
                images = path / "images" if kind != "yolo" else None
                return kind, path / file_name, images
        raise GhostboxError(f"dataset spec {spec!r}: folder {path} holds none of labels.json "
                            "(bdd), instances.json (coco), data.yaml (yolo)")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yolo", path, None
    if suffix == ".json":
        first = first_json_char(path)
        if first == "[":
            return "bdd", path, None
        if first == "{":
            return "coco", path, None
        raise GhostboxError(f"dataset spec {spec!r}: {path} starts with {first!r}, expected a "
                            "JSON list (bdd) or object (coco)")
    raise GhostboxError(f"dataset spec {spec!r}: cannot tell the format of {path}; prefix it "
                        f"with {', '.join(t + ':' for t in DATASET_TYPES)}")


def _parse_bool(value: str, spec: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise GhostboxError(f"dataset spec {spec!r}: strict={value!r}, expected true or false")


def _parse_size(value: str, spec: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)[xX](\d+)", value.strip())
    if not match or int(match.group(1)) == 0 or int(match.group(2)) == 0:
        raise GhostboxError(f"dataset spec {spec!r}: size={value!r}, expected WIDTHxHEIGHT "
                            "like 1280x720")
    return int(match.group(1)), int(match.group(2))
