"""Layers only point down: a package of `pipeline` imports only packages of its own layer or below
(every import, including those inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"

# bottom first; a name is a top-level module or sub-package of `pipeline`
LAYERS = (
    {"errors", "config_files", "detections", "matching", "ultralytics_env", "bundled"},
    {"detect", "data", "synth", "sources", "sinks", "tracks"},
    {"filter", "proxies"},
    {"evaluate", "finetune", "stream", "bench"},
    {"cli", "__main__"},
)
LAYER = {name: depth for depth, names in enumerate(LAYERS) for name in names}


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "pipeline" else [f"pipeline.{a.name}" for a in node.names]
            found += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, name.split(".")[1]) for line, name in found if name.startswith("pipeline.")]


def test_every_package_has_a_layer() -> None:
    names = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert names <= set(LAYER), f"give these a layer in tests/test_layers.py: {sorted(names - set(LAYER))}"


def test_nothing_imports_upward() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        me = parts[0]
        if me == "__init__":
            continue
        for line, target in _imports(path):
            if LAYER.get(target, -1) > LAYER[me]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({me}) imports pipeline.{target}")
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)
