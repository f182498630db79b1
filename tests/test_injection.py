"""No input value can add a command or an #SBATCH line to a batch script, or a key to a config.

Hostile strings (newlines, `;`, `$(...)`, backticks, quotes, `#SBATCH` text, CR, U+2028, U+0085, NUL, OmegaConf
`${...}`) go into every field that reaches finetune.slurm or finetune.yaml. Each value is either refused (exit 2,
an error naming the field, nothing written) or it is carried exactly:
- finetune.slurm parses (`bash -n`), has the same lines as the script made with a plain value in its place: each
  #SBATCH and comment line is that line with the value in place of the plain one, each command line splits into the
  same shell words (POSIX quoting, `;`/`|`/`&`/`(`/`)` as operators) but for the value, so no operator, command or
  #SBATCH line is added;
- finetune.yaml, loaded by OmegaConf as torchtune loads it (interpolations resolved), has the same keys as with the
  plain value and gives the value back exactly where it belongs; setup_finetune.yaml gives it back too.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from scaffold.commands.generate import generate

from .conftest import EXAMPLE, EXAMPLE_LOCAL

RUN = "Llama-3.2-1B-Instruct_rank4"

HOSTILE = {
    "newline-command": "a\nrm -rf ~",
    "newline-sbatch": "a\n#SBATCH --wrap=id",
    "semicolon": "a; id",
    "substitution": "a$(id)",
    "backticks": "a`id`",
    "quotes": "a'b\"c",
    "sbatch-text": " #SBATCH --qos=top",
    "carriage-return": "a\rid",
    "line-separator": "a\u2028id",
    "next-line": "a\u0085id",
    "nul": "a\x00id",
    "interpolation": "a${oc.env:HOME}b${output_dir}",
    "escaped-interpolation": "a\\${x}",
    "final-newline": "a\n",
    "operators": "a && curl e | sh &",
    "yaml-syntax": "a: [b, {c: d}] # e",
    "tilde-glob": "~/a*",
}


@dataclass
class Field:
    """Where a value goes (summary or local config), how a value is made from the hostile text, and where it must
    come back: finetune.yaml paths (value -> expected there) and setup_finetune.yaml keys."""

    name: str
    file: str  # "summary" | "local"
    path: tuple
    make: Callable[[str], object]
    yaml_paths: dict[str, Callable[[object], object]] = field(default_factory=dict)
    setup_key: str | None = None
    plain: str = "PLAINVALUE"  # stands for the hostile text in the reference files; appears nowhere else
    path_like: bool = False  # read as a path: carried as pathlib writes it (no trailing or doubled `/`)


def same(v):
    return v


FIELDS = [
    Field("run name", "summary", ("runs", 0, "name"), lambda h: f"{RUN}{h}",
          {"metric_logger.name": same}, "run_name"),
    Field("experiment.name", "summary", ("experiment", "name"), lambda h: f"cap{h}", {}, "experiment"),
    Field("experiment.dir", "summary", ("experiment", "dir"), lambda h: f"/scratch/cap{h}",
          {"output_dir": lambda v: f"{v}/{RUN}/artifacts"}, path_like=True),
    Field("experiment.project", "summary", ("experiment", "project"), lambda h: f"cap{h}", {}, "project"),
    Field("model path", "summary", ("models", "base", 0, "path"), lambda h: f"/models/Llama{h}",
          {"checkpointer.checkpoint_dir": same, "tokenizer.path": lambda v: f"{v}/original/tokenizer.model",
           "dataset.model_path": same},
          "model_dir", path_like=True),
    Field("dataset path", "summary", ("data", "training", "path"), lambda h: f"/datasets/words{h}.json",
          {"dataset.data_files": same}, "dataset_path", path_like=True),
    Field("dataset label", "summary", ("data", "training", "dataset_label"), lambda h: f"words{h}", {},
          "dataset_label"),
    Field("system_prompt", "summary", ("controls", "system_prompt"), lambda h: f"You are {h} helpful.",
          {"dataset.system_prompt": same}, "system_prompt"),
    # The prompt is a str.format template (as the evaluation step fills it): hostile braces are written doubled.
    Field("prompt", "summary", ("controls", "prompt"),
          lambda h: "Capitalize {h}: {{input}} {h}".format(h=h.replace("{", "{{").replace("}", "}}")),
          {"dataset.prompt": same}, "prompt"),
    Field("wandb project", "summary", ("output", "wandb_project"), lambda h: f"cap{h}",
          {"metric_logger.project": same}, "wandb_project"),
    Field("slurm_overrides value", "summary", ("runs", 0, "slurm_overrides", "qos"), lambda h: f"high{h}", {}),
    Field("slurm_overrides key", "summary", ("runs", 0, "slurm_overrides"), lambda h: {f"qos{h}": "high"}, {},
          plain="plainvalue"),
    Field("compute.mem", "summary", ("runs", 0, "compute", "mem"), lambda h: f"4{h}G", {}, "mem", plain="0"),
    Field("compute.time", "summary", ("runs", 0, "compute", "time"), lambda h: f"0{h}:00:00", {}, plain="4"),
    Field("account", "local", ("account",), lambda h: f"nlp{h}", {}, "account"),
    Field("partition", "local", ("partition",), lambda h: f"gpu{h}", {}, "partition"),
    Field("qos", "local", ("qos",), lambda h: f"normal{h}", {}, "qos"),
    Field("constraint", "local", ("constraint",), lambda h: f"gpu80{h}", {}, "constraint"),
    Field("conda_env", "local", ("conda_env",), lambda h: f"tune{h}", {}, "conda_env"),
    Field("venv", "local", ("venv",), lambda h: f"/opt/venvs/tune{h}", {}, "venv"),
    Field("modules", "local", ("modules",), lambda h: [f"anaconda3/{h}"], {}, "modules"),
    Field("mail_user", "local", ("mail_user",), lambda h: f"ada{h}@example.org", {}, "mail_user"),
    Field("mail_type", "local", ("mail_type",), lambda h: f"FAIL{h}", {}),
    Field("sbatch_extra", "local", ("sbatch_extra",), lambda h: [f"--qos=high{h}"], {}, "sbatch_extra"),
    Field("gpu_type", "local", ("gpu_type",), lambda h: f"h100{h}", {}, "gpu_type"),
    Field("wandb_entity", "local", ("wandb_entity",), lambda h: f"lab{h}", {"metric_logger.entity": same},
          "wandb_entity"),
    Field("models_dir", "local", ("models_dir",), lambda h: f"/models{h}", {}, path_like=True),
]  # fmt: skip
BY_NAME = {f.name: f for f in FIELDS}


def put(data: dict, path: tuple, value: object) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    node[path[-1]] = value


def base_inputs() -> tuple[dict, dict]:
    """The example with one fine-tuned run and the control run (the fields all reach the fine-tuned run), and a
    mail address in the site config."""
    summary = yaml.safe_load((EXAMPLE / "experiment_summary.yaml").read_text())
    summary["runs"] = [summary["runs"][0], summary["runs"][2]]
    summary.pop("variables")
    summary.pop("evaluation")
    local = yaml.safe_load(EXAMPLE_LOCAL.read_text())
    local["mail_user"] = "ada@example.org"  # so that mail_type reaches the script too
    return summary, local


@dataclass
class Generated:
    code: int
    exp: Path
    text: str
    run: str = RUN
    config: dict = field(default_factory=dict)  # finetune.yaml as torchtune reads it (references only)

    def read(self, name: str) -> str:
        return (self.exp / self.run / name).read_text(encoding="utf-8")

    def written(self) -> bool:
        return (self.exp / self.run / "finetune.slurm").exists() or (self.exp / self.run / "finetune.yaml").exists()


def run_generate(tmp: Path, spec: Field | None, value: object) -> Generated:
    summary, local = base_inputs()
    if spec is not None:
        put(summary if spec.file == "summary" else local, spec.path, value)
    exp = tmp / "cap"
    shutil.copytree(EXAMPLE / "data", exp / "data")
    # allow_unicode=False: every control and non-ASCII character is written as a YAML escape
    (exp / "experiment_summary.yaml").write_text(yaml.safe_dump(summary, sort_keys=False, allow_unicode=False))
    (tmp / "scaffold.local.yaml").write_text(yaml.safe_dump(local, sort_keys=False, allow_unicode=False))
    report = generate(exp, local_config=tmp / "scaffold.local.yaml", check_paths=False)
    text = "\n".join(
        p.format() for p in [*report.input_errors, *report.errors, *(e for r in report.runs for e in r.errors)]
    )
    run = value if spec is not None and spec.name == "run name" else RUN
    return Generated(report.exit_status, exp, text, run if isinstance(run, str) else RUN)


def script_lines(text: str) -> list[str]:
    return text.split("\n")


def words(line: str) -> list[str]:
    """A command line as the shell splits it: POSIX quoting, operators as separate words, no comments."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
    lex.whitespace_split = True
    lex.commenters = ""
    return list(lex)


