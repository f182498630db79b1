"""`scaffold submit` against stand-in `sbatch` and `sinfo` (the local-cluster version is in
tests/integration/test_slurm_cluster.py): job ids recorded, second submissions skipped or refused, --resubmit,
and every way a submission can fail."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .conftest import Experiment, run_cli

RUNS = ["Llama-3.2-1B-Instruct_rank4", "Llama-3.2-1B-Instruct_rank8"]

SBATCH = """#!/bin/bash
# Stand-in sbatch: job ids count up from 100; a script holding REFUSE_ME is refused as sbatch refuses.
script="${@: -1}"
if grep -q REFUSE_ME "$script"; then echo "sbatch: error: invalid partition specified: nosuch" >&2; exit 1; fi
n=$(cat "$STUB_DIR/next" 2>/dev/null || echo 100)
echo $((n + 1)) > "$STUB_DIR/next"
echo "sbatch $* (cwd $PWD)" >> "$STUB_DIR/calls"
echo "$n"
"""
SINFO = """#!/bin/bash
echo gpu
"""


@pytest.fixture
def cluster_env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "stub-bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", SBATCH), ("sinfo", SINFO)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_DIR": str(bin_dir), "SLURM_CONF": ""}


@pytest.fixture
def generated(local_example: Experiment) -> Experiment:
    assert local_example.generate().code == 0
    return local_example


def record(exp: Experiment) -> dict:
    return json.loads((exp.dir / "logs" / "submissions.json").read_text())


def submit(exp: Experiment, env: dict, *args: str):
    return run_cli("submit", exp.dir, *args, env=env)


def test_submit_records_job_ids_and_skips_them_the_second_time(generated: Experiment, cluster_env: dict) -> None:
    res = submit(generated, cluster_env)
    assert res.code == 0, res.out + res.err
    ids = {run: entry["job_id"] for run, entry in record(generated).items()}
    assert ids == {RUNS[0]: "100", RUNS[1]: "101"}
    assert "2 submitted" in res.out and "job ids: " in res.out
    calls = (Path(cluster_env["STUB_DIR"]) / "calls").read_text().splitlines()
    assert calls[0] == f"sbatch --parsable {generated.dir / RUNS[0] / 'finetune.slurm'} (cwd {generated.dir / RUNS[0]})"
    assert "submitted as job 100" in (generated.dir / "logs" / "scaffold-torchtune.log").read_text()

    again = submit(generated, cluster_env)
    assert again.code == 0 and "0 submitted, 2 already submitted" in again.out, again.out
    assert {run: e["job_id"] for run, e in record(generated).items()} == ids


def test_naming_a_submitted_run_is_refused_unless_resubmit(generated: Experiment, cluster_env: dict) -> None:
    assert submit(generated, cluster_env).code == 0
    res = submit(generated, cluster_env, "--run", RUNS[1])
    assert res.code == 1 and "refused" in res.out and "already submitted as job 101" in res.out, res.out
    assert "(fix: pass --resubmit to queue it again)" in res.out
    res = submit(generated, cluster_env, "--run", RUNS[1], "--resubmit")
    assert res.code == 0, res.out + res.err
    assert record(generated)[RUNS[1]]["job_id"] == "102"
    assert record(generated)[RUNS[1]]["earlier_job_ids"] == ["101"]
    assert record(generated)[RUNS[0]]["job_id"] == "100"


def test_a_changed_script_is_pointed_out(generated: Experiment, cluster_env: dict) -> None:
    assert submit(generated, cluster_env).code == 0
    script = generated.dir / RUNS[0] / "finetune.slurm"
    text = script.read_text()
    assert "--mem=80G" in text
    script.write_text(text.replace("--mem=80G", "--mem=60G"))
    res = submit(generated, cluster_env)
    assert res.code == 0 and "finetune.slurm changed since" in res.out, res.out


def test_dry_run_submits_nothing_and_needs_no_controller(generated: Experiment) -> None:
    res = submit(generated, {"SLURM_CONF": "/nonexistent/slurm.conf"}, "--dry-run")
    assert res.code == 0 and res.out.count("would submit       sbatch --parsable") == 2, res.out + res.err
    assert not (generated.dir / "logs" / "submissions.json").exists()


def test_without_a_controller_nothing_is_submitted(generated: Experiment) -> None:
    res = submit(generated, {"SLURM_CONF": "/nonexistent/slurm.conf"})
    assert res.code == 2 and "no SLURM controller reachable" in res.err and "--dry-run" in res.err, res.err
    assert not (generated.dir / "logs" / "submissions.json").exists()


def test_an_unknown_run_is_an_error_with_a_suggestion(generated: Experiment, cluster_env: dict) -> None:
    res = submit(generated, cluster_env, "--run", "Llama-3.2-1B-Instruct_rank16")
    assert res.code == 2 and "no fine-tuned run named 'Llama-3.2-1B-Instruct_rank16'" in res.err, res.err


def test_a_refused_script_fails_that_run_only(generated: Experiment, cluster_env: dict) -> None:
    script = generated.dir / RUNS[0] / "finetune.slurm"
    script.write_text(script.read_text() + "# REFUSE_ME\n")
    res = submit(generated, cluster_env)
    assert res.code == 1, res.out
    assert "sbatch refused the script: error: invalid partition specified: nosuch" in res.out
    assert list(record(generated)) == [RUNS[1]]


def test_a_run_not_generated_fails(generated: Experiment, cluster_env: dict) -> None:
    (generated.dir / RUNS[0] / "finetune.slurm").unlink()
    res = submit(generated, cluster_env)
    assert res.code == 1 and "finetune.slurm not found" in res.out and "scaffold generate" in res.out, res.out


def test_a_missing_log_directory_fails_before_sbatch(example: Experiment, cluster_env: dict) -> None:
    """experiment.dir is a cluster path that does not exist here: the job would fail without a log."""
    assert example.generate("--no-check-paths").code == 0
    res = submit(example, cluster_env)
    assert res.code == 1 and res.out.count("does not exist here: the job would fail without a log") == 2, res.out
    assert not (Path(cluster_env["STUB_DIR"]) / "calls").exists()


def test_an_unreadable_record_is_never_overwritten(generated: Experiment, cluster_env: dict) -> None:
    path = generated.dir / "logs" / "submissions.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text("{not json")
    res = submit(generated, cluster_env)
    assert res.code == 2 and "the submission record cannot be read" in res.err, res.err
    assert path.read_text() == "{not json"
