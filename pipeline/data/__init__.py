"""Ground-truth datasets: BDD-100K, COCO instances and Ultralytics YOLO layouts.

Every loader returns a ``Dataset``: a lazy sequence of ``ImageRecord`` (boxes, classes,
crowd flags; no pixels) over compact label arrays, with a ``warnings`` tally of what was
fixed or skipped. ``parse_dataset_spec`` turns a CLI string into one; ``load_image``
reads the pixels of a record.
"""

from pipeline.data.bdd import BDD10, load_bdd
from pipeline.data.coco import load_coco, to_coco_dict
from pipeline.data.convert import convert_bdd_to_yolo, write_yolo_dataset
from pipeline.data.dataset import Dataset
from pipeline.data.images import load_image, read_image_size
from pipeline.data.records import ImageRecord, LoadWarnings
from pipeline.data.spec import exclude_images, parse_dataset_spec, split_dataset_spec
from pipeline.data.yolo import load_yolo

__all__ = [
    "BDD10",
    "Dataset",
    "ImageRecord",
    "LoadWarnings",
    "convert_bdd_to_yolo",
    "exclude_images",
    "load_bdd",
    "load_coco",
    "load_image",
    "load_yolo",
    "parse_dataset_spec",
    "read_image_size",
    "split_dataset_spec",
    "to_coco_dict",
    "write_yolo_dataset",
]
