"""`scaffold setup-finetune`: the one way to change one run. The change (flags, or edits of the run's
setup_finetune.yaml) goes into the run's entry of experiment_summary.yaml, comments kept, and the run is generated
again from it; afterwards generate finds it unchanged and verify passes. Nothing is written when the change is
invalid, when the run fails its checks, or when a file of the run was edited by hand."""

from __future__ import annotations

import pytest
import yaml
from omegaconf import OmegaConf

from .conftest import Experiment, make_model_dir, run_cli

RUN = "Llama-3.2-1B-Instruct_rank4"


def _cfg(run_dir):
    return OmegaConf.to_container(OmegaConf.load(run_dir / "finetune.yaml"), resolve=True)


@pytest.fixture
def commented(example: Experiment, tmp_path) -> Experiment:
    """The shipped example as written (its comments kept), with experiment.dir at the copy and the model in a local
    directory, so every path check runs for real; generated."""
    text = example.summary.read_text()
    old_dir = "/scratch/nlplab/ada/ck-projects/capitalization/cap_lora_rank_2026-11-30"
    old_model = "/scratch/nlplab/pretrained-llms/Llama-3.2-1B-Instruct"
    assert old_dir in text and old_model in text and "# Where the experiment lives" in text
    model = make_model_dir(tmp_path / "models" / "Llama-3.2-1B-Instruct")
    example.summary.write_text(text.replace(old_dir, str(example.dir)).replace(old_model, str(model)))
    res = example.generate()
    assert res.code == 0, res.out + res.err
    return example


def comments(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("#") or " # " in line]


def assert_green(exp: Experiment) -> None:
    """generate rewrites nothing (exit 0) and verify passes once the golden copies are accepted."""
    again = exp.generate("--json")
    assert again.code == 0, again.out + again.err
    for run in yaml.safe_load(again.out)["runs"]:
        assert set(run["files"].values()) <= {"unchanged"}, run
    run_cli("verify", exp.dir, "--local-config", exp.local, "--snapshot-update")
    res = run_cli("verify", exp.dir, "--local-config", exp.local)
    assert res.code == 0, res.out[-3000:] + res.err


def test_an_edit_of_setup_finetune_yaml_goes_into_the_summary_and_stays_green(commented: Experiment) -> None:
    run_dir = commented.dir / RUN
    setup = run_dir / "setup_finetune.yaml"
    before = commented.summary.read_text()
    setup.write_text(setup.read_text().replace("epochs: 1", "epochs: 3").replace("time: 00:59:00", 'time: "02:00:00"'))
    res = run_cli("setup-finetune", cwd=run_dir)
    assert res.code == 0, res.out + res.err
    assert "change: runs[0].parameters.epochs: (not set) -> 3" in res.out
    assert "change: runs[0].compute.time: (not set) -> '02:00:00'" in res.out
    assert "experiment_summary.yaml: updated" in res.out
    after = commented.summary.read_text()
    assert comments(after) == comments(before), "a comment of the summary was lost"
    run = yaml.safe_load(after)["runs"][0]
    assert run["parameters"] == {"lora_rank": 4, "epochs": 3} and run["compute"] == {"time": "02:00:00"}
    assert _cfg(run_dir)["epochs"] == 3
    assert "#SBATCH --time=02:00:00" in (run_dir / "finetune.slurm").read_text()
    assert "epochs: 3" in setup.read_text()
    assert_green(commented)


def test_flags_go_into_the_summary_and_are_recorded(commented: Experiment) -> None:
    run_dir = commented.dir / RUN
    res = run_cli("setup-finetune", "--lr", "1e-5", "--lora-dropout=0.1", "--set", "seed=7", cwd=run_dir)
    assert res.code == 0, res.out + res.err
    cfg = _cfg(run_dir)
    assert cfg["optimizer"]["lr"] == 1e-5 and cfg["model"]["lora_dropout"] == 0.1 and cfg["seed"] == 7
    recorded = yaml.safe_load((run_dir / "setup_finetune.yaml").read_text())
    assert recorded["lora_dropout"] == 0.1 and recorded["lr"] == 1e-5
    parameters = yaml.safe_load(commented.summary.read_text())["runs"][0]["parameters"]
    assert parameters == {"lora_rank": 4, "lr": 1e-5, "lora_dropout": 0.1, "seed": 7}
    assert_green(commented)


