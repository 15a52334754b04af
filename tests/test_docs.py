"""The README stays a newcomer's page, and no relative link in it or in docs/ points nowhere."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# [text](target) and ![alt](target), the alt or text possibly spanning lines; targets without spaces
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _pages() -> list[Path]:
    return [README, *sorted((REPO / "docs").rglob("*.md"))]


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines < 200, f"README.md has {lines} lines: move reference material to docs/"


def test_readme_keeps_the_quick_start_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "bash tools/setup.sh && .venv/bin/ghostbox demo" in text
    assert "bash tools/setup.sh && .venv/bin/python -m pytest -q" in text  # CI runs this line (.ci/run)


def test_relative_links_point_to_files() -> None:
    broken = []
    for page in _pages():
        text = FENCE.sub("", page.read_text(encoding="utf-8"))
        for target in LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            dest = (page.parent / unquote(path)).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_docs_pages_are_linked() -> None:
    """Every page in docs/ can be reached from the README or from another page."""
    linked: set[Path] = set()
    for page in _pages():
        for target in LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
            path = target.partition("#")[0]
            if path and not re.match(r"^[a-z][a-z0-9+.-]*:", path):
                linked.add((page.parent / unquote(path)).resolve())
    orphans = [p.relative_to(REPO) for p in _pages()[1:] if p.resolve() not in linked]
    assert not orphans, f"pages no other page links to: {orphans}"
