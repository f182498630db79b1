"""Real torchtune in the loop (run by `nox -s integration`, which installs the pinned stack; skipped elsewhere).

Tiny random Llama-3.2-style and Qwen2.5-style models and tokenizers are made at test time
(scaffold.testing.tiny_model) and registered as a model in the test's local config, so the generator's normal
path is what gets exercised.
Each fine-tuned run is trained for two steps on CPU with the exact `tune run` line of its finetune.slurm.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torchtune", reason="torchtune is not installed here: run `nox -s integration`")

from omegaconf import OmegaConf  # noqa: E402

from scaffold.checks.components_bind import deep_check  # noqa: E402
from scaffold.testing import tiny_model  # noqa: E402

from ..conftest import EXAMPLE, EXAMPLE_LOCAL, run_cli  # noqa: E402

pytestmark = pytest.mark.integration

RUNS = {
    # name: (parameters, dataset type, validation)
    "Tiny-Llama_rank4_lr1e-4": {"lora_rank": 4, "lr": 1e-4},
    "Tiny-Llama_rank8_lr1e-3": {"lora_rank": 8, "lr": 1e-3},
    "Tiny-Llama_text_rank4": {"lora_rank": 4, "dataset_type": "text_completion"},
    "Tiny-Llama_val_rank8": {"lora_rank": 8, "validation_during_training": True, "run_val_every_n_steps": 1},
}
# The tiny Qwen2.5 (QWEN2 checkpoint conversion, q/k/v biases, qwen2_5_tokenizer with the tiny special tokens).
QWEN_RUNS = {
    "Tiny-Qwen_rank4_lr1e-3": {"lora_rank": 4, "lr": 1e-3},
    "Tiny-Qwen_text_rank8": {"lora_rank": 8, "dataset_type": "text_completion"},
}


def _generate(root: Path, runs: dict, family: str) -> Path:
    local = {"account": "test", "venv": sys.prefix, "default_time": "00:10:00"}
    exp, _ = tiny_model.write_experiment(root, "tiny", runs, local, family=family)
    res = run_cli("generate", exp, "--local-config", root / "scaffold.local.yaml")
    assert res.code == 0, res.out + res.err
    return exp


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    return _generate(tmp_path_factory.mktemp("tt"), RUNS, "llama3")


@pytest.fixture(scope="module")
def qwen_experiment(tmp_path_factory) -> Path:
    return _generate(tmp_path_factory.mktemp("tt_qwen"), QWEN_RUNS, "qwen2")


def launch_line(run_dir: Path) -> str:
    """The `tune run ...` command of the run's batch script, as the script runs it."""
    (line,) = [ln for ln in (run_dir / "finetune.slurm").read_text().splitlines() if ln.startswith("tune run ")]
    return line.removesuffix(" || status=$?")


def metric_lines(run_dir: Path) -> list[str]:
    logs = sorted((run_dir / "artifacts" / "logs").glob("log_*.txt"))
    assert logs, "no metric log written"
    return logs[-1].read_text().splitlines()


