"""Real Slurm in the loop (run by `nox -s slurm`, i.e. `pytest -m slurm`; skipped unless selected).

The module starts a local two-node Slurm 22.05 (scaffold.testing.local_slurm: both slurmd daemons on this
machine, 8 fake GPUs each, partitions and feature of the shipped example's site) in a temporary directory and
stops it at the end. On it:

- `scaffold submit` queues the runs of a tiny-model experiment exactly as generated; the environment is
  activated through the local config (`venv`: the test virtualenv); each job trains on CPU for real, and the test
  polls `scontrol` until it ends, then checks its state, its SLURM log in `artifacts/` and the adapter.
- a second submit skips or refuses what was submitted; `--resubmit` queues again.
- requeue: SIGUSR1 (what `--signal=B:USR1@N` sends) makes the trap requeue the job, which starts again and
  trains from the start; a requeued finished job resumes from its last complete epoch; a job with a 3-minute
  limit is signalled by SLURM itself and requeued once.
- `sbatch --test-only` accepts the shipped example and multi-GPU, multi-node and requeue scripts, and rejects
  planted defects (`--time=5h`, an unknown partition, more GPUs than a node has) through the verification
  suite's `sbatch_test_only` check.
- a two-node job runs srun across both nodes, or fails loudly when the first node's name resolves to loopback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from scaffold.slurm import sbatch
from scaffold.testing import local_slurm

from ..conftest import EXAMPLE, EXAMPLE_LOCAL, Experiment, make_model_dir, run_cli

pytestmark = pytest.mark.slurm

NODES = 2
TRAIN_TIMEOUT = 300.0


def say(text: str) -> None:
    """Measurements for the session's output (run with -s to see them as they come)."""
    print(f"[slurm] {text}", flush=True)


def require_local_slurm(request) -> None:
    """Skip, saying why, unless the local Slurm tests were selected and a cluster can run here (root, packages)."""
    if "slurm" not in (request.config.option.markexpr or ""):
        pytest.skip("the local Slurm tests run only when selected: pytest -m slurm (nox -s slurm)")
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster needs root (slurmd, munged, fake GPU device files)")
    try:
        local_slurm.ensure_packages()
    except local_slurm.LocalSlurmError as e:
        pytest.skip(f"Slurm cannot be installed here: {e}")


@pytest.fixture(scope="module")
def cluster(request):
    require_local_slurm(request)
    # A short path: munged's socket lives under it (Unix socket paths are limited to 107 bytes).
    state = Path(tempfile.mkdtemp(prefix="scaffold-slurm-", dir="/tmp"))
    t0 = time.monotonic()
    c = local_slurm.start(state, nodes=NODES)
    say(f"cluster started in {time.monotonic() - t0:.2f} s: nodes {', '.join(c.nodes)}, SLURM_CONF={c.conf}")
    yield c
    t0 = time.monotonic()
    local_slurm.stop(state)
    say(f"cluster stopped in {time.monotonic() - t0:.2f} s")
    shutil.rmtree(state, ignore_errors=True)


def wait(cluster: local_slurm.Cluster, job_id: int | str, timeout: float = TRAIN_TIMEOUT) -> local_slurm.JobResult:
    """Poll scontrol until the job ends (sbatch --wait polls too slowly)."""
    t0 = time.monotonic()
    result = local_slurm.wait_for_job(int(job_id), cluster.env, timeout=timeout)
    f = result.fields
    say(
        f"job {job_id} ({f.get('JobName')}): {result.state} exit {result.exit_code}, run time {f.get('RunTime')}, "
        f"restarts {f.get('Restarts')}, waited {time.monotonic() - t0:.1f} s"
    )
    return result


def job_log(run_dir: Path, job_id: int | str) -> str:
    path = run_dir / "artifacts" / f"slurm-{job_id}.out"
    assert path.is_file(), f"no SLURM log at {path}"
    return path.read_text(errors="replace")


