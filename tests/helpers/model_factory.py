"""Small Ultralytics detection checkpoints for tests, made offline from architecture yamls.

Pretrained weights cannot be downloaded here. An untrained model is useless for parity
tests (its activations vanish and every score sits at ~1e-5), so the factory gives it
batch-norm statistics from image-like inputs and shifts the class biases so that about one
anchor in a hundred passes conf 0.25: enough boxes for NMS to work on, few enough to
keep them apart.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

import pipeline  # noqa: F401 - Ultralytics' offline environment first
from pipeline.ultralytics_env import import_ultralytics


def natural_images(count: int, sizes: list[tuple[int, int]], seed: int = 0) -> list[np.ndarray]:
    """Smooth noise with a few filled shapes: closer to photographs than white noise."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        height, width = sizes[i % len(sizes)]
        noise = rng.random((height // 8 + 1, width // 8 + 1, 3)) * 255
        image = cv2.resize(noise.astype(np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)
        for _ in range(4):
            x1, y1 = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
            x2, y2 = x1 + int(rng.integers(10, width // 3)), y1 + int(rng.integers(10, height // 3))
            color = tuple(int(c) for c in rng.integers(0, 255, 3))
            cv2.rectangle(image, (x1, y1), (x2, y2), color, -1)
        images.append(image)
    return images


def _images_tensor(count: int, shape: tuple[int, int], seed: int) -> torch.Tensor:
    images = natural_images(count, [shape], seed)
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).flip(1).float() / 255
    return batch


def _best_logits(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Per image, the best class logit of every anchor (one-to-many branch)."""
    with torch.no_grad():
        decoded = model(images)[0]
    best = decoded[:, 4:].amax(1).clamp(1e-6, 1 - 1e-6)
    return torch.log(best / (1 - best))


def make_checkpoint(arch: str, path: Path, nc: int = 4, seed: int = 0, imgsz: int = 320,
                    pass_fraction: float = 0.03) -> Path:
    import_ultralytics()
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    torch.manual_seed(seed)
    model = DetectionModel(yaml_model_load(arch), nc=nc, verbose=False)
    model.names = {i: name for i, name in enumerate(["pedestrian", "car", "traffic light", "traffic sign"][:nc])}
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the calibration batches
            module.reset_running_stats()
    model.train()
    shapes = [(imgsz * 4 // 5 // 32 * 32, imgsz)]  # 4:3 frames letterboxed to imgsz
    with torch.no_grad():
        for i in range(4):
            for shape in shapes:
                model(_images_tensor(8, shape, seed + 100 * i))
    model.eval()
    head = model.model[-1]
    model.end2end = False  # calibrate on the one-to-many branch; the one-to-one starts as its copy
    # Untrained models swing a lot between images: calibrate on the median image.
    quantiles = [
        float(torch.quantile(row, 1 - pass_fraction))
        for shape in shapes
        for row in _best_logits(model, _images_tensor(8, shape, seed + 10))
    ]
    shift = math.log(0.25 / 0.75) - float(np.median(quantiles))
    branches = [head.cv3] + ([head.one2one_cv3] if getattr(head, "one2one_cv3", None) is not None else [])
    with torch.no_grad():
        for branch in branches:
            for level in branch:
                level[-1].bias += shift
    model.args = {"imgsz": imgsz, "task": "detect"}
    model.task = "detect"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model, "train_args": {"imgsz": imgsz, "task": "detect"}}, path)
    return path
