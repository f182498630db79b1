"""Property-based: any valid summary generates, passes its own verification, and re-generating changes nothing.

Summaries are drawn with hypothesis: 1-6 fine-tuned runs (and maybe a control run) over one or two registry models,
sweeping any of the parameters that run names spell, with values anywhere in the parameter table's ranges, run names
made of the table's tokens (`Llama-3.2-1B-Instruct_rank8_lr1.5e-5`), random controls (prompts, dataset type,
validation during training) and compute settings.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from scaffold.commands.generate import generate
from scaffold.inputs import params
from scaffold.output.report import counts

from .conftest import EXAMPLE, EXAMPLE_LOCAL

MODELS = ["Llama-3.2-1B-Instruct", "Llama-3.2-3B-Instruct", "Qwen2.5-3B-Instruct", "Llama-3.1-8B-Instruct"]
TRAIN_RECORDS = 8  # in the example's dataset: batch_size x accumulation x GPUs may not exceed it

finite = {"allow_nan": False, "allow_infinity": False}
# Values anywhere in templates/parameters.yaml's ranges (the ones run names can spell).
VALUES = {
    "lora_rank": st.integers(1, 4096),
    "lora_alpha": st.floats(min_value=1e-3, max_value=1e4, **finite) | st.integers(1, 10_000),
    "lora_dropout": st.floats(min_value=0, max_value=0.999, **finite),
    "lr": st.floats(min_value=1e-8, max_value=1, exclude_min=True, **finite),
    "weight_decay": st.floats(min_value=0, max_value=1, **finite),
    "epochs": st.integers(1, 10_000),
    "seed": st.integers(0, 2**32 - 1),
    "max_seq_len": st.integers(1, 1_048_576),
    "num_warmup_steps": st.integers(0, 100_000),
    "batch_size": st.integers(1, 4),
    "gradient_accumulation_steps": st.integers(1, 2),
}
text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


def literal(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


@st.composite
def summaries(draw) -> dict:
    summary = yaml.safe_load((EXAMPLE / "experiment_summary.yaml").read_text())
    for key in ("variables", "evaluation"):
        summary.pop(key)
    models = draw(st.lists(st.sampled_from(MODELS), min_size=1, max_size=2, unique=True))
    summary["models"]["base"] = [{"name": m, "path": f"/scratch/models/{m}"} for m in models]
    swept = draw(st.lists(st.sampled_from(sorted(VALUES)), min_size=1, max_size=3, unique=True))
    controls = {
        "system_prompt": draw(st.none() | text),
        # A str.format template, as the evaluation step fills it: literal braces doubled.
        "prompt": literal(draw(text)) + "{input}" + literal(draw(text)),
        "dataset_type": draw(st.sampled_from(["chat_completion", "text_completion"])),
        "validation_during_training": draw(st.booleans()),
    }
    for name in draw(st.lists(st.sampled_from(sorted(set(VALUES) - set(swept))), max_size=3, unique=True)):
        controls[name] = draw(VALUES[name])
    summary["controls"] = {k: v for k, v in controls.items() if v is not None}
    settings_ = draw(
        st.lists(
            st.tuples(st.sampled_from(models), st.tuples(*(VALUES[p] for p in swept))),
            min_size=1,
            max_size=6,
            unique_by=lambda s: (s[0], tuple(params.token_for(p, v) for p, v in zip(swept, s[1], strict=True))),
        )
    )
    runs = []
    for model, values in settings_:
        parameters = dict(zip(swept, values, strict=True))
        name = "_".join([model, *(params.token_for(p, v) for p, v in parameters.items())])
        run = {"name": name, "type": "fine-tuned", "model": model, "parameters": parameters}
        gpus = 1 if controls["validation_during_training"] else draw(st.sampled_from([1, 1, 2]))
        merged = {"batch_size": 4, "gradient_accumulation_steps": 1, **summary["controls"], **parameters}
        assume(merged["batch_size"] * merged["gradient_accumulation_steps"] * gpus <= TRAIN_RECORDS)
        if draw(st.booleans()):
            seconds = draw(st.integers(1, 86_400))  # up to the example's partition limit, one day
            h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
            time = f"{h:02d}:{m:02d}:{s:02d}" if h < 24 else "1-00:00:00"
            run["compute"] = {"time": time, "gpus": gpus, "mem": f"{draw(st.integers(1, 512))}G"}
        elif gpus > 1:
            run["compute"] = {"gpus": gpus}
        runs.append(run)
    if draw(st.booleans()):
        runs.append({"name": f"{models[0]}_base", "type": "control", "model": models[0], "parameters": {}})
    summary["runs"] = runs
    # what a sweep over these runs would list (listed runs then win, and must spell every swept value)
    summary["variables"] = {p: sorted({r["parameters"][p] for r in runs if p in r["parameters"]}) for p in swept}
    return summary


def write(root: Path, summary: dict) -> Path:
    exp = root / "cap"
    shutil.copytree(EXAMPLE / "data", exp / "data")
    shutil.copy(EXAMPLE_LOCAL, root / "scaffold.local.yaml")
    # allow_unicode=False: PyYAML writes a raw U+0085 that it then reads back as a space
    (exp / "experiment_summary.yaml").write_text(yaml.safe_dump(summary, sort_keys=False, allow_unicode=False))
    return exp


def expected(summary: dict, run: dict) -> dict:
    """The values a run's finetune.yaml must hold: the run's own, else the controls', else the table's default."""
    out = {name: p.default for name, p in params.table().items()}
    out.update(summary["controls"])
    out.update(run["parameters"])
    if "lora_alpha" not in summary["controls"] and "lora_alpha" not in run["parameters"]:
        out["lora_alpha"] = 2 * out["lora_rank"]
    return out


def assert_holds_values(exp: Path, summary: dict) -> None:
    for run in summary["runs"]:
        if run["type"] != "fine-tuned":
            continue
        cfg = OmegaConf.to_container(OmegaConf.load(exp / run["name"] / "finetune.yaml"), resolve=True)
        want = expected(summary, run)
        for name, p in params.table().items():
            if p.path is None or not p.applies(want) or name == "metric_logger":
                continue
            found, value = params.get_path(cfg, p.path)
            assert found and params.same_value(value, want[name]), f"{run['name']}: {p.path} is {value!r}, want {name}"
        assert cfg["dataset"]["prompt"] == want["prompt"]  # verbatim: the evaluation step fills the same text


def stats(exp: Path) -> dict[str, tuple[int, bytes]]:
    return {
        p.relative_to(exp).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
        for p in exp.rglob("*")
        if p.is_file() and p.parent.name != "logs"
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(summary=summaries())
def test_any_valid_summary_generates_verifies_and_regenerates_to_nothing(summary):
    with tempfile.TemporaryDirectory() as tmp:
        exp = write(Path(tmp), summary)
        local = Path(tmp) / "scaffold.local.yaml"
        report = generate(exp, local_config=local, check_paths=False)
        problems = [p.format() for p in report.input_errors + [e for r in report.runs for e in r.errors]]
        assert report.exit_status == 0, problems
        c = counts(report)
        assert c["checks_failed"] == 0 and c["checks_passed"] > 0
        assert c["runs_configured"] == sum(r["type"] == "fine-tuned" for r in summary["runs"])
        assert_holds_values(exp, summary)
        before = stats(exp)
        again = generate(exp, local_config=local, check_paths=False)
        assert again.exit_status == 0
        statuses = {s for r in again.runs for s in r.files.values()}
        assert statuses <= {"unchanged"}, statuses
        assert stats(exp) == before, "a re-run rewrote or touched a file"


def test_the_cli_and_the_verification_suite_agree(tmp_path):
    """One drawn-like summary through the real CLI (--json) and `scaffold verify` (golden files aside: there are
    none for a drawn experiment)."""
    summary = yaml.safe_load((EXAMPLE / "experiment_summary.yaml").read_text())
    summary.pop("evaluation")
    summary["controls"]["lr"] = 1e-4  # (PyYAML's YAML 1.1 reads the example's 1e-4 as a string)
    summary["runs"][1]["parameters"]["lr"] = 1.23456789e-5  # a value whose run-name token needs all its digits
    summary["runs"][1]["name"] += "_" + params.token_for("lr", 1.23456789e-5)
    summary["controls"]["system_prompt"] = 'Say "$(id)" or `id`; ${oc.env:HOME} \\${x}\n#SBATCH --wrap=id'
    exp = write(tmp_path, summary)
    env = {k: v for k, v in os.environ.items() if k != "SCAFFOLD_LOCAL_CONFIG"}
    args = [str(exp), "--local-config", str(tmp_path / "scaffold.local.yaml"), "--no-check-paths"]
    cmd = [sys.executable, "-m", "scaffold"]
    res = subprocess.run([*cmd, "generate", *args, "--json"], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["verification"]["checks_failed"] == 0 and doc["runs_configured"] == 2
    assert_holds_values(exp, summary)
    res = subprocess.run([*cmd, "verify", *args, "-q", "-k", "not golden"], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    again = subprocess.run([*cmd, "generate", *args, "--json"], capture_output=True, text=True, env=env)
    assert {s for r in json.loads(again.stdout)["runs"] for s in r["files"].values()} <= {"unchanged"}


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from([n for n, p in params.table().items() if p.tokens]), data=st.data())
def test_a_run_name_token_reads_back_as_its_value(name, data):
    """token_for makes the names of swept runs: each must read back as the value it was made from (six digits
    were kept once: lr 1.23456789e-5 became lr1.234568e-5, which then contradicted the run's own lr)."""
    schema = params.table()[name].schema
    lo = schema.get("minimum", schema.get("exclusiveMinimum", 0))
    hi = schema.get("maximum", schema.get("exclusiveMaximum", 1e6))
    if schema["type"] == "integer":
        value = data.draw(st.integers(int(lo), int(hi)))
    else:
        value = data.draw(st.floats(min_value=lo, max_value=hi, exclude_min="exclusiveMinimum" in schema,
                                    exclude_max="exclusiveMaximum" in schema, **finite))  # fmt: skip
    token = params.token_for(name, value)
    ((parsed,),) = params.parse_run_name(f"Model_{token}").values()
    assert parsed[0] == token and params.same_value(parsed[1], value), (token, value)