def active(line: str) -> list[str]:
    """The characters of a command line that the shell would act on: outside quotes `$`, backticks, globs, `~`,
    braces, operators; inside double quotes `$` and backticks. (shlex.split unquotes, but does not expand.)"""
    out: list[str] = []
    state, i = "", 0
    while i < len(line):
        c = line[i]
        if state == "'":
            state = "" if c == "'" else state
        elif c == "\\":
            i += 1
        elif state == '"':
            if c == '"':
                state = ""
            elif c in "$`":
                out.append(c)
        elif c in "'\"":
            state = c
        elif c in "$`*?[~{};&|()<>#!":
            out.append(c)
        i += 1
    return out


def assert_same_script(script: str, reference: str, plain: str, value: str) -> None:
    """`script` is `reference` with `value` in place of `plain`, and nothing else: same lines, same #SBATCH lines,
    same shell words (the value being one word, or inside one), nothing more for the shell to expand."""
    got, ref = script_lines(script), script_lines(reference)
    assert len(got) == len(ref), "the value added or removed a line of the batch script"
    assert sum(ln.startswith("#SBATCH") for ln in got) == sum(ln.startswith("#SBATCH") for ln in ref)
    for g, r in zip(got, ref, strict=True):
        if g == r:
            continue
        if r.lstrip().startswith("#"):
            assert g == r.replace(plain, value), f"comment or #SBATCH line changed beyond the value:\n{r}\n{g}"
            continue
        assert words(g) == [w.replace(plain, value) for w in words(r)], f"command changed:\n{r}\n{g}"
        assert active(g) == active(r), f"the value is not quoted for the shell:\n{r}\n{g}"
    check = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def keys(cfg, prefix: str = "") -> set[str]:
    if isinstance(cfg, dict):
        return {f"{prefix}{k}" for k in cfg} | {x for k, v in cfg.items() for x in keys(v, f"{prefix}{k}.")}
    return set()


