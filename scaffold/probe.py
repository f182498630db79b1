"""What the planner reads of the file system, behind one interface, so that planning itself is pure.

`Probe` is the interface: whether a dataset is there and what its splits hold, which files of a model directory
are missing, the model's Hugging Face tokenizer, the site's environments, the run directories that are symbolic
links, the models recognised from their directory's config.json (and generate's record of them), and the original
tool's resolver of generated datasets. `DiskProbe` answers from this machine's disk; a test hands the planner a
fake with the answers it wants.

The planner asks each question once per plan (it keeps what every run of a sweep shares). The one cache here is
what a dataset holds, keyed by the file's stamp (`scaffold.stamps`): read once per version of the file, so a
long-lived process (the pytest plugin, a caller of the Python API) reads a changed dataset again."""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .errors import Problem
from .inputs import modelrecognition, registry
from .stamps import cached_by_stamp
from .torchtune_ext.datasets import CHAT_TEMPLATE_FILE

HF_TOKENIZER_CONFIG = "tokenizer_config.json"
# The original's resolver of generated-text conditions (cruijff_kit, installed beside it).
CONDITION_RESOLVER = "cruijff_kit.tabular_to_text_gen.lib.config_hash"

# (entry or Problem, a note saying what was recognised, the recognition when this call made it): registry.find's
ModelLookup = tuple[dict | Problem, str | None, modelrecognition.Recognised | None]
# resolve_dataset_path(data_generation, condition, split, output_dir) of the original
ConditionResolver = Callable[[dict, str, str, str], Any]


@dataclass(frozen=True)
class DatasetFacts:
    """What the planner reads of a JSON dataset: record counts by split (or why it cannot be read), and for each
    split the first record the dataset builder cannot read."""

    counts: dict[str, int] | str
    bad: dict[str, str]


@dataclass(frozen=True)
class TokenizerFacts:
    """What the dataset builders tokenize with, in a model directory: whether the Hugging Face tokenizer is there
    (tokenizer_config.json) and whether it has a chat template (a chat template file, or `chat_template` in
    tokenizer_config.json; a text: why tokenizer_config.json cannot be read)."""

    config: bool
    chat_template: bool | str


class Probe(Protocol):
    """The questions the planner asks of the file system (paths are on this machine)."""

    def symlinks(self, directory: Path) -> frozenset[str]:
        """The names of the entries of `directory` that are symbolic links (none when it cannot be listed)."""
        ...

    def link_elsewhere(self, run_dir: Path) -> Path | None:
        """Where `run_dir` leads when it is a symbolic link (or a dangling one) to anywhere but its own place in its
        parent directory; None otherwise."""
        ...

    def dataset(self, path: Path) -> DatasetFacts | None:
        """What the JSON dataset at `path` holds; None when there is no such file."""
        ...

    def missing_files(self, directory: Path, names: Iterable[str]) -> list[str] | None:
        """Which of `names` are not files in `directory`; None when `directory` is not a directory."""
        ...

    def hf_tokenizer(self, model_dir: Path) -> TokenizerFacts:
        """The Hugging Face tokenizer of a model directory."""
        ...

    def is_directory(self, path: Path) -> bool: ...

    def is_venv(self, path: Path) -> bool:
        """Whether `path` is a virtual environment (it has bin/activate)."""
        ...

    def recognise_model(self, name: str, models: dict[str, dict], model_dir: Path) -> ModelLookup:
        """A model's registry entry, else what its directory's config.json says it is (scaffold.inputs.registry)."""
        ...

    def recorded_models(self, experiment_dir: Path) -> dict[str, modelrecognition.Recognised]:
        """generate's record of the models it recognised (RECOGNISED_MODELS; none when absent)."""
        ...

    def condition_resolver(self) -> ConditionResolver | None:
        """The original's resolve_dataset_path, or None when it is not importable here."""
        ...


class DiskProbe:
    """The answers of this machine's disk."""

    def symlinks(self, directory: Path) -> frozenset[str]:
        try:
            with os.scandir(directory) as entries:  # one directory listing, not a stat per run
                return frozenset(e.name for e in entries if e.is_symlink())
        except OSError:
            return frozenset()

    def link_elsewhere(self, run_dir: Path) -> Path | None:
        if not run_dir.is_symlink():
            return None
        target = run_dir.resolve()
        return None if target == run_dir.parent.resolve() / run_dir.name else target

    def dataset(self, path: Path) -> DatasetFacts | None:
        return _read_dataset(path) if path.is_file() else None

    def missing_files(self, directory: Path, names: Iterable[str]) -> list[str] | None:
        if not directory.is_dir():
            return None
        return [n for n in names if not (directory / n).is_file()]

    def hf_tokenizer(self, model_dir: Path) -> TokenizerFacts:
        config_path = model_dir / HF_TOKENIZER_CONFIG
        if not config_path.is_file():
            return TokenizerFacts(config=False, chat_template=False)
        if (model_dir / CHAT_TEMPLATE_FILE).is_file():
            return TokenizerFacts(config=True, chat_template=True)
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            return TokenizerFacts(config=True, chat_template=f"{config_path}: cannot be read as JSON ({e})")
        return TokenizerFacts(config=True, chat_template=bool(isinstance(config, dict) and config.get("chat_template")))

    def is_directory(self, path: Path) -> bool:
        return path.is_dir()

    def is_venv(self, path: Path) -> bool:
        return (path / "bin" / "activate").is_file()

    def recognise_model(self, name: str, models: dict[str, dict], model_dir: Path) -> ModelLookup:
        return registry.find(name, models, model_dir)

    def recorded_models(self, experiment_dir: Path) -> dict[str, modelrecognition.Recognised]:
        return modelrecognition.read_record(experiment_dir)

    def condition_resolver(self) -> ConditionResolver | None:
        try:
            return importlib.import_module(CONDITION_RESOLVER).resolve_dataset_path
        except (ImportError, AttributeError):
            return None


@cached_by_stamp()
def _read_dataset(path: Path) -> DatasetFacts:
    """Read once per version of the file (keyed by its stamp: a changed dataset is read again)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return DatasetFacts(f"not readable as JSON ({e})", {})
    if not isinstance(data, dict):
        return DatasetFacts('not a JSON object of splits ({"train": [...], "validation": [...]})', {})
    counts = {k: len(v) for k, v in data.items() if isinstance(v, list)}
    return DatasetFacts(counts, _bad_records(data))


def _bad_records(data: dict) -> dict[str, str]:
    """Split name -> the first record of that split that is not {"input": text, "output": text}."""
    out: dict[str, str] = {}
    for split, records in data.items():
        if not isinstance(records, list):
            continue
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                why = "is not an object"
            else:
                absent = [k for k in ("input", "output") if not isinstance(record.get(k), str)]
                why = f"has no text '{absent[0]}'" if absent else ""
            if why:
                n = sum(
                    not (isinstance(r, dict) and all(isinstance(r.get(k), str) for k in ("input", "output")))
                    for r in records
                )
                out[split] = f"record {split}[{i}] {why} ({n} of {len(records)} records are not {{input, output}})"
                break
    return out
