"""The check `components_bind`, which needs torchtune importable (the environment where the runs train): deep
checks of a finetune.yaml with the real torchtune installed, what `tune validate` checks, and what it misses.

For every section with a `_component_`: the component imports, and its arguments bind to its signature
strictly, counting the arguments the recipe passes itself (torchtune 0.6.1 recipes: the optimizer gets the
model's parameters, the scheduler the optimizer, `num_training_steps` and `last_epoch`, datasets the tokenizer,
the checkpointer `should_load_recipe_state`). Then semantic checks that no signature can express.

Importing torchtune costs seconds: it happens only when the check runs, and the plugin runs it only where torchtune
is importable, reporting it as skipped (with the reason) elsewhere.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Iterator
from typing import Any

from ..engine import check
from ..engine.context import RunContext
from ..errors import Problem
from ..layout import FINE_TUNED, FINETUNE_FILE

# Arguments the 0.6.1 LoRA recipes pass to a section's component themselves (see the recipes' instantiate calls).
INJECTED: dict[str, tuple[str, ...]] = {
    "optimizer": ("params",),
    "lr_scheduler": ("optimizer", "num_training_steps", "last_epoch"),
    "dataset": ("tokenizer",),
    "dataset_val": ("tokenizer",),
    "checkpointer": ("should_load_recipe_state",),
}
# Keyword arguments that torchtune's dataset builders pass on to Hugging Face `load_dataset` through
# **load_dataset_kwargs; anything else there is a typo that would fail only when the data loads.
LOAD_DATASET_KWARGS = frozenset(
    {"data_files", "data_dir", "field", "name", "revision", "cache_dir", "trust_remote_code", "num_proc"}
)
LORA_ATTN_MODULES = frozenset({"q_proj", "k_proj", "v_proj", "output_proj"})
DTYPES = frozenset({"fp32", "bf16"})


def _problem(check: str, section: str, message: str) -> Problem:
    """A deep check's finding: the check's name in front of the message, the section as the field."""
    return Problem(f"{check}: {message}", field=section)


def torchtune_available() -> bool:
    return importlib.util.find_spec("torchtune") is not None


def import_component(path: str) -> Any:
    """The object a `_component_` names (module attribute, or attribute of an attribute)."""
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as e:
            if e.name and ".".join(parts[:i]).startswith(e.name) and i > 1:
                continue  # a shorter module path may hold the rest as attributes
            raise
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"{path} is not a dotted path")


def components(cfg: dict, prefix: str = "") -> list[tuple[str, dict]]:
    """(dotted section, mapping) for every mapping with a `_component_`, nested ones included."""
    found = []
    for key, value in cfg.items():
        if isinstance(value, dict):
            section = f"{prefix}{key}"
            if "_component_" in value:
                found.append((section, value))
            found += components(value, section + ".")
    return found


def bind_component(section: str, spec: dict) -> Problem | None:
    """Import the component and bind its configured arguments (plus the recipe's own) to its signature: None when
    they bind (or the component has no signature to check), else the problem."""
    path = spec["_component_"]
    try:
        obj = import_component(path)
    except Exception as e:  # ImportError, AttributeError, or an error raised while importing
        return _problem("component_imports", section, f"{path} cannot be imported: {type(e).__name__}: {e}")
    kwargs = {k: v for k, v in spec.items() if k != "_component_"}
    for name in INJECTED.get(section, ()):
        kwargs.setdefault(name, None)
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None  # nothing to bind against
    try:
        sig.bind(**kwargs)
    except TypeError as e:
        return _problem("component_binds", section, f"{path} does not take these arguments: {e}")
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    if takes_any and section in ("dataset", "dataset_val"):
        named = set(sig.parameters)
        passed_on = sorted(set(kwargs) - named - LOAD_DATASET_KWARGS)
        if passed_on:
            return _problem(
                "component_binds",
                section,
                f"{path} would pass {passed_on} on to load_dataset, which does not take them (a typo?)",
            )
    return None


def semantic_checks(cfg: dict) -> list[Problem]:
    """What a signature cannot say: values the builders silently ignore or reject late."""
    out = []
    model = cfg.get("model", {})
    bad = sorted(set(model.get("lora_attn_modules") or []) - LORA_ATTN_MODULES)
    if bad:
        out.append(_problem("lora_attn_modules", "model", f"ignored by torchtune: {bad}"))
    dtype = cfg.get("dtype")
    if dtype not in DTYPES:
        out.append(_problem("dtype", "dtype", f"dtype {dtype!r}"))
    if model.get("apply_lora_to_output") and "llama3_2" in str(model.get("_component_")):
        out.append(_problem("lora_to_output", "model", "Llama 3.2 builders reject apply_lora_to_output"))
    for section in ("dataset", "dataset_val"):
        ds = cfg.get(section)
        if isinstance(ds, dict) and ds.get("packed") and not (cfg.get("tokenizer") or {}).get("max_seq_len"):
            out.append(_problem("packed_needs_max_seq_len", section, "packed: true needs tokenizer.max_seq_len"))
    return out


def deep_check(cfg: dict) -> list[Problem]:
    """The problems the deep checks find in one resolved config (a plain dict, as OmegaConf.to_container gives it);
    none when it passes. Each problem's field is the section it is about."""
    bound = [bind_component(section, spec) for section, spec in components(cfg)]
    return [p for p in bound if p is not None] + semantic_checks(cfg)


@check("components_bind", scope=FINE_TUNED, file=FINETUNE_FILE, requires_torchtune=True)
def components_import_and_bind(run: RunContext) -> Iterator[Problem]:
    """Every `_component_` imports here and its arguments bind to its signature (with those the recipe passes);
    values builders ignore or reject late (lora_attn_modules, dtype, packed without max_seq_len) are flagged."""
    for problem in deep_check(run.config().data):
        section = problem.field or ""
        key = f"{section}._component_" if problem.message.startswith("component_") else section
        yield run.problem(
            problem.message,
            key=key,
            fix="install what the component needs in the training environment, or fix the section",
        )
