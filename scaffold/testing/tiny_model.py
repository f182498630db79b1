"""A tiny random-weight Llama-3.2-style model, tokenizer and dataset, for real torchtune runs on CPU.

Nothing is downloaded: every asset is generated, deterministically, into a directory of the caller's
choosing. The model is a Hugging Face-format checkpoint (``config.json`` + ``model.safetensors``) that
torchtune 0.6.1's ``FullModelHFCheckpointer`` loads with ``model_type: LLAMA3_2``; the tokenizer is a
tiktoken BPE file of 499 tokens plus the 13 Llama 3 special tokens (ids 499..511, vocabulary 512).

Only :func:`write_llama_weights` needs torch (imported inside it), so the tokenizer, config and dataset
writers work in an environment without torch.

Command line::

    python -m scaffold.testing.tiny_model OUTDIR   # writes OUTDIR/model and OUTDIR/data

A torchtune config uses the tiny model through the generic builder (the ``*_1b`` builders fix the sizes)::

    model:
      _component_: torchtune.models.llama3_2.lora_llama3_2   # TINY_LORA_MODEL_COMPONENT
      <TINY_LLAMA_MODEL_KWARGS>
      lora_attn_modules: [q_proj, v_proj, output_proj]
      ...
    tokenizer:
      _component_: torchtune.models.llama3.llama3_tokenizer
      <tiny_tokenizer_kwargs(model_dir)>
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

NUM_BPE_TOKENS = 499
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
VOCAB_SIZE = NUM_BPE_TOKENS + len(LLAMA3_SPECIAL_TOKEN_NAMES)  # 512

# Paths inside the model directory, laid out like a downloaded Llama-3.2 repository.
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "original/tokenizer.model"
# Shaped like an HF tokenizer.json holding only `added_tokens`: llama3_tokenizer's special_tokens_path.
SPECIAL_TOKENS_FILE = "original/special_tokens.json"

TINY_LORA_MODEL_COMPONENT = "torchtune.models.llama3_2.lora_llama3_2"
TINY_MODEL_COMPONENT = "torchtune.models.llama3_2.llama3_2"
TOKENIZER_COMPONENT = "torchtune.models.llama3.llama3_tokenizer"
CHECKPOINTER_MODEL_TYPE = "LLAMA3_2"

# Architecture keyword arguments of TINY_LORA_MODEL_COMPONENT / TINY_MODEL_COMPONENT; they must agree
# with hf_config() below, which the checkpointer reads to convert the weights.
TINY_LLAMA_MODEL_KWARGS: dict[str, Any] = {
    "vocab_size": VOCAB_SIZE,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "embed_dim": 64,
    "intermediate_dim": 128,
    "max_seq_len": 512,
    "rope_base": 500_000,
    "tie_word_embeddings": True,
}

# Words of the built-in BPE training text; the capitalization words and the prompt pieces are in it so
# the tiny tokenizer splits them into a few tokens, as a real one would.
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
"""

# Five-letter lowercase words for the capitalization dataset, in a fixed order.
_WORDS: tuple[str, ...] = (
    "apple", "peach", "lemon", "grape", "melon", "mango", "berry", "plums", "olive", "kiwis",
    "guava", "dates", "limes", "pears", "cocoa", "bread", "chair", "table", "house", "water",
    "light", "stone", "river", "cloud", "plant", "green", "sweet", "night", "train", "music",
)  # fmt: skip


def special_tokens() -> dict[str, int]:
    """The 13 Llama 3 special tokens, numbered right after the BPE tokens (499..511)."""
    return {name: NUM_BPE_TOKENS + i for i, name in enumerate(LLAMA3_SPECIAL_TOKEN_NAMES)}


