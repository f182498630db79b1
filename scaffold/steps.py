"""Optimizer steps of a run, exactly as torchtune 0.6.1's recipes count them.

From the recipes' sources (`recipes/lora_finetune_single_device.py`, `lora_finetune_distributed.py`,
`full_finetune_distributed.py` of torchtune 0.6.1, `_setup_data` and `setup`):

- the sampler is a `StatefulDistributedSampler` over `world_size` replicas (1 for the single-device recipes; the
  data-parallel size, here every GPU of every node, for the distributed ones) without `drop_last`, so each rank
  draws `ceil(records / world_size)` records;
- the dataloader has `drop_last=True`: `ceil(records / world_size) // batch_size` batches per epoch;
- an optimizer step every `gradient_accumulation_steps` batches: `steps_per_epoch = batches //
  gradient_accumulation_steps`, capped by `max_steps_per_epoch` when that is set and smaller;
- the learning-rate schedule is built for `epochs * steps_per_epoch` steps (`num_training_steps`), with
  `num_warmup_steps` of linear warm-up;
- the loss is logged when `global_step % log_every_n_steps == 0`, and this project's validating recipe validates
  every `run_val_every_n_steps` steps and at each epoch's end.

The tests hold these numbers equal to the steps torchtune logs in real CPU runs
(tests/integration/test_steps_torchtune.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StepPlan:
    records: int  # training records (after any the audit drops)
    world_size: int
    batch_size: int
    gradient_accumulation_steps: int
    epochs: int
    max_steps_per_epoch: int | None
    num_warmup_steps: int
    log_every_n_steps: int
    validating: bool  # validation_during_training (this project's validating recipe)
    run_val_every_n_steps: int | None  # None while validating: at epoch ends only

    @property
    def records_per_rank(self) -> int:
        return -(-self.records // self.world_size)  # ceil

    @property
    def batches_per_epoch(self) -> int:
        return self.records_per_rank // self.batch_size

    @property
    def steps_per_epoch(self) -> int:
        steps = self.batches_per_epoch // self.gradient_accumulation_steps
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < steps:
            steps = self.max_steps_per_epoch
        return steps

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def records_per_step(self) -> int:
        return self.batch_size * self.gradient_accumulation_steps * self.world_size

    @property
    def min_records(self) -> int:
        """The fewest records that train one optimizer step: ceil(records / world size) must fill a step."""
        return self.world_size * (self.batch_size * self.gradient_accumulation_steps - 1) + 1

    @property
    def records_unused_per_epoch(self) -> int:
        """Records of each epoch no optimizer step sees (the partial batch and accumulation dropped, the cap)."""
        return max(0, self.records - self.steps_per_epoch * self.records_per_step)

    @property
    def logged_steps(self) -> int:
        return self.total_steps // self.log_every_n_steps

    @property
    def validations(self) -> int | None:
        """Validation passes of the validating recipe: every run_val_every_n_steps steps, and at each epoch's end
        unless that step was just validated; None without validation."""
        if not self.validating:
            return None
        every, per_epoch = self.run_val_every_n_steps, self.steps_per_epoch
        if not every:
            return self.epochs
        ends = sum(1 for e in range(1, self.epochs + 1) if (e * per_epoch) % every != 0 or per_epoch == 0)
        return self.total_steps // every + ends

    def as_dict(self) -> dict[str, Any]:
        return {
            "train_records": self.records,
            "world_size": self.world_size,
            "records_per_step": self.records_per_step,
            "batches_per_epoch": self.batches_per_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "num_warmup_steps": self.num_warmup_steps,
            "records_unused_per_epoch": self.records_unused_per_epoch,
            "logged_steps": self.logged_steps,
            "validations": self.validations,
        }

    def line(self) -> str:
        """One line for the log and the report."""
        cap = f", capped by max_steps_per_epoch {self.max_steps_per_epoch}" if self.max_steps_per_epoch else ""
        val = f", {self.validations} validation pass(es)" if self.validations is not None else ""
        return (
            f"steps: {self.records} train records / ({self.batch_size} per batch x {self.world_size} GPU(s)) = "
            f"{self.batches_per_epoch} batches per epoch, / {self.gradient_accumulation_steps} accumulation = "
            f"{self.steps_per_epoch} optimizer steps per epoch{cap}; {self.total_steps} in {self.epochs} epoch(s) "
            f"(warm-up {self.num_warmup_steps}, loss logged {self.logged_steps} time(s){val})"
        )

    def warnings(self) -> list[tuple[str, str]]:
        """(what is wrong, the fix) for a step plan that wastes the run."""
        out = []
        if self.total_steps == 0:
            out.append(
                (
                    f"the run would train zero steps: {self.records} train records give "
                    f"{self.batches_per_epoch} full batches per epoch (batch_size {self.batch_size} x "
                    f"{self.world_size} GPU(s); the last partial batch is dropped), fewer than "
                    f"gradient_accumulation_steps {self.gradient_accumulation_steps}",
                    "lower batch_size or gradient_accumulation_steps, or add training records",
                )
            )
            return out
        if self.total_steps < self.num_warmup_steps:
            out.append(
                (
                    f"the run takes {self.total_steps} optimizer steps, fewer than its num_warmup_steps "
                    f"{self.num_warmup_steps}: it trains entirely inside the learning-rate warm-up and never reaches "
                    "its lr",
                    f"lower num_warmup_steps (e.g. {max(1, self.total_steps // 10)}), or train longer",
                )
            )
        if self.logged_steps == 0:
            out.append(
                (
                    f"the loss is never logged: {self.total_steps} steps, log_every_n_steps {self.log_every_n_steps}",
                    f"lower log_every_n_steps to at most {self.total_steps}",
                )
            )
        if self.validating and self.run_val_every_n_steps and self.run_val_every_n_steps > self.steps_per_epoch:
            out.append(
                (
                    f"validation runs only at epoch ends: run_val_every_n_steps {self.run_val_every_n_steps} is "
                    f"more than the {self.steps_per_epoch} steps of an epoch",
                    f"lower run_val_every_n_steps to at most {self.steps_per_epoch}",
                )
            )
        return out


def world_size(recipe: str, gpus: int, nodes: int) -> int:
    """The data-parallel size the recipe's sampler splits the records over: 1 for a single-device recipe."""
    from .rules import TORCHRUN_RECIPES

    return max(1, gpus) * max(1, nodes) if recipe in TORCHRUN_RECIPES else 1


def plan_for(settings: dict[str, Any], train_records: int) -> StepPlan:
    """The step plan of a run's settings (setup_finetune.yaml's keys) over `train_records` records."""
    from .rules import recipe_for

    validating = bool(settings.get("validation_during_training"))
    return StepPlan(
        records=train_records,
        world_size=world_size(recipe_for(settings), int(settings.get("gpus") or 1), int(settings.get("nodes") or 1)),
        batch_size=int(settings["batch_size"]),
        gradient_accumulation_steps=int(settings["gradient_accumulation_steps"]),
        epochs=int(settings["epochs"]),
        max_steps_per_epoch=settings.get("max_steps_per_epoch"),
        num_warmup_steps=int(settings.get("num_warmup_steps") or 0),
        log_every_n_steps=int(settings.get("log_every_n_steps") or 1),
        validating=validating,
        run_val_every_n_steps=settings.get("run_val_every_n_steps"),
    )
