"""`ghostbox bench gpu`: the no-CUDA path through the CLI, and the GPU path's parsing, result and table on
recorded output (nvidia-smi's CSV as an H100 prints it, and measurements shaped as the check takes them)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.bench import gpu_check as G
from pipeline.bench.report import markdown
from pipeline.cli.main import main
from pipeline.page_stamp import made
from pipeline.stream.config import graph_from_dict

# `nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv` on an H100: before a run (this
# process's CUDA context held), and two samples during it
SMI_BEFORE = """index, name, memory.used [MiB], memory.total [MiB]
0, NVIDIA H100 80GB HBM3, 523 MiB, 81559 MiB
"""
SMI_DURING = ["""index, name, memory.used [MiB], memory.total [MiB]
0, NVIDIA H100 80GB HBM3, 1877 MiB, 81559 MiB
""", """index, name, memory.used [MiB], memory.total [MiB]
0, NVIDIA H100 80GB HBM3, 2411 MiB, 81559 MiB
"""]


def _recorded(fp16_features_rel: float = 7.4e-3, onnx_unavailable: str | None = None) -> dict[str, Any]:
    """A result as bench_gpu builds it, from representative raw measurements; with `onnx_unavailable`, as on
    a machine whose onnxruntime has no CUDA provider (ONNX rows unavailable for that reason, not run)."""
    boxes = {"reference_boxes": 212, "boxes": 212, "matched": 212, "unmatched": 0, "max_abs_px": 0.0127,
             "max_rel": 2.1e-5}
    fp16_boxes = {**boxes, "boxes": 213, "matched": 211, "unmatched": 3, "max_abs_px": 0.41, "max_rel": 6.8e-4}
    parity = {
        "torch-cuda-fp32": G.parity_row("fp32", {"max_abs": 2.4e-3, "max_rel": 1.9e-4},
                                        {"max_abs": 1.1e-3, "max_rel": 3.2e-4}, boxes, 181.3),
        "torch-cuda-fp16": G.parity_row("fp16", {"max_abs": 9.3e-2, "max_rel": 6.1e-3},
                                        {"max_abs": 4.0e-2, "max_rel": fp16_features_rel}, fp16_boxes, 97.6),
        "onnx-cuda-fp32": G.parity_row("fp32", {"max_abs": 2.2e-3, "max_rel": 1.8e-4},
                                       {"max_abs": 1.0e-3, "max_rel": 2.9e-4}, boxes),
        "onnx-cuda-fp16": G.skipped_row("fp16", "not supported", G.ONNX_FP16),
    }
    if onnx_unavailable:
        parity["onnx-cuda-fp32"] = G.skipped_row("fp32", "unavailable", onnx_unavailable)
    baseline = G.parse_smi_csv(SMI_BEFORE)
    samples = [G.parse_smi_csv(text) for text in SMI_DURING]
    runs = []
    for name, fps in (("torch-cuda-fp32", (212.4, 388.0, 402.9)), ("torch-cuda-fp16", (230.1, 455.5, 498.2)),
                      ("onnx-cuda-fp32", (150.2, 260.7, 271.3))):
        if parity[name]["status"] != "measured":  # bench_gpu runs only what parity measured
            continue
        for streams, value in zip((1, 4, 16), fps):
            runs.append(G.throughput_run(name, streams, 960, 0, 960, value, 14.2,
                                         G.memory_peak(baseline, samples)))
    meta = {"model": "pipeline/assets/models/ghostbox-street-n.pt", "imgsz": 640, "parity_frames": 16,
            "frames": 960, "streams": [1, 4, 16], "batch": 16, "workers": 1, "device": "cuda",
            "gpu": "NVIDIA H100 80GB HBM3", "torch": "2.14.1+cu130", "cuda": "13.0", "cudnn": 92400,
            "tf32": {"cudnn": True, "matmul": False},
            "onnxruntime": {"version": "1.31.1", "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}}
    return G.build_result(meta, parity, runs)


# -- the no-CUDA path (what CI runs) ---------------------------------------------------------------

def test_without_cuda_says_so_and_exits_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(G, "cuda_available", lambda: False)
    out = tmp_path / "gpu.md"
    assert main(["bench", "gpu", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(G.NO_CUDA)
    assert not out.exists()  # nothing measured, no page


def test_no_cuda_line_names_a_gpu_torch_cannot_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """nvidia-smi's rows come through `_smi` (one reader of nvidia-smi for both uses)."""
    monkeypatch.setattr(G.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(G, "_smi", lambda: G.parse_smi_csv(SMI_BEFORE))
    line = G.no_cuda_line()
    assert line.startswith(G.NO_CUDA) and "nvidia-smi lists NVIDIA H100 80GB HBM3" in line
    monkeypatch.setattr(G, "_smi", lambda: [])  # nvidia-smi failed or printed no GPU
    assert G.no_cuda_line() == G.NO_CUDA


def test_bad_streams_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "gpu", "--streams", "1,x"]) == 2
    assert main(["bench", "gpu", "--streams", "0"]) == 2
    assert main(["bench", "gpu", "--frames", "0"]) == 2
    assert "--streams" in capsys.readouterr().err


