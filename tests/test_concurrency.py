"""Concurrency: two `scaffold generate` on one experiment at once never corrupt the log or the outputs.

The second waits for the experiment's lock (saying so on stderr) and then does its own complete generation; the
outputs are those of whichever ran last; the log holds whole, timestamped lines, and each invocation's lines are
one contiguous block (a generation's, written under the lock; an invalid input's, appended in one write without it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from scaffold.commands.generate import generate
from scaffold.output.lock import experiment_lock

from .conftest import EXAMPLE, EXAMPLE_LOCAL

N_RUNS = 24
ROUNDS = 10
LOG = "logs/scaffold-torchtune.log"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z ")
HEADING = re.compile(r"^\S+ ===== scaffold-torchtune \S+ generate (\S+)")
GENERATED = ("setup_finetune.yaml", "finetune.yaml", "finetune.slurm")


def run_names() -> list[str]:
    return [f"Llama-3.2-1B-Instruct_rank{r}_s{i}" for i in range(N_RUNS // 4) for r in (4, 8, 16, 32)]


def make_experiment(root: Path) -> Path:
    """The example with N_RUNS runs, two site configs (accounts `nlplab` and `other`) and an invalid second summary
    in the same directory (`EXPERIMENT` may name the summary file)."""
    exp = root / "cap"
    shutil.copytree(EXAMPLE / "data", exp / "data")
    summary = yaml.safe_load((EXAMPLE / "experiment_summary.yaml").read_text())
    for key in ("variables", "evaluation"):
        summary.pop(key)
    summary["runs"] = [
        {"name": n, "type": "fine-tuned", "model": "Llama-3.2-1B-Instruct",
         "parameters": {"lora_rank": int(n.split("rank")[1].split("_")[0]), "seed": int(n.rsplit("s", 1)[1])}}
        for n in run_names()
    ]  # fmt: skip
    (exp / "experiment_summary.yaml").write_text(yaml.safe_dump(summary, sort_keys=False))
    summary["controls"]["lora_ranl"] = 4
    (exp / "invalid_summary.yaml").write_text(yaml.safe_dump(summary, sort_keys=False))
    local = EXAMPLE_LOCAL.read_text()
    (root / "a.local.yaml").write_text(local)
    (root / "b.local.yaml").write_text(local.replace("account: nlplab", "account: other"))
    return exp


def outputs(exp: Path) -> dict[str, bytes]:
    return {
        p.relative_to(exp).as_posix(): p.read_bytes()
        for name in run_names()
        for p in (exp / name / f for f in GENERATED)
        if p.exists()
    }


def start(exp: Path, summary: str, local: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "SCAFFOLD_LOCAL_CONFIG"}
    cmd = [sys.executable, "-m", "scaffold", "generate", str(exp / summary), "--local-config", str(exp.parent / local),
           "--no-check-paths"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def blocks(log: str) -> list[tuple[str, list[str]]]:
    """The log cut into invocations: (summary named in the heading, its lines). An invalid input's note (its heading
    and its one error, appended in one write without the lock) may sit between two sections of a generation that
    holds the lock; the generation's lines go on after it."""
    out: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    lines = log.splitlines()
    i = 0
    while i < len(lines):
        m = HEADING.match(lines[i])
        if m and "input invalid, nothing written" in lines[i]:
            out.append((m.group(1), lines[i : i + 2]))
            i += 2
            continue
        if m:
            current = [lines[i]]
            out.append((m.group(1), current))
        else:
            assert current is not None, f"a line before any heading: {lines[i]}"
            current.append(lines[i])
        i += 1
    return out


def assert_one_invocation(summary: str, lines: list[str]) -> str:
    """One invocation's lines, whole: an invalid input's note, or a generation of every run in order, ending with
    its `done:` line. Returns the local config the generation used (from its heading)."""
    assert all(TIMESTAMP.match(ln) for ln in lines), [ln for ln in lines if not TIMESTAMP.match(ln)][:3]
    if "input invalid, nothing written" in lines[0]:
        assert len(lines) == 2 and "lora_ranl" in lines[1], lines
        return ""
    runs = [m.group(1) for ln in lines if (m := re.search(r"===== run (\S+) ", ln))]
    assert runs == run_names(), "run sections missing, repeated or out of order: interleaved invocations"
    assert sum(" done: " in ln for ln in lines) == 1 and " done: " in lines[-1], "the block does not end at its done"
    return re.search(r"local config (\S+?);", lines[0]).group(1)


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    refs = {}
    for local in ("a.local.yaml", "b.local.yaml"):
        root = tmp_path_factory.mktemp("ref")
        exp = make_experiment(root)
        assert generate(exp, local_config=root / local, check_paths=False).exit_status == 0
        refs[local] = outputs(exp)
    assert refs["a.local.yaml"] != refs["b.local.yaml"]
    return refs


