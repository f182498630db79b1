"""Multi-GPU, multi-node and requeue batch scripts, by what they say and by what they do (no cluster needed).

The scripts are generated from a summary and then run by bash with stand-ins for the cluster's commands
(`tune`, `srun`, `scontrol`, `getent`) put on PATH by the run's environment activation (the local config's
`venv`), exactly as a site's environment would be: the scripts are never edited.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .conftest import EXAMPLE, EXAMPLE_LOCAL, Experiment, run_cli

MODEL = "Llama-3.2-1B-Instruct"
RUNS = {
    # name: (parameters, compute)
    f"{MODEL}_gpus4": ({"lora_rank": 8}, {"gpus": 4}),
    f"{MODEL}_full": ({"method": "full"}, {}),
    f"{MODEL}_full_gpus4": ({"method": "full"}, {"gpus": 4}),
    f"{MODEL}_full_2nodes": ({"method": "full"}, {"gpus": 4, "nodes": 2, "time": "04:00:00"}),
    f"{MODEL}_rank8_requeue": ({"lora_rank": 8, "requeue": True}, {"time": "02:00:00"}),
    f"{MODEL}_full_2nodes_requeue": ({"method": "full", "requeue": True}, {"gpus": 2, "nodes": 2}),
}

# Stand-ins for the cluster's commands. Each records how it was called in $STUB_LOG.
STUBS = {
    "tune": """#!/bin/bash
echo "tune $*" >> "$STUB_LOG/calls"
touch "$STUB_LOG/tune.started"
if [ -n "$TUNE_WAIT_FOR" ]; then
  for _ in $(seq 1 100); do [ -e "$TUNE_WAIT_FOR" ] && break; sleep 0.1; done
