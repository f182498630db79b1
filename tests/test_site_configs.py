"""claude.local.md as real site configs are written (tests/fixtures/site_configs/: one written like a group's
shared file, one like the blank template, filled in where this tool reads it): sections decide what is read, a
value is its backticked part, and an unfilled <placeholder> is an error only where its value is used."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from scaffold.inputs import localconfig

from .conftest import REPO, Experiment
from .test_localconfig import RANK4, line_of, one_error, slurm

SITE_CONFIGS = REPO / "tests" / "fixtures" / "site_configs"
GROUP = SITE_CONFIGS / "group.claude.local.md"
TEMPLATE = SITE_CONFIGS / "template.claude.local.md"


def use(example: Experiment, fixture: Path, tmp_path: Path, old: str = "", new: str = "") -> Path:
    path = tmp_path / "claude.local.md"
    text = fixture.read_text()
    if old:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path.write_text(text)
    example.local = path
    return path


def without_wandb(example: Experiment) -> None:
    data = example.load()
    del data["output"]
    example.save(data)


def finetune_yaml(exp: Experiment) -> str:
    return (exp.dir / RANK4 / "finetune.yaml").read_text()


def test_group_file_is_read_by_section():
    config = localconfig.load(GROUP)
    s = config.settings
    assert s["username"] == "ada"  # the GitHub section's <your_github_username> is never read
    assert config.doc.locate(("username",))[0] == line_of(GROUP, "**Username**: `ada`")
    assert s["cluster"] == "Example HPC (Research Computing center)"
    assert s["partition"] is None and s["constraint"] == "gpu80" and s["default_time"] == "0:59:00"
    assert s["models_dir"] == "/scratch/nlplab/pretrained-llms"
    assert s["modules"] == ["anaconda3/2025.6"]  # the Conda Environment Setup block is not the module list
    assert s["wandb_project"] == "wordcaps"
    assert set(config.placeholders) == {"wandb_entity"}
    assert not any("Board number" in n or "Location" in n for n in config.notes)


def test_template_notes_after_values_are_not_values():
    config = localconfig.load(TEMPLATE)
    s = config.settings
    assert (s["cluster"], s["group"], s["partition"]) == ("Example HPC", "NLPLAB", "gpu")
    assert (s["default_time"], s["conda_env"], s["wandb_entity"]) == ("0:59:00", "tune", "nlplab")
    assert s["wandb_mode"] == "offline"
    assert s["modules"] == ["anaconda3/2025.6"]  # the comment after it is no module
    assert set(config.placeholders) == {"working_dir", "wandb_project"}


@pytest.mark.parametrize("fixture", [GROUP, TEMPLATE], ids=["group", "template"])
def test_both_generate(example: Experiment, tmp_path: Path, fixture: Path):
    use(example, fixture, tmp_path)
    if fixture == GROUP:
        without_wandb(example)  # its W&B entity is still a placeholder: fine while no run logs to W&B
    res = example.generate("--no-check-paths")
    assert res.code == 0, res.out + res.err
    script = slurm(example)
    assert "#SBATCH --account=nlplab\n" in script and "conda activate tune\n" in script
    assert "#SBATCH --time=00:59:00\n" in script


def test_placeholder_entity_is_left_to_wandb(example: Experiment, tmp_path: Path):
    """The W&B entity is optional (the original writes none): an unfilled placeholder leaves W&B its default
    entity, with a note in the log, instead of refusing the group's shipped config."""
    use(example, GROUP, tmp_path)  # the example logs to W&B
    res = example.generate("--no-check-paths")
    assert res.code == 0, res.out + res.err
    cfg = yaml.safe_load((example.dir / RANK4 / "finetune.yaml").read_text())
    assert cfg["metric_logger"]["_component_"].endswith("WandBLogger") and "entity" not in cfg["metric_logger"]
    log = (example.dir / "logs" / "scaffold-torchtune.log").read_text()
    assert "W&B entity <your_wandb_team> is an unfilled placeholder" in log


def test_placeholder_in_a_slurm_field_is_an_error(example: Experiment, tmp_path: Path):
    path = use(example, TEMPLATE, tmp_path, "**Account**: `nlplab`", "**Account**: `<your_slurm_account>`")
    line = line_of(path, "**Account**")
    msg = one_error(example.generate("--no-check-paths"), f"claude.local.md:{line}:", "account:")
    assert "<your_slurm_account>" in msg


