"""Reading experiment_summary.yaml: older spellings normalised (with notes), then schema validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..discover import SUMMARY_NAME, summary_path  # noqa: F401 (re-exported)
from ..errors import InputError, Problem, display_path
from . import params, schemas
from .yamlio import Document, Path_, dotted, load_yaml, parse_yaml


@dataclass
class Summary:
    """A validated summary: normalised data, its document (for line numbers) and notes for the log."""

    doc: Document
    notes: list[str] = field(default_factory=list)
    legacy_gpus: int | None = None  # older controls.gpus: the default GPU count of every run
    legacy_gpus_mark: tuple[int | None, int | None] = (None, None)
    swept: int = 0  # the first `swept` runs were expanded from `variables`

    @property
    def data(self) -> dict:
        return self.doc.data

    @property
    def path(self) -> Path:
        return self.doc.path

    @cached_property
    def local_dir(self) -> Path:
        """Where the summary is, and where the run directories are written."""
        return self.doc.path.resolve().parent

    @property
    def root(self) -> Path:
        """The experiment directory as generated files name it: `experiment.dir`, else where the summary is."""
        d = self.data["experiment"].get("dir")
        return Path(d) if d else self.local_dir

    @property
    def name(self) -> str:
        return self.data["experiment"]["name"]

    def resolve(self, path: str) -> Path:
        """A path from the summary as generated files name it (relative paths are under the experiment)."""
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def to_local(self, path: Path) -> Path:
        """Where a path inside the experiment (as generated files name it) is on this machine."""
        try:
            return self.local_dir / Path(path).relative_to(self.root)
        except ValueError:
            return Path(path)

    def is_inside(self, path: Path) -> bool:
        try:
            Path(path).relative_to(self.root)
            return True
        except ValueError:
            return False


def load(target: Path, text: str | None = None) -> Summary:
    """Load, normalise and validate a summary; raise InputError listing every problem. `text`: the summary's text
    as it is about to be written (read instead of the file; `scaffold setup-finetune` checks a change so)."""
    path = summary_path(target)
    if text is not None:
        return _loaded(parse_yaml(text, path))
    if not path.is_file():
        where = display_path(path)
        raise InputError(
            [Problem("experiment summary not found", where, fix=f"create {SUMMARY_NAME} or pass its path")]
        )
    return _loaded(load_yaml(path))


def _loaded(doc: Document) -> Summary:
    if not isinstance(doc.data, dict):
        raise InputError([doc.problem((), "the summary must be a mapping", fix="see examples/ for the layout")])
    summary = Summary(doc)
    tool = (doc.data.get("tools") or {}).get("preparation") if isinstance(doc.data.get("tools"), dict) else None
    if tool is not None and tool != "torchtune":
        raise InputError(
            [
                doc.problem(
                    ("tools", "preparation"),
                    f"this experiment is prepared with '{tool}', not torchtune; scaffold-torchtune only prepares "
                    "torchtune runs",
                    fix="use the scaffolder for that tool, or set tools.preparation: torchtune",
                )
            ]
        )
    problems = _normalise(summary)
    problems += schemas.validate(schemas.SUMMARY, doc)
    if problems:
        raise InputError(problems)
    from . import sweep  # (sweep needs the validated summary; it imports this module for types only)

    sweep.expand(summary)
    _require_dataset_type(summary)
    return summary


def _require_dataset_type(summary: Summary) -> None:
    """dataset_type has no default, as in the original: the wrong choice silently breaks train/eval parity."""
    data = summary.doc.data
    if "dataset_type" in (data.get("controls") or {}):
        return
    untyped = [
        r["name"]
        for r in data["runs"]
        if r.get("type") == "fine-tuned" and "dataset_type" not in (r.get("parameters") or {})
    ]
    if untyped:
        where = ("controls",) if "controls" in data else ()
        raise InputError(
            [
                summary.doc.problem(
                    where,
                    f"dataset_type is not set (fine-tuned runs without it: {', '.join(untyped[:3])}"
                    f"{', ...' if len(untyped) > 3 else ''}): it decides how records are formatted, and the wrong "
                    "choice silently breaks train/eval parity",
                    "add `dataset_type: chat_completion` to controls for instruct models (evaluated through their "
                    "chat template), or `dataset_type: text_completion` for base models",
                )
            ]
        )


def _move_marks(doc: Document, old: Path_, new: Path_) -> None:
    """The line marks of the node at `old` (and all below it), now also at `new`: errors name the line as written."""
    for path in [p for p in doc.marks if p[: len(old)] == old]:
        doc.marks[new + path[len(old) :]] = doc.marks[path]


def _move(doc: Document, parent: Path_, old: str, new: str, notes: list[str], why: str) -> Problem | None:
    """Rename a key in place (keeping its line marks) when only the old spelling is present."""
    node = doc.data
    for part in parent:
        node = node[part]
    if new in node:
        return doc.problem(
            parent + (old,), f"both '{old}' (older spelling) and '{new}' are given", fix=f"keep only '{new}'"
        )
    node[new] = node.pop(old)
    _move_marks(doc, parent + (old,), parent + (new,))
    line = doc.locate(parent + (new,))[0]
    notes.append(f"{doc.name}:{line}: normalised older spelling {dotted(parent + (old,))} -> {new} ({why})")
    return None


def _lift(doc: Document, index: int, key: str, notes: list[str]) -> Problem | None:
    """runs[i].parameters.KEY -> runs[i].KEY (the original's spelling of a run setting), keeping its line marks."""
    run = doc.data["runs"][index]
    if key in run:
        return doc.problem(("runs", index, "parameters", key), f"{key} is given twice: in parameters and on the run",
                           fix=f"keep one {key}")  # fmt: skip
    run[key] = run["parameters"].pop(key)
    new = ("runs", index, key)
    _move_marks(doc, ("runs", index, "parameters", key), new)
    notes.append(f"{doc.name}:{doc.locate(new)[0]}: runs[{index}].parameters.{key} read as runs[{index}].{key}")
    return None


def _normalise(summary: Summary) -> list[Problem]:
    """Accept the older spellings found in real files (SPEC section 2)."""
    doc, notes, data = summary.doc, summary.notes, summary.doc.data
    problems: list[Problem | None] = []
    exp = data.get("experiment")
    if isinstance(exp, dict) and "directory" in exp:
        problems.append(_move(doc, ("experiment",), "directory", "dir", notes, "experiment.directory"))
    training = (data.get("data") or {}).get("training") if isinstance(data.get("data"), dict) else None
    if isinstance(training, dict) and "label" in training:
        problems.append(_move(doc, ("data", "training"), "label", "dataset_label", notes, "data.training.label"))
    output = data.get("output")
    if isinstance(output, dict) and "base_directory" in output:
        line = doc.locate(("output", "base_directory"))[0]
        notes.append(
            f"{doc.name}:{line}: output.base_directory ({output['base_directory']}) is an older setting and is not "
            "used: each run writes to {experiment}/{run}/artifacts"
        )
        del output["base_directory"]
    controls = data.get("controls")
    if isinstance(controls, dict):
        if "base_recipe" in controls:
            line = doc.locate(("controls", "base_recipe"))[0]
            recipe = controls.pop("base_recipe")
            if isinstance(recipe, str) and recipe.startswith("full_finetune") and "method" not in controls:
                controls["method"] = "full"
                notes.append(
                    f"{doc.name}:{line}: controls.base_recipe ({recipe}) is an older setting: read as method: full "
                    "(the recipe follows from each run's method, GPU count and validation setting)"
                )
            else:
                notes.append(
                    f"{doc.name}:{line}: controls.base_recipe ({recipe}) is an older setting and is not "
                    "used: the recipe follows from each run's method, GPU count and validation setting"
                )
        if "gpus" in controls:
            line = doc.locate(("controls", "gpus"))[0]
            summary.legacy_gpus_mark = doc.locate(("controls", "gpus"))
            summary.legacy_gpus = gpus = controls.pop("gpus")
            if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
                problems.append(
                    doc.problem(("controls", "gpus"), f"{gpus!r} is not a GPU count", fix="use an integer >= 0")
                )
            notes.append(f"{doc.name}:{line}: normalised older setting controls.gpus -> default compute.gpus ({gpus})")
    # The original's per-run forms: parameters.dataset_path (a literal train file) and, on eval-only runs,
    # parameters.checkpoint_path (the checkpoint evaluated instead of training) are settings of the run itself.
    for i, run in enumerate(data.get("runs") if isinstance(data.get("runs"), list) else []):
        given = run.get("parameters") if isinstance(run, dict) else None
        if isinstance(given, dict):
            for key in ("dataset_path", "checkpoint_path"):
                if key in given:
                    problems.append(_lift(doc, i, key, notes))
    # parameters.learning_rate -> lr, wherever parameters are given
    holders: list[Path_] = [("controls",), ("variables",)]
    runs = data.get("runs")
    if isinstance(runs, list):
        holders += [("runs", i, "parameters") for i, r in enumerate(runs) if isinstance(r, dict)]
    for holder in holders:
        node = data
        for part in holder:
            if isinstance(node, dict):
                node = node.get(part)
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            else:
                node = None
        if isinstance(node, dict):
            for old, new in params.aliases().items():
                if old in node:
                    problems.append(_move(doc, holder, old, new, notes, f"{old} is now {new}"))
    return [p for p in problems if p is not None]


def display(summary: Summary) -> str:
    return display_path(summary.path)
