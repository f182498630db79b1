"""Tiny random-weight Llama-3.2-style and Qwen2.5-style models, tokenizers and a dataset, for real torchtune runs
on CPU.

Nothing is downloaded: every asset is generated, deterministically, into a directory of the caller's choosing.
Each model is a Hugging Face-format checkpoint (``config.json`` + ``model.safetensors``) that torchtune 0.6.1's
``FullModelHFCheckpointer`` loads (``model_type: LLAMA3_2`` / ``QWEN2``), and each model directory carries a
Hugging Face tokenizer with the family's real chat template (scaffold.testing.hf_tokenizers), which
``transformers.AutoTokenizer.from_pretrained(model_dir)`` loads offline.

* Llama (:func:`make_tiny_llama`): torchtune's ``llama3_tokenizer`` reads a tiktoken file
  (``original/tokenizer.model``: the 499 ranks of hf_tokenizers.bpe_vocabulary) and takes its 13 special tokens
  (ids 499..511) from the HF ``tokenizer.json``; the HF tokenizer has the same BPE, so both give the same ids for
  plain text. Vocabulary 512.
* Qwen (:func:`make_tiny_qwen`): torchtune's ``qwen2_5_tokenizer`` reads ``vocab.json`` + ``merges.txt`` and its
  22 added tokens (ids 499..520) from ``tokenizer.json``, all written by hf_tokenizers. Model vocabulary 528
  (padded past the tokenizer's 521, as the real Qwen2.5 models pad theirs).

Only the weight writers need torch (imported inside them), and the tokenizer writers need the ``tokenizers``
library (a torchtune dependency); the config and dataset writers need neither.

Command line::

    python -m scaffold.testing.tiny_model OUTDIR [--family qwen2]   # writes OUTDIR/model and OUTDIR/data

A torchtune config uses a tiny model through the generic builder (the sized builders fix the sizes)::

    model:
      _component_: torchtune.models.llama3_2.lora_llama3_2   # TINY_LORA_MODEL_COMPONENT (Qwen: lora_qwen2)
      <TINY_LLAMA_MODEL_KWARGS>                              # (Qwen: TINY_QWEN_MODEL_KWARGS)
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
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import hf_tokenizers
from .hf_tokenizers import LLAMA3_SPECIAL_TOKEN_NAMES, NUM_BPE_TOKENS, bpe_vocabulary

VOCAB_SIZE = NUM_BPE_TOKENS + len(LLAMA3_SPECIAL_TOKEN_NAMES)  # 512

# Paths inside the model directory, laid out like a downloaded Llama-3.2 repository.
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "original/tokenizer.model"
# The HF tokenizer.json (hf_tokenizers): its `added_tokens` are llama3_tokenizer's special_tokens_path too.
HF_TOKENIZER_FILE = hf_tokenizers.TOKENIZER_JSON
SPECIAL_TOKENS_FILE = HF_TOKENIZER_FILE

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

# Five-letter lowercase words for the capitalization dataset, in a fixed order.
_WORDS: tuple[str, ...] = (
    "apple", "peach", "lemon", "grape", "melon", "mango", "berry", "plums", "olive", "kiwis",
    "guava", "dates", "limes", "pears", "cocoa", "bread", "chair", "table", "house", "water",
    "light", "stone", "river", "cloud", "plant", "green", "sweet", "night", "train", "music",
)  # fmt: skip


def special_tokens() -> dict[str, int]:
    """The 13 Llama 3 special tokens, numbered right after the BPE tokens (499..511)."""
    return hf_tokenizers.added_tokens("llama3")


def write_tokenizer(model_dir: Path) -> Path:
    """Write the tiktoken BPE file (torchtune's) and the HF tokenizer (hf_tokenizers, family llama3) under
    ``model_dir``; return the BPE path. The two share the BPE ranks and the special tokens' ids."""
    model_dir = Path(model_dir)
    bpe_path = model_dir / TOKENIZER_FILE
    bpe_path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{base64.b64encode(tok).decode('ascii')} {rank}" for rank, tok in enumerate(bpe_vocabulary())]
    bpe_path.write_text("\n".join(lines) + "\n", encoding="ascii")
    hf_tokenizers.write_hf_tokenizer(model_dir, "llama3")
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


def hf_weight_shapes(
    kw: dict[str, Any] = TINY_LLAMA_MODEL_KWARGS, *, qkv_bias: bool = False
) -> dict[str, tuple[int, ...]]:
    """Hugging Face parameter names and shapes of a Llama-layout model (no ``lm_head``: the embeddings are tied);
    ``qkv_bias`` adds the q/k/v projection biases of Qwen2."""
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
            **(
                {
                    f"{p}.self_attn.q_proj.bias": (dim,),
                    f"{p}.self_attn.k_proj.bias": (kv_dim,),
                    f"{p}.self_attn.v_proj.bias": (kv_dim,),
                }
                if qkv_bias
                else {}
            ),
            f"{p}.self_attn.o_proj.weight": (dim, dim),
            f"{p}.mlp.gate_proj.weight": (hidden, dim),
            f"{p}.mlp.up_proj.weight": (hidden, dim),
            f"{p}.mlp.down_proj.weight": (dim, hidden),
            f"{p}.input_layernorm.weight": (dim,),
            f"{p}.post_attention_layernorm.weight": (dim,),
        }
    shapes["model.norm.weight"] = (dim,)
    return shapes


