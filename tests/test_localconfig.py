"""The local (site) config: claude.local.md bullets and scaffold.local.yaml, normalised to one dictionary,
found by --local-config, else $SCAFFOLD_LOCAL_CONFIG, else the nearest one upward from the experiment."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scaffold import layout
from scaffold.errors import InputError
from scaffold.inputs import localconfig

from .conftest import EXAMPLE_LOCAL, ORIGINAL_FORMAT, Experiment, Result, run_cli

MARKDOWN_EXAMPLE = ORIGINAL_FORMAT / "claude.local.md"
RANK4 = "Llama-3.2-1B-Instruct_rank4"


def markdown_config(directory: Path, old: str = "", new: str = "") -> Path:
    """The fixture claude.local.md, copied into `directory` (with one text replaced)."""
    path = directory / "claude.local.md"
    text = MARKDOWN_EXAMPLE.read_text()
    if old:
        assert text.count(old) == 1
        text = text.replace(old, new)
    path.write_text(text)
    return path


def line_of(path: Path, text: str) -> int:
    body = path.read_text()
    return body[: body.index(text)].count("\n") + 1


def slurm(exp: Experiment, run: str = RANK4) -> str:
    return (exp.dir / run / "finetune.slurm").read_text()


def one_error(res: Result, *parts: str) -> str:
    assert res.code == 2, res.out + res.err
    assert "Traceback" not in res.err
    lines = [ln for ln in res.err.splitlines() if all(p in ln for p in parts)]
    assert len(lines) == 1, res.err
    return lines[0]


# --- the markdown form ---------------------------------------------------------------------------------------


def test_markdown_example_is_normalised(tmp_path: Path):
    config = localconfig.load(markdown_config(tmp_path))
    assert config.settings == {
        "cluster": "Example HPC",
        "username": "ada",
        "group": "NLPLAB",
        "scratch_dir": "/scratch/nlplab/ada",
        "working_dir": "/scratch/nlplab/ada/work",
        "models_dir": "/scratch/nlplab/pretrained-llms",
        "account": "nlplab",
        "partition": None,  # "(none)"
        "constraint": "gpu80",
        "default_time": "0:59:00",
        "default_gpus": 1,
        "conda_env": "tune",
        "modules": ["anaconda3/2025.6"],
        "wandb_entity": "nlplab",
        "wandb_project": "sweeps",
    }
    assert type(config.settings["default_gpus"]) is int
    assert config.doc.locate(("account",))[0] == line_of(config.path, "**Account**")


def test_markdown_config_reaches_the_batch_script(example: Experiment, tmp_path: Path):
    example.local = markdown_config(tmp_path)
    res = example.generate("--no-check-paths")
    assert res.code == 0, res.out + res.err
    script = slurm(example)
    for line in (
        "module load anaconda3/2025.6\n",
        "conda activate tune\n",
        "#SBATCH --account=nlplab\n",
        "#SBATCH --constraint=gpu80\n",
        "#SBATCH --time=00:59:00\n",
    ):
        assert line in script
    assert "--partition" not in script


@pytest.mark.parametrize(
    "old, new, field, expected",
    [
        ("**Group**: `NLPLAB`", "**Group**: `nlp lab`", "group", "'nlp lab' is not allowed here"),
        ("**Account**: `nlplab`", "**Account**: `nlp;rm`", "account", "'nlp;rm' is not allowed here"),
        ("**Default GPUs**: `1`", "**Default GPUs**: `one`", "default_gpus", "expected integer or null"),
        ("**Default time**: `0:59:00`", "**Default time**: `an hour`", "default_time", "quoted string"),
    ],
    ids=["group", "account", "gpus", "time"],
)
def test_markdown_bad_value_names_its_line(example: Experiment, tmp_path: Path, old, new, field, expected):
    example.local = markdown_config(tmp_path, old, new)
    line = line_of(example.local, new)
    before = example.snapshot()
    msg = one_error(example.generate("--no-check-paths"), f"claude.local.md:{line}:", f"{field}:")
    assert expected in msg and "fix:" in msg
    assert example.snapshot().keys() - before.keys() <= {"logs/scaffold-torchtune.log"}


# --- the YAML form -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("account: nlplab", "acount: nlplab", "acount: unknown key 'acount' (fix: did you mean 'account'?"),
        ("gpu_directive: gres", "gpu_directive: gpu", "gpu_directive: 'gpu' is not allowed (fix: use one of gres"),
        (
            'default_time: "00:59:00"',
            "default_time: 4:00:00",
            'read 4:00:00 as the number 14400 (base 60), not as a time (fix: quote it: "4:00:00")',
        ),
        ("modules: [anaconda3/2025.6]", "modules: [anaconda3/2025.6; rm]", "modules[0]: 'anaconda3/2025.6; rm'"),
    ],
    ids=["unknown-key", "bad-enum", "unquoted-time", "module-injection"],
)
def test_yaml_bad_setting_names_its_line(example: Experiment, old, new, expected):
    text = example.local.read_text()
    assert text.count(old) == 1
    example.local.write_text(text.replace(old, new))
    line = line_of(example.local, new)
    msg = one_error(example.generate("--no-check-paths"), f"scaffold.local.yaml:{line}:")
    assert expected in msg and "fix:" in msg
    assert not (example.dir / RANK4).exists()


# --- discovery: --local-config > $SCAFFOLD_LOCAL_CONFIG > nearest upward (experiment, then cwd) ---------------


def account_config(path: Path, account: str) -> Path:
    path.write_text(EXAMPLE_LOCAL.read_text().replace("account: nlplab", f"account: {account}"))
    return path


@pytest.mark.parametrize(
    "flag, env, expected",
    [(True, True, "from_flag"), (False, True, "from_env"), (False, False, "from_nearest")],
    ids=["flag-beats-env", "env-beats-nearest", "nearest"],
)
def test_discovery_order(example: Experiment, tmp_path: Path, flag: bool, env: bool, expected: str):
    account_config(example.local, "from_nearest")  # beside the experiment: found upward
    explicit = account_config(tmp_path / "explicit.yaml", "from_flag")
    from_env = account_config(tmp_path / "env.yaml", "from_env")
    args = ["generate", example.dir, "--no-check-paths"] + (["--local-config", explicit] if flag else [])
    res = run_cli(*args, env={"SCAFFOLD_LOCAL_CONFIG": str(from_env)} if env else None)
    assert res.code == 0, res.out + res.err
    assert f"#SBATCH --account={expected}\n" in slurm(example)


def test_nearest_config_wins_over_one_further_up(example: Experiment):
    nearer = markdown_config(example.dir, "**Account**: `nlplab`", "**Account**: `nearer`")
    assert localconfig.find(example.dir) == nearer
    assert run_cli("generate", example.dir, "--no-check-paths").code == 0
    assert "#SBATCH --account=nearer\n" in slurm(example)


def test_no_local_config_found(example: Experiment, tmp_path: Path):
    example.local.unlink()
    if any((d / n).is_file() for d in tmp_path.parents for n in layout.NAMES):
        pytest.skip("a local config above the temporary directory would be found")
    before = example.snapshot()
    # (from a directory with no config above it either: the current directory and its parents are searched too)
    msg = one_error(run_cli("generate", example.dir, "--no-check-paths", cwd=tmp_path), "no local config found")
    assert "$SCAFFOLD_LOCAL_CONFIG" in msg and "fix: create scaffold.local.yaml beside the experiment" in msg
    assert "--local-config PATH" in msg
    assert example.snapshot().keys() - before.keys() <= {"logs/scaffold-torchtune.log"}


def test_named_config_that_does_not_exist(example: Experiment, tmp_path: Path):
    with pytest.raises(InputError, match="local config not found"):
        localconfig.load(tmp_path / "missing.yaml")
    res = run_cli("generate", example.dir, "--no-check-paths", env={"SCAFFOLD_LOCAL_CONFIG": str(tmp_path / "nope.md")})
    assert "nope.md: local config not found" in one_error(res, "nope.md")


def test_example_config_reads_the_same_in_both_forms(tmp_path: Path):
    """The shipped YAML example and the fixture markdown say the same where they overlap."""
    yaml_form = localconfig.load(shutil.copy(EXAMPLE_LOCAL, tmp_path / "scaffold.local.yaml")).settings
    md_form = localconfig.load(markdown_config(tmp_path)).settings
    for key in ("username", "account", "constraint", "default_gpus", "conda_env", "modules", "wandb_entity"):
        assert yaml_form[key] == md_form[key], key
