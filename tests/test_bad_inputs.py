"""The corpus of bad inputs (tests/bad_inputs/, see its README): every case is refused with one error line that
names the file, the line, the field and a fix; no traceback; and the experiment is left exactly as it was.

Each case starts from the shipped example, already generated once (so there are results on disk to lose), lays its
files over it, and runs the command. The command runs in-process (`scaffold.commands.cli.main`, the CLI's own entry
point, which turns any exception into "internal error"), so the corpus runs in seconds; a sample of cases also runs as a
real process and must give the same answer.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from scaffold.commands import cli

from .conftest import EXAMPLE, EXAMPLE_LOCAL, run_cli

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
CASES = sorted(p for p in CORPUS.iterdir() if (p / "expect.yaml").is_file())
RUN = "Llama-3.2-1B-Instruct_rank4"  # the run whose setup_finetune.yaml the setup-finetune cases edit
LOG = "cap/logs/scaffold-torchtune.log"
# Where each kind of case file goes (relative to the work directory, which holds cap/ and the local config).
PLACES = {
    "experiment_summary.yaml": "cap/experiment_summary.yaml",
    "scaffold.local.yaml": "scaffold.local.yaml",
    "claude.local.md": "claude.local.md",  # the markdown form: used as the site config instead of the YAML one
    "setup_finetune.yaml": f"cap/{RUN}/setup_finetune.yaml",
}


def place(name: str) -> str:
    return PLACES.get(name, f"cap/data/{name}")


def expectation(case: Path) -> dict:
    expect = yaml.safe_load((case / "expect.yaml").read_text(encoding="utf-8"))
    expect.setdefault("command", "generate")
    expect.setdefault("args", ["--no-check-paths"] if expect["command"] == "generate" else [])
    expect["local"] = "claude.local.md" if (case / "claude.local.md").is_file() else "scaffold.local.yaml"
    return expect


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def command(expect: dict) -> list[str]:
    if expect["command"] == "setup-finetune":
        return ["setup-finetune", "--dir", f"cap/{RUN}", "--local-config", expect["local"], *expect["args"]]
    return ["generate", "cap", "--local-config", expect["local"], *expect["args"]]


def invoke(root: Path, args: list[str]) -> Outcome:
    """`scaffold ARGS` in-process, in `root`, as the console script runs it."""
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(args)
    finally:
        os.chdir(cwd)
    return Outcome(code, out.getvalue(), err.getvalue())


def files(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root with its bytes and modification time (the lock file holds the last pid: skipped)."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".scaffold.lock"
    }


def assert_untouched(before: dict, after: dict) -> None:
    """Nothing lost, changed or touched; nothing new; the log only grows."""
    for name, (data, mtime) in before.items():
        assert name in after, f"{name} disappeared"
        if name == LOG:
            assert after[name][0].startswith(data), "the log was rewritten"
        else:
            assert after[name] == (data, mtime), f"{name} was changed or rewritten"
    assert set(after) - set(before) <= {LOG}, f"new files: {sorted(set(after) - set(before))}"


def error_line(res: Outcome, expect: dict) -> str:
    """The error line the case expects: at file:line, naming the field, with every message part and a fix."""
    assert "Traceback" not in res.text and "internal error" not in res.text, res.text
    where = f"{place(expect['file'])}:{expect['line']}:"
    located = [ln for ln in res.text.splitlines() if where in ln]
    assert located, f"no error at {where} in:\n{res.text}"
    for ln in located:
        rest = re.sub(r"^(?:\d+: )?(?:\[run [^\]]+\] )?", "", ln.split(where, 1)[1])
        if expect["field"] and not rest.startswith(f"{expect['field']}: "):
            continue
        if not all(part in rest for part in expect["message"]):
            continue
        return ln
    raise AssertionError(f"no line at {where} names {expect['field']!r} with {expect['message']} in:\n{res.text}")


def assert_fix(line: str, expect: dict) -> None:
    if not expect.get("fix", True):
        return
    assert "(fix: " in line, f"no fix in: {line}"
    fix = line.split("(fix: ", 1)[1]
    for part in expect.get("fix_text", []):
        assert part in fix, f"the fix does not say {part!r}: {line}"


def lay_over(case: Path, root: Path) -> None:
    for src in case.iterdir():
        if src.name != "expect.yaml":
            shutil.copyfile(src, root / place(src.name))


@pytest.fixture(scope="session")
def generated_example(tmp_path_factory) -> Path:
    """The shipped example and its site config, generated once with clean inputs: every case starts from a copy."""
    root = tmp_path_factory.mktemp("bad-inputs") / "base"
    shutil.copytree(
        EXAMPLE, root / "cap", ignore=shutil.ignore_patterns("Llama-*", "logs", "arrays", ".scaffold-manifest.json")
    )
    shutil.copy(EXAMPLE_LOCAL, root / "scaffold.local.yaml")
    res = invoke(root, ["generate", "cap", "--local-config", "scaffold.local.yaml", "--no-check-paths"])
    assert res.code == 0, res.text
    return root


@pytest.fixture(autouse=True)
def _no_env_config(monkeypatch):
    monkeypatch.delenv("SCAFFOLD_LOCAL_CONFIG", raising=False)


def test_the_corpus_is_large_and_well_formed():
    assert len(CASES) >= 45
    readme = (CORPUS / "README.md").read_text(encoding="utf-8")
    assert not [c.name for c in CASES if f"| `{c.name}` |" not in readme], "list every case in the README's table"
    for case in CASES:
        expect = expectation(case)
        assert expect["exit"] in (1, 2) and expect["line"] and expect["message"], case.name
        assert set(p.name for p in case.iterdir()) - {"expect.yaml"}, f"{case.name} has no input file"
        assert expect["about"], case.name


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_leaves_a_generated_experiment_untouched(case: Path, generated_example: Path, tmp_path: Path):
    expect = expectation(case)
    root = tmp_path / "work"
    shutil.copytree(generated_example, root)  # copy2: modification times are kept too
    lay_over(case, root)
    before = files(root)
    res = invoke(root, command(expect))
    assert res.code == expect["exit"], res.text
    assert_fix(error_line(res, expect), expect)
    assert_untouched(before, files(root))


FRESH = [c for c in CASES if expectation(c)["command"] == "generate" and expectation(c)["exit"] == 2]


@pytest.mark.parametrize("case", FRESH, ids=[c.name for c in FRESH])
def test_invalid_input_writes_nothing_into_a_new_experiment(case: Path, tmp_path: Path):
    """Exit 2 on an experiment never generated: no run directory, no manifest, only the log's note."""
    expect = expectation(case)
    root = tmp_path / "work"
    shutil.copytree(
        EXAMPLE, root / "cap", ignore=shutil.ignore_patterns("Llama-*", "logs", "arrays", ".scaffold-manifest.json")
    )
    shutil.copy(EXAMPLE_LOCAL, root / "scaffold.local.yaml")
    lay_over(case, root)
    before = files(root)
    res = invoke(root, command(expect))
    assert res.code == 2, res.text
    error_line(res, expect)
    assert "input invalid, nothing written" in res.err
    assert_untouched(before, files(root))
    assert sorted(p.name for p in (root / "cap").iterdir() if p.is_dir()) == ["data", "logs"]


# One case of each kind of input file, run as a real process: the same exit status and error line.
SAMPLE = ["run-name-newline", "local-partition-newline", "dataset-records-missing-output", "setup-experiment-newline"]


@pytest.mark.parametrize("name", SAMPLE)
def test_the_real_cli_gives_the_same_answer(name: str, generated_example: Path, tmp_path: Path):
    case, expect = CORPUS / name, expectation(CORPUS / name)
    root = tmp_path / "work"
    shutil.copytree(generated_example, root)
    lay_over(case, root)
    before = files(root)
    res = run_cli(*command(expect), cwd=root)
    assert res.code == expect["exit"], res.out + res.err
    assert_fix(error_line(Outcome(res.code, res.out, res.err), expect), expect)
    assert_untouched(before, files(root))
