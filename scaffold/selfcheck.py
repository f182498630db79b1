"""The generator's own check of what it writes: each file's text read as torchtune and bash read it, and
compared with what the summary asked for (`check_texts`, for the texts generate writes; `check_run`, for the
files of one run on disk, after `scaffold setup-finetune`). The full verification suite is the pytest plugin,
which reads every file back from disk."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import params
from .outcome import CheckResult
from .plan import FINETUNE_FILE, SLURM_FILE, RunPlan
from .render import POST_FINETUNE_MODULE
from .resources import load_data
from .rules import method, recipe_for
from .yamlio import load_generated_config
from .yamlread import IncrementalConfigReader

_PASSED: dict[str, CheckResult] = {}


def passed(check: str) -> CheckResult:
    """A passed check (one shared object per check name: a sweep of 10,000 runs passes 300,000 of them)."""
    result = _PASSED.get(check)
    if result is None:
        result = _PASSED[check] = CheckResult(check, True)
    return result


def load_like_torchtune(text: str) -> dict:
    """Load a config with OmegaConf, as torchtune does (duplicate keys rejected, interpolations resolved)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.create(text), resolve=True)


def check_config(rp: RunPlan, load: Callable[[str], dict] = load_generated_config) -> list[CheckResult]:
    """The checks of one run's finetune.yaml, re-read from disk (by default with libyaml, fast; `load` may be
    OmegaConf itself)."""
    assert rp.setup is not None
    try:
        cfg = load((rp.local_dir / FINETUNE_FILE).read_text(encoding="utf-8"))
    except Exception as e:  # any parse or resolution error means torchtune could not load it either
        cfg = e
    return check_loaded_config(rp, cfg)


def check_loaded_config(rp: RunPlan, cfg: Any) -> list[CheckResult]:
    """The checks of one run's finetune.yaml as loaded (or the exception loading it raised)."""
    assert rp.setup is not None
    if isinstance(cfg, Exception):  # any parse or resolution error means torchtune could not load it either
        return [
            CheckResult("finetune_yaml_loads", False, f"{FINETUNE_FILE} does not load as torchtune loads it: {cfg}")
        ]
    results = [passed("finetune_yaml_loads")]
    results += check_parameters(cfg, rp.setup, rp.name)
    results.append(check_metric_logger(cfg, rp.setup))
    results.append(check_recipe_keys(cfg, recipe_for(rp.setup)))
    return results


_READER: IncrementalConfigReader | None = None  # one per process: its references serve every later batch


def _check_configs(batch: list[tuple[RunPlan, str]]) -> list[list[CheckResult]]:
    """Check a batch of configs, read as `load_generated_config` reads them, but incrementally: a sweep's
    configs differ from each other in a few one-line values, so most are read as a whole parse of a similar
    one plus those values (scaffold.yamlread; the same answer, about a fifteenth of the time)."""
    global _READER
    if _READER is None:
        _READER = IncrementalConfigReader()
    loaded = _READER.read_many([text for _, text in batch])
    return [check_loaded_config(rp, cfg) for (rp, _), cfg in zip(batch, loaded, strict=True)]


def check_texts(batch: list[tuple[RunPlan, dict[str, str]]]) -> list[list[CheckResult]]:
    """The self-check of runs whose files were rendered with these texts (by file name): each finetune.yaml read
    as torchtune reads it, each batch script's directives, and `bash -n` of each batch script."""
    configs = _check_configs([(rp, texts[FINETUNE_FILE]) for rp, texts in batch])
    syntax = bash_syntax([(texts[SLURM_FILE], rp.setup or {}) for rp, texts in batch])
    out = []
    for (rp, texts), config, error in zip(batch, configs, syntax, strict=True):
        assert rp.setup is not None
        slurm = check_slurm_text(texts[SLURM_FILE], rp.setup)
        out.append(config + slurm + [CheckResult("slurm_syntax", False, error) if error else passed("slurm_syntax")])
    return out


# A run's own value that may be masked: letters, digits and `._/-`, at least one of `._/` or a digit (so never a
# reserved word, a builtin that changes how its arguments parse, such as `declare`, or a word `[[ ]]` reads as an
# operator, such as `-nt`), not starting with `-`.
_INERT = re.compile(r"(?!-)(?=.*[._/0-9])[A-Za-z0-9._/-]{3,}\Z")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PARSED: set[str] = set()  # scripts (masked, see bash_syntax) that bash -n accepted, in this process