# -- nvidia-smi ------------------------------------------------------------------------------------

def test_parse_smi_csv_with_and_without_header() -> None:
    [row] = G.parse_smi_csv(SMI_BEFORE)
    assert row == {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory.used": 523, "memory.total": 81559}
    rows = G.parse_smi_csv("0, NVIDIA H100 80GB HBM3, 523, 81559\n1, NVIDIA H100 80GB HBM3, [N/A], 81559\n")
    assert [r["memory.used"] for r in rows] == [523, None]  # noheader,nounits; [N/A] is no figure
    assert G.parse_smi_csv("") == []
    assert G.parse_smi_csv("NVIDIA-SMI has failed because it couldn't communicate with the driver.\n") == []


def test_memory_peak_above_the_baseline() -> None:
    peak = G.memory_peak(G.parse_smi_csv(SMI_BEFORE), [G.parse_smi_csv(t) for t in SMI_DURING] + [[]])
    assert peak == {"baseline_mib": 523, "peak_used_mib": 2411, "peak_above_baseline_mib": 1888, "total_mib": 81559,
                    "samples": 2}
    assert G.memory_peak([], [G.parse_smi_csv(SMI_BEFORE)]) is None  # no nvidia-smi: no figure, not 0
    assert G.memory_peak(G.parse_smi_csv(SMI_BEFORE), [[]]) is None


# -- parity ----------------------------------------------------------------------------------------

def test_compare_is_relative_to_the_largest_magnitude() -> None:
    ref = np.array([[10.0, 0.001], [-20.0, 0.0]])
    got = ref + np.array([[0.0, 0.01], [0.02, 0.0]])
    diff = G.compare(ref, got)
    assert diff["max_abs"] == pytest.approx(0.02) and diff["max_rel"] == pytest.approx(0.02 / 20)
    assert G.compare(np.zeros((0, 4)), np.zeros((0, 4))) == {"max_abs": 0.0, "max_rel": 0.0}
    with pytest.raises(ValueError):
        G.compare(np.zeros(3), np.zeros(4))


def test_boxes_match_by_class_and_iou() -> None:
    ref = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], np.float32)
    got = np.array([[20.5, 20, 40, 40.5], [0, 0, 10, 10.25], [50, 50, 60, 60]], np.float32)
    assert G.match_boxes(ref, np.array([0, 1, 2]), got, np.array([1, 0, 3])) == [(0, 1), (1, 0)]  # 3rd: class
    stats = G.box_parity([(ref, np.array([0, 1, 2]))], [(got, np.array([1, 0, 3]))])
    assert stats["matched"] == 2 and stats["unmatched"] == 2 and stats["max_abs_px"] == pytest.approx(0.5)
    empty = G.box_parity([(np.zeros((0, 4)), np.zeros(0))], [(np.zeros((0, 4)), np.zeros(0))])
    assert empty["matched"] == 0 and empty["max_abs_px"] == 0.0


def test_parity_row_checks_each_tolerance() -> None:
    boxes = {"reference_boxes": 100, "boxes": 100, "matched": 100, "unmatched": 0, "max_abs_px": 0.1, "max_rel": 0}
    small = {"max_abs": 0.0, "max_rel": 1e-4}
    assert G.parity_row("fp32", small, small, boxes)["pass"]
    over = {"max_abs": 0.1, "max_rel": G.FEATURE_TOLERANCE["fp32"] * 1.5}
    row = G.parity_row("fp32", small, over, boxes)
    assert not row["pass"] and row["checks"] == {"logits": True, "features": False, "boxes": True, "unmatched": True}
    assert G.parity_row("fp16", small, over, boxes)["pass"]  # fp16's tolerance is wider
    lost = {**boxes, "matched": 95, "unmatched": 5}
    assert not G.parity_row("fp16", small, small, lost)["checks"]["unmatched"]
    assert not G.parity_row("fp32", small, small, {**boxes, "max_abs_px": 0.6})["checks"]["boxes"]


