"""One Ultralytics fine-tuning run, CPU-friendly defaults, resumable.

Fine-tuning starts from trained weights, so it wants a small constant-ish learning rate and
no warm-up spike (Ultralytics' warm-up starts the biases at lr 0.1, which undoes a trained
head in a few steps). Validation runs only at the end (`val=False`): ghostbox's own
before/after evaluation is the measurement, and per-epoch validation would cost a fifth of
a short CPU run.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline.errors import GhostboxError

log = logging.getLogger(__name__)


class FinetuneSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(6, ge=1)
    lr0: float = Field(0.003, gt=0)
    lrf: float = Field(0.1, gt=0, le=1)  # final lr = lr0 * lrf, linear decay
    freeze: int = Field(0, ge=0)  # first N layers frozen (the backbone is 10 layers in YOLOv8)
    imgsz: int | None = Field(None, ge=32)  # None: the model's training size
    batch: int = Field(16, ge=1)
    device: str = "cpu"
    workers: int = Field(2, ge=0)
    seed: int = 0
    mosaic: float = Field(1.0, ge=0, le=1)
    close_mosaic: int = Field(2, ge=0)  # last epochs on whole images, as evaluation sees them
    scale: float = Field(0.3, ge=0, le=1)
    # CPU threads for training (None: every usable core). Ultralytics trains on CPU with one core
    # fewer than the machine has and loads data in the same process: one of two cores.
    threads: int | None = Field(None, ge=1)

    def ultralytics_args(self) -> dict[str, Any]:
        return dict(epochs=self.epochs, lr0=self.lr0, lrf=self.lrf, freeze=self.freeze or None, batch=self.batch,
                    device=self.device, workers=self.workers, seed=self.seed, mosaic=self.mosaic,
                    close_mosaic=self.close_mosaic, scale=self.scale, optimizer="AdamW", cos_lr=False,
                    warmup_epochs=0.0, warmup_bias_lr=0.0, nbs=self.batch, deterministic=True, amp=False,
                    plots=False, val=False, cache="ram", pretrained=True, exist_ok=True)


def train_detector(model: str | Path, data_yaml: str | Path, out_dir: str | Path, settings: FinetuneSettings,
                   resume: bool = False, verbose: bool = True) -> Path:
    """Fine-tune `model` on `data_yaml`; returns the final weights (OUT/train/weights/last.pt)."""
    from pipeline.ultralytics_env import import_ultralytics

    out = Path(out_dir).resolve()
    last = out / "train" / "weights" / "last.pt"
    ultralytics = import_ultralytics()
    import ultralytics.utils as ultralytics_utils
    from ultralytics import YOLO

    # Ultralytics' epoch lines and bars are the progress. Its verbosity is fixed when it is
    # first imported (quiet, for ghostbox's other commands), so switch it on for the run.
    ulog = logging.getLogger("ultralytics")
    saved = (ultralytics_utils.VERBOSE, ulog.level, [(h, h.level) for h in ulog.handlers])
    if verbose:
        ultralytics_utils.VERBOSE = True
        ulog.setLevel(logging.INFO)
        for handler in ulog.handlers:
            handler.setLevel(logging.INFO)
    try:
        if resume and last.is_file() and _finished(last):
            log.info("the fine-tune in %s has finished; nothing to resume", out)
        elif resume and last.is_file():
            log.info("resuming the fine-tune from %s", last)
            yolo = _with_threads(YOLO(str(last)), settings)
            with _ultralytics_errors(model):
                yolo.train(resume=True)
        else:
            if resume:
                log.info("nothing to resume in %s; starting the fine-tune", out)
            if (out / "train").exists():
                shutil.rmtree(out / "train")
            args = settings.ultralytics_args()
            imgsz = settings.imgsz
            yolo = _with_threads(YOLO(str(model)), settings)
            if imgsz is None:
                imgsz = int((getattr(yolo.model, "args", {}) or {}).get("imgsz", 640))
            with _ultralytics_errors(model):
                yolo.train(data=str(data_yaml), imgsz=imgsz, project=str(out), name="train", **args)
    finally:
        ultralytics_utils.VERBOSE, level, handlers = saved
        ulog.setLevel(level)
        for handler, handler_level in handlers:
            handler.setLevel(handler_level)
    if not last.is_file():
        raise GhostboxError(f"fine-tuning wrote no weights ({last} missing); see the Ultralytics log above")
    log.debug("ultralytics %s", ultralytics.__version__)
    return last


def _with_threads(yolo: Any, settings: FinetuneSettings) -> Any:
    """On CPU, train on `settings.threads` (default: every usable core); Ultralytics sets its own
    count, one core fewer, when it picks the device, so this runs after that."""
    if not settings.device.lower().startswith("cpu"):
        return yolo
    import os

    import torch

    # the cores this process may use (a container's share), not the host's count
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = settings.threads or usable or 1

    def set_threads(trainer: Any) -> None:
        torch.set_num_threads(threads)
        log.info("training on %d CPU thread(s)", threads)

    yolo.add_callback("on_pretrain_routine_start", set_threads)
    return yolo


def _finished(last: Path) -> bool:
    """Ultralytics strips the optimizer from last.pt when a run completes; a run cut short keeps it."""
    import torch

    ckpt = torch.load(str(last), map_location="cpu", weights_only=False)
    return ckpt.get("optimizer") is None


@contextlib.contextmanager
def _ultralytics_errors(model: str | Path):
    try:
        yield
    except GhostboxError:
        raise
    except (FileNotFoundError, RuntimeError, ValueError, KeyError) as exc:
        raise GhostboxError(f"fine-tuning '{model}' failed: {type(exc).__name__}: {exc}") from exc