def torchtune_view(text: str, path: Path) -> dict:
    """finetune.yaml as torchtune's config loader sees it: OmegaConf, interpolations resolved, nothing missing."""
    path.write_text(text, encoding="utf-8")
    cfg = OmegaConf.load(path)
    assert not OmegaConf.missing_keys(cfg), f"OmegaConf reads a value as missing ('???'): {OmegaConf.missing_keys(cfg)}"
    return OmegaConf.to_container(cfg, resolve=True)


def lookup(cfg: dict, dotted: str):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, Generated]:
    """Per field, the files generated with the plain value in place of the hostile text."""
    out = {}
    for spec in FIELDS:
        ref = run_generate(tmp_path_factory.mktemp("ref"), spec, spec.make(spec.plain))
        assert ref.code == 0, f"{spec.name}: the plain value is refused: {ref.text}"
        ref.config.update(torchtune_view(ref.read("finetune.yaml"), ref.exp.parent / "view.yaml"))
        out[spec.name] = ref
    return out


def check_carried(spec: Field, given: object, res: Generated, ref: Generated, tmp: Path) -> None:
    plain = spec.make(spec.plain)
    value = str(PurePosixPath(given)) if spec.path_like else given
    # The batch script: the reference with the value in place, nothing more.
    if isinstance(value, list):
        (p_item,), (v_item,) = plain, value
    elif isinstance(value, dict):
        ((p_item, _),), ((v_item, _),) = plain.items(), value.items()
    else:
        p_item, v_item = plain, value
    assert_same_script(res.read("finetune.slurm"), ref.read("finetune.slurm"), p_item, v_item)
    # finetune.yaml: the same keys, the value where it belongs (OmegaConf, resolved).
    cfg = torchtune_view(res.read("finetune.yaml"), tmp / "got.yaml")
    ref_cfg = ref.config
    assert keys(cfg) == keys(ref_cfg), "the value added or removed a key of finetune.yaml"
    for dotted, expected in spec.yaml_paths.items():
        assert lookup(cfg, dotted) == expected(value), f"{dotted} does not hold the value"
    # setup_finetune.yaml (read by setup-finetune with the project's YAML reader) gives it back too.
    if spec.setup_key:
        from scaffold.inputs.yamlio import parse_yaml

        setup = parse_yaml(res.read("setup_finetune.yaml"), tmp / "setup_finetune.yaml").data
        assert setup[spec.setup_key] == value


