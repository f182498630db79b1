"""The generator's self-check is the verification suite's own checks (those registered with `texts=True`), run on the
texts just rendered: one rule set, one problem type. Each planted defect below is caught before anything is written,
under the id the suite reports it with on disk."""

from __future__ import annotations

import json

import pytest

from scaffold import plan
from scaffold.engine import EXPERIMENT, TEXT_FILES, all_checks, check, text_checks
from scaffold.engine.selfcheck import check_texts
from scaffold.errors import Problem
from scaffold.inputs import localconfig, summary
from scaffold.layout import FINE_TUNED, FINETUNE_FILE, SLURM_FILE, TRAINING_FILES
from scaffold.render import render_run

from .conftest import EXAMPLE, EXAMPLE_LOCAL, Experiment


@pytest.fixture(scope="module")
def rendered():
    """The shipped example planned (no path checks) and its runs rendered: (plan, [(run plan, texts)])."""
    p = plan.make_plan(summary.load(EXAMPLE), localconfig.load(EXAMPLE_LOCAL), check_paths=False)
    runs = [rp for rp in p.runs if rp.fine_tuned]
    assert len(runs) == 2
    return p, [(rp, render_run(rp.setup, p.models[rp.setup["model"]])) for rp in runs]


def outcomes_with(rendered, file: str, change) -> dict[str, list[Problem]]:
    """The self-check of the first run with one of its texts changed."""
    p, runs = rendered
    rp, texts = runs[0]
    return check_texts(p, [(rp, {**texts, file: change(texts[file])})])[0]


def failed(outcomes: dict[str, list[Problem]]) -> set[str]:
    return {check for check, problems in outcomes.items() if problems}


def test_the_rendered_example_passes_every_text_check_that_applies(rendered):
    p, runs = rendered
    for outcomes in check_texts(p, runs):
        assert not failed(outcomes)
        assert set(outcomes) <= {c.id for c in text_checks()}
        # Each of the original self-check's concerns is among them.
        assert {"finetune_yaml_loads", "parameter_values", "run_name_tokens", "metric_logger", "recipe_keys"} <= set(
            outcomes
        )
        assert {"slurm_syntax", "slurm_job_name", "slurm_config_path", "slurm_post_finetune"} <= set(outcomes)


def test_text_checks_are_fine_tuned_checks_of_the_two_rendered_files():
    assert len(text_checks()) >= 20
    for c in text_checks():
        assert c.scope == FINE_TUNED and c.file in TEXT_FILES and not c.requires_torchtune, c.id
    # The checks that read anything else are the suite's alone.
    assert {"paths_exist", "slurm_output_dir", "train_eval_parity", "sbatch_test_only"}.isdisjoint(
        c.id for c in text_checks()
    )
    assert {"paths_exist", "slurm_output_dir"} <= {c.id for c in all_checks()}


def test_a_text_check_must_read_only_the_rendered_texts():
    with pytest.raises(ValueError, match="texts=True"):
        check("planted_text_check", scope=FINE_TUNED, file="dataset", texts=True)(lambda run: None)
    with pytest.raises(ValueError, match="snapshot=True"):
        check("planted_golden_check", scope=FINE_TUNED, file="golden", snapshot=True)(lambda run, snapshot: None)


def test_golden_comparisons_are_checks_of_the_registry_collected_last():
    golden = [c for c in all_checks() if c.snapshot]
    assert [(c.id, c.scope, c.files) for c in golden] == [
        ("golden", FINE_TUNED, TRAINING_FILES),
        ("golden", EXPERIMENT, ("arrays",)),
    ]
    assert list(all_checks()[-len(golden) :]) == golden and not any(c.texts for c in golden)


def test_the_disk_view_and_the_rendered_view_are_two_implementations_of_one_base():
    """The checks registered with texts=True run on either view of a run: the files on disk (the suite) or the
    texts just rendered (the self-check); neither view is the other."""
    from scaffold.engine.context import RenderedRun, RunContext, RunView

    assert issubclass(RunContext, RunView) and issubclass(RenderedRun, RunView)
    assert not issubclass(RenderedRun, RunContext) and not issubclass(RunContext, RenderedRun)
    with pytest.raises(TypeError, match="abstract"):
        RunView(None, None, {})  # type: ignore[abstract,arg-type]