def train(run_dir: Path, params: dict) -> list[float]:
    """Run the run's `tune run` line as its batch script would; check the adapter and two finite losses."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "TIKTOKEN_CACHE_DIR": "",
    }
    proc = subprocess.run(
        ["bash", "-c", launch_line(run_dir)], cwd=run_dir, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    epoch = run_dir / "artifacts" / "epoch_0"
    assert (epoch / "adapter_model.safetensors").is_file() and (epoch / "adapter_config.json").is_file()
    adapter = json.loads((epoch / "adapter_config.json").read_text())
    assert adapter["r"] == params["lora_rank"] and adapter["lora_alpha"] == 2 * params["lora_rank"]
    lines = metric_lines(run_dir)
    losses = [float(m) for ln in lines for m in re.findall(r"\| loss:([-\d.eE+naif]+)", ln)]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses), lines
    print(f"{run_dir.name}: losses {losses}")
    (run_dir / "artifacts" / "losses.json").write_text(json.dumps(losses))
    if params.get("validation_during_training"):
        val = [float(m) for ln in lines for m in re.findall(r"val_loss:([-\d.eE+naif]+)", ln)]
        assert len(val) >= 2 and all(math.isfinite(x) for x in val), lines
        print(f"{run_dir.name}: validation losses {val}")
    return losses


@pytest.mark.parametrize("run", list(RUNS))
def test_generated_config_trains_on_cpu(experiment: Path, run: str) -> None:
    train(experiment / run, RUNS[run])


@pytest.mark.parametrize("run", list(QWEN_RUNS))
def test_generated_qwen_config_trains_on_cpu(qwen_experiment: Path, run: str) -> None:
    run_dir = qwen_experiment / run
    cfg = OmegaConf.load(run_dir / "finetune.yaml")
    assert cfg.checkpointer.model_type == "QWEN2" and cfg.model._component_ == "torchtune.models.qwen2.lora_qwen2"
    assert Path(cfg.tokenizer.special_tokens_path).name == "tokenizer.json"
    train(run_dir, QWEN_RUNS[run])


def test_runs_differ_by_their_settings(experiment: Path) -> None:
    """Same data and seed, different rank and learning rate: the second step's losses must differ, so the
    values of the summary really reached the trainer."""
    losses = {}
    for run in ("Tiny-Llama_rank4_lr1e-4", "Tiny-Llama_rank8_lr1e-3"):
        path = experiment / run / "artifacts" / "losses.json"
        if not path.is_file():
            pytest.skip("the training tests did not run first")
        losses[run] = json.loads(path.read_text())
    a, b = losses.values()
    assert a[0] == pytest.approx(b[0], rel=1e-6)  # LoRA starts as the identity: same first loss
    assert a[1] != pytest.approx(b[1], rel=1e-6)


@pytest.mark.parametrize("run", list(RUNS) + list(QWEN_RUNS))
def test_deep_checks_pass_on_generated_configs(request, run: str) -> None:
    exp = request.getfixturevalue("qwen_experiment" if run in QWEN_RUNS else "experiment")
    cfg = OmegaConf.to_container(OmegaConf.load(exp / run / "finetune.yaml"), resolve=True)
    assert deep_check(cfg) == []


def test_deep_checks_pass_on_the_shipped_example(tmp_path: Path) -> None:
    """The real Llama-3.2-1B builders bind the example's arguments (no weights are needed for that)."""
    import shutil

    exp = tmp_path / "cap"
    shutil.copytree(EXAMPLE, exp, ignore=shutil.ignore_patterns("Llama-*", "logs", "arrays", ".scaffold-manifest.json"))
    assert run_cli("generate", exp, "--local-config", EXAMPLE_LOCAL, "--no-check-paths").code == 0
    for run_dir in exp.glob("Llama-*_rank*"):
        cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "finetune.yaml"), resolve=True)
        assert deep_check(cfg) == [], run_dir.name


@pytest.mark.parametrize(
    ("section", "key", "value", "check"),
    [
        ("model", "_component_", "torchtune.models.llama3_2.lora_llama3_2_1bb", "component_imports"),
        ("optimizer", "_component_", "torch.optim.AdamWW", "component_imports"),
        ("loss", "_component_", "torchtune.modules.loss.CEWithChunkedOutputLos", "component_imports"),
        ("optimizer", "betas2", 0.9, "component_binds"),
        ("model", "lora_rnk", 8, "component_binds"),
        ("lr_scheduler", "warmup_steps", 10, "component_binds"),
        ("tokenizer", "max_len", 128, "component_binds"),
        ("dataset", "feild", "train", "component_binds"),
        ("model", "lora_attn_modules", ["q_proj", "o_proj"], "lora_attn_modules"),
    ],
)
def test_planted_defects_fail_the_deep_checks(experiment: Path, section: str, key: str, value, check: str) -> None:
    cfg = OmegaConf.to_container(OmegaConf.load(experiment / "Tiny-Llama_rank4_lr1e-4" / "finetune.yaml"), resolve=True)
    bad = copy.deepcopy(cfg)
    bad[section][key] = value
    failed = deep_check(bad)
    assert [(p.message.partition(":")[0], p.field) for p in failed] == [(check, section)], failed
