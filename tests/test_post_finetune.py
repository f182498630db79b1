"""The post-training step the batch script of a LoRA run runs after a successful `tune run`
(scaffold.torchtune_ext.post_finetune): each epoch's adapter_config.json names the local base model directory
instead of the Hub id; a merged save moves the adapter files aside first. Run as the script runs it, `python -m`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scaffold.torchtune_ext import post_finetune

HUB_ID = "meta-llama/Llama-3.2-1B-Instruct"
# What torchtune 0.6.1 writes (json.dump, one line), in its key order.
ADAPTER_CONFIG = {
    "r": 8,
    "lora_alpha": 16,
    "target_modules": ["q_proj", "v_proj"],
    "peft_type": "LORA",
    "base_model_name_or_path": HUB_ID,
    "task_type": "CAUSAL_LM",
}


def run_module(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scaffold.torchtune_ext.post_finetune", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """An output_dir as torchtune leaves it after two epochs of a LoRA run (adapter saved alone)."""
    out = tmp_path / "artifacts"
    for n in (0, 1):
        epoch = out / f"epoch_{n}"
        epoch.mkdir(parents=True)
        (epoch / "adapter_config.json").write_text(json.dumps(ADAPTER_CONFIG))
        (epoch / "adapter_model.pt").write_bytes(b"pt")
        (epoch / "adapter_model.safetensors").write_bytes(b"st")
        (epoch / "config.json").write_text("{}")
    (out / "logs").mkdir()
    return out


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "Llama-3.2-1B-Instruct"
    path.mkdir(parents=True)
    return path


def test_every_epoch_names_the_model_dir_and_keeps_the_rest(artifacts: Path, model_dir: Path) -> None:
    (artifacts / "epoch_0" / "adapter_config.json").chmod(0o644)
    proc = run_module("--output-dir", artifacts, "--model-dir", model_dir)
    assert proc.returncode == 0, proc.stderr
    for n in (0, 1):
        path = artifacts / f"epoch_{n}" / "adapter_config.json"
        data = json.loads(path.read_text())
        assert data == {**ADAPTER_CONFIG, "base_model_name_or_path": str(model_dir)}
        assert list(data) == list(ADAPTER_CONFIG), "the keys keep their order"
        line = f"epoch_{n}/adapter_config.json: base_model_name_or_path '{HUB_ID}' -> '{model_dir}'"
        assert line in proc.stdout
    assert (artifacts / "epoch_0" / "adapter_config.json").stat().st_mode & 0o777 == 0o644
    # Written through a temporary file and a rename: nothing else is left in the epoch directories.
    assert sorted(p.name for p in (artifacts / "epoch_1").iterdir()) == [
        "adapter_config.json",
        "adapter_model.pt",
        "adapter_model.safetensors",
        "config.json",
    ]
    assert proc.stderr == ""


def test_a_second_run_changes_nothing(artifacts: Path, model_dir: Path) -> None:
    assert run_module("--output-dir", artifacts, "--model-dir", model_dir).returncode == 0
    before = (artifacts / "epoch_0" / "adapter_config.json").read_text()
    proc = run_module("--output-dir", artifacts, "--model-dir", model_dir)
    assert proc.returncode == 0 and "is already" in proc.stdout
    assert (artifacts / "epoch_0" / "adapter_config.json").read_text() == before


def test_an_epoch_without_adapter_config_warns_and_exits_0(artifacts: Path, model_dir: Path) -> None:
    (artifacts / "epoch_1" / "adapter_config.json").unlink()
    proc = run_module("--output-dir", artifacts, "--model-dir", model_dir)
    assert proc.returncode == 0, proc.stderr
    assert "warning: epoch_1 has no adapter_config.json" in proc.stderr
    assert json.loads((artifacts / "epoch_0" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        model_dir
    )
    assert not (artifacts / "epoch_1" / "adapter_config.json").exists()


def test_no_epoch_at_all_warns_and_exits_0(tmp_path: Path, model_dir: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = run_module("--output-dir", tmp_path / "empty", "--model-dir", model_dir)
    assert proc.returncode == 0 and "no epoch_N directories" in proc.stderr


def test_merged_moves_the_adapter_aside_and_rewrites_it_there(artifacts: Path, model_dir: Path) -> None:
    (artifacts / "epoch_1" / "adapter_model.safetensors").unlink()  # whichever adapter files exist are moved
    proc = run_module("--output-dir", artifacts, "--model-dir", model_dir, "--merged")
    assert proc.returncode == 0, proc.stderr
    for n, moved in ((0, 3), (1, 2)):
        epoch = artifacts / f"epoch_{n}"
        aside = epoch / "adapter_weights"
        assert sorted(p.name for p in aside.iterdir()) == sorted(post_finetune.ADAPTER_FILES[:moved])
        assert not any((epoch / name).exists() for name in post_finetune.ADAPTER_FILES)
        assert (epoch / "config.json").exists(), "the merged model's files stay"
        data = json.loads((aside / "adapter_config.json").read_text())
        assert data == {**ADAPTER_CONFIG, "base_model_name_or_path": str(model_dir)}
        assert f"epoch_{n}/adapter_weights/adapter_config.json: base_model_name_or_path '{HUB_ID}'" in proc.stdout
    assert (artifacts / "epoch_0" / "adapter_weights" / "adapter_model.pt").read_bytes() == b"pt"
    # Again: nothing left to move, and the configs already name the model directory.
    proc = run_module("--output-dir", artifacts, "--model-dir", model_dir, "--merged")
    assert proc.returncode == 0 and proc.stdout.count("is already") == 2, proc.stdout + proc.stderr


def test_a_broken_adapter_config_fails_the_step_but_not_the_others(artifacts: Path, model_dir: Path) -> None:
    (artifacts / "epoch_0" / "adapter_config.json").write_text("{not json")
    proc = run_module("--output-dir", artifacts, "--model-dir", model_dir)
    assert proc.returncode == 1 and "error: epoch_0:" in proc.stderr
    assert json.loads((artifacts / "epoch_1" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        model_dir
    )


def test_a_missing_output_dir_fails(tmp_path: Path, model_dir: Path) -> None:
    proc = run_module("--output-dir", tmp_path / "nowhere", "--model-dir", model_dir)
    assert proc.returncode == 1 and "does not exist" in proc.stderr


def test_the_module_needs_no_torch() -> None:
    """It runs in the training environment after training; it must not pay for (or need) torch."""
    code = (
        "import sys; import scaffold.torchtune_ext.post_finetune; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchtune', 'yaml', 'jinja2')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
