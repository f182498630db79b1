"""Sessions: `nox -s scaffold` (generate; default the shipped example), `nox -s verify`, `nox -s tests`,
`nox -s lint`, `nox -s integration` (real torchtune), `nox -s evaluator` (the real evaluator: inspect-ai),
`nox -s slurm` (a real local Slurm), `nox -s gate` (an experiment repository's pull-request gate, end to end). Pass an experiment and options after `--`:
`nox -s scaffold -- path/to/experiment --dry-run`."""

from __future__ import annotations

import shutil
import sys

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True
# A session whose interpreter is missing fails; it never reports "skipped" and exits 0.
nox.options.error_on_missing_interpreters = True

EXAMPLE = ["examples/capitalization", "--local-config", "examples/scaffold.local.example.yaml", "--no-check-paths"]
SUPPORTED = ("3.13", "3.12", "3.11")  # newest first: the one picked when nox itself runs on another Python
NO_PYTHON = (
    f"scaffold-torchtune needs Python 3.11, 3.12 or 3.13; nox runs on {sys.version.split()[0]} and none of "
    "python3.11, python3.12, python3.13 is on PATH (fix: install one of them, e.g. `apt install python3.11` or "
    "`pyenv install 3.12`, then run `python3.X -m pip install nox && python3.X -m nox ...` with it)"
)


def _python() -> str | None:
    """The sessions' interpreter: the one running nox when it is 3.11 or newer (None tells nox to use it), else
    the newest supported python3.X on PATH. With neither, sessions still start and fail with NO_PYTHON."""
    if sys.version_info >= (3, 11):  # noqa: UP036 (the noxfile runs on whatever Python runs nox)
        return None
    return next((v for v in SUPPORTED if shutil.which(f"python{v}")), None)


PYTHON = _python()


def _check_python(session: nox.Session) -> None:
    if PYTHON is None and sys.version_info < (3, 11):  # noqa: UP036
        session.error(NO_PYTHON)


# The torch wheel measured here (CPU build) is for Python 3.11: the real-torchtune sessions use a
# python3.11 found on PATH (by its path: never a version nox could skip), so that pip takes that file instead of a
# multi-GB CUDA build; without one, the interpreter of the other sessions.
TORCH_PYTHON = shutil.which("python3.11") or PYTHON


@nox.session(python=PYTHON)
def scaffold(session: nox.Session) -> None:
    """Generate an experiment (default: the shipped example, whose model paths are cluster paths)."""
    _check_python(session)
    session.install(".")
    session.run("scaffold", "generate", *(session.posargs or EXAMPLE))


@nox.session(python=PYTHON)
def verify(session: nox.Session) -> None:
    """The verification suite (the package's pytest plugin). Default: generate the shipped example and verify it
    against golden/capitalization; with arguments, verify that experiment as it is (`nox -s verify -- DIR
    [--local-config P] [--no-check-paths] [pytest args]`), as an experiment repo's CI does."""
    _check_python(session)
    session.install(".")
    if session.posargs:
        session.run("scaffold", "verify", *session.posargs)
        return
    session.run("scaffold", "generate", *EXAMPLE)
    session.run("scaffold", "verify", *EXAMPLE, "--golden-dir", "golden/capitalization")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The project's test suite (no GPU, no torchtune needed)."""
    _check_python(session)
    session.install(".[test]")
    session.run("pytest", *session.posargs)


# The stack measured to work: torchtune 0.6.1 imports with torchao 0.10-0.11 or 0.13-0.15 only;
# torch is pinned to the CPU build on these machines (a range or a bare `torch` pulls a multi-GB CUDA build).
# transformers: the dataset builders tokenize with the model's own Hugging Face tokenizer (train/eval parity).
TORCHTUNE_STACK = ["torch==2.13.0", "torchtune==0.6.1", "torchao==0.15.0", "transformers>=4.45"]


@nox.session(python=TORCH_PYTHON)
def integration(session: nox.Session) -> None:
    """Real torchtune: generated configs bind (deep checks) and train for two steps on CPU."""
    _check_python(session)
    session.install(*TORCHTUNE_STACK)
    session.install(".[test]")
    session.run("pytest", "tests/integration", "-m", "integration", "-s", *session.posargs)