@pytest.mark.parametrize("field_name", [f.name for f in FIELDS])
def test_hostile_values_are_refused_or_carried_exactly(field_name, references, tmp_path):
    """Every hostile string in this field (one generation each; every failure is listed)."""
    spec = BY_NAME[field_name]
    failures = []
    for hostile, text in HOSTILE.items():
        value = spec.make(text)
        try:
            res = run_generate(tmp_path / hostile, spec, value)
            if hostile in MUST_CARRY.get(field_name, ()):
                assert res.code == 0, f"free text refused: {res.text}"
            if res.code != 0:
                assert_refused(spec, value, res)
            else:
                check_carried(spec, value, res, references[field_name], tmp_path / hostile)
        except AssertionError as e:
            failures.append(f"{hostile} ({value!r}): {e}")
    assert not failures, "\n".join(failures)


def assert_refused(spec: Field, value: object, res: Generated) -> None:
    """Exit 2 (or 1 for this run alone) with an error naming the field and a fix, and no file of the run written."""
    assert res.code in (1, 2), res.text
    assert not res.written(), f"{spec.name} = {value!r}: exit {res.code}, but the run's files were written"
    needle = [p for p in spec.path if isinstance(p, str)][-1]
    assert needle in res.text and "(fix: " in res.text, res.text


def with_final_newline(value: object) -> object:
    """The value with a newline at its very end (in its one item, for a list or a mapping's key)."""
    if isinstance(value, list):
        return [f"{value[0]}\n"]
    if isinstance(value, dict):
        ((key, item),) = value.items()
        return {f"{key}\n": item}
    return f"{value}\n"


@pytest.mark.parametrize("field_name", [f.name for f in FIELDS])
def test_a_final_newline_is_refused_or_carried(field_name, references, tmp_path):
    """Python's `$` matches before a final newline: a pattern check with re.search let `nlplab\\n` through, and
    an #SBATCH line split in two (`--gres=gpu:h100` / `:1`, `--qos` / `=high`, the run's `--output` path)."""
    spec = BY_NAME[field_name]
    value = with_final_newline(spec.make(spec.plain))
    res = run_generate(tmp_path, spec, value)
    if res.code != 0:
        assert_refused(spec, value, res)
    else:
        assert field_name in MUST_CARRY, f"{field_name} = {value!r} was accepted"
        check_carried(spec, value, res, references[field_name], tmp_path)