# -- throughput ------------------------------------------------------------------------------------

def test_stream_graph_is_a_valid_graph(tmp_path: Path) -> None:
    data = G.stream_graph(tmp_path / "street640.mp4", "m.onnx", 640, tmp_path / "out", 16, 960, 16, 1, False)
    graph = graph_from_dict(data, "test")
    assert len(graph.sources) == 16 and {s.max_frames for s in graph.sources} == {60}
    assert graph.detector.device == "cuda" and graph.detector.batch == 16 and not graph.detector.half
    assert graph.tracks.enabled is False
    three = G.stream_graph(tmp_path / "v.mp4", "m.pt", 640, tmp_path / "o", 3, 10, 8, 1, True)
    assert [s["max_frames"] for s in three["sources"]] == [4, 4, 4] and three["detector"]["half"]


def test_throughput_run_is_ok_only_with_every_row() -> None:
    assert G.throughput_run("torch-cuda-fp32", 4, 960, 0, 960, 300.0, 10.0, None)["ok"]
    assert not G.throughput_run("torch-cuda-fp32", 4, 960, 0, 950, 300.0, 10.0, None)["ok"]
    failed = G.throughput_run("onnx-cuda-fp32", 1, 960, None, 0, None, None, None, error="worker crashed")
    assert not failed["ok"] and failed["wall_fps"] is None
    assert "FAILED" in G.run_line(failed) and "worker crashed" in G.run_line(failed)


# -- the result, its table and its page ------------------------------------------------------------

def test_table_from_recorded_measurements() -> None:
    result = _recorded()
    assert result["passed"]
    text = G.table_text(result)
    lines = text.splitlines()
    assert lines[0].split() == ["backend", "logits", "rel", "features", "rel", "boxes", "px", "unmatched", "parity",
                                "frames/s", "x1", "frames/s", "x4", "frames/s", "x16", "GPU", "MiB"]
    assert lines[1].split() == ["torch-cuda-fp32", "1.9e-04", "3.2e-04", "0.013", "0/212", "pass", "212.4", "388.0",
                                "402.9", "1888"]
    assert lines[2].split()[:6] == ["torch-cuda-fp16", "6.1e-03", "7.4e-03", "0.410", "3/212", "pass"]
    assert lines[4].startswith("onnx-cuda-fp16") and "not supported: ghostbox's ONNX models" in lines[4]
    assert len(lines) == 5


def test_a_failed_check_and_a_failed_run_show(tmp_path: Path) -> None:
    result = _recorded(fp16_features_rel=0.05)
    result["runs"][-1] = G.throughput_run("onnx-cuda-fp32", 16, 960, 1, 700, 120.0, 12.0, None)
    result = G.build_result({k: v for k, v in result.items() if k not in ("parity", "runs", "tolerances", "passed")},
                            result["parity"], result["runs"])
    assert not result["passed"]
    text = G.table_text(result)
    assert "FAIL" in text.splitlines()[2].split() and "failed" in text.splitlines()[3].split()


ORT_CPU_ONLY = "onnxruntime ran on CPUExecutionProvider"


def test_summary_line_names_the_backends_not_measured() -> None:
    full = _recorded()
    assert full["unavailable"] == {} and G.summary_line(full) == "all checks passed"
    result = _recorded(onnx_unavailable=ORT_CPU_ONLY)
    # every backend measured passed: a pass, but only for those, and the unavailable one is named with why
    assert result["passed"] and result["unavailable"] == {"onnx-cuda-fp32": ORT_CPU_ONLY}
    assert "onnx-cuda-fp16" not in result["unavailable"]  # 'not supported' is no such path, not a skip
    assert G.summary_line(result) == ("all checks passed for the backends measured; not measured: onnx-cuda-fp32 "
                                      f"({ORT_CPU_ONLY})")
    [row] = [line for line in G.table_text(result).splitlines() if line.startswith("onnx-cuda-fp32")]
    assert row.endswith(f"unavailable: {ORT_CPU_ONLY}")  # the table's row says it too
    failed = _recorded(fp16_features_rel=0.05, onnx_unavailable=ORT_CPU_ONLY)
    assert not failed["passed"]
    assert G.summary_line(failed) == ("some checks FAILED (see the table); not measured: onnx-cuda-fp32 "
                                      f"({ORT_CPU_ONLY})")
    reason = "export failed: No module named 'onnx'"
    none = G.build_result({}, {name: G.skipped_row(p, "unavailable", reason) for name, _, p in G.CANDIDATES}, [])
    assert not none["passed"] and G.summary_line(none).startswith("FAILED: no backend was measured; not measured: ")
    assert all(f"{name} ({reason})" in G.summary_line(none) for name, _, _ in G.CANDIDATES)


