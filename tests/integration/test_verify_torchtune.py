"""The verification suite where torchtune is importable (run by `nox -s integration`; skipped elsewhere): the
`components_bind` check imports every `_component_` and binds its arguments, over runs of every kind, and
catches an argument that the component does not take."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torchtune", reason="torchtune is not installed here: run `nox -s integration`")

from ..conftest import EXAMPLE_LOCAL  # noqa: E402
from ..test_verify_suite import VARIANT_RUNS, variants_experiment  # noqa: E402
from ..verify_support import NESTED_ARGS  # noqa: E402

pytestmark = pytest.mark.integration
pytest_plugins = ["pytester"]


def _run(pytester: pytest.Pytester, exp: Path):
    # -k also matches the names of directories above the experiment: test names here avoid "components_bind".
    args = ["--experiment", str(exp), "--local-config", str(EXAMPLE_LOCAL), "--no-check-paths", "-k", "components_bind"]
    return pytester.runpytest(*args, "-rs", *NESTED_ARGS)


def test_every_kind_of_run_binds(pytester, restore_syrupy) -> None:
    result = _run(pytester, variants_experiment(pytester.path))
    result.assert_outcomes(passed=2 + len(VARIANT_RUNS))


def test_argument_the_optimizer_does_not_take_fails_binding(pytester, restore_syrupy) -> None:
    exp = variants_experiment(pytester.path)
    config = exp / "Llama-3.2-1B-Instruct_rank4" / "finetune.yaml"
    config.write_text(config.read_text().replace("  weight_decay: 0.01\n", "  weight_decay: 0.01\n  betas_typo: 0.9\n"))
    result = _run(pytester, exp)
    result.assert_outcomes(passed=1 + len(VARIANT_RUNS), failed=1)
    # The failing check's line (its file:line, field and message), then its test id among the report's last lines.
    result.stdout.fnmatch_lines(["*rank4*optimizer*components_bind*betas_typo*"])
    result.stdout.fnmatch_lines(["FAILED *components_bind[[]*rank4[]]"])
