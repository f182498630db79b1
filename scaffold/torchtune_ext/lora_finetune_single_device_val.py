"""torchtune 0.6.1's ``lora_finetune_single_device`` recipe plus a validation loss.

The stock recipe trains and checkpoints unchanged; this subclass adds a pass over ``dataset_val`` (no
grad, ``model.eval()``) every ``run_val_every_n_steps`` optimizer steps and at the end of every epoch,
and logs the token-weighted mean loss as ``val_loss`` through the configured metric logger.

Extra top-level config keys (``REQUIRED_EXTRA_KEYS``, ``OPTIONAL_EXTRA_KEYS``)::

    dataset_val:             # required: a dataset component, e.g. instruct_dataset with field: validation
    run_val_every_n_steps: 1 # required: int > 0, or null for end-of-epoch validation only
    batch_size_val: 4        # optional: defaults to batch_size

Run it as a module (the package must be importable in the training environment)::

    python -m scaffold.torchtune_ext.lora_finetune_single_device_val --config finetune.yaml
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import torch
import torchtune
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from torchtune import config, utils

log = utils.get_logger("DEBUG")

# Top-level keys this recipe reads beyond the stock recipe's (batch_size_val defaults to batch_size).
REQUIRED_EXTRA_KEYS: tuple[str, ...] = ("dataset_val", "run_val_every_n_steps")
OPTIONAL_EXTRA_KEYS: tuple[str, ...] = ("batch_size_val",)
_DEFAULT_COLLATE = "torchtune.data.padded_collate_sft"  # the stock recipe's default for `collate_fn`


def _load_stock_recipe_module() -> ModuleType:
    """Load the installed stock recipe file by path.

    The torchtune wheel installs its recipes as a top-level ``recipes`` package whose ``__init__``
    raises on import, so ``import recipes.lora_finetune_single_device`` fails; ``tune run`` itself
    finds the file next to the ``torchtune`` package, and so does this.
    """
    name = "_torchtune_stock_lora_finetune_single_device"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(torchtune.__file__).resolve().parent.parent / "recipes" / "lora_finetune_single_device.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"torchtune's stock recipe not found at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# At import time because the class below subclasses it.
_stock = _load_stock_recipe_module()


class LoRAFinetuneRecipeSingleDeviceVal(_stock.LoRAFinetuneRecipeSingleDevice):
    """The stock single-device LoRA recipe with periodic and end-of-epoch validation loss."""

    def __init__(self, cfg: DictConfig) -> None:
        # Set before super().__init__, which assigns self.global_step (a property here).
        self._in_training = False
        self._last_val_step: int | None = None
        # Read required keys now so a config without them fails before any weight is loaded.
        if cfg.get("dataset_val") is None:
            raise ValueError("config key `dataset_val` (a dataset component) is required by this recipe")
        every = cfg.run_val_every_n_steps
        if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every < 1):
            raise ValueError(f"run_val_every_n_steps must be a positive integer or null, got {every!r}")
        self._val_every_n_steps: int | None = every
        super().__init__(cfg)

    # The stock train() increments self.global_step exactly once per optimizer step, right after
    # optimizer.step() and zero_grad(); hooking that assignment adds validation without copying train().
    @property
    def global_step(self) -> int:
        return self.__dict__.get("_global_step", 0)

    @global_step.setter
    def global_step(self, value: int) -> None:
        previous = self.__dict__.get("_global_step", 0)
        self.__dict__["_global_step"] = value
        every = self._val_every_n_steps
        if self._in_training and value == previous + 1 and every is not None and value % every == 0:
            self.validate()

    def setup(self, cfg: DictConfig) -> None:
        """Stock setup, then the validation dataloader."""
        super().setup(cfg)
        batch_size_val = cfg.get("batch_size_val", None) or cfg.batch_size
        # Reuse the stock dataset and collate setup, but keep the last partial batch: a validation split
        # smaller than the batch would otherwise give no batch at all.
        stock_loader = self._setup_data(
            cfg_dataset=cfg.dataset_val,
            shuffle=False,
            batch_size=batch_size_val,
            collate_fn=cfg.get("collate_fn", _DEFAULT_COLLATE),
        )
        self._val_dataloader = DataLoader(
            stock_loader.dataset,
            batch_size=batch_size_val,
            shuffle=False,
            collate_fn=stock_loader.collate_fn,
            drop_last=False,
        )
        # _loss_step pads labels from a cache sized by the training batch size.
        if batch_size_val > self.ignore_labels_cache.shape[0]:
            self.ignore_labels_cache = torch.full((batch_size_val, 1), self._loss_fn.ignore_index, device=self._device)
        log.info(f"Validation dataset has {len(stock_loader.dataset)} samples, batch size {batch_size_val}.")

    def train(self) -> None:
        """Stock training loop; validation runs from the ``global_step`` and ``save_checkpoint`` hooks."""
        self._in_training = True
        try:
            super().train()
        finally:
            self._in_training = False

    def save_checkpoint(self, epoch: int) -> None:
        """Validate at the end of the epoch (unless this step was just validated), then checkpoint."""
        if self._last_val_step != self.global_step:
            self.validate()
        super().save_checkpoint(epoch=epoch)

    def validate(self) -> float:
        """Log and return the mean loss per unmasked token over ``dataset_val``."""
        total_loss, total_tokens = 0.0, 0
        self._model.eval()
        try:
            with torch.no_grad():
                for batch in self._val_dataloader:
                    utils.batch_to_device(batch, self._device)
                    num_tokens = int((batch["labels"] != self._loss_fn.ignore_index).sum())
                    if num_tokens == 0:
                        continue
                    # _loss_step returns the mean over unmasked tokens; weight it like the train loss.
                    total_loss += float(self._loss_step(batch)) * num_tokens
                    total_tokens += num_tokens
        finally:
            self._model.train()
        val_loss = total_loss / total_tokens if total_tokens else math.nan
        self._last_val_step = self.global_step
        self._metric_logger.log_dict({"val_loss": val_loss}, step=self.global_step)
        log.info(f"Step {self.global_step}: val_loss {val_loss:.6f} over {total_tokens} tokens")
        return val_loss


@config.parse
def recipe_main(cfg: DictConfig) -> None:
    """Entry point: ``--config FILE`` plus ``key=value`` overrides, as for every torchtune recipe."""
    config.log_config(recipe_name="LoRAFinetuneRecipeSingleDeviceVal", cfg=cfg)
    recipe = LoRAFinetuneRecipeSingleDeviceVal(cfg=cfg)
    recipe.setup(cfg=cfg)
    recipe.train()
    recipe.cleanup()


if __name__ == "__main__":
    sys.exit(recipe_main())
