"""The verification suite on large sweeps: one test per run (`--items run`, automatic above 50 runs) that still
names the run, file, line, check and fix of every defect; finetune.yaml loaded by the shape rule (scaffold/checks/
configread/shapes.py), proven to agree with OmegaConf itself on every kind of config this project generates and on broken
ones; `bash -n` over many scripts, each parsed alone."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaffold.configread import PER_SHAPE, ConfigLoader, ConfigLoadError, load_config
from scaffold.configread.shapes import parse, same
from scaffold.engine.generated import shell_words
from scaffold.engine.shell import bash_syntax
from scaffold.verify.plugin import CONTEXT_KEY

from .conftest import EXAMPLE, EXAMPLE_LOCAL, run_cli
from .test_verify_suite import VARIANT_RUNS
from .verify_support import NESTED_ARGS, R4, R8

pytest_plugins = ["pytester"]

# Full fine-tuning on one node and on two, and a requeueable run: with VARIANT_RUNS, every kind of config and
# script this project writes.
MORE_RUNS = [
    {"name": "Llama-3.2-1B-Instruct_full", "parameters": {"method": "full"}},
    {
        "name": "Llama-3.2-1B-Instruct_full_2node",
        "parameters": {"method": "full", "batch_size": 1},
        "compute": {"nodes": 2, "gpus": 2},
    },
    {"name": "Llama-3.2-1B-Instruct_requeue_rank4", "parameters": {"lora_rank": 4, "requeue": True}},
]

SWEEP = {"lora_rank": [4, 8, 16, 32, 64], "lr": [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4], "seed": [1, 2]}  # 60 runs


def copy_example(root: Path, name: str) -> Path:
    exp = root / name
    shutil.copytree(EXAMPLE, exp, ignore=shutil.ignore_patterns("Llama-*", "logs", "arrays", ".scaffold-manifest.json"))
    return exp


def generate(exp: Path) -> None:
    res = run_cli("generate", exp, "--local-config", EXAMPLE_LOCAL, "--no-check-paths")
    assert res.code == 0, res.out + res.err


@pytest.fixture(scope="module")
def every_kind(tmp_path_factory) -> Path:
    """The example plus every variant of run: the configs the shape rule must agree with OmegaConf on."""
    exp = copy_example(tmp_path_factory.mktemp("kinds"), "kinds")
    data = yaml.safe_load((exp / "experiment_summary.yaml").read_text())
    data["models"]["base"].append({"name": "Qwen2.5-3B-Instruct", "path": "/scratch/models/Qwen2.5-3B-Instruct"})
    for run in VARIANT_RUNS + MORE_RUNS:
        data["runs"].append({"type": "fine-tuned", "model": "Llama-3.2-1B-Instruct", **run})
    (exp / "experiment_summary.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    generate(exp)
    return exp


@pytest.fixture(scope="module")
def sweep_template(tmp_path_factory) -> Path:
    """A sweep of 60 fine-tuned runs from `variables` (and the control run), generated, golden files accepted."""
    exp = copy_example(tmp_path_factory.mktemp("sweep"), "sweep")
    data = yaml.safe_load((exp / "experiment_summary.yaml").read_text())
    data["variables"] = SWEEP
    data["controls"]["batch_size"] = 1
    data["runs"] = [r for r in data["runs"] if r["type"] == "control"]
    data.pop("evaluation")
    (exp / "experiment_summary.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    generate(exp)
    res = verify_cli(exp, "--snapshot-update")
    assert res.code == 0, res.out + res.err
    return exp


@pytest.fixture
def sweep(sweep_template: Path, tmp_path: Path) -> Path:
    exp = tmp_path / "sweep"
    shutil.copytree(sweep_template, exp)
    return exp


def verify_cli(exp: Path, *args: str):
    return run_cli("verify", exp, "--local-config", EXAMPLE_LOCAL, "--no-check-paths", "-p", "no:cacheprovider", *args)


def run_names(exp: Path) -> list[str]:
    return sorted(p.parent.name for p in exp.glob("*/finetune.yaml"))


def failed_tests(out: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^FAILED \S+::(\S+)", out, re.M)}


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path}"
    path.write_text(text.replace(old, new))


# --- one test per run -------------------------------------------------------------------------------------------


def test_a_large_sweep_names_each_planted_defect_by_run_file_line_check_and_fix(sweep: Path) -> None:
    names = run_names(sweep)
    assert len(names) == 60
    clean = verify_cli(sweep, "-q")
    assert clean.code == 0, clean.out + clean.err
    # 10 experiment checks (array_sbatch_test_only skipped without a controller), 61 runs, the arrays' golden copies
    assert re.search(r"\b71 passed, 1 skipped\b", clean.out), clean.out
    assert "by libyaml with OmegaConf's result for their shape" in clean.out
    # What was skipped inside the runs' tests is said once, with the reason and how often.
    assert re.search(r"^skipped \d+ checks, by reason: .*--no-check-paths: .*\[paths_exist x60\]", clean.out, re.M)
    assert len(clean.out.splitlines()) < 50, clean.out

    lr_run, script_run, dup_run = names[7], names[30], names[51]
    replace(sweep / lr_run / "finetune.yaml", "  lr: ", "  lr: 0.5  # was ")
    (sweep / script_run / "finetune.slurm").write_text((sweep / script_run / "finetune.slurm").read_text() + "fi\n")
    (sweep / dup_run / "finetune.yaml").write_text((sweep / dup_run / "finetune.yaml").read_text() + "seed: 7\n")
    res = verify_cli(sweep)
    assert res.code == 1, res.out + res.err
    assert failed_tests(res.out) == {f"run[{lr_run}]", f"run[{script_run}]", f"run[{dup_run}]"}, res.out
    # Each failure names run, file and line, the check that found it, expected and found, and the fix.
    assert re.search(
        rf"sweep/{re.escape(lr_run)}/finetune.yaml:\d+: \[run {re.escape(lr_run)}\] optimizer.lr: "
        r"\[parameter_values\] lr \(from runs\[\d+\].parameters.lr\): expected [0-9.e-]+, found 0.5 \(fix: regenerate",
        res.out,
    ), res.out
    assert re.search(rf"{re.escape(lr_run)}/finetune.yaml: \[run {re.escape(lr_run)}\] \[golden\] differs", res.out)
    assert re.search(
        rf"sweep/{re.escape(script_run)}/finetune.slurm:\d+: \[run {re.escape(script_run)}\] \[slurm_syntax\] bash -n: "
        r"syntax error",
        res.out,
    ), res.out
    assert re.search(
        rf"sweep/{re.escape(dup_run)}/finetune.yaml:\d+: \[run {re.escape(dup_run)}\] \[finetune_yaml_loads\] "
        r"torchtune cannot load it: OmegaConf cannot load it: .*duplicate key seed",
        res.out,
    ), res.out
    # The same defects, every config loaded by OmegaConf itself.
    every = verify_cli(sweep, "--omegaconf", "every")
    assert failed_tests(every.out) == failed_tests(res.out), every.out
    assert "finetune.yaml: 60 loaded by OmegaConf itself" in every.out


def test_large_sweep_selection_and_item_modes(sweep: Path) -> None:
    name = run_names(sweep)[3]
    res = verify_cli(sweep, "--collect-only", "-q")
    assert res.code == 0 and f"::run[{name}]" in res.out and "::output_dirs_unique[sweep]" in res.out
    assert "::slurm_job_name[" not in res.out  # above 50 runs, --items auto collects per run
    one = verify_cli(sweep, "-q", "-k", name)
    assert one.code == 0 and re.search(r"\b1 passed\b", one.out), one.out
    per_check = verify_cli(sweep, "--items", "check", "--collect-only", "-q")
    assert f"::slurm_job_name[{name}]" in per_check.out and f"::golden[{name}-finetune.yaml]" in per_check.out


def test_per_run_tests_release_each_runs_files(planted, pytester) -> None:
    """Memory does not grow with the sweep: a run's files are forgotten once its test is done (in-process, to look
    at the session's context afterwards)."""
    args = ["--experiment", planted.dir.name, "--local-config", str(planted.local), "--items", "run"]
    reprec = pytester.inline_run(*args, "--snapshot-update", *NESTED_ARGS)
    passed, skipped, failed = reprec.listoutcomes()
    assert not failed and len(passed) == 13  # 9 experiment checks (not array_sbatch_test_only), 3 runs, arrays' golden
    context = reprec.getcalls("pytest_sessionfinish")[0].session.config.stash[CONTEXT_KEY]
    assert context.release_runs and context._runs == {}
    assert set(context.output_dirs) == {"Llama-3.2-1B-Instruct_rank4", "Llama-3.2-1B-Instruct_rank8"}


