"""Token audit of a run's data: what each record trains on at the run's `max_seq_len`, counted with the run's own
dataset builder and tokenizer (the code that will train, so the counts are the training's).

Records are cut on the right to `max_seq_len` (torchtune's SFT datasets and this project's builders do so). A
record whose prompt part alone fills `max_seq_len` trains on no answer token at all (every label masked), silently;
one whose answer is cut trains on part of it. The audit builds every record of a split once, uncut and with the
prompt masked, and reads off, for any `max_seq_len`:

- the records over `max_seq_len`, the ones whose answer is cut part way, and the ones that would train on no
  answer token (their index in the split);
- whether the answer's end (the chat template's end-of-turn token, or the EOS a text run appends) is trained;
- the longest record and the 95th percentile of the lengths, and the `max_seq_len` that would fit every record.

Built records are cached per process by what they depend on (the builder's settings, the data file's and the
tokenizer files' stamps), so runs that differ in LoRA rank, learning rate or seed tokenize their data once; and on
disk, across processes (`DiskCache`), by the content of what they depend on, so a later generate or verify of the
same data with the same tokenizer neither imports transformers nor tokenizes again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..resources import package_stamp
from ..stamps import cached_by_stamp, stamp
from .datasets import TOKENIZER_FILES, prompt_length, tokenizer_stamp

_BUILT: dict[tuple, tuple[tuple[int, int], ...]] = {}  # key -> (length, prompt length) of each record
SHOWN = 5  # record indices named in a message


@dataclass(frozen=True)
class SplitAudit:
    """The token counts of one split of a run's data. What is worked out from them is worked out once (cached
    properties; the fields are frozen), and runs whose split has the same records and limits share one
    (`audit_split`): a sweep's 1,000 runs on a dataset of 10,000 records would otherwise count them 1,000 times."""

    split: str
    max_seq_len: int | None
    lengths: tuple[int, ...]  # uncut length of each record
    prompt_lengths: tuple[int, ...]  # its masked prompt part
    ends_with_end_token: bool  # the answer part closes with an end-of-turn/EOS token the model learns to emit

    @property
    def records(self) -> int:
        return len(self.lengths)

    def _limit(self) -> int:
        return self.max_seq_len if self.max_seq_len is not None else math.inf  # type: ignore[return-value]

    @functools.cached_property
    def over(self) -> list[int]:
        return [i for i, n in enumerate(self.lengths) if n > self._limit()]

    @functools.cached_property
    def untrainable(self) -> list[int]:
        """Records that train on no answer token: the prompt fills max_seq_len, or the answer is empty."""
        limit = self._limit()
        return [i for i, (n, p) in enumerate(zip(self.lengths, self.prompt_lengths, strict=True)) if p >= min(n, limit)]

    @functools.cached_property
    def cut(self) -> list[int]:
        """Records whose answer is cut part way (some of it trains, not all)."""
        limit = self._limit()
        return [i for i, (n, p) in enumerate(zip(self.lengths, self.prompt_lengths, strict=True)) if p < limit < n]

    @property
    def end_trained(self) -> int:
        """Records whose answer's end token is trained (none when the answer has no end token)."""
        return self.records - len(self.over) if self.ends_with_end_token else 0

    @functools.cached_property
    def max_length(self) -> int:
        return max(self.lengths, default=0)

    @functools.cached_property
    def p95_length(self) -> int:
        """The 95th percentile of the lengths (nearest rank)."""
        if not self.lengths:
            return 0
        ordered = sorted(self.lengths)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "max_seq_len": self.max_seq_len,
            "over_max_seq_len": len(self.over),
            "answer_cut": len(self.cut),
            "untrainable": len(self.untrainable),
            "untrainable_records": self.untrainable[:SHOWN],
            "cut_records": self.cut[:SHOWN],
            "end_token_trained": self.end_trained,
            "end_token": self.ends_with_end_token,
            "max_length": self.max_length,
            "p95_length": self.p95_length,
        }

    def line(self) -> str:
        end = (
            f"end-of-turn token trained in {self.end_trained} of {self.records}"
            if self.ends_with_end_token
            else "no end-of-turn token (the answer is not closed by one: the model does not learn to stop)"
        )
        return (
            f"tokens ({self.split}): {self.records} records, longest {self.max_length}, 95th percentile "
            f"{self.p95_length}, max_seq_len {self.max_seq_len}: {len(self.over)} over it, {len(self.cut)} with the "
            f"answer cut, {len(self.untrainable)} training on no answer token; {end}"
        )