def test_alpha_follows_a_new_rank_as_generate_derives_it(commented: Experiment) -> None:
    """lora_alpha is not pinned: the summary gets lora_rank, and the rule (2 x lora_rank) gives the alpha."""
    text = commented.summary.read_text().replace(
        'name: "Llama-3.2-1B-Instruct_rank4"', 'name: "Llama-3.2-1B-Instruct_a"'
    )
    assert "variables:\n  lora_rank: [4, 8]\n" in text
    commented.summary.write_text(text.replace("variables:\n  lora_rank: [4, 8]\n", ""))  # (a swept rank needs naming)
    assert commented.generate().code == 0
    run_dir = commented.dir / "Llama-3.2-1B-Instruct_a"
    res = run_cli("setup-finetune", "--lora_rank", "16", cwd=run_dir)
    assert res.code == 0, res.out + res.err
    cfg = _cfg(run_dir)
    assert cfg["model"]["lora_rank"] == 16 and cfg["model"]["lora_alpha"] == 32
    assert "lora_alpha" not in yaml.safe_load(commented.summary.read_text())["runs"][0]["parameters"]


def test_a_change_the_run_name_contradicts_writes_nothing(commented: Experiment) -> None:
    """--lora_rank 16 on a run named _rank4: refused (exit 2) with the reason and the fix, and every file, the
    summary included, as it was."""
    before = commented.snapshot()
    res = run_cli("setup-finetune", "--lora-rank=16", cwd=commented.dir / RUN)
    assert res.code == 2, res.out + res.err
    assert "experiment_summary.yaml:" in res.err and "runs[0].parameters.lora_rank: --lora_rank 16: " in res.err
    assert "the run name says rank4 but lora_rank is 16" in res.err and "(fix: " in res.err
    assert "Traceback" not in res.err
    after = commented.snapshot()
    assert {k: v for k, v in after.items() if not k.startswith("logs/")} == {
        k: v for k, v in before.items() if not k.startswith("logs/")
    }


def test_a_run_that_fails_its_self_check_writes_nothing_not_even_the_summary(commented: Experiment, monkeypatch):
    """The same gate as generate's: a renderer that writes the wrong rank fails the run (exit 1); the summary and
    the run's files stay as they were, and the texts that failed are in logs/rejected/RUN/."""
    from scaffold.commands import pipeline
    from scaffold.commands.setupfinetune import setup_finetune
    from scaffold.layout import FINETUNE_FILE

    real = pipeline.render_run

    def wrong_rank(setup, model):
        texts = real(setup, model)
        return {**texts, FINETUNE_FILE: texts[FINETUNE_FILE].replace("lora_rank: 4", "lora_rank: 3")}

    monkeypatch.setattr(pipeline, "render_run", wrong_rank)
    monkeypatch.setenv("SCAFFOLD_LOCAL_CONFIG", str(commented.local))
    before = commented.snapshot()
    result = setup_finetune(commented.dir / RUN, ["--epochs", "2"])
    assert result.exit_status == 1
    assert any("self-check parameter_values" in p.message for p in result.problems), result.problems
    assert any("logs/rejected/" + RUN in n for n in result.notes), result.notes
    assert any("the change was not made: experiment_summary.yaml is as it was" in n for n in result.notes)
    after = commented.snapshot()
    for name, data in before.items():
        if not name.startswith("logs/"):
            assert after[name] == data, f"{name} changed"
    assert "epochs: 2" in (commented.dir / "logs" / "rejected" / RUN / "finetune.yaml").read_text()