# Free text must be carried, not refused (a prompt may say anything; a path may hold quotes and `$`): paths refuse
# only control characters.
CONTROL = {"newline-command", "newline-sbatch", "carriage-return", "nul", "final-newline"}
MUST_CARRY = {
    "system_prompt": set(HOSTILE),
    "prompt": set(HOSTILE),
    "dataset label": set(HOSTILE),
    "model path": set(HOSTILE) - CONTROL,
    "dataset path": set(HOSTILE) - CONTROL,
}


# --- any text, not only the list above ------------------------------------------------------------------------

SCRIPT_FIELDS = [
    "run name", "experiment.name", "experiment.dir", "slurm_overrides value", "slurm_overrides key", "compute.mem",
    "compute.time", "account", "partition", "qos", "constraint", "conda_env", "venv", "modules", "mail_user",
    "mail_type", "sbatch_extra", "gpu_type",
]  # fmt: skip
ALPHABET = st.sampled_from(list("aZ09 _-./:=@%+,~;&|<>()$`'\"\\!#*?[]{}\n\r\t\x00\x0b\x1b\u0085\u2028\u00e9\u0430"))


@settings(max_examples=30, deadline=None)
@given(
    field_name=st.sampled_from([f.name for f in FIELDS]), text=st.lists(ALPHABET, min_size=1, max_size=12).map("".join)
)
def test_any_text_in_any_field_is_refused_or_carried_exactly(field_name, text, references, tmp_path_factory):
    spec = BY_NAME[field_name]
    value = spec.make(text)
    tmp = tmp_path_factory.mktemp("any")
    res = run_generate(tmp, spec, value)
    if res.code != 0:
        assert_refused(spec, value, res)
    else:
        check_carried(spec, value, res, references[field_name], tmp)


def test_the_reference_scripts_hold_the_plain_value(references):
    """The comparison above is only as good as its reference: each script field's plain value is in its script."""
    for name in SCRIPT_FIELDS:
        spec = BY_NAME[name]
        item = spec.make(spec.plain)
        item = item[0] if isinstance(item, list) else next(iter(item)) if isinstance(item, dict) else item
        assert item in references[name].read("finetune.slurm"), name


def test_no_value_reaches_the_script_unquoted_outside_sbatch_and_comments(references):
    """Every line of a generated script that is neither a comment nor #SBATCH carries the values as quoted words:
    the plain values appear only inside single words."""
    for name, ref in references.items():
        plain = BY_NAME[name].plain
        if len(plain) < 5:
            continue  # not distinctive (compute.mem, compute.time)
        for line in ref.read("finetune.slurm").split("\n"):
            if plain in line and not line.lstrip().startswith("#"):
                assert all(w.count(plain) <= 1 for w in words(line)), (name, line)
                assert [w for w in words(line) if plain in w], (name, line)


@pytest.mark.parametrize(
    "value, script",
    [
        ("a`id`", "conda activate a`id`"),  # same words for shlex, but the shell runs `id`
        ("a; id", "conda activate a; id"),
        ("$HOME", "conda activate $HOME"),
        ("a*", "conda activate a*"),
        ("a\nid", "conda activate a\nid"),
        ("a\n#SBATCH --wrap=id", "conda activate 'a\n#SBATCH --wrap=id'"),  # quoted, but a new #SBATCH line
    ],
)
def test_the_script_comparison_catches_what_it_must(value, script):
    """The check above is only as good as its comparison: these scripts each let a value act, and fail it."""
    reference = "#!/bin/bash\n#SBATCH --account=PLAIN\nconda activate PLAIN\n"
    with pytest.raises(AssertionError):
        assert_same_script(f"#!/bin/bash\n#SBATCH --account=PLAIN\n{script}\n", reference, "PLAIN", value)
    quoted = f"#!/bin/bash\n#SBATCH --account=PLAIN\nconda activate {shlex.quote(value)}\n"
    if "\n" not in value:
        assert_same_script(quoted, reference, "PLAIN", value)
