"""`scaffold submit --array` on a real Slurm (run by `nox -s slurm`, i.e. `pytest -m slurm`; skipped unless selected).

A local one-node Slurm 22.05 of its own (scaffold.testing.local_slurm), with Slurm's default MaxArraySize (1001: task
indices 0 to 1000). On it:

- a sweep of 1,200 runs with identical resources is one array script; with the node drained (jobs stay pending,
  as on a busy cluster) `submit --array --max-running 10` queues it in two arrays (1,001 tasks, then 199 from
  place 1,001) in seconds, squeue shows the `%10` cap, every run has its `ARRAYJOB_TASK` id, and a second submit
  queues nothing; `--resubmit --run NAME --array` then queues run 1,100 alone as task 99 of a one-task array whose
  argument is 1001, and that task (a stand-in trainer, the node up again) runs that run;
- a tiny-model experiment trains for real as array tasks (at most 2 at once with `--max-running 2`): each task
  runs its run's own finetune.slurm in its directory, its log in its run's artifacts/, the array's own log naming
  the run;
- a requeue run's task, signalled as `--signal=B:USR1@N` signals it, requeues itself alone (not the array), starts
  again and completes; signalled while another task of its array runs, the task whose own job id is the array's
  (the last task split off the pending array: here the highest index) restarts alone, where `scontrol requeue` of
  that id would requeue every task of the array.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from scaffold.slurm import arrays
from scaffold.testing import local_slurm

from ..conftest import Experiment, run_cli
from .test_slurm_cluster import JOB_ENV, example_experiment, require_local_slurm, say, stub_venv, wait_for_text

pytestmark = pytest.mark.slurm

SWEEP = 1200
SWEEP_TUNE = 'echo "stub tune in $PWD: $*"\n'


@pytest.fixture(scope="module")
def cluster(request):
    require_local_slurm(request)
    state = Path(tempfile.mkdtemp(prefix="scaffold-array-", dir="/tmp"))
    c = local_slurm.start(state, nodes=1)
    yield c
    local_slurm.stop(state)
    shutil.rmtree(state, ignore_errors=True)


def record(exp: Path) -> dict:
    return json.loads((exp / "logs" / "submissions.json").read_text())


def squeue(cluster: local_slurm.Cluster) -> list[str]:
    return cluster.run("squeue", "--noheader", "--format=%i").stdout.split()


def wait(cluster: local_slurm.Cluster, job: str, timeout: float = 300.0) -> local_slurm.JobResult:
    t0 = time.monotonic()
    result = local_slurm.wait_for_job(job, cluster.env, timeout=timeout)
    f = result.fields
    say(f"task {job}: {result.state} exit {result.exit_code}, run time {f.get('RunTime')}, restarts "
        f"{f.get('Restarts')}, waited {time.monotonic() - t0:.1f} s")  # fmt: skip
    return result


@pytest.fixture(scope="module")
def sweep(cluster, tmp_path_factory) -> tuple[Experiment, list[str]]:
    """A sweep of SWEEP runs of the shipped example that differ only in their seed (so their #SBATCH lines are the
    same); its venv's `tune` is a stand-in that says where it ran, so a task that runs ends at once."""
    root = tmp_path_factory.mktemp("sweep")
    runs = {f"Llama-3.2-1B-Instruct_seed{i}": ({"seed": i}, {}) for i in range(SWEEP)}
    t0 = time.monotonic()
    exp = example_experiment(root, runs, {"venv": str(stub_venv(root, SWEEP_TUNE))})
    say(f"{SWEEP} runs generated in {time.monotonic() - t0:.1f} s")
    return exp, list(runs)


