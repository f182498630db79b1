"""Shared fixtures: a fresh copy of the shipped example (or of the original-format fixture) in a temporary directory,
and a way to run the real CLI."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

try:  # (this file is also read where only the package is installed: `nox -s verify` runs pytest in this repo)
    from hypothesis import settings
except ImportError:  # pragma: no cover
    settings = None

if settings is not None:
    # Property tests: derandomized by default, so a run's examples are the same on every machine and a red CI
    # always means a regression; the examples each test draws are set by its own @settings.
    # HYPOTHESIS_PROFILE=explore draws new random examples (and keeps failures in .hypothesis/ to replay).
    settings.register_profile("repro", derandomize=True, database=None, print_blob=True)
    settings.register_profile("explore", derandomize=False, print_blob=True)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repro"))

# The tool keeps caches on disk across processes (the token audit's records, the passes of schema validation, the
# compiled templates): the suite's processes share caches of their own, never the user's ~/.cache, removed at the end.
_CACHES = {
    "SCAFFOLD_AUDIT_CACHE": "audit",
    "SCAFFOLD_VALIDATED_CACHE": "validated",
    "SCAFFOLD_TEMPLATE_CACHE": "templates",
}
if any(env not in os.environ for env in _CACHES):
    _cache_root = tempfile.mkdtemp(prefix="scaffold-test-caches-")
    atexit.register(shutil.rmtree, _cache_root, True)
    for _env, _name in _CACHES.items():
        os.environ.setdefault(_env, os.path.join(_cache_root, _name))

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "capitalization"
EXAMPLE_LOCAL = REPO / "examples" / "scaffold.local.example.yaml"
# Inputs in the original tool's format, written for these tests (the suite reads nothing outside the repository).
ORIGINAL_FORMAT = REPO / "tests" / "fixtures" / "original_format"


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(
    *args: str | os.PathLike, cwd: Path | None = None, env: dict | None = None, user: int | None = None
) -> Result:
    """Run `python -m scaffold ...` as a real process (optionally as another user, for permission tests)."""
    cmd = [sys.executable, "-m", "scaffold", *map(str, args)]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    full_env = {k: v for k, v in os.environ.items() if k != "SCAFFOLD_LOCAL_CONFIG"} | (env or {})
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@dataclass
class Experiment:
    """A writable experiment directory with its summary and a local config beside it."""

    dir: Path
    local: Path

    @property
    def summary(self) -> Path:
        return self.dir / "experiment_summary.yaml"

    def load(self) -> dict:
        return yaml.safe_load(self.summary.read_text())

    def save(self, data: dict) -> None:
        self.summary.write_text(yaml.safe_dump(data, sort_keys=False))

    def generate(self, *args: str, **kw) -> Result:
        return run_cli("generate", self.dir, "--local-config", self.local, *args, **kw)

    def snapshot(self) -> dict[str, bytes]:
        """Every file under the experiment (for "nothing changed" assertions)."""
        return {
            str(p.relative_to(self.dir)): p.read_bytes()
            for p in sorted(self.dir.rglob("*"))
            if p.is_file() and p.name != ".scaffold.lock"  # holds the last writer's pid
        }


@pytest.fixture
def example(tmp_path: Path) -> Experiment:
    """The shipped example, copied; its model paths are cluster paths, so tests use --no-check-paths or
    point the model at `model_dir` below."""
    exp = tmp_path / "cap"
    shutil.copytree(EXAMPLE, exp, ignore=shutil.ignore_patterns("Llama-*", "logs", "arrays", ".scaffold-manifest.json"))
    local = tmp_path / "scaffold.local.yaml"
    shutil.copy(EXAMPLE_LOCAL, local)
    return Experiment(exp, local)


def make_model_dir(path: Path, files: list[str] | None = None) -> Path:
    """A model directory with the files the registry names (empty stand-ins: only their presence is checked
    by the generator; real weights are exercised by the torchtune integration tests)."""
    for name in files or ["config.json", "model.safetensors", "original/tokenizer.model"]:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("{}" if name.endswith(".json") else "")
    # A real (tiny, offline) Hugging Face tokenizer with the real Llama 3.2 Instruct chat template: the generator
    # requires one for chat runs, and the verification suite's train_eval_parity check tokenizes with it.
    from scaffold.testing.hf_tokenizers import write_hf_tokenizer

    write_hf_tokenizer(path, "llama3")
    return path


@pytest.fixture
def local_example(example: Experiment, tmp_path: Path) -> Experiment:
    """The example with experiment.dir pointing at the copy and the model at a local directory, so every path
    check runs for real."""
    data = example.load()
    data["experiment"]["dir"] = str(example.dir)
    data["models"]["base"][0]["path"] = str(make_model_dir(tmp_path / "models" / "Llama-3.2-1B-Instruct"))
    example.save(data)
    return example


# --- verification suite (tests/test_verify_*.py) ----------------------------------------------------------------

VERIFY_CLUSTER_DIR = "/cluster/exp/cap"  # experiment.dir of the suite's template: a cluster path, absent here


@pytest.fixture(scope="session")
def verify_template(tmp_path_factory) -> Experiment:
    """The shipped example generated once for the suite's tests: experiment.dir is a cluster path (as on a real
    cluster) and the model lives inside the experiment (models/...), so a copy of the directory carries every
    path the checks open, and each test plants its defect in its own copy."""
    root = tmp_path_factory.mktemp("verify-template")
    exp = root / "cap"
    shutil.copytree(EXAMPLE, exp, ignore=shutil.ignore_patterns("Llama-*", "logs", "arrays", ".scaffold-manifest.json"))
    local = root / "scaffold.local.yaml"
    shutil.copy(EXAMPLE_LOCAL, local)
    template = Experiment(exp, local)
    data = template.load()
    data["experiment"]["dir"] = VERIFY_CLUSTER_DIR
    data["models"]["base"][0]["path"] = "models/Llama-3.2-1B-Instruct"
    template.save(data)
    make_model_dir(exp / "models" / "Llama-3.2-1B-Instruct")
    res = template.generate("--no-check-paths")  # the model path is a cluster path; the checks map it here
    assert res.code == 0, res.out + res.err
    return template


@pytest.fixture
def restore_syrupy():
    """Nested in-process pytest runs (pytester) replace syrupy's module-level session; put the outer one back."""
    import syrupy

    saved = getattr(syrupy, "_syrupy", None)
    yield
    syrupy._syrupy = saved


@pytest.fixture
def planted(verify_template: Experiment, pytester, restore_syrupy):
    """A fresh copy of the suite's template experiment in pytester's directory, to plant a defect in."""
    from .verify_support import EXP, Planted

    shutil.copytree(verify_template.dir, pytester.path / EXP)
    local = pytester.path / "scaffold.local.yaml"
    shutil.copy(verify_template.local, local)
    return Planted(pytester.path / EXP, local)
