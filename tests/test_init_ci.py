"""`scaffold init-ci`: the install spec it writes is the tool installed here (pip's direct_url.json, PEP 610), or a
refusal with the fix where a CI runner could not install it; the site config secret in either form; the golden
copies written from the files generate wrote. (The whole gate, run as a runner runs it: tests/gate/.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from scaffold.commands.ci import NotInstallable, installed_spec, write_site_config
from scaffold.inputs import localconfig

from .conftest import EXAMPLE, EXAMPLE_LOCAL, ORIGINAL_FORMAT, run_cli

REPO = Path(__file__).resolve().parent.parent


def distribution(tmp_path: Path, direct_url: dict | None) -> metadata.Distribution:
    """A real installed-distribution directory (dist-info) as pip leaves it, read by importlib.metadata."""
    info = tmp_path / "scaffold_torchtune-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: scaffold-torchtune\nVersion: 0.1.0\n")
    if direct_url is not None:
        (info / "direct_url.json").write_text(json.dumps(direct_url))
    return metadata.PathDistribution(info)


COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("direct_url", "spec"),
    [
        (None, "scaffold-torchtune==0.1.0"),  # from an index: that version is on it
        (
            {"url": "https://github.com/lab/scaffold-torchtune.git", "vcs_info": {"vcs": "git", "commit_id": COMMIT}},
            f"scaffold-torchtune @ git+https://github.com/lab/scaffold-torchtune.git@{COMMIT}",
        ),
        (
            {
                "url": "ssh://git@host/lab/tool.git",
                "vcs_info": {"vcs": "git", "commit_id": COMMIT, "requested_revision": "v1"},
                "subdirectory": "pkg",
            },
            f"scaffold-torchtune @ git+ssh://git@host/lab/tool.git@{COMMIT}#subdirectory=pkg",
        ),  # fmt: skip
        (
            {"url": "https://files.example.org/scaffold_torchtune-0.1.0-py3-none-any.whl", "archive_info": {}},
            "scaffold-torchtune @ https://files.example.org/scaffold_torchtune-0.1.0-py3-none-any.whl",
        ),
    ],
)
def test_the_install_spec_is_what_pip_recorded(tmp_path: Path, direct_url: dict | None, spec: str) -> None:
    assert installed_spec(distribution(tmp_path, direct_url)) == spec


@pytest.mark.parametrize(
    ("direct_url", "says"),
    [
        ({"url": "file:///home/ada/scaffold-torchtune", "dir_info": {"editable": True}}, "an editable install of"),
        ({"url": "file:///home/ada/scaffold-torchtune", "dir_info": {}}, "the local path"),
        ({"url": "file:///home/ada/clone", "vcs_info": {"vcs": "git", "commit_id": COMMIT}}, "the local path"),
        ({"url": "file:///tmp/scaffold_torchtune-0.1.0.whl", "archive_info": {}}, "the local path"),
    ],
)
def test_a_local_or_editable_install_is_refused(tmp_path: Path, direct_url: dict, says: str) -> None:
    with pytest.raises(NotInstallable, match=f"{says} file:///.*which a CI runner cannot reach"):
        installed_spec(distribution(tmp_path, direct_url))


def test_init_ci_refuses_with_the_fix_and_writes_nothing(tmp_path: Path) -> None:
    """This checkout's own install is editable (pip install -e): no flag gives no workflow, and the --package fix."""
    record = metadata.distribution("scaffold-torchtune").read_text("direct_url.json")
    if record is None or "file:" not in record:
        pytest.skip("scaffold-torchtune is installed from an index or a URL here, not from this checkout")
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    shutil.copytree(EXAMPLE, repo / "cap", ignore=shutil.ignore_patterns("Llama-*", "logs", "arrays"))
    res = run_cli("init-ci", repo / "cap")
    assert res.code == 2 and "Traceback" not in res.err
    assert "which a CI runner cannot reach" in res.err and "--package SPEC" in res.err
    assert not (repo / ".github").exists() and not (repo / "cap" / "golden").exists()
    bad = run_cli("init-ci", repo / "cap", "--package=--index-url=http://x")
    assert bad.code == 2 and "is not one pip requirement" in bad.err