# Each kind of defect, planted in the suite's small experiment and verified with per-run tests and the shape rule
# forced on: the failure names the same check and run as the per-check suite does (tests/test_verify_checks.py), and
# the golden comparison of the file that changed.
def _dataset_without_output(planted) -> None:
    path = planted.path("data/words_5L_80P_10.json")
    data = json.loads(path.read_text())
    data["test"][0].pop("output")
    path.write_text(json.dumps(data))


def on(run: str, *checks: str) -> set[tuple[str, str]]:
    return {(run, check) for check in checks}


DEFECTS = {
    "lr": (lambda p: p.replace(f"{R4}/finetune.yaml", "lr: 0.0001", "lr: 1e-5"), on(R4, "parameter_values", "golden")),
    "duplicate key": (lambda p: p.append(f"{R4}/finetune.yaml", "seed: 7\n"), on(R4, "finetune_yaml_loads", "golden")),
    "interpolation": (
        lambda p: p.replace(f"{R4}/finetune.yaml", "${output_dir}/logs", "${outptu_dir}/logs"),
        on(R4, "finetune_yaml_loads", "golden"),
    ),
    "stray key": (
        lambda p: p.append(f"{R4}/finetune.yaml", "gradient_accumulation_step: 2\n"),
        on(R4, "recipe_keys", "golden"),
    ),
    "component": (
        lambda p: p.replace(f"{R4}/finetune.yaml", "loss.CEWithChunkedOutputLoss", "loss.CEWithChunkedOutputLos"),
        on(R4, "components_known", "golden"),
    ),
    "lora_alpha": (
        lambda p: p.replace(f"{R4}/finetune.yaml", "lora_alpha: 8", "lora_alpha: 16"),
        on(R4, "lora_alpha_rule", "golden"),
    ),
    "model_type": (
        lambda p: p.replace(f"{R4}/finetune.yaml", "model_type: LLAMA3_2", "model_type: LLAMA3"),
        on(R4, "model_matches_registry", "golden"),
    ),
    "shell syntax": (lambda p: p.append(f"{R4}/finetune.slurm", "fi\n"), on(R4, "slurm_syntax", "golden")),
    "late directive": (
        lambda p: p.replace(f"{R4}/finetune.slurm", "set -eo pipefail\n", "set -eo pipefail\n#SBATCH --comment=late\n"),
        on(R4, "slurm_directives_first", "golden"),
    ),
    "job name": (
        lambda p: p.replace(f"{R4}/finetune.slurm", f"--job-name={R4}", "--job-name=rank4"),
        on(R4, "slurm_job_name", "golden"),
    ),
    "memory": (
        lambda p: p.replace(f"{R4}/finetune.slurm", "--mem=80G", "--mem=40G"),
        on(R4, "slurm_resources", "golden"),
    ),
    "conda": (
        lambda p: p.replace(f"{R4}/finetune.slurm", "conda activate tune", "conda activate base"),
        on(R4, "slurm_environment", "golden"),
    ),
    "output directory": (lambda p: shutil.rmtree(p.path(f"{R4}/artifacts")), on(R4, "slurm_output_dir")),
    "missing script": (lambda p: p.path(f"{R4}/finetune.slurm").unlink(), on(R4, "run_files")),
    "dataset record": (_dataset_without_output, on(R4, "dataset_splits") | on(R8, "dataset_splits")),
}
# A changed #SBATCH resource also leaves the job array script of the run's group unlike the run's own script.
ALSO_FAILS = {"memory": {"array_scripts[cap]"}}
_TAG = re.compile(r"\[run ([^\]]+)\] (?:\S+: )?\[([a-z_]+)\] ")
_FOLDED = re.compile(r"^\d+ x in \d+ runs \(([^)]*)\): ", re.M)