def test_a_sweep_of_1200_runs_is_queued_as_two_capped_arrays_in_seconds(cluster, sweep) -> None:
    exp, names = sweep
    assert sorted(p.name for p in (exp.dir / "arrays").iterdir()) == ["array_1.slurm"]
    assert arrays.members((exp.dir / "arrays" / "array_1.slurm").read_text()) == names
    assert squeue(cluster) == []
    cluster.run("scontrol", "update", f"nodename={cluster.node}", "state=drain", "reason=busy-cluster")
    try:
        t0 = time.monotonic()
        res = run_cli("submit", exp.dir, "--array", "--max-running", "10", env=cluster.env)
        took = time.monotonic() - t0
        say(f"submit --array of {SWEEP} runs: exit {res.code} in {took:.2f} s\n{res.out}{res.err}")
        assert res.code == 0, res.out + res.err
        assert took < 30, f"submit --array took {took:.0f} s"
        assert f"{SWEEP} submitted" in res.out
        # One line per sbatch call: exactly two.
        first, second = re.findall(r"--array=(\S+)  submitted +job (\d+) \((\d+) runs\)", res.out)
        assert (first[0], first[2]) == ("0-1000%10", "1001") and (second[0], second[2]) == ("0-198%10", "199")
        queue = squeue(cluster)
        say(f"squeue: {' '.join(queue)}")
        assert queue == [f"{first[1]}_[0-1000%10]", f"{second[1]}_[0-198%10]"]  # two queue entries, capped
        for job in (first[1], second[1]):
            assert (local_slurm.job_info(job, cluster.env) or {}).get("ArrayTaskThrottle") == "10"
        rec = record(exp.dir)
        assert list(rec) == sorted(names)
        for i, name in enumerate(names):
            job = f"{first[1]}_{i}" if i < 1001 else f"{second[1]}_{i - 1001}"
            entry = rec[name]
            assert sorted(entry) == ["array", "job_id", "script_sha256", "submitted"], entry
            assert entry["job_id"] == job and entry["array"] == "arrays/array_1.slurm", (name, entry)
        t0 = time.monotonic()
        again = run_cli("submit", exp.dir, "--array", env=cluster.env)
        say(f"second submit --array: exit {again.code} in {time.monotonic() - t0:.2f} s: {again.out.splitlines()[-1]}")
        assert again.code == 0 and f"0 submitted, {SWEEP} already submitted" in again.out, again.out
        assert squeue(cluster) == queue and record(exp.dir) == rec
    finally:
        cluster.run("scancel", "--user=root", check=False)
        cluster.run("scontrol", "update", f"nodename={cluster.node}", "state=resume", check=False)


def test_resubmit_queues_one_run_alone_at_its_place_in_the_second_array(cluster, sweep) -> None:
    """Run 1,100 of the list is task 99 of the array queued from place 1,001: queued again alone, it is a one-task
    array `--array=99` with 1001 as the script's argument, and the task runs that run (the node is up now)."""
    exp, names = sweep
    run = names[1100]
    before = record(exp.dir)
    earlier = before[run]["job_id"]
    assert earlier.endswith("_99")
    deadline = time.monotonic() + 30
    while squeue(cluster):  # the sweep's arrays, cancelled
        assert time.monotonic() < deadline, squeue(cluster)
        time.sleep(0.2)
    res = run_cli("submit", exp.dir, "--array", "--resubmit", "--run", run, "--json", env=cluster.env)
    assert res.code == 0, res.out + res.err
    (call,) = json.loads(res.out)["arrays"]
    array_job = call["job_id"]
    script = exp.dir / "arrays" / "array_1.slurm"
    assert (call["array"], call["offset"], call["runs"]) == ("99", 1001, [run]), call
    assert call["command"] == f"sbatch --parsable --array=99 {script} 1001"
    after = record(exp.dir)
    job = f"{array_job}_99"
    assert after[run]["job_id"] == job and after[run]["earlier_job_ids"] == [earlier], after[run]
    assert {n: e for n, e in after.items() if n != run} == {n: e for n, e in before.items() if n != run}
    result = wait(cluster, job, timeout=60)
    log = exp.dir / run / "artifacts" / f"slurm-{job}.out"
    text = log.read_text(errors="replace")
    assert result.ok, text
    assert f"for run {run} on" in text and f"stub tune in {exp.dir / run}:" in text
    assert "tune run exited with status 0" in text
    dispatch = (exp.dir / "logs" / f"slurm-{job}.out").read_text()
    assert f"task {job} (job " in dispatch and f"is run {run}: output in {log}" in dispatch, dispatch


