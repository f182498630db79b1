"""Dataset builders that train on exactly the tokens the evaluation step will see.

The fine-tuned models are evaluated by inspect-ai's Hugging Face provider, which formats every sample with the
model's own Hugging Face tokenizer: chat models through the chat template of the model directory
(`apply_chat_template`), base models as plain text. torchtune's own formatting differs (its prompt template
strips the whitespace around `{input}`, and it places headers, the Llama 3 date block, Qwen's default system
prompt, BOS and EOS differently), so these builders tokenize each record with the model directory's Hugging
Face tokenizer instead:

- `chat_template_dataset` (dataset_type chat_completion): the conversation is `[system (always, an empty
  system prompt too, as the evaluator sends it), user: prompt.format(**record)]`; the prompt part is
  `apply_chat_template(conversation, add_generation_prompt=True)`, the tokens are the same conversation with
  the assistant's `output`, and the prompt part must be a prefix of them (else the record fails, naming it).
- `prompt_completion_text_dataset` (dataset_type text_completion): the prompt part is the tokenizer's plain
  encoding of `prompt.format(**record)` (with the special tokens it adds itself, e.g. Llama's BOS), followed
  by the encoding of `output` alone.

What the evaluator feeds the model equals the prompt part because the post-training step prepares each epoch
directory's tokenizer files for it (scaffold.torchtune_ext.eval_contract): the builders keep the model's own
format (one BOS, the fixed date) and never imitate the evaluator's quirks.

The prompt part is masked (label -100) unless `train_on_input`. Both read the original JSON file
(`{"train": [...], "validation": [...], ...}`; `field` picks the split) and return `{"tokens", "labels"}`
per record, cut to `max_seq_len` on the right, as torchtune's SFT datasets do. Nothing here imports torch or
torchtune (`packed: true` imports torchtune's PackedDataset), so the verification suite builds a run's dataset
with the same code wherever `transformers` is installed.

Config use::

    dataset:
      _component_: scaffold.torchtune_ext.datasets.chat_template_dataset
      source: json
      data_files: /data/capitalization/words.json
      field: train
      model_path: /models/Llama-3.2-1B-Instruct       # its tokenizer files and chat template
      prompt: "Capitalize the given word: {input}\\n"
      system_prompt: You are a helpful assistant.
      chat_template_kwargs: {date_string: 26 Jul 2024}  # the date Llama 3.x templates write
      train_on_input: false
      packed: false
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CROSS_ENTROPY_IGNORE_IDX = -100  # torchtune's CROSS_ENTROPY_IGNORE_IDX (the loss skips these labels)
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # newer transformers save the template beside tokenizer_config.json


class ParityError(ValueError):
    """A record cannot be trained on the tokens the evaluation step will see."""


def load_records(data_files: str | Sequence[str], field: str | None) -> list[dict[str, Any]]:
    """The records of one split: `data[field]` of each JSON file (or the whole file when it is a list), or the
    lines of a JSON Lines file."""
    files = [data_files] if isinstance(data_files, str | os.PathLike) else list(data_files)
    records: list[dict[str, Any]] = []
    for file in files:
        path = Path(file)
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            data: Any = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
        if isinstance(data, dict):
            if field is None or field not in data:
                raise ValueError(f"{path}: no split {field!r} (the file has {sorted(data)})")
            data = data[field]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValueError(f"{path}: split {field!r} is not a list of records")
        records += data
    return records


# The files a model directory's Hugging Face tokenizer is read from: what caches of a loaded tokenizer are keyed by.
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", CHAT_TEMPLATE_FILE, "vocab.json", "tokenizer.model")


def tokenizer_stamp(model_path: str | os.PathLike) -> tuple:
    """The stamps of a model directory's tokenizer files (scaffold.stamps): changes when any of them does."""
    from ..stamps import stamp

    directory = os.fspath(model_path)  # joined as strings: asked for every run of a sweep
    return tuple(stamp(os.path.join(directory, name)) for name in TOKENIZER_FILES)


def prompt_length(labels: Sequence[int]) -> int:
    """How many leading labels are masked: the prompt part of a record built with the prompt masked."""
    return next((i for i, label in enumerate(labels) if label != CROSS_ENTROPY_IGNORE_IDX), len(labels))


def load_tokenizer(model_path: str | os.PathLike) -> Any:
    """The model directory's Hugging Face tokenizer, from local files only (compute nodes have no network); loaded
    once per directory and process while its tokenizer files are unchanged (a real Llama 3 tokenizer takes about
    half a second, and a verification builds the datasets of many runs that share a model). The builders only
    read it."""
    key = (str(model_path), tokenizer_stamp(model_path))
    if key not in _LOADED:
        if len(_LOADED) >= 8:  # bounded: a long-lived process sees few model directories at a time
            _LOADED.clear()
        _LOADED[key] = _load_tokenizer(model_path)
    return _LOADED[key]


