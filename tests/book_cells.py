"""Parse the book's MyST notebooks into code cells and prose (used by the layout test and tools/book_lines.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

HIDDEN = {"hide-input", "remove-input", "remove-cell"}
MAX_VISIBLE = 15  # lines of a visible code cell, unless tagged ``sketch`` (a by-hand version that teaches)


@dataclass
class Cell:
    start: int            # 1-based line of the opening fence
    tags: tuple[str, ...]
    code: list[str]

    @property
    def visible(self) -> bool:
        return not HIDDEN & set(self.tags)


def parse(text: str) -> tuple[list[Cell], list[str]]:
    """``(code cells, prose lines)`` of a MyST markdown notebook (front matter and blank lines dropped)."""
    lines = text.splitlines()
    i = 0
    if lines and lines[0].strip() == "---":
        i = lines.index("---", 1) + 1
    cells, prose = [], []
    while i < len(lines):
        line = lines[i]
        if line.startswith("```{code-cell}"):
            start, i = i + 1, i + 1
            tags: list[str] = []
            if i < len(lines) and lines[i].strip() == "---":  # YAML options block
                j = lines.index("---", i + 1)
                for opt in lines[i + 1:j]:
                    m = re.match(r"\s*tags:\s*\[(.*)\]", opt)
                    if m:
                        tags += [t.strip().strip("\"'") for t in m.group(1).split(",") if t.strip()]
                i = j + 1
            while i < len(lines) and lines[i].startswith(":") and not lines[i].startswith("::"):
                m = re.match(r":tags:\s*\[(.*)\]", lines[i])
                if m:
                    tags += [t.strip().strip("\"'") for t in m.group(1).split(",") if t.strip()]
                i += 1
            code = []
            while i < len(lines) and lines[i].rstrip() != "```":
                code.append(lines[i])
                i += 1
            cells.append(Cell(start, tuple(tags), [c for c in code if c.strip()]))
        elif line.strip():
            prose.append(line)
        i += 1
    return cells, prose


def counts(text: str) -> dict:
    """Visible code lines, folded code lines and prose lines of a chapter."""
    cells, prose = parse(text)
    return {"visible_code": sum(len(c.code) for c in cells if c.visible),
            "folded_code": sum(len(c.code) for c in cells if not c.visible), "prose": len(prose),
            "longest_visible": max((len(c.code) for c in cells if c.visible and "sketch" not in c.tags), default=0)}
