"""The verification suite, check by check: each test plants one defect in a freshly generated experiment and sees
exactly the check that exists to catch it fail (and every other check pass or skip for a stated reason).

The suite runs in-process through pytester, as `pytest --experiment cap` would in an experiment repository.
Golden comparisons and the torchtune checks are deselected here: test_verify_suite.py and
tests/integration/test_verify_torchtune.py cover them.
"""

from __future__ import annotations

import json
import re
import shutil

from .conftest import VERIFY_CLUSTER_DIR
from .verify_support import BASE, EXP, R4, R8, Planted

pytest_plugins = ["pytester"]


def only(*ids: str):
    return set(ids)


# A planted #SBATCH line in a run's batch script also leaves the job array script of its group unlike the run's
# script (a task would run with other resources than the run asks for): array_scripts says so too.
ARRAYS = f"array_scripts[{EXP}]"


# --- a clean experiment ------------------------------------------------------------------------------------------


def test_clean_experiment_passes_every_check(planted: Planted, pytester) -> None:
    out = planted.verify(pytester)
    assert out.code == 0, out.text
    assert out.failed == set()
    # Only checks that need something this machine may lack (torchtune, a SLURM controller) may skip; none is
    # blocked by a broken input.
    assert not [reason for reason in out.skipped.values() if "blocked" in reason], out.skipped
    assert f"paths_exist[{R4}]" in out.passed and f"slurm_job_name[{R8}]" in out.passed
    assert f"run_files[{BASE}]" in out.passed
    assert f"summary_schema[{EXP}]" in out.passed


