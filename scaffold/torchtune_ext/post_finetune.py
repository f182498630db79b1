"""After a successful `tune run`: make each epoch directory what the evaluator needs.

The evaluator (inspect-ai's Hugging Face provider, `model_path` = an epoch directory) loads the tokenizer and the
chat template from the epoch directory: with `--dataset-type` this step edits those files so that the evaluator
feeds the model exactly the prompt tokens the run trained on (scaffold.torchtune_ext.eval_contract.prepare: the
BOS, the date, the base-model prompt form).

LoRA runs: make each epoch's adapter loadable where only local files are.

torchtune 0.6.1 writes `epoch_N/adapter_config.json` with `base_model_name_or_path` set to the Hugging Face Hub id
of the base model, which an offline compute node cannot resolve. This step points it at the local base model
directory (the run's `model_dir`). With `--merged` (a save of full merged weights beside the adapter:
`save_adapter_weights_only: false`), the adapter files of each epoch are first moved into
`epoch_N/adapter_weights/`, so PEFT's auto-detection of an adapter cannot shadow the merged weights.

The batch script runs it once, in the batch shell, after `tune run` exited 0:

    python -m scaffold.torchtune_ext.post_finetune --output-dir OUTPUT_DIR --model-dir MODEL_DIR \
        --method lora --dataset-type chat_completion --chat-template-date '26 Jul 2024' [--merged]

Standard library only (it runs in the training environment, and needs no torch). Exit status: 0 done, also when
an epoch has no adapter_config.json (a warning); 1 an adapter config or a tokenizer file could not be read or
written (or an epoch has no tokenizer_config.json), or the output directory does not exist; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from . import eval_contract

ADAPTER_CONFIG = "adapter_config.json"
# What PEFT reads as an adapter; moved aside on a merged save.
ADAPTER_FILES = (ADAPTER_CONFIG, "adapter_model.pt", "adapter_model.safetensors")
ADAPTER_SUBDIR = "adapter_weights"
BASE_KEY = "base_model_name_or_path"
_EPOCH = re.compile(r"epoch_(\d+)\Z")
_PREFIX = "scaffold-torchtune: post_finetune:"


def log(message: str) -> None:
    print(f"{_PREFIX} {message}", flush=True)


def warn(message: str) -> None:
    print(f"{_PREFIX} warning: {message}", file=sys.stderr, flush=True)


def error(message: str) -> None:
    print(f"{_PREFIX} error: {message}", file=sys.stderr, flush=True)


def epoch_dirs(output_dir: Path) -> list[Path]:
    """The `epoch_N` directories of a run's output directory, by N."""
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := _EPOCH.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def point_at_model_dir(config: Path, model_dir: str, label: str) -> None:
    """Set `base_model_name_or_path` of one adapter config to `model_dir`, keeping every other key and the order
    of the keys; log the old and the new value. Raises ValueError when the file is not a JSON object."""
    data = json.loads(config.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    old = data.get(BASE_KEY)
    if old == model_dir:
        log(f"{label}: {BASE_KEY} is already {model_dir!r}")
        return
    data[BASE_KEY] = model_dir  # an existing key keeps its place
    eval_contract.write_json_atomically(config, data)
    log(f"{label}: {BASE_KEY} {old!r} -> {model_dir!r}")


def move_adapter_aside(epoch: Path) -> list[str]:
    """Move the adapter files of one epoch into `epoch_N/adapter_weights/`; the names of the files moved."""
    present = [name for name in ADAPTER_FILES if (epoch / name).is_file()]
    if not present:
        return []
    target = epoch / ADAPTER_SUBDIR
    target.mkdir(exist_ok=True)
    for name in present:
        os.replace(epoch / name, target / name)
    return present


def post_finetune(
    output_dir: Path,
    model_dir: str,
    merged: bool = False,
    *,
    method: str = "lora",
    dataset_type: str | None = None,
    chat_template_date: str | None = None,
) -> int:
    """Prepare every epoch's tokenizer files for the evaluator (with `dataset_type`), then rewrite (and on a merged
    save, first move aside) its adapter (LoRA); the exit status."""
    if not output_dir.is_dir():
        error(f"the output directory {output_dir} does not exist")
        return 1
    if not Path(model_dir).is_dir():
        warn(f"the model directory {model_dir} is not a directory here; writing it anyway")
    epochs = epoch_dirs(output_dir)
    if not epochs:
        warn(f"no epoch_N directories in {output_dir}: nothing to do")
        return 0
    status = 0
    for epoch in epochs:
        if dataset_type is not None:
            try:
                for change in eval_contract.prepare(
                    epoch, dataset_type=dataset_type, chat_template_date=chat_template_date
                ):
                    log(f"{epoch.name}: {change}")
            except (OSError, ValueError) as e:
                error(f"{epoch.name}: the tokenizer files cannot be prepared for the evaluator: {e}")
                status = 1
        if method != "lora":
            continue
        try:
            if merged:
                moved = move_adapter_aside(epoch)
                if moved:
                    log(f"{epoch.name}: moved {', '.join(moved)} into {epoch.name}/{ADAPTER_SUBDIR}/")
                config = epoch / ADAPTER_SUBDIR / ADAPTER_CONFIG
            else:
                config = epoch / ADAPTER_CONFIG
            label = str(config.relative_to(output_dir))
            if not config.is_file():
                warn(f"{epoch.name} has no {ADAPTER_CONFIG} ({label}): left as it is")
                continue
            point_at_model_dir(config, model_dir, label)
        except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
            error(f"{epoch.name}: {e}")
            status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scaffold.torchtune_ext.post_finetune",
        description="Prepare each epoch's tokenizer files for the evaluator, and point each epoch's "
        "adapter_config.json at the local base model directory (for a merged save, move the adapter files into "
        "epoch_N/adapter_weights/ first).",
    )
    parser.add_argument("--output-dir", required=True, type=Path, help="the run's output_dir (holds epoch_N/)")
    parser.add_argument("--model-dir", required=True, help="the local base model directory (the run's model_dir)")
    parser.add_argument(
        "--merged",
        action="store_true",
        help="full merged weights were saved beside the adapter (save_adapter_weights_only: false)",
    )
    parser.add_argument("--method", choices=("lora", "full"), default="lora", help="lora: rewrite the adapters too")
    parser.add_argument(
        "--dataset-type",
        choices=("chat_completion", "text_completion"),
        help="the run's dataset_type: prepare each epoch's tokenizer files for the evaluator (without it, left as "
        "the checkpointer copied them)",
    )
    parser.add_argument("--chat-template-date", help="the run's chat_template_date (chat runs)")
    args = parser.parse_args(argv)
    return post_finetune(
        args.output_dir,
        args.model_dir,
        merged=args.merged,
        method=args.method,
        dataset_type=args.dataset_type,
        chat_template_date=args.chat_template_date,
    )


if __name__ == "__main__":
    sys.exit(main())
