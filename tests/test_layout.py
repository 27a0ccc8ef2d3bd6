"""The library's layout: its parts import one way only (no cycles, nothing imports upwards), and each
part imports another through what that part is, never through an old flat module path."""

import ast
from pathlib import Path

import bnlib

ROOT = Path(bnlib.__file__).parent

# From the bottom up: each part may import only the parts before it.
LAYERS = ["_checks", "nn", "data", "grading", "by_hand", "models", "seeds", "engine",
          "diagnostics", "inference", "training", "plotting", "cli", "__main__"]


def part_of(module: str) -> str:
    """The sub-package or top-level module of a dotted bnlib module name."""
    return module.split(".")[1]


def imported_parts(path: Path) -> set[str]:
    """The other bnlib parts that the module at ``path`` imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bnlib."):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("bnlib."))
    return {part_of(name) for name in names}


def test_every_part_imports_only_the_parts_below_it():
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if relative.parts in {("__init__.py",), ("_moved.py",)}:
            continue  # the public face: it imports every part
        part = relative.parts[0].removesuffix(".py")
        if part not in LAYERS:
            continue  # a module not yet placed in a part: nothing checks what it imports
        below = set(LAYERS[:LAYERS.index(part)])
        upwards = imported_parts(path) - below - {part}
        assert not upwards, f"{relative} imports {sorted(upwards)}, which sit above {part}"


def test_no_module_is_much_longer_than_300_lines():
    long = {str(path.relative_to(ROOT)): n for path in ROOT.rglob("*.py")
            if (n := len(path.read_text().splitlines())) > 330}
    assert not long


def test_every_module_sits_in_a_part():
    top = {path.stem for path in ROOT.glob("*.py")} | {
        path.parent.name for path in ROOT.glob("*/__init__.py")}
    unplaced = top - set(LAYERS) - {"__init__", "_moved"}
    assert not unplaced, f"place {sorted(unplaced)} in a sub-package, or add it to LAYERS"
