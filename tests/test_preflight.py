"""The pre-flight audit inside `scaffold generate` (scaffold.checks.token_audit.preflight, run by
scaffold.commands.pipeline on each run that passed its self-check): a run with a record that would train on nothing
is refused (exit 1, nothing of it written, the record and the fix named at the summary's line); the steps, the token
audit and the estimates are fields of each run in the `--json` report and lines of the log; a run given no time limit
anywhere asks for the time the estimate sets, and `scaffold verify` holds it to that (slurm_time_estimate)."""

from __future__ import annotations

import json
import os

import pytest
import yaml

pytest.importorskip("transformers", reason="transformers is not installed (pip install '.[test]')")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from scaffold.checks.token_audit import Preflight  # noqa: E402
from scaffold.output.report import PREFLIGHT_FIELDS  # noqa: E402

from .conftest import Experiment, run_cli  # noqa: E402

R4, R8 = "Llama-3.2-1B-Instruct_rank4", "Llama-3.2-1B-Instruct_rank8"
DATA = "data/words_5L_80P_10.json"
# A 70B shape in the model directory's config.json: the estimates read it (a tiny tokenizer, a big model's rate).
BIG = {
    "hidden_size": 8192,
    "num_hidden_layers": 80,
    "intermediate_size": 28672,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
}


def _data(exp: Experiment, train: list[dict]) -> None:
    path = exp.dir / DATA
    data = json.loads(path.read_text())
    data["train"] = train
    path.write_text(json.dumps(data))
    summary = exp.load()
    summary["data"]["training"]["splits"]["train"] = len(train)
    exp.save(summary)


def _report(res) -> dict:
    return {r["name"]: r for r in json.loads(res.out)["runs"]}


def test_a_record_that_trains_on_nothing_refuses_the_run(local_example: Experiment) -> None:
    words = [{"input": w, "output": w.title()} for w in ("apple", "peach", "lemon", "grape")]
    _data(local_example, [*words[:2], {"input": "word " * 300, "output": "Long"}, *words[2:]])
    summary = local_example.load()
    summary["controls"]["max_seq_len"] = 160
    local_example.save(summary)
    res = local_example.generate("--json")
    assert res.code == 1, res.out + res.err
    runs = _report(res)
    for name in (R4, R8):
        (error,) = runs[name]["errors"]
        assert "record(s) 2" in error["message"] and DATA in error["message"], error
        assert error["file"].endswith("experiment_summary.yaml") and error["field"] == "controls.max_seq_len"
        assert error["line"] and "max_seq_len to at least" in error["fix"] and "untrainable_records" in error["fix"]
        assert not (local_example.dir / name / "finetune.yaml").exists()
        assert runs[name]["audit"]["train"]["untrainable_records"] == [2]
    log = (local_example.dir / "logs" / "scaffold-torchtune.log").read_text()
    assert "1 training on no answer token" in log and "record(s) 2" in log

    # Accepted explicitly: trained without the record, and the steps count the records that train.
    summary["controls"]["untrainable_records"] = "drop"
    local_example.save(summary)
    res = local_example.generate("--json")
    assert res.code == 0, res.out + res.err
    run = _report(res)[R4]
    assert run["steps"]["train_records"] == 4 and run["audit"]["train"]["records"] == 5
    assert any("left out (untrainable_records: drop)" in w for w in run["warnings"])
    setup = yaml.safe_load((local_example.dir / R4 / "setup_finetune.yaml").read_text())
    assert setup["untrainable_records"] == "drop"


def test_steps_audit_and_estimates_are_report_fields_and_log_lines(local_example: Experiment) -> None:
    res = local_example.generate("--json")
    assert res.code == 0, res.out + res.err
    run = _report(res)[R4]
    assert set(PREFLIGHT_FIELDS) <= set(run) and set(Preflight(None, None, None).fields()) == set(PREFLIGHT_FIELDS)
    # 8 records, batch 4, one GPU, accumulation 1, one epoch: 2 batches, 2 optimizer steps.
    assert run["steps"]["steps_per_epoch"] == 2 and run["steps"]["total_steps"] == 2
    train = run["audit"]["train"]
    assert train["records"] == 8 and train["untrainable"] == train["answer_cut"] == 0 and train["end_token"]
    assert 0 < train["p95_length"] <= train["max_length"] < 2048
    assert run["estimates"]["peak_gpu_memory_gib"] > 0 and run["estimates"]["time"] == "00:15:00"
    assert run["time_estimated"] is None and run["audit_skipped"] is None  # the local config gives default_time
    log = (local_example.dir / "logs" / "scaffold-torchtune.log").read_text()
    section = log.split(f"run {R4} ")[1].split("\n\n")[0]
    for line in ("steps: 8 train records", "tokens (train): 8 records", "estimates (not calibrated"):
        assert line in section, section
    # An unchanged re-run renders nothing, and still reports the steps (from the plan).
    again = _report(local_example.generate("--json"))[R4]
    assert again["steps"] == run["steps"] and again["audit"] is None


