"""Recognition of a model directory with no registry entry: its config.json mapped to a torchtune 0.6.1 builder.

The table is templates/model_families.yaml (families by architecture, sizes by config.json values); this module
only reads a directory and applies the table. Recognition needs the directory itself, so the planner asks for it
only with path checks on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, display_path
from ..layout import RECOGNISED_MODELS
from ..resources import load_data
from .yamlemit import dump_yaml
from .yamlio import load_yaml

CONFIG = "config.json"
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
SHARD = re.compile(r"model-(\d+)-of-(\d+)\.safetensors")
# What config.json says about a model, in the order an error message lists it.
READ_KEYS = (
    "architectures",
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "rope_theta",
    "tie_word_embeddings",
    "rope_scaling",
)
_ABSENT = object()


@dataclass(frozen=True)
class Recognised:
    """A registry entry worked out from a model directory, and what it was worked out from."""

    entry: dict[str, Any]
    size: str  # e.g. "Llama 3.2 1B"
    source: str  # the config.json read

    def describe(self) -> str:
        e = self.entry
        return (
            f"recognised as {self.size} from {self.source}: {e['lora_builder']}, model_type {e['model_type']}, "
            f"tokenizer {e['tokenizer']['component']}, checkpoint_files {_short(e['checkpoint_files'])}"
        )


@dataclass(frozen=True)
class Unrecognised:
    """Why a model directory maps to no torchtune builder (message names the file and what it read)."""

    message: str


RECORD_HEADER = (
    f"# {RECOGNISED_MODELS}: written by `scaffold generate` (commit it with the experiment). Models in no registry,\n"
    "# as recognised from their directory's config.json: where that directory is not looked at (--no-check-paths,\n"
    "# CI), the planner and the verification suite take each entry from here. Generating with path checks on\n"
    "# recognises them again and rewrites this file; do not edit it by hand.\n"
)
ENTRY_KEYS = ("lora_builder", "full_builder", "model_type", "checkpoint_files", "tokenizer", "resources")


def record_text(recognised: dict[str, Recognised]) -> str:
    """The record of the models recognised (by name), as written to RECOGNISED_MODELS."""
    body = {
        name: {"recognised_as": r.size, "from": r.source, "entry": r.entry} for name, r in sorted(recognised.items())
    }
    return RECORD_HEADER + dump_yaml(body)


def read_record(experiment_dir: Path) -> dict[str, Recognised]:
    """The models recorded in the experiment's RECOGNISED_MODELS (none when it is absent); InputError, naming the
    file, for one that is not a record this tool wrote."""
    path = Path(experiment_dir) / RECOGNISED_MODELS
    if not path.is_file():
        return {}
    doc = load_yaml(path)  # safe loader; a YAML error is an InputError with its line
    fix = "generate again with path checks on, where the model directories are mounted (it rewrites the file)"
    if not isinstance(doc.data, dict):
        raise InputError([doc.problem((), "not a record of recognised models (a mapping of model names)", fix)])
    out = {}
    for name, rec in doc.data.items():
        entry = rec.get("entry") if isinstance(rec, dict) else None
        if not isinstance(entry, dict) or any(k not in entry for k in ENTRY_KEYS):
            raise InputError(
                [doc.problem((name,), f"the record of model '{name}' lacks its entry ({', '.join(ENTRY_KEYS)})", fix)]
            )
        out[str(name)] = Recognised(
            entry, str(rec.get("recognised_as", name)), str(rec.get("from", display_path(path)))
        )
    return out


def families() -> dict[str, Any]:
    return load_data("model_families.yaml")


def known_sizes() -> list[str]:
    return [s["name"] for f in families()["families"] for s in f["sizes"]]


def recognise(model_dir: Path) -> Recognised | Unrecognised | None:
    """The entry for the model in `model_dir`, why there is none, or None when the directory has no config.json
    (nothing to recognise from: the caller reports the model as unknown)."""
    config_path = model_dir / CONFIG
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return Unrecognised(f"{config_path} cannot be read as JSON ({e})")
    if not isinstance(config, dict):
        return Unrecognised(f"{config_path} is not a JSON object")
    table = families()
    arch = (config.get("architectures") or [None])[0] if isinstance(config.get("architectures"), list) else None
    read = _what_was_read(config)
    for family in table["families"]:
        if arch not in family["architectures"]:
            continue
        values = {**family.get("defaults", {}), **config}
        if not _matches(family.get("match") or {}, values):
            continue
        for size in family["sizes"]:
            if _matches(size["match"], values):
                return _entry(model_dir, config_path, family, size, values, table["resources"])
        sizes = ", ".join(s["name"] for s in family["sizes"])
        return Unrecognised(
            f"{config_path} ({read}) is a {family['family']} model of a size torchtune 0.6.1 has no builder for "
            f"(this tool recognises {sizes})"
        )
    archs = sorted({a for f in table["families"] for a in f["architectures"]})
    return Unrecognised(
        f"{config_path} ({read}) matches no model family torchtune 0.6.1 has builders for "
        f"(recognised architectures: {', '.join(archs)}, with the sizes in templates/model_families.yaml)"
    )


def _entry(
    model_dir: Path,
    config_path: Path,
    family: dict,
    size: dict,
    values: dict,
    resources: list[dict],
) -> Recognised | Unrecognised:
    files = checkpoint_files(model_dir)
    if isinstance(files, Unrecognised):
        return files
    row = next((r for r in resources if size["params_b"] <= r["max_params_b"]), resources[-1])
    entry = {
        "lora_builder": size["lora_builder"],
        "full_builder": size["full_builder"],
        "model_type": size["model_type"],
        "checkpoint_files": files,
        "tokenizer": {"component": family["tokenizer"]["component"], "files": dict(family["tokenizer"]["files"])},
        "tied_embeddings": bool(values.get("tie_word_embeddings")),
        "resources": {k: v for k, v in row.items() if k != "max_params_b"},
    }
    return Recognised(entry, size["name"], str(config_path))


def checkpoint_files(model_dir: Path) -> list[str] | dict | Unrecognised:
    """The checkpoint files as a registry entry names them: the shards of model.safetensors.index.json's
    weight_map ({filename_format, max_filename} when they are model-0000i-of-0000N.safetensors for every i),
    else model.safetensors."""
    index = model_dir / INDEX
    if index.is_file():
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
            names = sorted(set(data["weight_map"].values()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            return Unrecognised(f"{index} has no readable weight_map ({type(e).__name__}: {e})")
        if not names or not all(isinstance(n, str) and n and "/" not in n for n in names):
            return Unrecognised(f"{index}: its weight_map names no shard files")
        shards = [SHARD.fullmatch(n) for n in names]
        if all(shards):
            total = {m.group(2) for m in shards}  # type: ignore[union-attr]
            numbers = [int(m.group(1)) for m in shards]  # type: ignore[union-attr]
            width = {len(m.group(1)) for m in shards} | {len(t) for t in total}  # type: ignore[union-attr]
            if len(total) == 1 and len(width) == 1 and numbers == list(range(1, int(next(iter(total))) + 1)):
                return {"filename_format": "model-{}-of-{}.safetensors", "max_filename": next(iter(total))}
        return names
    if (model_dir / SINGLE).is_file():
        return [SINGLE]
    return Unrecognised(
        f"no safetensors checkpoint in {model_dir} (neither {INDEX} nor {SINGLE}); torchtune's Hugging Face "
        "checkpointer needs the weights"
    )


def _lookup(values: dict, key: str) -> Any:
    value: Any = values
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return _ABSENT
        value = value[part]
    return value


def _matches(match: dict, values: dict) -> bool:
    for key, want in match.items():
        got = _lookup(values, key)
        if want is None:
            if got is not _ABSENT and got is not None:
                return False
        elif isinstance(want, bool) or isinstance(got, bool):
            if got is not want:
                return False
        elif isinstance(want, (int, float)):
            if not isinstance(got, (int, float)) or float(got) != float(want):
                return False
        elif got != want:
            return False
    return True


def _what_was_read(config: dict) -> str:
    parts = []
    for key in READ_KEYS:
        if key in config:
            value = config[key]
            if key == "architectures" and isinstance(value, list):
                value = ",".join(str(v) for v in value)
            elif key == "rope_scaling" and isinstance(value, dict):
                value = {k: value[k] for k in ("rope_type", "type", "factor") if k in value}
            parts.append(f"{key} {value}")
    return ", ".join(parts) if parts else "none of " + ", ".join(READ_KEYS[:3]) + ", ..."


def _short(files: list | dict) -> str:
    if isinstance(files, dict):
        return f"{files['filename_format']} x {files['max_filename']}"
    return ", ".join(files)