def _key_and_args(component: str, section: dict[str, Any], split: str, data_file: str, model_path: str) -> tuple:
    """What built records depend on (the builder, its settings, the stamps of the data and the tokenizer files),
    and the builder's arguments: uncut, the prompt masked, not packed."""
    args = {k: v for k, v in section.items() if k != "_component_"}
    args.update(
        field=split,
        data_files=str(data_file),
        model_path=str(model_path),
        train_on_input=False,
        max_seq_len=None,
        packed=False,
    )
    args.pop("drop_untrainable", None)
    key = (component, json.dumps(args, sort_keys=True, default=str), stamp(data_file), tokenizer_stamp(model_path))
    return key, args


def _build(builder: Any, args: dict[str, Any]) -> tuple[tuple[int, int], ...]:
    from types import SimpleNamespace

    dataset = builder(SimpleNamespace(max_seq_len=None), **args)
    out = []
    for i in range(len(dataset)):
        example = dataset[i]
        out.append((len(example["tokens"]), prompt_length(example["labels"])))
    return tuple(out)


def _build_component(component: str, args: dict[str, Any]) -> tuple[tuple[int, int], ...]:
    """`_build` by the builder's dotted name (in the worker process)."""
    import importlib

    module, _, name = component.rpartition(".")
    return _build(getattr(importlib.import_module(module), name), args)


def _keep(key: tuple, records: tuple) -> None:
    if len(_BUILT) >= 64:
        _BUILT.clear()
    _BUILT[key] = records


def built_records(builder: Any, section: dict[str, Any], split: str, data_file: str, model_path: str) -> tuple:
    """(length, prompt length) of every record of `split`, built by `builder` (the config's `_component_`) from
    `section` (the config's dataset section), uncut and with the prompt masked; cached per process and on disk
    (`DiskCache`), and taken from the background builder when `prefetch` asked it for them."""
    component = f"{builder.__module__}.{builder.__qualname__}"
    key, args = _key_and_args(component, section, split, data_file, model_path)
    if key not in _BUILT:
        # The content key is taken before the build (prefetch took it before it asked the worker), so records are
        # never filed under data that changed while they were built.
        content, pending = _PENDING.pop(key, (None, None))
        records = None
        if pending is not None:
            try:
                records = pending.get()
            except Exception:  # the worker failed or died: build here, where the error (if any) is raised
                records = None
        else:
            content = _content_key(component, args)
            records = DiskCache.default().get(content)
            if records is not None:
                _keep(key, records)
                return records
        if records is None:
            records = _build(builder, args)
        DiskCache.default().put(content, records)
        _keep(key, records)
    return _BUILT[key]


# --- on disk, across processes ------------------------------------------------------------------------------
# The first build of a process imports transformers and loads the tokenizer (about 1 s on a 2-core machine,
# whatever the sweep's size): more than all else a 100-run generate does. The records are a function of the
# builder's code and settings, the bytes of the data and tokenizer files and the transformers version, so they are
# kept on disk under a digest of exactly those (never of paths or stamps: a copy of the same data in another
# experiment, or a fresh clone, finds them). A damaged or unreadable entry is built again; nothing fails for want of
# the cache (a read-only home, another user's directory).

CACHE_ENV = "SCAFFOLD_AUDIT_CACHE"  # a directory, or "off"
CACHE_ENTRIES = 256  # the most entries kept (the oldest go first)
_FORMAT = 1


@cached_by_stamp(maxsize=256)
def _file_digest(path: Path) -> str:
    """sha256 of a file's bytes ("-" where it is missing or unreadable)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return "-"
    return digest.hexdigest()


def _builder_digest(component: str) -> str:
    """sha256 of the builder's module source (its code decides the records), found without importing it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(component.rpartition(".")[0])
    except (ImportError, ValueError):
        spec = None
    origin = getattr(spec, "origin", None)
    return _file_digest(Path(origin)) if origin else "-"


def _content_key(component: str, args: dict[str, Any]) -> str:
    """The digest of what built records depend on: the builder (name, code), its settings but the paths, the bytes
    of the data files and of the tokenizer files, and the installed tokenizing packages (resources.package_stamp)."""
    files = args["data_files"]
    files = [files] if isinstance(files, str) else list(files)
    model = Path(args["model_path"])
    settings = {k: v for k, v in args.items() if k not in ("data_files", "model_path")}
    parts = {
        "format": _FORMAT,
        "builder": [component, _builder_digest(component)],
        "settings": settings,
        "data": [_file_digest(Path(f)) for f in files],
        "tokenizer": {name: _file_digest(model / name) for name in TOKENIZER_FILES},
        "packages": [package_stamp(name) for name in ("transformers", "tokenizers", "jinja2")],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class DiskCache:
    """Built records on disk, one JSON file per content key (`_content_key`), in `directory`."""

    def __init__(self, directory: Path | None):
        self.directory = directory

    @staticmethod
    def default() -> DiskCache:
        """SCAFFOLD_AUDIT_CACHE (a directory, or "off"), else $XDG_CACHE_HOME/scaffold-torchtune/token-audit
        (~/.cache/... by default)."""
        from ..resources import cache_directory

        return DiskCache(cache_directory("token-audit", CACHE_ENV))

    def _path(self, key: str) -> Path | None:
        return self.directory / f"{key}.json" if self.directory is not None else None

    def get(self, key: str) -> tuple[tuple[int, int], ...] | None:
        path = self._path(key)
        if path is None:
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data["format"] != _FORMAT or data["key"] != key:
                return None
            records = tuple((int(n), int(p)) for n, p in data["records"])
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None
        return records

    def put(self, key: str, records: tuple) -> None:
        path = self._path(key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"format": _FORMAT, "key": key, "records": records}), encoding="utf-8")
            os.replace(tmp, path)
            self._prune()
        except OSError:
            return

    def _prune(self) -> None:
        assert self.directory is not None
        entries = list(self.directory.glob("*.json"))
        if len(entries) <= CACHE_ENTRIES:
            return
        entries.sort(key=lambda p: p.stat().st_mtime_ns)
        for old in entries[: len(entries) - CACHE_ENTRIES]:
            old.unlink(missing_ok=True)