def test_same_placeholder_in_an_unused_field_is_fine(example: Experiment, tmp_path: Path):
    # The template's default project is a placeholder: unused while the summary names its own project...
    use(example, TEMPLATE, tmp_path)
    assert example.generate("--no-check-paths").code == 0
    # ...and an error once a run logs to W&B without one.
    data = example.load()
    del data["output"]
    data["controls"]["metric_logger"] = "wandb"
    example.save(data)
    line = line_of(example.local, "**Default project**")
    one_error(example.generate("--no-check-paths"), f"claude.local.md:{line}:", "wandb_project:")


def test_duplicate_key_in_read_sections(tmp_path: Path):
    path = tmp_path / "claude.local.md"
    path.write_text(GROUP.read_text().replace("- **Group**: `NLPLAB`", "- **Account**: `other`"))
    with pytest.raises(localconfig.InputError, match="set twice"):
        localconfig.load(path)


# --- W&B ------------------------------------------------------------------------------------------------------


def test_wandb_offline_by_default_and_sync_hint(example: Experiment):
    res = example.generate("--no-check-paths")
    assert res.code == 0, res.err
    assert "  mode: offline\n" in finetune_yaml(example)
    assert 'mkdir -p "${output_dir}/logs"\n' in slurm(example)
    assert f"wandb sync {example.load()['experiment']['dir']}/{RANK4}/artifacts/logs/wandb/offline-run-*" in res.out


def test_wandb_mode_and_default_project_from_local_config(example: Experiment):
    example.local.write_text(example.local.read_text() + "wandb_mode: online\nwandb_project: site_default\n")
    data = example.load()
    del data["output"]
    data["controls"]["metric_logger"] = "wandb"
    example.save(data)
    res = example.generate("--no-check-paths")
    assert res.code == 0, res.err
    text = finetune_yaml(example)
    assert "  project: site_default\n" in text and "  mode: online\n" in text
    assert "wandb sync" not in res.out


def test_unknown_wandb_mode(example: Experiment):
    example.local.write_text(example.local.read_text() + "wandb_mode: offine\n")
    msg = one_error(example.generate("--no-check-paths"), "wandb_mode:")
    assert "use one of offline, online, disabled" in msg and "did you mean 'offline'" in msg


# --- slurm_overrides and mail -----------------------------------------------------------------------------------


def test_override_replaces_and_empty_removes_the_site_directive(example: Experiment):
    example.local.write_text(example.local.read_text() + "sbatch_extra: [--qos=low]\n")
    data = example.load()
    data["runs"][0]["slurm_overrides"] = {"constraint": "gpu40", "partition": "", "qos": None, "comment": "x"}
    example.save(data)
    res = example.generate("--no-check-paths")
    assert res.code == 0, res.out + res.err
    script = slurm(example)
    assert script.count("--constraint") == 1 and "#SBATCH --constraint=gpu40\n" in script
    assert "--partition" not in script and "--qos" not in script
    assert "#SBATCH --comment=x\n" in script


def test_override_of_a_run_directive_is_an_error(example: Experiment):
    data = example.load()
    data["runs"][0]["slurm_overrides"] = {"time": "02:00:00"}
    example.save(data)
    res = example.generate("--no-check-paths")
    assert res.code == 1, res.out + res.err  # that run fails, the others go on
    assert "runs[0].slurm_overrides.time: --time is written from the run's own settings" in res.out


def test_mail_user_gets_begin_and_end(example: Experiment):
    example.local.write_text(example.local.read_text() + "mail_user: ada@example.org\n")
    assert example.generate("--no-check-paths").code == 0
    assert "#SBATCH --mail-user=ada@example.org\n#SBATCH --mail-type=BEGIN,END\n" in slurm(example)


def test_fixtures_are_not_copies_of_the_original():
    for path in (GROUP, TEMPLATE):
        text = path.read_text()
        assert "della" not in text.lower() and "msalganik" not in text.lower() and "cruijff" not in text.lower()


def test_shipped_markdown_fixture_still_reads(tmp_path: Path):
    shutil.copy(GROUP, tmp_path / "claude.local.md")
    assert localconfig.load(tmp_path / "claude.local.md").settings["account"] == "nlplab"


def test_local_default_project_is_used_when_the_summary_names_none(example: Experiment):
    """As the original (which always logs to W&B): the site's default project, offline unless set otherwise."""
    data = example.load()
    del data["output"]
    example.save(data)
    example.local.write_text(example.local.read_text() + "wandb_project: site_default\n")
    res = example.generate("--no-check-paths")
    assert res.code == 0, res.out + res.err
    logger = yaml.safe_load((example.dir / RANK4 / "finetune.yaml").read_text())["metric_logger"]
    assert logger["project"] == "site_default" and logger["mode"] == "offline"
    assert "wandb sync" in res.out
