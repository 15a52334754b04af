"""The health check finds a stage's run folder and progress file by the names the stages use (run_paths.py)."""

from __future__ import annotations

from pathlib import Path

from pipeline.stream.config import default_run_dir, progress_file
from pipeline.stream.health import config_run_dirs


def test_the_health_check_looks_where_a_config_started_stage_writes(tmp_path: Path) -> None:
    config = tmp_path / "graph.yaml"
    config.write_text("sources: []\n")
    assert default_run_dir(config) in config_run_dirs(config)
    config.write_text("run_dir: runs/here  # a comment\nsources: []\n")
    assert tmp_path / "runs" / "here" in config_run_dirs(config)
    assert progress_file(tmp_path, "sink:out") == tmp_path / "progress" / "sink_out.json"