def tags(text: str) -> set[tuple[str, str]]:
    """(run, check) of every failure the log names; a folded line (`N x in K runs (A, B): ... [run {run}]`) names
    each of its runs."""
    found = {t for t in _TAG.findall(text) if t[0] != "{run}"}
    for line in text.splitlines():
        m = _FOLDED.match(line)
        if m:
            checks = {check for run, check in _TAG.findall(line) if run == "{run}"}
            found |= {(run, check) for run in m.group(1).split(", ") for check in checks}
    return found


@pytest.fixture(scope="module")
def accepted_golden(verify_template, tmp_path_factory) -> Path:
    """Golden copies of the suite's small experiment, accepted once (outside the experiment: --golden-dir)."""
    golden = tmp_path_factory.mktemp("golden")
    res = run_cli(
        "verify", verify_template.dir, "--local-config", verify_template.local, "--golden-dir", golden,
        "--snapshot-update", "-p", "no:cacheprovider", "-k", "golden",
    )  # fmt: skip
    assert res.code == 0, res.out + res.err
    return golden


@pytest.mark.parametrize("defect", list(DEFECTS), ids=list(DEFECTS))
def test_per_run_tests_name_the_check_of_each_planted_defect(planted, pytester, accepted_golden, defect) -> None:
    plant, found = DEFECTS[defect]
    plant(planted)
    args = [
        "--experiment",
        planted.dir.name,
        "--local-config",
        str(planted.local),
        "--golden-dir",
        str(accepted_golden),
    ]
    result = pytester.runpytest(*args, "--items", "run", "--omegaconf", "per-shape", *NESTED_ARGS)
    text = result.stdout.str()
    assert failed_tests(text) == {f"run[{run}]" for run, _ in found} | ALSO_FAILS.get(defect, set()), text
    assert tags(text) == found, text


