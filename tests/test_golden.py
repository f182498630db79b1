"""The shipped example's generated files, compared whole with the golden copies in golden/.

Accept an intended change with `pytest tests/test_golden.py --snapshot-update` and review the diff of golden/.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scaffold.engine.golden import golden_extension

from .conftest import EXAMPLE, REPO, run_cli

GOLDEN = REPO / "golden" / "capitalization"
RUNS = [
    r["name"]
    for r in yaml.safe_load((EXAMPLE / "experiment_summary.yaml").read_text())["runs"]
    if r["type"] == "fine-tuned"
]
FILES = ["setup_finetune.yaml", "finetune.yaml", "finetune.slurm"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    import shutil

    from .conftest import EXAMPLE_LOCAL

    exp = tmp_path_factory.mktemp("golden") / "capitalization"
    shutil.copytree(EXAMPLE, exp, ignore=shutil.ignore_patterns("Llama-*", "logs", "arrays", ".scaffold-manifest.json"))
    res = run_cli("generate", exp, "--local-config", EXAMPLE_LOCAL, "--no-check-paths")
    assert res.code == 0, res.out + res.err
    return exp


@pytest.mark.parametrize("file", FILES)
@pytest.mark.parametrize("run", RUNS)
def test_matches_golden(generated: Path, run: str, file: str, snapshot) -> None:
    text = (generated / run / file).read_text(encoding="utf-8")
    assert text == snapshot.use_extension(golden_extension(GOLDEN, file))


@pytest.mark.parametrize("file", ["array_1.slurm", "array_2.slurm"])  # the example's two runs ask for other times
@pytest.mark.parametrize("run", ["arrays"])
def test_arrays_match_golden(generated: Path, run: str, file: str, snapshot) -> None:
    assert sorted(p.name for p in (generated / run).iterdir()) == ["array_1.slurm", "array_2.slurm"]
    text = (generated / run / file).read_text(encoding="utf-8")
    assert text == snapshot.use_extension(golden_extension(GOLDEN, file))
