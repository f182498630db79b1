"""Sweeps: fine-tuned runs expanded from `variables` when the summary lists none, with deterministic names.

    variables:
      lora_rank: [8, 16]          # one axis per parameter: the Cartesian product of all axes...
      lr: [1e-5, 1e-4]
      paired:                     # ...where `paired` is one axis whose settings move together
        - {batch_size: 4, gradient_accumulation_steps: 4}
        - {batch_size: 16, gradient_accumulation_steps: 1}

gives, for every model in `models.base`, runs named `{model}_rank8_lr1e-5_bs4_ga4`, ... from the parameter
table's tokens, in the order the summary lists the axes. Names never depend on an index or a clock, so a
re-run names every run the same way.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from ..errors import InputError, Problem
from ..layout import FINE_TUNED
from . import params, schemas
from .yamlio import Document

PAIRED = "paired"


@dataclass(frozen=True)
class Expansion:
    """What a sweep adds to the summary: the fine-tuned runs expanded from `variables` (to go in front of the runs
    listed), and the note that says so."""

    runs: list[dict]
    note: str


def axes(variables: dict) -> list[list[dict]]:
    """Each axis as the list of settings it takes (a `paired` axis moves several parameters at once)."""
    out = []
    for name, values in variables.items():
        out.append([dict(v) for v in values] if name == PAIRED else [{name: v} for v in values])
    return out


def varied(variables: dict | None) -> list[str]:
    """The parameters a sweep varies, in the summary's order."""
    names: list[str] = []
    for name, values in (variables or {}).items():
        for key in [k for combo in values for k in combo] if name == PAIRED else [name]:
            if key not in names:
                names.append(key)
    return names


def run_name(model: str, setting: dict) -> str:
    return "_".join([model] + [params.token_for(k, v) for k, v in setting.items()])


def expand(data: dict, doc: Document) -> Expansion | None:
    """The fine-tuned runs of `variables` x `models.base` of a validated summary (`data`, read from `doc`) when
    `runs` is absent or lists no fine-tuned run; None when there is nothing to expand. Changes nothing (the summary
    adds them: scaffold.inputs.summary); raises InputError when a sweep cannot be named."""
    runs = data.get("runs")
    if runs is not None and any(r["type"] == FINE_TUNED for r in runs):
        return None
    variables = data.get("variables") or {}
    if not variables:
        if runs is None:
            raise InputError(
                [
                    doc.problem(
                        (),
                        "no runs: the summary has neither `runs` nor `variables`",
                        "list runs, or variables to sweep",
                    )
                ]
            )
        return 0
    problems = []
    for name in varied(variables):
        if not params.table()[name].tokens:
            path = ("variables", name) if name in variables else ("variables", PAIRED)
            problems.append(
                doc.problem(
                    path,
                    f"{name} has no run-name token, so runs swept over it cannot be named",
                    "list those runs explicitly under `runs:` instead",
                )
            )
    if PAIRED in variables and len({tuple(sorted(c)) for c in variables[PAIRED]}) > 1:
        problems.append(doc.problem(("variables", PAIRED), "every entry of `paired` must set the same parameters"))
    if problems:
        raise InputError(problems)
    pattern = re.compile(schemas.schema(schemas.SUMMARY)["$defs"]["run_name"]["pattern"])
    where = doc.locate(("variables",))
    new = []
    for model in (m["name"] for m in data["models"]["base"]):
        for combo in itertools.product(*axes(variables)):
            setting = {k: v for part in combo for k, v in part.items()}
            name = run_name(model, setting)
            if not pattern.fullmatch(name) or len(name) > 200:
                raise InputError(
                    [
                        doc.problem(
                            ("models", "base"),
                            f"the swept run name '{name}' is not a safe directory name (from model '{model}')",
                            "use model names of ASCII letters, digits, '.', '_', '+' or '-'",
                        )
                    ]
                )
            new.append({"name": name, "type": FINE_TUNED, "model": model, "parameters": setting})
    return Expansion(
        new,
        f"{doc.name}:{where[0]}: expanded variables ({', '.join(varied(variables))}) x "
        f"{len(data['models']['base'])} model(s) into {len(new)} fine-tuned runs",
    )


def name_problems(data: dict, doc: Document, swept: int) -> list[Problem]:
    """Listed runs win over `variables`, but every swept parameter a run sets must be spelt in its name (the first
    `swept` runs of `data`, from `doc`, were expanded from `variables`)."""
    sweep = [n for n in varied(data.get("variables")) if params.table()[n].tokens]
    out = []
    for i, run in enumerate(data["runs"]):
        if run["type"] != FINE_TUNED or i < swept:
            continue
        spelt = params.parse_run_name(run["name"])
        for name in sweep:
            if name in (run.get("parameters") or {}) and name not in spelt:
                token = params.token_for(name, run["parameters"][name])
                out.append(
                    doc.problem(
                        ("runs", i, "name"),
                        f"run '{run['name']}' sets the swept parameter {name} but its name does not say it",
                        f"add _{token} to the name",
                        run=run["name"],
                    )
                )
    return out
