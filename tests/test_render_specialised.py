"""Rendering by skeleton (scaffold.render._Specialised): each template is rendered once per shape with placeholders
for the values it only prints, and each run's text is that skeleton with its values printed in. It must give
exactly what Jinja gives, for every kind of run and any printed value."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaffold import render
from scaffold.generate import load_plan

from .conftest import EXAMPLE, EXAMPLE_LOCAL
from .test_verify_scale import MORE_RUNS
from .test_verify_suite import VARIANT_RUNS

TEMPLATES = ("finetune.yaml.j2", "finetune.slurm.j2")


@pytest.fixture(scope="module")
def every_kind(tmp_path_factory) -> list[tuple[dict, dict]]:
    """(setup, model) of the example's runs and of every variant of run this project renders."""
    exp = tmp_path_factory.mktemp("kinds") / "kinds"
    shutil.copytree(EXAMPLE, exp, ignore=shutil.ignore_patterns("Llama-*", "logs", "arrays", ".scaffold-manifest.json"))
    data = yaml.safe_load((exp / "experiment_summary.yaml").read_text())
    data["models"]["base"].append({"name": "Qwen2.5-3B-Instruct", "path": "/scratch/models/Qwen2.5-3B-Instruct"})
    for run in VARIANT_RUNS + MORE_RUNS:
        data["runs"].append({"type": "fine-tuned", "model": "Llama-3.2-1B-Instruct", **run})
    (exp / "experiment_summary.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    runs = planned(exp)
    # And a sweep expanded from variables (runs listing only the control).
    data["variables"] = {"lora_rank": [4, 8], "lr": [1e-5, 3e-4], "seed": [1, 2]}
    data["runs"] = [r for r in data["runs"] if r["type"] == "control"]
    (exp / "experiment_summary.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    runs += planned(exp)
    assert len(runs) >= 8 + 16
    return runs


def planned(exp: Path) -> list[tuple[dict, dict]]:
    plan = load_plan(exp, local_config=EXAMPLE_LOCAL, check_paths=False)
    assert not isinstance(plan, list), plan
    return [(rp.setup, plan.models[rp.setup["model"]]) for rp in plan.runs if rp.setup and not rp.problems]


def both_ways(template: str, ctx: dict) -> tuple[str, str]:
    return render._render(template, ctx), render._jinja_render(template, ctx)


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_kind_of_run_renders_as_jinja_renders_it(every_kind, template: str):
    for setup, model in every_kind:
        fast, slow = both_ways(template, render.context(setup, model))
        assert fast == slow, setup["run_name"]
    assert render._specialised(template)._skeletons, "no skeleton was used: the test proves nothing"


def test_printed_only_and_structural_names_are_told_apart():
    spec = render._specialised("finetune.yaml.j2")
    assert {"lr", "lora_rank", "seed", "run_name", "output_dir"} <= spec.slots
    # Used in a test, an expression or a loop somewhere: part of the shape, never a slot.
    assert {"method", "dataset_type", "device", "model_args", "validation_during_training"} <= set(spec.structural)
    slurm = render._specialised("finetune.slurm.j2")
    assert "nodes" in slurm.structural  # printed, and also tested (`nodes > 1`)
    assert {"run_dir", "output_dir", "model_dir"} <= slurm.slots  # a sweep's scripts share one skeleton


PRINTABLE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.text(alphabet="\x00\x01{}$%'\"\\:#-[] \n\t", max_size=12),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.dictionaries(st.sampled_from(["lr", "seed", "run_name", "prompt", "output_dir", "time"]), PRINTABLE))
def test_any_printed_values_render_as_jinja_renders_them(every_kind, values: dict):
    setup, model = every_kind[0]
    for template in TEMPLATES:
        ctx = render.context(setup, model)
        ctx.update(values)
        try:
            slow = render._jinja_render(template, ctx)
        except Exception as e:  # whatever Jinja or a filter raises, the skeleton raises too
            with pytest.raises(type(e)):
                render._render(template, ctx)
            continue
        assert render._render(template, ctx) == slow


def test_a_missing_value_is_the_same_error():
    setup, model = None, None
    spec = render._specialised("finetune.slurm.j2")
    name = next(iter(spec.slots))
    ctx = {k: "x" for k in spec.slots | set(spec.structural)}
    del ctx[name]
    with pytest.raises(render.RenderError) as slow:
        render._jinja_render("finetune.slurm.j2", ctx)
    with pytest.raises(render.RenderError) as fast:
        render._render("finetune.slurm.j2", ctx)
    assert str(fast.value) == str(slow.value)
    assert setup is model is None


def test_a_value_that_looks_like_a_slot_is_printed_as_it_is(every_kind):
    """A value of the shape (here an #SBATCH line, printed in a loop) holding what a slot's mark looked like before
    marks carried a nonce: printed as it is, never taken for a slot."""
    setup, model = every_kind[0]
    ctx = render.context(setup, model)
    ctx["sbatch_extra"] = ["--comment=\x00run_name\x01s\x00"]
    fast, slow = both_ways("finetune.slurm.j2", ctx)
    assert fast == slow
    assert "--comment=\x00run_name\x01s\x00" in fast
