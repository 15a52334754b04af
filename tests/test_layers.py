"""Layers only point down: a package of `pipeline` imports only packages of its own layer or below
(every import: at module top, inside functions, relative, or by name through importlib)."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"

# bottom first; a name is a top-level module or sub-package of `pipeline`
LAYERS = (
    {"errors", "config_files", "detections", "matching", "ultralytics_env", "bundled", "box_geometry", "json_files",
     "kind_tally", "page_stamp"},
    {"detect", "data", "synth", "sources", "sinks", "tracks"},
    {"filter", "proxies"},
    {"evaluate", "finetune", "stream", "bench", "web"},
    {"cli", "__main__"},
)
LAYER = {name: depth for depth, names in enumerate(LAYERS) for name in names}


def _imports(path: Path, package: Path) -> list[tuple[int, str]]:
    """(line, top-level name under `pipeline`) of every import of a `pipeline` module in `path`."""
    here = ["pipeline", *path.relative_to(package).with_suffix("").parts]
    if here[-1] == "__init__":
        here = here[:-1] + ["__init__"]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                base = ".".join(here[: len(here) - node.level] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] if base == "pipeline" else [base]
            found += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return [(line, name.split(".")[1]) for line, name in found if name.startswith("pipeline.")]


def upward_imports(package: Path) -> list[str]:
    upward = []
    for path in sorted(package.rglob("*.py")):
        me = path.relative_to(package).with_suffix("").parts[0]
        if me == "__init__":
            continue
        for line, target in _imports(path, package):
            if LAYER.get(target, -1) > LAYER[me]:
                upward.append(f"{path.relative_to(package.parent)}:{line} ({me}) imports pipeline.{target}")
    return upward


def test_every_package_has_a_layer() -> None:
    names = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert names <= set(LAYER), f"give these a layer in tests/test_layers.py: {sorted(names - set(LAYER))}"


def test_nothing_imports_upward() -> None:
    upward = upward_imports(PACKAGE)
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_the_check_catches_upward_imports_of_every_kind(tmp_path: Path) -> None:
    """A copy of the real tree with four upward imports planted: each is reported, nothing else."""
    tree = tmp_path / "pipeline"
    shutil.copytree(PACKAGE, tree, ignore=shutil.ignore_patterns("__pycache__", "assets"))
    planted = {
        "detections.py": "\nfrom pipeline.filter import calibrate  # noqa\n",  # bottom -> filter, module top
        "detect/config.py": "\ndef _late():\n    from pipeline.evaluate import runner  # noqa\n",  # inside a function
        "filter/calibrate.py": "\nfrom ..stream import protocol  # noqa\n",  # relative
        "data/spec.py": "\nimport importlib\n_cli = importlib.import_module('pipeline.cli.main')\n",  # by name
    }
    for name, text in planted.items():
        with open(tree / name, "a") as f:
            f.write(text)
    found = upward_imports(tree)
    assert len(found) == 4, found
    assert {line.split(":")[0] for line in found} == {f"pipeline/{name}" for name in planted}
    assert any("(detections) imports pipeline.filter" in line for line in found)
    assert any("(filter) imports pipeline.stream" in line for line in found)