# --- array tasks of a tiny-model experiment, trained for real ------------------------------------------------------

TINY_RUNS = {
    "Tiny-Llama_rank4": {"lora_rank": 4},
    "Tiny-Llama_rank8": {"lora_rank": 8},
    "Tiny-Llama_rank16": {"lora_rank": 16},
}
REQUEUE_RUN = "Tiny-Llama_rank8_requeue"


@pytest.fixture(scope="module")
def tiny(cluster, tmp_path_factory) -> Experiment:
    pytest.importorskip("torchtune", reason="torchtune is not installed here: run `nox -s slurm`")
    from scaffold.testing import tiny_model

    root = tmp_path_factory.mktemp("tiny-arrays")
    local = {"account": "test", "partition": "debug", "venv": sys.prefix, "default_time": "00:10:00"}
    runs = {**TINY_RUNS, REQUEUE_RUN: {"lora_rank": 8, "requeue": True}}
    exp, _ = tiny_model.write_experiment(root, "tiny-arrays", runs, local)
    e = Experiment(exp, root / "scaffold.local.yaml")
    res = e.generate()
    assert res.code == 0, res.out + res.err
    return e


def test_array_tasks_train_each_run_in_its_directory_with_its_log(cluster, tiny: Experiment) -> None:
    scripts = sorted(p.name for p in (tiny.dir / "arrays").iterdir())
    assert scripts == ["array_1.slurm", "array_2.slurm"]  # the requeue run's directives differ: an array of its own
    picked = [a for run in TINY_RUNS for a in ("--run", run)]
    res = run_cli("submit", tiny.dir, "--array", "--max-running", "2", *picked, env=cluster.env | JOB_ENV)
    assert res.code == 0, res.out + res.err
    rec = record(tiny.dir)
    array_job = rec[next(iter(TINY_RUNS))]["job_id"].split("_")[0]
    info = local_slurm.job_info(array_job, cluster.env) or {}
    assert info.get("ArrayTaskThrottle") == "2", info  # at most 2 of its 3 tasks run at once
    results = {}
    for i, run in enumerate(TINY_RUNS):
        job = rec[run]["job_id"]
        assert job == f"{array_job}_{i}" and rec[run]["array"] == "arrays/array_1.slurm", rec[run]
        result = results[run] = wait(cluster, job)
        array_job, task = job.split("_")
        log = tiny.dir / run / "artifacts" / f"slurm-{array_job}_{task}.out"
        text = log.read_text(errors="replace")
        assert result.ok, text[-3000:]
        assert f"for run {run} on" in text and "tune run exited with status 0" in text
        assert (tiny.dir / run / "artifacts" / "epoch_0" / "adapter_model.safetensors").is_file()
        dispatch = (tiny.dir / "logs" / f"slurm-{array_job}_{task}.out").read_text()
        assert f"is run {run}: output in {log}" in dispatch
    # The cap at work: the third task started only once one of the first two had ended.
    first, second, third = (results[r].fields for r in TINY_RUNS)
    spans = ", ".join(f"{f['StartTime']}..{f['EndTime']}" for f in (first, second, third))
    say(f"array {array_job} (%2): tasks ran {spans}")
    assert third["StartTime"] >= min(first["EndTime"], second["EndTime"]), (first, second, third)