# --- building in the background ------------------------------------------------------------------------------
# The first audit of a process imports transformers and loads the tokenizer (about 1.5 s, whatever the sweep's
# size). `scaffold generate` asks a forked worker process for the records as soon as it knows a run's dataset
# sections (`prefetch`), and renders and self-checks the next runs while the worker imports and builds: the import
# costs the caller nothing it would not spend anyway (benchmarks/bench_generate.py measures it both ways:
# SCAFFOLD_AUDIT_WORKER=0 turns the worker off). Where fork is not available, or the worker fails, the records are
# built in the caller's process, as before.

_PENDING: dict[tuple, tuple[str, Any]] = {}  # key -> (its content key, the worker's AsyncResult)
_POOL: Any = None


def _warm() -> None:
    """The worker's first task: the imports every build needs."""
    import transformers  # noqa: F401
    from transformers import AutoTokenizer  # noqa: F401


def start_worker() -> bool:
    """Start the background builder (once); False where it cannot run here."""
    global _POOL
    if _POOL is not None:
        return True
    import importlib.util
    import multiprocessing
    import os

    if os.environ.get("SCAFFOLD_AUDIT_WORKER", "1") == "0" or importlib.util.find_spec("transformers") is None:
        return False
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    _POOL = multiprocessing.get_context("fork").Pool(1, initializer=_warm)
    return True


def stop_worker() -> None:
    global _POOL
    if _POOL is not None:
        _POOL.terminate()
        _POOL.join()
        _POOL = None
    _PENDING.clear()


def prefetch(component: str, section: dict[str, Any], split: str, data_file: str, model_path: str) -> tuple | None:
    """Find the records of a split on disk, or ask the background builder for them (started here, once, where it
    can run); the key, for `ready`."""
    try:
        key, args = _key_and_args(component, section, split, data_file, model_path)
    except OSError:
        return None  # the data or the tokenizer is not here: the audit says so when it runs
    if key in _BUILT or key in _PENDING:
        return key
    content = _content_key(component, args)
    records = DiskCache.default().get(content)
    if records is not None:
        _keep(key, records)
    elif start_worker():
        _PENDING[key] = (content, _POOL.apply_async(_build_component, (component, args)))
    return key


def ready(key: tuple | None) -> bool:
    """Whether the records of a prefetched key can be had without waiting."""
    return key is None or key in _BUILT or key not in _PENDING or _PENDING[key][1].ready()


def audit_split(
    builder: Any,
    section: dict[str, Any],
    split: str,
    data_file: str,
    model_path: str,
    max_seq_len: int | None,
    ends_with_end_token: bool,
) -> SplitAudit:
    records = built_records(builder, section, split, data_file, model_path)
    # Keyed by the records object itself (kept in the entry, so its id is not reused while the entry lives): the
    # same object for every run whose data, builder settings and tokenizer are the same.
    key = (id(records), split, max_seq_len, ends_with_end_token)
    found = _AUDITS.get(key)
    if found is not None and found[0] is records:
        return found[1]
    audit = SplitAudit(
        split,
        max_seq_len,
        tuple(n for n, _ in records),
        tuple(p for _, p in records),
        ends_with_end_token,
    )
    if len(_AUDITS) >= 256:
        _AUDITS.clear()
    _AUDITS[key] = (records, audit)
    return audit


_AUDITS: dict[tuple, tuple[tuple, SplitAudit]] = {}  # (id(records), split, limits) -> (records, their audit)


def ends_with_end_token(section: dict[str, Any]) -> bool:
    """Whether the builder closes each answer with a token the model learns to stop at: chat templates close the
    assistant's turn with one; text runs only with `add_eos`."""
    component = str(section.get("_component_", ""))
    return component.endswith("chat_template_dataset") or bool(section.get("add_eos"))
