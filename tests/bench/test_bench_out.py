"""`ghostbox bench ... --out` writes its figures as a markdown page headed by date, machine, commit and command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.bench.report import markdown, write_result
from pipeline.cli.main import main
from pipeline.page_stamp import made

HEADER = re.compile(r"^Made (\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC) on (.+?) \((\d+) cores.*?\), (no GPU|.+?), "
                    r"([\d.]+) GiB RAM .*; ghostbox \S+ at commit (\S+).*; command: `(ghostbox bench [^`]+)`$",
                    re.MULTILINE)


def _header(text: str) -> re.Match:
    match = HEADER.search(text)
    assert match, f"no header line in:\n{text[:1500]}"
    return match


@pytest.mark.slow
def test_bench_filter_writes_markdown_with_header(tmp_path: Path) -> None:
    out = tmp_path / "bench" / "filter.md"
    code = main(["bench", "filter", "--imgsz", "64", "--feature-dim", "16", "--fit-boxes", "300", "--boxes", "10",
                 "--repeats", "2", "--knn-bank", "0", "--abet-boxes", "0", "--methods", "energy,knn",
                 "--out", str(out)])
    assert code == 0
    text = out.read_text()
    date, cpu, cores, gpu, ram, commit, command = _header(text).groups()
    assert int(cores) >= 1 and float(ram) > 0 and cpu and gpu and commit
    # the command names every setting that was not the default, so it reproduces the table
    assert command.startswith("ghostbox bench filter ")
    for flag in ("--imgsz 64", "--feature-dim 16", "--fit-boxes 300", "--methods energy,knn", f"--out {out}"):
        assert flag in command
    assert "| `energy` |" in text and "| `knn` |" in text
    assert "do not edit by hand" in text


def test_out_suffix_chooses_the_format(tmp_path: Path) -> None:
    result = {"seed": 0, "world": "w", "synth_s": None, "eval_s": 1.0, "eval_command": "ghostbox eval ...",
              "report_md": "# ghostbox evaluation\n\n| a |\n|---|\n| 1 |\n"}
    [md] = write_result(tmp_path / "s.md", "street", dict(result), "ghostbox bench street --out s.md")
    assert md.read_text().startswith("# The street world as a benchmark\n")
    assert "ghostbox evaluation" not in md.read_text()  # the report's own title gives way to the page's
    [js] = write_result(tmp_path / "s.json", "street", dict(result), "ghostbox bench street --out s.json")
    assert json.loads(js.read_text())["made"]["command"] == "ghostbox bench street --out s.json"
    written = write_result(tmp_path / "dir", "street", dict(result), "ghostbox bench street --out dir")
    assert sorted(p.name for p in written) == ["street.json", "street.md"]
    assert write_result(None, "street", dict(result), "x") == []


def test_detector_and_stream_pages_render() -> None:
    """The markdown of the two slower benchmarks, from results shaped as they write them."""
    stamp = made("ghostbox bench detector --frames 2")
    detector = {"model": "m.pt", "imgsz": 64, "frames": 2, "rounds": 1, "frame_size": [128, 72],
                "fps": {"ultralytics-pt": 10.0, "ghostbox-pt": 11.0}, "ms_per_frame": {"ultralytics-pt": 100.0,
                                                                                         "ghostbox-pt": 90.9},
                "boxes": {"ultralytics-pt": 3, "ghostbox-pt": 3}, "ghostbox_over_ultralytics": {"pt": 1.1},
                "feature_overhead_pct": {"pt": -9.1}, "made": stamp}
    text = markdown("detector", detector)
    _header(text)
    assert "| `ghostbox-pt` | 11.00 | 90.90 | 3 | 1.100x |" in text
    stream = {"model": "m.pt", "video": "/tmp/street.mp4", "frames": 30, "imgsz": 64, "batch": 8,
              "throughput": {"ultralytics_fps": 20.0, "ghostbox_fps": 25.0, "ghostbox_over_ultralytics": 1.25,
                             "ghostbox_wall_fps_with_startup": 5.0, "rounds": {"ultralytics": [20.0],
                                                                               "ghostbox": [25.0]},
                             "pipeline_stages_ms": {"detect": {"p50": 3.0, "p95": 4.0, "p99": 5.0}}},
              "transport": {"ipc/frame640": {"p50_ms": 0.3, "p99_ms": 0.9, "bytes": 1228900}},
              "memory": {"frames": 100, "fps": 20.0, "per_stage": {"broker": {"early_mb": 100.0, "late_mb": 101.0,
                                                                              "growth_pct": 1.0}},
                         "total": {"early_mb": 100.0, "late_mb": 101.0, "growth_pct": 1.0}},
              "made": made("ghostbox bench stream")}
    text = markdown("stream", stream)
    _header(text)
    assert "| ghostbox / Ultralytics | 1.250x |  |" in text and "| all stages | 100.0 | 101.0 | +1.00% |" in text
