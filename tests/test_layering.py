"""The README's code map is true: each module imports only from its own row of the table or the rows above it.

The one exception the README names: `api.lr_find` imports `lrfind.py`, which builds on the API, inside the function,
never when `taskembed.api` is imported.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "taskembed"


def readme_rows() -> list[list[str]]:
    """The module names of each row of README's code map, top to bottom."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("| module | what it holds |", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:
        first_cell = line.split("|")[1]
        rows.append([Path(name).stem for name in re.findall(r"`([\w/]+\.py)`", first_cell) if not name.startswith("demo/")])
    return rows


def imports(path: Path) -> list[tuple[str, bool]]:
    """(taskembed module imported, whether at module level) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "taskembed":
            parts = node.module.split(".")
            names = [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("taskembed.")]
        found += [(name, id(node) in top) for name in names if (PACKAGE / f"{name}.py").is_file()]
    return found


def test_every_module_is_in_the_code_map_once():
    listed = [m for row in readme_rows() for m in row]
    assert len(listed) == len(set(listed)), listed
    shipped = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert set(listed) == shipped, (sorted(shipped - set(listed)), sorted(set(listed) - shipped))


def test_modules_import_only_from_their_row_or_above():
    rows = readme_rows()
    level = {m: i for i, row in enumerate(rows) for m in row}
    wrong = []
    for module, i in level.items():
        for imported, at_top in imports(PACKAGE / f"{module}.py"):
            if level[imported] <= i or (module, imported, at_top) == ("api", "lrfind", False):
                continue
            wrong.append(f"{module} imports {imported}" + (" at module level" if at_top else " (inside a function)"))
    assert not wrong, wrong


def test_the_check_would_see_a_violation(tmp_path):
    # The parser finds imports inside functions and tells them from module-level ones.
    f = tmp_path / "m.py"
    f.write_text("from taskembed.data import collate\n\ndef g():\n    from taskembed import loop\n    import taskembed.embed\n")
    assert imports(f) == [("data", True), ("loop", False), ("embed", False)]


def test_the_prediction_path_leaves_the_heavy_libraries_unimported():
    """`predict` and the demo import taskembed.api; scikit-learn (about a second), matplotlib and datasets are imported
    by the functions that use them, so a one-line prediction does not wait for them."""
    import subprocess
    import sys

    code = ("import sys, taskembed.api, taskembed.predict, taskembed.cli\n"
            "print(sorted(m for m in ('sklearn', 'matplotlib', 'datasets', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