def test_markdown_page_from_recorded_measurements() -> None:
    result = _recorded()
    result["made"] = made("ghostbox bench gpu --out docs/benchmarks/gpu.md")
    text = markdown("gpu", result)
    assert text.startswith("# The CUDA backends")
    assert "command: `ghostbox bench gpu --out docs/benchmarks/gpu.md`" in text
    assert ("| torch-cuda-fp32 | 1.9e-04 | 3.2e-04 | 0.013 | 0/212 | pass | 212.4 | 388.0 | 402.9 | 1888 |"
            in text)
    assert "| onnx-cuda-fp16 | not supported: ghostbox's ONNX models" in text
    assert "| `torch-cuda-fp16` | 16 | 960/960 | 498.2 | 67.6 | 2411 (+1888) | 0 |" in text
    assert "logits and features rel fp32 0.005, fp16 0.02" in text and "All checks passed." in text
    assert "`torch-cuda-fp32` 181.3 MiB, `torch-cuda-fp16` 97.6 MiB" in text


def test_cli_with_cuda_prints_the_table_and_writes_the_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The handler's CUDA path, the measurement replaced by recorded figures."""
    calls: list[dict[str, Any]] = []

    def fake(model: str, **kwargs: Any) -> dict[str, Any]:
        calls.append({"model": model, **kwargs})
        return _recorded()

    real = G.bench_gpu  # the flags' defaults are read from its signature: the fakes keep it
    monkeypatch.setattr(G, "cuda_available", lambda: True)
    monkeypatch.setattr(G, "bench_gpu", functools.wraps(real)(fake))
    out = tmp_path / "gpu.json"
    assert main(["bench", "gpu", "--streams", "1,4", "--frames", "64", "--out", str(out)]) == 0
    [call] = calls
    assert call["streams"] == (1, 4) and call["frames"] == 64 and "imgsz" not in call  # defaults: the signature's
    printed = capsys.readouterr().out
    assert "torch-cuda-fp32" in printed and "all checks passed" in printed and f"wrote {out}" in printed
    written = json.loads(out.read_text())
    assert written["made"]["command"] == f"ghostbox bench gpu --frames 64 --streams 1,4 --out {out}"
    monkeypatch.setattr(G, "bench_gpu", functools.wraps(real)(lambda model, **kw: _recorded(fp16_features_rel=0.05)))
    assert main(["bench", "gpu"]) == 1  # a failed check fails the command
    capsys.readouterr()
    monkeypatch.setattr(G, "bench_gpu",
                        functools.wraps(real)(lambda model, **kw: _recorded(onnx_unavailable=ORT_CPU_ONLY)))
    assert main(["bench", "gpu"]) == 0  # an optional backend unavailable here does not fail the command...
    verdict = capsys.readouterr().out.splitlines()[-1]
    # ...but the verdict says what it covers and names the backend not measured, with why
    assert verdict == f"all checks passed for the backends measured; not measured: onnx-cuda-fp32 ({ORT_CPU_ONLY})"


@pytest.mark.slow
def test_the_measuring_steps_run_on_the_cpu(tmp_path: Path) -> None:
    """bench_gpu's own steps (export, parity, `ghostbox run`) with device='cpu' at toy sizes: the code a lent
    GPU runs, checked here to run; the figures mean nothing."""
    from pipeline.bundled import default_model

    lines: list[str] = []
    result = G.bench_gpu(str(default_model()), imgsz=64, parity_frames=2, frames=2, streams=(1,), batch=2,
                         workdir=tmp_path, progress=lines.append, device="cpu")
    assert [row["status"] for row in result["parity"].values()] == ["measured"] * 3 + ["not supported"]
    assert result["passed"], G.table_text(result)  # on one device every backend gives the CPU's figures
    assert [(r["backend"], r["streams"], r["rows"]) for r in result["runs"]] == [
        ("torch-cuda-fp32", 1, 2), ("torch-cuda-fp16", 1, 2), ("onnx-cuda-fp32", 1, 2)]
    assert any(line.startswith("run: onnx-cuda-fp32 x1") for line in lines)
