"""The local (site) config: `claude.local.md` bullets or `scaffold.local.yaml`, normalised to one dict."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import schemas
from .discover import ENV_VAR, NAMES, find  # noqa: F401 (the local config's discovery, re-exported)
from .errors import InputError, Problem, display_path
from .yamlio import Document, load_yaml

# Markdown bullet label (lower case) -> normalised key. Labels under a "Weights & Biases" heading are
# prefixed with "wandb " first, so "Entity" there becomes "wandb entity".
MARKDOWN_KEYS = {
    "cluster": "cluster",
    "username": "username",
    "group": "group",
    "scratch directory": "scratch_dir",
    "working directory": "working_dir",
    "models directory": "models_dir",
    "account": "account",
    "partition": "partition",
    "qos": "qos",
    "constraint": "constraint",
    "default time": "default_time",
    "partition max time": "partition_max_time",
    "default gpus": "default_gpus",
    "default memory": "default_mem",
    "default cpus": "default_cpus",
    "default conda environment": "conda_env",
    "conda environment": "conda_env",
    "virtual environment": "venv",
    "gpu directive": "gpu_directive",
    "mail user": "mail_user",
    "email": "mail_user",
    "wandb entity": "wandb_entity",
    "wandb default project": "wandb_project",
}
INTEGER_KEYS = {"default_gpus", "default_cpus"}
UNSET = {"", "(none)", "none", "n/a", "-"}

_BULLET = re.compile(r"^\s*[-*]\s+\*\*(?P<label>[^*]+)\*\*\s*:\s*(?P<value>.*?)\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_MODULE = re.compile(r"^\s*module\s+load\s+(.+?)\s*$")


@dataclass
class LocalConfig:
    """Normalised site settings, and the document they came from (for line numbers in errors)."""

    settings: dict
    doc: Document
    notes: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.doc.path

    def get(self, key: str, default=None):
        value = self.settings.get(key)
        return default if value is None else value


def load(path: Path) -> LocalConfig:
    """Read either form, normalise, and validate against schemas/local_config.schema.json."""
    path = Path(path)
    if not path.is_file():
        raise InputError([Problem("local config not found", display_path(path), fix="check --local-config")])
    if ".md" in path.suffixes:  # claude.local.md, and its .example copy
        doc, notes = parse_markdown(path)
    else:
        doc, notes = load_yaml(path), []
        if doc.data is None:
            doc.data = {}
        if not isinstance(doc.data, dict):
            raise InputError(
                [
                    doc.problem(
                        (),
                        "the local config must be a mapping of settings",
                        "write one `key: value` setting per line, as in examples/scaffold.local.example.yaml",
                    )
                ]
            )
    problems = schemas.validate(schemas.LOCAL_CONFIG, doc)
    if problems:
        raise InputError(problems)
    return LocalConfig(dict(doc.data), doc, notes)


def parse_markdown(path: Path) -> tuple[Document, list[str]]:
    """`- **Key**: `value`` bullets and a `module load` line in a bash block -> settings with line marks."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as a text-mode read
    except (OSError, UnicodeDecodeError) as e:
        raise InputError([Problem(f"cannot read: {e}", display_path(path))]) from None
    doc = Document(path, {}, digest=hashlib.sha256(data).hexdigest())
    notes: list[str] = []
    heading = ""
    in_code = False
    modules: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            m = _MODULE.match(line)
            if m and "module" in heading.lower():
                for name in m.group(1).split():
                    doc.marks[("modules", len(modules))] = (lineno, 1)
                    modules.append(name)
            continue
        h = _HEADING.match(line)
        if h:
            heading = h.group(2)
            continue
        b = _BULLET.match(line)
        if not b:
            continue
        label = b.group("label").strip().lower()
        if "weights" in heading.lower() or "wandb" in heading.lower() or "w&b" in heading.lower():
            label = "wandb " + label
        key = MARKDOWN_KEYS.get(label)
        if key is None:
            notes.append(f"{display_path(path)}:{lineno}: ignored bullet '{b.group('label').strip()}'")
            continue
        raw = b.group("value").strip()
        value: object = raw[1:-1].strip() if len(raw) >= 2 and raw[0] == raw[-1] == "`" else raw
        if isinstance(value, str) and value.lower() in UNSET:
            value = None
        if key in INTEGER_KEYS and isinstance(value, str) and value.isdigit():
            value = int(value)
        doc.marks[(key,)] = (lineno, 1)
        doc.data[key] = value
    if modules:
        doc.marks[("modules",)] = doc.marks[("modules", 0)]
        doc.data["modules"] = modules
    return doc, notes