def test_per_run_tests_and_the_experiment_check_of_output_dirs(planted, pytester, accepted_golden):
    """output_dirs_unique reads every run's output_dir after the runs' tests, from what they loaded."""
    planted.replace(f"{R8}/finetune.yaml", f"{R8}/artifacts", f"{R4}/artifacts")
    args = [
        "--experiment",
        planted.dir.name,
        "--local-config",
        str(planted.local),
        "--golden-dir",
        str(accepted_golden),
    ]
    result = pytester.runpytest(*args, *NESTED_ARGS)  # --items auto: per check (3 runs); then per run
    per_run = pytester.runpytest(*args, "--items", "run", "--omegaconf", "per-shape", *NESTED_ARGS)
    text = per_run.stdout.str()
    assert failed_tests(result.stdout.str()) >= {"output_dirs_unique[cap]", f"output_dir_placement[{R8}]"}
    assert failed_tests(text) == {"output_dirs_unique[cap]", f"run[{R8}]"}, text
    assert tags(text) == on(R8, "output_dir_placement", "golden", "output_dirs_unique"), text
    assert f"output_dir is also the output_dir of run {R4}" in text


# --- the shape rule against OmegaConf ---------------------------------------------------------------------------


def test_the_shape_rule_agrees_with_omegaconf_on_every_kind_of_generated_config(every_kind: Path) -> None:
    configs = sorted(every_kind.glob("*/finetune.yaml"))
    assert len(configs) == 9
    shapes = set()
    for path in configs:
        parsed = parse(path.read_text(encoding="utf-8"))
        assert parsed is not None, f"{path}: outside the rule"
        key, fast = parsed
        shapes.add(key)
        assert same(fast, load_config(path).data), path  # value and type, all the way down, key order included
    assert len(shapes) > 1


