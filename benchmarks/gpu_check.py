"""One-shot GPU check (run on demand on a CUDA machine; CI never runs it).

Generates an experiment for a random-weight model of the real Llama-3.2-1B shape (torchtune's own
`lora_llama3_2_1b` builder, registered through a local config like any user model), then runs each fine-tuned
run's `tune run` line from its finetune.slurm on the GPU in bf16: the stock single-device recipe, this project's
validating recipe, and the distributed recipe (the script asks for 2 GPUs; run here with one process).
Writes losses, throughput and peak memory per run as JSON.

    python benchmarks/gpu_check.py --out OUTDIR
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import string
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scaffold.testing import tiny_model  # noqa: E402

STEPS = 30


def words(n: int, rng: random.Random) -> list[dict[str, str]]:
    out = []
    for _ in range(n):
        w = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 9)))
        out.append({"input": w, "output": w.capitalize()})
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/scaffold-gpu-check"))
    ap.add_argument("--device", default="cuda", help="where the random weights are drawn")
    ap.add_argument("--no-train", action="store_true", help="generate and deep-check only (a dry run off the GPU)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work
    results: dict = {"runs": {}}

    t = time.perf_counter()
    model_dir = tiny_model.make_tiny_llama(
        work / "models" / "Llama-3.2-1B-random", kw=tiny_model.LLAMA_3_2_1B_KWARGS, dtype="bfloat16", device=args.device
    )
    results["make_model_s"] = round(time.perf_counter() - t, 1)
    rng = random.Random(0)
    data = work / "data" / "capitalization.json"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text(json.dumps({"train": words(4000, rng), "validation": words(64, rng), "test": words(64, rng)}))

    entry = tiny_model.registry_entry()
    entry.update(
        lora_builder="torchtune.models.llama3_2.lora_llama3_2_1b", full_builder="torchtune.models.llama3_2.llama3_2_1b"
    )
    entry.pop("model_args")
    entry["resources"] = {"gpus": 1, "mem": "40G", "cpus_per_task": 4}
    local = work / "scaffold.local.yaml"
    local.write_text(
        yaml.safe_dump({"account": "gpu-check", "default_time": "01:00:00", "models": {"Llama-3.2-1B-random": entry}})
    )
    exp = work / "exp"
    exp.mkdir(parents=True, exist_ok=True)
    summary = {
        "experiment": {"name": "gpu_check", "project": "capitalization"},
        "tools": {"preparation": "torchtune"},
        "controls": {
            "system_prompt": "You are a helpful assistant.",
            "prompt": "Capitalize the given word: {input}\n",
            "batch_size": 4,
            "epochs": 1,
            "seed": 14,
            "lr": 1e-4,
            "max_steps_per_epoch": STEPS,
            "num_warmup_steps": 5,
            "metric_logger": "disk",
        },
        "models": {"base": [{"name": "Llama-3.2-1B-random", "path": str(model_dir)}]},
        "data": {"training": {"path": str(data), "splits": {"train": 4000, "validation": 64, "test": 64}}},
        "runs": [
            {"name": "L1B_rank8", "type": "fine-tuned", "model": "Llama-3.2-1B-random", "parameters": {"lora_rank": 8}},
            {
                "name": "L1B_val_rank8",
                "type": "fine-tuned",
                "model": "Llama-3.2-1B-random",
                "parameters": {"lora_rank": 8, "validation_during_training": True, "run_val_every_n_steps": 10},
            },
            {
                "name": "L1B_dist_rank16",
                "type": "fine-tuned",
                "model": "Llama-3.2-1B-random",
                "parameters": {"lora_rank": 16},
                "compute": {"gpus": 2},
            },
        ],
    }
    (exp / "experiment_summary.yaml").write_text(yaml.safe_dump(summary, sort_keys=False))
    gen = subprocess.run(
        [sys.executable, "-m", "scaffold", "generate", str(exp), "--local-config", str(local), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    results["generate"] = {"code": gen.returncode, "stderr": gen.stderr[-2000:]}
    (args.out / "generate.json").write_text(gen.stdout)
    if gen.returncode != 0:
        (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2))
        print(gen.stdout, gen.stderr)
        return 1

    from omegaconf import OmegaConf

    from scaffold.checks.components_bind import deep_check

    for run in ("L1B_rank8", "L1B_val_rank8", "L1B_dist_rank16"):
        run_dir = exp / run
        cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "finetune.yaml"), resolve=True)
        deep = deep_check(cfg)
        if args.no_train:
            print(run, [p.format() for p in deep] or "deep checks ok")
            continue
        (line,) = [ln for ln in (run_dir / "finetune.slurm").read_text().splitlines() if ln.startswith("tune run ")]
        command = line.removesuffix(" || status=$?").replace("--nproc_per_node 2", "--nproc_per_node 1")
        t = time.perf_counter()
        proc = subprocess.run(
            ["bash", "-c", command], cwd=run_dir, capture_output=True, text=True, env=os.environ.copy()
        )
        wall = time.perf_counter() - t
        (args.out / f"{run}.log").write_text((proc.stdout + proc.stderr)[-200_000:])
        logs = sorted((run_dir / "artifacts" / "logs").glob("log_*.txt"))
        text = logs[-1].read_text() if logs else ""
        num = r"([-\d.eE+]+)"
        losses = [float(x) for x in re.findall(rf"\| loss:{num}", text)]
        tps = [float(x) for x in re.findall(rf"tokens_per_second_per_gpu:{num}", text)]
        peak = [float(x) for x in re.findall(rf"peak_memory_alloc:{num}", text)]
        val = [float(x) for x in re.findall(rf"val_loss:{num}", text)]
        adapter = run_dir / "artifacts" / "epoch_0" / "adapter_config.json"
        results["runs"][run] = {
            "command": command,
            "exit": proc.returncode,
            "wall_s": round(wall, 1),
            "deep_checks": [p.format() for p in deep] or "ok",
            "steps": len(losses),
            "loss_first_last": [losses[0], losses[-1]] if losses else None,
            "val_loss": val,
            "median_tokens_per_s": sorted(tps)[len(tps) // 2] if tps else None,
            "peak_memory_alloc_gib": max(peak) if peak else None,
            "adapter_r": json.loads(adapter.read_text())["r"] if adapter.is_file() else None,
        }
        print(run, json.dumps(results["runs"][run]), flush=True)
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2))
    return 0 if all(r["exit"] == 0 for r in results["runs"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
