"""Same outputs before and after a change: `ghostbox demo`, `ghostbox eval` on the seed-0 world and
`ghostbox detect` on the bundled samples, run in a worktree of a git ref and in this tree, compared.

    .venv/bin/python tools/same_outputs.py --base REF [--keep DIR]

JSONL rows are compared line by line with their timings (`t`, `latency_ms`) taken out and floats within
1e-4 or 0.01 (two runs of one tree differ in a score's or a rounded box's last digit); report.json and summary.json
likewise (wall times and rates out, the tree's own path made relative). Prints one line per output and exits
1 when any differs. The seed-0 world is read from .ghostbox/worlds/seed0 (made by
`ghostbox synth --seed 0 --out .ghostbox/worlds/seed0` when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WORLD = REPO / ".ghostbox" / "worlds" / "seed0"
FILTER = "pipeline/assets/filters/ghostbox-street-n.filter.safetensors"
TIMING_KEYS = {"t", "latency_ms", "wall_s", "fps", "stages_ms", "seconds", "elapsed_s", "started", "created",
               "exit_codes", "restarts", "outputs"}


def _commands(out: Path) -> dict[str, list[str]]:
    return {
        # one worker: with several, the filter sees frames in arrival order and its rolling drift figures differ
        "demo": ["demo", "--out", str(out / "demo"), "--frames", "120", "--no-video", "--workers", "1"],
        "eval": ["eval", "--id", str(WORLD / "id" / "val"), "--ood", str(WORLD / "ood" / "near_test"),
                 "--ood", str(WORLD / "ood" / "far_test"), "--filter", FILTER, "--no-plots", "--out",
                 str(out / "eval")],
        "detect": ["detect", "pipeline/assets/samples", "--filter", FILTER, "--no-annotate", "--out",
                   str(out / "detect")],
    }


def _run(tree: Path, out: Path) -> dict[str, int]:
    codes = {}
    for name, argv in _commands(out).items():
        # `python -m pipeline` from the tree's root imports that tree's package (the current folder comes first)
        proc = subprocess.run([sys.executable, "-m", "pipeline", *argv], cwd=tree, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(tree)})
        codes[name] = proc.returncode
        if proc.returncode not in (0, 1):
            print(f"{tree.name}: {name} exited {proc.returncode}:\n{proc.stderr[-2000:]}", file=sys.stderr)
    return codes


def _strip(value: Any, root: str = "") -> Any:
    """Timings out, the tree's own path made relative."""
    if isinstance(value, dict):
        return {k: _strip(v, root) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_strip(v, root) for v in value]
    if isinstance(value, str) and root and value.startswith(root):
        return "<tree>" + value[len(root):]
    return value


def _same(x: Any, y: Any) -> bool:
    """Equal, floats within 1e-4 (relative above 1): two runs of one tree differ in a score's last digit (torch's
    thread scheduling), which is not a change."""
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_same(a, b) for a, b in zip(x, y))
    if isinstance(x, float) and isinstance(y, float):  # rows round boxes to 0.01 px: a last digit may flip
        return abs(x - y) <= max(1e-4 * max(1.0, abs(x)), 0.0101)
    return x == y


def _rows(path: Path, root: str) -> list[Any]:
    return [_strip(json.loads(line), root) for line in path.read_text().splitlines() if line.strip()]


def _compare(a: Path, b: Path, roots: tuple[str, str]) -> list[str]:
    lines = []
    for rel in ("demo/detections.jsonl", "demo/summary.json", "eval/report.json", "detect/detections.jsonl"):
        left, right = a / rel, b / rel
        if not left.is_file() or not right.is_file():
            lines.append(f"{rel}: missing ({'base' if not left.is_file() else 'this tree'})")
            continue
        if rel.endswith(".jsonl"):
            base, new = _rows(left, roots[0]), _rows(right, roots[1])
            differ = [i for i, (x, y) in enumerate(zip(base, new)) if not _same(x, y)]
            same = len(base) == len(new) and not differ
            lines.append(f"{rel}: {len(base)} vs {len(new)} rows, " + ("identical apart from timings" if same else
                         f"{len(differ)} differ (first: row {differ[0] if differ else len(min(base, new, key=len))})"))
        else:
            before, after = (_strip(json.loads(path.read_text()), root) for path, root in ((left, roots[0]),
                                                                                           (right, roots[1])))
            same = _same(before, after)
            lines.append(f"{rel}: " + ("identical apart from timings" if same else "DIFFERS"))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="git ref to compare against (e.g. the commit before a refactor)")
    parser.add_argument("--keep", help="keep both trees' outputs in this folder")
    args = parser.parse_args()
    if not WORLD.is_dir():
        subprocess.run([sys.executable, "-m", "pipeline", "synth", "--seed", "0", "--out", str(WORLD)], cwd=REPO,
                       check=True)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="same-outputs-"))
    work.mkdir(parents=True, exist_ok=True)
    base_tree = work / "base-tree"
    if base_tree.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=REPO, check=False)
    subprocess.run(["git", "worktree", "add", "--detach", "--force", str(base_tree), args.base], cwd=REPO, check=True,
                   capture_output=True)
    try:
        base_codes = _run(base_tree, work / "base")
        new_codes = _run(REPO, work / "new")
        lines = [f"exit codes: base {base_codes}, this tree {new_codes}"]
        lines += _compare(work / "base", work / "new", (str(base_tree), str(REPO)))
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=REPO, check=False)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))
    same = base_codes == new_codes and all("identical" in line for line in lines[1:])
    print("same outputs" if same else "OUTPUTS DIFFER")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
