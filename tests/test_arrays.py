"""Job arrays (scaffold/slurm/arrays.py): which runs share an array, what the array script does when Slurm runs one of
its tasks, `scaffold submit --array` against stand-in sbatch/scontrol (the real-Slurm version is
tests/integration/test_slurm_arrays.py), and the verification checks of the array scripts, each with the defect it
exists to catch."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from scaffold.slurm import arrays

from .conftest import Experiment, run_cli
from .test_submit import SWEEP, cluster_env, generated, record, submit, sweep  # noqa: F401 (fixtures)
from .verify_support import EXP, R4, R8, Planted

pytest_plugins = ["pytester"]


def script(*directives: str, output: str = "/x/run/artifacts/slurm-%j.out") -> str:
    lines = ["#!/bin/bash", "#SBATCH --job-name=r", f"#SBATCH --output={output}", *directives, "", "set -e", "echo"]
    return "\n".join(lines) + "\n"


# --- the rules ---------------------------------------------------------------------------------------------------


def test_runs_group_by_every_directive_but_their_name_and_log() -> None:
    a = script("#SBATCH --time=01:00:00", "#SBATCH --mem=80G")
    b = script("#SBATCH --time=01:00:00", "#SBATCH --mem=80G", output="/x/b/artifacts/slurm-%j.out")
    c = script("#SBATCH --time=02:00:00", "#SBATCH --mem=80G")
    d = script("#SBATCH --time=01:00:00", "#SBATCH --mem=80G", "#SBATCH --requeue")
    groups = arrays.groups([("a", a), ("c", c), ("b", b), ("d", d)])
    assert [g.runs for g in groups] == [("a", "b"), ("c",), ("d",)]
    assert groups[0].log_dirs == ("/x/run/artifacts", "/x/b/artifacts")
    # Only the lines sbatch reads: a #SBATCH line after the first command changes nothing.
    late = a + "#SBATCH --time=09:00:00\n"
    assert arrays.resources(late) == arrays.resources(a)


@pytest.mark.parametrize(
    ("positions", "size", "chunks"),
    [
        ([0, 1, 2, 3, 4], 1001, [(0, (0, 1, 2, 3, 4))]),
        ([0, 1, 2, 3, 4], 3, [(0, (0, 1, 2)), (3, (0, 1))]),
        ([1, 3, 4], 3, [(0, (1,)), (3, (0, 1))]),  # indices stay below MaxArraySize
        (list(range(1200)), 1001, [(0, tuple(range(1001))), (1001, tuple(range(199)))]),
    ],
)
def test_chunks_keep_task_indices_below_max_array_size(positions, size, chunks) -> None:
    got = arrays.plan_chunks(positions, size)
    assert [(c.offset, c.indices) for c in got] == chunks
    assert all(max(c.indices) < size for c in got)
    assert [c.offset + i for c in got for i in c.indices] == positions  # every run once, in order


def test_array_spec_joins_ranges_and_caps_running_tasks() -> None:
    assert arrays.array_spec([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert arrays.array_spec([3], 4) == "3%4"
    assert arrays.array_spec(range(1001), 10) == "0-1000%10"


# --- generate ----------------------------------------------------------------------------------------------------


def test_a_sweep_with_one_set_of_resources_gets_one_array(sweep: Experiment) -> None:  # noqa: F811
    files = sorted(p.name for p in (sweep.dir / "arrays").iterdir())
    assert files == ["array_1.slurm"]
    text = (sweep.dir / "arrays" / "array_1.slurm").read_text()
    assert arrays.members(text) == SWEEP
    assert "#SBATCH --array=0-4\n" in text and f"#SBATCH --output={sweep.dir}/logs/slurm-%A_%a.out" in text
    run_script = (sweep.dir / SWEEP[0] / "finetune.slurm").read_text()
    assert [ln for ln in text.splitlines() if ln.startswith("#SBATCH")][3:] == list(arrays.resources(run_script))
    assert subprocess.run(["bash", "-n", str(sweep.dir / "arrays" / "array_1.slurm")]).returncode == 0


def test_changed_resources_regroup_and_a_stale_array_is_removed(sweep: Experiment) -> None:  # noqa: F811
    data = sweep.load()
    data["runs"][2]["compute"] = {**data["runs"][2].get("compute", {}), "time": "03:00:00"}
    sweep.save(data)
    res = sweep.generate()
    assert res.code == 0, res.out + res.err
    assert "arrays/array_1.slurm (4 runs), arrays/array_2.slurm (1 run)" in res.out
    assert arrays.members((sweep.dir / "arrays" / "array_2.slurm").read_text()) == [SWEEP[2]]
    del data["runs"][2]["compute"]["time"]
    sweep.save(data)
    assert sweep.generate().code == 0
    assert sorted(p.name for p in (sweep.dir / "arrays").iterdir()) == ["array_1.slurm"]
    assert "arrays/array_2.slurm: removed" in (sweep.dir / "logs" / "scaffold-torchtune.log").read_text()


def test_a_hand_edited_array_is_kept_and_reported(sweep: Experiment) -> None:  # noqa: F811
    path = sweep.dir / "arrays" / "array_1.slurm"
    path.write_text(path.read_text().replace("--array=0-4", "--array=0-4%2"))
    res = sweep.generate()
    assert res.code == 1 and "job array script edited by hand since it was generated; kept" in res.out, res.out
    assert "%2" in path.read_text()
    assert sweep.generate("--force").code == 0 and "%2" not in path.read_text()


def test_arrays_stay_as_they_are_when_a_run_fails(sweep: Experiment) -> None:  # noqa: F811
    before = (sweep.dir / "arrays" / "array_1.slurm").read_bytes()
    (sweep.dir / SWEEP[1] / "setup_finetune.yaml").write_text("edited: by hand\n")
    data = sweep.load()
    data["runs"][0]["compute"] = {"time": "03:00:00"}  # would regroup, if arrays were written now
    sweep.save(data)
    res = sweep.generate()
    assert res.code == 1 and "job arrays" not in res.out, res.out
    assert (sweep.dir / "arrays" / "array_1.slurm").read_bytes() == before
    assert (
        "job arrays: not updated (1 fine-tuned run(s) failed)"
        in (sweep.dir / "logs" / "scaffold-torchtune.log").read_text()
    )


def test_the_unchanged_rerun_reports_the_arrays_and_notices_an_edit(sweep: Experiment) -> None:  # noqa: F811
    again = sweep.generate("--json")
    doc = json.loads(again.out)
    assert doc["arrays"] == [{"file": "arrays/array_1.slurm", "runs": 5, "status": "unchanged"}]
    path = sweep.dir / "arrays" / "array_1.slurm"
    path.write_text(path.read_text() + "# note\n")
    edited = sweep.generate()
    assert edited.code == 1 and "edited by hand" in edited.out, edited.out


def test_an_unchanged_rerun_renders_no_array_and_logs_them_as_before(sweep: Experiment, monkeypatch) -> None:  # noqa: F811
    """The array scripts are what the runs' unchanged batch scripts made and as written (the manifest records what
    they were made from): not rendered again, reported and logged as a rendering would. A file beside them that
    the tool did not write, or any change of a run's script, takes the whole way again."""
    from scaffold.commands.generate import generate

    def log_lines() -> list[str]:
        text = (sweep.dir / "logs" / "scaffold-torchtune.log").read_text()
        return [line.split(" ", 1)[1] for line in text.splitlines() if "arrays/" in line or "job arrays" in line]

    rendered: list[int] = []
    real = arrays.expected
    monkeypatch.setattr(arrays, "expected", lambda *a, **kw: rendered.append(1) or real(*a, **kw))
    before = len(log_lines())  # (the log is appended to)
    forced = generate(sweep.summary, local_config=sweep.local, force=True)
    assert rendered == [1] and forced.exit_status == 0
    full = log_lines()[before:]
    again = generate(sweep.summary, local_config=sweep.local)
    assert rendered == [1], "an unchanged re-run rendered the arrays"
    assert again.arrays == forced.arrays and [a.status for a in again.arrays] == ["unchanged"]
    assert log_lines()[before + len(full) :] == full and any(
        "5 run(s): " + ", ".join(SWEEP) in line for line in full
    ), full

    (sweep.dir / "arrays" / "array_9.slurm").write_text("#!/bin/bash\n")
    generate(sweep.summary, local_config=sweep.local)
    generate(sweep.summary, local_config=sweep.local)
    assert rendered == [1, 1, 1]
    log = (sweep.dir / "logs" / "scaffold-torchtune.log").read_text()
    assert "array_9.slurm: no group of runs needs it, but it was edited by hand: kept" in log

    (sweep.dir / "arrays" / "array_9.slurm").unlink()
    generate(sweep.summary, local_config=sweep.local)
    data = sweep.load()
    data["runs"][1]["compute"] = {"time": "02:00:00"}
    sweep.save(data)
    generate(sweep.summary, local_config=sweep.local)
    assert rendered == [1, 1, 1, 1, 1]
    assert arrays.members((sweep.dir / "arrays" / "array_2.slurm").read_text()) == [SWEEP[1]]


