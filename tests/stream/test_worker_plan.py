"""Workers and threads chosen for the machine (pipeline/stream/worker_plan.py)."""

from __future__ import annotations

import pytest

from pipeline.errors import GhostboxError
from pipeline.stream.config import graph_from_dict
from pipeline.stream.worker_plan import MAX_CPU_WORKERS, plan_workers


@pytest.mark.parametrize(("cores", "count", "threads"), [(1, 1, 1), (2, 2, 1), (4, 4, 1), (16, MAX_CPU_WORKERS, 4)])
def test_auto_on_a_cpu_runs_a_worker_per_core_up_to_the_cap(cores: int, count: int, threads: int) -> None:
    plan = plan_workers("auto", None, "cpu", cores)
    assert (plan.count, plan.threads) == (count, threads) and "auto" in plan.why


def test_auto_with_an_onnx_model_runs_one_worker_with_every_core() -> None:
    plan = plan_workers("auto", None, "cpu", 2, model="person.int8.onnx")
    assert (plan.count, plan.threads) == (1, 2) and "ONNX" in plan.why


def test_auto_on_a_gpu_runs_one_worker() -> None:
    assert plan_workers("auto", None, "cuda:0", 16).count == 1
    assert plan_workers("auto", None, "0", 16).count == 1


def test_what_the_graph_sets_wins() -> None:
    plan = plan_workers(3, 2, "cpu", 2)
    assert (plan.count, plan.threads) == (3, 2) and "set in the graph" in plan.why
    assert plan_workers(2, None, "cpu", 8).threads == 4  # the cores shared among the workers given


def test_the_graph_names_a_stage_per_planned_worker() -> None:
    graph = graph_from_dict({"sources": [{"id": "a", "uri": "x.mp4"}], "detector": {"model": "m.pt", "device": "cpu"}},
                            "test")
    assert graph.workers.count == "auto"
    workers = [n for n in graph.stage_names() if n.startswith("worker:")]
    assert len(workers) == graph.worker_plan().count >= 1
    with pytest.raises(GhostboxError, match="'auto' or 1..64"):
        graph_from_dict({"sources": [{"id": "a", "uri": "x"}], "workers": {"count": 0}}, "test")


def test_the_batch_is_the_devices_unless_the_graph_names_one() -> None:
    from pipeline.detect.config import CPU_BATCH, GPU_BATCH

    assert plan_workers("auto", None, "cpu", 2).batch == CPU_BATCH
    assert plan_workers("auto", None, "cuda", 2).batch == GPU_BATCH > CPU_BATCH
    assert f"batch {CPU_BATCH} for a CPU" in plan_workers("auto", None, "cpu", 2).why
    assert plan_workers("auto", None, "cpu", 2, batch=16).batch == 16
    graph = graph_from_dict({"sources": [{"id": "a", "uri": "x.mp4"}], "detector": {"model": "m.pt", "device": "cpu",
                                                                                  "batch": 2}}, "test")
    assert graph.worker_plan().batch == 2


def test_a_detector_takes_the_devices_batch_unless_told() -> None:
    from pipeline.bundled import default_model
    from pipeline.detect.config import CPU_BATCH
    from pipeline.detect.detector import Detector

    assert Detector(model=str(default_model()), device="cpu").batch == CPU_BATCH
    assert Detector(model=str(default_model()), device="cpu", batch=3).batch == 3


def test_auto_is_no_gpu_when_cuda_visible_devices_hides_them(monkeypatch) -> None:
    from pipeline.stream.worker_plan import on_gpu

    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert not on_gpu("auto")
    assert on_gpu("cuda:0")  # asked for by name: the device decides, not the environment


def test_run_takes_workers_auto_or_a_number_on_the_command_line() -> None:
    from pipeline.cli.main import _parser
    from pipeline.cli.run_cmd import graph_from_args

    for given, count in (("auto", "auto"), ("3", 3)):
        args = _parser().parse_args(["run", "--source", "a.mp4", "--workers", given])
        assert graph_from_args(args).workers.count == count
    with pytest.raises(SystemExit):
        _parser().parse_args(["run", "--source", "a.mp4", "--workers", "many"])