def _masked(text: str, setup: dict[str, Any]) -> str:
    """The script with the run's own inert values (a run name, a path) replaced by a placeholder named after the
    setting, wherever one stands whole (no letter, digit, `_`, `.` or `-` touches it). Such a swap cannot change how
    bash parses the script: no quote, operator, expansion, blank or `=` comes or goes, the word stays a name or
    not a name (`x=` stays an assignment or a plain word), and neither the value nor the placeholder can be a
    reserved word, a declaration builtin or a test operator. So a sweep's scripts mask to a few texts."""
    values = [(v, k) for k, v in setup.items() if isinstance(v, str) and _INERT.match(v)]
    for value, key in sorted(values, key=lambda vk: (-len(vk[0]), vk[1])):
        placeholder = f"__scaffold_{key}__" if _IDENTIFIER.match(value) else f"__scaffold-{key}__"
        text = _replace_whole(text, value, placeholder)
    return text


_WORD_PART = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def _replace_whole(text: str, value: str, placeholder: str) -> str:
    """`text` with each occurrence of `value` that no letter, digit, `_`, `.` or `-` touches replaced."""
    parts, start = [], 0
    at = text.find(value)
    while at >= 0:
        end = at + len(value)
        if (at == 0 or text[at - 1] not in _WORD_PART) and (end == len(text) or text[end] not in _WORD_PART):
            parts += [text[start:at], placeholder]
            start = end
        at = text.find(value, end if start == end else at + 1)
    return "".join(parts) + text[start:] if parts else text


# Reads NUL-separated scripts; for each, runs `bash -n` on it alone and writes its stderr, NUL, status, NUL.
_LOOP = r"""
while IFS= read -r -d '' script; do
  printf '%s' "$script" | bash -n 2>&1 >/dev/null
  printf '\0%d\0' "$?"
done
"""