MUTATIONS = {
    "another value of the same type": ("lr: 0.0001", "lr: 0.5"),
    "the same value spelt otherwise": ("lr: 0.0001", "lr: 1e-4"),
    "a float without a dot": ("lr: 0.0001", "lr: 1e-5"),
    "a quoted number": ("lr: 0.0001", 'lr: "1e-4"'),
    "an integer with an underscore": ("seed: 14", "seed: 1_400"),
    "a hexadecimal integer": ("seed: 14", "seed: 0x1F"),
    "a base-60 integer": ("seed: 14", "seed: 1:30"),
    "a YAML 1.1 boolean": ("shuffle: true", "shuffle: yes"),
    "null spelt ~": ("max_steps_per_epoch: null", "max_steps_per_epoch: ~"),
    "a date": ("seed: 14", "seed: 2026-11-30"),
    "binary data": ("seed: 14", "seed: !!binary aGVsbG8="),
    "a set": ("seed: 14", "seed: !!set {a, b}"),
    "a duplicate key": ("seed: 14", "seed: 14\nseed: 15"),
    "a key that is a number": ("seed: 14", "seed: 14\n7: seven"),
    "a question mark in a string": ("project: capitalization", "project: capitalization?"),
    "the missing value": ("seed: 14", "seed: ???"),
    "an escaped missing value": ("project: capitalization", "project: \\???"),
    "a misspelt interpolation": ("${output_dir}/logs", "${outptu_dir}/logs"),
    "an interpolation of a number in a string": ("${output_dir}/logs", "${output_dir}/logs-${seed}"),
    "a whole interpolation of a number": ("project: capitalization", "project: ${seed}"),
    "an interpolation of a section": ("project: capitalization", "project: ${optimizer}"),
    "an interpolation of an interpolation": ("project: capitalization", "project: ${checkpointer.output_dir}"),
    "an escaped interpolation": ("${output_dir}/logs", "\\${output_dir}/logs"),
    "a resolver": ("project: capitalization", "project: ${oc.env:HOME}"),
    "a relative interpolation": ("project: capitalization", "project: ${.entity}"),
    "a nested interpolation": ("project: capitalization", "project: ${${entity}}"),
    "an interpolation with spaces": ("project: capitalization", "project: ${ seed }"),
    "an anchor and an alias": ("project: capitalization", "project: &p capitalization\n  group: *p"),
    "a merge key": ("optimizer:\n", "optimizer:\n  <<: {foo: 1}\n"),
    "a syntax error": ("seed: 14", "seed: [14"),
    "a quoted integer": ("seed: 14", 'seed: "14"'),
    "an integer tagged as a string": ("seed: 14", "seed: !!str 14"),
    "a string tagged as an integer": ("seed: 14", 'seed: !!int "14"'),
    "an octal-looking integer": ("seed: 14", "seed: 014"),
    "a base-60 float": ("lr: 0.0001", "lr: 1:30.5"),
    "a float with a capital exponent": ("lr: 0.0001", "lr: 1.0E-04"),
    "null in capitals": ("project: capitalization", "project: NULL"),
    "a literal block scalar": ("project: capitalization", "project: |\n    capitalization"),
    "a tab": ("seed: 14", "\tseed: 14"),
}


@pytest.mark.parametrize("change", list(MUTATIONS), ids=list(MUTATIONS))
def test_the_shape_rule_agrees_with_omegaconf_on_changed_configs(every_kind: Path, tmp_path: Path, change) -> None:
    """A config changed by hand, loaded after an unchanged one (so its shape may be known) and alone: the rule
    gives OmegaConf's own result or OmegaConf's own error."""
    old, new = MUTATIONS[change]
    original = every_kind / "Llama-3.2-1B-Instruct_rank4" / "finetune.yaml"
    text = original.read_text()
    assert old in text, old
    changed = tmp_path / "finetune.yaml"
    changed.write_text(text.replace(old, new, 1), encoding="utf-8")
    try:
        want: object = load_config(changed).data
    except ConfigLoadError as e:
        want = e
    for warmed in (True, False):
        loader = ConfigLoader(PER_SHAPE)
        if warmed:
            loader.load(original, original.read_text())
        try:
            got: object = loader.load(changed, changed.read_text()).data
        except ConfigLoadError as e:
            got = e
        if isinstance(want, ConfigLoadError):
            assert isinstance(got, ConfigLoadError), (change, got)
            assert (got.message, got.line) == (want.message, want.line)
        else:
            assert not isinstance(got, ConfigLoadError), (change, got.message)
            assert same(got, want), change


