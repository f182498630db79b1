"""Installed as `sitecustomize.py` (copied into a temporary directory on PYTHONPATH) in the evaluator's process:
records what the evaluator really feeds the model.

When SCAFFOLD_CAPTURE_FILE is set, transformers' `GenerationMixin.generate` is wrapped as soon as
`transformers.generation.utils` is imported (an import hook: nothing is imported here at start-up). Each call
appends, per row of the batch, one JSON line: the input ids with the left padding removed (by the attention mask),
the next-token logits at the last prompt position (one forward pass of the same model object on those ids alone)
and what the model object is (its class, whether a PEFT adapter is loaded into it). Then the real `generate` runs
unchanged. Standard library and what the evaluator has already imported only.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import sys
import threading

_TARGET = "transformers.generation.utils"
_PATH = os.environ.get("SCAFFOLD_CAPTURE_FILE")
_LOCK = threading.Lock()


def _record(model, input_ids, attention_mask) -> None:
    import torch

    rows = []
    with torch.no_grad():
        for i in range(input_ids.shape[0]):
            ids = input_ids[i]
            if attention_mask is not None:
                ids = ids[attention_mask[i].bool()]
            logits = model(input_ids=ids[None, :].to(model.device)).logits[0, -1].float().cpu()
            rows.append(
                {
                    "input_ids": [int(t) for t in ids.tolist()],
                    "next_token_logits": [float(x) for x in logits.tolist()],
                    "model_class": type(model).__name__,
                    "adapter_loaded": bool(getattr(model, "_hf_peft_config_loaded", False))
                    or hasattr(model, "peft_config"),
                    "name_or_path": getattr(getattr(model, "config", None), "_name_or_path", None),
                }
            )
    with _LOCK, open(_PATH, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _patch(module) -> None:
    original = module.GenerationMixin.generate

    def generate(self, *args, **kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            input_ids = kwargs.get("inputs")
        _record(self, input_ids, kwargs.get("attention_mask"))
        return original(self, *args, **kwargs)

    generate.__wrapped__ = original
    module.GenerationMixin.generate = generate


class _Loader(importlib.abc.Loader):
    def __init__(self, loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        _patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


if _PATH:
    sys.meta_path.insert(0, _Finder())