_LOADED: dict[tuple, Any] = {}


def _load_tokenizer(model_path: str | os.PathLike) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the dataset builders of scaffold-torchtune tokenize with the model's Hugging Face tokenizer: install "
            "`transformers` in the training environment (pip install 'transformers>=4.45')"
        ) from e
    return AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)


def fill_prompt(prompt: str, record: Mapping[str, Any]) -> str:
    """The user text of one record, filled as the evaluation step fills it: `prompt.format(**record)`, every
    character of the prompt kept (no whitespace is stripped)."""
    return prompt.format(**record)


def conversation(prompt: str, system_prompt: str | None, record: Mapping[str, Any]) -> list[dict[str, str]]:
    """The messages of one chat record before the answer: the system turn, always (an empty system prompt too: the
    evaluator sends one, and Qwen's template writes its own default system prompt where there is none), then the
    user's filled prompt."""
    return [
        {"role": "system", "content": system_prompt or ""},
        {"role": "user", "content": fill_prompt(prompt, record)},
    ]


def token_ids(encoded: Any) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True) even with return_dict=False
    # in some versions; 4.x returns a list.
    if hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return list(encoded)


def require_chat_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ParityError(
            f"the tokenizer of {getattr(tokenizer, 'name_or_path', '?')} has no chat template (tokenizer_config.json "
            f"`chat_template` or {CHAT_TEMPLATE_FILE}): a chat_completion run needs the template the model is "
            "evaluated with (fix: use the instruct model's directory, or dataset_type: text_completion)"
        )


def chat_tokens(
    tokenizer: Any,
    messages: list[dict[str, str]],
    answer: str,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> tuple[list[int], int]:
    """(tokens of the whole conversation with the answer, length of the prompt part)."""
    require_chat_template(tokenizer)
    kwargs = dict(chat_template_kwargs or {})
    prompt = token_ids(
        tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False, **kwargs)
    )
    full = token_ids(
        tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": answer}],
            tokenize=True,
            add_generation_prompt=False,
            return_dict=False,
            **kwargs,
        )
    )
    if full[: len(prompt)] != prompt:
        at = next(i for i, (a, b) in enumerate(zip(prompt, full, strict=False)) if a != b) if full else 0
        raise ParityError(
            "the chat template's prompt part is not a prefix of the whole conversation (token "
            f"{at}: {tokenizer.decode(prompt[at : at + 8])!r} vs {tokenizer.decode(full[at : at + 8])!r}), so the "
            "answer cannot be separated from the prompt the model is evaluated on"
        )
    return full, len(prompt)


