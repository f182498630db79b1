"""Pre-flight budget estimates of a run, reported (not gating): checkpoint disk, peak GPU memory and wall time.

Each is a documented model over the run's settings, the model's shape and the token audit's lengths, calibrated
by templates/calibration.yaml (where every figure says where it comes from; add your cluster's measurements
there). How far off each can be, on the evidence available, is in docs/training.md ("Pre-flight estimates").

- disk: the adapter (LoRA: rank x (in + out) for each adapted projection, in the run's dtype, saved twice per
  epoch by torchtune 0.6.1: `adapter_model.pt` and `adapter_model.safetensors`) or the full weights, each epoch,
  plus the optimizer state torchtune keeps for resuming at every epoch but the last;
- memory: the weights, the trainable parameters with their gradients and AdamW's two states, the activations of
  one micro-batch at the audited longest length (per token, per layer, per unit of hidden size; less with
  activation checkpointing), the logits, and a fitted runtime overhead;
- time: the audited tokens of every epoch (each batch padded to its longest record: records x the 95th
  percentile length, a conservative stand-in), at the nearest measured tokens/s scaled by the parameter count,
  times a margin, plus start-up and a checkpoint save per epoch; never below the original's 00:15:00.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .resources import load_data
from .stamps import cached_by_stamp
from .timeutil import format_time, parse_time

GIB = 1024**3
_DTYPE_BYTES = {"bf16": 2, "fp32": 4}
_ATTN = ("q_proj", "k_proj", "v_proj", "output_proj")


def calibration() -> dict[str, Any]:
    return load_data("calibration.yaml")


def architecture(model: str, model_dir: Path | None) -> dict[str, Any] | None:
    """The model's shape: its directory's config.json when readable here, else the calibration table's. (Shared:
    not to be changed by the caller.)"""
    data = _model_config(model_dir / "config.json") if model_dir is not None else None
    if isinstance(data, dict) and "hidden_size" in data and "num_hidden_layers" in data:
        return data
    return calibration()["architectures"].get(model)


@cached_by_stamp(maxsize=16)
def _model_config(path: Path) -> Any:
    """A model's config.json, read once per version of the file (every run of a sweep on the model asks)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool

    @classmethod
    def of(cls, a: dict[str, Any]) -> Shape:
        return cls(
            int(a["hidden_size"]),
            int(a["num_hidden_layers"]),
            int(a["intermediate_size"]),
            int(a["num_attention_heads"]),
            int(a.get("num_key_value_heads") or a["num_attention_heads"]),
            int(a["vocab_size"]),
            bool(a.get("tie_word_embeddings", False)),
        )

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    def projections(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each projection of one layer."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return {
            "q_proj": (h, h),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "output_proj": (h, h),
            "w1": (h, i),
            "w3": (h, i),
            "w2": (i, h),
        }

    @property
    def parameters(self) -> int:
        per_layer = sum(a * b for a, b in self.projections().values()) + 2 * self.hidden
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * per_layer + embeddings + self.hidden

    def lora_parameters(self, rank: int, modules: list[str], mlp: bool) -> int:
        chosen = [m for m in _ATTN if m in modules] + (["w1", "w2", "w3"] if mlp else [])
        shapes = self.projections()
        return self.layers * sum(rank * (shapes[m][0] + shapes[m][1]) for m in chosen)