def write_random_weights(
    path: Path, shapes: dict[str, tuple[int, ...]], *, seed: int = 0, dtype: str = "float32", device: str = "cpu"
) -> Path:
    """Write random weights of these names and shapes as one safetensors file: norm scales 1, everything else
    (matrices, biases) normal with std 0.02, drawn in the order of ``shapes``. Needs torch."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator(device=device).manual_seed(seed)
    tensors = {
        name: torch.ones(shape, dtype=getattr(torch, dtype))
        if name.endswith("norm.weight")
        else (torch.randn(shape, generator=generator, device=device) * 0.02).to(getattr(torch, dtype)).cpu()
        for name, shape in shapes.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def write_llama_weights(
    path: Path,
    *,
    seed: int = 0,
    kw: dict[str, Any] = TINY_LLAMA_MODEL_KWARGS,
    dtype: str = "float32",
    device: str = "cpu",
) -> Path:
    """Write random Llama weights (normal, std 0.02; norms 1) as one safetensors file. Needs torch."""
    return write_random_weights(path, hf_weight_shapes(kw), seed=seed, dtype=dtype, device=device)


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


# --- Tiny Qwen2.5 ---------------------------------------------------------------------------------------------

TINY_QWEN_LORA_MODEL_COMPONENT = "torchtune.models.qwen2.lora_qwen2"
TINY_QWEN_MODEL_COMPONENT = "torchtune.models.qwen2.qwen2"
QWEN_TOKENIZER_COMPONENT = "torchtune.models.qwen2_5.qwen2_5_tokenizer"
QWEN_CHECKPOINTER_MODEL_TYPE = "QWEN2"

# Arguments of TINY_QWEN_LORA_MODEL_COMPONENT / TINY_QWEN_MODEL_COMPONENT; they must agree with
# qwen_hf_config() below. Tied embeddings as in Qwen2.5 0.5B-3B; the vocabulary is padded past the tokenizer's
# 521 ids, as the real models pad theirs (151936 > 151665).
TINY_QWEN_MODEL_KWARGS: dict[str, Any] = {
    "vocab_size": 528,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "embed_dim": 64,
    "intermediate_dim": 128,
    "max_seq_len": 512,
    "norm_eps": 1e-6,
    "rope_base": 1_000_000.0,
    "tie_word_embeddings": True,
}


def qwen_hf_config(kw: dict[str, Any] = TINY_QWEN_MODEL_KWARGS, dtype: str = "float32") -> dict[str, Any]:
    """The Hugging Face ``config.json`` of a Qwen2.5-layout model of these sizes (keys of Qwen2.5-0.5B-Instruct's)."""
    if kw["vocab_size"] < hf_tokenizers.vocab_size("qwen2"):
        raise ValueError(
            f"vocab_size {kw['vocab_size']} < the tiny Qwen tokenizer's {hf_tokenizers.vocab_size('qwen2')}"
        )
    tokens = hf_tokenizers.added_tokens("qwen2")
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": tokens["<|endoftext|>"],
        "eos_token_id": tokens["<|im_end|>"],
        "hidden_act": "silu",
        "hidden_size": kw["embed_dim"],
        "initializer_range": 0.02,
        "intermediate_size": kw["intermediate_dim"],
        "max_position_embeddings": kw["max_seq_len"],
        "max_window_layers": kw["num_layers"],
        "model_type": "qwen2",
        "num_attention_heads": kw["num_heads"],
        "num_hidden_layers": kw["num_layers"],
        "num_key_value_heads": kw["num_kv_heads"],
        "rms_norm_eps": kw["norm_eps"],
        "rope_theta": float(kw["rope_base"]),
        "sliding_window": kw["max_seq_len"],
        "tie_word_embeddings": kw["tie_word_embeddings"],
        "torch_dtype": dtype,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": kw["vocab_size"],
    }