def outcome(load) -> object:
    """What a load gives: the config's data, or the message of its ConfigLoadError."""
    try:
        return load().data
    except ConfigLoadError as e:
        return ("error", e.message, e.line)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "", "null\n", "42\n", "a: b\n---\nc: d\n"])
def test_configs_that_are_not_a_mapping_go_to_omegaconf(tmp_path: Path, text: str) -> None:
    path = tmp_path / "finetune.yaml"
    path.write_text(text)
    want = outcome(lambda: load_config(path))
    got = outcome(lambda: ConfigLoader(PER_SHAPE).load(path, text))
    assert type(got) is type(want) and (same(got, want) if isinstance(want, dict) else got == want)


def test_a_config_that_is_not_utf8_goes_to_omegaconf(every_kind: Path, tmp_path: Path) -> None:
    changed = tmp_path / "finetune.yaml"
    changed.write_bytes((every_kind / "Llama-3.2-1B-Instruct_rank4" / "finetune.yaml").read_bytes() + b"x: \xff\n")
    with pytest.raises(ConfigLoadError) as want:
        load_config(changed)
    with pytest.raises(ConfigLoadError) as got:
        ConfigLoader(PER_SHAPE).load(changed, None)
    assert got.value.message == want.value.message


SCALARS = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=False).map(repr),
    st.sampled_from(["true", "false", "True", "yes", "off", "null", "~", ".inf", "-.inf", ".nan", "1e-5", "1E+3"]),
    st.sampled_from(["0x1F", "0o17", "1_000", "1:30", "1:30.5", "2026-11-30", "+12", "-0", "0.", ".5", "1e5"]),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12).map(
        lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    ),
    st.text("ab$?{}\\.:# -", min_size=1, max_size=10).map(lambda s: "'" + s.replace("'", "''") + "'"),
    st.sampled_from(["${seed}", "x${seed}", "${output_dir}", "${model.lora_rank}-${seed}", "???", "\\???"]).map(
        lambda s: f"'{s}'"
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lrs=st.tuples(SCALARS, SCALARS), projects=st.tuples(SCALARS, SCALARS), same_project=st.booleans())
def test_the_shape_rule_agrees_with_omegaconf_on_any_values(
    every_kind: Path, tmp_path: Path, lrs, projects, same_project
) -> None:
    """Two configs of the generated template with other scalars in two places, loaded one after the other (the
    second takes the first's shape when the scalars' types and special strings agree): each gets exactly
    OmegaConf's result, or OmegaConf's error."""
    template = (every_kind / "Llama-3.2-1B-Instruct_rank8" / "finetune.yaml").read_text()
    if same_project:
        projects = (projects[0], projects[0])
    loader = ConfigLoader(PER_SHAPE)
    for i, (lr, project) in enumerate(zip(lrs, projects, strict=True)):
        text = template.replace("lr: 0.0001", f"lr: {lr}").replace("project: capitalization", f"project: {project}")
        path = tmp_path / f"finetune{i}.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            want: object = load_config(path).data
        except ConfigLoadError as e:
            want = e.message
        try:
            got: object = loader.load(path, text).data
        except ConfigLoadError as e:
            got = e.message
        assert type(got) is type(want) and (got == want if isinstance(want, str) else same(got, want)), (lr, project)


# --- bash -n over many scripts ------------------------------------------------------------------------------------


