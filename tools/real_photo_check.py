"""A small check on real photos: what the street-world detector hallucinates on them, and what the filter does.

    .venv/bin/pip install scikit-image==0.26.0      # ships a dozen real photos inside its wheel
    .venv/bin/python tools/real_photo_check.py [--filter F ...] [--out runs/real-photos]

The bundled model knows only the drawn street world, so on real photos every box it reports
is a hallucination except where a real pedestrian or car is found (the astronaut is a
person; the motorcycle photo has none of the four classes). The check counts, per filter,
the boxes flagged, and writes annotated pictures to OUT/<filter>/ for a person to look at.
Real photos are far from the world the scores were fitted on: a filter that flags them all
is doing its job; one that keeps some shows where it fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PERSON_PHOTOS = {"astronaut"}  # photos whose main subject is an ID class (a person)


def photos() -> dict[str, object]:
    import cv2
    import numpy as np

    try:
        import skimage
    except ImportError:
        sys.exit("needs scikit-image: .venv/bin/pip install scikit-image==0.26.0")
    folder = Path(skimage.__file__).parent / "data"
    out = {}
    for path in sorted(folder.glob("*")):
        if path.suffix.lower() not in {".png", ".jpg"}:
            continue
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None or min(image.shape[:2]) < 128:
            continue
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if np.abs(image.astype(int) - gray[..., None]).max() < 8:  # grey pictures (text, cells...) say little
            continue
        out[path.stem] = image
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filter", action="append", help="filter files (default: the bundled one)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "real-photos")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import cv2

    from pipeline.bundled import default_model
    from pipeline.detect.detector import Detector
    from pipeline.filter.filter_file import box_features_needed, default_filter, load_filter
    from pipeline.sinks.annotate import annotate

    paths = args.filter or [str(default_filter())]
    images = photos()
    report = {"photos": sorted(images), "filters": {}}
    for path in paths:
        filt = load_filter(path)
        detector = Detector(model=str(default_model()), device="cpu", box_features=box_features_needed([path]))
        filt.check_detector(detector.fingerprint())
        rows = {}
        folder = args.out / Path(path).name.split(".")[0]
        folder.mkdir(parents=True, exist_ok=True)
        for name, image in images.items():
            [dets] = detector.detect([image])
            dets = filt.apply(dets)
            flags = dets.data["hallucination"]
            rows[name] = {"boxes": len(dets), "flagged": int(flags.sum()), "labels": dets.labels,
                          "conf": [round(float(c), 2) for c in dets.confidence]}
            cv2.imwrite(str(folder / f"{name}.png"), annotate(image, dets))
        others = [r for n, r in rows.items() if n not in PERSON_PHOTOS]
        boxes, flagged = sum(r["boxes"] for r in others), sum(r["flagged"] for r in others)
        report["filters"][path] = {"per_photo": rows, "hallucinations": boxes, "caught": flagged}
        print(f"{path}: on {len(others)} real photos without street objects the detector reported {boxes} boxes; "
              f"the filter flagged {flagged} ({100 * flagged / max(boxes, 1):.0f}%)")
        for name in sorted(PERSON_PHOTOS & set(rows)):
            r = rows[name]
            print(f"  {name} (a person): {r['boxes']} boxes {list(zip(r['labels'], r['conf']))},"
                  f" {r['flagged']} flagged")
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"annotated photos and report.json in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
