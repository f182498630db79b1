"""Reading experiment_summary.yaml: older spellings normalised (with notes), then schema validation."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..errors import InputError, Problem, display_path
from ..layout import FINE_TUNED, SUMMARY_NAME, summary_path  # noqa: F401 (summary_path: re-exported)
from . import params, schemas, sweep
from .base_recipe import BaseRecipe
from .base_recipe import known as known_base_recipes
from .base_recipe import lookup as lookup_base_recipe
from .yamlio import Document, Path_, dotted, load_yaml, parse_yaml


@dataclass
class Summary:
    """A validated summary: normalised data, its document (for line numbers) and notes for the log."""

    doc: Document
    notes: list[str] = field(default_factory=list)
    legacy_gpus: int | None = None  # older controls.gpus: the default GPU count of every run
    legacy_gpus_mark: tuple[int | None, int | None] = (None, None)
    swept: int = 0  # the first `swept` runs were expanded from `variables`
    base_recipe: BaseRecipe | None = None  # controls.base_recipe: settings the summary leaves out come from it

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
    _require_absolute_dir(summary)
    if (swept := sweep.expand(summary.data, doc)) is not None:
        _add_swept(summary, swept)
    _require_dataset_type(summary)
    return summary


def _add_swept(summary: Summary, swept: sweep.Expansion) -> None:
    """The runs expanded from `variables` go in front of the listed runs (`Summary.swept` counts them), their line
    marks at `variables:`; the listed runs' marks move behind them."""
    data, doc, offset = summary.data, summary.doc, len(swept.runs)
    data["runs"] = swept.runs + list(data.get("runs") or [])
    if offset:
        moved = {k: v for k, v in doc.marks.items() if len(k) > 1 and k[0] == "runs" and isinstance(k[1], int)}
        for k in moved:
            del doc.marks[k]
        where = doc.locate(("variables",))
        for i in range(offset):
            doc.marks[("runs", i)] = where
        for k, v in moved.items():
            doc.marks[("runs", k[1] + offset, *k[2:])] = v
    summary.swept = offset
    summary.notes.append(swept.note)


def _require_absolute_dir(summary: Summary) -> None:
    """experiment.dir reaches `#SBATCH --output`, `cd` and `output_dir`: a relative one would be resolved against
    wherever `sbatch` happens to run (so `../../../tmp/x` lands anywhere)."""
    d = summary.data["experiment"].get("dir")
    if d and not str(d).startswith("/"):
        raise InputError(
            [
                summary.doc.problem(
                    ("experiment", "dir"),
                    f"experiment.dir {d} is a relative path: the batch scripts would resolve it against wherever "
                    "sbatch is run",
                    "give the absolute path of the experiment on the cluster (e.g. /scratch/you/project/experiment), "
                    "or remove experiment.dir to use where the summary is",
                )
            ]
        )


