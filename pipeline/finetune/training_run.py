"""One Ultralytics fine-tuning run, CPU-friendly defaults, resumable; the settings of a fine-tune job.

Fine-tuning starts from trained weights, so it wants a small constant-ish learning rate and
no warm-up spike (Ultralytics' warm-up starts the biases at lr 0.1, which undoes a trained
head in a few steps). Validation runs only at the end (`val=False`): ghostbox's own
before/after evaluation is the measurement, and per-epoch validation would cost a fifth of
a short CPU run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.detect.config import FALLBACK_IMGSZ
from pipeline.detect.unknown_class import UNKNOWN_CLASS
from pipeline.errors import GhostboxError
from pipeline.evaluate.evaluation import EvalSettings
from pipeline.page_stamp import machine_cores
from pipeline.ultralytics_env import import_ultralytics

log = logging.getLogger(__name__)


class FinetuneSettings(BaseModel):
    """One fine-tuning run's settings (`finetune.json` `settings`)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(6, ge=1, description="training epochs")
    lr0: float = Field(0.003, gt=0, description="initial learning rate (AdamW)")
    lrf: float = Field(0.1, gt=0, le=1, description="final learning rate as a fraction of lr0 (linear decay)")
    freeze: int = Field(0, ge=0, description="freeze the first N layers (the backbone is 10 layers in YOLOv8)")
    imgsz: int | None = Field(None, ge=32, description="training size; null: the model's training size")
    batch: int = Field(16, ge=1, description="images per training batch")
    device: str = Field("cpu", description="cpu, cuda or cuda:N")
    workers: int = Field(2, ge=0, description="data-loading workers")
    seed: int = Field(0, description="seed of the training run and of the proxy sample")
    mosaic: float = Field(1.0, ge=0, le=1, description="probability of a 4-image mosaic per sample")
    close_mosaic: int = Field(2, ge=0, description="last N epochs on whole images, as evaluation sees them")
    scale: float = Field(0.3, ge=0, le=1, description="random scale augmentation (+/- this fraction)")
    # Ultralytics trains on CPU with one core fewer than the machine has and loads data in the
    # same process: one of two cores.
    threads: int | None = Field(None, ge=1, description="CPU threads for training; null: every core this "
                                "process may use")

    def ultralytics_args(self) -> dict[str, Any]:
        return dict(epochs=self.epochs, lr0=self.lr0, lrf=self.lrf, freeze=self.freeze or None, batch=self.batch,
                    device=self.device, workers=self.workers, seed=self.seed, mosaic=self.mosaic,
                    close_mosaic=self.close_mosaic, scale=self.scale, optimizer="AdamW", cos_lr=False,
                    warmup_epochs=0.0, warmup_bias_lr=0.0, nbs=self.batch, deterministic=True, amp=False,
                    plots=False, val=False, cache="ram", pretrained=True, exist_ok=True)


