"""The package's layers (docs/architecture.md): a module imports only modules of its own layer or lower ones, so
the pure parts (inputs, planner, renderer) never reach the write layer or the commands."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "scaffold"
LAYERS = [
    {"errors", "timeutil", "discover", "resources", "rules", "yamlio"},
    {"params", "settings", "schemas", "sweep", "summary", "localconfig", "modelrecognition", "registry", "yamlread"},
    {"plan"},
    {"render"},
    {"writer", "runlog", "lock", "outcome", "report"},
    {"selfcheck", "pipeline", "arrays", "golden", "torchtune_checks", "sbatch"},
    {"generate", "setupfinetune", "submit", "ci"},
    {"cli", "__main__"},
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(top-level module of scaffold imported, line, whether only for type checking) of a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }  # fmt: skip
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module] if node.module else [a.name for a in node.names]
            out += [(n.split(".")[0], node.lineno, id(node) in typing_only) for n in names]
    return out


MODULES = sorted(p for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def test_every_module_has_a_layer() -> None:
    assert not [p.stem for p in MODULES if p.stem not in RANK]


@pytest.mark.parametrize("path", MODULES, ids=[p.stem for p in MODULES])
def test_no_module_imports_a_higher_layer(path: Path) -> None:
    upward = [
        f"{name} (line {line})"
        for name, line, typing_only in imports(path)
        if name in RANK and RANK[name] > RANK[path.stem] and not typing_only
    ]
    assert not upward, f"{path.stem} imports a higher layer: {', '.join(upward)}"


def test_a_planted_upward_import_is_caught(tmp_path: Path) -> None:
    planted = tmp_path / "plan.py"
    planted.write_text("from .writer import atomic_write\n")
    assert [n for n, _, _ in imports(planted) if RANK[n] > RANK["plan"]] == ["writer"]