# Each round: two invocations started together: (summary, local config) for each.
PAIRS = [
    (("experiment_summary.yaml", "a.local.yaml"), ("experiment_summary.yaml", "a.local.yaml")),  # same input
    (("experiment_summary.yaml", "a.local.yaml"), ("experiment_summary.yaml", "b.local.yaml")),  # different input
    (("experiment_summary.yaml", "b.local.yaml"), ("experiment_summary.yaml", "a.local.yaml")),
    (("experiment_summary.yaml", "a.local.yaml"), ("invalid_summary.yaml", "a.local.yaml")),  # one is refused
    (("experiment_summary.yaml", "b.local.yaml"), ("experiment_summary.yaml", "b.local.yaml")),
]


@pytest.mark.slow  # ten rounds of two real processes: about 12 s
def test_two_generations_at_once_never_corrupt_the_log_or_the_outputs(references, tmp_path, record_property):
    exp = make_experiment(tmp_path)
    log_blocks = 0
    waited = 0
    for r in range(ROUNDS):
        pair = PAIRS[r % len(PAIRS)]
        procs = [start(exp, *args) for args in pair]
        results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
        for (summary, _), (code, out, err) in zip(pair, results, strict=True):
            assert code == (2 if summary == "invalid_summary.yaml" else 0), out + err
            assert "Traceback" not in err and "internal error" not in err, err
        waited += any("scaffold: waiting for" in err and "held by pid" in err for _, _, err in results)
        # The log: whole lines; each invocation of this round one contiguous block.
        log = (exp / LOG).read_text(encoding="utf-8")
        assert log.endswith("\n")
        new = blocks(log)[log_blocks:]
        log_blocks += len(new)
        assert len(new) == 2, [b[1][0] for b in new]
        used = [assert_one_invocation(summary, lines) for summary, lines in new]
        # The outputs: complete, and exactly those of the last generation that ran.
        last = Path([u for u in used if u][-1]).name
        assert outputs(exp) == references[last], f"round {r}: the outputs are not those of the last generation"
    record_property("rounds", ROUNDS)
    record_property("rounds_where_one_waited", waited)
    print(f"\nconcurrency: {ROUNDS} rounds of two processes, {N_RUNS} runs; one waited for the lock in {waited}")
    assert waited >= 1, "no round overlapped: the test did not exercise the lock"


def test_a_second_generation_waits_for_the_lock_and_says_so(tmp_path):
    exp = make_experiment(tmp_path)
    with experiment_lock(exp, "test holder"):
        proc = start(exp, "experiment_summary.yaml", "a.local.yaml")
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 60
        while not any("waiting for" in ln for ln in lines) and time.monotonic() < deadline:
            assert proc.poll() is None, "generate did not wait for the lock"
            time.sleep(0.02)
        assert not (exp / run_names()[0]).exists(), "it wrote while another process held the lock"
    assert proc.wait(timeout=120) == 0
    reader.join(timeout=10)
    (line,) = [ln for ln in lines if "waiting for" in ln]
    assert f"{exp}/logs/.scaffold.lock" in line and f"held by pid {os.getpid()} (test holder" in line
    assert (exp / run_names()[-1] / "finetune.slurm").is_file()


def test_a_held_lock_times_out_with_a_clear_message_and_writes_nothing(tmp_path):
    exp = make_experiment(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from scaffold.output.lock import experiment_lock\n"
         f"with experiment_lock({str(exp)!r}, 'holder'):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(p.relative_to(exp).as_posix() for p in exp.rglob("*"))
        started = time.monotonic()
        report = generate(exp, local_config=tmp_path / "a.local.yaml", check_paths=False, lock_timeout=0.5)
        assert 0.5 <= time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait()
    assert report.exit_status == 1 and report.runs == []
    (problem,) = report.errors
    text = problem.format()
    assert f"held by pid {holder.pid} (holder, since " in text, text
    assert "another scaffold-torchtune process is writing this experiment" in text and "(fix: wait" in text
    assert sorted(p.relative_to(exp).as_posix() for p in exp.rglob("*")) == before, "something was written"