def _require_dataset_type(summary: Summary) -> None:
    """dataset_type has no default, as in the original: the wrong choice silently breaks train/eval parity."""
    data = summary.doc.data
    if "dataset_type" in (data.get("controls") or {}):
        return
    untyped = [
        r["name"]
        for r in data["runs"]
        if r.get("type") == FINE_TUNED and "dataset_type" not in (r.get("parameters") or {})
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


def _base_recipe(summary: Summary, controls: dict) -> Problem | None:
    """controls.base_recipe, as the original reads it: a torchtune stock config whose settings fill what the summary
    leaves out (scaffold.inputs.base_recipe), or a recipe name that says the method. Any other name is refused, by
    name: a run never trains without the settings the summary asked for."""
    doc, notes = summary.doc, summary.notes
    where = ("controls", "base_recipe")
    line = doc.locate(where)[0]
    name = controls.pop("base_recipe")
    recipe = lookup_base_recipe(name)
    if recipe is None:
        return doc.problem(
            where,
            f"{name!r} is not a torchtune 0.6.1 stock config this tool knows, so its settings cannot be taken (the "
            "original reads them from the named config file)",
            f"use one of {', '.join(known_base_recipes())}; or remove base_recipe and give the settings you want "
            "in controls",
        )
    if recipe.method is not None:
        if controls.get("method", recipe.method) != recipe.method:
            return doc.problem(
                where,
                f"base_recipe {name} is a {recipe.method} fine-tuning recipe, but controls.method is "
                f"{controls['method']}",
                "keep one of them",
            )
        controls.setdefault("method", recipe.method)
        notes.append(
            f"{doc.name}:{line}: controls.base_recipe ({name}) is an older setting: read as method: {recipe.method} "
            "(a torchtune recipe, not a config, so it holds no settings to take; the recipe follows from each run's "
            "method, GPU count and validation setting)"
        )
        return None
    summary.base_recipe = recipe
    taken = ", ".join(f"{k} {'null' if v is None else params.format_token_value(v)}" for k, v in recipe.values.items())
    notes.append(
        f"{doc.name}:{line}: controls.base_recipe {name}: the settings the summary leaves out take the values of "
        f"torchtune 0.6.1's stock config {name} ({taken}), as in the original; controls and each run's parameters "
        "come first"
    )
    return None


def _value_spellings(summary: Summary, holder: Path_, node: dict) -> None:
    """The original's spellings of a value (lr_scheduler: get_cosine_schedule_with_warmup) -> the table's, with a
    note; in `variables` each listed value is read so."""
    doc = summary.doc
    for name, value in list(node.items()):
        row = params.table().get(name)
        if row is None or not row.spellings:
            continue
        values = value if holder == ("variables",) and isinstance(value, list) else [value]
        new = [row.spellings.get(v, v) if isinstance(v, str) else v for v in values]
        if new == values:
            continue
        node[name] = new if values is value else new[0]
        line = doc.locate(holder + (name,))[0]
        changed = sorted({v for v in values if isinstance(v, str) and v in row.spellings})
        summary.notes.append(
            f"{doc.name}:{line}: normalised the original's spelling {dotted(holder + (name,))}: "
            f"{', '.join(changed)} -> {row.spellings[changed[0]]}"
        )


STRUCTURED_VARIABLES = ("independent", "dependent")
# A `variables` key this close to a parameter's name is taken for a misspelt parameter, not for a design axis.
TYPO_CUTOFF = 0.8


def _design_variables(summary: Summary) -> list[Problem]:
    """`variables` in the original's other shapes, which describe the design rather than sweep it: an axis that is
    not a parameter (`model: [...]`), or the structured `{independent: [...], dependent: [...]}`. Where `runs`
    lists the fine-tuned runs (as the original's design step writes them), they are read as the description they
    are and left out (with a note); without listed runs there is nothing to train from them, and they are refused."""
    doc, data = summary.doc, summary.doc.data
    variables = data.get("variables")
    if not isinstance(variables, dict):
        return []
    structured = any(k in variables for k in STRUCTURED_VARIABLES)
    table = params.table()
    design = (
        list(variables)
        if structured
        else [
            k
            for k in variables
            if isinstance(k, str)
            and k not in table
            and k not in params.aliases()
            and k != "paired"
            and not difflib.get_close_matches(k, [*table, *params.aliases()], n=1, cutoff=TYPO_CUTOFF)
        ]
    )
    if not design:
        return []
    runs = data.get("runs")
    listed = isinstance(runs, list) and any(isinstance(r, dict) and r.get("type") == FINE_TUNED for r in runs)
    shape = "the structured form {independent, dependent}" if structured else ", ".join(design)
    if not listed:
        path = ("variables",) if structured else ("variables", design[0])
        what = (
            "variables in the structured form {independent: [...], dependent: [...]} describe the design"
            if structured
            else f"variables.{design[0]} is not a parameter, so it names no setting to sweep"
        )
        return [
            doc.problem(
                path,
                f"{what}, and `runs` lists no fine-tuned run to train",
                "list the runs under `runs:` (name, type: fine-tuned, model, parameters), as the original's design "
                "step writes them; or sweep parameters as variables: {parameter: [values]} (each crossed with every "
                "model of models.base)",
            )
        ]
    line = doc.locate(("variables",))[0]
    for key in design:
        del variables[key]
    if not variables:
        del data["variables"]
    summary.notes.append(
        f"{doc.name}:{line}: variables ({shape}) read as a description of the design: `runs` lists the runs, "
        "which are what is trained"
    )
    return []


def _normalise(summary: Summary) -> list[Problem]:
    """Accept the older spellings found in real summaries of the original tool (docs/summary.md lists them)."""
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
            problems.append(_base_recipe(summary, controls))
        if "gpus" in controls:
            line = doc.locate(("controls", "gpus"))[0]
            summary.legacy_gpus_mark = doc.locate(("controls", "gpus"))
            summary.legacy_gpus = gpus = controls.pop("gpus")
            if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
                problems.append(
                    doc.problem(("controls", "gpus"), f"{gpus!r} is not a GPU count", fix="use an integer >= 0")
                )
            notes.append(f"{doc.name}:{line}: normalised older setting controls.gpus -> default compute.gpus ({gpus})")
    problems += _design_variables(summary)
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
            _value_spellings(summary, holder, node)
    return [p for p in problems if p is not None]


def display(summary: Summary) -> str:
    return display_path(summary.path)
