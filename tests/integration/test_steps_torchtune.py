"""The step arithmetic (scaffold.steps) against what real torchtune 0.6.1 does on CPU: for a grid of train records,
batch size, accumulation, epochs and max_steps_per_epoch, the optimizer steps torchtune logs (log_every_n_steps
1: one loss line per step) are the plan's, and so are the validation passes of the validating recipe; the steps each
run's entry of `scaffold generate --json` reports are the ones torchtune takes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torchtune", reason="torchtune is not installed here: run `nox -s integration`")

from scaffold import steps  # noqa: E402
from scaffold.testing import tiny_model  # noqa: E402

from ..conftest import run_cli  # noqa: E402

pytestmark = pytest.mark.integration

TRAIN_RECORDS = 11  # odd: the last partial batch and the accumulation remainder are dropped
GRID = {
    "Tiny-Llama_bs2_ga1": {"batch_size": 2, "gradient_accumulation_steps": 1, "max_steps_per_epoch": None},
    "Tiny-Llama_bs2_ga2_ep2": {
        "batch_size": 2,
        "gradient_accumulation_steps": 2,
        "epochs": 2,
        "max_steps_per_epoch": None,
    },
    "Tiny-Llama_bs3_ga1_cap2": {"batch_size": 3, "gradient_accumulation_steps": 1, "max_steps_per_epoch": 2},
    "Tiny-Llama_bs4_ga2": {"batch_size": 4, "gradient_accumulation_steps": 2, "max_steps_per_epoch": None},
    "Tiny-Llama_val_bs2": {
        "batch_size": 2,
        "max_steps_per_epoch": None,
        "validation_during_training": True,
        "run_val_every_n_steps": 2,
    },
}


REPORTED: dict[str, dict] = {}  # run -> its `steps` in generate's --json report


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("steps")
    runs = {name: {"lora_rank": 4, **params} for name, params in GRID.items()}
    exp, local = tiny_model.write_experiment(root, "steps", runs, {"account": "test", "venv": sys.prefix})
    summary = yaml.safe_load((exp / "experiment_summary.yaml").read_text())
    data = Path(summary["data"]["training"]["path"])
    tiny_model.write_capitalization_dataset(data, n_train=TRAIN_RECORDS, n_val=2, n_test=1)
    summary["data"]["training"]["splits"]["train"] = TRAIN_RECORDS
    (exp / "experiment_summary.yaml").write_text(yaml.safe_dump(summary, sort_keys=False))
    res = run_cli("generate", exp, "--local-config", local, "--json")
    assert res.code == 0, res.out + res.err
    REPORTED.update({r["name"]: r["steps"] for r in json.loads(res.out)["runs"]})
    return exp


def logged(run_dir: Path) -> tuple[list[int], int]:
    """(the step numbers of torchtune's loss lines, how many validation losses were logged)."""
    (line,) = [ln for ln in (run_dir / "finetune.slurm").read_text().splitlines() if ln.startswith("tune run ")]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        ["bash", "-c", line.removesuffix(" || status=$?")], cwd=run_dir, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (log,) = sorted((run_dir / "artifacts" / "logs").glob("log_*.txt"))[-1:]
    text = log.read_text()
    return [int(s) for s in re.findall(r"Step (\d+) \| loss:", text)], len(re.findall(r"val_loss:", text))


@pytest.mark.parametrize("run", list(GRID))
def test_torchtune_takes_the_planned_steps(experiment: Path, run: str) -> None:
    setup = yaml.safe_load((experiment / run / "setup_finetune.yaml").read_text())
    plan = steps.plan_for(setup, TRAIN_RECORDS)
    got, validations = logged(experiment / run)
    print(f"{run}: planned {plan.as_dict()}; torchtune logged steps {got}, {validations} validation(s)")
    assert got == list(range(1, plan.total_steps + 1))
    assert len(got) // plan.epochs == plan.steps_per_epoch
    reported = REPORTED[run]
    assert reported["total_steps"] == len(got) and reported["steps_per_epoch"] == plan.steps_per_epoch
    assert reported["train_records"] == TRAIN_RECORDS
    if plan.validating:
        assert validations == plan.validations == reported["validations"]
