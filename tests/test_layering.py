"""The house rules of the package layout, checked on the source itself.

Arrows point one way: cli → train, viz → build (and the façade) → checks → graph →
library → lang. A module may import its own layer and the layers below it, never one
above. The front end (`synthdsl.lang`) imports no torch, and no module is larger than
a newcomer can read.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "synthdsl"

#: Layer of each top-level part of the package: lower numbers are imported by higher ones.
LAYERS = {"files": 0, "lang": 0, "library": 1, "plugins": 1, "graph": 2, "checks": 3, "build": 4,
          "pipeline": 4, "train": 5, "viz": 5, "editor": 5, "cli": 6, "__main__": 7}
#: Most lines a module may have.
MAX_LINES = 500
#: Third-party packages the front end must never load.
HEAVY = ("torch", "timm", "torchvision", "safetensors", "networkx", "numpy")


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module a file imports (at any depth, TYPE_CHECKING blocks left out)."""
    tree = ast.parse(path.read_text("utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
            if node.module == "synthdsl":
                found += [(f"synthdsl.{a.name}", node.lineno) for a in node.names
                          if a.name in LAYERS]
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    if path.parent == PACKAGE and path.name == "__init__.py":
        return  # the lazy façade names everything, and imports nothing until asked
    part = _part(path)
    assert part in LAYERS, f"{path}: a new top-level part; give it a layer in LAYERS"
    wrong = []
    for name, line in _imports(path):
        bits = name.split(".")
        if bits[0] != "synthdsl" or len(bits) < 2 or bits[1] == "grammar":
            continue
        if LAYERS.get(bits[1], 99) > LAYERS[part]:
            wrong.append(f"line {line}: {name}")
    assert not wrong, f"{path.relative_to(PACKAGE)} ({part}) imports upwards: {wrong}"


@pytest.mark.parametrize("path", [p for p in _modules() if _part(p) in ("lang", "files")],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_front_end_imports_no_heavy_library(path):
    heavy = [f"line {line}: {name}" for name, line in _imports(path)
             if name.split(".")[0] in HEAVY]
    assert not heavy, f"{path.relative_to(PACKAGE)} imports {heavy}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_readable(path):
    lines = len(path.read_text("utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines"


@pytest.mark.parametrize("path", [p for p in _modules() if _part(p) == "viz"],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pictures_reach_models_only_through_the_source_layer(path):
    """viz draws the checked graph; it opens a source through `synthdsl.library` only."""
    building = [f"line {line}: {name}" for name, line in _imports(path)
                if name.split(".")[:2] in (["synthdsl", "build"], ["synthdsl", "train"])
                or name.split(".")[0] in ("timm", "torchvision")]
    assert not building, f"{path.relative_to(PACKAGE)} builds models itself: {building}"


def test_only_the_console_script_imports_the_cli():
    """The cli is reached from the console script and `python -m synthdsl` alone."""
    users = [str(p.relative_to(PACKAGE)) for p in _modules() if _part(p) not in ("cli", "__main__")
             and any(n.split(".")[:2] == ["synthdsl", "cli"] for n, _ in _imports(p))]
    assert not users


def test_every_folder_is_a_regular_package():
    """A folder without `__init__.py` still imports (as a namespace package) but is left
    out of walks over the package and of some wheels: every folder has one."""
    folders = {p.parent for p in _modules()} | {PACKAGE}
    missing = [str(f.relative_to(PACKAGE.parent)) for f in sorted(folders)
               if not (f / "__init__.py").is_file()]
    assert not missing
