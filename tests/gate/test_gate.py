"""The pull-request gate of an experiment repository, end to end, as a user sets it up and as a CI runner runs it
(`nox -s gate`, i.e. `pytest tests/gate -m gate -s`; needs git and the package index for the fresh environments'
dependencies; a few minutes).

The tool is installed into a fresh environment from a git URL of a clone at a commit; an experiment is generated in
its own git repository, its model directories outside it (one model in no registry, recognised from its
config.json); `scaffold init-ci`; commit. Then, in a fresh clone with the model directories unreachable, every
`run:` step of the workflow as written (parsed from the file; GITHUB_ENV, RUNNER_TEMP and the secret provided as a
runner provides them) runs in a fresh environment: it passes. A second commit edits one generated finetune.yaml by
hand: the same steps fail and name the run. The pre-commit hook, installed from the clone of the tool, gives the
same two outcomes. For both site config forms (scaffold.local.yaml and claude.local.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from ..conftest import EXAMPLE, EXAMPLE_LOCAL, ORIGINAL_FORMAT, make_model_dir
from ..test_model_recognition import CASES

pytestmark = pytest.mark.gate
REPO = Path(__file__).resolve().parents[2]
RUN = "Llama-3.2-1B-Instruct_rank4"  # the run whose finetune.yaml is edited by hand
RECOGNISED_RUN = "My-Model_rank8"
SITE_CONFIGS = {"scaffold.local.yaml": EXAMPLE_LOCAL, "claude.local.md": ORIGINAL_FORMAT / "claude.local.md"}
STEP_TIMEOUT = 300
IDENTITY = ["-c", "user.name=Gate Test", "-c", "user.email=gate@example.org", "-c", "commit.gpgsign=false"]


@pytest.fixture(scope="module", autouse=True)
def only_when_selected(request) -> None:
    if "gate" not in (request.config.option.markexpr or ""):
        pytest.skip("the pull-request gate end to end: run it with `nox -s gate` (pytest -m gate)")


def sh(*cmd, cwd: Path | None = None, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def git(*args, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return sh("git", *IDENTITY, *args, cwd=cwd, check=check)


def base_env(home: Path) -> dict[str, str]:
    """A clean environment: no virtualenv, no site config, nothing of this process's but what pip needs to reach
    the package index (its config files are global) and a shared cache."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    env["PIP_CACHE_DIR"] = os.environ.get("PIP_CACHE_DIR") or str(Path.home() / ".cache" / "pip")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def fresh_venv(path: Path) -> Path:
    """A fresh environment (as actions/setup-python gives a fresh interpreter, with a current pip: the one a venv
    bundles may be too old to read a `git+file://` direct reference); its bin directory."""
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    sh(path / "bin" / "python", "-m", "pip", "install", "-q", "--upgrade", "pip", env=base_env(path))
    return path / "bin"


@dataclass
class Tool:
    src: Path  # the clone installed from
    commit: str
    url: str  # git URL at the commit, as pip takes it
    bin: Path  # the user's environment, installed from that URL


@pytest.fixture(scope="module")
def tool(tmp_path_factory) -> Tool:
    """This project as a git clone at a commit, installed from its git URL into a fresh environment."""
    root = tmp_path_factory.mktemp("tool")
    src = root / "scaffold-torchtune"
    # The tree as it is (committed or not): tracked files and untracked ones git does not ignore.
    listed = sh("git", "ls-files", "-co", "--exclude-standard", "-z", cwd=REPO, check=False)
    names = [n for n in listed.stdout.split("\0") if n] if listed.returncode == 0 else None
    if names:
        for name in names:
            if (REPO / name).is_file():
                (src / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, src / name)
    else:  # a copy of the tree without its git directory (.ci/run's self-contained copy)
        shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".nox", ".venv", "__pycache__", "*.egg-info"))
    git("init", "-q", cwd=src)
    git("add", "-A", cwd=src)
    git("commit", "-qm", "scaffold-torchtune as tested", cwd=src)
    commit = git("rev-parse", "HEAD", cwd=src).stdout.strip()
    url = f"scaffold-torchtune @ git+{src.as_uri()}@{commit}"
    bin_dir = fresh_venv(root / "user-env")
    sh(bin_dir / "python", "-m", "pip", "install", "-q", url, env=base_env(root))
    return Tool(src, commit, url, bin_dir)


@dataclass
class Gate:
    repo: Path  # the experiment repository (the user's, on the cluster)
    models: Path
    site: Path  # the site config, outside the repository
    commits: list[str]
    workflow: str


