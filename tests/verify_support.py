"""Helpers of the verification suite's tests: a writable copy of the generated example inside pytester's
directory, and the suite run over it in-process with its outcome per test id."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from scaffold.commands.verify_suite import PLUGIN, plugin_autoloads
from scaffold.engine import EXPERIMENT, RUN, all_checks
from scaffold.layout import FINE_TUNED, TRAINING_FILES

R4, R8, BASE = "Llama-3.2-1B-Instruct_rank4", "Llama-3.2-1B-Instruct_rank8", "Llama-3.2-1B-Instruct_base"
EXP = "cap"  # experiment-level tests are named after the experiment directory
# Arguments of every nested run: the plugin where it is not installed as an entry point, and no plugins the runs do
# not need (Hypothesis, where installed, is re-imported by every in-process run, as pytester restores sys.modules
# after each, and costs seconds).
NESTED_ARGS = ([] if plugin_autoloads() else ["-p", PLUGIN]) + [
    "-p",
    "no:cacheprovider",
    "-p",
    "no:hypothesispytest",
    "-p",
    "no:benchmark",
]


@dataclass
class Outcome:
    failed: set[str]
    skipped: dict[str, str]  # test id -> reason
    passed: set[str]
    text: str
    code: int


@dataclass
class Planted:
    """A writable copy of the generated example inside pytester's directory."""

    dir: Path
    local: Path

    def path(self, rel: str) -> Path:
        return self.dir / rel

    def replace(self, rel: str, old: str, new: str) -> None:
        """Replace `old`, which must occur exactly once, in a file of the experiment (or the local config)."""
        path = self.local if rel == "local" else self.dir / rel
        text = path.read_text()
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {rel}"
        path.write_text(text.replace(old, new))

    def edit_summary(self, change) -> None:
        """Change the summary as data (comments are lost, which no check reads)."""
        path = self.dir / "experiment_summary.yaml"
        data = yaml.safe_load(path.read_text())
        change(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    def append(self, rel: str, text: str) -> None:
        with open(self.dir / rel, "a") as f:
            f.write(text)

    def verify(self, pytester: pytest.Pytester, *args: str, golden: bool = False) -> Outcome:
        base = ["--experiment", self.dir.name, "--local-config", str(self.local), "-rs", *NESTED_ARGS]
        # Golden comparisons and the torchtune checks (where torchtune is importable) see most planted defects
        # too; they have their own tests (test_verify_suite.py, tests/integration).
        selection = "not components_bind" if golden else "not golden and not components_bind"
        result = pytester.runpytest(*base, "-k", selection, *args)
        reports = [r for r in result.reprec.getreports("pytest_runtest_logreport") if r.when == "call" or r.skipped]
        name = lambda r: r.nodeid.rpartition("::")[2]  # noqa: E731
        return Outcome(
            failed={name(r) for r in reports if r.failed},
            skipped={name(r): str(r.longrepr[2]) for r in reports if r.skipped},
            passed={name(r) for r in reports if r.passed},
            text=result.stdout.str(),
            code=int(result.ret),
        )


def item_count(runs: int, fine_tuned: int) -> int:
    """How many tests the suite collects for an experiment: every registered check once per target, one golden
    comparison per generated file of a run, and one for the job array scripts."""
    per_scope = {EXPERIMENT: 1, RUN: runs, FINE_TUNED: fine_tuned}
    checks = sum(per_scope[c.scope] for c in all_checks() if not c.snapshot)
    return checks + fine_tuned * len(TRAINING_FILES) + 1
