"""The generator's own check of what it wrote: each file is re-read from disk, as torchtune and bash read it,
and compared with what the summary asked for. (The full verification suite is the pytest plugin.)"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import params
from .plan import FINETUNE_FILE, SLURM_FILE, RunPlan
from .render import recipe_for
from .resources import load_data


@dataclass
class CheckResult:
    check: str
    ok: bool
    message: str = ""


def load_like_torchtune(path: Path) -> dict:
    """Load a config with OmegaConf, as torchtune does (duplicate keys rejected, interpolations resolved)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(path)
    return OmegaConf.to_container(cfg, resolve=True)


def check_run(rp: RunPlan) -> list[CheckResult]:
    """Every self-check of one fine-tuned run, over the files on disk."""
    assert rp.setup is not None
    results: list[CheckResult] = []
    try:
        cfg = load_like_torchtune(rp.local_dir / FINETUNE_FILE)
    except Exception as e:  # OmegaConf raises many types; any of them means torchtune cannot load the file
        return [CheckResult("finetune_yaml_loads", False, f"{FINETUNE_FILE} does not load as torchtune loads it: {e}")]
    results.append(CheckResult("finetune_yaml_loads", True))
    results += check_parameters(cfg, rp.setup, rp.name)
    results.append(check_recipe_keys(cfg, recipe_for(rp.setup)))
    results += check_slurm(rp.local_dir / SLURM_FILE, rp.setup)
    return results


def check_parameters(cfg: dict, expected: dict[str, Any], run_name: str) -> list[CheckResult]:
    """Each parameter of the table sits at its path with the expected value; the run name agrees."""
    out = []
    for name, p in params.table().items():
        if not p.applies(expected):
            continue
        found, value = params.get_path(cfg, p.path)
        want = expected[name]
        if not found:
            out.append(CheckResult(f"param:{name}", False, f"{p.path} is missing (expected {want!r})"))
        elif not params.same_value(value, want):
            out.append(CheckResult(f"param:{name}", False, f"{p.path} is {value!r}, expected {want!r}"))
        else:
            out.append(CheckResult(f"param:{name}", True))
    out.append(check_prompt(cfg, expected))
    for name, spelt in params.parse_run_name(run_name).items():
        path = params.table()[name].path
        found, value = params.get_path(cfg, path) if path else (False, None)
        ok = found and all(params.same_value(v, value) for _, v in spelt)
        tokens = ", ".join(t for t, _ in spelt)
        out.append(CheckResult(f"name:{name}", ok, "" if ok else f"run name says {tokens}, {path} is {value!r}"))
    return out


def check_prompt(cfg: dict, expected: dict[str, Any]) -> CheckResult:
    """Chat runs carry the prompt as tokenizer.prompt_template.user = [before {input}, after]; text-completion
    runs give it to the dataset builder whole."""
    if expected["dataset_type"] == "chat_completion":
        path, want = "tokenizer.prompt_template.user", list(expected["prompt"].partition("{input}")[::2])
    else:
        path, want = "dataset.prompt", expected["prompt"]
    found, value = params.get_path(cfg, path)
    ok = found and value == want
    return CheckResult("param:prompt", ok, "" if ok else f"{path} is {value!r}, expected {want!r}")


def check_recipe_keys(cfg: dict, recipe: str) -> CheckResult:
    """Every top-level key the recipe requires is present, and no key the recipe does not read."""
    keys = load_data("recipes.yaml")[recipe]
    required, known = set(keys["required"]), set(keys["required"]) | set(keys["optional"])
    missing = sorted(required - set(cfg))
    stray = sorted(set(cfg) - known)
    if missing or stray:
        parts = [f"missing {missing}" if missing else "", f"not read by {recipe}: {stray}" if stray else ""]
        return CheckResult("recipe_keys", False, "; ".join(p for p in parts if p))
    return CheckResult("recipe_keys", True)


_DIRECTIVE = re.compile(r"^#SBATCH\s+--([a-z-]+)(?:=(.*))?$")


def check_slurm(path: Path, setup: dict) -> list[CheckResult]:
    """The batch script parses, names the job after the run and runs this run's config."""
    text = path.read_text(encoding="utf-8")
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    out = [CheckResult("slurm_syntax", proc.returncode == 0, proc.stderr.strip())]
    directives = {}
    for line in text.splitlines():
        m = _DIRECTIVE.match(line)
        if m:
            directives[m.group(1)] = m.group(2)
    name = directives.get("job-name")
    out.append(CheckResult("slurm_job_name", name == setup["run_name"], f"job-name is {name!r}"))
    config = str(Path(setup["run_dir"]) / FINETUNE_FILE)
    ok = f"--config {config}" in text or f"--config '{config}'" in text
    out.append(CheckResult("slurm_config", ok, "" if ok else f"the script does not run --config {config}"))
    return out
