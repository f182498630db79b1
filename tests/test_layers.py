"""The package's layers (docs/architecture.md): a module imports only modules of its own layer or lower ones, so
the pure parts (inputs, planner, renderer) never reach the write layer, the checks or the commands. A layer holds
units: the top-level modules of scaffold/ and its sub-packages, each sub-package one unit (imports between the
modules of one package are not checked here); no unit imports another that imports it back, directly or not."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "scaffold"
LAYERS = [
    {
        "__init__",
        "confine",
        "layout",
        "errors",
        "resources",
        "estimates",
        "rules",
        "stamps",
        "steps",
        "testing",
        "timeutil",
        "torchtune_ext",
    },
    {"inputs"},
    {"settings"},
    {"plan"},
    {"render"},
    {"output"},
    {"slurm"},
    {"checks"},
    {"verify"},
    {"commands"},
    {"__main__"},
]
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def unit(module: str) -> str:
    """The unit of a dotted module name under scaffold: its top-level module or sub-package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_unit(package: Path, name: str) -> bool:
    return (package / f"{name}.py").exists() or (package / name / "__init__.py").exists()


def imports(path: Path, package: Path = PACKAGE) -> list[tuple[str, int, bool]]:
    """(unit of scaffold imported, line, whether only for type checking) of every import of a module, relative or
    absolute, lazy ones too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }  # fmt: skip
    name = module_name(path, package)
    here = (name if path.name == "__init__.py" else name.rpartition(".")[0]).split(".")
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found = [a.name for a in node.names if a.name.split(".")[0] == package.name]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            if base.split(".")[0] != package.name:
                continue
            # `from .. import inputs` names a unit; `from .. import __version__`, scaffold/__init__.py
            found = [
                f"{base}.{a.name}" if base == package.name and is_unit(package, a.name) else base for a in node.names
            ]
        else:
            continue
        out += [(unit(m), node.lineno, id(node) in typing_only) for m in found]
    return out


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
UNITS = {unit(module_name(p)) for p in MODULES}


def module_id(path: Path) -> str:
    return str(path.relative_to(PACKAGE))


def test_every_unit_has_a_layer() -> None:
    assert not sorted(UNITS - set(RANK)), "units of scaffold/ in no layer"
    assert not sorted(set(RANK) - UNITS), "layers name units scaffold/ does not have"


@pytest.mark.parametrize("path", MODULES, ids=module_id)
def test_no_module_imports_a_higher_layer(path: Path) -> None:
    own = unit(module_name(path))
    upward = [
        f"{name} (line {line})"
        for name, line, typing_only in imports(path)
        if name in RANK and RANK[name] > RANK[own] and not typing_only
    ]
    assert not upward, f"{module_id(path)} ({own}) imports a higher layer: {', '.join(upward)}"


def test_no_import_cycle_between_units() -> None:
    edges: dict[str, set[str]] = {u: set() for u in UNITS}
    for path in MODULES:
        own = unit(module_name(path))
        edges[own] |= {name for name, _, typing_only in imports(path) if name != own and not typing_only}
    done: set[str] = set()

    def visit(u: str, stack: list[str]) -> None:
        assert u not in stack, "import cycle: " + " -> ".join([*stack[stack.index(u) :], u])
        if u not in done:
            for v in sorted(edges.get(u, ())):
                visit(v, [*stack, u])
            done.add(u)

    for u in sorted(edges):
        visit(u, [])


def test_a_planted_upward_import_is_caught(tmp_path: Path) -> None:
    package = tmp_path / "scaffold"
    (package / "inputs").mkdir(parents=True)
    plan, params = package / "plan.py", package / "inputs" / "params.py"
    plan.write_text("from .output.writer import atomic_write\nfrom . import errors\n")
    params.write_text("from .. import plan\nfrom ..render import render_run\n")
    assert [n for n, _, _ in imports(plan, package) if RANK[n] > RANK["plan"]] == ["output"]
    assert [n for n, _, _ in imports(params, package) if RANK[n] > RANK["inputs"]] == ["plan", "render"]
