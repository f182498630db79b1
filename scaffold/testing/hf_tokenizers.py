"""Tiny, offline Hugging Face tokenizers with the REAL chat templates of Llama 3.2 Instruct and Qwen2.5 Instruct.

    write_hf_tokenizer(model_dir, "llama3")   # or "qwen2"
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)   # works with HF_HUB_OFFLINE=1

The chat templates are data files next to this module, byte-identical to the ``chat_template`` value (JSON-decoded)
of the public ``tokenizer_config.json`` of these Hugging Face repositories:

* ``chat_templates/llama3_2_instruct.jinja``: meta-llama/Llama-3.2-1B-Instruct (3B-Instruct has the same one),
  3827 bytes, sha256 5816fce10444e03c2e9ee1ef8a4a1ea61ae7e69e438613f3b17b69d0426223a4.
* ``chat_templates/qwen2_5_instruct.jinja``: Qwen/Qwen2.5-0.5B-Instruct (1.5B, 3B and 7B-Instruct have the same
  one), 2507 bytes, sha256 cd8e9439f0570856fd70470bf8889ebd8b5d1107207f67a5efb46e342330527f.

(No hub is reachable from the test machines: the files were taken from public copies of those configs and
cross-checked byte for byte; tests/test_hf_tokenizers.py pins the digests.)

What is written, laid out like the real repositories:

* ``tokenizer.json``: a byte-level BPE whose vocabulary is :func:`bpe_vocabulary` (the 256 bytes, then merges
  learnt deterministically, in pure Python, from a short built-in text), with the real pre-tokenizer regex,
  ByteLevel decoder and post-processor of each family. The merges are derived from the ranks the way
  transformers converts a tiktoken file, so the Llama ``tokenizer.json`` and the tiktoken file that torchtune's
  ``llama3_tokenizer`` reads (written by scaffold.testing.tiny_model from the same ranks) split plain text into
  the same ids. After the BPE come the added tokens:

  - llama3: the 13 names torchtune 0.6.1's ``llama3_tokenizer`` looks up (:data:`LLAMA3_SPECIAL_TOKEN_NAMES`),
    ids 499..511, so this ``tokenizer.json`` is also torchtune's ``special_tokens_path``. The real Llama 3.2
    names 128005 ``<|reserved_special_token_2|>`` (torchtune: ``<|step_id|>``) and has no ``<|image|>`` or
    ``<|video|>``; the chat template uses none of those three. The BOS comes from a TemplateProcessing
    post-processor, as in the real file (no ``add_bos_token`` key).
  - qwen2: the 22 added tokens of the real Qwen2.5 config (the last 8 not special), ids 499..520; torchtune's
    ``qwen2_5_tokenizer`` reads them from this file as its ``special_tokens_path``. No BOS, ever.

  Ids are not the real ones (499+ instead of 128000+ / 151643+): look them up, never hard-code them.
* ``tokenizer_config.json`` (the real chat template, tokens and flags of the real config, ``added_tokens_decoder``
  at the tiny ids), ``special_tokens_map.json`` and ``generation_config.json`` (token ids only).
* qwen2 only: ``vocab.json`` and ``merges.txt`` (as in the real repository; torchtune's Qwen tokenizer reads them).

Only the ``tokenizers`` library is needed to write (imported inside :func:`write_hf_tokenizer`); ``transformers``
loads the result. Deterministic: the same call writes byte-identical files.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

FAMILIES: tuple[str, ...] = ("llama3", "qwen2")

NUM_BPE_TOKENS = 499

# The special tokens torchtune 0.6.1's llama3_tokenizer looks up (torchtune.models.llama3._tokenizer), in the
# order of their real ids; here they are numbered from NUM_BPE_TOKENS.
LLAMA3_SPECIAL_TOKEN_NAMES: tuple[str, ...] = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|image|>",
    "<|video|>",
)

# The added tokens of Qwen2.5 Instruct's tokenizer_config.json in id order (real ids 151643..151664): name, special.
QWEN2_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)

CHAT_TEMPLATE_FILES: dict[str, str] = {"llama3": "llama3_2_instruct.jinja", "qwen2": "qwen2_5_instruct.jinja"}

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
GENERATION_CONFIG = "generation_config.json"
VOCAB_FILE = "vocab.json"  # qwen2 only
MERGES_FILE = "merges.txt"  # qwen2 only

# Pre-tokenizer regexes of the real tokenizer.json files; the same as torchtune's CL100K_PATTERN (llama3) and
# PRETOKENIZE_REGEX (qwen2). Llama 3 keeps runs of up to 3 digits together, Qwen2 splits every digit.
LLAMA3_SPLIT_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# The BPE training text. The capitalization words, the prompt pieces and the fixed text of both chat templates
# are in it, so the tiny tokenizer splits them into a few tokens as a real one would. The blank lines teach the
# "\n\n" merge (id 271 in both real vocabularies): without it a tiny vocabulary hides effects of the real one,
# e.g. that Qwen's prompt ids stop being a prefix of the conversation when the answer starts with "\n".
_BPE_TEXT = """
You are a helpful assistant. Capitalize the given word: apple Apple.
system user assistant ipython tool Please answer the question below with one word only.
The quick brown fox jumps over the lazy dog while the small cat sleeps near the warm window.
A model learns to capitalize a word when it sees many examples of lower case and upper case words.
Every morning the farmer walks to the market with apples, peaches, lemons, grapes and melons.
Training a language model needs data, a tokenizer, an optimizer, a learning rate and some patience.
This tiny vocabulary exists only for tests; its merges come from this short text and nothing else.
Numbers such as 0 1 2 3 4 5 6 7 8 9 10 100 2024 and 2026 appear here too, with some punctuation!
Questions? Answers. Lists: first, second, third; quotes "like this" and 'like that' (and brackets).

