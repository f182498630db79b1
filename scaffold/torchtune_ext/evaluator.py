"""The evaluator's side of train/eval parity: the tokenizer it loads and the ids it feeds the model for a sample.

The evaluator is cruijff_kit's evaluation step, inspect-ai's Hugging Face provider with `model_path` = the run's
epoch directory (scaffold.torchtune_ext.eval_contract has the facts). Where inspect-ai is importable, the ids come
from the provider's own code: its `hf_chat` renders the messages (with its `_apply_chat_template`), on a stand-in
for the provider object that holds the tokenizer and the model arguments cruijff_kit's command leaves unset (no
`chat_template`, `use_chat_template` or `enable_thinking`), and the text is tokenized as its batch loop does. Where
it is not, `render` and `prompt_ids` below reimplement exactly that path; the evaluator session
(tests/integration/test_evaluator.py, `nox -s evaluator`) holds them equal to the real provider and to the ids the
real `inspect eval` feeds the model.

    python -m scaffold.torchtune_ext.evaluator TOKENIZER_DIR MESSAGES_JSON   # both paths' texts and ids, as JSON
"""

from __future__ import annotations

import json
import os
import sys
from types import MethodType, SimpleNamespace
from typing import Any

from .datasets import token_ids

_ROLE_CLASSES = {"system": "ChatMessageSystem", "user": "ChatMessageUser", "assistant": "ChatMessageAssistant"}


def load(directory: str | os.PathLike) -> Any:
    """The tokenizer as the provider loads it from `model_path` (offline), with the padding it sets."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    tokenizer.pad_token = tokenizer.eos_token  # as the provider does: it pads batches with EOS, on the left
    tokenizer.padding_side = "left"
    return tokenizer


def render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """The provider's text for the messages, reimplemented: the tokenizer's chat template applied with
    `add_generation_prompt=True, tokenize=False, tools=None, enable_thinking=None` (and no `date_string`), or,
    without a chat template, `f"{role}: {content}\\n"` per message. `add_generation_prompt=False` renders a whole
    conversation the same way (the answer part of a training record; the provider never does that)."""
    template = tokenizer.chat_template
    if template is None:
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return tokenizer.apply_chat_template(
        messages,
        chat_template=template,
        add_generation_prompt=add_generation_prompt,
        tokenize=False,
        tools=None,
        enable_thinking=None,
    )


def inspect_render(tokenizer: Any, messages: list[dict[str, str]]) -> str | None:
    """The provider's own `hf_chat` text for the messages; None where inspect-ai (with torch) is not importable."""
    try:
        import inspect_ai.model as model
        from inspect_ai.model._providers.hf import HuggingFaceAPI
    except ImportError:
        return None
    stand_in = SimpleNamespace(
        tokenizer=tokenizer, chat_template=None, use_chat_template=None, enable_thinking=None, model_name="local"
    )
    stand_in._apply_chat_template = MethodType(HuggingFaceAPI._apply_chat_template, stand_in)
    chat = [getattr(model, _ROLE_CLASSES[m["role"]])(content=m["content"]) for m in messages]
    return HuggingFaceAPI.hf_chat(stand_in, chat, [])


def encode(tokenizer: Any, text: str) -> list[int]:
    """The ids of one sample as the provider's batch loop tokenizes it (`tokenizer([text], padding=True)`, special
    tokens on; one sample has no padding)."""
    return token_ids(tokenizer([text], padding=True)["input_ids"][0])


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[list[int], str]:
    """(the ids the evaluator feeds the model for these messages, which code rendered them: "inspect-ai X.Y.Z" or
    "reimplementation")."""
    text = inspect_render(tokenizer, messages)
    if text is None:
        return encode(tokenizer, render(tokenizer, messages)), "reimplementation of inspect-ai's provider"
    import inspect_ai

    return encode(tokenizer, text), f"inspect-ai {getattr(inspect_ai, '__version__', '?')}'s provider"


def main(argv: list[str] | None = None) -> int:
    """Print both paths' texts and ids for the messages of a JSON file, for a test to compare."""
    directory, messages_file = argv if argv is not None else sys.argv[1:]
    with open(messages_file, encoding="utf-8") as f:
        cases = json.load(f)
    tokenizer = load(directory)
    out = []
    for messages in cases:
        real = inspect_render(tokenizer, messages)
        mine = render(tokenizer, messages)
        out.append(
            {
                "inspect": real,
                "reimplementation": mine,
                "inspect_ids": None if real is None else encode(tokenizer, real),
                "reimplementation_ids": encode(tokenizer, mine),
            }
        )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
