"""How many detector workers a graph runs, and how many threads each: chosen for the machine and the model.

Measured on a 2-core CPU (whole `ghostbox run`, 200 frames of 640 px, a YOLOv8n; issue 27's closing
note): a PyTorch model runs faster as one single-threaded worker per core than as one worker with
every core (convolutions in one torch process scale poorly past a thread or two); an ONNX Runtime
model the other way round, one worker with every core (17.2 s against 20.5 s for two workers,
whose sessions each took every core; each session now takes the plan's threads). Each
worker holds its own model (a few hundred MB), so `auto` stops at MAX_CPU_WORKERS and gives
further cores to the workers as threads. On a GPU one worker feeds the device; more would only
queue for it. The batch is `detect.config.default_batch`'s for the device (4 frames on a CPU, 8 on a
GPU) unless the graph names one. Settings given in the graph always win.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.detect.config import default_batch
from pipeline.page_stamp import machine_cores

MAX_CPU_WORKERS = 4


@dataclass(frozen=True)
class WorkerPlan:
    count: int
    threads: int  # torch threads per worker
    why: str
    batch: int  # frames per forward pass (each worker's detector runs with it)


def on_gpu(device: str) -> bool:
    """Whether the detector will run on a GPU, told without importing torch (which costs a second):
    `auto` means a GPU when this machine has an NVIDIA driver and CUDA_VISIBLE_DEVICES does not hide
    every device. The plan's batch is the workers' (they build their detector with it), so a GPU told
    wrongly here costs speed, not consistency."""
    device = device.strip().lower()
    if device == "cpu":
        return False
    if device.startswith("cuda") or device.isdigit():
        return True
    if os.environ.get("CUDA_VISIBLE_DEVICES", "x").strip() in ("", "-1"):
        return False
    return Path("/dev/nvidiactl").exists()


def plan_workers(count: int | str, threads: int | None, device: str, cores: int | None = None,
                 model: str = "", batch: int | None = None) -> WorkerPlan:
    cores = max(1, cores or machine_cores())
    if count == "auto":
        if on_gpu(device):
            chosen, why = 1, "auto: one worker feeds the GPU"
        elif model.lower().endswith(".onnx"):
            chosen, why = 1, f"auto: one ONNX Runtime worker with the {cores} core(s) as threads"
        else:
            chosen = min(cores, MAX_CPU_WORKERS)
            why = f"auto: one worker per core of {cores}, at most {MAX_CPU_WORKERS}"
    else:
        chosen, why = int(count), "set in the graph"
    per_worker = threads or max(1, cores // chosen)
    why += "" if threads is None else "; threads set in the graph"
    if batch is None:
        gpu = on_gpu(device)
        batch, why = default_batch(gpu), why + f"; batch {default_batch(gpu)} for a {'GPU' if gpu else 'CPU'}"
    return WorkerPlan(chosen, per_worker, why, int(batch))
