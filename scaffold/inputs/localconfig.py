"""The local (site) config: `claude.local.md` bullets or `scaffold.local.yaml`, normalised to one dict."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, Problem, display_path
from ..layout import NAMES, find, locate  # noqa: F401 (find, locate: the local config's discovery, re-exported)
from . import schemas
from .yamlio import Document, load_yaml

# Markdown bullet label (lower case) -> normalised key, by the kind of section the bullet is in. A bullet's
# section is decided by its nearest heading that names one (so "### Shared Resources" under "## HPC Environment" is
# read as HPC); bullets of sections this tool never reads (GitHub, Quick Commands, ...) are ignored, so a second
# `**Username**` under "GitHub Configuration" never replaces the HPC one.
SITE_KEYS = {
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
    "gpu type": "gpu_type",
    "gpu memory": "gpu_memory_gib",
    "gpu memory gib": "gpu_memory_gib",
    "mail user": "mail_user",
    "email": "mail_user",
    "mail type": "mail_type",
}
WANDB_KEYS = {"entity": "wandb_entity", "default project": "wandb_project", "mode": "wandb_mode"}
SECTION_KEYS = {"site": SITE_KEYS, "wandb": WANDB_KEYS, "module": {}}
# Heading words -> section kind, tried in this order on each heading from the nearest outward. "ignored" sections
# are ones this tool knows it never reads.
SECTION_WORDS = (
    ("wandb", ("weights & biases", "weights and biases", "wandb", "w&b")),
    ("ignored", ("github", "conda environment setup", "quick command", "common path", "observability", "notes")),
    ("module", ("module",)),
    ("site", ("hpc", "cluster", "slurm", "site")),
)
MARKDOWN_KEYS = {**SITE_KEYS, **{"wandb " + k: v for k, v in WANDB_KEYS.items()}}  # every label read, by key
INTEGER_KEYS = {"default_gpus", "default_cpus", "gpu_memory_gib"}
UNSET = {"", "(none)", "none", "n/a", "-"}
DEFAULT_WANDB_MODE = "offline"

_BULLET = re.compile(r"^\s*[-*]\s+\*\*(?P<label>[^*]+)\*\*\s*:\s*(?P<value>.*?)\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_MODULE = re.compile(r"^\s*module\s+load\s+(.+?)\s*$")
_BACKTICKED = re.compile(r"^`(?P<value>[^`]*)`(?P<note>.*)$")
_PLACEHOLDER = re.compile(r"<[^<>]*>")


def section_kind(headings: list[str]) -> str:
    """The kind of section a bullet under these headings (outermost first) is in: site, wandb, module, ignored;
    "site" before any heading but a title, and "ignored" under headings that name nothing this tool reads."""
    for text in reversed(headings):
        low = text.lower()
        for kind, words in SECTION_WORDS:
            if any(w in low for w in words):
                return kind
    return "site" if len(headings) <= 1 else "ignored"


def split_value(raw: str) -> tuple[str, str]:
    """`` `0:59:00` (under 1 hour) `` -> ("0:59:00", "(under 1 hour)"): the backticked part is the value, text after
    it a note. Without backticks the whole text is the value."""
    m = _BACKTICKED.match(raw.strip())
    if m:
        return m.group("value").strip(), m.group("note").strip()
    return raw.strip(), ""


@dataclass
class LocalConfig:
    """Normalised site settings, and the document they came from (for line numbers in errors)."""

    settings: dict
    doc: Document
    notes: list[str] = field(default_factory=list)
    # Markdown bullets whose value is an unfilled `<placeholder>`: key -> the value as written. Reading one of
    # these keys (where its value is used) is an error naming the field and its line; being there is not.
    placeholders: dict[str, str] = field(default_factory=dict)
    found: str = ""  # how it was found (scaffold.layout.locate), for the log

    @property
    def path(self) -> Path:
        return self.doc.path

    def get(self, key: str, default=None):
        if key in self.placeholders:
            raise InputError([self.placeholder_problem(key)])
        value = self.settings.get(key)
        return default if value is None else value

    def placeholder_problem(self, key: str) -> Problem:
        line, col = self.doc.locate((key,))
        value = self.placeholders[key]
        return Problem(
            f"`{value}` is a placeholder that was never filled in, and this setting is used",
            self.doc.name,
            line,
            col,
            key,
            f"replace {', '.join(_PLACEHOLDER.findall(value))} with your own value on line {line} of {self.doc.name}",
        )


def file_name_for(text: str) -> str:
    """The file name a site config's text must be saved under to be read as the form it is in (the CI workflow
    keeps it in a secret, with no name): `claude.local.md` when a line is a markdown bullet `- **Label**: value`
    (which no YAML mapping can hold: `*` starts an alias there), else `scaffold.local.yaml`."""
    yaml_name, markdown_name = NAMES
    return markdown_name if any(_BULLET.match(line) for line in text.splitlines()) else yaml_name


def load(path: Path) -> LocalConfig:
    """Read either form, normalise, and validate against schemas/local_config.schema.json."""
    path = Path(path)
    if not path.is_file():
        raise InputError([Problem("local config not found", display_path(path), fix="check --local-config")])
    placeholders: dict[str, str] = {}
    if ".md" in path.suffixes:  # claude.local.md, and its .example copy
        doc, notes, placeholders = parse_markdown(path)
    else:
        doc, notes = load_yaml(path), []
        if doc.data is None:  # an empty file (or only comments): a site config never filled in, or truncated
            raise InputError(
                [
                    doc.problem(
                        (),
                        "the local config is empty: no account, partition, module or environment would reach the "
                        "batch scripts",
                        "fill it in as in examples/scaffold.local.example.yaml (write `{}` for a site that needs none "
                        "of them)",
                    )
                ]
            )
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
    return LocalConfig(dict(doc.data), doc, notes, placeholders)


def parse_markdown(path: Path) -> tuple[Document, list[str], dict[str, str]]:
    """`- **Key**: `value` note` bullets of the sections this tool reads, and `module load` lines in a bash block
    under a module heading -> (settings with line marks, notes, unfilled placeholders by key)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as a text-mode read
    except (OSError, UnicodeDecodeError) as e:
        raise InputError([Problem(f"cannot read: {e}", display_path(path))]) from None
    doc = Document(path, {})
    name = display_path(path)
    notes: list[str] = []
    placeholders: dict[str, str] = {}
    problems: list[Problem] = []
    headings: list[tuple[int, str]] = []  # the open headings, outermost first
    in_code = False
    modules: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        kind = section_kind([h for _, h in headings])
        if in_code:
            m = _MODULE.match(line)
            if m and kind == "module":
                for module in m.group(1).split("#", 1)[0].split():
                    doc.marks[("modules", len(modules))] = (lineno, 1)
                    modules.append(module)
            continue
        h = _HEADING.match(line)
        if h:
            level = len(h.group(1))
            headings = [(lv, t) for lv, t in headings if lv < level] + [(level, h.group(2))]
            continue
        b = _BULLET.match(line)
        if not b:
            continue
        label = b.group("label").strip()
        if kind == "ignored":
            continue  # a section this tool never reads (GitHub, ...): its bullets mean nothing here
        key = SECTION_KEYS.get(kind, {}).get(label.lower())
        if key is None:
            notes.append(f"{name}:{lineno}: ignored bullet '{label}'")
            continue
        if (key,) in doc.marks:
            first = doc.marks[(key,)][0]
            problems.append(
                Problem(
                    f"set twice: also on line {first}",
                    name,
                    lineno,
                    1,
                    key,
                    f"keep one of the bullets (lines {first} and {lineno})",
                )
            )
            continue
        raw, note = split_value(b.group("value"))
        doc.marks[(key,)] = (lineno, 1)
        if _PLACEHOLDER.search(raw):
            placeholders[key] = raw
            continue
        value: object = raw
        if raw.lower() in UNSET:
            value = None
        elif key in INTEGER_KEYS and raw.isdigit():
            value = int(raw)
        doc.data[key] = value
    if problems:
        raise InputError(problems)
    if modules:
        doc.marks[("modules",)] = doc.marks[("modules", 0)]
        doc.data["modules"] = modules
    return doc, notes, placeholders
