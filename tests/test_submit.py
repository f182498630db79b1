"""`scaffold submit` against stand-in `sbatch` and `sinfo` (the local-cluster version is in
tests/integration/test_slurm_cluster.py): job ids recorded, second submissions skipped or refused, --resubmit,
and every way a submission can fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import Experiment, run_cli

RUNS = ["Llama-3.2-1B-Instruct_rank4", "Llama-3.2-1B-Instruct_rank8"]

SBATCH = """#!/bin/bash
# Stand-in sbatch: job ids count up from 100; a script holding the text in $STUB_DIR/refuse (a run's name, say) is
# refused as sbatch refuses.
# With $STUB_DIR/limit holding N, jobs after the first N are refused as at a cluster's limit: as sbatch does at the
# controller's MaxJobCount (it says so, then sleeps and retries for minutes), or with limit_kind "policy" as for a
# per-user submit limit (refused at once). With $STUB_DIR/hold, the second job waits for $STUB_DIR/go.
for a in "$@"; do case "$a" in *.slurm) script="$a" ;; esac; done
if [ -s "$STUB_DIR/refuse" ] && grep -qF -- "$(cat "$STUB_DIR/refuse")" "$script"; then
  echo "sbatch: error: invalid partition specified: nosuch" >&2; exit 1
fi
n=$(cat "$STUB_DIR/next" 2>/dev/null || echo 100)
if [ -f "$STUB_DIR/limit" ] && [ "$n" -ge $((100 + $(cat "$STUB_DIR/limit"))) ]; then
  echo "refused $*" >> "$STUB_DIR/calls"
  if [ "$(cat "$STUB_DIR/limit_kind" 2>/dev/null)" = policy ]; then
    echo "sbatch: error: QOSMaxSubmitJobPerUserLimit" >&2
    echo "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's \
size and/or time limits)" >&2
    exit 1
  fi
  echo "sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying." >&2
  sleep 60
  echo "sbatch: error: Batch job submission failed: Resource temporarily unavailable" >&2
  exit 1
fi
if [ -f "$STUB_DIR/hold" ] && [ "$n" -ge 101 ]; then
  for _ in $(seq 300); do [ -f "$STUB_DIR/go" ] && break; sleep 0.1; done