class FinetuneJob(BaseModel):
    """What `ghostbox finetune` does: the `finetune:` section of its --config file."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(description="detector to start from")
    id_spec: str = Field(description="labelled ID training data (dataset SPEC)")
    proxies: list[str] = Field(min_length=1, description="proxy sets from `ghostbox proxies`")
    out: Path = Field(description="output folder")
    val_spec: str | None = Field(None, description="labelled ID validation data (for mAP)")
    ood_specs: list[str] = Field(default_factory=list, description="OoD test sets for the before/after comparison; "
                                 "need val_spec")
    filter_path: str | None = Field(None, description="the original model's filter: its method is re-fitted on the "
                                    "fine-tuned model")
    filter_method: str | None = Field(None, description="or a score to fit on both models (e.g. oe, energy, "
                                      "knn,mahalanobis)")
    filter_params: dict[str, Any] = Field(default_factory=dict, description="parameters of filter_method (a JSON "
                                          "object on the command line)")
    outliers: list[str] | None = Field(None, description="outlier data for scores that learn from it; null: the "
                                       "proxy sets")
    outlier_conf: float | None = Field(None, description="confidence of outlier detections; null: the detector's")
    calibration_id: str | None = Field(None, description="ID data kept out of the fine-tune that sets the filters' "
                                       "thresholds; null: images held out of id_spec")
    proxy_ratio: float = Field(1.0, description="proxy images per ID training image")
    training: FinetuneSettings = Field(default_factory=FinetuneSettings, description="the fine-tuning run")
    unknown_class: bool = Field(False, description="label the proxies' pasted regions as one more class, "
                                "'ghostbox:unknown', instead of background; the detector drops boxes of that class")
    rounds: int = Field(1, ge=1, description="rounds of mining: before each round after the first, the previous "
                        "round's model runs on mine_pool and its boxes there become proxies; the round continues "
                        "from that model with every proxy set so far")
    mine_pool: str | None = Field(None, description="images without ID objects the rounds mine (pool kinds only, "
                                  "never test sets); null: the first of outliers")
    mine_count: int = Field(500, ge=1, description="mined proxy images made per round")
    mine_images: int = Field(500, ge=1, description="pool images each round's model runs on (a seeded sample)")
    mine_conf: float | None = Field(None, ge=0, le=1, description="confidence of the boxes a round mines; null: "
                                    "hallucination_conf (what the comparison counts)")
    resume: bool = Field(False, description="continue an interrupted run in out")
    hallucination_conf: float = Field(EvalSettings.model_fields["conf"].default, ge=0, le=1,
                                      description="detections at or above this confidence "
                                      "count in the before/after evaluation")
    detector_batch: int = Field(16, ge=1, description="frames per forward pass when evaluating and fitting filters")

    @field_validator("filter_params", mode="before")
    @classmethod
    def _json(cls, value: Any) -> Any:
        """The command line gives a JSON object as text."""
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None


def train_detector(model: str | Path, data_yaml: str | Path, out_dir: str | Path, settings: FinetuneSettings,
                   resume: bool = False, verbose: bool = True) -> Path:
    """Fine-tune `model` on `data_yaml`; returns the final weights (OUT/train/weights/last.pt)."""
    out = Path(out_dir).resolve()
    last = out / "train" / "weights" / "last.pt"
    ultralytics = import_ultralytics()
    # ultralytics and torch are imported only when a run trains: they take seconds to load
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
                imgsz = int((getattr(yolo.model, "args", {}) or {}).get("imgsz", FALLBACK_IMGSZ))
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


def with_unknown_class(model: str | Path, out: Path) -> Path:
    """`model` with one more class, `UNKNOWN_CLASS`, after its own, saved to `out` (the ID classes' weights
    unchanged). The new class starts with zero weights and the lowest prior of the others, so the model
    reports nothing as unknown until training teaches it to. A model that has the class is returned as is."""
    import_ultralytics()
    import torch
    from ultralytics import YOLO

    yolo = YOLO(str(model))
    network: Any = yolo.model  # Ultralytics' DetectionModel (typed loosely upstream)
    names = dict(network.names)
    if names and names[len(names) - 1] == UNKNOWN_CLASS:
        return Path(model)
    head = network.model[-1]
    if not hasattr(head, "cv3") or not hasattr(head, "reg_max"):
        raise GhostboxError(f"--unknown-class: model '{model}' has no YOLO detection head ({type(head).__name__}) to "
                            "add a class to")
    for branches in (head.cv3, getattr(head, "one2one_cv3", None)):
        for branch in branches or ():
            old = branch[-1]
            new = torch.nn.Conv2d(old.in_channels, old.out_channels + 1, old.kernel_size, old.stride, bias=True)
            weight, bias = new.weight, new.bias
            assert bias is not None
            with torch.no_grad():
                weight.zero_()
                weight[: old.out_channels] = old.weight
                bias[: old.out_channels] = old.bias
                bias[old.out_channels] = old.bias.min()
            branch[-1] = new.to(old.weight.device, old.weight.dtype)
    head.nc += 1
    head.no = head.nc + head.reg_max * 4
    network.yaml["nc"] = head.nc
    network.names = {**names, len(names): UNKNOWN_CLASS}
    out.parent.mkdir(parents=True, exist_ok=True)
    yolo.save(str(out))
    return out


def _with_threads(yolo: Any, settings: FinetuneSettings) -> Any:
    """On CPU, train on `settings.threads` (default: every usable core); Ultralytics sets its own
    count, one core fewer, when it picks the device, so this runs after that."""
    if not settings.device.lower().startswith("cpu"):
        return yolo
    import torch

    threads = settings.threads or machine_cores()

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