def test_no_check_paths_skips_path_checks_with_the_reason(planted: Planted, pytester) -> None:
    out = planted.verify(pytester, "--no-check-paths")
    assert out.failed == set()
    reason = out.skipped[f"paths_exist[{R4}]"]
    assert "--no-check-paths" in reason and "not checked" in reason
    # Counted by reason on one line, no line per skipped test; --full-report gives pytest's own lines back.
    skipped = [line for line in out.text.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 1 and re.search(r"--no-check-paths: .* not checked .*\[paths_exist x2\]", skipped[0])
    assert "SKIPPED [" not in out.text
    full = planted.verify(pytester, "--no-check-paths", "--full-report")
    assert f"SKIPPED [1] {EXP}/experiment_summary.yaml" in full.text and "--no-check-paths" in full.text


# --- inputs and layout --------------------------------------------------------------------------------------------


def test_invalid_summary_fails_summary_schema(planted: Planted, pytester) -> None:
    planted.replace("experiment_summary.yaml", "epochs: 1", "epochs: 0")
    out = planted.verify(pytester)
    assert out.failed == only(f"summary_schema[{EXP}]"), out.text
    assert "controls.epochs" in out.text
    # Checks that need the summary's expectations say why they did not run, and which check reports it.
    assert "blocked" in out.skipped[f"parameter_values[{R4}]"]
    assert f"summary_schema[{EXP}]" in out.skipped[f"parameter_values[{R4}]"]


def test_invalid_local_config_fails_local_config_schema(planted: Planted, pytester) -> None:
    planted.replace("local", "gpu_directive: gres", "gpu_directive: gpu")
    out = planted.verify(pytester)
    assert out.failed == only(f"local_config_schema[{EXP}]"), out.text
    assert "gpu_directive" in out.text


def test_missing_log_fails_log_exists(planted: Planted, pytester) -> None:
    planted.path("logs/scaffold-torchtune.log").unlink()
    out = planted.verify(pytester)
    assert out.failed == only(f"log_exists[{EXP}]"), out.text


def test_a_log_linked_elsewhere_fails_log_exists(planted: Planted, pytester) -> None:
    """A cloned experiment whose log links to a file outside: generate would append to that file."""
    outside = pytester.path / "victim.txt"
    outside.write_text("the victim's own file\n")
    log = planted.path("logs/scaffold-torchtune.log")
    log.unlink()
    log.symlink_to(outside)
    out = planted.verify(pytester)
    assert out.failed == only(f"log_exists[{EXP}]"), out.text
    assert "a symbolic link to" in out.text and "remove the link" in out.text


def test_run_names_differing_by_case_fail_run_names_unique(planted: Planted, pytester) -> None:
    # A second control run whose name differs from the first only by case (and its directory, so run_files passes).
    other = BASE.lower()
    planted.edit_summary(lambda d: d["runs"].append({"name": other, "type": "control", "model": d["runs"][2]["model"]}))
    planted.path(other).mkdir()
    out = planted.verify(pytester)
    assert out.failed == only(f"run_names_unique[{EXP}]"), out.text
    assert "would share a directory" in out.text


def test_shared_output_dir_fails_output_dirs_unique(planted: Planted, pytester) -> None:
    planted.replace(f"{R8}/finetune.yaml", f"{R8}/artifacts", f"{R4}/artifacts")
    out = planted.verify(pytester)
    # rank8's output_dir is now also outside its own run directory, which its placement check reports.
    assert out.failed == only(f"output_dirs_unique[{EXP}]", f"output_dir_placement[{R8}]"), out.text


def test_missing_file_fails_run_files(planted: Planted, pytester) -> None:
    planted.path(f"{R4}/finetune.slurm").unlink()
    out = planted.verify(pytester)
    assert out.failed == only(f"run_files[{R4}]"), out.text
    assert f"run_files[{R4}]" in out.skipped[f"slurm_job_name[{R4}]"]


def test_training_file_in_control_run_fails_run_files(planted: Planted, pytester) -> None:
    shutil.copy(planted.path(f"{R4}/finetune.yaml"), planted.path(f"{BASE}/finetune.yaml"))
    out = planted.verify(pytester)
    assert out.failed == only(f"run_files[{BASE}]"), out.text
    assert "control run has no training files" in out.text


def test_unknown_model_fails_run_settings(planted: Planted, pytester) -> None:
    planted.edit_summary(lambda d: d["runs"][0].update(model="Llama-9-Instruct"))
    out = planted.verify(pytester)
    assert out.failed == only(f"run_settings[{R4}]"), out.text
    assert "unknown model 'Llama-9-Instruct'" in out.text


# --- finetune.yaml ------------------------------------------------------------------------------------------------


def test_duplicate_key_fails_finetune_yaml_loads(planted: Planted, pytester) -> None:
    planted.append(f"{R4}/finetune.yaml", "seed: 7\n")
    out = planted.verify(pytester)
    assert out.failed == only(f"finetune_yaml_loads[{R4}]"), out.text
    assert "duplicate key seed" in out.text
    assert f"finetune_yaml_loads[{R4}]" in out.skipped[f"parameter_values[{R4}]"]


def test_unresolvable_interpolation_fails_finetune_yaml_loads(planted: Planted, pytester) -> None:
    planted.replace(f"{R4}/finetune.yaml", "log_dir: ${output_dir}/logs", "log_dir: ${outptu_dir}/logs")
    out = planted.verify(pytester)
    assert out.failed == only(f"finetune_yaml_loads[{R4}]"), out.text
    assert "metric_logger.log_dir" in out.text


def test_stray_key_fails_recipe_keys(planted: Planted, pytester) -> None:
    planted.append(f"{R4}/finetune.yaml", "gradient_accumulation_step: 2\n")
    out = planted.verify(pytester)
    assert out.failed == only(f"recipe_keys[{R4}]"), out.text
    assert "never reads this key" in out.text and "did you mean 'gradient_accumulation_steps'" in out.text


def test_missing_key_fails_recipe_keys(planted: Planted, pytester) -> None:
    planted.replace(f"{R4}/finetune.yaml", "shuffle: true\n", "")
    out = planted.verify(pytester)
    assert out.failed == only(f"recipe_keys[{R4}]"), out.text
    assert "requires this key (it reads cfg.shuffle)" in out.text


def test_unknown_component_fails_components_known(planted: Planted, pytester) -> None:
    planted.replace(f"{R4}/finetune.yaml", "loss.CEWithChunkedOutputLoss", "loss.CEWithChunkedOutputLos")
    out = planted.verify(pytester)
    assert out.failed == only(f"components_known[{R4}]"), out.text


def test_other_models_builder_fails_components_known(planted: Planted, pytester) -> None:
    planted.replace(f"{R4}/finetune.yaml", "lora_llama3_2_1b", "lora_llama3_2_3b")
    out = planted.verify(pytester)
    assert out.failed == only(f"components_known[{R4}]"), out.text
    assert "expected 'torchtune.models.llama3_2.lora_llama3_2_1b'" in out.text


def test_learning_rate_1e5_vs_1e4_fails_parameter_values(planted: Planted, pytester) -> None:
    planted.replace(f"{R4}/finetune.yaml", "lr: 0.0001", "lr: 1e-5")
    out = planted.verify(pytester)
    assert out.failed == only(f"parameter_values[{R4}]"), out.text
    # The message names run, file and line, and says expected and found.
    assert (
        f"{EXP}/{R4}/finetune.yaml:43: [run {R4}] optimizer.lr: [parameter_values] lr (from controls.lr): expected 0.0001, found 1e-05"
        in (out.text)
    )


def test_same_number_written_differently_passes(planted: Planted, pytester) -> None:
    planted.replace(f"{R4}/finetune.yaml", "lr: 0.0001", "lr: 1.0e-04")
    out = planted.verify(pytester)
    assert out.failed == set(), out.text


def test_changed_lora_rank_fails_parameter_values_and_the_name_token(planted: Planted, pytester) -> None:
    planted.replace(f"{R4}/finetune.yaml", "lora_rank: 4", "lora_rank: 16")
    out = planted.verify(pytester)
    # The run is named ..._rank4, so the name disagrees with the file as well as the summary does.
    assert out.failed == only(f"parameter_values[{R4}]", f"run_name_tokens[{R4}]"), out.text
    assert (
        "model.lora_rank: [parameter_values] lora_rank (from runs[0].parameters.lora_rank): expected 4, found 16"
        in out.text
    )


def test_changed_lora_rank_in_a_run_without_name_tokens_fails_parameter_values_only(planted: Planted, pytester) -> None:
    planted.replace(f"{R4}/finetune.yaml", "lora_dropout: 0.0", "lora_dropout: 0.05")
    out = planted.verify(pytester)
    assert out.failed == only(f"parameter_values[{R4}]"), out.text


def test_wrong_lora_alpha_fails_lora_alpha_rule(planted: Planted, pytester) -> None:
    planted.replace(f"{R4}/finetune.yaml", "lora_alpha: 8", "lora_alpha: 16")
    out = planted.verify(pytester)
    assert out.failed == only(f"lora_alpha_rule[{R4}]"), out.text
    assert "lora_alpha is 2 x lora_rank (4) when not given: expected 8, found 16" in out.text


def test_run_name_disagreeing_with_its_values_fails_run_name_tokens(planted: Planted, pytester) -> None:
    # The summary and the file agree on rank 16, the run name says rank4.
    planted.replace("experiment_summary.yaml", "lora_rank: 4\n", "lora_rank: 16\n")
    planted.replace(f"{R4}/finetune.yaml", "lora_rank: 4", "lora_rank: 16")
    planted.replace(f"{R4}/finetune.yaml", "lora_alpha: 8", "lora_alpha: 32")
    out = planted.verify(pytester)
    assert out.failed == only(f"run_name_tokens[{R4}]"), out.text
    assert "the run name says rank4: expected 4, found 16" in out.text


def test_output_dir_in_checkpoint_dir_fails_output_dir_placement(planted: Planted, pytester) -> None:
    model = f"{VERIFY_CLUSTER_DIR}/models/Llama-3.2-1B-Instruct"
    planted.replace(
        f"{R4}/finetune.yaml", f"output_dir: {VERIFY_CLUSTER_DIR}/{R4}/artifacts", f"output_dir: {model}/out"
    )
    out = planted.verify(pytester)
    assert out.failed == only(f"output_dir_placement[{R4}]"), out.text
    assert "inside the checkpoint directory" in out.text and "outside the run directory" in out.text


def test_wrong_model_type_fails_model_matches_registry(planted: Planted, pytester) -> None:
    planted.replace(f"{R4}/finetune.yaml", "model_type: LLAMA3_2", "model_type: LLAMA3")
    out = planted.verify(pytester)
    assert out.failed == only(f"model_matches_registry[{R4}]"), out.text
    assert (
        "checkpointer.model_type: [model_matches_registry] not what the registry says for Llama-3.2-1B-Instruct: expected 'LLAMA3_2'"
        in (out.text)
    )


def test_other_dataset_fails_dataset_matches_summary(planted: Planted, pytester) -> None:
    shutil.copy(planted.path("data/words_5L_80P_10.json"), planted.path("data/other.json"))
    planted.replace(f"{R4}/finetune.yaml", "data/words_5L_80P_10.json", "data/other.json")
    out = planted.verify(pytester)
    assert out.failed == only(f"dataset_matches_summary[{R4}]"), out.text


def test_missing_tokenizer_file_fails_paths_exist(planted: Planted, pytester) -> None:
    planted.path("models/Llama-3.2-1B-Instruct/original/tokenizer.model").unlink()
    out = planted.verify(pytester)
    assert out.failed == only(f"paths_exist[{R4}]", f"paths_exist[{R8}]"), out.text
    assert "tokenizer path not found" in out.text


# --- the dataset ----------------------------------------------------------------------------------------------


def _edit_dataset(planted: Planted, change) -> None:
    path = planted.path("data/words_5L_80P_10.json")
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_wrong_split_count_fails_dataset_splits(planted: Planted, pytester) -> None:
    _edit_dataset(planted, lambda d: d["train"].pop())
    out = planted.verify(pytester)
    assert out.failed == only(f"dataset_splits[{R4}]", f"dataset_splits[{R8}]"), out.text
    assert (
        "split 'train' does not have the declared number of records" in out.text and "expected 8, found 7" in out.text
    )


def test_record_without_output_fails_dataset_splits(planted: Planted, pytester) -> None:
    _edit_dataset(planted, lambda d: d["test"][0].pop("output"))
    out = planted.verify(pytester)
    assert out.failed == only(f"dataset_splits[{R4}]", f"dataset_splits[{R8}]"), out.text
    assert "test[0]: [dataset_splits] record lacks output" in out.text


def test_train_split_smaller_than_a_step_fails_training_steps(planted: Planted, pytester) -> None:
    _edit_dataset(planted, lambda d: d.update(train=d["train"][:3]))
    planted.replace("experiment_summary.yaml", "train: 8", "train: 3")
    out = planted.verify(pytester)
    assert out.failed == only(f"training_steps[{R4}]", f"training_steps[{R8}]"), out.text
    assert "train zero steps" in out.text


# --- finetune.slurm -----------------------------------------------------------------------------------------------


def test_shell_syntax_error_fails_slurm_syntax(planted: Planted, pytester) -> None:
    planted.append(f"{R4}/finetune.slurm", "fi\n")
    line = planted.path(f"{R4}/finetune.slurm").read_text().count("\n")  # the appended line
    out = planted.verify(pytester)
    assert out.failed == only(f"slurm_syntax[{R4}]"), out.text
    assert f"{R4}/finetune.slurm:{line}: [run {R4}] [slurm_syntax] bash -n: syntax error" in out.text


def test_directive_after_a_command_fails_slurm_directives_first(planted: Planted, pytester) -> None:
    planted.replace(f"{R4}/finetune.slurm", "set -eo pipefail\n", "set -eo pipefail\n#SBATCH --comment=late\n")
    out = planted.verify(pytester)
    assert out.failed == only(f"slurm_directives_first[{R4}]"), out.text


def test_malformed_memory_fails_slurm_directive_values(planted: Planted, pytester) -> None:
    planted.replace(f"{R4}/finetune.slurm", "--mem=80G", "--mem=80GB")
    out = planted.verify(pytester)
    assert out.failed == only(f"slurm_directive_values[{R4}]", ARRAYS), out.text


def test_gpu_request_in_another_syntax_fails_slurm_directive_values(planted: Planted, pytester) -> None:
    planted.replace(f"{R4}/finetune.slurm", "#SBATCH --gres=gpu:1", "#SBATCH --gpus=1")
    out = planted.verify(pytester)
    assert out.failed == only(f"slurm_directive_values[{R4}]", ARRAYS), out.text
    assert "GPU request not in the site's syntax (gpu_directive: gres" in out.text


def test_variable_in_a_directive_fails_slurm_no_placeholders(planted: Planted, pytester) -> None:
    planted.replace(f"{R4}/finetune.slurm", "#SBATCH --nodes=1\n", "#SBATCH --nodes=1\n#SBATCH --comment=$USER\n")
    out = planted.verify(pytester)
    assert out.failed == only(f"slurm_no_placeholders[{R4}]", ARRAYS), out.text


def test_placeholder_in_a_directive_fails_slurm_no_placeholders(planted: Planted, pytester) -> None:
    planted.replace(f"{R4}/finetune.slurm", "#SBATCH --nodes=1\n", "#SBATCH --nodes=1\n#SBATCH --mail-user=<EMAIL>\n")
    out = planted.verify(pytester)
    assert out.failed == only(f"slurm_no_placeholders[{R4}]", ARRAYS), out.text


def test_wrong_job_name_fails_slurm_job_name(planted: Planted, pytester) -> None:
    planted.replace(f"{R4}/finetune.slurm", f"--job-name={R4}", "--job-name=rank4")
    out = planted.verify(pytester)
    assert out.failed == only(f"slurm_job_name[{R4}]"), out.text
    assert (
        f"finetune.slurm:2: [run {R4}] --job-name: [slurm_job_name] job name: expected '{R4}', found 'rank4'"
        in out.text
    )


def test_missing_output_directory_fails_slurm_output_dir(planted: Planted, pytester) -> None:
    shutil.rmtree(planted.path(f"{R4}/artifacts"))
    out = planted.verify(pytester)
    assert out.failed == only(f"slurm_output_dir[{R4}]"), out.text
    assert "the --output directory does not exist" in out.text


def test_output_directory_git_would_not_store_fails_slurm_output_dir(planted: Planted, pytester) -> None:
    """An empty artifacts/ passes here but is not in a clone: the file that keeps it in git is required."""
    planted.path(f"{R4}/artifacts/.gitignore").unlink()
    out = planted.verify(pytester)
    assert out.failed == only(f"slurm_output_dir[{R4}]"), out.text
    assert "holds no .gitignore: git stores no empty directory" in out.text


def test_control_run_without_its_directory_passes(planted: Planted, pytester) -> None:
    """A control run's directory holds nothing generated, so a clone has none: run_files does not require it."""
    planted.path(BASE).rmdir()
    out = planted.verify(pytester)
    assert not out.failed and f"run_files[{BASE}]" in out.passed, out.text


def test_fine_tuned_run_without_its_directory_fails_run_files(planted: Planted, pytester) -> None:
    shutil.rmtree(planted.path(R8))
    out = planted.verify(pytester)
    assert f"run_files[{R8}]" in out.failed and "the run directory is missing" in out.text, out.text


def test_other_memory_fails_slurm_resources(planted: Planted, pytester) -> None:
    planted.replace(f"{R4}/finetune.slurm", "--mem=80G", "--mem=40G")
    out = planted.verify(pytester)
    assert out.failed == only(f"slurm_resources[{R4}]", ARRAYS), out.text


def test_distributed_launch_for_one_gpu_fails_slurm_launch(planted: Planted, pytester) -> None:
    planted.replace(
        f"{R4}/finetune.slurm",
        "tune run lora_finetune_single_device",
        "tune run --nproc_per_node 2 lora_finetune_distributed",
    )
    out = planted.verify(pytester)
    assert out.failed == only(f"slurm_launch[{R4}]"), out.text
    assert "expected 'lora_finetune_single_device', found 'lora_finetune_distributed'" in out.text


def test_other_runs_config_fails_slurm_config_path(planted: Planted, pytester) -> None:
    planted.replace(
        f"{R4}/finetune.slurm", f"--config {VERIFY_CLUSTER_DIR}/{R4}/", f"--config {VERIFY_CLUSTER_DIR}/{R8}/"
    )
    out = planted.verify(pytester)
    assert out.failed == only(f"slurm_config_path[{R4}]"), out.text


def test_other_environment_fails_slurm_environment(planted: Planted, pytester) -> None:
    planted.replace(f"{R4}/finetune.slurm", "conda activate tune", "conda activate base")
    out = planted.verify(pytester)
    assert out.failed == only(f"slurm_environment[{R4}]"), out.text
    assert "conda environment activated (local config): expected 'tune', found 'base'" in out.text


def test_missing_module_purge_fails_slurm_environment(planted: Planted, pytester) -> None:
    """The original purges the submitting shell's modules before loading its own."""
    planted.replace(f"{R4}/finetune.slurm", "module purge\n", "")
    out = planted.verify(pytester)
    assert out.failed == only(f"slurm_environment[{R4}]"), out.text
    assert "`module purge` before the first `module load`" in out.text and "found 'no module purge'" in out.text


def test_module_purge_after_the_load_fails_slurm_environment(planted: Planted, pytester) -> None:
    planted.replace(f"{R4}/finetune.slurm", "module purge\nmodule load anaconda3/2025.6\n",
                    "module load anaconda3/2025.6\nmodule purge\n")  # fmt: skip
    out = planted.verify(pytester)
    assert out.failed == only(f"slurm_environment[{R4}]"), out.text
    assert "module purge on line 20" in out.text


def test_module_purge_on_a_site_without_modules_fails_slurm_environment(planted: Planted, pytester) -> None:
    """Where the local config loads no modules, `module` may not exist: a purge there stops the job."""
    planted.replace("local", "modules: [anaconda3/2025.6]\n", "")
    for run in (R4, R8):
        planted.replace(f"{run}/finetune.slurm", "module load anaconda3/2025.6\n", "")
    out = planted.verify(pytester)
    assert out.failed == only(f"slurm_environment[{R4}]", f"slurm_environment[{R8}]"), out.text
    assert "`module purge` on a site that loads no modules" in out.text


def _post_step_line(planted: Planted) -> str:
    (line,) = [
        ln
        for ln in planted.path(f"{R4}/finetune.slurm").read_text().splitlines(keepends=True)
        if "-m scaffold.torchtune_ext.post_finetune " in ln
    ]
    return line


def test_missing_post_step_fails_slurm_post_finetune(planted: Planted, pytester) -> None:
    planted.replace(f"{R4}/finetune.slurm", _post_step_line(planted), "")
    out = planted.verify(pytester)
    assert out.failed == only(f"slurm_post_finetune[{R4}]"), out.text
    assert "the script must run the post-training step once after `tune run`" in out.text


def test_post_step_with_another_model_dir_fails_slurm_post_finetune(planted: Planted, pytester) -> None:
    line = _post_step_line(planted)
    planted.replace(f"{R4}/finetune.slurm", line, line.replace("--model-dir ", "--model-dir /elsewhere"))
    out = planted.verify(pytester)
    assert out.failed == only(f"slurm_post_finetune[{R4}]"), out.text
    assert "post-training step --model-dir is not this run's model_dir" in out.text


def test_time_over_partition_limit_fails_slurm_time_limit(planted: Planted, pytester) -> None:
    planted.replace("local", 'partition_max_time: "1-00:00:00"', 'partition_max_time: "00:30:00"')
    out = planted.verify(pytester)
    # rank4 asks for 00:59:00; rank8 for 00:30:00, within the limit.
    assert out.failed == only(f"slurm_time_limit[{R4}]"), out.text


def test_time_limit_unknown_skips_slurm_time_limit(planted: Planted, pytester) -> None:
    planted.replace("local", 'partition_max_time: "1-00:00:00"\n', "")
    out = planted.verify(pytester)
    assert out.failed == set(), out.text
    assert "no partition_max_time" in out.skipped[f"slurm_time_limit[{R4}]"]


def test_wrong_wandb_mode_fails_metric_logger(planted: Planted, pytester) -> None:
    planted.replace(f"{R4}/finetune.yaml", "  mode: offline\n", "  mode: offlien\n")
    out = planted.verify(pytester)
    assert out.failed == only(f"metric_logger[{R4}]"), out.text
    assert "metric_logger.mode" in out.text and "offlien" in out.text


def test_a_file_that_links_out_of_the_experiment_fails_run_files_only(planted: Planted, pytester) -> None:
    """A run's finetune.yaml linked to a file outside (a cloned experiment): one run_files failure, the checks that
    read it blocked by it (was: 15 checks crashing), and the outside file's content never shown."""
    outside = pytester.path / "secret.txt"
    outside.write_text("TOP-SECRET-e41c\n")
    target = planted.path(f"{R4}/finetune.yaml")
    target.unlink()
    target.symlink_to(outside)
    out = planted.verify(pytester)
    assert out.failed == only(f"run_files[{R4}]"), out.text
    assert "is a symbolic link to" in out.text and "outside the experiment: not read" in out.text
    assert f"run_files[{R4}]" in out.skipped[f"finetune_yaml_loads[{R4}]"]
    assert "TOP-SECRET-e41c" not in out.text


def test_an_unreadable_file_fails_run_files_only(planted: Planted, pytester) -> None:
    import os

    import pytest

    if os.geteuid() == 0:
        pytest.skip("root reads every file: an unreadable file cannot be made here")
    planted.path(f"{R4}/finetune.yaml").chmod(0)
    out = planted.verify(pytester)
    assert out.failed == only(f"run_files[{R4}]"), out.text
    assert "finetune.yaml cannot be read: Permission denied" in out.text
