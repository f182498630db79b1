"""The pre-flight budget estimates (scaffold.estimates) against the figures measured with real torchtune
(templates/calibration.yaml's `measured` rows, runs of the shipped example's shape on one H200) and published model sizes."""

from __future__ import annotations

import pytest

from scaffold.estimates import Shape, architecture, calibration, estimate

LORA = {
    "method": "lora",
    "lora_rank": 8,
    "lora_attn_modules": ["q_proj", "v_proj", "output_proj"],
    "apply_lora_to_mlp": True,
    "batch_size": 4,
    "dtype": "bf16",
    "epochs": 1,
    "max_seq_len": 2048,
    "gpus": 1,
    "nodes": 1,
}


@pytest.mark.parametrize(
    "model, billions",
    [
        ("Llama-3.2-1B-Instruct", 1.24),
        ("Llama-3.2-3B-Instruct", 3.21),
        ("Llama-3.1-8B-Instruct", 8.03),
        ("Qwen2.5-3B", 3.09),
    ],
)
def test_parameter_counts_are_the_published_sizes(model: str, billions: float) -> None:
    assert Shape.of(architecture(model, None)).parameters / 1e9 == pytest.approx(billions, rel=0.01)


def test_peak_memory_is_within_30_percent_of_every_measurement() -> None:
    for row in calibration()["measured"]:
        if not row.get("peak_gib"):
            continue
        settings = {**LORA, "method": row["method"], "batch_size": row["batch_size"]}
        got = estimate(settings, architecture(row["model"], None), max_length=64).peak_gib
        assert got == pytest.approx(row["peak_gib"], rel=0.3), (row, got)


def test_activation_checkpointing_and_batch_move_the_peak_the_right_way() -> None:
    arch = architecture("Llama-3.2-1B-Instruct", None)
    base = estimate(LORA, arch, max_length=2048).peak_gib
    assert estimate({**LORA, "enable_activation_checkpointing": True}, arch, max_length=2048).peak_gib < base
    assert estimate({**LORA, "batch_size": 8}, arch, max_length=2048).peak_gib > base


def test_disk_counts_adapters_per_epoch_and_full_weights_for_full_fine_tuning() -> None:
    arch = architecture("Llama-3.2-1B-Instruct", None)
    one, three = (estimate({**LORA, "epochs": n}, arch) for n in (1, 3))
    assert one.trainable == 16 * (8 * (2048 + 2048) * 2 + 8 * (2048 + 512) + 3 * 8 * (2048 + 8192))
    assert (
        one.disk_bytes == 2 * one.trainable * 2 and three.disk_bytes == 3 * one.disk_bytes + 2 * 2 * one.trainable * 2
    )
    full = estimate({**LORA, "method": "full"}, arch)
    assert full.disk_bytes == full.parameters * 2


def test_time_is_the_audited_tokens_at_the_measured_rate_with_the_floor() -> None:
    arch = architecture("Llama-3.2-1B-Instruct", None)
    small = estimate(LORA, arch, train_records=80, p95_length=60)
    assert small.seconds == 15 * 60 and small.tokens == 80 * 60  # the original's 00:15:00 floor
    big = estimate({**LORA, "epochs": 3}, arch, train_records=200_000, p95_length=512)
    want = 3 * 200_000 * 512 / 8000 * 1.5 + 180 + 3 * 60
    assert want <= big.seconds < want + 300 and big.as_dict()["time"].count(":") == 2


def test_warnings_compare_with_free_space_and_the_sites_gpu_memory(tmp_path) -> None:
    arch = architecture("Llama-3.1-8B-Instruct", None)
    e = estimate({**LORA, "method": "full", "epochs": 50}, arch, output_dir=tmp_path / "run" / "artifacts")
    assert e.free_bytes is not None
    assert any("GPU memory" in w for w in e.warnings(80))
    assert not estimate(LORA, architecture("Llama-3.2-1B-Instruct", None), max_length=64).warnings(80)


def test_a_model_directory_config_is_read_again_when_it_changes(tmp_path) -> None:
    """Read once per version of config.json (every run of a sweep asks), so an edited one is seen."""
    import json
    import os

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"hidden_size": 64, "num_hidden_layers": 2}))
    assert architecture("Llama-3.2-1B-Instruct", tmp_path)["hidden_size"] == 64
    config.write_text(json.dumps({"hidden_size": 128, "num_hidden_layers": 2}))
    os.utime(config, ns=(1, 1))
    assert architecture("Llama-3.2-1B-Instruct", tmp_path)["hidden_size"] == 128
    config.write_text("{not json")
    os.utime(config, ns=(2, 2))
    assert architecture("Llama-3.2-1B-Instruct", tmp_path) == architecture("Llama-3.2-1B-Instruct", None)
