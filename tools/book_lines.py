"""Print, per chapter, visible code lines, folded code lines and prose lines (optionally at a git revision).

    python tools/book_lines.py            # the working tree
    python tools/book_lines.py HEAD~5     # a revision, for a before/after table
"""

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from book_cells import counts  # noqa: E402

root = Path(__file__).resolve().parents[1]
rev = sys.argv[1] if len(sys.argv) > 1 else None
print("| chapter | visible code | folded code | prose | longest visible cell |\n|---|---|---|---|---|")
for path in sorted((root / "book").glob("*.md")):
    text = (subprocess.run(["git", "show", f"{rev}:book/{path.name}"], cwd=root, capture_output=True, text=True).stdout
            if rev else path.read_text(encoding="utf-8"))
    c = counts(text)
    print(f"| {path.stem} | {c['visible_code']} | {c['folded_code']} | {c['prose']} | {c['longest_visible']} |")
