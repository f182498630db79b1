"""The package's layers (docs/architecture.md): a module imports only modules of its own layer or lower ones, so
the pure parts (inputs, planner, renderer) never reach the write layer, the checks or the commands. A layer holds
units: the top-level modules of scaffold/ and its sub-packages, each sub-package one unit; no unit imports another
that imports it back, directly or not. Within a package too no module imports another that imports it back (a
cycle hides which of the two comes first), and no module takes another's private names (`_name`): what is used
across modules is public."""

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
    {"probe"},
    {"settings", "precedence"},
    {"runplanner"},
    {"plan"},
    {"render"},
    {"output"},
    {"slurm"},
    {"configread"},
    {"engine"},
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


def imported_modules(path: Path, package: Path = PACKAGE) -> list[tuple[str, int, bool]]:
    """(module of scaffold imported, line, whether only for type checking) of every import of a module, lazy ones
    too: `from .x import name` imports module x (x/__init__.py for a package), `from . import x` module x where x
    is one, else the package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }  # fmt: skip
    return [
        (m, node.lineno, id(node) in typing_only)
        for node in ast.walk(tree)
        for m in imported_modules_of(node, path, package)
    ]


def imported_modules_of(node: ast.AST, path: Path, package: Path = PACKAGE) -> list[str]:
    """The modules of scaffold one import statement of the module at `path` imports (see `imported_modules`)."""
    name = module_name(path, package)
    here = (name if path.name == "__init__.py" else name.rpartition(".")[0]).split(".")

    def is_module(dotted: str) -> bool:
        return is_unit(package.parent / Path(*dotted.split(".")[:-1]), dotted.split(".")[-1])

    if isinstance(node, ast.Import):
        found = [a.name for a in node.names if a.name.split(".")[0] == package.name]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
        if base.split(".")[0] != package.name:
            return []
        found = [f"{base}.{a.name}" if is_module(f"{base}.{a.name}") else base for a in node.names]
    else:
        return []
    return found


def imports(path: Path, package: Path = PACKAGE) -> list[tuple[str, int, bool]]:
    """(unit of scaffold imported, line, whether only for type checking) of every import of a module, relative or
    absolute, lazy ones too: the units of `imported_modules`."""
    return [(unit(m), line, typing_only) for m, line, typing_only in imported_modules(path, package)]


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


def shared_names(package: Path = PACKAGE) -> list[str]:
    """Names that two modules or packages of scaffold/ share (a traceback naming one would be ambiguous)."""
    paths = [p for p in package.rglob("*.py") if "__pycache__" not in p.parts]
    names = [p.stem for p in paths if p.stem not in ("__init__", "__main__")]
    names += [p.parent.name for p in paths if p.name == "__init__.py" and p.parent != package]
    return sorted({n for n in names if names.count(n) > 1})


def test_no_two_modules_share_a_name() -> None:
    assert not shared_names(), "modules or packages of scaffold/ that share a name"


def test_a_planted_shared_name_is_caught(tmp_path: Path) -> None:
    package = tmp_path / "scaffold"
    for path in ("__init__.py", "slurm/__init__.py", "slurm/arrays.py", "checks/__init__.py", "checks/arrays.py"):
        (package / path).parent.mkdir(parents=True, exist_ok=True)
        (package / path).write_text("")
    (package / "checks" / "slurm.py").write_text("")
    assert shared_names(package) == ["arrays", "slurm"]


def test_a_planted_upward_import_is_caught(tmp_path: Path) -> None:
    package = tmp_path / "scaffold"
    (package / "inputs").mkdir(parents=True)
    plan, params = package / "plan.py", package / "inputs" / "params.py"
    plan.write_text("from .output.writer import atomic_write\nfrom . import errors\n")
    params.write_text("from .. import plan\nfrom ..render import render_run\n")
    assert [n for n, _, _ in imports(plan, package) if RANK[n] > RANK["plan"]] == ["output"]
    assert [n for n, _, _ in imports(params, package) if RANK[n] > RANK["inputs"]] == ["plan", "render"]


def module_cycle(paths: list[Path], package: Path = PACKAGE) -> list[str] | None:
    """The first import cycle between modules, as the modules around it, or None. An import inside a function
    counts: it runs each time the function is called, and it was made lazy to hide the cycle as often as to save
    import time. An import only for type checking does not (it never runs)."""
    edges = {
        module_name(p, package): {m for m, _, typing_only in imported_modules(p, package) if not typing_only}
        for p in paths
    }
    done: set[str] = set()

    def visit(m: str, stack: list[str]) -> list[str] | None:
        if m in stack:
            return [*stack[stack.index(m) :], m]
        if m in done:
            return None
        for n in sorted(edges.get(m, ()) - {m}):
            if cycle := visit(n, [*stack, m]):
                return cycle
        done.add(m)
        return None

    for m in sorted(edges):
        if cycle := visit(m, []):
            return cycle
    return None


def test_no_import_cycle_between_modules() -> None:
    cycle = module_cycle(MODULES)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_a_planted_module_cycle_is_caught(tmp_path: Path) -> None:
    package = tmp_path / "scaffold"
    (package / "inputs").mkdir(parents=True)
    (package / "inputs" / "__init__.py").write_text("")
    (package / "inputs" / "summary.py").write_text("from . import yamlio\n\n\ndef load():\n    from . import sweep\n")
    (package / "inputs" / "sweep.py").write_text("from .summary import load\n")
    (package / "inputs" / "yamlio.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import summary\n"
    )
    paths = sorted(package.rglob("*.py"))
    assert module_cycle(paths, package) == [
        "scaffold.inputs.summary",
        "scaffold.inputs.sweep",
        "scaffold.inputs.summary",
    ]
    (package / "inputs" / "sweep.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .summary import load\n"
    )
    assert module_cycle(paths, package) is None  # imports for type checking only never run


def private_imports(path: Path, package: Path = PACKAGE) -> list[str]:
    """Another module's private names (`_name`, not dunders) a module takes: `from .x import _name`, or `x._name`
    where x is a module of scaffold it imported."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = module_name(path, package)

    def private(name: str) -> bool:
        return name.startswith("_") and not name.startswith("__")

    modules: set[str] = set()  # names bound to modules of scaffold (or to what they define)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            taken = [a.name for a in node.names if private(a.name)]
            froms = set(imported_modules_of(node, path, package))
            if froms and froms != {own}:
                out += [f"{name} from {' '.join(sorted(froms))} (line {node.lineno})" for name in taken]
                modules |= {a.asname or a.name for a in node.names if not private(a.name)}
        elif isinstance(node, ast.Import):
            modules |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.split(".")[0] == package.name}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and private(node.attr)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
        ):
            out.append(f"{node.value.id}.{node.attr} (line {node.lineno})")
    return out