def test_bash_syntax_checks_each_script_alone() -> None:
    """Two scripts that each leave a quote open would parse together if concatenated; each is parsed alone (more
    than four go through one bash loop)."""
    scripts = {
        "ok": "#!/bin/bash\necho fine\n",
        "open1": "#!/bin/bash\necho 'one\n",
        "open2": "#!/bin/bash\necho two'\n",
        "fi": "#!/bin/bash\necho x\nfi\n",
        "ok2": "#!/bin/bash\necho also fine\n",
    }
    results = dict(zip(scripts, bash_syntax([(text, {}) for text in scripts.values()]), strict=True))
    assert results["ok"] == results["ok2"] == ""
    assert results["open1"] and results["open2"]
    assert re.search(r"line 3: syntax error near unexpected token `fi'", results["fi"]), results["fi"]


LINE_CHARS = st.sampled_from(list("ab-_=./:$ {}()[]<>|&;!*?~^,@%+\t") + ["'", '"', "\\", "#", "\x0b", "é"])


@given(st.text(LINE_CHARS, max_size=30))
def test_shell_words_split_as_shlex(line: str) -> None:
    stripped = line.strip()
    try:
        want = tuple(shlex.split(stripped, comments=True))
    except ValueError:
        want = tuple(stripped.split())
    assert shell_words(stripped) == want


def test_a_sweep_failing_for_one_cause_prints_one_line_for_it(sweep: Path) -> None:
    """Every golden copy missing (180 files of 60 runs), or one dataset unreachable for every run: one folded line
    each, with the count, the runs and the fix; the whole log well under 50 lines."""
    shutil.rmtree(sweep / "golden")
    res = verify_cli(sweep)
    assert res.code == 1
    lines = res.out.splitlines()
    assert len(lines) < 50, res.out
    folded = [line for line in lines if line.startswith("180 x in 60 runs (")]
    assert len(folded) == 1 and "[golden] no golden copy at" in folded[0], res.out
    assert (
        "golden/{run}/{file}" in folded[0]
        and "(fix: review the file, then accept it with `scaffold verify" in folded[0]
    )
    assert re.search(r"^FAILED 61 tests: run\[.*\] and 58 more", res.out, re.M), res.out
    # A planted defect of one run beside it is still its own line, with its file:line.
    name = run_names(sweep)[5]
    replace(sweep / name / "finetune.slurm", f"--job-name={name}", "--job-name=x")
    res = verify_cli(sweep)
    assert re.search(
        rf"^\S*{re.escape(name)}/finetune.slurm:\d+: \[run {re.escape(name)}\] --job-name: \[slurm_job_name\]",
        res.out,
        re.M,
    ), res.out
    assert len(res.out.splitlines()) < 50, res.out


def test_folding_keeps_distinct_causes_apart() -> None:
    from scaffold.errors import Problem
    from scaffold.verify.folded_report import failure_lines, skips_line

    same = [
        Problem(f"no golden copy at g/{r}/{f}", f"e/{r}/{f}", fix="accept", run=r)
        for r in ("run1", "run2", "run3", "run4")
        for f in ("x.yaml", "y.slurm")
    ]
    diff_a = Problem("differs:\n-lr: 1\n+lr: 2", "e/run1/x.yaml", run="run1")
    diff_b = Problem("differs:\n-lr: 1\n+lr: 3", "e/run2/x.yaml", run="run2")
    lines = failure_lines([*same, diff_a, diff_b])
    assert (
        lines[0]
        == "8 x in 4 runs (run1, run2, run3 and 1 more): e/{run}/{file}: [run {run}] no golden copy at g/{run}/{file} (fix: accept)"
    )
    assert lines[1:] == diff_a.format().splitlines() + diff_b.format().splitlines()  # two diffs, two causes
    line = skips_line(
        {("paths_exist", "--no-check-paths"): 60, ("token_audit", "no tokenizer"): 60, ("parity", "no tokenizer"): 60}
    )
    assert (
        line
        == "skipped 180 checks, by reason: no tokenizer [parity x60, token_audit x60]; --no-check-paths [paths_exist x60]"
    )
