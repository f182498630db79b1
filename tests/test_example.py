"""The shipped example, generated for real: the experiment's tree (a directory per run, logs/), values at the table's paths as torchtune
reads them, batch scripts that bash accepts, an idempotent re-run, the log and the JSON report."""

from __future__ import annotations

import json
import subprocess

from omegaconf import OmegaConf

from scaffold.inputs import params

from .conftest import Experiment

RUNS = {"Llama-3.2-1B-Instruct_rank4": 4, "Llama-3.2-1B-Instruct_rank8": 8}
CONTROL = "Llama-3.2-1B-Instruct_base"


def test_generate_writes_the_tree(local_example: Experiment) -> None:
    res = local_example.generate()
    assert res.code == 0, res.out + res.err
    d = local_example.dir
    for run in RUNS:
        for name in ("setup_finetune.yaml", "finetune.yaml", "finetune.slurm"):
            assert (d / run / name).is_file()
        assert (d / run / "artifacts").is_dir()
    assert sorted(p.name for p in (d / CONTROL).iterdir()) == []
    assert (d / "logs" / "scaffold-torchtune.log").is_file()
    assert "fine-tuned runs configured: 2" in res.out
    assert "control/eval-only runs created: 1" in res.out
    assert "run directories: 3" in res.out
    assert "0 failed" in res.out


def test_finetune_yaml_holds_the_run_values_as_torchtune_reads_them(local_example: Experiment) -> None:
    assert local_example.generate().code == 0
    summary = local_example.load()
    for run, rank in RUNS.items():
        cfg = OmegaConf.to_container(OmegaConf.load(local_example.dir / run / "finetune.yaml"), resolve=True)
        expected = {"lora_rank": rank, "lora_alpha": 2 * rank, "lr": 1e-4, "batch_size": 4, "epochs": 1, "seed": 14}
        for name, value in expected.items():
            found, got = params.get_path(cfg, params.table()[name].path)
            assert found and params.same_value(got, value), (run, name, got)
        assert cfg["output_dir"] == str(local_example.dir / run / "artifacts")
        assert cfg["checkpointer"]["output_dir"] == cfg["output_dir"]
        assert cfg["dataset"]["prompt"] == "Capitalize the given word: {input}\n"  # verbatim, whitespace kept
        assert cfg["dataset"]["system_prompt"] == summary["controls"]["system_prompt"]
        assert cfg["dataset"]["model_path"] == cfg["checkpointer"]["checkpoint_dir"]  # its HF tokenizer
        assert cfg["dataset"]["data_files"] == str(local_example.dir / "data" / "words_5L_80P_10.json")


def test_batch_scripts_pass_bash_n_and_name_the_run(local_example: Experiment) -> None:
    assert local_example.generate().code == 0
    for run in RUNS:
        script = local_example.dir / run / "finetune.slurm"
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
        lines = script.read_text().splitlines()
        assert lines[0] == "#!/bin/bash"
        directives = [i for i, line in enumerate(lines) if line.startswith("#SBATCH")]
        assert directives == list(range(1, len(directives) + 1)), "every #SBATCH line right after the shebang"
        assert f"#SBATCH --job-name={run}" in lines
        assert f"#SBATCH --output={local_example.dir / run / 'artifacts'}/slurm-%j.out" in lines
        assert "#SBATCH --gres=gpu:1" in lines
        config = local_example.dir / run / "finetune.yaml"
        assert f"tune run lora_finetune_single_device --config {config} || status=$?" in lines
        assert not any("$" in line or "<" in line for line in lines if line.startswith("#SBATCH"))


def test_rerun_rewrites_nothing(local_example: Experiment) -> None:
    assert local_example.generate().code == 0
    before = {p: p.stat().st_mtime_ns for p in local_example.dir.rglob("*") if p.is_file() and "logs" not in p.parts}
    res = local_example.generate()
    assert res.code == 0
    assert res.out.count("yaml unchanged") + res.out.count("slurm unchanged") == 6
    after = {p: p.stat().st_mtime_ns for p in local_example.dir.rglob("*") if p.is_file() and "logs" not in p.parts}
    assert after == before