def _pretokenize(text: str) -> list[str]:
    # A plain-`re` cut of the CL100K pattern: merges never cross a word, as in the real tokenizer.
    return re.findall(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+", text)


def bpe_vocabulary(num_tokens: int = NUM_BPE_TOKENS, text: str = _BPE_TEXT) -> list[bytes]:
    """BPE token byte strings in rank order: the 256 single bytes, then merges learnt from ``text``.

    Deterministic: the most frequent adjacent pair wins, ties broken by the merged bytes.
    """
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
    return vocab


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


def write_tokenizer(model_dir: Path) -> Path:
    """Write the tiktoken BPE file and the special-tokens file under ``model_dir``; return the BPE path."""
    bpe_path = model_dir / TOKENIZER_FILE
    bpe_path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{base64.b64encode(tok).decode('ascii')} {rank}" for rank, tok in enumerate(bpe_vocabulary())]
    bpe_path.write_text("\n".join(lines) + "\n", encoding="ascii")
    added = [
        {
            "id": token_id,
            "content": name,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for name, token_id in special_tokens().items()
    ]
    (model_dir / SPECIAL_TOKENS_FILE).write_text(json.dumps({"added_tokens": added}, indent=2) + "\n")
    return bpe_path


def tiny_tokenizer_kwargs(model_dir: Path) -> dict[str, str]:
    """Arguments of ``llama3_tokenizer`` (besides max_seq_len, prompt_template) for a tiny model dir."""
    return {
        "path": str(model_dir / TOKENIZER_FILE),
        "special_tokens_path": str(model_dir / SPECIAL_TOKENS_FILE),
    }


def hf_config(kw: dict[str, Any] = TINY_LLAMA_MODEL_KWARGS, dtype: str = "float32") -> dict[str, Any]:
    """The Hugging Face ``config.json`` of a Llama 3.2-layout model of these sizes (default: the tiny one)."""
    tokens = special_tokens()
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": kw["vocab_size"],
        "hidden_size": kw["embed_dim"],
        "intermediate_size": kw["intermediate_dim"],
        "num_hidden_layers": kw["num_layers"],
        "num_attention_heads": kw["num_heads"],
        "num_key_value_heads": kw["num_kv_heads"],
        "head_dim": kw["embed_dim"] // kw["num_heads"],
        "max_position_embeddings": kw["max_seq_len"],
        "rope_theta": float(kw["rope_base"]),
        "rope_scaling": {
            "factor": 32.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "rms_norm_eps": 1e-05,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": kw["tie_word_embeddings"],
        "bos_token_id": tokens["<|begin_of_text|>"],
        "eos_token_id": [tokens["<|end_of_text|>"], tokens["<|eom_id|>"], tokens["<|eot_id|>"]],
        "torch_dtype": dtype,
    }


def hf_weight_shapes(kw: dict[str, Any] = TINY_LLAMA_MODEL_KWARGS) -> dict[str, tuple[int, ...]]:
    """Hugging Face parameter names and shapes (no ``lm_head``: the embeddings are tied)."""
    dim, hidden = kw["embed_dim"], kw["intermediate_dim"]
    head_dim = dim // kw["num_heads"]
    kv_dim = kw["num_kv_heads"] * head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (kw["vocab_size"], dim)}
    for i in range(kw["num_layers"]):
        p = f"model.layers.{i}"
        shapes |= {
            f"{p}.self_attn.q_proj.weight": (dim, dim),
            f"{p}.self_attn.k_proj.weight": (kv_dim, dim),
            f"{p}.self_attn.v_proj.weight": (kv_dim, dim),
            f"{p}.self_attn.o_proj.weight": (dim, dim),
            f"{p}.mlp.gate_proj.weight": (hidden, dim),
            f"{p}.mlp.up_proj.weight": (hidden, dim),
            f"{p}.mlp.down_proj.weight": (dim, hidden),
            f"{p}.input_layernorm.weight": (dim,),
            f"{p}.post_attention_layernorm.weight": (dim,),
        }
    shapes["model.norm.weight"] = (dim,)
    return shapes


def write_llama_weights(
    path: Path,
    *,
    seed: int = 0,
    kw: dict[str, Any] = TINY_LLAMA_MODEL_KWARGS,
    dtype: str = "float32",
    device: str = "cpu",
) -> Path:
    """Write random weights (normal, std 0.02; norms 1) as one safetensors file. Needs torch."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator(device=device).manual_seed(seed)
    tensors = {
        name: torch.ones(shape, dtype=getattr(torch, dtype))
        if len(shape) == 1
        else (torch.randn(shape, generator=generator, device=device) * 0.02).to(getattr(torch, dtype)).cpu()
        for name, shape in hf_weight_shapes(kw).items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def make_tiny_llama(
    model_dir: Path,
    *,
    seed: int = 0,
    kw: dict[str, Any] = TINY_LLAMA_MODEL_KWARGS,
    dtype: str = "float32",
    device: str = "cpu",
) -> Path:
    """Write config, random weights and the tiny tokenizer into ``model_dir``; return ``model_dir``.

    `kw` gives the sizes: the tiny model by default, or e.g. LLAMA_3_2_1B_KWARGS for a random model of the
    real 1B shape (the tiny tokenizer's ids all fall inside any larger vocabulary)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / CONFIG_FILE).write_text(json.dumps(hf_config(kw, dtype), indent=2) + "\n")
    write_tokenizer(model_dir)
    write_llama_weights(model_dir / WEIGHTS_FILE, seed=seed, kw=kw, dtype=dtype, device=device)
    return model_dir


# The sizes torchtune's llama3_2.lora_llama3_2_1b builder hard-codes (Llama-3.2-1B).
LLAMA_3_2_1B_KWARGS: dict[str, Any] = {
    "vocab_size": 128_256,
    "num_layers": 16,
    "num_heads": 32,
    "num_kv_heads": 8,
    "embed_dim": 2048,
    "intermediate_dim": 8192,
    "max_seq_len": 131_072,
    "rope_base": 500_000,
    "tie_word_embeddings": True,
}


def registry_entry() -> dict[str, Any]:
    """The tiny model as a model-registry entry for a local config's `models:`, so the generator's normal
    path (registry, model directory, checkpoint files, tokenizer files) is what a test exercises."""
    return {
        "lora_builder": TINY_LORA_MODEL_COMPONENT,
        "full_builder": TINY_MODEL_COMPONENT,
        "model_type": CHECKPOINTER_MODEL_TYPE,
        "checkpoint_files": [WEIGHTS_FILE],
        "tokenizer": {
            "component": TOKENIZER_COMPONENT,
            "files": {"path": TOKENIZER_FILE, "special_tokens_path": SPECIAL_TOKENS_FILE},
        },
        "tied_embeddings": True,
        "model_args": dict(TINY_LLAMA_MODEL_KWARGS),
        "resources": {"gpus": 0, "mem": "4G", "cpus_per_task": 2},
    }


def write_capitalization_dataset(path: Path, n_train: int = 8, n_val: int = 2, n_test: int = 1) -> Path:
    """Write ``{"train": [...], "validation": [...], "test": [...]}`` of ``{"input", "output"}`` records."""
    total = n_train + n_val + n_test
    if total > len(_WORDS):
        raise ValueError(f"at most {len(_WORDS)} records available, {total} asked")
    records = [{"input": w, "output": w.capitalize()} for w in _WORDS[:total]]
    data = {
        "train": records[:n_train],
        "validation": records[n_train : n_train + n_val],
        "test": records[n_train + n_val :],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


# The controls of a tiny-model experiment that trains for real on CPU, through the normal parameters (not by
# editing generated files): two steps, fp32, no warm-up (so each run's learning rate acts from the first step).
CPU_CONTROLS: dict[str, Any] = {
    "system_prompt": "You are a helpful assistant.",
    "prompt": "Capitalize the given word: {input}\n",
    "epochs": 1,
    "batch_size": 4,
    "seed": 14,
    "device": "cpu",
    "dtype": "fp32",
    "max_steps_per_epoch": 2,
    "max_seq_len": 256,
    "metric_logger": "disk",
    "num_warmup_steps": 0,
}


def write_experiment(
    root: Path, name: str, runs: dict[str, dict[str, Any]], local: dict[str, Any]
) -> tuple[Path, Path]:
    """A tiny-model experiment under `root`: the model (models/Tiny-Llama), the dataset, a local config (`local`
    plus the model's registry entry) and a summary with these fine-tuned runs (name -> parameters), a control run
    and CPU_CONTROLS. Returns (the experiment directory, the local config). Needs torch (the weights)."""
    import yaml

    root = Path(root)
    model = make_tiny_llama(root / "models" / "Tiny-Llama")
    data = write_capitalization_dataset(root / "data" / "capitalization.json")
    local_path = root / "scaffold.local.yaml"
    local_path.write_text(yaml.safe_dump({**local, "models": {"Tiny-Llama": registry_entry()}}))
    exp = root / "exp"
    exp.mkdir(parents=True, exist_ok=True)
    summary = {
        "experiment": {"name": name, "project": "capitalization"},
        "tools": {"preparation": "torchtune"},
        "controls": dict(CPU_CONTROLS),
        "models": {"base": [{"name": "Tiny-Llama", "path": str(model)}]},
        "data": {"training": {"path": str(data), "splits": {"train": 8, "validation": 2, "test": 1}}},
        "runs": [{"name": n, "type": "fine-tuned", "model": "Tiny-Llama", "parameters": p} for n, p in runs.items()]
        + [{"name": "Tiny-Llama_base", "type": "control", "model": "Tiny-Llama", "parameters": {}}],
    }
    (exp / "experiment_summary.yaml").write_text(yaml.safe_dump(summary, sort_keys=False))
    return exp, local_path


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m scaffold.testing.tiny_model OUTDIR``."""
    parser = argparse.ArgumentParser(prog="python -m scaffold.testing.tiny_model", description=__doc__.split("\n")[0])
    parser.add_argument("outdir", type=Path, help="writes OUTDIR/model and OUTDIR/data/capitalization.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model_dir = make_tiny_llama(args.outdir / "model", seed=args.seed)
    # The dataset stays outside the model dir: the checkpointer copies that dir's other files to the output.
    data = write_capitalization_dataset(args.outdir / "data" / "capitalization.json")
    print(f"model: {model_dir}\ndata: {data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