@pytest.mark.parametrize(
    ("file", "old", "new", "check_id"),
    [
        (FINETUNE_FILE, "lora_rank: 4", "lora_rank: 5", "parameter_values"),  # and the run name says rank4
        (FINETUNE_FILE, "lora_alpha: 8", "lora_alpha: 9", "lora_alpha_rule"),
        (FINETUNE_FILE, "output_dir:", "output_dir:\noutput_dir:", "finetune_yaml_loads"),
        (FINETUNE_FILE, "seed:", "seeds: 1\nseed:", "recipe_keys"),
        (FINETUNE_FILE, "WandBLogger", "DiskLogger", "metric_logger"),
        (SLURM_FILE, "--job-name=", "--job-name=x", "slurm_job_name"),
        (SLURM_FILE, "/finetune.yaml", "/other.yaml", "slurm_config_path"),
        (SLURM_FILE, "\nfi\n", "\n\n", "slurm_syntax"),
        (SLURM_FILE, "-m scaffold.torchtune_ext.post_finetune", "-m other.module", "slurm_post_finetune"),
    ],
)
def test_a_planted_defect_is_caught_before_writing(rendered, file, old, new, check_id):
    def change(text: str) -> str:
        assert old in text, (old, text)
        return text.replace(old, new, 1)

    outcomes = outcomes_with(rendered, file, change)
    assert check_id in failed(outcomes), outcomes
    problem = outcomes[check_id][0]
    assert isinstance(problem, Problem) and problem.run and problem.file and problem.file.endswith(file), problem


def test_generate_reports_a_failed_self_check_with_the_suites_check_id(example: Experiment, monkeypatch):
    """A renderer that writes the wrong rank fails the run, and says which check found it, where, and the fix."""
    from scaffold.commands import pipeline

    real = pipeline.render_run

    def wrong_rank(setup, model):
        texts = real(setup, model)
        return {
            **texts,
            FINETUNE_FILE: texts[FINETUNE_FILE].replace(f"lora_rank: {setup['lora_rank']}", "lora_rank: 3"),
        }

    monkeypatch.setattr(pipeline, "render_run", wrong_rank)
    from scaffold.commands.generate import generate
    from scaffold.output.report import as_json

    report = generate(example.summary, local_config=example.local, check_paths=False)
    doc = json.loads(as_json(report))
    assert doc["exit_status"] == 1 and doc["verification"]["checks_failed"] >= 2
    run = next(r for r in doc["runs"] if r["type"] == "fine-tuned")
    assert run["status"] == "failed"
    ids = {f["check"] for f in run["verification"]["failed"]}
    assert {"parameter_values", "run_name_tokens"} <= ids
    assert any("self-check parameter_values" in e["text"] and e.get("line") for e in run["errors"]), run["errors"]


def _wrong_rank(monkeypatch) -> None:
    """generate's renderer patched to write lora_rank: 3 into every finetune.yaml."""
    from scaffold.commands import pipeline

    real = pipeline.render_run

    def wrong_rank(setup, model):
        texts = real(setup, model)
        return {
            **texts,
            FINETUNE_FILE: texts[FINETUNE_FILE].replace(f"lora_rank: {setup['lora_rank']}", "lora_rank: 3"),
        }

    monkeypatch.setattr(pipeline, "render_run", wrong_rank)


