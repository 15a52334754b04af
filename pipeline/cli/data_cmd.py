"""`ghostbox data`: inspect datasets and convert BDD-100K to an Ultralytics dataset."""

from __future__ import annotations

import argparse

from pipeline.cli.settings_args import add_setting
from pipeline.data import BDD10, LoadWarnings, convert_bdd_to_yolo, parse_dataset_spec
from pipeline.data.convert import LINK_MODES
from pipeline.errors import GhostboxError


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("data", help="dataset tools (info, convert)")
    which = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    info = which.add_parser("info", help="load a dataset spec and print its size, classes and warnings")
    info.add_argument("spec", metavar="SPEC")
    info.set_defaults(handler=run_info)
    convert = which.add_parser("convert", help="BDD-100K labels -> Ultralytics YOLO dataset (10 classes)")
    convert.add_argument("--train", metavar="LABELS_JSON", help="BDD det_20 train labels (det_train.json)")
    convert.add_argument("--val", metavar="LABELS_JSON", help="BDD det_20 val labels (det_val.json)")
    convert.add_argument("--train-images", help="image folder of the train split (default: BDD layout)")
    convert.add_argument("--val-images", help="image folder of the val split (default: BDD layout)")
    convert.add_argument("--classes", help="comma-separated class subset/order (default: BDD's 10 classes)")
    add_setting(convert, "--link", model=convert_bdd_to_yolo, field="link", choices=LINK_MODES,
                help="how images get into the dataset")
    convert.add_argument("--overwrite", action="store_true")
    convert.add_argument("--out", "-o", required=True)
    convert.set_defaults(handler=run_convert)


def run_info(args: argparse.Namespace) -> int:
    dataset = parse_dataset_spec(args.spec)
    boxes = dataset.num_boxes()
    print(dataset.summary())
    print(f"{len(dataset)} images, {boxes} boxes, classes: {', '.join(dataset.class_names)}")
    for line in dataset.warnings.lines():
        print(f"warning: {line}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    labels = {k: v for k, v in (("train", args.train), ("val", args.val)) if v}
    if not labels:
        raise GhostboxError("give --train and/or --val BDD label files")
    images = {k: v for k, v in (("train", args.train_images), ("val", args.val_images)) if v and k in labels}
    classes = tuple(c.strip() for c in args.classes.split(",")) if args.classes else BDD10
    warnings = LoadWarnings()
    data_yaml = convert_bdd_to_yolo(labels, images or None, args.out, class_names=classes, overwrite=args.overwrite,
                                    warnings=warnings, **({"link": args.link} if args.link else {}))
    print(f"wrote {data_yaml}")
    for line in warnings.lines():
        print(f"warning: {line}")
    return 0
