"""The verification suite as a whole: ids and collection errors, golden snapshots (mismatch, --snapshot-update,
stale files, machine independence), the shipped example as `nox -s verify` checks it, the `scaffold verify` and
`scaffold init-ci` commands, and the pre-commit hook."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from scaffold.engine.golden import EXPERIMENT_DIR_PLACEHOLDER

from .conftest import EXAMPLE, EXAMPLE_LOCAL, REPO, run_cli
from .verify_support import BASE, EXP, NESTED_ARGS, R4, R8, Planted, item_count

pytest_plugins = ["pytester"]

FILES = ("setup_finetune.yaml", "finetune.yaml", "finetune.slurm")


# --- collection ------------------------------------------------------------------------------------------------


def test_items_are_named_by_check_and_run_and_unique(planted: Planted, pytester) -> None:
    result = pytester.runpytest(
        "--experiment", EXP, "--local-config", str(planted.local), "--collect-only", "-q", *NESTED_ARGS
    )
    ids = [line for line in result.stdout.lines if "::" in line]
    names = [i.rpartition("::")[2] for i in ids]
    assert len(names) == len(set(names)) == item_count(runs=3, fine_tuned=2)
    assert all(i.startswith(f"{EXP}/experiment_summary.yaml::") for i in ids)
    assert f"summary_schema[{EXP}]" in names and f"golden_stale[{EXP}]" in names
    assert f"run_files[{BASE}]" in names and f"slurm_job_name[{BASE}]" not in names  # control run: no files
    assert f"golden[{R8}-finetune.slurm]" in names and f"parameter_values[{R4}]" in names


def test_duplicate_run_name_is_a_collection_error(planted: Planted, pytester) -> None:
    planted.edit_summary(lambda d: d["runs"].append(dict(d["runs"][0])))
    result = pytester.runpytest("--experiment", EXP, "--local-config", str(planted.local), *NESTED_ARGS)
    assert result.ret == pytest.ExitCode.INTERRUPTED  # "errors during collection": never a green run
    result.stdout.fnmatch_lines([f"*runs[[]0] and runs[[]3] are both named '{R4}': test ids must be unique*"])


def test_experiment_without_runs_is_a_collection_error(planted: Planted, pytester) -> None:
    planted.edit_summary(lambda d: d.update(runs=[]))
    result = pytester.runpytest("--experiment", EXP, "--local-config", str(planted.local), *NESTED_ARGS)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*the experiment has no runs to check*"])


def test_missing_experiment_is_a_usage_error(pytester) -> None:
    result = pytester.runpytest("--experiment", "nowhere", *NESTED_ARGS)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--experiment nowhere: no experiment summary at*"])


def test_without_experiment_the_plugin_collects_nothing(pytester) -> None:
    pytester.makepyfile("def test_one():\n    pass\n")
    result = pytester.runpytest(*NESTED_ARGS)
    result.assert_outcomes(passed=1)


# --- golden snapshots --------------------------------------------------------------------------------------------


def test_golden_files_are_created_with_snapshot_update_then_compared(planted: Planted, pytester) -> None:
    first = planted.verify(pytester, golden=True)
    assert first.failed == {f"golden[{r}-{f}]" for r in (R4, R8) for f in FILES} | {f"golden[{EXP}-arrays]"}
    assert "no golden copy at" in first.text and "--snapshot-update" in first.text
    assert planted.verify(pytester, "--snapshot-update", golden=True).failed == set()
    golden = planted.path(f"golden/{R4}/finetune.yaml")
    assert golden.read_text() == planted.path(f"{R4}/finetune.yaml").read_text()
    assert planted.path("golden/arrays/array_1.slurm").read_text() == planted.path("arrays/array_1.slurm").read_text()
    out = planted.verify(pytester, golden=True)
    assert out.code == 0 and out.failed == set(), out.text
    assert "8 snapshots passed" in out.text  # 3 files of 2 runs, and 2 job array scripts


def test_golden_mismatch_fails_with_a_diff_until_accepted(planted: Planted, pytester) -> None:
    planted.verify(pytester, "--snapshot-update", golden=True)
    planted.replace(f"{R4}/finetune.yaml", "log_every_n_steps: 5", "log_every_n_steps: 5  # edited by hand")
    out = planted.verify(pytester, golden=True)
    assert out.failed == {f"golden[{R4}-finetune.yaml]"}, out.text
    assert "differs from its golden copy" in out.text and "# edited by hand" in out.text
    assert planted.verify(pytester, "--snapshot-update", golden=True).failed == set()
    assert "# edited by hand" in planted.path(f"golden/{R4}/finetune.yaml").read_text()
    assert planted.verify(pytester, golden=True).failed == set()


def test_stale_golden_files_are_reported_and_removed_on_update(planted: Planted, pytester) -> None:
    planted.verify(pytester, "--snapshot-update", golden=True)
    stale = planted.path("golden/Llama-3.2-1B-Instruct_rank2/finetune.yaml")
    stale.parent.mkdir()
    stale.write_text("old\n")
    out = planted.verify(pytester, golden=True)
    assert out.failed == {f"golden_stale[{EXP}]"}, out.text
    assert "golden file of no run or generated file of this experiment" in out.text
    out = planted.verify(pytester, "--snapshot-update", golden=True)
    assert out.failed == set()
    assert not stale.parent.exists()
    assert "removed stale golden file" in out.text


def test_golden_files_do_not_depend_on_where_the_experiment_is(tmp_path: Path, pytester, restore_syrupy) -> None:
    """Without experiment.dir, generated files name the local directory: the snapshots hold a placeholder."""
    golden = tmp_path / "golden"
    for where in ("laptop/cap", "ci/checkout/cap"):
        exp = tmp_path / where
        shutil.copytree(
            EXAMPLE, exp, ignore=shutil.ignore_patterns("Llama-*", "logs", "arrays", ".scaffold-manifest.json")
        )
        text = (exp / "experiment_summary.yaml").read_text()
        (exp / "experiment_summary.yaml").write_text(re.sub(r"\n  dir: .*\n", "\n", text))
        assert run_cli("generate", exp, "--local-config", EXAMPLE_LOCAL, "--no-check-paths").code == 0
        args = ["--experiment", str(exp), "--local-config", str(EXAMPLE_LOCAL), "--golden-dir", str(golden)]
        result = pytester.runpytest(*args, "--no-check-paths", "--snapshot-update", *NESTED_ARGS)
        assert result.ret == 0, result.stdout.str()
        assert str(exp) in (exp / R4 / "finetune.yaml").read_text()
        snapshot = (golden / R4 / "finetune.yaml").read_text()
        assert EXPERIMENT_DIR_PLACEHOLDER in snapshot and str(tmp_path) not in snapshot
        # The second location compares with the snapshots the first one wrote: no update happened.
        if where.startswith("ci"):
            assert "snapshot updated" not in result.stdout.str() and "8 snapshots passed" in result.stdout.str()


def test_shipped_example_passes_as_nox_verify_checks_it(tmp_path: Path, pytester, restore_syrupy) -> None:
    exp = tmp_path / "capitalization"
    shutil.copytree(EXAMPLE, exp, ignore=shutil.ignore_patterns("Llama-*", "logs", "arrays", ".scaffold-manifest.json"))
    assert run_cli("generate", exp, "--local-config", EXAMPLE_LOCAL, "--no-check-paths").code == 0
    golden = REPO / "golden" / "capitalization"
    args = ["--experiment", str(exp), "--local-config", str(EXAMPLE_LOCAL), "--golden-dir", str(golden)]
    result = pytester.runpytest(*args, "--no-check-paths", *NESTED_ARGS)
    assert result.ret == 0, result.stdout.str()
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] + outcomes.get("skipped", 0) == item_count(runs=3, fine_tuned=2)


# --- commands ----------------------------------------------------------------------------------------------------


def test_scaffold_verify_runs_the_suite(planted: Planted) -> None:
    res = run_cli("verify", planted.dir, "--local-config", planted.local, "-k", "not golden", *NESTED_ARGS)
    assert res.code == 0, res.out + res.err
    assert "passed" in res.out
    planted.replace(f"{R4}/finetune.slurm", f"--job-name={R4}", "--job-name=x")
    res = run_cli("verify", planted.dir, "--local-config", planted.local, "-k", "not golden", *NESTED_ARGS)
    assert res.code == 1
    assert (
        f"FAILED {planted.dir.name}/experiment_summary.yaml::slurm_job_name[{R4}]" in res.out
        or "slurm_job_name" in res.out
    )


def test_init_ci_writes_a_valid_github_workflow(tmp_path: Path) -> None:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema (the `test` extra) validates the workflow")
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    shutil.copytree(EXAMPLE, repo / "experiments" / "cap", ignore=shutil.ignore_patterns("Llama-*", "logs", "arrays"))
    res = run_cli("init-ci", repo / "experiments" / "cap", "--package", "scaffold-torchtune==0.1.0")
    assert res.code == 0, res.err
    workflow = repo / ".github" / "workflows" / "scaffold-verify.yml"
    assert "written" in res.out
    proc = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(workflow)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = yaml.safe_load(workflow.read_text())
    assert "pull_request" in data[True]  # PyYAML reads the key `on` as true
    steps = "\n".join(step.get("run", "") for step in data["jobs"]["verify"]["steps"])
    assert "scaffold verify experiments/cap --no-check-paths" in steps
    assert "pip install scaffold-torchtune==" in steps
    assert "secrets.SCAFFOLD_LOCAL_CONFIG" in workflow.read_text()
    # Idempotent; a workflow edited since is kept unless --force.
    again = ("init-ci", repo / "experiments" / "cap", "--package", "scaffold-torchtune==0.1.0")
    assert "unchanged" in run_cli(*again).out
    workflow.write_text(workflow.read_text() + "# local change\n")
    kept = run_cli(*again)
    assert kept.code == 1 and "--force" in kept.err
    assert run_cli(*again, "--force").code == 0
    assert "# local change" not in workflow.read_text()


PRE_COMMIT_MANIFEST_SCHEMA = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["id", "name", "entry", "language"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "entry": {"type": "string"},
            "language": {"enum": ["python", "system", "script"]},
            "files": {"type": "string"},
            "pass_filenames": {"type": "boolean"},
            "args": {"type": "array", "items": {"type": "string"}},
        },
    },
}


def test_pre_commit_hook_runs_scaffold_verify() -> None:
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    jsonschema.validate(hooks, PRE_COMMIT_MANIFEST_SCHEMA)
    hook = next(h for h in hooks if h["id"] == "scaffold-verify")
    assert hook["entry"] == "scaffold verify" and hook["pass_filenames"] is False
    files = re.compile(hook["files"])
    for path in ("experiment_summary.yaml", "exp/run/finetune.yaml", "exp/run/finetune.slurm", "exp/golden/r/f"):
        assert files.search(path), path
    assert not files.search("README.md")


VARIANT_RUNS = [
    {"name": "Llama-3.2-1B-Instruct_text_rank4", "parameters": {"lora_rank": 4, "dataset_type": "text_completion"}},
    {
        "name": "Llama-3.2-1B-Instruct_val_rank8_lr3e-4",
        "parameters": {"lora_rank": 8, "lr": 3e-4, "validation_during_training": True, "run_val_every_n_steps": 2},
    },
    {"name": "Llama-3.2-1B-Instruct_2gpu_rank16", "parameters": {"lora_rank": 16}, "compute": {"gpus": 2}},
    {
        "name": "Qwen2.5-3B-Instruct_rank8_alpha32",
        "model": "Qwen2.5-3B-Instruct",
        "parameters": {"lora_rank": 8, "lora_alpha": 32},
    },
]


def variants_experiment(root: Path) -> Path:
    """The example plus a text-completion run, a validating run, a two-GPU run and a Qwen run."""
    exp = root / "variants"
    shutil.copytree(EXAMPLE, exp, ignore=shutil.ignore_patterns("Llama-*", "logs", "arrays", ".scaffold-manifest.json"))
    data = yaml.safe_load((exp / "experiment_summary.yaml").read_text())
    data["models"]["base"].append({"name": "Qwen2.5-3B-Instruct", "path": "/scratch/models/Qwen2.5-3B-Instruct"})
    for run in VARIANT_RUNS:
        data["runs"].append({"type": "fine-tuned", "model": "Llama-3.2-1B-Instruct", **run})
    (exp / "experiment_summary.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    res = run_cli("generate", exp, "--local-config", EXAMPLE_LOCAL, "--no-check-paths")
    assert res.code == 0, res.out + res.err
    return exp


def test_text_completion_validation_multi_gpu_and_qwen_runs_pass(pytester, restore_syrupy) -> None:
    exp = variants_experiment(pytester.path)  # under pytester's root, so -k sees no directory names
    args = ["--experiment", str(exp), "--local-config", str(EXAMPLE_LOCAL), "--no-check-paths", "-k", "not golden"]
    result = pytester.runpytest(*args, "-rs", *NESTED_ARGS)
    assert result.ret == 0, result.stdout.str()
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] >= 150 and "failed" not in outcomes
