"""Sessions: `nox -s scaffold` (generate; default the shipped example), `nox -s verify`, `nox -s tests`,
`nox -s lint`, `nox -s integration` (real torchtune), `nox -s slurm` (a real local Slurm). Pass an experiment
and options after `--`: `nox -s scaffold -- path/to/experiment --dry-run`."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

EXAMPLE = ["examples/capitalization", "--local-config", "examples/scaffold.local.example.yaml", "--no-check-paths"]
PYTHON = "3.11"


@nox.session(python=PYTHON)
def scaffold(session: nox.Session) -> None:
    """Generate an experiment (default: the shipped example, whose model paths are cluster paths)."""
    session.install(".")
    session.run("scaffold", "generate", *(session.posargs or EXAMPLE))


@nox.session(python=PYTHON)
def verify(session: nox.Session) -> None:
    """The verification suite (the package's pytest plugin). Default: generate the shipped example and verify it
    against golden/capitalization; with arguments, verify that experiment as it is (`nox -s verify -- DIR
    [--local-config P] [--no-check-paths] [pytest args]`), as an experiment repo's CI does."""
    session.install(".")
    if session.posargs:
        session.run("scaffold", "verify", *session.posargs)
        return
    session.run("scaffold", "generate", *EXAMPLE)
    session.run("scaffold", "verify", *EXAMPLE, "--golden-dir", "golden/capitalization")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The project's test suite (no GPU, no torchtune needed)."""
    session.install(".[test]")
    session.run("pytest", *session.posargs)


# The stack measured to work (SPEC section 6): torchtune 0.6.1 imports with torchao 0.10-0.11 or 0.13-0.15 only;
# torch is pinned to the CPU build on these machines (a range or a bare `torch` pulls a multi-GB CUDA build).
TORCHTUNE_STACK = ["torch==2.13.0", "torchtune==0.6.1", "torchao==0.15.0"]


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    """Real torchtune: generated configs bind (deep checks) and train for two steps on CPU."""
    session.install(*TORCHTUNE_STACK)
    session.install(".[test]")
    session.run("pytest", "tests/integration", "-m", "integration", "-s", *session.posargs)


@nox.session(python=PYTHON)
def slurm(session: nox.Session) -> None:
    """Real Slurm in the loop (root; installs slurmctld, slurmd, slurm-client and munge from Debian if missing):
    a local two-node cluster runs `sbatch --test-only` on generated scripts and the jobs `scaffold submit` queues
    (tiny model trained on CPU, requeue, multi-node). Start one by hand with
    `python -m scaffold.testing.local_slurm start [--nodes N]`."""
    import glob

    session.install(*TORCHTUNE_STACK)
    session.install(".[test]")
    session.run("pytest", *sorted(glob.glob("tests/integration/test_slurm*.py")), "-m", "slurm", "-s", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """On demand: time generate, an unchanged re-run and verify over sweeps of N runs (default 100 and 1,000;
    `nox -s bench -- --runs 100 1000 10000 --repeat 3`)."""
    session.install(".")
    session.run("python", "benchmarks/bench_generate.py", *(session.posargs or ["--runs", "100", "1000"]))


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