def bash_syntax(scripts: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """`bash -n` of each (script, its run's settings): "" when it parses, else bash's message. Each script is
    parsed alone (never with another: a quote one leaves open would be closed by the next); scripts that mask (see
    `_masked`) to a text already parsed are not parsed again."""
    # Only the values that differ between these runs need a placeholder (the others are the same text in each).
    varying = {k for _, setup in scripts[1:] for k, v in setup.items() if scripts[0][1].get(k) != v}
    masked = [_masked(text, {k: setup[k] for k in varying if k in setup}) for text, setup in scripts]
    todo = sorted({m for m in masked if m not in _PARSED})
    errors = dict(zip(todo, _bash_n_each(todo), strict=True))
    _PARSED.update(m for m in todo if not errors[m])
    out = []
    for (text, _), m in zip(scripts, masked, strict=True):
        if m in _PARSED:
            out.append("")
        else:
            out.append(_bash_n(text))  # the script itself, to report bash's own words about it
    return out


def _bash_n_each(texts: list[str]) -> list[str]:
    """`bash -n` of each text alone: a subprocess each for a few, else one bash loop (cheaper per script)."""
    if len(texts) <= 4 or any("\0" in t for t in texts):
        return [_bash_n(t) for t in texts]
    proc = subprocess.run(["bash", "-c", _LOOP], input="".join(t + "\0" for t in texts).encode(), capture_output=True)
    fields = proc.stdout.decode("utf-8", "replace").split("\0")
    if proc.returncode != 0 or len(fields) != 2 * len(texts) + 1:
        return [_bash_n(t) for t in texts]
    results = []
    for n in range(len(texts)):
        stderr, status = fields[2 * n], fields[2 * n + 1]
        results.append("" if status == "0" else (stderr.strip() or f"bash -n exited {status}"))
    return results


def _bash_n(text: str) -> str:
    proc = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    return "" if proc.returncode == 0 else (proc.stderr.strip() or f"bash -n exited {proc.returncode}")


def check_run(rp: RunPlan) -> list[CheckResult]:
    """Every self-check of one fine-tuned run, over the files on disk, the config read by OmegaConf itself
    (`scaffold setup-finetune`: one run, where the seconds OmegaConf costs per thousand configs do not matter)."""
    assert rp.setup is not None
    return check_config(rp, load_like_torchtune) + check_slurm(rp.local_dir / SLURM_FILE, rp.setup)


_APPLICABLE: dict[tuple, list[tuple[str, str, list[str]]]] = {}


def _applicable(expected: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(name, path, path split at dots) of each parameter that lands in finetune.yaml for these settings
    (which depends only on the settings the table's `when:` conditions name)."""
    table = params.table()
    conditions = sorted({k for p in table.values() for k in p.when})
    key = tuple(repr(expected.get(k)) for k in conditions)
    if key not in _APPLICABLE:
        _APPLICABLE[key] = [(n, p.path, p.path.split(".")) for n, p in table.items() if p.applies(expected) and p.path]
    return _APPLICABLE[key]


def check_parameters(cfg: dict, expected: dict[str, Any], run_name: str) -> list[CheckResult]:
    """Each parameter of the table sits at its path with the expected value; the run name agrees."""
    out = []
    for name, path, parts in _applicable(expected):
        node, found = cfg, True
        for part in parts:  # params.get_path, inlined: thousands of runs x dozens of parameters
            if not isinstance(node, dict) or part not in node:
                found = False
                break
            node = node[part]
        value, want = (node if found else None), expected[name]
        if not found:
            out.append(CheckResult(f"param:{name}", False, f"{path} is missing (expected {want!r})"))
        elif not params.same_value(value, want):
            out.append(CheckResult(f"param:{name}", False, f"{path} is {value!r}, expected {want!r}"))
        else:
            out.append(passed(f"param:{name}"))
    for name, spelt in params.parse_run_name(run_name).items():
        path = params.table()[name].path
        found, value = params.get_path(cfg, path) if path else (False, None)
        ok = found and all(params.same_value(v, value) for _, v in spelt)
        tokens = ", ".join(t for t, _ in spelt)
        out.append(
            passed(f"name:{name}")
            if ok
            else CheckResult(f"name:{name}", False, f"run name says {tokens}, {path} is {value!r}")
        )
    return out


WANDB_LOGGER = "torchtune.training.metric_logging.WandBLogger"
DISK_LOGGER = "torchtune.training.metric_logging.DiskLogger"
WANDB_MODES = ("offline", "online", "disabled")


def metric_logger_problems(cfg: dict, setup: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, expected, found) for each metric_logger setting that is not as the run's settings say: the logger,
    and for W&B its project, entity and mode (offline unless the local config says otherwise)."""
    logger = cfg.get("metric_logger") if isinstance(cfg, dict) else None
    logger = logger if isinstance(logger, dict) else {}
    wandb = setup.get("metric_logger") == "wandb"
    want = {"_component_": WANDB_LOGGER if wandb else DISK_LOGGER}
    if wandb:
        want.update(
            project=setup.get("wandb_project"),
            entity=setup.get("wandb_entity"),
            mode=setup.get("wandb_mode") or "offline",
        )
    out = [(k, v, logger.get(k)) for k, v in want.items() if logger.get(k) != v]
    if wandb and logger.get("mode") not in WANDB_MODES:
        out = [p for p in out if p[0] != "mode"] + [("mode", " or ".join(WANDB_MODES), logger.get("mode"))]
    return out


def check_metric_logger(cfg: dict, setup: dict[str, Any]) -> CheckResult:
    """metric_logger is the run's logger; a W&B logger has the run's project, entity and mode."""
    wrong = metric_logger_problems(cfg, setup)
    if wrong:
        text = "; ".join(f"metric_logger.{k} is {found!r}, expected {want!r}" for k, want, found in wrong)
        return CheckResult("metric_logger", False, text)
    return passed("metric_logger")


def check_recipe_keys(cfg: dict, recipe: str) -> CheckResult:
    """Every top-level key the recipe requires is present, and no key the recipe does not read."""
    keys = load_data("recipes.yaml")[recipe]
    required, known = set(keys["required"]), set(keys["required"]) | set(keys["optional"])
    missing = sorted(required - set(cfg))
    stray = sorted(set(cfg) - known)
    if missing or stray:
        parts = [f"missing {missing}" if missing else "", f"not read by {recipe}: {stray}" if stray else ""]
        return CheckResult("recipe_keys", False, "; ".join(p for p in parts if p))
    return passed("recipe_keys")


_DIRECTIVE = re.compile(r"^#SBATCH\s+--([a-z-]+)(?:=(.*))?$")


def check_slurm(path: Path, setup: dict) -> list[CheckResult]:
    """The batch script parses, names the job after the run and runs this run's config."""
    text = path.read_text(encoding="utf-8")
    error = _bash_n(text)
    return [CheckResult("slurm_syntax", not error, error)] + check_slurm_text(text, setup)


def check_slurm_text(text: str, setup: dict) -> list[CheckResult]:
    """The batch script names the job after the run, runs this run's config and (LoRA) the post-training step."""
    out = []
    directives = {}
    for line in text.splitlines():
        m = _DIRECTIVE.match(line) if line.startswith("#SBATCH") else None
        if m:
            directives[m.group(1)] = m.group(2)
    name = directives.get("job-name")
    ok = name == setup["run_name"]
    out.append(passed("slurm_job_name") if ok else CheckResult("slurm_job_name", False, f"job-name is {name!r}"))
    config = str(Path(setup["run_dir"]) / FINETUNE_FILE)
    ok = f"--config {config}" in text or f"--config '{config}'" in text
    out.append(
        passed("slurm_config")
        if ok
        else CheckResult("slurm_config", False, f"the script does not run --config {config}")
    )
    if method(setup) == "lora":
        ok = f"-m {POST_FINETUNE_MODULE} " in text
        out.append(
            passed("slurm_post_finetune")
            if ok
            else CheckResult("slurm_post_finetune", False, f"the script does not run python -m {POST_FINETUNE_MODULE}")
        )
    return out