# Private names still taken across modules, each with the change that removes it.
KNOWN_PRIVATE: dict[str, list[str]] = {}  # module -> the private names it may take (none today)


@pytest.mark.parametrize("path", MODULES, ids=module_id)
def test_no_module_takes_another_modules_private_names(path: Path) -> None:
    taken = [p for p in private_imports(path) if p not in KNOWN_PRIVATE.get(module_id(path), [])]
    assert not taken, f"{module_id(path)} takes private names of other modules: {', '.join(taken)}"


def test_a_planted_private_import_is_caught(tmp_path: Path) -> None:
    package = tmp_path / "scaffold"
    (package / "commands").mkdir(parents=True)
    (package / "commands" / "__init__.py").write_text("")
    (package / "render.py").write_text("def _render():\n    pass\n")
    (package / "commands" / "generate.py").write_text("def _load_plan():\n    _load_plan()\n")
    setup = package / "commands" / "setupfinetune.py"
    setup.write_text(
        "from .. import render\nfrom ..render import __doc__\nfrom .generate import _load_plan\n\n\n"
        "def f():\n    return render._render(), render.__name__, _load_plan()\n"
    )
    assert private_imports(setup, package) == [
        "_load_plan from scaffold.commands.generate (line 3)",
        "render._render (line 7)",
    ]
    assert private_imports(package / "commands" / "generate.py", package) == []  # its own private names