def _estimated(exp: Experiment, records: int) -> None:
    """No time limit anywhere, a 70B model shape and `records` long records: the estimate is above the floor."""
    local = yaml.safe_load(exp.local.read_text())
    del local["default_time"]
    exp.local.write_text(yaml.safe_dump(local))
    summary = exp.load()
    summary["controls"]["epochs"] = 3
    for run in summary["runs"]:
        run.pop("compute", None)
    exp.save(summary)
    model_dir = summary["models"]["base"][0]["path"]
    config = os.path.join(model_dir, "config.json")
    with open(config, "w") as f:
        json.dump(BIG, f)
    _data(exp, [{"input": f"w{i}", "output": "Word " * 300} for i in range(records)])


def test_the_estimate_sets_the_time_where_none_is_given(local_example: Experiment) -> None:
    _estimated(local_example, 100)
    res = local_example.generate("--json")
    assert res.code == 0, res.out + res.err
    run = _report(res)[R4]
    time = run["time_estimated"]
    assert time and time > "00:15:00" and run["estimates"]["time"] == time
    setup = yaml.safe_load((local_example.dir / R4 / "setup_finetune.yaml").read_text())
    assert setup["time"] == time
    assert f"#SBATCH --time={time}" in (local_example.dir / R4 / "finetune.slurm").read_text()
    log = (local_example.dir / "logs" / "scaffold-torchtune.log").read_text()
    assert f"time limit {time}: set by the estimate (no time limit given anywhere)" in log
    # Re-run unchanged: nothing rewritten (the fingerprint is the inputs', not the estimate's).
    again = _report(local_example.generate("--json"))[R4]
    assert set(again["files"].values()) == {"unchanged"}

    verify = run_cli("verify", local_example.dir, "--local-config", local_example.local, "-k", "time")
    assert verify.code == 0 and "slurm_time_estimate" not in verify.out.split("FAILED")[-1], verify.out
    slurm = local_example.dir / R4 / "finetune.slurm"
    slurm.write_text(slurm.read_text().replace(f"--time={time}", "--time=00:15:00"))
    verify = run_cli("verify", local_example.dir, "--local-config", local_example.local, "-k", "time")
    assert verify.code == 1 and f"slurm_time_estimate[{R4}]" in verify.out, verify.out
    assert f"expected {time}" in verify.out or time in verify.out


def test_a_given_time_is_not_estimated(local_example: Experiment) -> None:
    _estimated(local_example, 100)
    summary = local_example.load()
    summary["runs"][0]["compute"] = {"time": "00:20:00"}
    local_example.save(summary)
    runs = _report(local_example.generate("--json"))
    assert runs[R4]["time_estimated"] is None and runs[R8]["time_estimated"]
    assert "--time=00:20:00" in (local_example.dir / R4 / "finetune.slurm").read_text()


def test_the_estimate_is_capped_by_the_partition_and_compared_with_the_gpu(local_example: Experiment) -> None:
    _estimated(local_example, 100)
    local = yaml.safe_load(local_example.local.read_text())
    local.update(partition_max_time="00:20:00", gpu_memory_gib=40)
    local_example.local.write_text(yaml.safe_dump(local))
    res = local_example.generate("--json")
    assert res.code == 0, res.out + res.err
    run = _report(res)[R4]
    assert run["time_estimated"] == "00:20:00" and run["estimates"]["time"] > "00:20:00"
    assert any("over the partition limit 00:20:00" in w for w in run["warnings"]), run["warnings"]
    # A 70B model's weights alone are over 40 GiB.
    assert any("over the site's 40 GiB per GPU" in w for w in run["warnings"]), run["warnings"]