fi
echo $((n + 1)) > "$STUB_DIR/next"
echo "sbatch $* (cwd $PWD)" >> "$STUB_DIR/calls"
echo "$n"
"""
SINFO = """#!/bin/bash
echo gpu
"""
# Stand-in scontrol: `show config` with the MaxArraySize in $STUB_DIR/max_array_size (Slurm's default 1001).
SCONTROL = """#!/bin/bash
echo "MaxArraySize            = $(cat "$STUB_DIR/max_array_size" 2>/dev/null || echo 1001)"
"""


@pytest.fixture
def cluster_env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "stub-bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", SBATCH), ("sinfo", SINFO), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_DIR": str(bin_dir), "SLURM_CONF": ""}


@pytest.fixture
def generated(local_example: Experiment) -> Experiment:
    assert local_example.generate().code == 0
    return local_example


def record(exp: Experiment) -> dict:
    return json.loads((exp.dir / "logs" / "submissions.json").read_text())


def submit(exp: Experiment, env: dict, *args: str):
    return run_cli("submit", exp.dir, *args, env=env)


def test_submit_records_job_ids_and_skips_them_the_second_time(generated: Experiment, cluster_env: dict) -> None:
    res = submit(generated, cluster_env)
    assert res.code == 0, res.out + res.err
    ids = {run: entry["job_id"] for run, entry in record(generated).items()}
    assert ids == {RUNS[0]: "100", RUNS[1]: "101"}
    assert "2 submitted" in res.out and "job ids: " in res.out
    calls = (Path(cluster_env["STUB_DIR"]) / "calls").read_text().splitlines()
    assert calls[0] == f"sbatch --parsable {generated.dir / RUNS[0] / 'finetune.slurm'} (cwd {generated.dir / RUNS[0]})"
    assert "submitted as job 100" in (generated.dir / "logs" / "scaffold-torchtune.log").read_text()

    again = submit(generated, cluster_env)
    assert again.code == 0 and "0 submitted, 2 already submitted" in again.out, again.out
    assert {run: e["job_id"] for run, e in record(generated).items()} == ids


def test_naming_a_submitted_run_is_refused_unless_resubmit(generated: Experiment, cluster_env: dict) -> None:
    assert submit(generated, cluster_env).code == 0
    res = submit(generated, cluster_env, "--run", RUNS[1])
    assert res.code == 1 and "refused" in res.out and "already submitted as job 101" in res.out, res.out
    assert "(fix: pass --resubmit to queue it again)" in res.out
    res = submit(generated, cluster_env, "--run", RUNS[1], "--resubmit")
    assert res.code == 0, res.out + res.err
    assert record(generated)[RUNS[1]]["job_id"] == "102"
    assert record(generated)[RUNS[1]]["earlier_job_ids"] == ["101"]
    assert record(generated)[RUNS[0]]["job_id"] == "100"


def test_a_changed_script_is_pointed_out(generated: Experiment, cluster_env: dict) -> None:
    assert submit(generated, cluster_env).code == 0
    script = generated.dir / RUNS[0] / "finetune.slurm"
    text = script.read_text()
    assert "--mem=80G" in text
    script.write_text(text.replace("--mem=80G", "--mem=60G"))
    res = submit(generated, cluster_env)
    assert res.code == 0 and "finetune.slurm changed since" in res.out, res.out


def test_dry_run_submits_nothing_and_needs_no_controller(generated: Experiment) -> None:
    res = submit(generated, {"SLURM_CONF": "/nonexistent/slurm.conf"}, "--dry-run")
    assert res.code == 0 and res.out.count("would submit       sbatch --parsable") == 2, res.out + res.err
    assert not (generated.dir / "logs" / "submissions.json").exists()


def test_without_a_controller_nothing_is_submitted(generated: Experiment) -> None:
    res = submit(generated, {"SLURM_CONF": "/nonexistent/slurm.conf"})
    assert res.code == 2 and "no SLURM controller reachable" in res.err and "--dry-run" in res.err, res.err
    assert not (generated.dir / "logs" / "submissions.json").exists()


def test_an_unknown_run_is_an_error_with_a_suggestion(generated: Experiment, cluster_env: dict) -> None:
    res = submit(generated, cluster_env, "--run", "Llama-3.2-1B-Instruct_rank16")
    assert res.code == 2 and "no fine-tuned run named 'Llama-3.2-1B-Instruct_rank16'" in res.err, res.err


def test_a_refused_script_fails_that_run_only(generated: Experiment, cluster_env: dict) -> None:
    (Path(cluster_env["STUB_DIR"]) / "refuse").write_text(f"--job-name={RUNS[0]}")
    res = submit(generated, cluster_env)
    assert res.code == 1, res.out
    assert "sbatch refused the script: error: invalid partition specified: nosuch" in res.out
    assert list(record(generated)) == [RUNS[1]]


# --- only the files generate checked are queued -------------------------------------------------------------------


def calls(cluster_env: dict) -> list[str]:
    path = Path(cluster_env["STUB_DIR"]) / "calls"
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("args", [[], ["--dry-run"], ["--array"], ["--array", "--dry-run"]])
def test_a_file_edited_by_hand_is_refused_by_name_and_the_others_are_queued(
    generated: Experiment, cluster_env: dict, args: list[str]
) -> None:
    """A finetune.yaml edited by hand (generate keeps it, and says so) is not what generate checked: submit, plain or
    --array, dry run too, refuses that run by name with the fix, queues the other, and exits 1."""
    config = generated.dir / RUNS[0] / "finetune.yaml"
    config.write_text(config.read_text().replace("epochs: 1", "epochs: 7"))
    res = submit(generated, cluster_env, *args)
    assert res.code == 1, res.out + res.err
    refused = [ln for ln in res.out.splitlines() if RUNS[0] in ln and "not checked" in ln]
    assert refused, res.out
    assert f"[run {RUNS[0]}] not checked: finetune.yaml edited by hand since generate checked it" in res.out
    assert "(fix: carry the change into the summary with `scaffold setup-finetune --KEY VALUE`" in res.out
    assert "1 not checked" in res.out
    queued = [c for c in calls(cluster_env) if c.startswith("sbatch")]
    if "--dry-run" in args:
        assert "1 would submit" in res.out and queued == []
    elif "--array" in args:
        assert (
            len(queued) == 1 and queued[0].startswith("sbatch --parsable --array=0 ") and "array_2.slurm" in queued[0]
        )
        assert list(record(generated)) == [RUNS[1]]
    else:
        assert queued == [
            f"sbatch --parsable {generated.dir / RUNS[1] / 'finetune.slurm'} (cwd {generated.dir / RUNS[1]})"
        ]
        assert list(record(generated)) == [RUNS[1]]


def test_a_run_whose_last_generate_failed_is_refused(generated: Experiment, cluster_env: dict) -> None:
    """After a change whose generate fails a run (here: the run's name no longer says its rank), the run's files are
    the checked ones of its old settings: submit refuses them, as it does a run never generated and checked."""
    data = generated.load()
    data["runs"][1]["parameters"]["lora_rank"] = 16
    generated.save(data)
    assert generated.generate().code == 1
    res = submit(generated, cluster_env, "--dry-run")
    assert res.code == 1, res.out + res.err
    assert f"[run {RUNS[1]}] not checked: the summary gives this run settings it cannot be generated with" in res.out
    assert "would submit" in res.out and RUNS[0] in res.out
    data["runs"][1]["parameters"]["lora_rank"] = 8
    data["controls"]["epochs"] = 2  # now generate would write other files: until it does, none is queued
    generated.save(data)
    res = submit(generated, cluster_env, "--dry-run")
    assert res.code == 1 and res.out.count("not checked: its files were generated and checked for other settings") == 2
    assert generated.generate().code == 0
    assert submit(generated, cluster_env, "--dry-run").code == 0


def test_a_run_never_checked_is_refused(generated: Experiment, cluster_env: dict) -> None:
    """Files that are not the manifest's (written by something else, or left by a generate that failed its checks)
    are refused, however plausible they look."""
    manifest = generated.dir / ".scaffold-manifest.json"
    body = json.loads(manifest.read_text())
    body["files"] = {k: v for k, v in body["files"].items() if not k.startswith(RUNS[0] + "/")}
    manifest.write_text(json.dumps(body))
    res = submit(generated, cluster_env)
    assert res.code == 1, res.out + res.err
    assert f"[run {RUNS[0]}] not checked: no generate wrote and checked these files" in res.out
    assert list(record(generated)) == [RUNS[1]]


def test_a_run_not_generated_fails(generated: Experiment, cluster_env: dict) -> None:
    (generated.dir / RUNS[0] / "finetune.slurm").unlink()
    res = submit(generated, cluster_env)
    assert res.code == 1 and "finetune.slurm not found" in res.out and "scaffold generate" in res.out, res.out


def test_a_missing_log_directory_fails_before_sbatch(example: Experiment, cluster_env: dict) -> None:
    """experiment.dir is a cluster path that does not exist here: the job would fail without a log."""
    assert example.generate("--no-check-paths").code == 0
    res = submit(example, cluster_env)
    assert res.code == 1 and res.out.count("does not exist here: the job would fail without a log") == 2, res.out
    assert not (Path(cluster_env["STUB_DIR"]) / "calls").exists()


def test_an_unreadable_record_is_never_overwritten(generated: Experiment, cluster_env: dict) -> None:
    path = generated.dir / "logs" / "submissions.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text("{not json")
    res = submit(generated, cluster_env)
    assert res.code == 2 and "the submission record cannot be read" in res.err, res.err
    assert path.read_text() == "{not json"


# --- the cluster's limits, and progress as it goes -----------------------------------------------------------------

SWEEP = [f"Llama-3.2-1B-Instruct_rank{r}" for r in (4, 8, 16, 32, 64)]


@pytest.fixture
def sweep(local_example: Experiment) -> Experiment:
    """The example with five runs (LoRA ranks 4 to 64), generated."""
    data = local_example.load()
    data["variables"]["lora_rank"] = [4, 8, 16, 32, 64]
    template = data["runs"][0]
    data["runs"] = [
        {**template, "name": f"Llama-3.2-1B-Instruct_rank{r}", "parameters": {"lora_rank": r}}
        for r in (4, 8, 16, 32, 64)
    ]
    local_example.save(data)
    res = local_example.generate()
    assert res.code == 0, res.out + res.err
    return local_example


@pytest.mark.parametrize("kind", ["retry", "policy"])
def test_a_limit_stops_submit_at_once_and_a_later_submit_queues_the_rest(
    sweep: Experiment, cluster_env: dict, kind: str
) -> None:
    stub = Path(cluster_env["STUB_DIR"])
    (stub / "limit").write_text("2")
    (stub / "limit_kind").write_text(kind)
    start = time.monotonic()
    res = submit(sweep, cluster_env)
    took = time.monotonic() - start
    assert took < 15, f"submit took {took:.0f} s: it waited on sbatch's retries"
    assert res.code == 1, res.out + res.err
    assert list(record(sweep)) == SWEEP[:2]
    calls = (stub / "calls").read_text().splitlines()
    assert len(calls) == 3 and calls[2].startswith("refused"), calls  # stopped at the first refusal
    assert f"{SWEEP[2]}  not queued" in res.out, res.out
    assert "the cluster refused the job for a limit: error: " in res.out
    assert ("temporarily unable to accept job" if kind == "retry" else "QOSMaxSubmitJobPerUserLimit") in res.out
    assert "2 submitted, 1 not queued" in res.out
    assert f"stopped at the cluster's limit: 2 queued now, 3 runs not queued ({SWEEP[2]} and 2 after it)" in res.out
    assert "run `scaffold submit` again: it queues only the runs not queued yet" in res.out
    assert SWEEP[3] not in res.out  # the runs after it were not looked at
    log = (sweep.dir / "logs" / "scaffold-torchtune.log").read_text()
    assert "stopped at the cluster's limit" in log

    (stub / "limit").unlink()  # the limit is lifted (jobs finished)
    again = submit(sweep, cluster_env)
    assert again.code == 0, again.out + again.err
    assert "3 submitted, 2 already submitted" in again.out, again.out
    assert {run: e["job_id"] for run, e in record(sweep).items()} == {r: str(100 + i) for i, r in enumerate(SWEEP)}


def test_a_limit_with_json_says_how_many_runs_remain(sweep: Experiment, cluster_env: dict) -> None:
    (Path(cluster_env["STUB_DIR"]) / "limit").write_text("4")
    res = submit(sweep, cluster_env, "--json")
    assert res.code == 1, res.out + res.err
    doc = json.loads(res.out)
    assert doc["not_queued"] == 1 and doc["counts"]["submitted"] == 4 and doc["exit_status"] == 1
    assert f"stopped at the cluster's limit: 4 queued now, 1 run not queued ({SWEEP[4]})" in doc["stopped"]["text"]
    assert [s["status"] for s in doc["submissions"]] == ["submitted"] * 4 + ["not queued"]
    assert f"{SWEEP[4]}  not queued" in res.err and "error: " in res.err


def test_a_named_run_resubmitted_counts_toward_what_remains(sweep: Experiment, cluster_env: dict) -> None:
    assert submit(sweep, cluster_env).code == 0
    (Path(cluster_env["STUB_DIR"]) / "limit").write_text("5")
    res = submit(sweep, cluster_env, "--run", SWEEP[0], "--run", SWEEP[1], "--resubmit")
    assert res.code == 1 and "0 queued now, 2 runs not queued" in res.out, res.out
    assert record(sweep)[SWEEP[0]]["job_id"] == "100" and "earlier_job_ids" not in record(sweep)[SWEEP[0]]


def _submit_started(exp: Experiment, env: dict, *args: str) -> subprocess.Popen:
    """`scaffold submit` started, its output read while it runs."""
    cmd = [sys.executable, "-m", "scaffold", "submit", str(exp.dir), *args]
    full_env = {k: v for k, v in os.environ.items() if k != "SCAFFOLD_LOCAL_CONFIG"} | env
    return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("json_flag", [False, True])
def test_each_run_is_reported_as_it_is_queued(sweep: Experiment, cluster_env: dict, json_flag: bool) -> None:
    """The second sbatch waits until the test has read the first run's line: so that line came as it happened."""
    stub = Path(cluster_env["STUB_DIR"])
    (stub / "hold").write_text("")
    proc = _submit_started(sweep, cluster_env, *(["--json"] if json_flag else []))
    progress = proc.stderr if json_flag else proc.stdout
    assert progress is not None
    try:
        assert progress.readline() == f"scaffold-torchtune submit: {sweep.dir}\n"
        assert progress.readline().split() == [SWEEP[0], "submitted", "job", "100"]
        assert proc.poll() is None  # still running: the second job is held
    finally:
        (stub / "go").write_text("")
    rest, other = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest + other
    lines = rest.splitlines() if not json_flag else other.splitlines()
    assert [ln.split()[:2] for ln in lines[:4]] == [[run, "submitted"] for run in SWEEP[1:]]
    assert lines[4:] == ["5 submitted", f"job ids: {sweep.dir / 'logs' / 'submissions.json'}"]
    if json_flag:
        doc = json.loads(rest)
        assert doc["counts"]["submitted"] == 5 and [s["job_id"] for s in doc["submissions"]] == [
            str(n) for n in range(100, 105)
        ]


def test_stopped_while_sbatch_waits_no_job_is_left_unrecorded(sweep: Experiment, cluster_env: dict) -> None:
    """SIGTERM while the second sbatch blocks: submit exits at once and stops that sbatch (so it cannot queue a
    job after submit has gone), and the record holds the first job."""
    stub = Path(cluster_env["STUB_DIR"])
    (stub / "hold").write_text("")
    proc = _submit_started(sweep, cluster_env)
    assert proc.stdout is not None
    proc.stdout.readline()
    assert proc.stdout.readline().split()[:2] == [SWEEP[0], "submitted"]
    time.sleep(0.3)  # the second sbatch is running and held
    proc.terminate()
    proc.communicate(timeout=10)
    assert proc.returncode == 143
    (stub / "go").write_text("")  # an sbatch still running would now queue a job
    time.sleep(0.5)
    assert len((stub / "calls").read_text().splitlines()) == 1
    assert list(record(sweep)) == [SWEEP[0]]
