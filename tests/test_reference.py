"""A summary in the original tool's format (tests/fixtures/original_format) with its placeholders replaced."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from .conftest import ORIGINAL_FORMAT, Experiment, make_model_dir


@pytest.fixture
def cruijff(tmp_path: Path) -> Experiment:
    scratch, repo = tmp_path / "scratch", tmp_path / "repo"
    text = (ORIGINAL_FORMAT / "experiment_summary.yaml").read_text()
    text = text.replace("@SCRATCH@", str(scratch)).replace("@REPO@", str(repo))
    data = yaml.safe_load(text)
    exp = Path(data["experiment"]["dir"])
    exp.mkdir(parents=True)
    (exp / "experiment_summary.yaml").write_text(text)
    dataset = Path(data["data"]["training"]["path"])
    dataset.parent.mkdir(parents=True)
    shutil.copy(ORIGINAL_FORMAT / "words_fixture.json", dataset)
    make_model_dir(Path(data["models"]["base"][0]["path"]))
    local = tmp_path / "claude.local.md"
    shutil.copy(ORIGINAL_FORMAT / "claude.local.md", local)
    return Experiment(exp, local)


def test_reference_asks_for_validation_and_gets_the_validating_recipe(cruijff: Experiment) -> None:
    """The fixture asks for validation during training; stock 0.6.1 recipes have none, so both runs use this
    project's validating recipe over the file's validation split."""
    res = cruijff.generate()
    assert res.code == 0, res.out + res.err
    for rank in (4, 8):
        run = cruijff.dir / f"Llama-3.2-1B-Instruct_rank{rank}"
        cfg = OmegaConf.to_container(OmegaConf.load(run / "finetune.yaml"), resolve=True)
        assert cfg["dataset_val"]["field"] == "validation" and cfg["dataset"]["field"] == "train"
        assert "run_val_every_n_steps" in cfg
        assert (
            "tune run scaffold/torchtune_ext/lora_finetune_single_device_val.py" in (run / "finetune.slurm").read_text()
        )


def test_reference_generates_with_validation_off(cruijff: Experiment) -> None:
    data = cruijff.load()
    data["controls"]["validation_during_training"] = False
    cruijff.save(data)
    res = cruijff.generate()
    assert res.code == 0, res.out + res.err
    for rank in (4, 8):
        run = cruijff.dir / f"Llama-3.2-1B-Instruct_rank{rank}"
        cfg = OmegaConf.to_container(OmegaConf.load(run / "finetune.yaml"), resolve=True)
        assert cfg["model"]["lora_rank"] == rank and cfg["model"]["lora_alpha"] == 2 * rank
        assert cfg["output_dir"] == str(run / "artifacts")
        assert cfg["metric_logger"]["project"] == "word_case_fixture"
        script = (run / "finetune.slurm").read_text()
        # site settings from claude.local.md
        assert "#SBATCH --account=nlplab" in script and "#SBATCH --constraint=gpu80" in script
        assert "#SBATCH --partition" not in script  # "(none)"
        assert "#SBATCH --time=00:59:00" in script
        assert "module load anaconda3/2025.6" in script and "conda activate tune" in script
    # evaluation and the other keys this tool does not consume are left alone
    assert yaml.safe_load(cruijff.summary.read_text())["evaluation"]["temperature"] == 0.0