def test_a_run_cannot_be_named_arrays(local_example: Experiment) -> None:
    data = local_example.load()
    data["runs"][0]["name"] = "arrays"
    local_example.save(data)
    res = local_example.generate()
    assert res.code == 2 and "run name 'arrays' is taken: that directory is the job array scripts' directory" in res.err


def test_setup_finetune_regroups_the_arrays(sweep: Experiment) -> None:  # noqa: F811
    res = run_cli("setup-finetune", "--dir", sweep.dir / SWEEP[3], "--local-config", sweep.local, "--time", "05:00:00")
    assert res.code == 0, res.out + res.err
    assert "arrays/array_2.slurm: created" in res.out
    assert arrays.members((sweep.dir / "arrays" / "array_2.slurm").read_text()) == [SWEEP[3]]
    assert SWEEP[3] not in arrays.members((sweep.dir / "arrays" / "array_1.slurm").read_text())


# --- what a task does --------------------------------------------------------------------------------------------


def run_task(exp: Experiment, task: int, *args: str, job: str = "700") -> subprocess.CompletedProcess:
    """The array script as Slurm runs one task of it (each run's finetune.slurm replaced by a stand-in that says
    where it runs and with what job id)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env |= {"SLURM_ARRAY_JOB_ID": job, "SLURM_ARRAY_TASK_ID": str(task), "SLURM_JOB_ID": str(int(job) + task + 1)}
    return subprocess.run(
        ["bash", str(exp.dir / "arrays" / "array_1.slurm"), *args], env=env, capture_output=True, text=True, timeout=30
    )


@pytest.fixture
def stand_in_runs(sweep: Experiment) -> Experiment:  # noqa: F811
    for run in SWEEP:
        (sweep.dir / run / "finetune.slurm").write_text('echo "run in $PWD as job $SLURM_JOB_ID with $# args"\n')
    return sweep


def test_a_task_runs_its_runs_own_script_in_its_directory_with_its_log(stand_in_runs: Experiment) -> None:
    res = run_task(stand_in_runs, 2)
    assert res.returncode == 0, res.stderr
    log = stand_in_runs.dir / SWEEP[2] / "artifacts" / "slurm-700_2.out"
    assert log.read_text() == f"run in {stand_in_runs.dir / SWEEP[2]} as job 703 with 0 args\n"
    assert f"task 700_2 (job 703) is run {SWEEP[2]}: output in {log}" in res.stdout
    # With an offset (a second array of a split group): task 0 is the run at that place.
    assert run_task(stand_in_runs, 0, "3", job="800").returncode == 0
    assert (stand_in_runs.dir / SWEEP[3] / "artifacts" / "slurm-800_0.out").is_file()


@pytest.mark.parametrize(
    ("task", "args", "message"),
    [
        (5, (), "task 5 (offset 0) is not a run of this array of 5"),
        (0, ("x;id",), "the argument must be the first run's place in the list, not 'x;id'"),
    ],
)
def test_a_task_outside_the_list_fails_loudly(stand_in_runs: Experiment, task, args, message) -> None:
    res = run_task(stand_in_runs, task, *args)
    assert res.returncode == 1 and message in res.stderr, res.stderr


def test_outside_an_array_the_script_refuses_to_run(stand_in_runs: Experiment) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    res = subprocess.run(
        ["bash", str(stand_in_runs.dir / "arrays" / "array_1.slurm")], env=env, capture_output=True, text=True
    )
    assert (
        res.returncode != 0
        and "not a task of a job array: queue this script with scaffold submit --array" in res.stderr
    )


# --- submit --array ----------------------------------------------------------------------------------------------


def calls(env: dict) -> list[str]:
    path = Path(env["STUB_DIR"]) / "calls"
    return path.read_text().splitlines() if path.exists() else []


def test_submit_array_queues_one_array_and_records_each_task(sweep: Experiment, cluster_env: dict) -> None:  # noqa: F811
    res = submit(sweep, cluster_env, "--array", "--max-running", "2")
    assert res.code == 0, res.out + res.err
    script_path = sweep.dir / "arrays" / "array_1.slurm"
    assert calls(cluster_env) == [f"sbatch --parsable --array=0-4%2 {script_path} 0 (cwd {script_path.parent})"]
    assert "arrays/array_1.slurm --array=0-4%2  submitted          job 100 (5 runs)" in res.out
    assert "5 submitted" in res.out
    rec = record(sweep)
    assert {r: e["job_id"] for r, e in rec.items()} == {r: f"100_{i}" for i, r in enumerate(SWEEP)}
    assert {e["array"] for e in rec.values()} == {"arrays/array_1.slurm"}
    again = submit(sweep, cluster_env, "--array")
    assert again.code == 0 and "0 submitted, 5 already submitted" in again.out, again.out
    assert len(calls(cluster_env)) == 1


def test_submit_array_splits_at_max_array_size_and_skips_queued_runs(sweep: Experiment, cluster_env: dict) -> None:  # noqa: F811
    assert submit(sweep, cluster_env, "--run", SWEEP[1], "--run", SWEEP[3]).code == 0  # queued alone first
    (Path(cluster_env["STUB_DIR"]) / "max_array_size").write_text("2")
    res = submit(sweep, cluster_env, "--array", "--json")
    assert res.code == 0, res.out + res.err
    doc = json.loads(res.out)
    assert [(a["array"], a["offset"], a["runs"], a["job_id"]) for a in doc["arrays"]] == [
        ("0", 0, [SWEEP[0]], "102"),
        ("0", 2, [SWEEP[2]], "103"),
        ("0", 4, [SWEEP[4]], "104"),
    ]  # places 0-1, 2-3, 4: one array each at MaxArraySize 2
    assert {r: e["job_id"] for r, e in record(sweep).items()} == {
        SWEEP[0]: "102_0", SWEEP[1]: "100", SWEEP[2]: "103_0", SWEEP[3]: "101", SWEEP[4]: "104_0",
    }  # fmt: skip
    assert "arrays/array_1.slurm --array=0" in res.err  # progress lines on stderr with --json


def test_resubmit_one_run_as_a_one_task_array(sweep: Experiment, cluster_env: dict) -> None:  # noqa: F811
    assert submit(sweep, cluster_env, "--array").code == 0
    res = submit(sweep, cluster_env, "--array", "--resubmit", "--run", SWEEP[3])
    assert res.code == 0, res.out + res.err
    assert calls(cluster_env)[-1].startswith(f"sbatch --parsable --array=3 {sweep.dir / 'arrays' / 'array_1.slurm'} 0")
    entry = record(sweep)[SWEEP[3]]
    assert entry["job_id"] == "101_3" and entry["earlier_job_ids"] == ["100_3"]


def test_a_stale_array_is_refused_with_the_fix(sweep: Experiment, cluster_env: dict) -> None:  # noqa: F811
    path = sweep.dir / SWEEP[2] / "finetune.slurm"
    path.write_text(path.read_text().replace("--mem=80G", "--mem=40G"))
    res = submit(sweep, cluster_env, "--array")
    assert res.code == 1, res.out + res.err
    # The changed run is not the one generate checked; the other four runs' array lists five runs that no longer
    # match their scripts.
    assert res.out.count("arrays/array_1.slurm is missing or not what the runs' batch scripts call for now") == 4
    assert f"[run {SWEEP[2]}] not checked: finetune.slurm edited by hand since generate checked it" in res.out
    assert "run `scaffold generate`" in res.out and calls(cluster_env) == []


def test_a_limit_stops_array_submission_and_says_how_many_runs_remain(sweep: Experiment, cluster_env: dict) -> None:  # noqa: F811
    stub = Path(cluster_env["STUB_DIR"])
    (stub / "max_array_size").write_text("2")
    (stub / "limit").write_text("1")
    (stub / "limit_kind").write_text("policy")
    res = submit(sweep, cluster_env, "--array")
    assert res.code == 1, res.out + res.err
    assert "stopped at the cluster's limit: 2 queued now, 3 runs not queued" in res.out, res.out
    assert "`scaffold submit --array` again" in res.out
    assert sorted(record(sweep)) == sorted(SWEEP[:2])
    (stub / "limit").unlink()
    again = submit(sweep, cluster_env, "--array")
    assert again.code == 0 and "3 submitted, 2 already submitted" in again.out, again.out


def test_the_limit_message_of_a_plain_submit_suggests_arrays(sweep: Experiment, cluster_env: dict) -> None:  # noqa: F811
    (Path(cluster_env["STUB_DIR"]) / "limit").write_text("2")
    (Path(cluster_env["STUB_DIR"]) / "limit_kind").write_text("policy")
    res = submit(sweep, cluster_env)
    assert res.code == 1 and "or queue them as job arrays (`scaffold submit --array`)" in res.out, res.out


def test_dry_run_array_says_the_command(sweep: Experiment) -> None:  # noqa: F811
    res = submit(sweep, {"SLURM_CONF": "/nonexistent/slurm.conf"}, "--array", "--dry-run", "--max-running", "3")
    assert res.code == 0, res.out + res.err
    assert f"would submit       sbatch --parsable --array=0-4%3 {sweep.dir / 'arrays' / 'array_1.slurm'} 0" in res.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-running", "2"], "--max-running caps the tasks of job arrays: use it with --array"),
        (["--array", "--max-running", "0"], "must be a whole number of at least 1, not '0'"),
    ],
)
def test_bad_array_options_are_usage_errors(generated: Experiment, args, message) -> None:  # noqa: F811
    res = run_cli("submit", generated.dir, *args)
    assert res.code == 2 and message in res.err, res.err


# --- the verification checks of the arrays -----------------------------------------------------------------------


def test_clean_arrays_pass_their_checks(planted: Planted, pytester) -> None:
    out = planted.verify(pytester)
    assert {f"array_scripts[{EXP}]", f"array_syntax[{EXP}]", f"array_directives_first[{EXP}]"} <= out.passed


@pytest.mark.parametrize(
    ("plant", "check", "message"),
    [
        (lambda p: p.path("arrays/array_2.slurm").unlink(), "array_scripts", "job array script missing"),
        (
            lambda p: p.replace("arrays/array_1.slurm", f"  {R4}  # task 0", f"  {R8}  # task 0"),
            "array_scripts",
            "job array script is not the one the runs' batch scripts call for",
        ),
        (
            lambda p: p.path("arrays/array_3.slurm").write_text(p.path("arrays/array_1.slurm").read_text()),
            "array_scripts",
            "job array script of no group of this experiment's runs",
        ),
        (
            lambda p: p.replace("arrays/array_1.slurm", "set -euo pipefail\n", "set -euo pipefail\nif true; then\n"),
            "array_syntax",
            "bash -n: syntax error",
        ),
        (
            lambda p: p.replace("arrays/array_1.slurm", "set -euo pipefail\n", "set -euo pipefail\n#SBATCH --mem=1G\n"),
            "array_directives_first",
            "#SBATCH line after the first command",
        ),
        (
            lambda p: p.replace("arrays/array_1.slurm", "#SBATCH --array=0-0\n", ""),
            "array_directives_first",
            "no #SBATCH --array line",
        ),
    ],
    ids=["missing", "other-run", "stale-file", "bash-syntax", "late-directive", "no-array-line"],
)
def test_each_array_check_catches_its_defect(planted: Planted, pytester, plant, check, message) -> None:
    plant(planted)
    out = planted.verify(pytester)
    # A defect in an array script is also a difference from what the runs call for (array_scripts), except for a
    # file that is missing.
    assert f"{check}[{EXP}]" in out.failed and out.failed <= {f"{check}[{EXP}]", f"array_scripts[{EXP}]"}, out.text
    assert message in out.text


def test_the_arrays_golden_copy_catches_a_change(planted: Planted, pytester) -> None:
    assert planted.verify(pytester, "--snapshot-update", golden=True).failed == set()
    planted.replace("arrays/array_1.slurm", "set -euo pipefail\n", "set -euo pipefail\n# note\n")
    out = planted.verify(pytester, golden=True)
    assert f"golden[{EXP}-arrays]" in out.failed and "differs from its golden copy" in out.text, out.text
    planted.path("golden/arrays/array_9.slurm").write_text("old\n")
    out = planted.verify(pytester, golden=True)
    assert f"golden_stale[{EXP}]" in out.failed, out.text