Cutting Knowledge Date: December 2023
Today Date: 26 Jul 2024

You are Qwen, created by Alibaba Cloud. You are a helpful assistant.

system

user

assistant

"""


def _pretokenize(text: str) -> list[str]:
    # A plain-`re` cut of the CL100K pattern: merges never cross a word, as in the real tokenizer.
    return re.findall(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+", text)


@cache
def bpe_vocabulary(num_tokens: int = NUM_BPE_TOKENS, text: str = _BPE_TEXT) -> tuple[bytes, ...]:
    """BPE token byte strings in rank order: the 256 single bytes, then merges learnt from ``text``.

    Deterministic: the most frequent adjacent pair wins, ties broken by the merged bytes."""
    vocab: list[bytes] = [bytes([b]) for b in range(256)]
    known = set(vocab)
    words = Counter(tuple(bytes([b]) for b in piece.encode()) for piece in _pretokenize(text))
    while len(vocab) < num_tokens:
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:], strict=False):
                pairs[pair] += count
        candidates = [(-n, a + b, a, b) for (a, b), n in pairs.items() if a + b not in known]
        if not candidates:
            raise ValueError(f"the BPE text yields only {len(vocab)} tokens, {num_tokens} asked")
        _, merged, left, right = min(candidates)
        vocab.append(merged)
        known.add(merged)
        words = Counter({_merge_pair(word, left, right): count for word, count in words.items()})
    return tuple(vocab)


def _merge_pair(word: tuple[bytes, ...], left: bytes, right: bytes) -> tuple[bytes, ...]:
    out: list[bytes] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == left and word[i + 1] == right:
            out.append(left + right)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


@cache
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (the ByteLevel alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _as_unicode(token: bytes) -> str:
    table = _byte_to_unicode()
    return "".join(table[b] for b in token)


def bpe_vocab_and_merges(vocab: tuple[bytes, ...] | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The ByteLevel vocabulary (token -> rank) and merges equivalent to tiktoken ranks ``vocab``.

    As transformers' tiktoken converter does it: every split of a token into two tokens is a merge, ordered by
    the rank of the result (then by the ranks of the parts), so BPE with these merges and tiktoken agree."""
    vocab = bpe_vocabulary() if vocab is None else vocab
    ranks = {token: rank for rank, token in enumerate(vocab)}
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    return (
        {_as_unicode(token): rank for token, rank in ranks.items()},
        [(_as_unicode(left), _as_unicode(right)) for *_, left, right in merges],
    )


def added_tokens(family: str) -> dict[str, int]:
    """The family's added tokens (name -> id), numbered right after the BPE vocabulary."""
    names = LLAMA3_SPECIAL_TOKEN_NAMES if _check(family) == "llama3" else [n for n, _ in QWEN2_ADDED_TOKENS]
    return {name: NUM_BPE_TOKENS + i for i, name in enumerate(names)}


def vocab_size(family: str) -> int:
    """Ids used by the family's tokenizer: BPE plus added tokens (512 for llama3, 521 for qwen2)."""
    return NUM_BPE_TOKENS + len(added_tokens(family))


def chat_template(family: str) -> str:
    """The real chat template of the family (see the module docstring for its source)."""
    name = CHAT_TEMPLATE_FILES[_check(family)]
    return resources.files(__package__).joinpath("chat_templates", name).read_text(encoding="utf-8")


