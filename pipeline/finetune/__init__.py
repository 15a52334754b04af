"""Fine-tuning a detector with OoD proxies labelled as background (M-Hood), and the before/after comparison.

    data_yaml = build_training_set(id_spec, proxy_dirs, out / "data", class_names, proxy_ratio=0.5)
    weights   = train_detector(model, data_yaml, out / "train", FinetuneSettings(epochs=6))
    compare_reports(before, after) -> the figures `ghostbox finetune` writes
"""

from pipeline.finetune.comparison import compare_reports, write_comparison
from pipeline.finetune.training_run import FinetuneSettings, train_detector
from pipeline.finetune.training_set import TrainingSet, build_training_set

__all__ = ["FinetuneSettings", "TrainingSet", "build_training_set", "compare_reports", "train_detector",
           "write_comparison"]