def wait_for_text(path: Path, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in {path} after {timeout:.0f} s")


def wait_for_restarts(cluster: local_slurm.Cluster, job_id: int | str, restarts: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = local_slurm.job_info(int(job_id), cluster.env) or {}
        if int(info.get("Restarts", 0)) >= restarts:
            return
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} was not requeued (Restarts < {restarts})")


def stub_venv(root: Path, tune: str) -> Path:
    """A directory shaped like a virtualenv with a stand-in `tune` (the real srun, scontrol, getent stay)."""
    venv = root / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text(f'export PATH="{venv / "bin"}:$PATH"\n')
    (venv / "bin" / "tune").write_text("#!/bin/bash\n" + tune)
    (venv / "bin" / "tune").chmod(0o755)
    return venv


def example_experiment(root: Path, runs: dict, local_extra: dict | None = None) -> Experiment:
    """The shipped example (site: the example's, which the local cluster mirrors) with these runs; its model is a
    directory of stand-in files here, and experiment.dir is where it lies."""
    exp = root / "exp"
    shutil.copytree(EXAMPLE, exp, ignore=shutil.ignore_patterns("Llama-*", "logs", "arrays", ".scaffold-manifest.json"))
    data = yaml.safe_load((exp / "experiment_summary.yaml").read_text())
    data["experiment"]["dir"] = str(exp)
    data["models"]["base"][0]["path"] = str(make_model_dir(root / "models" / "Llama-3.2-1B-Instruct"))
    data.pop("variables", None)
    data["controls"]["batch_size"] = 1
    data["runs"] = [
        {"name": name, "type": "fine-tuned", "model": "Llama-3.2-1B-Instruct", "parameters": p, "compute": c}
        for name, (p, c) in runs.items()
    ]
    (exp / "experiment_summary.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    local = yaml.safe_load(EXAMPLE_LOCAL.read_text()) | (local_extra or {})
    if "venv" in (local_extra or {}):
        local.pop("conda_env", None)
        local.pop("modules", None)
    (root / "scaffold.local.yaml").write_text(yaml.safe_dump(local))
    e = Experiment(exp, root / "scaffold.local.yaml")
    res = e.generate()
    assert res.code == 0, res.out + res.err
    return e


def test_start_is_repeatable_and_a_daemon_that_dies_is_reported(cluster, monkeypatch) -> None:
    t0 = time.monotonic()
    assert local_slurm.start(cluster.state_dir, nodes=NODES) == cluster  # running and healthy: reused
    say(f"second start of the running cluster: {time.monotonic() - t0:.2f} s")
    state = Path(tempfile.mkdtemp(prefix="scaffold-bad-", dir="/tmp"))
    conf = local_slurm.render_slurm_conf
    monkeypatch.setattr(
        local_slurm,
        "render_slurm_conf",
        lambda layout, *a: conf(layout, *a).replace(f"{layout.spool}/%n", "/proc/nonexistent/%n"),
    )
    with pytest.raises(local_slurm.LocalSlurmError) as failure:
        local_slurm.start(state, timeout=20)
    text = str(failure.value)
    assert text.startswith("slurmd-") and "fatal: mkdir(/proc/nonexistent" in text and "slurmd-" in text, text
    assert not local_slurm.is_running(state)  # what had started was stopped
    local_slurm.stop(state)  # stopping a stopped cluster is fine
    shutil.rmtree(state, ignore_errors=True)


# --- a job SLURM itself signals before its time limit (submitted first: it runs beside the other tests) -------------

TIMER_RUN = "Llama-3.2-1B-Instruct_timer"
TIMER_TUNE = """echo "stub tune: restart ${SLURM_RESTART_COUNT:-0}: $*"
if [ "${SLURM_RESTART_COUNT:-0}" -eq 0 ]; then exec sleep 600; fi
"""


@pytest.fixture(scope="module")
def timer_job(cluster, tmp_path_factory):
    """A requeue run with a 3-minute limit (signal 90 s before it) whose trainer sleeps until the job is requeued,
    then ends at once on the restart."""
    root = tmp_path_factory.mktemp("timer")
    exp = example_experiment(
        root,
        {TIMER_RUN: ({"requeue": True}, {"time": "00:03:00"})},
        {"venv": str(stub_venv(root, TIMER_TUNE))},
    )
    job_id = cluster.sbatch(exp.dir / TIMER_RUN / "finetune.slurm")
    say(f"timer job {job_id} submitted (time limit 00:03:00, --signal=B:USR1@90)")
    return exp, job_id, time.monotonic()


def test_timer_job_is_queued(timer_job) -> None:
    """Submitted first so that its two minutes pass while the other tests run; checked last."""
    _, job_id, _ = timer_job
    assert job_id > 0


# --- a tiny-model experiment, submitted and trained for real --------------------------------------------------------

TINY_RUNS = {
    "Tiny-Llama_rank4": {"lora_rank": 4},
    "Tiny-Llama_full": {"method": "full"},
    "Tiny-Llama_rank8_requeue": {"lora_rank": 8, "requeue": True, "epochs": 2},
}
JOB_ENV = {"TIKTOKEN_CACHE_DIR": ""}


@pytest.fixture(scope="module")
def tiny(cluster, tmp_path_factory) -> Experiment:
    pytest.importorskip("torchtune", reason="torchtune is not installed here: run `nox -s slurm`")
    from scaffold.testing import tiny_model

    root = tmp_path_factory.mktemp("tiny")
    # The batch script activates the test virtualenv.
    local = {"account": "test", "partition": "debug", "venv": sys.prefix, "default_time": "00:10:00"}
    exp, _ = tiny_model.write_experiment(root, "tiny-slurm", TINY_RUNS, local)
    e = Experiment(exp, root / "scaffold.local.yaml")
    res = e.generate()
    assert res.code == 0, res.out + res.err
    return e


def submissions(exp: Experiment) -> dict:
    return json.loads((exp.dir / "logs" / "submissions.json").read_text())


def test_submit_queues_every_fine_tuned_run(cluster, tiny: Experiment) -> None:
    res = run_cli("submit", tiny.dir, env=cluster.env | JOB_ENV)
    assert res.code == 0, res.out + res.err
    record = submissions(tiny)
    assert sorted(record) == sorted(TINY_RUNS)
    for run, entry in record.items():
        assert re.search(rf"^  {run} +submitted +job {entry['job_id']}$", res.out, re.MULTILINE), res.out
    say("submitted: " + ", ".join(f"{r} job {e['job_id']}" for r, e in record.items()))


def test_the_trap_requeues_a_signalled_job(cluster, tiny: Experiment) -> None:
    """SIGUSR1 to the batch shell, as `--signal=B:USR1@N` sends it, while the trainer starts: the trap requeues the
    job, which starts again (SLURM_RESTART_COUNT=1), finds no epoch checkpoint and trains from the start."""
    run = "Tiny-Llama_rank8_requeue"
    job_id = submissions(tiny)[run]["job_id"]
    log = tiny.dir / run / "artifacts" / f"slurm-{job_id}.out"
    wait_for_text(log, f"scaffold-torchtune: job {job_id} for run {run}")
    time.sleep(1.0)  # the trainer is importing torchtune (about 10 s)
    t0 = time.monotonic()
    cluster.run("scancel", "--signal=USR1", "--batch", str(job_id))
    wait_for_restarts(cluster, job_id, 1)
    wait_for_text(log, "restart 1:", timeout=60)
    say(f"job {job_id}: requeued by its trap and started again after {time.monotonic() - t0:.1f} s")
    result = wait(cluster, job_id)
    text = job_log(tiny.dir / run, job_id)
    assert result.ok and result.fields["Restarts"] == "1", text[-3000:]
    assert f"the time limit is near; requeueing job {job_id}" in text
    assert "restart 1: no complete epoch checkpoint, training from the start" in text
    assert text.count(f"scaffold-torchtune: job {job_id} for run {run}") == 2  # --open-mode=append kept the first start
    assert (tiny.dir / run / "artifacts" / "epoch_1" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("run", [r for r in TINY_RUNS if "requeue" not in r])
def test_jobs_complete_with_their_log_and_weights(cluster, tiny: Experiment, run: str) -> None:
    job_id = submissions(tiny)[run]["job_id"]
    result = wait(cluster, job_id)
    text = job_log(tiny.dir / run, job_id)
    assert result.ok, text[-3000:]
    assert "tune run exited with status 0" in text
    epoch = tiny.dir / run / "artifacts" / "epoch_0"
    if TINY_RUNS[run].get("method") == "full":
        assert (epoch / "model-00001-of-00001.safetensors").is_file()
    else:
        assert (epoch / "adapter_model.safetensors").is_file() and (epoch / "adapter_config.json").is_file()


def test_a_second_submit_is_refused(cluster, tiny: Experiment) -> None:
    before = submissions(tiny)
    res = run_cli("submit", tiny.dir, env=cluster.env | JOB_ENV)
    assert res.code == 0 and res.out.count("already submitted  job") == len(TINY_RUNS), res.out + res.err
    res = run_cli("submit", tiny.dir, "--run", "Tiny-Llama_rank4", env=cluster.env | JOB_ENV)
    assert res.code == 1 and "refused" in res.out and "pass --resubmit" in res.out, res.out + res.err
    assert submissions(tiny) == before


def test_resubmit_queues_the_run_again(cluster, tiny: Experiment) -> None:
    run = "Tiny-Llama_rank4"
    first = submissions(tiny)[run]["job_id"]
    res = run_cli("submit", tiny.dir, "--run", run, "--resubmit", env=cluster.env | JOB_ENV)
    assert res.code == 0, res.out + res.err
    entry = submissions(tiny)[run]
    assert entry["job_id"] != first and entry["earlier_job_ids"] == [first]
    assert wait(cluster, entry["job_id"]).ok
    assert "tune run exited with status 0" in job_log(tiny.dir / run, entry["job_id"])


def test_a_requeued_job_resumes_from_its_last_complete_epoch(cluster, tiny: Experiment) -> None:
    """Requeue the finished 2-epoch job: torchtune wrote the recipe state after epoch 0 (not after the last
    epoch), so the restart resumes from epoch_0 (epoch_1, newer than the state, is skipped) and trains epoch 1."""
    run = "Tiny-Llama_rank8_requeue"
    job_id = submissions(tiny)[run]["job_id"]
    assert wait(cluster, job_id).ok
    cluster.run("scontrol", "requeue", str(job_id))
    wait_for_restarts(cluster, job_id, 2)
    result = wait(cluster, job_id)
    text = job_log(tiny.dir / run, job_id)
    out = tiny.dir / run / "artifacts"
    assert result.ok, text[-3000:]
    assert f"restart 2: resuming from {out / 'epoch_0'}" in text
    # torchtune's own account of what it loaded:
    assert f"adapter_checkpoint: {out / 'epoch_0' / 'adapter_model.pt'}" in text
    assert f"recipe_checkpoint: {out / 'recipe_state' / 'recipe_state.pt'}" in text
    statuses = [ln for ln in text.splitlines() if ln.startswith("scaffold-torchtune: tune run exited with status")]
    assert statuses[-1] == "scaffold-torchtune: tune run exited with status 0", statuses
    # After the last attempt's successful training, every epoch's adapter names the local model directory.
    model_dir = str(tiny.dir.parent / "models" / "Tiny-Llama")
    configs = sorted(out.glob("epoch_*/adapter_config.json"))
    assert configs and all(json.loads(c.read_text())["base_model_name_or_path"] == model_dir for c in configs), text


# --- sbatch --test-only -----------------------------------------------------------------------------------------------


def verify_test_only(cluster, exp: Experiment, *extra: str):
    """The verification suite's sbatch_test_only check over an experiment."""
    return run_cli(
        "verify", exp.dir, "--local-config", exp.local, "--no-check-paths", "-k", "sbatch_test_only", "-rA",
        *extra, env=cluster.env,
    )  # fmt: skip


def test_the_shipped_example_passes_test_only(cluster, tmp_path_factory) -> None:
    root = tmp_path_factory.mktemp("example")
    exp = root / "capitalization"
    shutil.copytree(EXAMPLE, exp, ignore=shutil.ignore_patterns("Llama-*", "logs", "arrays", ".scaffold-manifest.json"))
    assert run_cli("generate", exp, "--local-config", EXAMPLE_LOCAL, "--no-check-paths").code == 0
    for script in sorted(exp.glob("*/finetune.slurm")):
        answer = sbatch.test_only(script, cluster.env)
        say(
            f"--test-only {script.parent.name} (shipped example): {'accepted' if answer.ok else 'REJECTED'}: {answer.message}"
        )
        assert answer.ok, answer.message
    res = verify_test_only(cluster, Experiment(exp, EXAMPLE_LOCAL))
    # One test per run's script, and one for the job array scripts (with the --array range submit would give).
    assert res.code == 0 and res.out.count("PASSED") == 2 + 1, res.out + res.err
    assert "PASSED " in res.out and "::array_sbatch_test_only[capitalization]" in res.out, res.out


SHAPES = {
    "Llama-3.2-1B-Instruct_gpus4": ({}, {"gpus": 4}),
    "Llama-3.2-1B-Instruct_full_2nodes": ({"method": "full"}, {"gpus": 4, "nodes": 2, "time": "04:00:00"}),
    "Llama-3.2-1B-Instruct_requeue": ({"requeue": True}, {"time": "02:00:00"}),
}


@pytest.mark.parametrize("site", ["gres", "gpus-per-node", "gpus"])
def test_multi_gpu_multi_node_and_requeue_scripts_pass_test_only(cluster, tmp_path_factory, site: str) -> None:
    runs = {n: v for n, v in SHAPES.items() if site != "gpus" or "nodes" not in v[1]}  # --gpus is one-node only
    exp = example_experiment(tmp_path_factory.mktemp(f"shapes-{site}"), runs, {"gpu_directive": site})
    for run in runs:
        answer = sbatch.test_only(exp.dir / run / "finetune.slurm", cluster.env)
        say(f"--test-only {run} (gpu_directive {site}): {'accepted' if answer.ok else 'REJECTED'}: {answer.message}")
        assert answer.ok, answer.message
    res = verify_test_only(cluster, exp)
    # One test per run's script, and one for the job array scripts (an array per shape here).
    assert res.code == 0 and res.out.count("PASSED") == len(runs) + 1, res.out + res.err
    assert len(list((exp.dir / "arrays").iterdir())) == len(runs) and "::array_sbatch_test_only[exp]" in res.out


@pytest.mark.parametrize(
    ("defect", "plant", "message"),
    [
        ("time-5h", ("--time=00:59:00", "--time=5h"), "Invalid --time specification"),
        ("unknown-partition", ("--partition=gpu", "--partition=nosuchpartition"), "invalid partition"),
        ("16-gpus", ("--gres=gpu:1", "--gres=gpu:16"), "Requested node configuration is not available"),
        ("3-nodes", ("--nodes=1", "--nodes=3"), "Node count specification invalid"),
    ],
)
def test_planted_defects_fail_test_only(cluster, tmp_path_factory, defect: str, plant, message: str) -> None:
    run = "Llama-3.2-1B-Instruct_plain"
    exp = example_experiment(tmp_path_factory.mktemp(f"defect-{defect}"), {run: ({}, {})})
    script = exp.dir / run / "finetune.slurm"
    old, new = plant
    assert old in script.read_text()
    script.write_text(script.read_text().replace(old, new))
    answer = sbatch.test_only(script, cluster.env)
    say(f"--test-only with {new}: {'accepted' if answer.ok else 'rejected'}: {answer.message}")
    assert not answer.ok and message in answer.message
    res = verify_test_only(cluster, exp)
    assert res.code == 1 and "FAILED" in res.out and "sbatch --test-only rejects it" in res.out, res.out + res.err


def test_without_a_controller_the_check_is_skipped_with_the_reason(cluster, tmp_path_factory) -> None:
    exp = example_experiment(tmp_path_factory.mktemp("nocontroller"), {"Llama-3.2-1B-Instruct_x": ({}, {})})
    stopped = dict(cluster.env, SLURM_CONF=str(cluster.state_dir / "nonexistent.conf"))
    res = run_cli(
        "verify", exp.dir, "--local-config", exp.local, "--no-check-paths", "-k", "sbatch_test_only", env=stopped
    )
    assert res.code == 0 and "no SLURM controller reachable" in res.out and "does not exist" in res.out, res.out


# --- several nodes --------------------------------------------------------------------------------------------------

NODE_TUNE = 'echo "stub tune on ${SLURMD_NODENAME} task ${SLURM_PROCID} of ${SLURM_NTASKS}: $*"\n'


def test_a_two_node_job_runs_srun_on_both_nodes_or_fails_loudly_on_loopback(cluster, tmp_path_factory) -> None:
    root = tmp_path_factory.mktemp("nodes")
    run = "Llama-3.2-1B-Instruct_full_2nodes"
    exp = example_experiment(
        root, {run: ({"method": "full"}, {"gpus": 2, "nodes": 2})}, {"venv": str(stub_venv(root, NODE_TUNE))}
    )
    script = exp.dir / run / "finetune.slurm"
    assert sbatch.test_only(script, cluster.env).ok
    job_id = cluster.sbatch(script)
    result = wait(cluster, job_id, timeout=60)
    text = job_log(exp.dir / run, job_id)
    head = cluster.nodes[0]
    # The address the script resolves the first node to, the way it does.
    lookup = subprocess.run(["getent", "ahostsv4", head], capture_output=True, text=True)
    address = (lookup.stdout.split() or [""])[0]
    if address.startswith("127."):
        # This machine names itself with a loopback address (as Debian's /etc/hosts often does).
        say(f"two-node job {job_id}: {head} resolves to loopback {address}: the script refused, as it must")
        assert result.state == "FAILED" and result.exit_code == 1, text
        assert f"the first node {head} resolves to the loopback address" in text
        assert "stub tune" not in text
    else:
        say(f"two-node job {job_id}: rendezvous on {address}")
        assert result.ok, text
        for node in cluster.nodes:
            assert f"stub tune on {node} task" in text
        assert "--nnodes 2 --nproc_per_node 2" in text and f"--rdzv_id {job_id} --rdzv_backend c10d" in text


# --- the timer job, last -----------------------------------------------------------------------------------------------


def test_slurm_signals_before_the_time_limit_and_the_job_is_requeued_once(cluster, timer_job) -> None:
    exp, job_id, submitted = timer_job
    result = wait(cluster, job_id, timeout=300)
    text = job_log(exp.dir / TIMER_RUN, job_id)
    say(f"timer job {job_id}: done {time.monotonic() - submitted:.0f} s after submission; its log:")
    for line in text.splitlines():
        if line.startswith(("scaffold-torchtune:", "stub tune:", "slurmstepd")):
            say(f"  {line}")
    assert result.ok and result.fields["Restarts"] == "1", text
    assert "SIGUSR1 at" in text and f"requeueing job {job_id}" in text
    assert "stub tune: restart 0:" in text and "stub tune: restart 1:" in text
    assert "restart 1: no complete epoch checkpoint, training from the start" in text
