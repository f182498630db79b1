"""The step arithmetic of torchtune 0.6.1's recipes (scaffold.steps): worked examples, the recipes' training loop
replayed step by step, and the warnings of plans that waste a run. (tests/integration/test_steps_torchtune.py
holds the plan against real torchtune runs.)"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaffold.steps import StepPlan, plan_for, world_size


def plan(records, batch=1, ga=1, epochs=1, cap=None, world=1, warmup=0, log=1, validating=False, val_every=None):
    return StepPlan(records, world, batch, ga, epochs, cap, warmup, log, validating, val_every)


def replayed(records: int, batch: int, ga: int, epochs: int, cap: int | None, world: int) -> int:
    """Optimizer steps of the recipes' loop over one rank's dataloader: `for idx, batch in enumerate(dataloader)`,
    a step when `(idx + 1) % ga == 0`, a break when `(idx + 1) // ga == max_steps_per_epoch`."""
    per_rank = math.ceil(records / world)  # StatefulDistributedSampler without drop_last
    batches = per_rank // batch  # the dataloader's drop_last=True
    total = 0
    for _ in range(epochs):
        for idx in range(batches):
            if (idx + 1) % ga == 0:
                total += 1
            if cap is not None and (idx + 1) // ga == cap:
                break
    return total


@pytest.mark.parametrize(
    "records, batch, ga, epochs, cap, world, per_epoch, total",
    [
        (8, 4, 1, 1, None, 1, 2, 2),
        (11, 2, 2, 2, None, 1, 2, 4),  # 5 batches, the fifth is an unfinished accumulation
        (11, 3, 1, 1, 2, 1, 2, 2),  # capped
        (10, 4, 1, 3, 5, 1, 2, 6),  # a cap above the steps changes nothing
        (10, 2, 1, 1, None, 4, 1, 1),  # 4 GPUs: ceil(10 / 4) = 3 records per rank, one batch of 2
        (3, 4, 1, 1, None, 1, 0, 0),  # fewer records than a batch: zero steps
    ],
)
def test_worked_examples(records, batch, ga, epochs, cap, world, per_epoch, total) -> None:
    p = plan(records, batch, ga, epochs, cap, world)
    assert (p.steps_per_epoch, p.total_steps) == (per_epoch, total)


@given(
    records=st.integers(0, 400),
    batch=st.integers(1, 16),
    ga=st.integers(1, 8),
    epochs=st.integers(1, 4),
    cap=st.one_of(st.none(), st.integers(1, 30)),
    world=st.integers(1, 16),
)
def test_the_plan_is_the_recipes_loop(records, batch, ga, epochs, cap, world) -> None:
    assert plan(records, batch, ga, epochs, cap, world).total_steps == replayed(records, batch, ga, epochs, cap, world)


def test_validation_passes_every_n_steps_and_at_epoch_ends_once() -> None:
    assert plan(11, batch=2, validating=True, val_every=2).validations == 2 + 1  # steps 2, 4, and the end (5)
    assert plan(8, batch=2, epochs=2, validating=True, val_every=2).validations == 4  # the ends are steps 4 and 8
    assert plan(8, batch=2, epochs=2, validating=True, val_every=None).validations == 2
    assert plan(8, batch=2).validations is None


def test_world_size_is_the_distributed_recipes_gpus() -> None:
    assert world_size("lora_finetune_single_device", 1, 1) == 1
    assert world_size("lora_finetune_distributed", 4, 1) == 4
    assert world_size("full_finetune_distributed", 4, 2) == 8


def test_plan_for_reads_setup_finetune_keys() -> None:
    setup = {
        "method": "lora",
        "gpus": 2,
        "nodes": 1,
        "batch_size": 2,
        "gradient_accumulation_steps": 1,
        "epochs": 1,
        "max_steps_per_epoch": None,
        "num_warmup_steps": 100,
        "log_every_n_steps": 5,
        "validation_during_training": False,
        "run_val_every_n_steps": 50,
    }
    p = plan_for(setup, 40)
    assert (p.world_size, p.steps_per_epoch, p.logged_steps) == (2, 10, 2)
    assert p.as_dict()["total_steps"] == 10 and "10 optimizer steps per epoch" in p.line()


@pytest.mark.parametrize(
    "p, words",
    [
        (plan(3, batch=4), "would train zero steps"),
        (plan(40, batch=4, warmup=100), "never reaches its lr"),
        (plan(40, batch=4, log=50), "never logged"),
        (plan(40, batch=4, validating=True, val_every=50), "only at epoch ends"),
    ],
    ids=["zero-steps", "warm-up-never-ends", "never-logged", "validation-interval"],
)
def test_a_wasteful_plan_is_warned_with_a_fix(p: StepPlan, words: str) -> None:
    (warning,) = [w for w in p.warnings() if words in w[0]]
    assert warning[1]


def test_a_sound_plan_has_no_warning() -> None:
    assert plan(400, batch=4, warmup=10, log=5, validating=True, val_every=20).warnings() == []


@pytest.mark.parametrize(
    "records, world, batch, accumulation", [(7, 2, 4, 1), (1, 1, 1, 1), (9, 3, 2, 2), (30, 4, 4, 2)]
)
def test_min_records_is_the_fewest_that_train_a_step(records, world, batch, accumulation) -> None:
    def at(n: int) -> StepPlan:
        return StepPlan(n, world, batch, accumulation, 1, None, 0, 1, False, None)

    least = at(records).min_records
    assert at(least).total_steps == 1 and at(least - 1).total_steps == 0
