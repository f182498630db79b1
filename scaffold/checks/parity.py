"""Train/eval parity: a run trains on exactly the tokens its evaluator will feed the model.

The evaluator (cruijff_kit's evaluation step: inspect-ai's Hugging Face provider with `model_path` = the run's
epoch directory) loads its tokenizer and chat template from that directory, as the post-training step leaves it
(scaffold.torchtune_ext.eval_contract). This check builds the first records of the run's training set the way the
recipe builds them (the `dataset` section of finetune.yaml, through its `_component_`, with the model directory's
tokenizer) and compares them with what the evaluator feeds the model for the same records
(scaffold.torchtune_ext.evaluator: inspect-ai's own rendering where it is importable, else its reimplementation), from
the evaluator's tokenizer: the real epoch directory once the run has trained, else a copy of the model
directory's tokenizer files prepared by the post step's own code. The prompt part must be the evaluator's ids,
masked unless train_on_input; the answer part must be the conversation's remaining tokens (chat) or the output's
plain encoding (base models).

Runs that share the dataset section, the data file, the model directory and the evaluator's settings share one
result, and each tokenizer directory is loaded once per verification.
"""

from __future__ import annotations

import functools
import importlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..engine import check
from ..engine.context import RunContext
from ..engine.findings import NotApplicable
from ..errors import Problem
from ..layout import FINE_TUNED, FINETUNE_FILE
from ..render import DATASET_BUILDERS
from ..stamps import stamp
from ..torchtune_ext import eval_contract
from ..torchtune_ext.datasets import CROSS_ENTROPY_IGNORE_IDX, prompt_length, token_ids, tokenizer_stamp
from .dataset import dataset_file, load_dataset

RECORDS = 3  # records compared per run: the template and the mask do not vary by record, the text does
IGNORE = CROSS_ENTROPY_IGNORE_IDX
REGEN = "regenerate with `scaffold generate` (or re-render the run with `scaffold setup-finetune`)"


@functools.cache
def _transformers_installed() -> bool:
    """Whether transformers can be imported here, looked up once a process (the token audit asks for every run)."""
    import importlib.util

    return importlib.util.find_spec("transformers") is not None


def need_transformers(check: str, *, look_only: bool = False) -> None:
    """NotApplicable where transformers is not importable: the checks that build a run's data with its own dataset
    builder (which tokenizes with it) need it, as training does. `look_only`: looked up, not imported (the import
    takes a second, which the token audit spends in a worker process: scaffold.torchtune_ext.audit)."""
    try:
        if look_only:
            if not _transformers_installed():
                raise ImportError("transformers")
        else:
            import transformers  # noqa: F401
    except ImportError:
        raise NotApplicable(
            f"transformers is not installed here: {check} needs it, as does training "
            "(pip install 'transformers>=4.45' in the training environment and run the suite there)"
        ) from None


def _trained_epoch(run: RunContext, setup: dict) -> Path | None:
    """The last epoch directory of the run's output with tokenizer files, when the run has trained here."""
    try:
        output = run.to_local(setup["output_dir"])
        epochs = sorted(
            (int(p.name[6:]), p)
            for p in output.glob("epoch_*")
            if p.name[6:].isdigit() and (p / "tokenizer_config.json").is_file()
        )
    except OSError:
        return None
    return epochs[-1][1] if epochs else None


