"""The floors of docs/architecture.md hold: every import points down (or across one floor), and none
runs in a circle.

The floors are read from the table in docs/architecture.md, so the doc and this test cannot drift
apart. Imports are read with `ast` from every project module (tests/ excluded), at module level
and inside functions alike: a lazy import still ties the two files together.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
SKIP_DIRS = {"tests", "notebooks", "runs", "outputs", "mutants", "__pycache__"}  # mutants: mutmut's copy


def read_floors(doc: Path = DOC) -> list[tuple[int, list[str]]]:
    """[(floor number, [pattern, ...])] from the doc's table rows ``| 4 | entry | `a.py`, `dir/` |``."""
    floors = []
    for line in doc.read_text().splitlines():
        m = re.match(r"^\|\s*(\d+)\s*\|[^|]*\|(.*)\|\s*$", line)
        if m:
            floors.append((int(m.group(1)), re.findall(r"`([^`]+)`", m.group(2))))
    return floors


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the project (not tests/, not hidden dirs)."""
    mods = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)  # no .venv walk
        for name in sorted(f for f in files if f.endswith(".py")):
            path = Path(folder) / name
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def floor_of(path: Path, floors, root: Path = ROOT) -> int | None:
    """The floor whose pattern matches `module`: ``dir/`` matches everything under it, ``x.py`` (with
    shell wildcards) a top-level file."""
    rel = path.relative_to(root).as_posix()
    for number, patterns in floors:
        for pattern in patterns:
            if pattern.endswith("/") and rel.startswith(pattern):
                return number
            if not pattern.endswith("/") and fnmatch.fnmatch(rel, pattern):
                return number
    return None


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The project module that `import name` loads (the longest project prefix), or None (third party)."""
    while name:
        if name in mods:
            return name
        name = name.rpartition(".")[0]
    return None


@functools.cache
def _parse(text: str) -> ast.Module:
    return ast.parse(text)  # once per file content: two tests walk the same files


def imports_of(module: str, path: Path, mods: dict[str, Path], packages: bool = True) -> list[tuple[str, int]]:
    """[(imported project module, line)] for every import statement in the file, functions included.

    ``from pkg import name`` counts as an import of ``pkg.name`` when that is a module, else of ``pkg``.
    Importing ``a.b.c`` also runs the package ``a.b`` (its ``__init__``): that edge is kept unless the
    package contains the importer (a package's own modules may import its siblings); `packages=False`
    leaves these implied edges out.
    """
    found = []
    tree = _parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".") if package else []
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name, mods)
            if target is None or target == module:
                continue
            found.append((target, node.lineno))
            parent = target.rpartition(".")[0] if packages else ""
            while parent:
                if parent in mods and not (module + ".").startswith(parent + "."):
                    found.append((parent, node.lineno))
                parent = parent.rpartition(".")[0]
    return found


def upward_imports(mods: dict[str, Path], floors, root: Path = ROOT) -> list[str]:
    """One line per import from a lower floor to a higher one."""
    bad = []
    for module, path in mods.items():
        here = floor_of(path, floors, root)
        for target, line in imports_of(module, path, mods, packages=False):  # a package is on its modules' floor
            there = floor_of(mods[target], floors, root)
            if here is not None and there is not None and there > here:
                bad.append(f"{path.relative_to(root).as_posix()}:{line} (floor {here}) imports {target} (floor {there})")
    return bad


def cycles(mods: dict[str, Path]) -> list[list[str]]:
    """The import cycles, one per strongly connected group of modules (Tarjan), each as a closed path."""
    graph = {m: sorted({t for t, _ in imports_of(m, p, mods)}) for m, p in mods.items()}
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in graph:
        if v not in index:
            visit(v)
    return [_closed_path(sorted(g), graph) for g in groups]


def _closed_path(group: list[str], graph: dict[str, list[str]]) -> list[str]:
    """A readable cycle inside `group`: start at its first module, follow edges until one repeats."""
    members, path = set(group), [group[0]]
    while True:
        nxt = next(w for w in graph[path[-1]] if w in members)
        if nxt in path:
            return path[path.index(nxt):] + [nxt]
        path.append(nxt)


# ----------------------------------------------------------------------------- the checks
def test_the_doc_names_four_floors_and_every_module_has_one():
    floors = read_floors()
    assert [n for n, _ in floors] == [4, 3, 2, 1], f"{DOC} must list floors 4..1 in its table"
    mods = project_modules()
    assert {"train_qlora_grpo", "run_end", "eval.evaluate", "qlora_grpo.rundir", "medvqa_data.schema"} <= set(mods)
    homeless = [str(p.relative_to(ROOT)) for m, p in mods.items() if floor_of(p, floors) is None]
    assert not homeless, f"modules on no floor (add them to the table in {DOC.relative_to(ROOT)}): {homeless}"


def test_no_import_points_up_a_floor():
    bad = upward_imports(project_modules(), read_floors())
    assert not bad, "imports from a lower floor to a higher one:\n" + "\n".join(bad)


def test_no_import_cycles():
    found = cycles(project_modules())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


# ----------------------------------------------------------------------------- the checks can fail
@pytest.fixture
def fake_project(tmp_path):
    """A project in miniature on the real floors, down one floor at each step: entry -> eval ->
    library -> data. Returns (root, write); `write(rel, text)` (re)writes one file."""
    def write(rel: str, text: str = "") -> None:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)

    for pkg in ("medvqa_data", "qlora_grpo", "eval"):
        write(f"{pkg}/__init__.py")
    write("train_sft.py", "import eval.ev\n")
    write("eval/ev.py", "from qlora_grpo import lib\n")
    write("qlora_grpo/lib.py", "def f():\n    from medvqa_data.rows import load\n")
    write("medvqa_data/rows.py", "import json\n")
    return tmp_path, write


def test_an_upward_import_inside_a_function_is_caught(fake_project):
    root, write = fake_project
    floors = read_floors()
    assert upward_imports(project_modules(root), floors, root) == []
    write("qlora_grpo/lib.py", "def f():\n    from eval.ev import g\n")  # library -> evaluation: up
    assert upward_imports(project_modules(root), floors, root) == [
        "qlora_grpo/lib.py:2 (floor 2) imports eval.ev (floor 3)"]


def test_a_cycle_through_a_package_init_is_caught(fake_project):
    root, write = fake_project
    write("medvqa_data/sources/__init__.py", "from medvqa_data.sources import a\n")
    write("medvqa_data/sources/a.py", "from medvqa_data import rows\n")
    assert cycles(project_modules(root)) == []  # a package importing its own modules is no cycle
    write("medvqa_data/rows.py", "def hint():\n    from medvqa_data.sources.a import x\n")
    assert cycles(project_modules(root)) == [
        ["medvqa_data.rows", "medvqa_data.sources", "medvqa_data.sources.a", "medvqa_data.rows"]]
