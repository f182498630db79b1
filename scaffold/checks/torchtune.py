"""Checks that need torchtune importable (the environment where the runs train), built on
scaffold.checks.torchtune_bind: each `_component_` imports and its arguments bind strictly (counting those the recipe
passes itself), plus the semantic checks no signature expresses. Where torchtune is not importable the plugin
skips them with the reason (importing torchtune costs seconds, so it happens only when these checks run)."""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import Problem
from ..layout import FINE_TUNED, FINETUNE_FILE
from . import check
from .context import RunContext


@check("components_bind", scope=FINE_TUNED, file=FINETUNE_FILE, requires_torchtune=True)
def components_import_and_bind(run: RunContext) -> Iterator[Problem]:
    """Every `_component_` imports here and its arguments bind to its signature (with those the recipe passes);
    values builders ignore or reject late (lora_attn_modules, dtype, packed without max_seq_len) are flagged."""
    from .torchtune_bind import deep_check

    for problem in deep_check(run.config().data):
        section = problem.field or ""
        key = f"{section}._component_" if problem.message.startswith("component_") else section
        yield run.problem(
            problem.message,
            key=key,
            fix="install what the component needs in the training environment, or fix the section",
        )