def test_a_run_that_fails_its_self_check_writes_nothing_and_keeps_the_texts_in_logs(example: Experiment, monkeypatch):
    """Generated means checked: a run whose texts fail a check has no files written (a first generation leaves its
    directory empty), nothing of it in the manifest, and the failed texts in logs/rejected/RUN/, which the report,
    the JSON and the log name, each problem pointing at the line there."""
    from scaffold.commands.generate import generate
    from scaffold.output.report import as_json, as_text
    from scaffold.output.writer import Manifest

    _wrong_rank(monkeypatch)
    report = generate(example.summary, local_config=example.local, check_paths=False)
    assert report.exit_status == 1
    rejected = example.dir / "logs" / "rejected"
    for run in ("Llama-3.2-1B-Instruct_rank4", "Llama-3.2-1B-Instruct_rank8"):
        assert (
            not (example.dir / run / "finetune.yaml").exists()
            and not (example.dir / run / "setup_finetune.yaml").exists()
        )
        assert "lora_rank: 3\n" in (rejected / run / "finetune.yaml").read_text()
        assert sorted(p.name for p in (rejected / run).iterdir()) == sorted(TRAINING_FILES)
    manifest = Manifest(example.dir)
    assert not manifest.files and not manifest.sources
    assert not (example.dir / "arrays").exists()
    text = as_text(report)
    assert "the texts that failed are in " in text and "cap/logs/rejected/Llama-3.2-1B-Instruct_rank4/\n" in text, text
    assert "finetune.yaml not written" in text
    run = json.loads(as_json(report))["runs"][0]
    assert run["files"] == dict.fromkeys(TRAINING_FILES, "not written")
    assert any("logs/rejected/Llama-3.2-1B-Instruct_rank4" in n for n in run["notes"])
    (error,) = [e for e in run["errors"] if "self-check parameter_values" in e["text"]]
    assert error["file"].endswith("cap/logs/rejected/Llama-3.2-1B-Instruct_rank4/finetune.yaml"), error
    assert (rejected / run["name"] / "finetune.yaml").read_text().splitlines()[error["line"] - 1] == "  lora_rank: 3"
    log = (example.dir / "logs" / "scaffold-torchtune.log").read_text()
    assert "the texts that failed are in " in log and "cap/logs/rejected/Llama-3.2-1B-Instruct_rank4/\n" in log


def test_a_failed_self_check_keeps_the_previous_files_and_a_passing_run_clears_its_rejected_texts(
    example: Experiment, monkeypatch
):
    """After a good generation, a change whose texts fail their check (here: every run's, through a renderer that
    writes the wrong rank) leaves every file of the run as it was, byte for byte, still recorded as the checked
    ones of their old settings; once the texts pass again, the run is written and its rejected texts go."""
    from scaffold.commands.generate import generate
    from scaffold.output.writer import Manifest

    assert generate(example.summary, local_config=example.local, check_paths=False).exit_status == 0
    before = example.snapshot()
    sources = dict(Manifest(example.dir).sources)
    example.summary.write_text(example.summary.read_text().replace("epochs: 1", "epochs: 2"))
    with monkeypatch.context() as m:
        _wrong_rank(m)
        report = generate(example.summary, local_config=example.local, check_paths=False)
    assert report.exit_status == 1 and {r.status for r in report.runs if r.type == "fine-tuned"} == {"failed"}
    after = example.snapshot()
    for name, data in before.items():
        if not name.startswith("logs/") and name != "experiment_summary.yaml":
            assert after[name] == data, f"{name} was changed by a run that failed its self-check"
    assert Manifest(example.dir).sources == sources
    assert (example.dir / "logs" / "rejected" / "Llama-3.2-1B-Instruct_rank4" / "finetune.yaml").is_file()
    report = generate(example.summary, local_config=example.local, check_paths=False)
    assert report.exit_status == 0
    assert "epochs: 2\n" in (example.dir / "Llama-3.2-1B-Instruct_rank4" / "finetune.yaml").read_text()
    assert not (example.dir / "logs" / "rejected" / "Llama-3.2-1B-Instruct_rank4").exists()


def test_loading_the_registry_for_the_self_check_imports_nothing_heavy():
    """generate loads every check module; the suite's heavy imports (syrupy, pytest, transformers, OmegaConf) wait
    until a check that needs them runs (syrupy alone cost 0.11 s of a 0.5 s budget)."""
    import subprocess
    import sys

    code = (
        "import sys, scaffold.commands.generate, scaffold.engine.selfcheck\n"
        "from scaffold.engine import all_checks\n"
        "all_checks()\n"
        "print(sorted(m for m in ('syrupy', 'pytest', 'transformers', 'torch', 'omegaconf') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
