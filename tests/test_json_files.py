"""`write_json`: the file is replaced whole (no temporary file left, none on failure), in the caller's format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.json_files import replace_text, write_json


def test_write_json_formats(tmp_path: Path) -> None:
    data = {"b": 1, "a": [1, 2]}
    path = tmp_path / "x.json"
    write_json(path, data)
    assert path.read_text() == json.dumps(data, indent=2) + "\n"
    write_json(path, data, indent=1, sort_keys=True)
    assert path.read_text() == json.dumps(data, indent=1, sort_keys=True) + "\n"
    write_json(path, data, indent=None, newline=False)
    assert path.read_text() == json.dumps(data)
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_replace_text_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("old")
    with pytest.raises(TypeError):
        write_json(path, {"x": object()})  # not JSON: nothing is written
    assert path.read_text() == "old"
    with pytest.raises(OSError):
        replace_text(path, "new", tmp=tmp_path / "missing" / "x.tmp")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_replace_text_names_its_temporary_file(tmp_path: Path) -> None:
    path, tmp = tmp_path / "summary.json", tmp_path / "summary.json.tmp"
    replace_text(path, "{}", tmp=tmp)
    assert path.read_text() == "{}" and not tmp.exists()