def build_experiment(root: Path, tool: Tool, form: str) -> Gate:
    """As the user does: generate in the experiment's own repository (models outside it), init-ci, commit."""
    models = root / "models"
    make_model_dir(models / "Llama-3.2-1B-Instruct")
    mine = make_model_dir(models / "My-Model")
    (mine / "config.json").write_text(json.dumps(CASES["Llama 3.2 1B"][0]))
    site = root / "site" / form
    site.parent.mkdir()
    shutil.copy(SITE_CONFIGS[form], site)
    repo = root / "experiment-repo"
    exp = repo / "cap"
    shutil.copytree(EXAMPLE, exp, ignore=shutil.ignore_patterns("Llama-*", "logs", "arrays", ".scaffold-manifest.json"))
    summary = yaml.safe_load((exp / "experiment_summary.yaml").read_text())
    summary["models"]["base"] = [
        {"name": "Llama-3.2-1B-Instruct", "path": str(models / "Llama-3.2-1B-Instruct")},
        {"name": "My-Model", "path": str(mine)},
    ]
    summary["runs"].append(
        {"name": RECOGNISED_RUN, "type": "fine-tuned", "model": "My-Model", "parameters": {"lora_rank": 8}}
    )
    (exp / "experiment_summary.yaml").write_text(yaml.safe_dump(summary, sort_keys=False))
    git("init", "-q", cwd=repo)
    env = base_env(root) | {"PATH": f"{tool.bin}:/usr/bin:/bin"}
    scaffold = tool.bin / "scaffold"
    res = sh(scaffold, "generate", "cap", "--local-config", site, cwd=repo, env=env, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    # init-ci with no flags: this tool came from a clone on this machine, which a runner cannot reach: refused,
    # with the fix, and nothing written.
    refused = sh(scaffold, "init-ci", "cap", cwd=repo, env=env, check=False)
    assert refused.returncode == 2 and "which a CI runner cannot reach" in refused.stderr, refused.stderr
    assert "--package SPEC" in refused.stderr and not (repo / ".github").exists()
    res = sh(scaffold, "init-ci", "cap", "--package", tool.url, cwd=repo, env=env, check=False)
    assert res.returncode == 0 and "written" in res.stdout, res.stdout + res.stderr
    hook = {
        "repos": [
            {
                "repo": str(tool.src),
                "rev": tool.commit,
                "hooks": [{"id": "scaffold-verify", "args": ["cap", "--no-check-paths"]}],
            }
        ]
    }
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump(hook, sort_keys=False))
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "generate, init-ci", cwd=repo)
    first = git("rev-parse", "HEAD", cwd=repo).stdout.strip()
    # The second commit: one generated finetune.yaml edited by hand.
    config = exp / RUN / "finetune.yaml"
    text = config.read_text()
    assert text.count("  lr: ") == 1
    config.write_text(re.sub(r"(?m)^  lr: .*$", "  lr: 0.5", text))
    git("commit", "-qam", "a hand edit", cwd=repo)
    second = git("rev-parse", "HEAD", cwd=repo).stdout.strip()
    workflow = (repo / ".github" / "workflows" / "scaffold-verify.yml").read_text()
    return Gate(repo, models, site, [first, second], workflow)


def fresh_clone(gate: Gate, commit: str, where: Path) -> Path:
    git("clone", "-q", gate.repo, where, cwd=where.parent)
    git("checkout", "-q", commit, cwd=where)
    return where


def run_workflow(workflow_text: str, clone: Path, secret: str, root: Path) -> list[tuple[str, int, str]]:
    """Every `run:` step of the workflow, in order, as a GitHub runner runs them: in the checkout, `bash -e`, the
    step's env (secrets substituted), GITHUB_ENV read back between steps, RUNNER_TEMP; a fresh interpreter first
    on PATH for actions/setup-python. Stops at the first failing step. (name, exit status, output) per step."""
    data = yaml.safe_load(workflow_text)
    steps = data["jobs"]["verify"]["steps"]
    runner_temp = root / "runner-temp"
    runner_temp.mkdir()
    github_env = root / "github-env"
    github_env.write_text("")
    env = base_env(root)
    out = []
    for step in steps:
        uses = step.get("uses", "")
        if uses.startswith("actions/setup-python"):
            env["PATH"] = f"{fresh_venv(root / 'runner-python')}:{env['PATH']}"
            continue
        if "run" not in step:
            continue  # actions/checkout: the fresh clone is the checkout
        step_env = {}
        for key, value in (step.get("env") or {}).items():
            step_env[key] = str(value).replace("${{ secrets.SCAFFOLD_LOCAL_CONFIG }}", secret)
        assert "${{" not in step["run"], "a run: step with an expression this test does not provide"
        extra = dict(line.split("=", 1) for line in github_env.read_text().splitlines() if "=" in line)
        full = env | extra | step_env | {"GITHUB_ENV": str(github_env), "RUNNER_TEMP": str(runner_temp), "CI": "true"}
        proc = subprocess.run(
            ["bash", "-e", "-c", step["run"]], cwd=clone, env=full, capture_output=True, text=True, timeout=STEP_TIMEOUT
        )
        out.append((step.get("name", step["run"][:40]), proc.returncode, proc.stdout + proc.stderr))
        if proc.returncode != 0:
            break
    return out


