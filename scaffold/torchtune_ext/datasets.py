"""Dataset builders for base-model (text completion) runs on ``{"input", "output"}`` records.

torchtune's ``text_completion_dataset`` reads one ready-made text column, and ``instruct_dataset`` wraps
records in the Llama 3 chat headers, which a base model never saw. This builder reads the original JSON
file as is and trains on plain text: the prompt with its `{input}` replaced by the record's input, then the output.

Config use::

    dataset:
      _component_: scaffold.torchtune_ext.datasets.prompt_completion_text_dataset
      source: json
      data_files: /data/capitalization/words_5L_80P_10.json
      field: train
      split: train
      prompt: "Capitalize the given word: {input}\\n"
      packed: false
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torchtune.data import truncate
from torchtune.datasets import PackedDataset, TextCompletionDataset
from torchtune.modules.transforms.tokenizers import ModelTokenizer


class PromptCompletionTextDataset(TextCompletionDataset):
    """A ``TextCompletionDataset`` whose text is a formatted prompt followed by the completion.

    Every token is a label (plain language modelling, as in ``TextCompletionDataset``); BOS is added and,
    with ``add_eos``, EOS so the model learns where a completion stops.
    """

    def __init__(
        self,
        tokenizer: ModelTokenizer,
        *,
        source: str,
        prompt: str = "{input}",
        column_map: Mapping[str, str] | None = None,
        max_seq_len: int | None = None,
        add_eos: bool = True,
        filter_fn: Callable[..., bool] | None = None,
        **load_dataset_kwargs: Any,
    ) -> None:
        # Same rule as the chat path (tokenizer.prompt_template): the text around one `{input}`; other
        # braces are plain text.
        if prompt.count("{input}") != 1:
            raise ValueError(f"prompt must contain {{input}} exactly once: {prompt!r}")
        super().__init__(
            tokenizer=tokenizer, source=source, add_eos=add_eos, filter_fn=filter_fn, **load_dataset_kwargs
        )
        self._prefix, _, self._suffix = prompt.partition("{input}")
        self._column_map = {"input": "input", "output": "output", **(column_map or {})}
        self._max_seq_len = max_seq_len if max_seq_len is not None else tokenizer.max_seq_len
        # Fail at setup, not at the first batch, when the file lacks a mapped column.
        columns = getattr(self._data, "column_names", None)
        if columns is not None:
            missing = sorted(set(self._column_map.values()) - set(columns))
            if missing:
                raise ValueError(f"dataset columns {missing} not found; the data has {sorted(columns)}")

    def text(self, sample: Mapping[str, Any]) -> str:
        """The training text of one record."""
        record_input, record_output = sample[self._column_map["input"]], sample[self._column_map["output"]]
        return f"{self._prefix}{record_input}{self._suffix}{record_output}"

    def _prepare_sample(self, sample: Mapping[str, Any]) -> dict[str, list[int]]:
        tokens = self._tokenizer.encode(text=self.text(sample), add_bos=True, add_eos=self.add_eos)
        if self._max_seq_len is not None:
            # Same cut as TextCompletionDataset: room for the label shift, EOS not forced back in.
            tokens = truncate(tokens, self._max_seq_len - 1)
        return {"tokens": tokens, "labels": tokens.copy()}


def prompt_completion_text_dataset(
    tokenizer: ModelTokenizer,
    *,
    source: str,
    data_files: str | list[str],
    field: str | None,
    split: str = "train",
    prompt: str = "{input}",
    column_map: Mapping[str, str] | None = None,
    max_seq_len: int | None = None,
    packed: bool = False,
    add_eos: bool = True,
    **load_dataset_kwargs: Any,
) -> PromptCompletionTextDataset | PackedDataset:
    """Build a plain-text dataset from ``{"input", "output"}`` records (e.g. one split of the original JSON).

    ``field`` selects the list inside the JSON file (``train``, ``validation``, ...); ``split`` is the
    Hugging Face split name, ``train`` for a single local file. ``column_map`` maps ``input``/``output``
    to other column names. ``max_seq_len`` defaults to the tokenizer's; ``packed`` needs one of them.
    """
    if field is not None:
        load_dataset_kwargs["field"] = field
    ds = PromptCompletionTextDataset(
        tokenizer,
        source=source,
        prompt=prompt,
        column_map=column_map,
        max_seq_len=max_seq_len,
        add_eos=add_eos,
        data_files=data_files,
        split=split,
        **load_dataset_kwargs,
    )
    if not packed:
        return ds
    pack_len = max_seq_len if max_seq_len is not None else tokenizer.max_seq_len
    if pack_len is None:
        raise ValueError("packed: true needs max_seq_len here or on the tokenizer")
    # Whole records per pack: a completion cut across two packs would teach half-answers.
    return PackedDataset(ds, max_seq_len=pack_len, split_across_pack=False)
