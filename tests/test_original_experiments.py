"""The rest of the original's experiments, each from an input in the original tool's format: its summary
(tests/fixtures/original_format/experiment_summary.yaml) and its claude.local.md, in its layout: the site config at
the root of the repository the commands run from, the experiment on scratch.

- the batch script purges the submitting shell's modules before loading its own;
- job mail from the site config's address, else one note that mail is off and how to turn it on;
- the original's 00:15:00 where no time limit is given anywhere, and the log says where each run's time came from;
- `variables` in the original's design shapes, read as a description when `runs` lists the runs;
- lr_scheduler spelt as torchtune's function name;
- controls.base_recipe honoured from torchtune 0.6.1's stock config, or refused by name;
- the original's own per-run setup_finetune.yaml refused, saying what to run instead;
- the local config found where the original keeps it, and each run's dataset file named in the log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from scaffold.inputs import base_recipe

from .conftest import ORIGINAL_FORMAT, Result, make_model_dir, run_cli

R4, R8 = "Llama-3.2-1B-Instruct_rank4", "Llama-3.2-1B-Instruct_rank8"
WORDS = ["amber", "blaze", "cider", "drift", "ember", "frost", "glide", "haven", "ivory", "jolly"]


@dataclass
class Layout:
    """The original's layout: `repo` holds claude.local.md (the commands run there), `exp` is on scratch."""

    repo: Path
    exp: Path

    @property
    def summary(self) -> Path:
        return self.exp / "experiment_summary.yaml"

    @property
    def site(self) -> Path:
        return self.repo / "claude.local.md"

    def edit(self, old: str, new: str, file: Path | None = None) -> None:
        path = file or self.summary
        text = path.read_text()
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path.name}"
        path.write_text(text.replace(old, new))

    def generate(self, *args: str) -> Result:
        return run_cli("generate", self.exp, *args, cwd=self.repo)

    def log(self) -> str:
        return (self.exp / "logs" / "scaffold-torchtune.log").read_text()

    def file(self, run: str, name: str) -> str:
        return (self.exp / run / name).read_text()

    def setup(self, run: str) -> dict:
        return yaml.safe_load(self.file(run, "setup_finetune.yaml"))

    def config(self, run: str) -> dict:
        return yaml.safe_load(self.file(run, "finetune.yaml"))


@pytest.fixture
def original(tmp_path: Path) -> Layout:
    scratch, repo = tmp_path / "scratch", tmp_path / "repo"
    text = ORIGINAL_FORMAT.joinpath("experiment_summary.yaml").read_text()
    text = text.replace("@SCRATCH@", str(scratch)).replace("@REPO@", str(repo))
    exp = Path(yaml.safe_load(text)["experiment"]["dir"])
    exp.mkdir(parents=True)
    (exp / "experiment_summary.yaml").write_text(text)
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "words_fixture.json").write_text(ORIGINAL_FORMAT.joinpath("words_fixture.json").read_text())
    (repo / "claude.local.md").write_text(ORIGINAL_FORMAT.joinpath("claude.local.md").read_text())
    make_model_dir(scratch / "models" / "Llama-3.2-1B-Instruct")
    return Layout(repo, exp)


def one_line(res: Result, needle: str) -> str:
    lines = [ln for ln in (res.out + res.err).splitlines() if needle in ln]
    assert len(lines) == 1, res.out + res.err
    return lines[0]


def section(log: str, run: str) -> str:
    """The log lines of one run (its section and its tagged lines)."""
    return "\n".join(ln for ln in log.splitlines() if f"[{run}]" in ln)


# --- the layout: the local config where the original keeps it ---------------------------------------------------


def test_claude_local_md_at_the_repository_root_is_found_from_there(original: Layout) -> None:
    res = original.generate()  # no --local-config: the experiment is on scratch, the site config in the repository
    assert res.code == 0, res.out + res.err
    heading = original.log().splitlines()[0]
    assert f"local config {original.site}; found in the current directory or above;" in heading
    assert "#SBATCH --account=nlplab\n" in original.file(R4, "finetune.slurm")


def test_a_config_above_the_experiment_comes_before_the_current_directorys(original: Layout) -> None:
    nearer = original.exp.parent / "claude.local.md"
    nearer.write_text(original.site.read_text().replace("**Account**: `nlplab`", "**Account**: `nearer`"))
    res = original.generate()
    assert res.code == 0, res.out + res.err
    assert "#SBATCH --account=nearer\n" in original.file(R4, "finetune.slurm")
    assert f"local config {nearer}; found in the experiment's directory or above;" in original.log()


# --- the batch script: module purge, mail, time -----------------------------------------------------------------


