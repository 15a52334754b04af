"""`ghostbox bench detector` refuses what would time nothing and says when its frames are cut (issue 25, failure 8
and 3): an unknown backend exits 2 before any model loads; a truncated --source is read as far as it goes, named,
and the command exits 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.bench.detector_speed import sample_frames
from pipeline.cli.main import main
from pipeline.sources.media_files import MediaReport
from tests.helpers.stream_helpers import cut_video


@pytest.mark.parametrize("backends", ["torch", ",", "pt,tensorrt"])
def test_an_unknown_backend_is_refused_with_the_choices(backends: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "detector", "--backends", backends]) == 2
    err = capsys.readouterr().err
    assert "--backends: unknown" in err and "choose from pt, onnx" in err


def test_a_truncated_source_is_named_and_marks_the_frames_incomplete(tmp_path: Path) -> None:
    clip = cut_video(tmp_path / "cut.avi", 60)  # the header still announces 60 frames
    report = MediaReport()
    frames = sample_frames(str(clip), 80, "32x24", report)
    assert len(frames) == 80 and frames[0].shape == (24, 32, 3)  # repeated to fill the rounds
    assert not report.complete
    assert any(str(clip) in line and "of 60 frames" in line for line in report.problems()), report.problems()