def _check(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    return family


def build_tokenizer(family: str) -> Any:
    """The family's ``tokenizers.Tokenizer`` (what tokenizer.json holds). Needs the ``tokenizers`` library."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    _check(family)
    vocab, merges = bpe_vocab_and_merges()
    llama = family == "llama3"
    # ignore_merges: a pre-token that is itself in the vocabulary is one token, as in tiktoken and the real
    # Llama 3 tokenizer.json; Qwen2's real file and torchtune's Qwen tokenizer always go through the merges.
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False, byte_fallback=False, ignore_merges=llama)
    )
    if not llama:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT_REGEX if llama else QWEN2_SPLIT_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    specials = dict(QWEN2_ADDED_TOKENS) if not llama else dict.fromkeys(LLAMA3_SPECIAL_TOKEN_NAMES, True)
    for name, token_id in added_tokens(family).items():
        token = AddedToken(
            name, single_word=False, lstrip=False, rstrip=False, normalized=False, special=specials[name]
        )
        if specials[name]:
            tok.add_special_tokens([token])
        else:
            tok.add_tokens([token])
        if tok.token_to_id(name) != token_id:
            raise AssertionError(f"{name} got id {tok.token_to_id(name)}, expected {token_id}")
    if llama:
        bos = "<|begin_of_text|>"
        tok.post_processor = processors.Sequence(
            [
                processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
                processors.TemplateProcessing(
                    single=f"{bos}:0 $A:0",
                    pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                    special_tokens=[(bos, tok.token_to_id(bos))],
                ),
            ]
        )
    else:
        tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    return tok


def _token_entry(name: str) -> dict[str, Any]:
    return {"content": name, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}


def _added_tokens_decoder(family: str) -> dict[str, dict[str, Any]]:
    specials = dict(QWEN2_ADDED_TOKENS) if family == "qwen2" else dict.fromkeys(LLAMA3_SPECIAL_TOKEN_NAMES, True)
    return {str(i): {**_token_entry(name), "special": specials[name]} for name, i in added_tokens(family).items()}


def tokenizer_config(family: str) -> dict[str, Any]:
    """tokenizer_config.json: the keys and values of the real config, the real chat template, the tiny ids."""
    if _check(family) == "llama3":
        # As meta-llama/Llama-3.2-1B-Instruct: no add_bos_token key, no pad_token.
        return {
            "added_tokens_decoder": _added_tokens_decoder(family),
            "bos_token": "<|begin_of_text|>",
            "chat_template": chat_template(family),
            "clean_up_tokenization_spaces": True,
            "eos_token": "<|eot_id|>",
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": 131072,
            "tokenizer_class": "PreTrainedTokenizerFast",
        }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": _added_tokens_decoder(family),
        "additional_special_tokens": _qwen2_additional_special_tokens(),
        "bos_token": None,
        "chat_template": chat_template(family),
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def _qwen2_additional_special_tokens() -> list[str]:
    return [name for name, special in QWEN2_ADDED_TOKENS if special and name != "<|endoftext|>"]


def generation_config(family: str) -> dict[str, Any]:
    """The token ids of the real generation_config.json, at the tiny ids.

    Real: Llama 3.2 bos 128000, eos [128001, 128008, 128009]; Qwen2.5 bos 151643, pad 151643, eos [151645, 151643]."""
    ids = added_tokens(family)
    if family == "llama3":
        return {
            "bos_token_id": ids["<|begin_of_text|>"],
            "eos_token_id": [ids["<|end_of_text|>"], ids["<|eom_id|>"], ids["<|eot_id|>"]],
        }
    return {
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"],
    }


def write_hf_tokenizer(model_dir: str | os.PathLike[str], family: str) -> Path:
    """Write the tiny HF tokenizer of ``family`` ("llama3" or "qwen2") into ``model_dir``; return tokenizer.json's
    path. Offline and deterministic; needs only the ``tokenizers`` library."""
    _check(family)
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(family)
    _write_text(model_dir / TOKENIZER_JSON, tok.to_str(pretty=True) + "\n")
    _write_json(model_dir / TOKENIZER_CONFIG, tokenizer_config(family))
    if family == "llama3":
        special_map: dict[str, Any] = {
            "bos_token": _token_entry("<|begin_of_text|>"),
            "eos_token": _token_entry("<|eot_id|>"),
        }
    else:
        special_map = {
            "additional_special_tokens": _qwen2_additional_special_tokens(),
            "eos_token": _token_entry("<|im_end|>"),
            "pad_token": _token_entry("<|endoftext|>"),
        }
        vocab, merges = bpe_vocab_and_merges()
        _write_text(model_dir / VOCAB_FILE, json.dumps(vocab, ensure_ascii=False) + "\n")
        _write_text(model_dir / MERGES_FILE, "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    _write_json(model_dir / SPECIAL_TOKENS_MAP, special_map)
    _write_json(model_dir / GENERATION_CONFIG, generation_config(family))
    return model_dir / TOKENIZER_JSON


def _write_json(path: Path, obj: Any) -> None:
    _write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