fi
if [ -n "$TUNE_ADAPTER_TO" ]; then  # what torchtune 0.6.1 saves at the end of an epoch of a LoRA run
  mkdir -p "$TUNE_ADAPTER_TO/epoch_0"
  printf '%s' '{"r": 8, "base_model_name_or_path": "meta-llama/Llama-3.2-1B-Instruct", "peft_type": "LORA"}' \
    > "$TUNE_ADAPTER_TO/epoch_0/adapter_config.json"
  # The checkpointer copies the model directory's files that are not weights (the tokenizer's among them).
  if [ -n "$TUNE_TOKENIZER_FROM" ]; then cp "$TUNE_TOKENIZER_FROM"/*.json "$TUNE_ADAPTER_TO/epoch_0/"; fi
fi
exit "${TUNE_EXIT:-0}"
""",
    "srun": """#!/bin/bash
echo "srun $*" >> "$STUB_LOG/calls"
while [[ "$1" == --* ]]; do shift; done
exec "$@"
""",
    "scontrol": """#!/bin/bash
echo "scontrol $*" >> "$STUB_LOG/calls"
if [ "$1 $2" = "show hostnames" ]; then printf '%s\\n' $STUB_HOSTNAMES; fi
""",
    "getent": """#!/bin/bash
echo "getent $*" >> "$STUB_LOG/calls"
echo "$STUB_ADDR STREAM $2"
""",
}


# The training environment's python (where scaffold-torchtune is installed): this one, recording its calls.
PYTHON_STUB = f"""#!/bin/bash
echo "python $*" >> "$STUB_LOG/calls"
exec {shlex.quote(sys.executable)} "$@"
"""
# nvidia-smi, on PATH only where a test puts it: prints a CSV header and one sample, then samples on until killed.
NVIDIA_SMI_STUB = """#!/bin/bash
echo "nvidia-smi $*" >> "$STUB_LOG/calls"
echo "timestamp, utilization.gpu [%], utilization.memory [%], memory.used [MiB], memory.total [MiB], power.draw [W], temperature.gpu"
echo "2026/01/01 00:00:00.000, 97 %, 41 %, 30000 MiB, 81559 MiB, 350.00 W, 61"
echo $$ > "$STUB_LOG/nvidia-smi.pid"
exec sleep 300
"""


def make_stub_venv(root: Path) -> Path:
    """A directory shaped like a virtualenv whose activation puts the stand-ins first on PATH."""
    venv = root / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text(f'export PATH="{venv / "bin"}:$PATH"\n')
    for name, text in {**STUBS, "python": PYTHON_STUB}.items():
        (venv / "bin" / name).write_text(text)
        (venv / "bin" / name).chmod(0o755)
    return venv


def experiment(root: Path, runs: dict, local_extra: dict | None = None) -> Experiment:
    """The shipped example with these runs, and a local config that activates the stub venv (no modules or
    conda); experiment.dir is left unset so that generated paths are the local ones."""
    import shutil

    exp = root / "exp"
    shutil.copytree(EXAMPLE, exp, ignore=shutil.ignore_patterns("Llama-*", "logs", "arrays", ".scaffold-manifest.json"))
    data = yaml.safe_load((exp / "experiment_summary.yaml").read_text())
    del data["experiment"]["dir"]
    del data["variables"]
    data["controls"]["epochs"] = 3
    data["controls"]["batch_size"] = 1  # the example dataset has 8 records: one step even on 8 GPUs
    data["runs"] = [
        {"name": name, "type": "fine-tuned", "model": MODEL, "parameters": p, **({"compute": c} if c else {})}
        for name, (p, c) in runs.items()
    ]
    (exp / "experiment_summary.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    local = yaml.safe_load(EXAMPLE_LOCAL.read_text())
    for key in ("modules", "conda_env"):
        local.pop(key, None)
    local["venv"] = str(make_stub_venv(root))
    local.update(local_extra or {})
    (root / "scaffold.local.yaml").write_text(yaml.safe_dump(local))
    return Experiment(exp, root / "scaffold.local.yaml")


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Experiment:
    exp = experiment(tmp_path_factory.mktemp("slurm-render"), RUNS)
    res = exp.generate("--no-check-paths")
    assert res.code == 0, res.out + res.err
    return exp


def script(exp: Experiment, run: str) -> str:
    return (exp.dir / run / "finetune.slurm").read_text()


def directives(text: str) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in text.splitlines() if line.startswith("#SBATCH ")]


def launch(text: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(("tune run ", "srun "))]
    return line


# --- what the scripts say ---------------------------------------------------------------------------------------


def test_every_script_parses(generated: Experiment) -> None:
    for run in RUNS:
        proc = subprocess.run(["bash", "-n", str(generated.dir / run / "finetune.slurm")], capture_output=True)
        assert proc.returncode == 0, (run, proc.stderr)


def test_multi_gpu_runs_torchrun_with_one_process_per_gpu(generated: Experiment) -> None:
    text = script(generated, f"{MODEL}_gpus4")
    assert "--gres=gpu:4" in directives(text) and "--nodes=1" in directives(text)
    config = generated.dir / f"{MODEL}_gpus4" / "finetune.yaml"
    assert launch(text) == f"tune run --nproc_per_node 4 lora_finetune_distributed --config {config} || status=$?"
    assert "srun" not in text and "--requeue" not in text


@pytest.mark.parametrize(
    ("run", "recipe"),
    [(f"{MODEL}_full", "full_finetune_single_device"), (f"{MODEL}_full_gpus4", "full_finetune_distributed")],
)
def test_full_fine_tuning_uses_the_full_recipes_and_builder(generated: Experiment, run: str, recipe: str) -> None:
    text = script(generated, run)
    assert f" {recipe} --config " in launch(text)
    cfg = yaml.safe_load((generated.dir / run / "finetune.yaml").read_text())
    assert cfg["model"] == {"_component_": "torchtune.models.llama3_2.llama3_2_1b"}
    assert "save_adapter_weights_only" not in cfg
    assert ("optimizer_in_bwd" in cfg) == (recipe == "full_finetune_single_device")


def test_multi_node_runs_one_torchrun_per_node_with_a_rendezvous(generated: Experiment) -> None:
    text = script(generated, f"{MODEL}_full_2nodes")
    assert {"--nodes=2", "--ntasks-per-node=1", "--gres=gpu:4"} <= set(directives(text))
    assert launch(text).startswith(
        "srun --nodes=2 --ntasks-per-node=1 --kill-on-bad-exit=1 tune run --nnodes 2 --nproc_per_node 4 "
        '--rdzv_id "$SLURM_JOB_ID" --rdzv_backend c10d --rdzv_endpoint "$rdzv_endpoint" full_finetune_distributed '
    )
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p' in text
    assert "$((29500 + SLURM_JOB_ID % 1000))" in text


def test_requeue_adds_the_directives_and_the_trap(generated: Experiment) -> None:
    text = script(generated, f"{MODEL}_rank8_requeue")
    assert {"--requeue", "--open-mode=append", "--signal=B:USR1@300"} <= set(directives(text))
    assert "trap requeue_job USR1" in text and 'scontrol requeue "$job"' in text
    assert launch(text).endswith(
        '--config {} "${{resume[@]}}" &'.format(generated.dir / f"{MODEL}_rank8_requeue" / "finetune.yaml")
    )
    # Without requeue, none of it.
    plain = script(generated, f"{MODEL}_gpus4")
    assert "trap" not in plain and "--signal" not in plain and "resume" not in plain


def test_the_requeue_signal_comes_at_most_halfway(tmp_path: Path) -> None:
    exp = experiment(tmp_path, {f"{MODEL}_requeue": ({"requeue": True}, {"time": "00:04:00"})})
    assert exp.generate("--no-check-paths").code == 0
    assert "--signal=B:USR1@120" in directives(script(exp, f"{MODEL}_requeue"))


@pytest.mark.parametrize(
    ("site", "nodes", "gpu_line"),
    [
        ("gres", 1, "--gres=gpu:4"),
        ("gpus", 1, "--gpus=4"),
        ("gpus-per-node", 1, "--gpus-per-node=4"),
        ("gres", 2, "--gres=gpu:4"),
        ("gpus-per-node", 2, "--gpus-per-node=4"),
    ],
)
def test_gpu_request_follows_the_site_syntax(tmp_path: Path, site: str, nodes: int, gpu_line: str) -> None:
    params = {"method": "full"} if nodes > 1 else {}
    exp = experiment(tmp_path, {f"{MODEL}_x": (params, {"gpus": 4, "nodes": nodes})}, {"gpu_directive": site})
    res = exp.generate("--no-check-paths")
    assert res.code == 0, res.err
    gpu_lines = [d for d in directives(script(exp, f"{MODEL}_x")) if d.startswith(("--gres", "--gpus"))]
    assert gpu_lines == [gpu_line]


# --- what is refused ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "compute", "local", "field", "message"),
    [
        ({}, {"nodes": 2}, {}, "runs[0].compute.nodes", "multi-node LoRA fine-tuning is not supported"),
        ({"method": "full"}, {"nodes": 2, "gpus": 0}, {}, "runs[0].compute.nodes", "2 nodes need GPUs"),
        ({"method": "full"}, {"nodes": 2}, {"gpu_directive": "gpus"}, "gpu_directive", "may spread unevenly"),
        (
            {"method": "full", "validation_during_training": True},
            {},
            {},
            "runs[0].parameters.validation_during_training",
            "with method full",
        ),
        ({"method": "full", "lora_rank": 16}, {}, {}, "runs[0].parameters.lora_rank", "lora_rank is a LoRA setting"),
    ],
)
def test_unsupported_combinations_are_refused(
    tmp_path: Path, params: dict, compute: dict, local: dict, field: str, message: str
) -> None:
    exp = experiment(tmp_path, {f"{MODEL}_x": (params, compute)}, local)
    res = exp.generate("--no-check-paths")
    assert res.code == 1, res.out + res.err
    (line,) = [ln for ln in (res.out + res.err).splitlines() if f"{field}:" in ln]
    assert message in line and "(fix: " in line, line
    assert not (exp.dir / f"{MODEL}_x" / "finetune.slurm").exists()


def test_a_full_run_named_with_a_lora_token_is_refused(tmp_path: Path) -> None:
    exp = experiment(tmp_path, {f"{MODEL}_full_rank8": ({"method": "full"}, {})})
    res = exp.generate("--no-check-paths")
    assert res.code == 1 and "the run name spells lora_rank, a LoRA setting" in res.out, res.out + res.err


def test_setup_finetune_refuses_multi_node_lora(generated: Experiment, tmp_path: Path) -> None:
    import shutil

    exp = tmp_path / "exp"
    shutil.copytree(generated.dir, exp)
    summary = (exp / "experiment_summary.yaml").read_text()
    run_dir = exp / f"{MODEL}_gpus4"
    args = ("--dir", run_dir, "--local-config", generated.local, "--no-check-paths", "--nodes", "2")
    res = run_cli("setup-finetune", *args)
    assert res.code == 2, res.out + res.err  # the change is invalid: nothing is written
    assert "multi-node LoRA fine-tuning is not supported by torchtune 0.6.1" in res.err and "2 nodes asked" in res.err
    assert "set method: full" in res.err  # the planner's words: one rule (scaffold.rules), one message
    assert (exp / "experiment_summary.yaml").read_text() == summary


# --- what the scripts do (bash, with stand-ins for tune, srun, scontrol, getent) -------------------------------------


def run_script(
    exp: Experiment, run: str, tmp_path: Path, env: dict[str, str], *, wait: bool = True
) -> subprocess.Popen | subprocess.CompletedProcess:
    log = tmp_path / "stub-log"
    log.mkdir(exist_ok=True)
    # No nvidia-smi of this machine's (a test that wants one puts its own first on PATH).
    path = os.pathsep.join(
        d for d in os.environ.get("PATH", "").split(os.pathsep) if not (Path(d) / "nvidia-smi").exists()
    )
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SLURM_")},
        "PATH": path,
        "STUB_LOG": str(log),
        "SLURM_JOB_ID": "12345",
        "SLURM_JOB_NODELIST": "node[1-2]",
        "STUB_HOSTNAMES": "node1 node2",
        "STUB_ADDR": "10.1.2.3",
        **env,
    }
    cmd = ["bash", str(exp.dir / run / "finetune.slurm")]
    if not wait:
        return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=60)


def calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "stub-log" / "calls"
    return path.read_text().splitlines() if path.exists() else []


def test_multi_node_meets_at_the_first_nodes_address(generated: Experiment, tmp_path: Path) -> None:
    proc = run_script(generated, f"{MODEL}_full_2nodes", tmp_path, {"SLURM_JOB_NUM_NODES": "2"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (tune,) = [c for c in calls(tmp_path) if c.startswith("tune ")]
    assert "--nnodes 2 --nproc_per_node 4 --rdzv_id 12345 --rdzv_backend c10d --rdzv_endpoint 10.1.2.3:29845 " in tune
    assert "getent ahostsv4 node1" in calls(tmp_path)
    assert "rendezvous at 10.1.2.3:29845" in proc.stdout


@pytest.mark.parametrize("address", ["127.0.1.1", "127.0.0.1", "::1"])
def test_multi_node_fails_loudly_on_a_loopback_address(generated: Experiment, tmp_path: Path, address: str) -> None:
    proc = run_script(generated, f"{MODEL}_full_2nodes", tmp_path, {"SLURM_JOB_NUM_NODES": "2", "STUB_ADDR": address})
    assert proc.returncode == 1
    assert f"the first node node1 resolves to the loopback address {address}" in proc.stderr
    assert not [c for c in calls(tmp_path) if c.startswith(("tune ", "srun "))]


def test_one_node_may_rendezvous_on_loopback(generated: Experiment, tmp_path: Path) -> None:
    """`sbatch --nodes=1` on the command line overrides the script: one node reaches itself on loopback."""
    env = {"SLURM_JOB_NUM_NODES": "1", "STUB_ADDR": "127.0.0.1", "STUB_HOSTNAMES": "node1"}
    proc = run_script(generated, f"{MODEL}_full_2nodes", tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    assert any("--rdzv_endpoint 127.0.0.1:29845" in c for c in calls(tmp_path))


def test_the_script_exits_with_the_trainers_status(generated: Experiment, tmp_path: Path) -> None:
    for run in (f"{MODEL}_gpus4", f"{MODEL}_rank8_requeue"):
        proc = run_script(generated, run, tmp_path, {"TUNE_EXIT": "3"})
        assert proc.returncode == 3 and "tune run exited with status 3" in proc.stdout, run
    assert not [c for c in calls(tmp_path) if c.startswith("python ")], "no post-training step after a failure"


def make_checkpoints(output_dir: Path, files: list[str], newer_epoch: int | None = None) -> None:
    """epoch_0 weights, then the recipe state, then (optionally) a later epoch cut short before its state."""
    past = time.time() - 100
    for name in files:
        path = output_dir / "epoch_0" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"w")
        os.utime(path, (past, past))
    state = output_dir / "recipe_state" / "recipe_state.pt"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_bytes(b"s")
    os.utime(state, (past + 10, past + 10))
    if newer_epoch is not None:
        for name in files:
            path = output_dir / f"epoch_{newer_epoch}" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"w")


def test_first_start_does_not_resume(generated: Experiment, tmp_path: Path) -> None:
    run = f"{MODEL}_rank8_requeue"
    make_checkpoints(generated.dir / run / "artifacts", ["adapter_model.pt"])
    try:
        proc = run_script(generated, run, tmp_path, {})
    finally:
        import shutil

        shutil.rmtree(generated.dir / run / "artifacts")
        (generated.dir / run / "artifacts").mkdir()
    assert proc.returncode == 0
    (tune,) = [c for c in calls(tmp_path) if c.startswith("tune ")]
    assert tune.endswith("finetune.yaml"), tune


def test_a_restarted_lora_run_resumes_from_its_last_complete_epoch(tmp_path: Path) -> None:
    exp = experiment(tmp_path, {f"{MODEL}_requeue": ({"requeue": True}, {})})
    assert exp.generate("--no-check-paths").code == 0
    run = f"{MODEL}_requeue"
    proc = run_script(exp, run, tmp_path, {"SLURM_RESTART_COUNT": "1"})
    assert "restart 1: no complete epoch checkpoint, training from the start" in proc.stdout
    make_checkpoints(exp.dir / run / "artifacts", ["adapter_model.pt"], newer_epoch=1)  # epoch_1 was cut short
    (tmp_path / "stub-log" / "calls").unlink()
    proc = run_script(exp, run, tmp_path, {"SLURM_RESTART_COUNT": "2"})
    assert proc.returncode == 0, proc.stderr
    (tune,) = [c for c in calls(tmp_path) if c.startswith("tune ")]
    assert tune.endswith(
        "finetune.yaml resume_from_checkpoint=True checkpointer.recipe_checkpoint=recipe_state/recipe_state.pt "
        "checkpointer.adapter_checkpoint=epoch_0/adapter_model.pt"
    ), tune
    assert f"restart 2: resuming from {exp.dir / run / 'artifacts' / 'epoch_0'}" in proc.stdout


def test_a_restarted_full_run_resumes_from_its_epoch_shards(generated: Experiment, tmp_path: Path) -> None:
    run = f"{MODEL}_full_2nodes_requeue"
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    make_checkpoints(generated.dir / run / "artifacts", shards)
    proc = run_script(generated, run, tmp_path, {"SLURM_RESTART_COUNT": "1", "SLURM_JOB_NUM_NODES": "2"})
    assert proc.returncode == 0, proc.stderr
    (tune,) = [c for c in calls(tmp_path) if c.startswith("tune ")]
    assert tune.endswith(
        "resume_from_checkpoint=True checkpointer.recipe_checkpoint=recipe_state/recipe_state.pt "
        "checkpointer.checkpoint_files=[epoch_0/model-00001-of-00002.safetensors,"
        "epoch_0/model-00002-of-00002.safetensors]"
    ), tune
    assert [c for c in calls(tmp_path) if c.startswith("srun ")], "the multi-node launch goes through srun"


@pytest.mark.parametrize(
    ("env", "job"),
    [
        ({}, "12345"),
        # A task of a job array: its own job id can be the array's (here it is), and `scontrol requeue 12345` would
        # requeue every task of the array (seen on Slurm 22.05): the task is named ARRAYJOB_TASK.
        ({"SLURM_ARRAY_JOB_ID": "12345", "SLURM_ARRAY_TASK_ID": "3"}, "12345_3"),
    ],
    ids=["job", "array-task"],
)
def test_the_trap_requeues_and_waits_for_the_trainer(
    generated: Experiment, tmp_path: Path, env: dict[str, str], job: str
) -> None:
    release = tmp_path / "release"
    proc = run_script(generated, f"{MODEL}_rank8_requeue", tmp_path, {"TUNE_WAIT_FOR": str(release), **env}, wait=False)
    started = tmp_path / "stub-log" / "tune.started"
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), "the trainer never started"
    proc.send_signal(signal.SIGUSR1)  # what SLURM's --signal=B:USR1@N does
    deadline = time.monotonic() + 10
    while f"scontrol requeue {job}" not in calls(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the script must keep waiting for the trainer after the trap"
    release.touch()  # here the trainer ends by itself; on a cluster SLURM stops it when the job is requeued
    out, err = proc.communicate(timeout=30)
    assert f"scontrol requeue {job}" in calls(tmp_path)
    assert f"the time limit is near; requeueing job {job}" in out
    assert proc.returncode == 0 and "tune run exited with status 0" in out, out + err


def test_an_older_full_base_recipe_reads_as_method_full(tmp_path: Path) -> None:
    exp = experiment(tmp_path, {f"{MODEL}_x": ({}, {})})
    text = exp.summary.read_text().replace("controls:\n", "controls:\n  base_recipe: full_finetune_single_device\n", 1)
    exp.summary.write_text(text)
    res = exp.generate("--no-check-paths")
    assert res.code == 0, res.out + res.err
    assert " full_finetune_single_device --config " in launch(script(exp, f"{MODEL}_x"))
    log = (exp.dir / "logs" / "scaffold-torchtune.log").read_text()
    assert "controls.base_recipe (full_finetune_single_device) is an older setting: read as method: full" in log


# --- after training: the post-training step and GPU metrics ---------------------------------------------------------

HUB_ID = "meta-llama/Llama-3.2-1B-Instruct"
LORA_SCRIPTS = [f"{MODEL}_gpus4", f"{MODEL}_rank8_requeue"]  # the plain branch of the template and the requeue one


@contextlib.contextmanager
def fresh_artifacts(exp: Experiment, run: str):
    """The run's output_dir, emptied again afterwards (the generated experiment is shared by this module)."""
    out = exp.dir / run / "artifacts"
    try:
        yield out
    finally:
        shutil.rmtree(out)
        out.mkdir()


def model_dir(exp: Experiment, run: str) -> str:
    return yaml.safe_load((exp.dir / run / "setup_finetune.yaml").read_text())["model_dir"]


def test_every_script_runs_the_post_step(generated: Experiment) -> None:
    """The post step prepares each epoch directory for the evaluator (every method), and rewrites LoRA adapters."""
    for run in RUNS:
        text = script(generated, run)
        method = "full" if "_full" in run else "lora"
        assert 'python -m scaffold.torchtune_ext.post_finetune --output-dir "$output_dir" ' in text, run
        assert f" --method {method} --dataset-type chat_completion --chat-template-date '26 Jul 2024' " in text, run
        assert "nvidia-smi --query-gpu=" in text, run


def test_the_generators_self_check_misses_no_post_step(generated: Experiment) -> None:
    """The generator's self-check runs the suite's slurm_post_finetune on the rendered text: a script without the
    post-training step, or with another run's settings in it, fails it."""
    from scaffold.engine.expectations import Expectations, Options
    from scaffold.engine.selfcheck import check_files

    expectations = Expectations(Options(generated.dir, local_config=generated.local, check_paths=False))
    for run in RUNS:
        expected = expectations.run(run)
        outcomes = check_files(expected, generated.dir / run)
        assert outcomes.get("slurm_post_finetune") == [], run
        path = generated.dir / run / "finetune.slurm"
        text = path.read_text()
        for planted, words in (
            ("".join(ln for ln in text.splitlines(keepends=True) if "post_finetune" not in ln), "post-training step"),
            (text.replace("--dataset-type chat_completion", "--dataset-type text_completion"), "--dataset-type"),
            (text.replace("--chat-template-date '26 Jul 2024'", "--chat-template-date '27 Jul 2024'"), "date"),
        ):
            path.write_text(planted)
            try:
                problems = check_files(expected, generated.dir / run)["slurm_post_finetune"]
            finally:
                path.write_text(text)
            assert problems and words in str(problems[0]), (run, problems)


@pytest.mark.parametrize("run", LORA_SCRIPTS)
def test_after_training_each_adapter_names_the_local_model(generated: Experiment, tmp_path: Path, run: str) -> None:
    from scaffold.testing.hf_tokenizers import write_hf_tokenizer

    tokenizer = write_hf_tokenizer(tmp_path / "model", "llama3").parent
    with fresh_artifacts(generated, run) as out:
        env = {"TUNE_ADAPTER_TO": str(out), "TUNE_TOKENIZER_FROM": str(tokenizer)}
        proc = run_script(generated, run, tmp_path, env)
        config = json.loads((out / "epoch_0" / "adapter_config.json").read_text())
        template = json.loads((out / "epoch_0" / "tokenizer_config.json").read_text())["chat_template"]
        metrics = (out / "gpu_metrics.csv").exists()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    want = model_dir(generated, run)
    assert config == {"r": 8, "base_model_name_or_path": want, "peft_type": "LORA"}
    assert list(config) == ["r", "base_model_name_or_path", "peft_type"]
    assert f"base_model_name_or_path '{HUB_ID}' -> '{want}'" in proc.stdout
    post = [c for c in calls(tmp_path) if c.startswith("python ")]
    assert post == [
        f"python -m scaffold.torchtune_ext.post_finetune --output-dir {out} --model-dir {want} --method lora "
        "--dataset-type chat_completion --chat-template-date 26 Jul 2024"
    ]
    # The epoch directory the evaluator loads was prepared for it (tests/test_eval_contract.py: what that means).
    assert "scaffold-torchtune: training date" in template and "the tokenizer adds no special tokens" in proc.stdout
    # Without nvidia-smi on PATH: no metrics, and nothing said about it.
    assert not metrics and "nvidia-smi" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("run", LORA_SCRIPTS)
def test_a_failed_training_leaves_the_adapter_alone(generated: Experiment, tmp_path: Path, run: str) -> None:
    with fresh_artifacts(generated, run) as out:
        proc = run_script(generated, run, tmp_path, {"TUNE_ADAPTER_TO": str(out), "TUNE_EXIT": "3"})
        config = json.loads((out / "epoch_0" / "adapter_config.json").read_text())
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert config["base_model_name_or_path"] == HUB_ID
    assert not [c for c in calls(tmp_path) if c.startswith("python ")]


@pytest.mark.parametrize("run", LORA_SCRIPTS)
def test_a_failing_post_step_keeps_the_training_status(generated: Experiment, tmp_path: Path, run: str) -> None:
    with fresh_artifacts(generated, run) as out:
        (out / "epoch_1").mkdir()
        (out / "epoch_1" / "adapter_config.json").write_text("{not json")
        proc = run_script(generated, run, tmp_path, {"TUNE_ADAPTER_TO": str(out)})
        config = json.loads((out / "epoch_0" / "adapter_config.json").read_text())
    assert proc.returncode == 0, proc.stdout + proc.stderr  # set -e does not stop the script at the failure
    assert "the post-training step failed with status 1; the job keeps the training status" in proc.stderr
    assert config["base_model_name_or_path"] == model_dir(generated, run)  # the other epoch was still done


@pytest.mark.parametrize("run", [*LORA_SCRIPTS, f"{MODEL}_full"])
def test_gpu_metrics_are_sampled_during_training_and_stopped_after(
    generated: Experiment, tmp_path: Path, run: str
) -> None:
    smi = tmp_path / "smi"
    smi.mkdir()
    (smi / "nvidia-smi").write_text(NVIDIA_SMI_STUB)
    (smi / "nvidia-smi").chmod(0o755)
    pid_file = tmp_path / "stub-log" / "nvidia-smi.pid"
    env = {"PATH": f"{smi}{os.pathsep}{os.environ['PATH']}", "TUNE_WAIT_FOR": str(pid_file)}  # trains until sampled
    with fresh_artifacts(generated, run) as out:
        proc = run_script(generated, run, tmp_path, env)
        csv = (out / "gpu_metrics.csv").read_text()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header, sample = NVIDIA_SMI_STUB.split('echo "')[2:4]
    assert csv.splitlines() == [header.split('"')[0], sample.split('"')[0]]
    (smi_call,) = [c for c in calls(tmp_path) if c.startswith("nvidia-smi ")]
    assert smi_call == (
        "nvidia-smi --query-gpu=timestamp,utilization.gpu,utilization.memory,memory.used,memory.total,"
        "power.draw,temperature.gpu --format=csv -l 30"
    )
    with pytest.raises(ProcessLookupError):  # stopped and reaped by the script: no sampler outlives the job
        os.kill(int(pid_file.read_text()), 0)
