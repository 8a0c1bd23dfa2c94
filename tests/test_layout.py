"""The README's layout table names every top-level folder, and every folder it names exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| `([^`/]+)/` \|")


def _table_folders(readme: str) -> set[str]:
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    return {m.group(1) for line in section.splitlines() if (m := ROW.match(line))}


def test_the_readme_layout_table_matches_the_folders() -> None:
    listed = _table_folders((REPO / "README.md").read_text())
    present = {
        p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))
    }  # hidden state and bytecode caches are not layout
    assert listed, "no layout table found in the README"
    assert sorted(present - listed) == [], "folders missing from the README's layout table"
    assert sorted(listed - present) == [], "folders in the README's layout table that do not exist"