def test_a_requeue_task_requeues_itself_and_resumes(cluster, tiny: Experiment) -> None:
    res = run_cli("submit", tiny.dir, "--array", "--run", REQUEUE_RUN, env=cluster.env | JOB_ENV)
    assert res.code == 0, res.out + res.err
    job = record(tiny.dir)[REQUEUE_RUN]["job_id"]
    log = tiny.dir / REQUEUE_RUN / "artifacts" / f"slurm-{job}.out"
    wait_for_text(log, f"for run {REQUEUE_RUN} on")
    time.sleep(1.0)  # the trainer is importing torchtune
    cluster.run("scancel", "--signal=USR1", "--batch", job)  # what --signal=B:USR1@N sends near the time limit
    wait_for_text(log, "restart 1:", timeout=90)
    result = wait(cluster, job)
    text = log.read_text(errors="replace")
    assert result.ok and result.fields["Restarts"] == "1", text[-3000:]
    assert f"the time limit is near; requeueing job {job}" in text
    assert "restart 1: no complete epoch checkpoint, training from the start" in text
    assert text.count(f"for run {REQUEUE_RUN} on") == 2  # the task's log is appended to, not started again
    dispatch = (tiny.dir / "logs" / f"slurm-{job}.out").read_text()
    assert dispatch.count(f"is run {REQUEUE_RUN}: output in {log}") == 2, dispatch  # the array's log too


def test_requeueing_one_task_leaves_the_other_tasks_of_its_array_alone(cluster, tiny: Experiment) -> None:
    """Two requeue runs queued again as one array; the task whose own job id is the array's is signalled (the one
    that would take the whole array with it if its trap requeued $SLURM_JOB_ID): only that task restarts."""
    runs = list(TINY_RUNS)[:2]
    data = tiny.load()
    for run in data["runs"]:
        if run["name"] in runs:
            run["parameters"] = {**(run.get("parameters") or {}), "requeue": True}
    tiny.save(data)
    assert tiny.generate().code == 0
    picked = [a for run in runs for a in ("--run", run)]
    res = run_cli("submit", tiny.dir, "--array", "--resubmit", *picked, env=cluster.env | JOB_ENV)
    assert res.code == 0, res.out + res.err
    rec = record(tiny.dir)
    jobs = {r: rec[r]["job_id"] for r in runs}
    assert len({rec[r]["array"] for r in runs}) == 1 and all(rec[r]["earlier_job_ids"] for r in runs), rec
    array_job = jobs[runs[0]].split("_")[0]
    deadline = time.monotonic() + 60
    while True:
        info = {r: local_slurm.job_info(j, cluster.env) or {} for r, j in jobs.items()}
        if all(i.get("JobState") == "RUNNING" for i in info.values()):
            break
        assert time.monotonic() < deadline, f"the two tasks are not both running: {info}"
        time.sleep(0.2)
    target = next(r for r, i in info.items() if i.get("JobId") == array_job)
    other = next(r for r in runs if r != target)
    log = tiny.dir / target / "artifacts" / f"slurm-{jobs[target]}.out"
    wait_for_text(log, f"for run {target} on")
    time.sleep(1.0)
    # The other task still runs when the signal comes: requeueing the array's job id would take it along.
    assert (local_slurm.job_info(jobs[other], cluster.env) or {}).get("JobState") == "RUNNING"
    cluster.run("scancel", "--signal=USR1", "--batch", jobs[target])
    wait_for_text(log, "restart 1:", timeout=90)
    result = wait(cluster, jobs[target])
    text = log.read_text(errors="replace")
    assert result.ok and result.fields["Restarts"] == "1", text[-3000:]
    untouched = wait(cluster, jobs[other])
    say(f"signalled {jobs[target]} (job id {array_job}, the array's); {jobs[other]} restarts: "
        f"{untouched.fields['Restarts']}")  # fmt: skip
    assert untouched.ok and untouched.fields["Restarts"] == "0", "requeueing one task restarted another"
    assert f"the time limit is near; requeueing job {jobs[target]}" in text
    assert "restart 1: no complete epoch checkpoint, training from the start" in text