def test_module_purge_comes_before_the_module_load_lines(original: Layout) -> None:
    assert original.generate().code == 0
    lines = original.file(R4, "finetune.slurm").splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("module "))
    assert lines[first : first + 2] == ["module purge", "module load anaconda3/2025.6"]


def test_a_site_without_modules_runs_no_module_command(original: Layout) -> None:
    original.edit("```bash\nmodule load anaconda3/2025.6\n```\n", "", original.site)
    assert original.generate().code == 0
    assert "module " not in original.file(R4, "finetune.slurm")


def test_no_address_means_one_note_that_mail_is_off_and_how_to_turn_it_on(original: Layout) -> None:
    res = original.generate()
    assert res.code == 0, res.out + res.err
    assert "--mail" not in original.file(R4, "finetune.slurm")
    note = one_line(res, "job mail is off")
    assert note.startswith("note: job mail is off for every fine-tuned run: the local config names no address")
    assert '"- **Email**: `you@your.org`" under SLURM Defaults in claude.local.md' in note
    assert original.log().count("job mail is off") == 1
    doc = json.loads(original.generate("--json").out)
    assert [n for n in doc["notes"] if "job mail is off" in n] == [note.removeprefix("note: ")]


def test_an_email_bullet_mails_at_begin_and_end(original: Layout) -> None:
    original.edit("- **Account**: `nlplab`\n", "- **Account**: `nlplab`\n- **Email**: `ada@example.org`\n",
                  original.site)  # fmt: skip
    res = original.generate()
    assert res.code == 0, res.out + res.err
    script = original.file(R4, "finetune.slurm")
    assert "#SBATCH --mail-user=ada@example.org\n#SBATCH --mail-type=BEGIN,END\n" in script
    assert "job mail is off" not in res.out


def test_no_time_anywhere_asks_for_the_originals_fifteen_minutes(original: Layout) -> None:
    original.edit("- **Default time**: `0:59:00`\n", "", original.site)
    res = original.generate()
    assert res.code == 0, res.out + res.err
    assert "#SBATCH --time=00:15:00\n" in original.file(R4, "finetune.slurm")
    assert original.setup(R8)["time"] == "00:15:00"
    # The pre-flight estimate raises it only above the floor: these runs are far under fifteen minutes.
    assert (
        "time limit 00:15:00 (from no time limit given anywhere: the original's default, or the estimate)"
        in section(original.log(), R4)
    )


def test_the_log_says_where_each_runs_time_came_from(original: Layout) -> None:
    original.edit("      lora_rank: 8\n", '      lora_rank: 8\n    compute:\n      time: "00:40:00"\n')
    assert original.generate().code == 0
    log = original.log()
    assert "time limit 0:59:00 (from the local config's default time)" in section(log, R4)
    assert "time limit 00:40:00 (from runs[1].compute.time)" in section(log, R8)
    assert "#SBATCH --time=00:59:00\n" in original.file(R4, "finetune.slurm")


# --- variables in the original's design shapes -----------------------------------------------------------------

MODEL_AXIS = "variables:\n  model: [Llama-3.2-1B-Instruct, Llama-3.2-3B-Instruct]\n"
STRUCTURED = (
    "variables:\n  independent:\n    - name: lora_rank\n      values: [4, 8]\n"
    "  dependent:\n    - name: accuracy\n      metric: match_accuracy\n"
)


@pytest.mark.parametrize("shape", [MODEL_AXIS, STRUCTURED], ids=["model-axis", "structured"])
def test_a_design_shape_of_variables_with_listed_runs_trains_the_listed_runs(original: Layout, shape: str) -> None:
    original.edit("variables:\n  lora_rank: [4, 8]\n", shape)
    res = original.generate()
    assert res.code == 0, res.out + res.err
    assert [original.setup(r)["lora_rank"] for r in (R4, R8)] == [4, 8]
    assert "read as a description of the design: `runs` lists the runs" in original.log()


@pytest.mark.parametrize("shape", [MODEL_AXIS, STRUCTURED], ids=["model-axis", "structured"])
def test_a_design_shape_of_variables_without_listed_runs_is_refused(original: Layout, shape: str) -> None:
    original.edit("variables:\n  lora_rank: [4, 8]\n", shape)
    data = yaml.safe_load(original.summary.read_text())
    del data["runs"]
    original.summary.write_text(yaml.safe_dump(data, sort_keys=False))
    res = original.generate()
    assert res.code == 2, res.out + res.err
    where = "variables.model: variables.model is not a parameter" if shape == MODEL_AXIS else "variables: variables in"
    line = one_line(res, where)
    assert "experiment_summary.yaml:" in line and "`runs` lists no fine-tuned run to train" in line
    assert "(fix: list the runs under `runs:`" in line
    assert not (original.exp / R4).exists()


