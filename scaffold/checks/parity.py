"""Train/eval parity: a run trains on exactly the tokens the evaluation step will feed the model.

The evaluation step (inspect-ai's Hugging Face provider) reads `prompt` and `system_prompt` from the run's
setup_finetune.yaml and formats each sample with the model directory's Hugging Face tokenizer: chat models
through `apply_chat_template`, base models as plain text. These checks build the first records of the run's
training set the way the recipe builds them (the `dataset` section of finetune.yaml, through its
`_component_`) and compare them, tokens and mask, with what that tokenizer gives for the same records, worked
out here from setup_finetune.yaml alone (an oracle independent of the builder's own code).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

from ..errors import Problem
from ..plan import FINETUNE_FILE
from ..render import DATASET_BUILDERS

# token_ids only unwraps what the tokenizer returns (transformers 4 and 5 differ); the oracle below builds its
# conversation and mask itself, apart from the builder's code.
from ..torchtune_ext.datasets import token_ids
from . import FINE_TUNED, check
from .context import RunContext
from .dataset import dataset_file, load_dataset
from .findings import NotApplicable

RECORDS = 3  # records compared per run: the template and the mask do not vary by record, the text does
IGNORE = -100
REGEN = "regenerate with `scaffold generate` (or re-render the run with `scaffold setup-finetune`)"


def _tokenizer(run: RunContext) -> Any:
    """The model's Hugging Face tokenizer, loaded once per model directory; NotApplicable where transformers or
    the tokenizer files are not here."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise NotApplicable(
            "transformers is not installed here: the train/eval parity check needs it, as does training "
            "(pip install 'transformers>=4.45' in the training environment and run the suite there)"
        ) from None
    from ..torchtune_ext.datasets import load_tokenizer

    model_dir = run.to_local(run.expected().setup["model_dir"])
    memo = run.session.memo
    key = ("hf_tokenizer", str(model_dir))
    if key not in memo:
        if not (model_dir / "tokenizer_config.json").is_file():
            memo[key] = NotApplicable(f"the model's tokenizer files are not here ({model_dir}/tokenizer_config.json)")
        else:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                memo[key] = load_tokenizer(model_dir)
            except Exception as e:  # a broken tokenizer directory: reported, never a traceback
                memo[key] = e
    value = memo[key]
    if isinstance(value, NotApplicable):
        raise value
    return value


def expected_example(setup: dict, tokenizer: Any, record: dict) -> tuple[list[int], list[int]]:
    """(tokens, labels) of one record as the evaluation step sees it, from setup_finetune.yaml's settings."""
    user = setup["prompt"].format(**record)
    if setup["dataset_type"] == "chat_completion":
        messages = ([{"role": "system", "content": setup["system_prompt"]}] if setup.get("system_prompt") else []) + [
            {"role": "user", "content": user}
        ]
        kwargs = {"date_string": setup["chat_template_date"]}
        prompt = token_ids(tokenizer.apply_chat_template(messages, add_generation_prompt=True, **kwargs))
        tokens = token_ids(
            tokenizer.apply_chat_template(
                messages + [{"role": "assistant", "content": str(record["output"])}], **kwargs
            )
        )
    else:
        prompt = token_ids(tokenizer(user)["input_ids"])  # as the evaluation step encodes a prompt
        tokens = prompt + token_ids(tokenizer(str(record["output"]), add_special_tokens=False)["input_ids"])
    labels = list(tokens) if setup.get("train_on_input") else [IGNORE] * len(prompt) + tokens[len(prompt) :]
    limit = setup.get("max_seq_len")
    return (tokens[:limit], labels[:limit]) if limit else (tokens, labels)


def _first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _show(tokenizer: Any, ids: list[int], at: int) -> str:
    return repr(tokenizer.decode([t for t in ids[max(0, at - 4) : at + 6] if t != IGNORE]))


@check("train_eval_parity", scope=FINE_TUNED, file=FINETUNE_FILE)
def trains_on_the_evaluated_tokens(run: RunContext) -> Iterator[Problem]:
    """The dataset is built by this project's builder for the run's dataset_type, and its first records (tokens
    and masked prompt part) equal what the model's own Hugging Face tokenizer gives for the prompt and system
    prompt of setup_finetune.yaml, which the evaluation step reads (chat runs: `apply_chat_template`; needs
    `transformers` and the model's tokenizer files, else skipped with the reason)."""
    setup = run.expected().setup
    cfg = run.config().data
    section = cfg.get("dataset") if isinstance(cfg.get("dataset"), dict) else {}
    want_builder = DATASET_BUILDERS[setup["dataset_type"]]
    if section.get("_component_") != want_builder:
        yield run.problem(
            "the dataset builder does not tokenize with the model's own tokenizer, so the run would train on other "
            "tokens than it is evaluated on",
            key="dataset._component_",
            expected=want_builder,
            found=section.get("_component_"),
            fix=REGEN,
        )
        return
    tokenizer = _tokenizer(run)
    if isinstance(tokenizer, Exception):
        yield run.problem(
            f"the model's Hugging Face tokenizer does not load: {tokenizer}",
            key="dataset.model_path",
            fix="download the model's tokenizer files again",
        )
        return
    if setup["dataset_type"] == "chat_completion" and not getattr(tokenizer, "chat_template", None):
        yield run.problem(
            "the model's tokenizer has no chat template: the evaluation step formats prompts with it",
            key="dataset.model_path",
            fix="use the instruct model's directory, or dataset_type: text_completion for a base model",
        )
        return
    _, local_data = dataset_file(run)
    records = load_dataset(local_data)
    records = records.get("train", []) if isinstance(records, dict) else []
    if not records:
        raise NotApplicable(f"no train records in {local_data} (dataset_splits reports it)")

    # The builder, called as the recipe's config.instantiate calls it, on this machine's paths.
    module, _, name = want_builder.rpartition(".")
    builder = getattr(importlib.import_module(module), name)
    args = {k: v for k, v in section.items() if k != "_component_"}
    args.update(data_files=str(local_data), model_path=str(run.to_local(args.get("model_path", ""))), packed=False)
    max_seq_len = (cfg.get("tokenizer") or {}).get("max_seq_len")
    try:
        dataset = builder(SimpleNamespace(max_seq_len=max_seq_len), **args)
        built = [dataset[i] for i in range(min(RECORDS, len(dataset)))]
    except Exception as e:  # a record the builder refuses (e.g. a prompt part that is not a prefix)
        yield run.problem(f"the dataset builder fails: {e}", key="dataset", fix="fix the prompt or the dataset")
        return
    for i, example in enumerate(built):
        tokens, labels = expected_example(setup, tokenizer, records[i])
        for what, got, want in (("tokens", example["tokens"], tokens), ("labels", example["labels"], labels)):
            if list(got) != want:
                at = _first_difference(list(got), want)
                yield run.problem(
                    f"train record {i}: the {what} differ from what the evaluation step's tokenizer gives, from "
                    f"position {at} (built {_show(tokenizer, list(got), at)}, evaluated "
                    f"{_show(tokenizer, want, at)})"
                    + (": the prompt part must be masked (-100)" if what == "labels" else ""),
                    key="dataset",
                    expected=f"{len(want)} {what}",
                    found=f"{len(got)} {what}",
                    fix=REGEN,
                )
                return