def _evaluator_tokenizer(run: RunContext, setup: dict, model_dir: Path) -> tuple[Any, str]:
    """(the tokenizer the evaluator loads, where it comes from): the trained epoch directory, else a copy of the
    model directory's tokenizer files prepared by the post step's code; loaded once per directory and settings.
    An exception in place of the tokenizer when it cannot be made or loaded."""
    from ..torchtune_ext import evaluator

    epoch = _trained_epoch(run, setup)
    date = setup.get("chat_template_date") if setup["dataset_type"] == "chat_completion" else None
    source = epoch if epoch is not None else model_dir
    key = ("evaluator_tokenizer", str(source), epoch is None, setup["dataset_type"], date, tokenizer_stamp(source))
    memo = run.memo
    if key not in memo:
        if epoch is not None:
            where = f"the trained epoch directory {epoch}"
            try:
                memo[key] = (evaluator.load(epoch), where)
            except Exception as e:  # a broken tokenizer directory: reported, never a traceback
                memo[key] = (e, where)
        else:
            where = f"{model_dir}'s tokenizer files as the post-training step prepares them"
            target = Path(tempfile.mkdtemp(prefix="scaffold-evaluator-"))
            try:
                eval_contract.copy_tokenizer_files(model_dir, target)
                eval_contract.prepare(target, dataset_type=setup["dataset_type"], chat_template_date=date)
                memo[key] = (evaluator.load(target), where)
            except Exception as e:
                memo[key] = (e, where)
            finally:
                shutil.rmtree(target, ignore_errors=True)
    return memo[key]


def _model_tokenizer_problem(model_dir: Path) -> None:
    if not (model_dir / "tokenizer_config.json").is_file():
        raise NotApplicable(f"the model's tokenizer files are not here ({model_dir}/tokenizer_config.json)")


def _first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _show(tokenizer: Any, ids: list[int], at: int) -> str:
    return repr(tokenizer.decode([t for t in ids[max(0, at - 4) : at + 6] if t != IGNORE]))


def expected_example(setup: dict, tokenizer: Any, record: dict) -> tuple[list[int], int, str]:
    """(tokens, prompt length, which code rendered the prompt) of one record as the evaluator sees it: the prompt
    part is what it feeds the model; the answer part follows (chat: the rest of the conversation with the answer,
    rendered the same way; base models: the output's plain encoding)."""
    from ..torchtune_ext import evaluator

    user = setup["prompt"].format(**record)
    messages = eval_contract.messages(setup["dataset_type"], setup.get("system_prompt"), user)
    prompt, how = evaluator.prompt_ids(tokenizer, messages)
    answer = str(record["output"])
    if setup["dataset_type"] == "chat_completion":
        whole = evaluator.encode(
            tokenizer,
            evaluator.render(tokenizer, [*messages, {"role": "assistant", "content": answer}], False),
        )
        tokens = prompt + whole[len(prompt) :] if whole[: len(prompt)] == prompt else whole
    else:
        tokens = prompt + token_ids(tokenizer(answer, add_special_tokens=False)["input_ids"])
    return tokens, len(prompt), how