def test_a_misspelt_parameter_in_variables_is_still_an_error(original: Layout) -> None:
    original.edit("  lora_rank: [4, 8]\n", "  lora_rank: [4, 8]\n  lora_ranl: [4, 8]\n")
    res = original.generate()
    assert res.code == 2, res.out + res.err
    assert "did you mean 'lora_rank'" in one_line(res, "lora_ranl")


# --- lr_scheduler: the original's spelling -------------------------------------------------------------------


def test_lr_scheduler_spelt_as_torchtunes_function_name(original: Layout) -> None:
    original.edit("  epochs: 1\n", "  epochs: 1\n  lr_scheduler: get_cosine_schedule_with_warmup\n")
    res = original.generate()
    assert res.code == 0, res.out + res.err
    component = original.config(R4)["lr_scheduler"]["_component_"]
    assert component == "torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup"
    assert "controls.lr_scheduler: get_cosine_schedule_with_warmup -> cosine" in original.log()


def test_a_schedule_torchtune_does_not_ship_is_refused_saying_so(original: Layout) -> None:
    original.edit("  epochs: 1\n", "  epochs: 1\n  lr_scheduler: get_linear_schedule_with_warmup\n")
    res = original.generate()
    assert res.code == 2, res.out + res.err
    line = one_line(res, "controls.lr_scheduler")
    assert "'get_linear_schedule_with_warmup' is not allowed" in line
    assert "the only learning-rate schedule it ships" in line and "not in torchtune 0.6.1" in line


# --- controls.base_recipe -----------------------------------------------------------------------------------------


