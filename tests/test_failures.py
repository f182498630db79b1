"""Failure behaviour: every failure is one line naming the file (and line), the run, the field
and the fix; the other runs still complete; nothing already on disk is lost or left half-written.

Each test is an example: an input in, the expected exit status and message out. The CLI runs as a real process.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import jinja2
import pytest
import yaml

import scaffold.output.writer
import scaffold.render
from scaffold.commands.generate import generate

from .conftest import EXAMPLE, EXAMPLE_LOCAL, REPO, Experiment, Result, make_model_dir, run_cli

RANK4, RANK8, BASE = "Llama-3.2-1B-Instruct_rank4", "Llama-3.2-1B-Instruct_rank8", "Llama-3.2-1B-Instruct_base"
TRAINING_FILES = ("setup_finetune.yaml", "finetune.yaml", "finetune.slurm")
LOG = "logs/scaffold-torchtune.log"
NOBODY = 65534


# --- helpers -------------------------------------------------------------------------------------------------


def edit(exp: Experiment, old: str, new: str) -> int:
    """Replace `old` (present exactly once) in the summary text; return the 1-based line of the new text."""
    text = exp.summary.read_text()
    assert text.count(old) == 1, f"{old!r} is not in the summary exactly once"
    text = text.replace(old, new)
    exp.summary.write_text(text)
    return text[: text.index(new)].count("\n") + 1


def line_of(exp: Experiment, text: str) -> int:
    """The 1-based line of the summary where `text` first appears."""
    body = exp.summary.read_text()
    return body[: body.index(text)].count("\n") + 1


def output_line(res: Result, *parts: str) -> str:
    """The one line of output that carries every part (and no traceback anywhere)."""
    assert "Traceback" not in res.err + res.out, res.err
    lines = [ln for ln in (res.out + res.err).splitlines() if all(p in ln for p in parts)]
    assert lines, f"no line with {parts} in:\n{res.out}{res.err}"
    return lines[0]


def assert_nothing_lost(before: dict[str, bytes], after: dict[str, bytes]) -> None:
    """Every file that was there is byte-for-byte the same (the log only grows); no temporary file is left."""
    for name, data in before.items():
        if name == LOG:
            assert after[name].startswith(data), "the log was truncated"
        else:
            assert after.get(name) == data, f"{name} changed or disappeared"
    assert not [n for n in after if n.endswith(".tmp")], "a temporary file was left behind"


def assert_input_rejected(exp: Experiment, res: Result, before: dict[str, bytes]) -> None:
    """Exit 2: no run directory created, nothing but the log appended."""
    assert res.code == 2, res.out + res.err
    after = exp.snapshot()
    assert_nothing_lost(before, after)
    assert set(after) - set(before) <= {LOG}
    assert {p.name for p in exp.dir.iterdir() if p.is_dir()} <= {"data", "logs"}
    assert "input invalid, nothing written" in res.err


def assert_complete(exp: Experiment, run: str) -> None:
    for name in TRAINING_FILES:
        assert (exp.dir / run / name).stat().st_size > 0, f"{run}/{name} missing or empty"
    assert (exp.dir / run / "artifacts").is_dir()


def stats(exp: Experiment) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(exp.dir)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(exp.dir.rglob("*"))
        if p.is_file() and str(p.relative_to(exp.dir)) != LOG and p.name != ".scaffold.lock"
    }


# --- missing model files, missing dataset --------------------------------------------------------------------


@pytest.fixture
def two_models(local_example: Experiment, tmp_path: Path) -> Experiment:
    """rank4 trains the 1B model (complete on disk); rank8 trains the 3B model, at tmp/models/3B."""
    data = local_example.load()
    data["models"]["base"].append({"name": "Llama-3.2-3B-Instruct", "path": str(tmp_path / "models" / "3B")})
    data["runs"][1].update(name="Llama-3.2-3B-Instruct_rank8", model="Llama-3.2-3B-Instruct")
    local_example.save(data)
    return local_example


THREE_B_FILES = [
    "config.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "original/tokenizer.model",
]


@pytest.mark.parametrize(
    "present, expected",
    [
        (None, "model directory not found"),
        (THREE_B_FILES[:2] + THREE_B_FILES[3:], "model files missing in .*: model-00002-of-00002.safetensors \\(fix"),
        (
            [f for f in THREE_B_FILES if "tokenizer" not in f],
            "model files missing in .*: original/tokenizer.model \\(fix",
        ),
    ],
    ids=["dir-absent", "checkpoint-missing", "tokenizer-missing"],
)
def test_missing_model_files_fail_that_run_only(two_models: Experiment, tmp_path: Path, present, expected):
    if present is not None:
        make_model_dir(tmp_path / "models" / "3B", present)
    run = "Llama-3.2-3B-Instruct_rank8"
    before = two_models.snapshot()
    res = two_models.generate()
    assert res.code == 1
    line = output_line(res, f"[run {run}]", "runs[1].model")
    assert "experiment_summary.yaml:" in line and "fix:" in line
    assert re.search(expected, line), line
    assert_nothing_lost(before, two_models.snapshot())
    assert not (two_models.dir / run).exists()
    assert_complete(two_models, RANK4)
    assert (two_models.dir / BASE).is_dir()
    assert f"FAILED runs (1): {run}" in res.out


def test_model_gone_after_generation_keeps_the_generated_files(two_models: Experiment, tmp_path: Path):
    make_model_dir(tmp_path / "models" / "3B", THREE_B_FILES)
    assert two_models.generate().code == 0
    (tmp_path / "models" / "3B" / "model-00002-of-00002.safetensors").unlink()
    before = two_models.snapshot()
    res = two_models.generate()
    assert res.code == 1
    output_line(res, "[run Llama-3.2-3B-Instruct_rank8]", "model files missing")
    assert_nothing_lost(before, two_models.snapshot())


def test_missing_dataset_fails_every_fine_tuned_run(local_example: Experiment):
    (local_example.dir / "data" / "words_5L_80P_10.json").unlink()
    line = line_of(local_example, "words_5L_80P_10.json")
    before = local_example.snapshot()
    res = local_example.generate()
    assert res.code == 1
    for run in (RANK4, RANK8):
        msg = output_line(res, f"[run {run}]", "dataset not found")
        assert f"experiment_summary.yaml:{line}:" in msg and "data.training.path" in msg and "fix:" in msg
        assert not (local_example.dir / run / "finetune.yaml").exists()
    assert (local_example.dir / BASE).is_dir()
    assert_nothing_lost(before, local_example.snapshot())


# --- invalid parameters (schema): exit 2, nothing written ---------------------------------------------------


@pytest.mark.parametrize(
    "old, new, field, expected",
    [
        (
            "lora_rank: 4\n",
            'lora_rank: "4"\n',
            "runs[0].parameters.lora_rank",
            "expected integer, found the string '4'",
        ),
        (
            "lora_rank: 4\n",
            "lora_rank: 0\n",
            "runs[0].parameters.lora_rank",
            "0 is out of range (fix: use a value >= 1",
        ),
        ("lr: 1e-4", "lr: -1e-4", "controls.lr", "out of range (fix: use a value > 0"),
        ("batch_size: 4", "batch_size: 0", "controls.batch_size", "0 is out of range (fix: use a value >= 1"),
        ("lora_rank: 4\n", "lora_ranl: 4\n", "runs[0].parameters.lora_ranl", "did you mean 'lora_rank'"),
        (
            'prompt: "Capitalize the given word: {input}\\n"',
            'prompt: "Capitalize the given word:\\n"',
            "controls.prompt",
            "the prompt must contain {input} exactly once",
        ),
        (
            'time: "00:30:00"',
            "time: 4:00:00",
            "runs[1].compute.time",
            'YAML read 4:00:00 as the number 14400 (base 60), not as a time (fix: quote it: "4:00:00")',
        ),
    ],
    ids=["rank-string", "rank-0", "lr-negative", "batch-size-0", "lora_ranl", "prompt-without-input", "time-unquoted"],
)
def test_invalid_parameter_is_rejected_before_anything_is_written(example: Experiment, old, new, field, expected):
    line = edit(example, old, new)
    before = example.snapshot()
    res = example.generate("--no-check-paths")
    msg = output_line(res, f"experiment_summary.yaml:{line}:", field)
    assert expected in msg
    assert_input_rejected(example, res, before)


def test_prompt_without_input_names_a_fix(example: Experiment):
    edit(example, 'prompt: "Capitalize the given word: {input}\\n"', 'prompt: "Capitalize the given word:\\n"')
    res = example.generate("--no-check-paths")
    assert "{input}" in output_line(res, "controls.prompt", "fix:")


def test_invalid_parameter_leaves_earlier_generation_untouched(example: Experiment):
    assert example.generate("--no-check-paths").code == 0
    edit(example, "lora_rank: 8\n", "lora_rank: 0\n")
    before = stats(example)
    res = example.generate("--no-check-paths")
    assert res.code == 2
    output_line(res, "runs[1].parameters.lora_rank", "out of range")
    assert stats(example) == before


# --- unsafe run names, colliding run names -------------------------------------------------------------------


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize(
    "name",
    ["..", "a/b", "../evil", "x;rm -rf ~", "$(id)", "`id`", "name with space", "Llama-3.2-1B-Instru\u0441t"],
    ids=["dotdot", "slash", "escape", "semicolon", "dollar-paren", "backtick", "space", "cyrillic-es"],
)
def test_unsafe_run_name_is_refused(example: Experiment, tmp_path: Path, name: str):
    data = example.load()
    data["runs"][2]["name"] = name  # the control run: its directory is created without any other check
    example.save(data)
    before_tree, before = tree(tmp_path), example.snapshot()
    res = example.generate("--no-check-paths")
    msg = output_line(res, "runs[2].name", "fix:")
    assert "experiment_summary.yaml:" in msg and "ASCII letters" in msg
    assert_input_rejected(example, res, before)
    assert tree(tmp_path) - before_tree <= {"cap/logs", f"cap/{LOG}"}


@pytest.mark.parametrize("collide", [str, str.upper], ids=["same-name", "differ-by-case"])
def test_colliding_run_names_are_refused(example: Experiment, collide):
    data = example.load()
    data["runs"][2]["name"] = collide(RANK4)
    example.save(data)
    before = example.snapshot()
    res = example.generate("--no-check-paths")
    msg = output_line(res, "runs[2].name", "share a directory")
    assert f"runs[0] '{RANK4}'" in msg and f"runs[2] '{collide(RANK4)}'" in msg and "fix:" in msg
    assert_input_rejected(example, res, before)


def test_run_named_like_the_log_directory_is_refused(example: Experiment):
    data = example.load()
    data["runs"][0]["name"] = "logs"
    example.save(data)
    res = example.generate("--no-check-paths")
    assert res.code == 2
    assert not (example.dir / "logs" / "finetune.yaml").exists()


# --- a rendering error (in-process, with a broken template) -------------------------------------------------


def broken_templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.DictLoader(
            {"finetune.yaml.j2": "model: {{ no_such_variable }}\n", "finetune.slurm.j2": "#!/bin/bash\n"}
        ),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["yaml"] = env.filters["sh"] = str
    return env


def test_rendering_error_fails_the_run_and_keeps_earlier_files(local_example: Experiment, monkeypatch):
    assert generate(local_example.dir, local_config=local_example.local).exit_status == 0
    before = stats(local_example)
    edit(local_example, "lr: 1e-4", "lr: 2e-4")  # every run would change
    monkeypatch.setattr(scaffold.render, "_environment", broken_templates)
    report = generate(local_example.dir, local_config=local_example.local)
    assert report.exit_status == 1
    by_name = {r.name: r for r in report.runs}
    for run in (RANK4, RANK8):
        assert by_name[run].status == "failed"
        (problem,) = by_name[run].errors
        assert problem.run == run
        assert problem.message.startswith("rendering failed: finetune.yaml.j2:")
        assert "no_such_variable" in problem.message
    assert by_name[BASE].status == "ok"
    after = stats(local_example)
    assert {k: v for k, v in after.items() if k != "experiment_summary.yaml"} == {
        k: v for k, v in before.items() if k != "experiment_summary.yaml"
    }
    assert "rendering failed" in (local_example.dir / LOG).read_text()


def test_rendering_error_names_a_fix(local_example: Experiment, monkeypatch):
    monkeypatch.setattr(scaffold.render, "_environment", broken_templates)
    (problem, *_) = generate(local_example.dir, local_config=local_example.local).runs[0].errors
    assert problem.fix and problem.file


# --- a missing venv or conda prefix named in the local config ----------------------------------------------


@pytest.mark.parametrize(
    "setting, field, expected",
    [
        ("venv: /nonexistent/venv", "venv", "virtual environment not found: /nonexistent/venv/bin/activate"),
        ("conda_env: /nonexistent/conda", "conda_env", "conda environment not found: /nonexistent/conda"),
    ],
)
def test_missing_environment_fails_each_run(local_example: Experiment, setting, field, expected):
    text = local_example.local.read_text().replace("conda_env: tune\n", "")
    local_example.local.write_text(text + setting + "\n")
    line = len((text + setting).splitlines())
    before = local_example.snapshot()
    res = local_example.generate()
    assert res.code == 1
    assert_nothing_lost(before, local_example.snapshot())
    for run in (RANK4, RANK8):
        msg = output_line(res, f"scaffold.local.yaml:{line}:", f"[run {run}] {field}:")
        assert expected in msg and "fix:" in msg
    assert (local_example.dir / BASE).is_dir()
    assert local_example.generate("--no-check-paths").code == 0


# --- permission denied (run as user nobody) -----------------------------------------------------------------

# What the CLI imports, copied where user nobody can read it (the interpreter's own site-packages may sit
# under a home directory that nobody cannot enter).
DEPENDENCIES = [
    "yaml",
    "jinja2",
    "markupsafe",
    "jsonschema",
    "jsonschema_specifications",
    "referencing",
    "rpds",
    "attrs",
    "attr",
    "omegaconf",
    "antlr4",
    "typing_extensions",
]


@pytest.fixture(scope="module")
def as_nobody():
    """run_cli keyword arguments that run the CLI as user nobody (uid 65534), or a skip."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the CLI as user nobody")
    site = Path(tempfile.mkdtemp(prefix="scaffold-nobody-site-"))
    try:
        for name in DEPENDENCIES:
            try:
                module = importlib.import_module(name)
            except ImportError:  # not every version of a dependency needs all of these
                continue
            src = Path(module.__file__)
            src = src.parent if src.name == "__init__.py" else src
            (shutil.copytree if src.is_dir() else shutil.copy)(src, site / src.name)
        for p in [site, *site.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        env = {"PYTHONPATH": f"{site}{os.pathsep}{REPO}", "PYTHONDONTWRITEBYTECODE": "1"}
        probe = run_cli("generate", "/nonexistent", env=env, user=NOBODY, cwd=Path("/"))
        if probe.code != 2:
            pytest.skip(f"user nobody cannot run this interpreter: {probe.err.strip()[-200:]}")
        yield {"env": env, "user": NOBODY, "cwd": Path("/")}
    finally:
        shutil.rmtree(site)


@pytest.fixture
def world_readable():
    """The example (model and data local) in a directory that user nobody can read but not write."""
    top = Path(tempfile.mkdtemp(prefix="scaffold-perm-"))
    try:
        exp = top / "cap"
        shutil.copytree(
            EXAMPLE, exp, ignore=shutil.ignore_patterns("Llama-*", "logs", "arrays", ".scaffold-manifest.json")
        )
        local = top / "scaffold.local.yaml"
        shutil.copy(EXAMPLE_LOCAL, local)
        e = Experiment(exp, local)
        data = e.load()
        data["experiment"]["dir"] = str(exp)
        data["models"]["base"][0]["path"] = str(make_model_dir(top / "models" / "Llama-3.2-1B-Instruct"))
        e.save(data)
        for p in [top, *top.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        yield e
    finally:
        shutil.rmtree(top)


def test_experiment_directory_not_writable(world_readable: Experiment, as_nobody: dict):
    before = world_readable.snapshot()
    res = world_readable.generate(**as_nobody)
    assert res.code in (1, 2), res.out + res.err
    for run in (RANK4, RANK8, BASE):
        msg = output_line(res, f"[run {run}]", "permission denied")
        assert "fix:" in msg
    assert "internal error" not in res.err
    assert world_readable.snapshot() == before


def test_read_only_run_directory_fails_that_run_only(world_readable: Experiment, as_nobody: dict):
    world_readable.dir.chmod(0o777)
    (world_readable.dir / RANK4).mkdir()
    (world_readable.dir / RANK4).chmod(0o555)
    before = world_readable.snapshot()
    res = world_readable.generate(**as_nobody)
    assert res.code == 1, res.out + res.err
    line = output_line(res, f"[run {RANK4}]", "permission denied")
    assert "fix:" in line
    assert ".tmp" not in line, line  # the file that could not be written, not its temporary's bare name
    assert list((world_readable.dir / RANK4).iterdir()) == []
    assert_complete(world_readable, RANK8)
    assert (world_readable.dir / BASE).is_dir()
    assert_nothing_lost(before, world_readable.snapshot())


# --- re-running, hand edits, --force ------------------------------------------------------------------------


def test_rerun_on_unchanged_input_rewrites_nothing(example: Experiment):
    assert example.generate("--no-check-paths").code == 0
    before = stats(example)
    res = example.generate("--no-check-paths")
    assert res.code == 0
    assert stats(example) == before
    for run in (RANK4, RANK8):
        line = output_line(res, run, "fine-tuned")
        assert line.count("unchanged") == 3 and "created" not in line and "updated" not in line


def test_hand_edited_file_is_kept_with_its_diff(example: Experiment):
    assert example.generate("--no-check-paths").code == 0
    target = example.dir / RANK4 / "finetune.yaml"
    generated = target.read_bytes()
    target.write_bytes(generated.replace(b"epochs: 1\n", b"epochs: 3  # by hand\n"))
    edited = target.read_bytes()
    res = example.generate("--no-check-paths")
    assert res.code == 1
    msg = output_line(res, f"[run {RANK4}]", "edited by hand")
    assert "finetune.yaml" in msg and "--force" in msg
    assert "-epochs: 3  # by hand" in res.out and "+epochs: 1" in res.out
    assert target.read_bytes() == edited

    res = example.generate("--no-check-paths", "--force")
    assert res.code == 0
    assert target.read_bytes() == generated
    (backup,) = (example.dir / RANK4).glob("finetune.yaml.*.bak")
    assert backup.read_bytes() == edited
    assert backup.name in output_line(res, "backup of the hand-edited file")


def test_hand_edited_setup_keeps_the_runs_other_files(example: Experiment):
    assert example.generate("--no-check-paths").code == 0
    setup = example.dir / RANK4 / "setup_finetune.yaml"
    setup.write_text(setup.read_text().replace("epochs: 1\n", "epochs: 3\n"))
    others = {n: (example.dir / RANK4 / n).read_bytes() for n in ("finetune.yaml", "finetune.slurm")}
    edit(example, "lr: 1e-4", "lr: 2e-4")  # would change every run's files
    res = example.generate("--no-check-paths")
    assert res.code == 1
    output_line(res, f"[run {RANK4}]", "setup_finetune.yaml edited by hand", "other files were left as they are")
    assert {n: (example.dir / RANK4 / n).read_bytes() for n in others} == others
    assert "epochs: 3" in setup.read_text()
    assert "lr: 0.0002" in (example.dir / RANK8 / "finetune.yaml").read_text()


def test_two_forced_overwrites_keep_both_backups(example: Experiment, monkeypatch):
    class SameSecond(datetime.datetime):  # two --force runs within one second, made deterministic
        @classmethod
        def now(cls, tz=None):
            return datetime.datetime(2026, 11, 30, 12, 0, 0, tzinfo=tz)

    monkeypatch.setattr(scaffold.output.writer, "datetime", SameSecond)
    assert generate(example.dir, local_config=example.local, check_paths=False).exit_status == 0
    target = example.dir / RANK4 / "finetune.yaml"
    edits = []
    for note in ("# first edit\n", "# second edit\n"):
        target.write_text(target.read_text() + note)
        edits.append(target.read_bytes())
        assert generate(example.dir, local_config=example.local, check_paths=False, force=True).exit_status == 0
    assert sorted(p.read_bytes() for p in target.parent.glob("finetune.yaml.*.bak")) == sorted(edits)


def test_damaged_manifest_overwrites_nothing_and_force_names_every_backup(example: Experiment):
    """Without a readable manifest no file is known to be the tool's own: all are kept unless --force, which keeps
    each old version as a backup that the JSON report lists."""
    assert example.generate("--no-check-paths").code == 0
    edit(example, "lr: 1e-4", "lr: 2e-4")
    (example.dir / ".scaffold-manifest.json").write_text('{"files": {"torn')
    before = example.snapshot()
    res = example.generate("--no-check-paths", "--json")
    assert res.code == 1
    assert_nothing_lost(before, example.snapshot())
    res = example.generate("--no-check-paths", "--json", "--force")
    assert res.code == 0, res.out
    for run in json.loads(res.out)["runs"][:2]:
        backups = [example.dir.parent / b for b in run["backups"]]
        assert len(backups) == 2 and all(b.is_file() for b in backups)  # setup_finetune.yaml and finetune.yaml
        for b in backups:
            assert b.read_bytes() == before[str(b.relative_to(example.dir)).rsplit(".", 3)[0]]


# --- refusals: another tool, unknown model, validation during training --------------------------------------


def test_other_preparation_tool_is_refused(example: Experiment):
    line = edit(example, 'preparation: "torchtune"', 'preparation: "axolotl"')
    before = example.snapshot()
    res = example.generate("--no-check-paths")
    msg = output_line(res, f"experiment_summary.yaml:{line}:", "tools.preparation")
    assert "'axolotl', not torchtune" in msg and "fix:" in msg
    assert_input_rejected(example, res, before)


def test_unknown_model_fails_that_run_and_lists_known_models(example: Experiment):
    data = example.load()
    data["runs"][0]["model"] = "Llama-3.2-1B-Instrct"
    example.save(data)
    before = example.snapshot()
    res = example.generate("--no-check-paths")
    assert res.code == 1
    assert_nothing_lost(before, example.snapshot())
    msg = output_line(res, f"[run {RANK4}] runs[0].model: unknown model 'Llama-3.2-1B-Instrct'")
    assert "did you mean 'Llama-3.2-1B-Instruct'" in msg
    assert "known: Llama-3.1-8B-Instruct, Llama-3.2-1B, Llama-3.2-1B-Instruct" in msg and "Qwen2.5-3B-Instruct" in msg
    assert not (example.dir / RANK4).exists()
    assert_complete(example, RANK8)


def test_validation_during_training_uses_the_validating_recipe(example: Experiment):
    data = example.load()
    data["runs"][1]["parameters"]["validation_during_training"] = True
    example.save(data)
    res = example.generate("--no-check-paths")
    assert res.code == 0, res.out + res.err
    cfg = (example.dir / RANK8 / "finetune.yaml").read_text()
    assert "recipe: lora_finetune_single_device_val" in cfg and "dataset_val:" in cfg and "field: validation" in cfg
    script = (example.dir / RANK8 / "finetune.slurm").read_text()
    assert "tune run scaffold/torchtune_ext/lora_finetune_single_device_val.py --config" in script
    assert "dataset_val:" not in (example.dir / RANK4 / "finetune.yaml").read_text()


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"compute": {"gpus": 2}}, "the only validating recipe is single-device"),
        ({"splits": 0}, "data.training.splits.validation is 0"),
        ({"dataset": "no-validation"}, "no records in split 'validation'"),
    ],
    ids=["multi-gpu", "declared-empty", "file-without-split"],
)
def test_validation_that_cannot_happen_is_refused(local_example: Experiment, change: dict, expected: str):
    """Never train silently without the validation that was asked for."""
    data = local_example.load()
    data["runs"][1]["parameters"]["validation_during_training"] = True
    if "compute" in change:
        data["runs"][1]["compute"] = change["compute"]
    path = local_example.dir / "data" / "words_5L_80P_10.json"
    records = json.loads(path.read_text())
    if "splits" in change:
        data["data"]["training"]["splits"]["validation"] = 0
        records["validation"] = []  # as declared (a count that disagrees with the file is refused as such)
    if "dataset" in change:
        del records["validation"]
        data["data"]["training"]["splits"].pop("validation")
    path.write_text(json.dumps(records))
    local_example.save(data)
    before = local_example.snapshot()
    res = local_example.generate()
    assert res.code == 1
    assert_nothing_lost(before, local_example.snapshot())
    msg = output_line(res, f"[run {RANK8}]", expected)
    assert "fix:" in msg
    assert not (local_example.dir / RANK8 / "finetune.yaml").exists()
    assert_complete(local_example, RANK4)