def _parity_findings(run: RunContext, setup: dict, section: dict, max_seq_len: Any) -> list[dict]:
    """The check's findings for one run, as run.problem keywords (shared by runs with the same inputs)."""
    model_dir = run.to_local(setup["model_dir"])
    tokenizer, where = _evaluator_tokenizer(run, setup, model_dir)
    if isinstance(tokenizer, Exception):
        return [
            dict(
                message=f"the tokenizer the evaluator loads ({where}) cannot be made or loaded: {tokenizer}",
                key="dataset.model_path",
                fix="check the model directory's tokenizer files (tokenizer_config.json, tokenizer.json)",
            )
        ]
    if setup["dataset_type"] == "chat_completion" and not getattr(tokenizer, "chat_template", None):
        return [
            dict(
                message="the model's tokenizer has no chat template: the evaluation step formats prompts with it",
                key="dataset.model_path",
                fix="use the instruct model's directory, or dataset_type: text_completion for a base model",
            )
        ]
    _, local_data = dataset_file(run)
    records = load_dataset(local_data)
    records = records.get("train", []) if isinstance(records, dict) else []
    if not records:
        raise NotApplicable(f"no train records in {local_data} (dataset_splits reports it)")

    # The builder, called as the recipe's config.instantiate calls it, on this machine's paths.
    module, _, name = section["_component_"].rpartition(".")
    builder = getattr(importlib.import_module(module), name)
    args = {k: v for k, v in section.items() if k != "_component_"}
    args.update(data_files=str(local_data), model_path=str(model_dir), packed=False)
    try:
        dataset = builder(SimpleNamespace(max_seq_len=max_seq_len), **args)
        built = [dataset[i] for i in range(min(RECORDS, len(dataset)))]
    except Exception as e:  # a record the builder refuses (e.g. a prompt part that is not a prefix)
        return [dict(message=f"the dataset builder fails: {e}", key="dataset", fix="fix the prompt or the dataset")]
    limit = setup.get("max_seq_len")
    for i, example in enumerate(built):
        tokens, prompt_len, how = expected_example(setup, tokenizer, records[i])
        labels = list(tokens) if setup.get("train_on_input") else [IGNORE] * prompt_len + tokens[prompt_len:]
        if limit:
            tokens, labels = tokens[:limit], labels[:limit]
        got_tokens, got_labels = list(example["tokens"]), list(example["labels"])
        if got_tokens[:prompt_len] != tokens[:prompt_len]:
            at = _first_difference(got_tokens, tokens)
            return [
                dict(
                    message=f"train record {i}: the prompt part differs from what the evaluator feeds the model "
                    f"({how}, with {where}), from position {at} (trained {_show(tokenizer, got_tokens, at)}, "
                    f"evaluator {_show(tokenizer, tokens, at)})",
                    key="dataset",
                    expected=f"the evaluator's {min(prompt_len, len(tokens))} prompt tokens",
                    found=f"{prompt_length(got_labels)} prompt tokens trained"
                    if not setup.get("train_on_input")
                    else f"{len(got_tokens)} tokens trained",
                    fix=REGEN,
                )
            ]
        for what, got, want in (("tokens", got_tokens, tokens), ("labels", got_labels, labels)):
            if got != want:
                at = _first_difference(got, want)
                return [
                    dict(
                        message=f"train record {i}: the {what} differ from the evaluator's conversation from "
                        f"position {at} (trained {_show(tokenizer, got, at)}, evaluator {_show(tokenizer, want, at)})"
                        + (": the prompt part must be masked (-100), the answer trained" if what == "labels" else ""),
                        key="dataset",
                        expected=f"{len(want)} {what}",
                        found=f"{len(got)} {what}",
                        fix=REGEN,
                    )
                ]
    return []


@check("train_eval_parity", scope=FINE_TUNED, file=FINETUNE_FILE)
def trains_on_the_evaluated_tokens(run: RunContext) -> Iterator[Problem]:
    """The dataset is built by this project's builder for the run's dataset_type, and its first records equal what
    the evaluator (inspect-ai's Hugging Face provider, as cruijff_kit runs it) feeds the model for the prompt and
    system prompt of setup_finetune.yaml: the prompt part is the ids the evaluator computes, from the tokenizer it
    loads (the epoch directory as the post-training step leaves it), masked; the answer follows (needs
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
    need_transformers("the train/eval parity check")
    model_dir = run.to_local(setup["model_dir"])
    _model_tokenizer_problem(model_dir)
    max_seq_len = (cfg.get("tokenizer") or {}).get("max_seq_len")
    _, local_data = dataset_file(run)
    evaluated = {k: setup.get(k) for k in ("prompt", "system_prompt", "dataset_type", "chat_template_date")}
    evaluated.update(train_on_input=setup.get("train_on_input"), max_seq_len=setup.get("max_seq_len"))
    key = (
        "train_eval_parity",
        json.dumps(section, sort_keys=True, default=str),
        json.dumps(evaluated, sort_keys=True, default=str),
        max_seq_len,
        str(model_dir),
        tokenizer_stamp(model_dir),
        str(local_data),
        stamp(local_data),
        str(_trained_epoch(run, setup)),
    )
    memo = run.memo
    if key not in memo:
        try:
            memo[key] = _parity_findings(run, setup, section, max_seq_len)
        except NotApplicable as e:
            memo[key] = e
    found = memo[key]
    if isinstance(found, NotApplicable):
        raise found
    for kwargs in found:
        yield run.problem(**kwargs)