def with_records(layout: Layout, n: int) -> None:
    """The dataset with `n` train records (the stock config accumulates 8 batches of 4 per optimizer step)."""
    words = [f"{w}{i}" for i in range(n // len(WORDS) + 1) for w in WORDS][:n]
    data = json.loads(ORIGINAL_FORMAT.joinpath("words_fixture.json").read_text())
    data["train"] = [{"input": w, "output": w.title()} for w in words]
    (layout.repo / "data" / "words_fixture.json").write_text(json.dumps(data))
    layout.edit("      train: 8\n", f"      train: {n}\n")


def test_base_recipe_fills_what_the_summary_leaves_out_from_the_stock_config(original: Layout) -> None:
    """As the original's own base_recipe workflow test: lr and accumulation from the config, batch size and epochs
    from controls, the rank from each run."""
    with_records(original, 64)
    original.edit("  epochs: 1\n", "  epochs: 1\n  base_recipe: llama3_2/1B_lora_single_device\n")
    res = original.generate()
    assert res.code == 0, res.out + res.err
    for run, rank in ((R4, 4), (R8, 8)):
        cfg = original.config(run)
        assert cfg["optimizer"]["lr"] == 3e-4 and cfg["gradient_accumulation_steps"] == 8
        assert cfg["model"]["lora_rank"] == rank and cfg["model"]["lora_alpha"] == 2 * rank
        assert cfg["batch_size"] == 4 and cfg["epochs"] == 1  # controls come first
        assert cfg["tokenizer"]["max_seq_len"] is None  # the stock config sets no limit
        assert cfg["lr_scheduler"]["num_warmup_steps"] == 100
    log = original.log()
    assert "lr = 0.0003 (base_recipe llama3_2/1B_lora_single_device)" in log
    assert "gradient_accumulation_steps = 8 (base_recipe llama3_2/1B_lora_single_device)" in log
    assert "batch_size = 4 (controls)" in log
    assert "controls.base_recipe llama3_2/1B_lora_single_device: the settings the summary leaves out take" in log


def test_base_recipe_settings_are_checked_like_any_other(original: Layout) -> None:
    """8 records at 4 x 8 per step train zero steps: refused, as the same settings given in controls would be."""
    original.edit("  epochs: 1\n", "  epochs: 1\n  base_recipe: llama3_2/1B_lora_single_device\n")
    res = original.generate()
    assert res.code == 1, res.out + res.err
    assert "gradient_accumulation_steps 8" in one_line(res, f"[run {R4}]")


def test_an_unknown_base_recipe_is_refused_by_name(original: Layout) -> None:
    original.edit("  epochs: 1\n", "  epochs: 1\n  base_recipe: llama3_2/1B_full_single_device\n")
    res = original.generate()
    assert res.code == 2, res.out + res.err
    line = one_line(res, "controls.base_recipe")
    assert "'llama3_2/1B_full_single_device' is not a torchtune 0.6.1 stock config this tool knows" in line
    assert "(fix: use one of llama3_2/1B_lora_single_device, llama3_2/1B_lora," in line
    assert not (original.exp / R4).exists()


def test_packing_without_the_stock_configs_length_limit_is_refused(original: Layout) -> None:
    """The stock configs set no max_seq_len; packing needs one (torchtune packs to that length)."""
    with_records(original, 64)
    original.edit("  epochs: 1\n", "  epochs: 1\n  packed: true\n  base_recipe: llama3_2/1B_lora_single_device\n")
    res = original.generate()
    assert res.code == 1, res.out + res.err
    line = one_line(res, f"[run {R4}] controls.base_recipe:")
    assert "max_seq_len is null (no limit)" in line and "(fix: set max_seq_len (e.g. 2048), or packed: false)" in line
    original.edit("  packed: true\n", "  packed: true\n  max_seq_len: 512\n")
    assert original.generate().code == 0


def test_a_recipe_name_against_the_method_is_refused(original: Layout) -> None:
    original.edit("  epochs: 1\n", "  epochs: 1\n  method: lora\n  base_recipe: full_finetune_single_device\n")
    res = original.generate()
    assert res.code == 2, res.out + res.err
    assert "is a full fine-tuning recipe, but controls.method is lora" in one_line(res, "controls.base_recipe")


def test_the_shipped_stock_values_are_torchtunes() -> None:
    """A few values of templates/base_recipes.yaml, as torchtune 0.6.1's recipes/configs/*.yaml write them."""
    one_b = base_recipe.lookup("llama3_2/1B_lora_single_device")
    assert one_b is not None and one_b.values["lr"] == 3e-4 and one_b.values["gradient_accumulation_steps"] == 8
    eight_b = base_recipe.lookup("llama3_1/8B_lora_single_device")
    assert eight_b is not None and eight_b.values["lora_rank"] == 8 and eight_b.values["batch_size"] == 2
    mistral = base_recipe.lookup("mistral/7B_lora")
    assert mistral is not None and mistral.values["lr"] == 2e-5 and "weight_decay" not in mistral.values
    assert base_recipe.lookup("nope/7B_lora") is None
    for recipe in map(base_recipe.lookup, base_recipe.known()):
        assert recipe is not None and all(isinstance(v, int | float) or v is None for v in recipe.values.values())


# --- the original's own per-run files ----------------------------------------------------------------------------


def test_setup_finetune_refuses_the_originals_per_run_file_and_says_what_to_run(original: Layout) -> None:
    run_dir = original.exp / R4
    run_dir.mkdir()
    (run_dir / "setup_finetune.yaml").write_text(ORIGINAL_FORMAT.joinpath("run_setup_finetune.yaml").read_text())
    res = run_cli("setup-finetune", "--local-config", original.site, cwd=run_dir)
    assert res.code == 2, res.out + res.err
    line = one_line(res, "setup_finetune.yaml:")
    assert "the original tool's (cruijff_kit setup_finetune.py) per-run format" in line
    assert "(fix: run `scaffold generate` on the experiment" in line
    assert not (run_dir / "finetune.slurm").exists()


def test_generate_keeps_the_originals_per_run_file_until_forced(original: Layout) -> None:
    run_dir = original.exp / R4
    run_dir.mkdir()
    theirs = ORIGINAL_FORMAT.joinpath("run_setup_finetune.yaml").read_text()
    (run_dir / "setup_finetune.yaml").write_text(theirs)
    res = original.generate()
    assert res.code == 1, res.out + res.err
    line = one_line(res, "error:")
    assert "setup_finetune.yaml is in the original tool's (cruijff_kit setup_finetune.py) per-run format" in line
    assert "(fix: re-run with --force" in line and "scaffold setup-finetune" not in line
    assert (run_dir / "setup_finetune.yaml").read_text() == theirs
    res = original.generate("--force")
    assert res.code == 0, res.out + res.err
    assert original.setup(R4)["run_name"] == R4
    assert [p.read_text() for p in run_dir.glob("setup_finetune.yaml.*.bak")] == [theirs]


# --- each run's dataset file in the log --------------------------------------------------------------------------


def test_the_log_names_each_runs_dataset_file(original: Layout) -> None:
    other = original.repo / "data" / "other_words.json"
    other.write_text(ORIGINAL_FORMAT.joinpath("words_fixture.json").read_text())
    original.edit("      lora_rank: 4\n", f"      lora_rank: 4\n      dataset_path: {other}\n")
    res = original.generate()
    assert res.code == 0, res.out + res.err
    log = original.log()
    assert f"dataset {other} (label other_words; from runs[0].dataset_path)" in section(log, R4)
    shared = original.repo / "data" / "words_fixture.json"
    assert f"dataset {shared} (label words_fixture; from data.training.path)" in section(log, R8)