def pre_commit_bin(root: Path) -> Path:
    bin_dir = fresh_venv(root / "pre-commit-env")
    sh(bin_dir / "python", "-m", "pip", "install", "-q", "pre-commit", env=base_env(root))
    return bin_dir


def tail(text: str, n: int = 3) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


@pytest.mark.parametrize("form", list(SITE_CONFIGS))
def test_the_gate_passes_then_fails_naming_the_run(tool: Tool, tmp_path: Path, form: str) -> None:
    gate = build_experiment(tmp_path, tool, form)
    secret = gate.site.read_text()
    gate.models.rename(gate.models.with_name("models-unreachable"))  # a runner does not mount the cluster's storage
    report = [f"== site config form: {form}", "== the workflow as written:", gate.workflow.rstrip()]
    outcomes = []
    for i, commit in enumerate(gate.commits):
        work = tmp_path / f"ci-{i}"
        work.mkdir()
        clone = fresh_clone(gate, commit, work / "checkout")
        assert not (clone / "cap" / "Llama-3.2-1B-Instruct_base").exists()  # git keeps no empty directory
        steps = run_workflow(gate.workflow, clone, secret, work)
        outcomes.append(steps)
        name, code, output = steps[-1]
        report += [f"== commit {i + 1} ({'as generated' if i == 0 else 'finetune.yaml edited by hand'}): step "
                   f"'{name}' exit {code}; log {len(output.splitlines())} lines; its last lines:", tail(output, 4)]  # fmt: skip
    passing, failing = outcomes
    assert [code for _, code, _ in passing] == [0, 0, 0] and passing[-1][0] == "Verify the generated runs", passing
    log = passing[-1][2]
    assert re.search(r"=+ \d+ passed, \d+ skipped in ", log) and "unknown model" not in log, log
    assert [code for _, code, _ in failing][:2] == [0, 0] and failing[-1][1] == 1, failing
    bad = failing[-1][2]
    assert re.search(rf"cap/{RUN}/finetune.yaml:\d+: \[run {RUN}\] optimizer.lr: \[parameter_values\]", bad), bad
    assert "FAILED cap/experiment_summary.yaml::" in bad and RUN in tail(bad, 3), bad
    assert len(bad.splitlines()) < 50, bad

    # The pre-commit hook, installed from the tool's clone, on the same two commits.
    pc_root = tmp_path / "pre-commit"
    pc_root.mkdir()
    pc = pre_commit_bin(pc_root)
    env = base_env(pc_root) | {
        "PATH": f"{pc}:/usr/bin:/bin",
        "PRE_COMMIT_HOME": str(tool.src.parent / "pre-commit-home"),  # hook environments shared by the forms
        "SCAFFOLD_LOCAL_CONFIG": str(gate.site),
    }
    hook = []
    for i, commit in enumerate(gate.commits):
        work = tmp_path / f"hook-{i}"
        work.mkdir()
        clone = fresh_clone(gate, commit, work / "checkout")
        proc = sh(pc / "pre-commit", "run", "--all-files", cwd=clone, env=env, check=False)
        hook.append(proc)
        report += [f"== pre-commit run --all-files, commit {i + 1}: exit {proc.returncode}; its last lines:",
                   tail(proc.stdout + proc.stderr, 3)]  # fmt: skip
    assert hook[0].returncode == 0, hook[0].stdout + hook[0].stderr
    assert hook[1].returncode == 1 and f"[run {RUN}] optimizer.lr: [parameter_values]" in hook[1].stdout, hook[1].stdout
    # Installed as the git hook, it refuses the hand edit being committed.
    clone = tmp_path / "hook-0" / "checkout"
    sh(pc / "pre-commit", "install", cwd=clone, env=env)
    config = clone / "cap" / RUN / "finetune.yaml"
    config.write_text(re.sub(r"(?m)^  lr: .*$", "  lr: 0.5", config.read_text()))
    commit = sh("git", *IDENTITY, "commit", "-qam", "a hand edit", cwd=clone, env=env, check=False)
    assert commit.returncode != 0 and f"[run {RUN}]" in commit.stdout + commit.stderr, commit.stdout + commit.stderr
    assert git("rev-parse", "HEAD", cwd=clone).stdout.strip() == gate.commits[0]
    print("\n".join(report), file=sys.stderr)
    out = os.environ.get("SCAFFOLD_GATE_REPORT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"gate-{form}.txt").write_text("\n".join(report) + "\n")