def test_a_file_edited_by_hand_is_kept_and_nothing_is_written_unless_forced(commented: Experiment) -> None:
    config = commented.dir / RUN / "finetune.yaml"
    config.write_text(config.read_text() + "# by hand\n")
    summary = commented.summary.read_text()
    res = run_cli("setup-finetune", "--epochs", "2", cwd=commented.dir / RUN)
    assert res.code == 1, res.out + res.err
    assert "finetune.yaml edited by hand since it was generated; kept" in res.err
    assert commented.summary.read_text() == summary and config.read_text().endswith("# by hand\n")
    res = run_cli("setup-finetune", "--epochs", "2", "--force", cwd=commented.dir / RUN)
    assert res.code == 0, res.out + res.err
    assert "epochs: 2" in config.read_text() and len(list(config.parent.glob("finetune.yaml.*.bak"))) == 1
    assert yaml.safe_load(commented.summary.read_text())["runs"][0]["parameters"]["epochs"] == 2


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--conda_env", "other"], "conda_env is not a setting of one run: it comes from the site config (conda_env)"),
        (["--run_name", "x"], "run_name is not a setting of one run"),
        (["--lora_ranl", "16"], "unknown setting 'lora_ranl'"),
    ],
)
def test_what_is_not_the_runs_own_is_refused(commented: Experiment, args, words) -> None:
    before = commented.summary.read_text()
    res = run_cli("setup-finetune", *args, cwd=commented.dir / RUN)
    assert res.code == 2 and words in res.err and "(fix: " in res.err, res.err
    assert "Traceback" not in res.err and commented.summary.read_text() == before


def test_a_run_expanded_from_variables_has_no_entry_to_change(example: Experiment) -> None:
    data = example.load()
    data.pop("runs")
    example.save(data)
    assert example.generate("--no-check-paths").code == 0
    res = run_cli("setup-finetune", "--epochs", "2", "--no-check-paths", cwd=example.dir / RUN)
    assert res.code == 2 and "is expanded from variables" in res.err and "list the runs under runs:" in res.err


def test_edits_made_before_the_summary_changed_cannot_be_told_apart(commented: Experiment) -> None:
    setup = commented.dir / RUN / "setup_finetune.yaml"
    setup.write_text(setup.read_text().replace("epochs: 1", "epochs: 3"))
    commented.summary.write_text(commented.summary.read_text().replace("lr: 1e-4", "lr: 2e-4"))
    res = run_cli("setup-finetune", cwd=commented.dir / RUN)
    assert res.code == 2, res.out + res.err
    assert "its edits cannot be told apart" in res.err and "--KEY VALUE" in res.err
    assert "epochs: 3" in setup.read_text()


def test_unknown_key_in_file_gets_a_suggestion_with_line(local_example: Experiment) -> None:
    assert local_example.generate().code == 0
    setup = local_example.dir / RUN / "setup_finetune.yaml"
    before = (local_example.dir / RUN / "finetune.yaml").read_bytes()
    setup.write_text(setup.read_text().replace("epochs: 1", "epocs: 2"))
    res = run_cli("setup-finetune", cwd=local_example.dir / RUN)
    assert res.code == 2
    assert "setup_finetune.yaml:" in res.err and "unknown key 'epocs'" in res.err and "did you mean 'epochs'" in res.err
    assert (local_example.dir / RUN / "finetune.yaml").read_bytes() == before


def test_unquoted_time_in_setup_is_explained(local_example: Experiment) -> None:
    assert local_example.generate().code == 0
    setup = local_example.dir / RUN / "setup_finetune.yaml"
    setup.write_text(setup.read_text().replace("time: 00:59:00", "time: 4:00:00"))
    res = run_cli("setup-finetune", cwd=local_example.dir / RUN)
    assert res.code == 2
    assert "YAML read 4:00:00 as the number 14400" in res.err and 'quote it: "4:00:00"' in res.err


def test_more_gpus_switches_to_distributed(local_example: Experiment) -> None:
    assert local_example.generate().code == 0
    run_dir = local_example.dir / RUN
    res = run_cli("setup-finetune", "--gpus", "2", cwd=run_dir)
    assert res.code == 0, res.out + res.err
    script = (run_dir / "finetune.slurm").read_text()
    assert "tune run --nproc_per_node 2 lora_finetune_distributed" in script and "--gres=gpu:2" in script
    assert "compile" in _cfg(run_dir)  # optional for the distributed recipe, still read by it
    assert yaml.safe_load(local_example.summary.read_text())["runs"][0]["compute"] == {"gpus": 2}
