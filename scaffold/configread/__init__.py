"""Reading generated finetune.yaml files back, as torchtune reads them: OmegaConf, interpolations resolved. One
interface, `ConfigLoader`, for the verification suite (`load`, a config on disk) and for the generator's self-check
(`load_rendered`, many rendered texts before they are written); behind it, three ways to read, each measured
against the others (benchmarks/bench_yamlread.py):

- OmegaConf itself (`load_config`): what torchtune does; `--omegaconf every`, and the judge of the other two.
- By shape (`shapes.py`, `PER_SHAPE`): libyaml's parse of each config, with OmegaConf's result for the first config
  of each shape; the suite's default above 50 runs.
- Incrementally (`incremental.py`): libyaml's parse of a few configs, the others read as the few lines where they
  differ; the self-check's, which reads every config generate writes.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError
from ..inputs.yamlio import Document, load_yaml, parse_yaml
from . import shapes
from .incremental import IncrementalConfigReader

EVERY = "every"
PER_SHAPE = "per-shape"


class ConfigLoadError(Exception):
    """finetune.yaml does not load as torchtune loads it."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass
class LoadedConfig:
    """A finetune.yaml as torchtune reads it (`data`), and where each key is written (`doc`, read when a message
    needs a line: most checks pass and never do). `text`: the file's text when it is at hand (a rendered text not
    yet written), else the file is read again for the lines."""

    path: Path
    data: dict
    text: str | None = None

    @cached_property
    def doc(self) -> Document | None:
        return _marks(self.path, self.text)

    def line(self, dotted: str | None) -> int | None:
        """The line of a dotted key (`model.lora_rank`), or of its nearest written ancestor."""
        if self.doc is None or not dotted:
            return None
        parts: tuple[str | int, ...] = tuple(int(p) if p.isdigit() else p for p in dotted.split("."))
        return self.doc.locate(parts)[0]


def load_config(path: Path, text: str | None = None) -> LoadedConfig:
    """Load like torchtune: OmegaConf (rejects duplicate keys), then resolve every interpolation. `text`: the
    file's text, when the caller has it (a rendered text is loaded before it is written)."""
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(path if text is None else io.StringIO(text))
    except Exception as e:  # OmegaConf raises many types; any of them stops torchtune
        raise config_error(e) from None
    if not OmegaConf.is_dict(cfg):
        raise ConfigLoadError("the config is not a mapping of settings", 1)
    try:
        data = OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:
        key = getattr(e, "full_key", None)
        first = str(e).splitlines()[0]
        doc = _marks(path, text)
        line = doc.locate(tuple(str(key).split(".")))[0] if doc is not None and key else None
        raise ConfigLoadError(f"an interpolation does not resolve at {key}: {first}", line) from None
    return LoadedConfig(path, data, text)


def config_error(e: Exception) -> ConfigLoadError:
    """Why a config does not load, from what its loader raised (a YAML error gives its line)."""
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        text = " ".join(str(x) for x in (e.context, e.problem) if x)
        return ConfigLoadError(f"OmegaConf cannot load it: {text}", mark.line + 1 if mark else None)
    return ConfigLoadError(f"OmegaConf cannot load it: {e}")


def _marks(path: Path, text: str | None = None) -> Document | None:
    try:
        return load_yaml(path) if text is None else parse_yaml(text, path)
    except InputError:
        return None


class ConfigLoader:
    """Loads finetune.yaml files for one session (a verification run, or a generator's process): OmegaConf itself
    for each (`every`), or by the shape rule (`per-shape`); rendered texts incrementally."""

    def __init__(self, mode: str = PER_SHAPE):
        self.mode = mode
        self._shapes: dict[Any, bool] = {}  # shape -> whether OmegaConf agreed with the fast result
        self._incremental: IncrementalConfigReader | None = None
        self.counts: Counter[str] = Counter()  # how configs were loaded, for the summary

    def load(self, path: Path, text: str | None = None) -> LoadedConfig:
        """finetune.yaml as torchtune reads it; ConfigLoadError when OmegaConf does not load it. `text` is the
        file's text (utf-8), or None when it cannot be decoded."""
        if self.mode != PER_SHAPE:
            return self._omegaconf(path)
        parsed = shapes.parse(text) if text is not None else None
        if parsed is None:
            return self._omegaconf(path)  # OmegaConf itself says what is wrong, or loads what the rule leaves out
        key, fast = parsed
        agreed = self._shapes.get(key)
        if agreed is None:
            try:
                loaded = self._omegaconf(path)
            except ConfigLoadError:
                self._shapes[key] = False
                raise
            self._shapes[key] = shapes.same(loaded.data, fast)
            return loaded
        if not agreed:
            return self._omegaconf(path)
        self.counts["shape"] += 1
        return LoadedConfig(path, fast)

    def load_rendered(self, configs: list[tuple[Path, str]]) -> list[LoadedConfig | ConfigLoadError]:
        """Rendered configs (path, text), not yet written, as torchtune will read them: each LoadedConfig, or the
        ConfigLoadError of one that does not load. Read incrementally (incremental.py): the reader's references
        serve every later call of this loader."""
        if self._incremental is None:
            self._incremental = IncrementalConfigReader()
        out: list[LoadedConfig | ConfigLoadError] = []
        for (path, text), data in zip(configs, self._incremental.read_many([t for _, t in configs]), strict=True):
            if isinstance(data, Exception):
                out.append(config_error(data))
            elif not isinstance(data, dict):
                out.append(ConfigLoadError("the config is not a mapping of settings", 1))
            else:
                out.append(LoadedConfig(path, data, text))
        return out

    def _omegaconf(self, path: Path) -> LoadedConfig:
        self.counts["omegaconf"] += 1
        return load_config(path)

    def describe(self) -> str | None:
        """One line for the summary: how many configs OmegaConf loaded itself, and how many by their shape."""
        if not self.counts:
            return None
        text = f"finetune.yaml: {self.counts['omegaconf']} loaded by OmegaConf itself"
        if self.counts["shape"]:
            text += (
                f", {self.counts['shape']} by libyaml with OmegaConf's result for their shape "
                f"({len(self._shapes)} shape(s); --omegaconf every loads each with OmegaConf)"
            )
        return text
