"""The crop model's network: a small CNN that looks at each box's pixels, not the detector's features.

The detector's box features collapse look-alikes onto the class they resemble (a bench called
a car sits among the cars); a second model trained on the crops themselves, at the frame's own
resolution, sees what the detector's 32-d head vector drops.

    x = letterbox(crop, size)                  keep the aspect ratio, pad with grey, RGB in [0, 1]
    z = net(x)                                 (K + 1) logits: the K ID classes and "not ID"
    trained with cross-entropy: ID crops -> their class, outlier crops -> K (outlier exposure
    as a (K + 1)-way classifier), each side weighing one half

Outlier crops: the detector's boxes on outlier data (a pool, proxy sets, reviewed hallucinations)
plus crops synthesised from the ID crops themselves (`SYNTH_KINDS`): patch-shuffled (right
colours and texture, wrong shape) and blends of two classes (an object between two classes).

The weights are plain float32 arrays (`state_arrays` / `load_arrays`): they go into the
filter's safetensors file, never a pickle. torch is imported when a crop model is used, so
filters without one stay numpy-only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from pipeline.errors import GhostboxError

log = logging.getLogger(__name__)

CROP_SIZE = 32  # px square the crops are letterboxed to
WIDTH = 32  # channels of the first conv block; 2x and 4x in the next two
SYNTH_KINDS = ("shuffle", "blend")
PAD_VALUE = 114  # grey, as Ultralytics' letterbox
GRID = 4  # patch-shuffle grid


def letterbox_crops(crops: Sequence[np.ndarray], size: int = CROP_SIZE) -> np.ndarray:
    """(N, 3, size, size) float32 RGB in [0, 1]: each BGR crop scaled to fit, centred on grey."""
    out = np.full((len(crops), size, size, 3), PAD_VALUE, np.uint8)
    for i, crop in enumerate(crops):
        if crop is None or crop.ndim != 3 or crop.shape[0] < 1 or crop.shape[1] < 1:
            continue  # an empty crop (a box on the frame's edge) stays grey
        h, w = crop.shape[:2]
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        resized = cv2.resize(crop[..., :3], (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        top, left = (size - nh) // 2, (size - nw) // 2
        out[i, top:top + nh, left:left + nw] = resized
    return np.ascontiguousarray(out[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def synth_outliers(x: np.ndarray, y: np.ndarray, kinds: Sequence[str], count: int,
                   rng: np.random.Generator) -> np.ndarray:
    """`count` outlier inputs per kind made from letterboxed ID inputs `x` (labels `y`)."""
    unknown = set(kinds) - set(SYNTH_KINDS)
    if unknown:
        raise GhostboxError(f"crop: unknown synthetic outlier kinds {sorted(unknown)}; known: {', '.join(SYNTH_KINDS)}")
    made = []
    n, _, size, _ = x.shape
    if n == 0 or count == 0:
        return np.zeros((0, *x.shape[1:]), np.float32)
    for kind in kinds:
        pick = rng.integers(n, size=count)
        if kind == "shuffle":
            step = size // GRID
            patches = x[pick].reshape(count, 3, GRID, step, GRID, step).transpose(0, 2, 4, 1, 3, 5)
            patches = patches.reshape(count, GRID * GRID, 3, step, step)
            order = np.argsort(rng.random((count, GRID * GRID)), axis=1)
            patches = np.take_along_axis(patches, order[:, :, None, None, None], axis=1)
            made.append(patches.reshape(count, GRID, GRID, 3, step, step).transpose(0, 3, 1, 4, 2, 5)
                        .reshape(count, 3, size, size))
        else:  # blend: two crops of different classes, half each
            other = rng.integers(n, size=count)
            differ = y[pick] != y[other]
            if not differ.any():
                continue
            pick, other = pick[differ], other[differ]
            made.append(0.5 * x[pick] + 0.5 * x[other])
    return np.concatenate(made).astype(np.float32) if made else np.zeros((0, *x.shape[1:]), np.float32)


def build_net(num_outputs: int, width: int = WIDTH) -> Any:
    import torch.nn as nn

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True)]

    return nn.Sequential(*block(3, width), nn.MaxPool2d(2), *block(width, 2 * width), nn.MaxPool2d(2),
                         *block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4 * width, num_outputs))


def train_net(x: np.ndarray, y: np.ndarray, num_outputs: int, width: int, epochs: int, seed: int,
              batch: int = 128, lr: float = 2e-3) -> dict[str, np.ndarray]:
    """Fit the CNN on inputs `x` (N, 3, S, S) with labels `y` (outliers = num_outputs - 1); class-balanced
    so each side (ID, outlier) weighs one half. Seeded; returns the weights as arrays."""
    import torch

    n_out = num_outputs - 1
    is_outlier = y == n_out
    weight = np.where(is_outlier, 0.5 / max(1, is_outlier.sum()), 0.5 / max(1, (~is_outlier).sum()))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_net(num_outputs, width)
        optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
        steps = max(1, epochs * (len(x) // batch + 1))
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
        # sampling by weight: every batch sees both sides in equal share
        sampler = torch.multinomial(torch.from_numpy(weight), steps * batch, replacement=True)
        net.train()
        for step in range(steps):
            idx = sampler[step * batch:(step + 1) * batch]
            xb = xt[idx]
            flip = torch.rand(len(idx)) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            xb = xb * (0.8 + 0.4 * torch.rand(len(idx), 1, 1, 1))  # brightness, as lighting changes
            loss = torch.nn.functional.cross_entropy(net(xb.clamp(0, 1)), yt[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        net.eval()
    return {key: value.detach().numpy().astype(np.float32).copy() for key, value in net.state_dict().items()}


def _onnx_session(net: Any, size: int) -> Any | None:
    """An ONNX Runtime session of the network (about twice as fast as eager torch on a CPU for these small
    convolutions), with as many threads as torch has; None where onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import tempfile
    import warnings
    from pathlib import Path

    import torch

    with tempfile.TemporaryDirectory(prefix="ghostbox-crop-") as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        path = Path(folder) / "crop.onnx"
        torch.onnx.export(net, (torch.zeros(1, 3, size, size),), str(path), input_names=["crops"],
                          output_names=["logits"], dynamic_axes={"crops": {0: "boxes"}, "logits": {0: "boxes"}},
                          dynamo=False)
        model = path.read_bytes()
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class CropNet:
    """A trained network from its arrays; `logits` runs it in batches without gradients, with ONNX Runtime
    when it is installed (the same network exported in memory: logits equal torch's to ~1e-6), else torch."""

    def __init__(self, arrays: dict[str, np.ndarray], num_outputs: int, width: int, size: int = CROP_SIZE) -> None:
        import torch

        self.net = build_net(num_outputs, width)
        expected = self.net.state_dict()
        missing = sorted(set(expected) - set(arrays))
        if missing:
            raise GhostboxError(f"crop: stored network lacks array(s) {', '.join(missing)}")
        for key, value in expected.items():
            if tuple(arrays[key].shape) != tuple(value.shape):
                raise GhostboxError(f"crop: stored array {key} has shape {tuple(arrays[key].shape)}, "
                                    f"the network needs {tuple(value.shape)}")
        self.net.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(arrays[k], np.float32)) for k in expected})
        self.net.eval()
        self.arrays = {k: np.ascontiguousarray(arrays[k], np.float32) for k in expected}
        self.session = _onnx_session(self.net, size)
        self.runtime = "onnxruntime" if self.session is not None else "torch"

    def logits(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        out = []
        if self.session is not None:
            for start in range(0, len(x), batch):
                out.append(self.session.run(None, {"crops": np.ascontiguousarray(x[start:start + batch])})[0])
        else:
            import torch

            with torch.inference_mode():
                for start in range(0, len(x), batch):
                    out.append(self.net(torch.from_numpy(x[start:start + batch])).numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 0), np.float64)
