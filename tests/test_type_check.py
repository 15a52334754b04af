"""pipeline/ type-checks clean under the mypy settings in pyproject.toml ([tool.mypy])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # about half a minute without a cache
def test_mypy_finds_nothing() -> None:
    # No paths on the command line: [tool.mypy] names the package. The incremental cache in
    # .mypy_cache (gitignored) makes a rerun take seconds instead of half a minute.
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(REPO / ".mypy_cache")],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    # mypy missing is a failure too: it comes with the dev extra the test command installs
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