@dataclass(frozen=True)
class Estimate:
    parameters: int
    trainable: int
    disk_bytes: int
    peak_gib: float
    seconds: int | None  # None without audited lengths
    tokens: int | None
    free_bytes: int | None  # of the output filesystem, where it can be read

    def as_dict(self) -> dict[str, Any]:
        return {
            "parameters": self.parameters,
            "trainable_parameters": self.trainable,
            "checkpoint_disk_gb": round(self.disk_bytes / 1e9, 3),
            "output_free_gb": None if self.free_bytes is None else round(self.free_bytes / 1e9, 1),
            "peak_gpu_memory_gib": round(self.peak_gib, 1),
            "tokens": self.tokens,
            "time": None if self.seconds is None else format_time(self.seconds),
        }

    def line(self) -> str:
        free = "" if self.free_bytes is None else f" of {self.free_bytes / 1e9:.1f} GB free"
        time = "" if self.seconds is None else f"; time ~{format_time(self.seconds)} for {self.tokens} tokens"
        return (
            f"estimates (not calibrated beyond templates/calibration.yaml): checkpoints ~{self.disk_bytes / 1e9:.2f} "
            f"GB{free}; peak GPU memory ~{self.peak_gib:.1f} GiB; {self.trainable:,} of {self.parameters:,} "
            f"parameters trained{time}"
        )

    def warnings(self, gpu_memory_gib: float | None) -> list[str]:
        out = []
        if self.free_bytes is not None and self.disk_bytes > self.free_bytes:
            out.append(
                f"the checkpoints need ~{self.disk_bytes / 1e9:.1f} GB and the output filesystem has "
                f"{self.free_bytes / 1e9:.1f} GB free"
            )
        if gpu_memory_gib is not None and self.peak_gib > gpu_memory_gib:
            out.append(
                f"the estimated peak GPU memory (~{self.peak_gib:.1f} GiB) is over the site's {gpu_memory_gib:g} GiB "
                "per GPU (lower batch_size, enable_activation_checkpointing: true, or more GPUs)"
            )
        return out


def _free_bytes(output_dir: Path | None) -> int | None:
    import shutil

    path = output_dir
    while path is not None and not path.exists():
        path = path.parent if path.parent != path else None
    try:
        return shutil.disk_usage(path).free if path is not None else None
    except OSError:
        return None


def tokens_per_second(shape: Shape, settings: dict[str, Any]) -> float:
    """The nearest measured rate (same method, else any), scaled by the parameter count."""
    rows = [r for r in calibration()["measured"] if r.get("tokens_per_second")]
    same = [r for r in rows if r.get("method") == settings.get("method", "lora")] or rows
    row = same[0]
    measured = architecture(row["model"], None)
    scale = Shape.of(measured).parameters / shape.parameters if measured else 1.0
    return float(row["tokens_per_second"]) * scale


def estimate(
    settings: dict[str, Any],
    arch: dict[str, Any],
    *,
    train_records: int | None = None,
    p95_length: int | None = None,
    max_length: int | None = None,
    output_dir: Path | None = None,
) -> Estimate:
    cal = calibration()
    shape = Shape.of(arch)
    dtype = _DTYPE_BYTES.get(settings.get("dtype", "bf16"), 2)
    epochs = int(settings.get("epochs") or 1)
    params = shape.parameters
    lora = settings.get("method", "lora") == "lora"
    trainable = (
        shape.lora_parameters(
            int(settings["lora_rank"]),
            list(settings.get("lora_attn_modules") or []),
            bool(settings.get("apply_lora_to_mlp")),
        )
        if lora
        else params
    )
    saved = 2 * trainable * dtype if lora else params * dtype
    optimizer_state = 2 * trainable * dtype
    disk = epochs * saved + max(0, epochs - 1) * optimizer_state
    world = max(1, int(settings.get("gpus") or 1)) * max(1, int(settings.get("nodes") or 1))
    # LoRA: the frozen weights, and each trainable parameter with its gradient and AdamW's two states; full
    # fine-tuning: every parameter so, sharded over the GPUs (FSDP).
    model_state = params * dtype + trainable * dtype * 4 if lora else params * dtype * 4 / world
    length = max_length or int(settings.get("max_seq_len") or 2048)
    per = cal["activation_bytes_per_token_hidden_layer"]
    act_factor = per["checkpointed"] if settings.get("enable_activation_checkpointing") else per["plain"]
    batch = int(settings.get("batch_size") or 1)
    activations = batch * length * shape.hidden * shape.layers * act_factor
    logits = batch * length * shape.vocab * 4  # fp32 for the loss
    peak = (model_state + activations + logits) / GIB + float(cal["runtime_overhead_gib"])
    seconds = tokens = None
    if train_records is not None and p95_length is not None:
        tokens = epochs * train_records * min(p95_length, int(settings.get("max_seq_len") or p95_length))
        rate = tokens_per_second(shape, settings) * world
        seconds = (
            tokens / rate * float(cal["time_margin"]) + cal["startup_seconds"] + epochs * cal["save_seconds_per_epoch"]
        )
        floor = parse_time(cal["floor"]) or 900
        seconds = max(floor, int(math.ceil(seconds / 300.0)) * 300)
    return Estimate(params, trainable, int(disk), peak, seconds, tokens, _free_bytes(output_dir))
