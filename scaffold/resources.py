"""Where the shipped data lives: `schemas/` and `templates/` inside the installed package, or at the top
of a source checkout (editable installs and running from the repository)."""

from __future__ import annotations

import hashlib
import os
from functools import cache
from pathlib import Path

import yaml

_PACKAGE = Path(__file__).resolve().parent
# libyaml's safe loader where PyYAML was built with it: the same resolvers and constructors as yaml.SafeLoader (the
# same data), with the scanning and parsing in C (the shipped files are read by every process).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def data_dir(name: str) -> Path:
    """The `schemas` or `templates` directory."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"scaffold-torchtune is installed without its {name}/ directory")


@cache
def load_data(name: str) -> dict:
    """A YAML data file shipped in templates/ (model registry, parameter table, recipe keys)."""
    with open(data_dir("templates") / name, encoding="utf-8") as f:
        return yaml.load(f, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader


@cache
def generator_digest() -> str:
    """A digest of everything besides a run's settings and its model's registry entry that shapes its generated
    texts or decides whether they pass: the package's version, every source file of the package (the renderer,
    the rules, the planner, the checks of the self-check...), the templates and the data files beside them, and
    the schemas. An upgrade, or any change to one of them, re-renders and re-checks every run (the fingerprints,
    scaffold.render) and validates every input again (the verdicts on disk, scaffold.inputs.schemas)."""
    from . import __version__

    h = hashlib.sha256(f"scaffold-torchtune {__version__}\n".encode())
    package = Path(__file__).resolve().parent
    trees = [(package, "*.py"), (data_dir("templates"), "*"), (data_dir("schemas"), "*")]
    for base, pattern in trees:
        for path in sorted(p for p in base.rglob(pattern) if p.is_file() and "__pycache__" not in p.parts):
            h.update(f"{path.relative_to(base).as_posix()}\0{path.stat().st_size}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


@cache
def package_stamp(package: str) -> str:
    """The installed package's top-level files (name, size, modification time), found without importing it or
    reading its metadata (importlib.metadata: about 50 ms a process): an upgrade or a reinstall rewrites them, so it
    is another stamp. For the caches' keys: a new stamp is a cache missed, never a wrong entry used."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return f"{package}: not found"
    files = []
    with os.scandir(Path(spec.origin).parent) as entries:
        for entry in entries:
            if entry.is_file():
                info = entry.stat()
                files.append((entry.name, info.st_size, info.st_mtime_ns))
    return f"{package}: {sorted(files)!r}"


def cache_directory(name: str, env: str) -> Path | None:
    """Where this tool keeps the cache `name` for the user: the directory the environment variable `env` names
    ("off": none), else $XDG_CACHE_HOME/scaffold-torchtune/NAME (~/.cache/... by default)."""
    value = os.environ.get(env)
    if value == "off":
        return None
    if value:
        return Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "scaffold-torchtune" / name