# --- --json: exactly one document on stdout ----------------------------------------------------------------


@pytest.mark.parametrize(
    "change, code",
    [
        (None, 0),
        (("runs", 0, "model", "Llama-3.2-1B-Instrct"), 1),
        (("runs", 0, "parameters", {"lora_ranl": 4}), 2),
    ],
    ids=["success", "run-failure", "input-error"],
)
def test_json_report_is_one_document(example: Experiment, change, code):
    if change:
        data = example.load()
        *where, key, value = change
        node = data
        for part in where:
            node = node[part]
        node[key] = value
        example.save(data)
    res = example.generate("--no-check-paths", "--json")
    assert res.code == code
    assert "Traceback" not in res.err
    doc = json.loads(res.out)
    assert doc["exit_status"] == code
    if code == 1:
        assert doc["runs"][0]["status"] == "failed" and "unknown model" in doc["runs"][0]["errors"][0]["text"]
    if code == 2:
        assert "did you mean 'lora_rank'" in doc["input_errors"][0]["text"] and doc["runs"] == []


# --- older spellings ---------------------------------------------------------------------------------------


def test_older_spellings_are_accepted_with_a_note_each(example: Experiment):
    edit(example, "  dir: ", "  directory: ")
    edit(example, "    dataset_label: ", "    label: ")
    edit(example, "  lr: 1e-4", "  learning_rate: 1e-4\n  gpus: 1\n  base_recipe: lora_finetune_single_device")
    edit(example, '  wandb_project: "capitalization"', '  wandb_project: "capitalization"\n  base_directory: /old/out')
    res = example.generate("--no-check-paths")
    assert res.code == 0, res.out + res.err
    log = (example.dir / LOG).read_text()
    for note in (
        "experiment.directory -> dir",
        "data.training.label -> dataset_label",
        "controls.learning_rate -> lr",
        "controls.gpus -> default compute.gpus (1)",
        "output.base_directory (/old/out) is an older setting",
        "controls.base_recipe (lora_finetune_single_device) is an older setting",
    ):
        assert note in log
    setup = yaml.safe_load((example.dir / RANK4 / "setup_finetune.yaml").read_text())
    assert setup["lr"] == 1e-4 and setup["dataset_label"] == "words_5L_80P_10" and setup["gpus"] == 1
    assert setup["run_dir"].startswith("/scratch/nlplab/ada/ck-projects/")


def test_train_split_smaller_than_one_step_is_refused(local_example: Experiment):
    """8 training records, batch 4 x accumulation 4 = 16 per step: torchtune would train zero steps."""
    data = local_example.load()
    data["runs"][0]["parameters"]["gradient_accumulation_steps"] = 4
    local_example.save(data)
    res = local_example.generate()
    assert res.code == 1
    msg = output_line(res, f"[run {RANK4}]", "zero steps")
    assert "data.training.path" in msg and "fix:" in msg
    assert_complete(local_example, RANK8)