def make_tiny_qwen(
    model_dir: Path,
    *,
    seed: int = 0,
    kw: dict[str, Any] = TINY_QWEN_MODEL_KWARGS,
    dtype: str = "float32",
    device: str = "cpu",
) -> Path:
    """Write config, random weights (HF Qwen2 names, q/k/v biases included) and the tiny Qwen2.5 tokenizer
    (hf_tokenizers, family qwen2) into ``model_dir``; return ``model_dir``. Needs torch and tokenizers."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / CONFIG_FILE).write_text(json.dumps(qwen_hf_config(kw, dtype), indent=2) + "\n")
    hf_tokenizers.write_hf_tokenizer(model_dir, "qwen2")
    shapes = hf_weight_shapes(kw, qkv_bias=True)
    write_random_weights(model_dir / WEIGHTS_FILE, shapes, seed=seed, dtype=dtype, device=device)
    return model_dir


def qwen_registry_entry() -> dict[str, Any]:
    """The tiny Qwen as a model-registry entry for a local config's `models:`. The tokenizer takes its special
    tokens from the model's tokenizer.json (the default table has the real ids, 151643+, outside the tiny
    vocabulary), so its pad and eos ids fall inside it."""
    return {
        "lora_builder": TINY_QWEN_LORA_MODEL_COMPONENT,
        "full_builder": TINY_QWEN_MODEL_COMPONENT,
        "model_type": QWEN_CHECKPOINTER_MODEL_TYPE,
        "checkpoint_files": [WEIGHTS_FILE],
        "tokenizer": {
            "component": QWEN_TOKENIZER_COMPONENT,
            "files": {
                "path": hf_tokenizers.VOCAB_FILE,
                "merges_file": hf_tokenizers.MERGES_FILE,
                "special_tokens_path": HF_TOKENIZER_FILE,
            },
        },
        "tied_embeddings": True,
        "model_args": dict(TINY_QWEN_MODEL_KWARGS),
        "resources": {"gpus": 0, "mem": "4G", "cpus_per_task": 2},
    }


# family -> (model name in experiments, writer, registry entry)
TINY_MODELS: dict[str, tuple[str, Any, Any]] = {
    "llama3": ("Tiny-Llama", make_tiny_llama, registry_entry),
    "qwen2": ("Tiny-Qwen", make_tiny_qwen, qwen_registry_entry),
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
    "dataset_type": "chat_completion",
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
    "log_every_n_steps": 1,  # two steps: a loss line for each (the default, as the original, is every 5)
}


def write_experiment(
    root: Path, name: str, runs: dict[str, dict[str, Any]], local: dict[str, Any], family: str = "llama3"
) -> tuple[Path, Path]:
    """A tiny-model experiment under `root`: the model of `family` ("llama3": models/Tiny-Llama, "qwen2":
    models/Tiny-Qwen), the dataset, a local config (`local` plus the model's registry entry) and a summary with
    these fine-tuned runs (name -> parameters), a control run and CPU_CONTROLS. Returns (the experiment directory,
    the local config). Needs torch (the weights)."""
    import yaml

    if family not in TINY_MODELS:
        raise ValueError(f"family must be one of {', '.join(TINY_MODELS)}, not {family!r}")
    model_name, make, entry = TINY_MODELS[family]
    root = Path(root)
    model = make(root / "models" / model_name)
    data = write_capitalization_dataset(root / "data" / "capitalization.json")
    local_path = root / "scaffold.local.yaml"
    local_path.write_text(yaml.safe_dump({**local, "models": {model_name: entry()}}))
    exp = root / "exp"
    exp.mkdir(parents=True, exist_ok=True)
    summary = {
        "experiment": {"name": name, "project": "capitalization"},
        "tools": {"preparation": "torchtune"},
        "controls": dict(CPU_CONTROLS),
        "models": {"base": [{"name": model_name, "path": str(model)}]},
        "data": {"training": {"path": str(data), "splits": {"train": 8, "validation": 2, "test": 1}}},
        "runs": [{"name": n, "type": "fine-tuned", "model": model_name, "parameters": p} for n, p in runs.items()]
        + [{"name": f"{model_name}_base", "type": "control", "model": model_name, "parameters": {}}],
    }
    (exp / "experiment_summary.yaml").write_text(yaml.safe_dump(summary, sort_keys=False))
    return exp, local_path


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m scaffold.testing.tiny_model OUTDIR``."""
    parser = argparse.ArgumentParser(prog="python -m scaffold.testing.tiny_model", description=__doc__.split("\n")[0])
    parser.add_argument("outdir", type=Path, help="writes OUTDIR/model and OUTDIR/data/capitalization.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family", choices=list(TINY_MODELS), default="llama3")
    args = parser.parse_args(argv)
    model_dir = TINY_MODELS[args.family][1](args.outdir / "model", seed=args.seed)
    # The dataset stays outside the model dir: the checkpointer copies that dir's other files to the output.
    data = write_capitalization_dataset(args.outdir / "data" / "capitalization.json")
    print(f"model: {model_dir}\ndata: {data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