# The evaluation environments of `nox -s evaluator`, one per leg: what cruijff_kit's evaluation step runs on
# (inspect-ai 0.3.209, transformers >= 4.57.1, < 5), and the same with the newest inspect-ai.
# torch first and alone (the CPU wheel on disk, as for the training stack); peft and accelerate load the adapters
# (the provider passes device_map); no torchao (peft refuses adapters beside a torchao older than 0.16).
EVALUATOR_LEGS = {
    "pinned": ["inspect-ai==0.3.209", "transformers>=4.57.1,<5", "peft", "accelerate"],
    "newest": ["inspect-ai", "transformers>=4.57.1,<5", "peft", "accelerate"],
}
EVALUATOR_TORCH = "torch==2.13.0"


def _evaluator_leg(session: nox.Session, name: str, requirements: list[str]) -> str:
    """The interpreter of one evaluator leg's venv, under the session's directory; built once (a later run with
    the same requirements reuses it, as nox reuses the session's own venv)."""
    import json
    from pathlib import Path

    root = Path(session.virtualenv.location) / "evaluator-legs" / name
    python = root / "bin" / "python"
    stamp = root / "scaffold-requirements.json"
    wanted = json.dumps([EVALUATOR_TORCH, *requirements])
    if python.is_file() and stamp.is_file() and stamp.read_text() == wanted:
        session.log(f"evaluator leg {name}: reusing {root}")
        return str(python)
    if root.exists():
        shutil.rmtree(root)
    session.run_install("python", "-m", "venv", str(root), silent=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    session.run_install(*pip, EVALUATOR_TORCH, external=True, silent=True)
    session.run_install(*pip, *requirements, external=True, silent=True)
    stamp.write_text(wanted)
    return str(python)


@nox.session(python=TORCH_PYTHON)
def evaluator(session: nox.Session) -> None:
    """The real evaluator (cruijff_kit's `inspect eval ... --model hf/local`, in its own venvs: inspect-ai 0.3.209
    and the newest) is fed exactly the prompt tokens each run trained on, and loads the trained adapter."""
    _check_python(session)
    session.install(*TORCHTUNE_STACK)
    session.install(".[test]")
    pythons = ",".join(f"{name}={_evaluator_leg(session, name, reqs)}" for name, reqs in EVALUATOR_LEGS.items())
    session.run(
        "pytest",
        "tests/integration/test_evaluator.py",
        "-m",
        "evaluator",
        "-s",
        *session.posargs,
        env={"SCAFFOLD_EVALUATOR_PYTHONS": pythons},
    )


@nox.session(python=TORCH_PYTHON)
def slurm(session: nox.Session) -> None:
    """Real Slurm in the loop (root; installs slurmctld, slurmd, slurm-client and munge from Debian if missing):
    a local two-node cluster runs `sbatch --test-only` on generated scripts and the jobs `scaffold submit` queues
    (tiny model trained on CPU, requeue, multi-node). Start one by hand with
    `python -m scaffold.testing.local_slurm start [--nodes N]`."""
    import glob

    _check_python(session)
    session.install(*TORCHTUNE_STACK)
    session.install(".[test]")
    session.run("pytest", *sorted(glob.glob("tests/integration/test_slurm*.py")), "-m", "slurm", "-s", *session.posargs)


@nox.session(python=PYTHON)
def gate(session: nox.Session) -> None:
    """An experiment repository's pull-request gate end to end (tests/gate): the tool installed from a git URL of a
    clone at a commit, generate, init-ci, commit; every `run:` step of the written workflow on fresh clones in fresh
    environments (passes; then fails naming the run a hand edit broke), and the pre-commit hook the same; both site
    config forms. Needs git and the package index (a few minutes)."""
    _check_python(session)
    session.install(".[test]")  # tokenizers: the tiny model directories carry real tokenizer files
    session.run("pytest", "tests/gate", "-m", "gate", "-s", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """On demand: time generate, an unchanged re-run and verify over sweeps of N runs (default 100 and 1,000, three
    rounds each; `nox -s bench -- --runs 100 1000 10000 --repeat 3`), on /dev/shm when it exists (`-- --tmp DIR`
    elsewhere), with the medians against the budget."""
    _check_python(session)
    session.install(".[test]")  # transformers: the parity check runs, as users run it
    args = session.posargs or ["--runs", "100", "1000", "--repeat", "3"]
    session.run("python", "benchmarks/bench_generate.py", *args)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