def test_the_site_config_form_is_told_from_its_text(tmp_path: Path) -> None:
    markdown = (ORIGINAL_FORMAT / "claude.local.md").read_text()
    yaml_text = EXAMPLE_LOCAL.read_text()
    assert localconfig.file_name_for(markdown) == "claude.local.md"
    assert localconfig.file_name_for(yaml_text) == "scaffold.local.yaml"
    for text in (markdown, yaml_text):
        d = tmp_path / localconfig.file_name_for(text).replace(".", "_")
        d.mkdir()
        path = write_site_config(d, text)
        assert path.stat().st_mode & 0o777 == 0o600
        # Read back as the form it is, with the same settings as the original file.
        original = ORIGINAL_FORMAT / "claude.local.md" if path.suffix == ".md" else EXAMPLE_LOCAL
        assert localconfig.load(path).settings == localconfig.load(original).settings


def test_the_workflow_step_writes_the_secret_and_refuses_an_empty_one(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "scaffold.commands.ci", "site-config", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != "LOCAL_CONFIG"}
    empty = subprocess.run(cmd, env=env | {"LOCAL_CONFIG": "  \n"}, capture_output=True, text=True)
    assert empty.returncode == 2 and "SCAFFOLD_LOCAL_CONFIG" in empty.stderr and "Traceback" not in empty.stderr
    text = (ORIGINAL_FORMAT / "claude.local.md").read_text()
    ok = subprocess.run(cmd, env=env | {"LOCAL_CONFIG": text}, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert Path(ok.stdout.strip()) == tmp_path / "claude.local.md"


def test_init_ci_writes_the_missing_golden_copies_from_what_generate_wrote(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    exp = repo / "cap"
    shutil.copytree(EXAMPLE, exp, ignore=shutil.ignore_patterns("Llama-*", "logs", "arrays", ".scaffold-manifest.json"))
    local = ("--local-config", EXAMPLE_LOCAL)
    assert run_cli("generate", exp, *local, "--no-check-paths").code == 0
    run = "Llama-3.2-1B-Instruct_rank4"
    edited = exp / run / "finetune.slurm"
    edited.write_text(edited.read_text() + "# by hand\n")
    res = run_cli("init-ci", exp, "--package", "scaffold-torchtune==0.1.0")
    # Every file as generated is taken (2 runs x 3 files + 2 array scripts, less the one edited by hand)...
    assert res.code == 1 and "golden copies in" in res.out and ": 7 written, 0 already there" in res.out, res.out
    assert f"{run}/finetune.slurm: edited since `scaffold generate` wrote it: not taken" in res.err
    assert not (exp / "golden" / run / "finetune.slurm").exists()
    assert (exp / "golden" / run / "finetune.yaml").read_bytes() == (exp / run / "finetune.yaml").read_bytes()
    # ... and the suite compares with them; the edited file still fails, until regenerated.
    verify = run_cli("verify", exp, *local, "--no-check-paths", "-p", "no:cacheprovider")
    assert verify.code == 1 and f"experiment_summary.yaml::golden[{run}-finetune.slurm]" in verify.out, verify.out
    assert run_cli("generate", exp, *local, "--no-check-paths", "--force").code == 0
    again = run_cli("init-ci", exp, "--package", "scaffold-torchtune==0.1.0")
    assert again.code == 0 and ": 1 written, 7 already there" in again.out, again.out + again.err
    verify = run_cli("verify", exp, *local, "--no-check-paths", "-p", "no:cacheprovider", cwd=repo)
    assert verify.code == 0, verify.out


def test_generate_keeps_artifacts_in_git_also_for_runs_generated_before(tmp_path: Path) -> None:
    """A run's artifacts/ holds the .gitignore that keeps it in a clone; an experiment generated before that rule
    gets it on the next (unchanged) re-run, and nothing else is rewritten."""
    exp = tmp_path / "cap"
    shutil.copytree(EXAMPLE, exp, ignore=shutil.ignore_patterns("Llama-*", "logs", "arrays", ".scaffold-manifest.json"))
    args = ("generate", exp, "--local-config", EXAMPLE_LOCAL, "--no-check-paths")
    assert run_cli(*args).code == 0
    keep = exp / "Llama-3.2-1B-Instruct_rank4" / "artifacts" / ".gitignore"
    assert keep.read_text().splitlines()[-2:] == ["*", "!.gitignore"]
    assert not (exp / "Llama-3.2-1B-Instruct_base" / "artifacts").exists()  # a control run: its directory only
    keep.unlink()
    config = exp / "Llama-3.2-1B-Instruct_rank4" / "finetune.yaml"
    before = config.stat().st_mtime_ns
    res = run_cli(*args)
    assert res.code == 0 and keep.is_file(), res.out + res.err
    assert config.stat().st_mtime_ns == before and "unchanged" in res.out
    dry = run_cli(*args, "--dry-run")
    keep.unlink()
    assert run_cli(*args, "--dry-run").code == 0 and not keep.exists() and dry.code == 0
