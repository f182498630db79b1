"""The generator's own check of what it wrote: each file is re-read from disk, as torchtune and bash read it,
and compared with what the summary asked for. (The full verification suite is the pytest plugin.)"""

from __future__ import annotations

import multiprocessing
import re
import subprocess
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from . import params
from .lock import close_inherited_locks
from .outcome import CheckResult
from .plan import FINETUNE_FILE, SLURM_FILE, RunPlan
from .render import recipe_for
from .resources import load_data
from .yamlio import load_generated_config
from .yamlread import IncrementalConfigReader


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
    results = [CheckResult("finetune_yaml_loads", True)]
    results += check_parameters(cfg, rp.setup, rp.name)
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


class ConfigChecks:
    """check_config for many runs, on another core while the caller goes on writing: batches of runs go to
    one forked worker process (parsing thousands of YAML files is most of the self-check's time). Where fork
    is unavailable, the checks run in this process."""

    BATCH = 64

    def __init__(self) -> None:
        self._batch: list[tuple[RunPlan, str]] = []
        self._futures: list = []
        self._pool = None
        self._done: list[tuple[RunPlan, list[CheckResult]]] = []

    def add(self, rp: RunPlan, text: str) -> None:
        """Check this run's finetune.yaml, whose text (as written) is `text`."""
        self._batch.append((rp, text))
        if len(self._batch) >= self.BATCH:
            self._submit()

    def _submit(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        if self._pool is None and "fork" in multiprocessing.get_all_start_methods():
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("fork"), initializer=close_inherited_locks
            )
        runs = [rp for rp, _ in batch]
        if self._pool is None:
            self._done += zip(runs, _check_configs(batch), strict=True)
        else:
            self._futures.append((batch, self._pool.submit(_check_configs, batch)))

    def results(self) -> dict[str, list[CheckResult]]:
        self._submit()
        for batch, future in self._futures:
            runs = [rp for rp, _ in batch]
            try:
                self._done += zip(runs, future.result(), strict=True)
            except Exception:  # a broken worker must not cost the check: run that batch here
                self._done += zip(runs, _check_configs(batch), strict=True)
        if self._pool is not None:
            self._pool.shutdown()
        return {rp.name: results for rp, results in self._done}


class SelfCheck:
    """The self-check of many runs (what `generate` runs), fed each run as soon as its files are written, with
    the texts written: each finetune.yaml is read again with libyaml (interpolations resolved as OmegaConf
    resolves them) in a worker process, and every batch script goes through one `bash -n`; both run beside
    the writing. (The verification suite reads the files back from disk.)"""

    def __init__(self) -> None:
        self._configs = ConfigChecks()
        self._bash = BashSyntaxCheck()
        self._slurm: dict[str, list[CheckResult]] = {}

    def add(self, rp: RunPlan, texts: dict[str, str]) -> None:
        """Check a run whose files were just written with these texts (by file name)."""
        assert rp.setup is not None
        text = texts[SLURM_FILE]
        self._slurm[rp.name] = check_slurm_text(text, rp.setup)
        self._bash.add(rp.name, text)
        self._configs.add(rp, texts[FINETUNE_FILE])

    def results(self) -> dict[str, list[CheckResult]]:
        configs, syntax = self._configs.results(), self._bash.result()
        return {
            name: configs[name] + self._slurm[name] + [CheckResult("slurm_syntax", not syntax[name], syntax[name])]
            for name in self._slurm
        }


class BashSyntaxCheck:
    """`bash -n` over many scripts in one process that parses while the caller goes on: each script is fed,
    wrapped as a function body, to the stdin of one `bash -n` started at once. Only if that fails is each
    script checked alone, to say which."""

    def __init__(self) -> None:
        self._scripts: dict[str, str] = {}
        self._proc: subprocess.Popen | None = None
        self._pending: list[str] = []

    def add(self, name: str, text: str) -> None:
        self._scripts[name] = text
        self._pending.append(f"__scaffold_check_{len(self._scripts)}() {{\n{text}\n}}\n")
        if len(self._pending) >= 64:
            self._feed()

    def _feed(self) -> None:
        if self._proc is None:
            self._proc = subprocess.Popen(
                ["bash", "-n"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write("".join(self._pending).encode("utf-8"))
            self._proc.stdin.flush()
        except BrokenPipeError:  # bash stopped at a syntax error: result() checks each script alone
            pass
        self._pending = []

    def result(self) -> dict[str, str]:
        if not self._scripts:
            return {}
        self._feed()
        assert self._proc is not None
        try:
            self._proc.communicate()
        except BrokenPipeError:
            self._proc.wait()
        if self._proc.returncode == 0:
            return dict.fromkeys(self._scripts, "")
        return {n: _bash_n(text) for n, text in self._scripts.items()}


def _bash_n(text: str) -> str:
    proc = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    return "" if proc.returncode == 0 else (proc.stderr.strip() or f"bash -n exited {proc.returncode}")


def check_run(rp: RunPlan) -> list[CheckResult]:
    """Every self-check of one fine-tuned run, over the files on disk, the config read by OmegaConf itself
    (`scaffold setup-finetune`: one run, where the seconds OmegaConf costs per thousand configs do not matter)."""
    assert rp.setup is not None
    return check_config(rp, load_like_torchtune) + check_slurm(rp.local_dir / SLURM_FILE, rp.setup)


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
    error = _bash_n(text)
    return [CheckResult("slurm_syntax", not error, error)] + check_slurm_text(text, setup)


def check_slurm_text(text: str, setup: dict) -> list[CheckResult]:
    """The batch script names the job after the run and runs this run's config."""
    out = []
    directives = {}
    for line in text.splitlines():
        m = _DIRECTIVE.match(line) if line.startswith("#SBATCH") else None
        if m:
            directives[m.group(1)] = m.group(2)
    name = directives.get("job-name")
    out.append(CheckResult("slurm_job_name", name == setup["run_name"], f"job-name is {name!r}"))
    config = str(Path(setup["run_dir"]) / FINETUNE_FILE)
    ok = f"--config {config}" in text or f"--config '{config}'" in text
    out.append(CheckResult("slurm_config", ok, "" if ok else f"the script does not run --config {config}"))
    return out