def test_a_changed_rule_re_renders_and_re_checks_every_run(example: Experiment, tmp_path) -> None:
    """The fingerprint that decides "unchanged" covers the whole package (sources, templates, schemas, version), not
    the renderer alone: in a copy of the package whose GPU rule (scaffold/rules.py's gpu_request, which the
    renderer applies to unchanged settings) writes a GPU type, an otherwise unchanged re-run rewrites and re-checks
    every batch script instead of keeping the old #SBATCH line as up to date."""
    import os
    import shutil

    from .conftest import REPO, run_cli

    package = tmp_path / "pkg"
    shutil.copytree(REPO / "scaffold", package / "scaffold", ignore=shutil.ignore_patterns("__pycache__"))
    for data in ("templates", "schemas"):
        shutil.copytree(REPO / data, package / data)
    env = {"PYTHONPATH": os.pathsep.join([str(package), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    args = ("generate", example.dir, "--local-config", example.local, "--no-check-paths", "--json")
    # (run from tmp_path: `python -m` puts the working directory first on sys.path)
    first = run_cli(*args, env=env, cwd=tmp_path)
    assert first.code == 0, first.out + first.err
    script = example.dir / "Llama-3.2-1B-Instruct_rank4" / "finetune.slurm"
    assert "#SBATCH --gres=gpu:1\n" in script.read_text()
    rules = package / "scaffold" / "rules.py"
    old = 'return f"--gres=gpu:{typed}"'
    assert old in rules.read_text()
    rules.write_text(rules.read_text().replace(old, 'return f"--gres=gpu:a100:{typed}"'))
    again = run_cli(*args, env=env, cwd=tmp_path)
    assert again.code == 0, again.out + again.err
    doc = json.loads(again.out)
    for run in doc["runs"]:
        if run["type"] == "fine-tuned":
            assert run["files"] == {
                "setup_finetune.yaml": "unchanged",
                "finetune.yaml": "unchanged",
                "finetune.slurm": "updated",
            }, run
            assert run["verification"]["passed"] > 0 and not run["verification"]["failed"], run
    assert doc["verification"]["runs_unchanged_checked_earlier"] == 0
    assert "#SBATCH --gres=gpu:a100:1\n" in script.read_text()


def test_log_appends_one_section_per_invocation(local_example: Experiment) -> None:
    local_example.generate()
    local_example.generate()
    log = (local_example.dir / "logs" / "scaffold-torchtune.log").read_text()
    assert log.count("generate ") >= 2 and log.count("===== run Llama-3.2-1B-Instruct_rank4") == 2
    assert "lora_rank = 4 (run)" in log and "lora_alpha = 8 (2 x lora_rank)" in log


def test_json_report_is_one_document(local_example: Experiment) -> None:
    res = local_example.generate("--json")
    doc = json.loads(res.out)
    assert doc["exit_status"] == res.code == 0
    assert (doc["runs_configured"], doc["control_runs"], doc["run_directories"]) == (2, 1, 3)
    assert doc["verification"]["checks_failed"] == 0 and doc["verification"]["checks_passed"] > 0
    assert doc["log"].endswith("logs/scaffold-torchtune.log")
    assert {r["name"]: r["status"] for r in doc["runs"]} == {**dict.fromkeys(RUNS, "ok"), CONTROL: "ok"}


def test_dry_run_writes_nothing(local_example: Experiment) -> None:
    before = local_example.snapshot()
    res = local_example.generate("--dry-run")
    assert res.code == 0, res.out + res.err
    assert local_example.snapshot() == before
    assert not (local_example.dir / "Llama-3.2-1B-Instruct_rank4").exists()


def test_summary_file_path_is_accepted(local_example: Experiment) -> None:
    from .conftest import run_cli

    res = run_cli("generate", local_example.summary, "--local-config", local_example.local)
    assert res.code == 0, res.out + res.err
    assert (local_example.dir / "Llama-3.2-1B-Instruct_rank8" / "finetune.yaml").is_file()


def test_multi_gpu_run_uses_the_distributed_recipe(local_example: Experiment) -> None:
    data = local_example.load()
    data["runs"][0]["compute"] = {"gpus": 4, "time": "23:00:00"}
    data["runs"][0]["parameters"]["batch_size"] = 2  # 8 records fill one step of 2 x 4 GPUs
    local_example.save(data)
    assert local_example.generate().code == 0
    script = (local_example.dir / data["runs"][0]["name"] / "finetune.slurm").read_text()
    assert "tune run --nproc_per_node 4 lora_finetune_distributed --config" in script
    assert "#SBATCH --gres=gpu:4" in script
    over = local_example.load()
    over["runs"][0]["compute"]["time"] = "2-00:00:00"  # over the site's partition_max_time of 1 day
    local_example.save(over)
    res = local_example.generate()
    assert res.code == 1 and "over the partition limit 1-00:00:00" in res.out
    assert "#SBATCH --time=23:00:00" in script


def test_gpu_directive_follows_the_site(local_example: Experiment) -> None:
    text = local_example.local.read_text().replace("gpu_directive: gres", "gpu_directive: gpus-per-node")
    local_example.local.write_text(text)
    assert local_example.generate().code == 0
    script = (local_example.dir / "Llama-3.2-1B-Instruct_rank4" / "finetune.slurm").read_text()
    assert "#SBATCH --gpus-per-node=1" in script and "--gres" not in script