def text_tokens(tokenizer: Any, prompt_text: str, answer: str, add_eos: bool = False) -> tuple[list[int], int]:
    """(tokens of prompt + answer, length of the prompt part): the prompt encoded as the evaluation step
    encodes it (with the special tokens the tokenizer adds, e.g. Llama's BOS), then the answer alone."""
    prompt = token_ids(tokenizer(prompt_text)["input_ids"])
    answer_ids = token_ids(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if add_eos and tokenizer.eos_token_id is not None:
        answer_ids.append(tokenizer.eos_token_id)
    return prompt + answer_ids, len(prompt)


def labelled(tokens: list[int], prompt_len: int, train_on_input: bool, max_seq_len: int | None) -> dict[str, list[int]]:
    """Tokens and labels (the prompt part masked unless train_on_input), cut to max_seq_len on the right."""
    labels = list(tokens) if train_on_input else [CROSS_ENTROPY_IGNORE_IDX] * prompt_len + tokens[prompt_len:]
    if max_seq_len is not None:
        tokens, labels = tokens[:max_seq_len], labels[:max_seq_len]
    return {"tokens": list(tokens), "labels": labels}


class _RecordDataset:
    """A map-style dataset (what torchtune's recipes and samplers need: len and indexing) over JSON records,
    tokenized lazily, one record at a time."""

    def __init__(
        self,
        *,
        source: str,
        data_files: str | Sequence[str],
        field: str | None,
        model_path: str,
        prompt: str,
        train_on_input: bool,
        max_seq_len: int | None,
    ) -> None:
        if source != "json":
            raise ValueError(f"source must be 'json' (the original's dataset files), not {source!r}")
        self._records = load_records(data_files, field)
        self._tokenizer = load_tokenizer(model_path)
        self._prompt = prompt
        self._train_on_input = train_on_input
        self._max_seq_len = max_seq_len
        missing = [i for i, r in enumerate(self._records) if "output" not in r]
        if missing:
            raise ValueError(f"records {missing[:5]} of {data_files} have no 'output'")
        for i, record in enumerate(self._records):  # a key the prompt names but a record lacks fails at setup
            try:
                fill_prompt(prompt, record)
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(f"record {i} of {data_files}: the prompt {prompt!r} cannot be filled: {e!r}") from e

    def __len__(self) -> int:
        return len(self._records)

    def tokens(self, record: Mapping[str, Any]) -> tuple[list[int], int]:
        raise NotImplementedError

    def drop_untrainable(self) -> list[int]:
        """Leave out the records that would train on no answer token at max_seq_len (the prompt part fills it, or
        the answer is empty: `untrainable_records: drop`); the indices left out, in the split's numbering."""
        limit = self._max_seq_len
        dropped, kept = [], []
        for i, record in enumerate(self._records):
            tokens, prompt_len = self.tokens(record)
            if prompt_len >= min(len(tokens), limit if limit is not None else len(tokens)):
                dropped.append(i)
            else:
                kept.append(record)
        self._records = kept
        self.dropped = dropped
        return dropped

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        record = self._records[index]
        try:
            tokens, prompt_len = self.tokens(record)
        except ParityError as e:
            raise ParityError(f"record {index}: {e}") from None
        return labelled(tokens, prompt_len, self._train_on_input, self._max_seq_len)


class ChatTemplateDataset(_RecordDataset):
    def __init__(
        self, *, system_prompt: str | None, chat_template_kwargs: Mapping[str, Any] | None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._system_prompt = system_prompt
        self._template_kwargs = dict(chat_template_kwargs or {})
        require_chat_template(self._tokenizer)

    def tokens(self, record: Mapping[str, Any]) -> tuple[list[int], int]:
        messages = conversation(self._prompt, self._system_prompt, record)
        return chat_tokens(self._tokenizer, messages, str(record["output"]), self._template_kwargs)


class PromptCompletionTextDataset(_RecordDataset):
    def __init__(self, *, add_eos: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._add_eos = add_eos

    def tokens(self, record: Mapping[str, Any]) -> tuple[list[int], int]:
        return text_tokens(self._tokenizer, fill_prompt(self._prompt, record), str(record["output"]), self._add_eos)


def _max_seq_len(tokenizer: Any, max_seq_len: int | None) -> int | None:
    return max_seq_len if max_seq_len is not None else getattr(tokenizer, "max_seq_len", None)


def _maybe_packed(ds: _RecordDataset, packed: bool, max_seq_len: int | None) -> Any:
    if not packed:
        return ds
    if max_seq_len is None:
        raise ValueError("packed: true needs max_seq_len here or on the tokenizer")
    from torchtune.datasets import PackedDataset

    # Whole records per pack: an answer cut across two packs would teach half-answers.
    return PackedDataset(ds, max_seq_len=max_seq_len, split_across_pack=False)


def chat_template_dataset(
    tokenizer: Any,
    *,
    source: str,
    data_files: str | list[str],
    field: str | None,
    model_path: str,
    prompt: str,
    system_prompt: str | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    train_on_input: bool = False,
    max_seq_len: int | None = None,
    packed: bool = False,
    drop_untrainable: bool = False,
) -> Any:
    """Chat records tokenized by the model directory's chat template (see the module's docstring).

    `tokenizer` is the recipe's torchtune tokenizer (the recipe passes it; its `max_seq_len` is the default cut);
    the tokens come from the Hugging Face tokenizer in `model_path`. `chat_template_kwargs` are passed to the
    template (Llama 3.x templates write `date_string` as "Today Date"; without it they write the day of the run).
    `drop_untrainable` leaves out the records that would train on no answer token at the cut (an explicit choice of
    the run: `untrainable_records: drop`).
    """
    limit = _max_seq_len(tokenizer, max_seq_len)
    ds = ChatTemplateDataset(
        source=source,
        data_files=data_files,
        field=field,
        model_path=model_path,
        prompt=prompt,
        system_prompt=system_prompt,
        chat_template_kwargs=chat_template_kwargs,
        train_on_input=train_on_input,
        max_seq_len=limit,
    )
    if drop_untrainable:
        ds.drop_untrainable()
    return _maybe_packed(ds, packed, limit)


def prompt_completion_text_dataset(
    tokenizer: Any,
    *,
    source: str,
    data_files: str | list[str],
    field: str | None,
    model_path: str,
    prompt: str,
    train_on_input: bool = False,
    add_eos: bool = False,
    max_seq_len: int | None = None,
    packed: bool = False,
    drop_untrainable: bool = False,
) -> Any:
    """Base-model records as plain text: the filled prompt encoded as the evaluation step encodes it, then the
    output (see the module's docstring). `add_eos` appends the tokenizer's EOS (the original tool does not)."""
    limit = _max_seq_len(tokenizer, max_seq_len)
    ds = PromptCompletionTextDataset(
        source=source,
        data_files=data_files,
        field=field,
        model_path=model_path,
        prompt=prompt,
        train_on_input=train_on_input,
        add_eos=add_eos,
        max_seq_len=limit,
    )
    if drop_untrainable:
        ds.drop_untrainable()
    return _maybe_packed(ds, packed, limit)
