"""The generator's `bash -n` of many batch scripts: scripts that differ only in a run's own inert values are
parsed once (scaffold.shell._masked), and no script with a syntax error is ever passed."""

from __future__ import annotations

import pytest

from scaffold.engine import shell
from scaffold.engine.shell import _masked, _replace_whole, bash_syntax

SCRIPT = """#!/bin/bash
#SBATCH --job-name={name}
cd {run_dir}
tune run recipe --config {run_dir}/finetune.yaml || status=$?
echo "run {name} done"
"""


def script(name: str, **extra: str) -> tuple[str, dict]:
    setup = {"run_name": name, "run_dir": f"/scratch/exp/{name}", **extra}
    return SCRIPT.format(name=name, run_dir=setup["run_dir"]), setup


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.setattr(shell, "_PARSED", set())


def test_a_sweeps_scripts_are_parsed_once(monkeypatch):
    calls = []
    real = shell.subprocess.run
    monkeypatch.setattr(shell.subprocess, "run", lambda *a, **k: calls.append(a) or real(*a, **k))
    scripts = [script(f"m_rank{r}_lr1e-{k}_s{s}") for r in (4, 8) for k in (4, 5) for s in (1, 2)]
    assert bash_syntax(scripts) == [""] * len(scripts)
    assert len({_masked(t, s) for t, s in scripts}) == 1
    assert len(calls) == 1 and len(shell._PARSED) == 1


def test_a_syntax_error_outside_the_values_is_found_in_its_script():
    good = script("run_a")
    text, setup = script("run_b")
    bad = (text.replace("|| status=$?", "|| status=$?; fi"), setup)
    result = bash_syntax([good, bad])
    assert result[0] == ""
    assert "syntax error" in result[1]


def test_an_error_is_found_even_after_the_same_shape_parsed():
    assert bash_syntax([script("run_a")]) == [""]
    text, setup = script("run_b")
    assert "syntax error" in bash_syntax([(text + "if true; then\n", setup)])[0]


@pytest.mark.parametrize(
    "value, masked",
    [
        ("done", False),  # a reserved word stays as it is
        ("declare", False),  # a builtin whose arguments bash parses as assignments
        ("-nt", False),  # an operator inside [[ ]]
        ("-x1", False),
        ("tune", False),  # letters only: could be any of those
        ("a1", False),  # too short to be worth it
        ("x$y1", False),  # not inert
        ("a b1", False),
        ("run-1", True),
        ("/p/q", True),
        ("a_b", True),
    ],
)
def test_only_inert_values_are_masked(value: str, masked: bool):
    text = f"echo {value}\n"
    assert (_masked(text, {"v": value}) != text) is masked


def test_a_name_stays_a_name_and_a_non_name_stays_one():
    """`x=(...)` is an array assignment only when x is a name: the placeholder keeps the value's kind."""
    assert _masked("abc1=(1 2)\n", {"v": "abc1"}) == "__scaffold_v__=(1 2)\n"
    assert _masked("a-c1=(1 2)\n", {"v": "a-c1"}) == "__scaffold-v__=(1 2)\n"
    assert "syntax error" in bash_syntax([("a-c1=(1 2)\n", {"v": "a-c1"})])[0]


def test_values_inside_longer_words_are_left_alone():
    assert _replace_whole("tune torchtune tune-x /a/tune/b", "tune", "T") == "T torchtune tune-x /a/T/b"


def test_each_script_is_parsed_alone():
    """A quote one script leaves open must not be closed by the next, nor a `}` end a wrapper around it."""
    result = bash_syntax([("echo 'one\n", {}), ("echo two'\n", {})])
    assert all(result), result
    assert bash_syntax([("echo a\n}\nf() {\necho b\n", {})])[0]


@pytest.mark.parametrize("n", [3, 12])  # a subprocess each, and one bash loop for many
def test_many_distinct_scripts_each_get_their_own_answer(n: int):
    scripts = [(f"echo {i}\n" + ("fi\n" if i % 3 == 1 else ""), {}) for i in range(n)]
    result = bash_syntax(scripts)
    assert [bool(r) for r in result] == [i % 3 == 1 for i in range(n)]
