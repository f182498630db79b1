"""scaffold.configread.incremental: IncrementalConfigReader gives, for every text, exactly what load_generated_config gives
(equal data of the same types, or an exception of the same type and message), on real sweeps and on mutated configs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaffold.commands.generate import load_plan
from scaffold.configread.incremental import IncrementalConfigReader, load_generated_config
from scaffold.render import render_finetune_yaml

from .conftest import EXAMPLE, EXAMPLE_LOCAL

MODELS = ["Llama-3.2-1B-Instruct", "Qwen2.5-3B-Instruct"]


def sweep(root: Path, variables: dict, controls: dict | None = None) -> list[str]:
    """The finetune.yaml texts of an experiment over MODELS x `variables`, as generate renders them."""
    exp = root / "exp"
    (exp / "data").mkdir(parents=True)
    shutil.copy(EXAMPLE / "data" / "words_5L_80P_10.json", exp / "data")
    summary = yaml.safe_load((EXAMPLE / "experiment_summary.yaml").read_text())
    summary.pop("evaluation")
    summary["variables"] = variables
    summary["controls"].update(controls or {})
    summary["models"]["base"] = [{"name": m, "path": f"/scratch/models/{m}"} for m in MODELS]
    summary["runs"] = [r for r in summary["runs"] if r["type"] == "control"]
    (exp / "experiment_summary.yaml").write_text(yaml.safe_dump(summary, sort_keys=False))
    plan = load_plan(exp, local_config=EXAMPLE_LOCAL, check_paths=False)
    assert not isinstance(plan, list), plan
    runs = [rp for rp in plan.runs if rp.fine_tuned]
    assert runs and not any(rp.problems for rp in runs), [rp.problems for rp in runs]
    return [render_finetune_yaml(rp.setup, plan.models[rp.setup["model"]]) for rp in runs]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> dict[str, list[str]]:
    def make(name: str, variables: dict, controls: dict | None = None) -> list[str]:
        return sweep(tmp_path_factory.mktemp(name), variables, controls)

    return {
        "grid": make("grid", {"lora_rank": [4, 8, 16, 32, 64], "lr": [1e-5, 2e-5, 1.5e-4], "seed": [1, 2, 7]}),
        "text": make(
            "text",
            {"epochs": [1, 2], "batch_size": [1, 2], "lora_alpha": [16, 0.5]},
            {
                "dataset_type": "text_completion",
                "validation_during_training": True,
                "prompt": "Say \"${x}\" \\${output_dir} 'q' \u00fc # not a comment: {input}\n",
                "metric_logger": "disk",
                "device": "cpu",
            },
        ),
        "full": make(
            "full", {"seed": [0, 4294967295], "lr": [1e-8, 1], "max_seq_len": [1, 1048576]}, {"method": "full"}
        ),
    }


def same(a, b) -> bool:
    """Equal data of the same types (dict key order included; floats by repr, so nan and -0.0 count)."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return [(type(k), k) for k in a] == [(type(k), k) for k in b] and all(same(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(map(same, a, b))
    if type(a) is float:
        return repr(a) == repr(b)
    return a == b


def expected(text: str):
    try:
        return load_generated_config(text)
    except Exception as e:
        return e


def check(got: list, texts: list[str]) -> None:
    assert len(got) == len(texts)
    for n, (g, text) in enumerate(zip(got, texts, strict=True)):
        want = expected(text)
        if isinstance(want, RecursionError):  # a cyclic interpolation: its message depends on the stack's depth
            assert type(g) is RecursionError, (n, text, g, want)
        elif isinstance(want, Exception):
            assert type(g) is type(want) and str(g) == str(want), (n, text, g, want)
        else:
            assert not isinstance(g, Exception), (n, text, g)
            assert same(g, want), (n, text, g, want)


# -- real sweeps


def test_sweeps_read_as_load_generated_config_reads_them(sweeps) -> None:
    reader = IncrementalConfigReader()
    for texts in sweeps.values():
        check(reader.read_many(texts), texts)


def test_a_sweep_is_parsed_whole_once_per_shape(sweeps) -> None:
    """Runs of one model differ in one-line scalars and comments only: one whole parse per model."""
    texts = sweeps["grid"]
    reader = IncrementalConfigReader()
    check(reader.read_many(texts), texts)
    assert reader.stats["whole"] == len(MODELS)
    assert reader.stats["incremental"] == len(texts) - len(MODELS)
    check(reader.read_many(texts[::-1]), texts[::-1])  # later calls: all from the references
    assert reader.stats["whole"] == len(MODELS)


def test_one_text_per_call_and_few_references(sweeps) -> None:
    texts = [t for ts in sweeps.values() for t in ts]
    reader = IncrementalConfigReader(max_references=1)  # switching shapes evicts
    for text in texts[::3]:
        check([reader.read(text)], [text])
    reader = IncrementalConfigReader(max_references=0)  # never keeps one: every text whole
    check(reader.read_many(texts[:5]), texts[:5])
    assert reader.stats["whole"] == 5


def test_mutable_values_other_than_dicts_and_lists_are_not_shared() -> None:
    texts = [
        "s: !!set {a, b}\nc: 1\n",
        "s: !!set {a, b}\nc: 2\n",
        "o: !!omap [a: {b: 1}]\nc: 1\n",
        "o: !!omap [a: {b: 1}]\nc: 2\n",
    ]
    reader = IncrementalConfigReader()
    for result in reader.read_many(texts):
        if "s" in result:
            result["s"].add("z")
        else:
            result["o"][0][1]["b"] = 2
    check(reader.read_many(texts), texts)


def test_results_are_fresh_and_the_references_untouched(sweeps) -> None:
    texts = sweeps["grid"][:4]
    reader = IncrementalConfigReader()
    first = reader.read_many(texts + texts)
    for result in first:  # callers may change what they get
        result["model"]["lora_rank"] = "changed"
        result["model"]["lora_attn_modules"].append("changed")
        result["dataset"]["chat_template_kwargs"]["date_string"] = "changed"
        result["checkpointer"]["output_dir"] = "changed"
        result["new"] = {}
    check(reader.read_many(texts + texts), texts + texts)


# -- planted defects on changed lines: each must give load_generated_config's answer (often its error)


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


PLANTED = {
    "block scalar": ("  lr: 1.0e-05\n", "  lr: |\n"),
    "block scalar with content": ("  lr: 1.0e-05\nlr_scheduler:\n", "  lr: >\n    lr_scheduler:\n"),
    "flow sequence across lines": ("  lr: 1.0e-05\nlr_scheduler:\n", "  lr: [1,\n   2]\n"),
    "flow mapping across lines": ("seed: 7\n", "seed: {a: 1,\n"),
    "continuation line": ("  lr: 1.0e-05\nlr_scheduler:\n", "  lr: 1.0e-05\n    lr_scheduler:\n"),
    "continuation after a comment": ("seed: 7\n", "seed: 8\n  # note\n"),
    "tab continuation": ("  lr: 1.0e-05\nlr_scheduler:\n", "  lr: 2.0e-05\n\tlr_scheduler:\n"),
    "duplicate key": ("  lora_alpha: 8\n", "  lora_rank: 9\n"),
    "changed key": ("  lora_alpha: 8\n", "  lora_alphb: 8\n"),
    "invalid interpolation": ("  lr: 1.0e-05\n", "  lr: ${optimizer.nope}\n"),
    "interpolation of a list item": ("  lr: 1.0e-05\n", "  lr: ${model.lora_attn_modules.x}\n"),
    "interpolation": ("  lr: 1.0e-05\n", "  lr: ${seed}\n"),
    "escaped interpolation": ("  lr: 1.0e-05\n", "  lr: \\${seed}\n"),
    "value with a comment": ("  lr: 1.0e-05\n", "  lr: 2.0e-05 # tuned\n"),
    "value with a colon": ("  lr: 1.0e-05\n", "  lr: a: b\n"),
    "value ending in a colon": ("  lr: 1.0e-05\n", "  lr: ab:\n"),
    "lone dash": ("  lr: 1.0e-05\n", "  lr: -\n"),
    "anchor": ("  lr: 1.0e-05\n", "  lr: &x 1\n"),
    "alias": ("  lr: 1.0e-05\n", "  lr: *x\n"),
    "tag": ("  lr: 1.0e-05\n", "  lr: !!str 1\n"),
    "bad timestamp": ("seed: 7\n", "seed: 2001-13-45\n"),
    "timestamp": ("seed: 7\n", "seed: 2001-12-14\n"),
    "sexagesimal": ("seed: 7\n", "seed: 1:30\n"),
    "YAML 1.1 bool": ("seed: 7\n", "seed: yes\n"),
    "empty value": ("seed: 7\n", "seed:\n"),
    "trailing space": ("seed: 7\n", "seed: 7 \n"),
    "carriage return in a comment": ("# Rendered", "# a\rnew: 1 # Rendered"),
    "next line in a comment": ("# Rendered", "# a\x85new: 1 # Rendered"),
    "line separator in a comment": ("# Rendered", "# a\u2028new: 1 # Rendered"),
    "paragraph separator in a comment": ("# Rendered", "# a\u2029new: 1 # Rendered"),
    "BOM in a comment": ("# Rendered", "# a\ufeff # Rendered"),
    "NUL in a comment": ("# Rendered", "# a\x00 # Rendered"),
    "comment to key": ("# Rendered from", "rendered: 1\n# from"),
    "key to comment": ("seed: 7\n", "# seed: 7\n"),
    "document end": ("seed: 7\n", "...\n"),
    "document start": ("seed: 7\n", "---\n"),
    "quoted": ("seed: 7\n", 'seed: "7"\n'),
    "single quoted": ("seed: 7\n", "seed: '7 # x'\n"),
    "quote in quotes": ("seed: 7\n", "seed: 'it''s'\n"),
    "escape in quotes": ("seed: 7\n", 'seed: "\\x41"\n'),
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_planted_defect(name: str, sweeps) -> None:
    base = sweeps["grid"][0].replace("seed: 1\n", "seed: 7\n")
    old, new = PLANTED[name]
    text = edit(base, old, new)
    references = [base, base.replace("seed: 7\n", "seed: 3\n")]
    reader = IncrementalConfigReader()
    check(reader.read_many(references), references)
    check(reader.read_many([text]), [text])


def test_duplicate_keys_as_the_fast_loader_reads_them() -> None:
    """A changed line cannot bring in a key; a reference whose mapping repeats a key substitutes nothing in or below
    that mapping. (load_generated_config does not reject repeated keys today, unlike parse_yaml and OmegaConf: the
    last value wins, and the reader gives the same; were the fast loader to reject them, it would give that error.)"""
    for base in ("a: 1\nb: 2\na: 3\n", "a: 1\nb: 2\na: 1\n"):
        texts = [base, "a: 4\nb: 2\na: 3\n", "a: 1\nb: 2\na: 5\n", "a: 1\nb: 6\na: 3\n", "a: 1\na: 6\na: 3\n"]
        texts += ["a: 4\nb: 2\na: 1\n", "a: 1\nb: 2\na: 4\n"]
        reader = IncrementalConfigReader()
        check(reader.read_many(texts), texts)
    # below a repeated key: the first mapping is not in the data at all
    texts = ["a:\n  x: 1\na:\n  x: 1\n", "a:\n  x: 5\na:\n  x: 1\n", "a:\n  x: 1\na:\n  x: 6\n"]
    texts += ["- a:\n    x: 1\n  a:\n    x: 1\n", "- a:\n    x: 7\n  a:\n    x: 1\n"]
    reader = IncrementalConfigReader()
    check(reader.read_many(texts), texts)


def test_interpolation_errors_in_incremental_texts() -> None:
    """The reference's interpolations are resolved again for every text (its own values), errors by the original."""
    cases = [
        ["x: 1\ny: ${x}\nz: a${x}b\n", "x: 2\ny: ${x}\nz: a${x}b\n", "x: '3'\ny: ${x}\nz: a${x}b\n"],
        ["b: x\na: ${b.c}\n", "b: y\na: ${b.c}\n"],  # lookup in a string: TypeError, every time
        ["a: ${a}\nb: 1\n", "a: ${a}\nb: 2\n"],  # a cycle: RecursionError
        ["a: \\${b}\nb: 1\nc: ${a}\n", "a: \\${b}\nb: 2\nc: ${a}\n"],  # an escaped interpolation, looked up
        ["a:\n  b: 1\nc: ${a}\n", "a:\n  b: 2\nc: ${a}\n"],  # a whole mapping, interpolated
    ]
    for texts in cases:
        reader = IncrementalConfigReader()
        check(reader.read_many(texts), texts)
        check(reader.read_many(texts[::-1]), texts[::-1])
        assert reader.stats["whole"] <= 1 + 2 * sum(isinstance(expected(t), Exception) for t in texts)


def test_scalars_one_batch_fails_each_alone() -> None:
    """A value libyaml cannot construct (a timestamp of month 13) fails its text only."""
    base = "seed: 7\nname: x\n"
    texts = [base, "seed: 2001-13-45\nname: y\n", "seed: 0x1F\nname: z\n", "seed: 1_000\nname: '2001-13-45'\n"]
    reader = IncrementalConfigReader()
    got = reader.read_many(texts)
    check(got, texts)
    assert isinstance(got[1], ValueError)


def test_references_that_are_not_used_for_substitution() -> None:
    """Aliases, merge keys, sets, odd line breaks, non-ASCII keys: each text still reads as a whole parse reads it."""
    groups = [
        ["base: &b {x: 1}\nm:\n  <<: *b\n  y: 2\n", "base: &b {x: 1}\nm:\n  <<: *b\n  y: 3\n"],
        ["a: &v 1\nb: *v\nc: 1\n", "a: &v 1\nb: *v\nc: 2\n"],
        ["a: &v\n  x: 1\nb: *v\n", "a: &v\n  x: 2\nb: *v\n"],  # one mapping in two places
        ["a: &v\n  - x: 1\nb: [*v, *v]\n", "a: &v\n  - x: 2\nb: [*v, *v]\n"],
        ["a:\n  <<: {x: 1}\n  y: 2\n", "a:\n  <<: {x: 1}\n  y: 3\n"],
        ["a:\n  <<:\n    y: 1\n  y: 2\n", "a:\n  <<:\n    y: 4\n  y: 2\n", "a:\n  <<:\n    y: 4\n  y: 5\n"],
        ["s: !!set {a, b}\nc: 1\n", "s: !!set {a, b}\nc: 2\n"],
        ["o: !!omap [a: {b: 1}]\nc: 1\n", "o: !!omap [a: {b: 1}]\nc: 2\n"],
        ["a: 1\r\nb: 2\r\n", "a: 1\r\nb: 3\r\n"],
        ["a: 1\rb: 2\n", "a: 1\rb: 3\n"],
        ["# c\rk: 1\nz: 2\n", "# d k: 1\nz: 2\n", "# c\rk: 1\nz: 3\n"],  # a line break inside a "comment"
        ["# c\x85k: 1\nz: 2\n", "# d k: 1\nz: 2\n"],
        ["m: {\n  b: 2\n}\n", "m: {\n  b: 3\n}\n", "m: {\n  b: x:y\n}\n", "m: {\n  b: -x\n}\n"],  # flow
        ["\ufeffa: 1\nb: 2\n", "\ufeffa: 1\nb: 3\n"],
        ["cl\u00e9: 1\n\u00e9: {x: 1}\nk: \u00fcber\n", "cl\u00e9: 2\n\u00e9: {x: 1}\nk: 3\n"],
        ["\U0001f600: 1\nb: 2\n", "\U0001f600: 5\nb: 3\n"],
        ["- a: 1\n  b: 2\n- c: 3\n", "- a: 1\n  b: 4\n- c: 5\n", "- a: 6\n  b: 4\n- c: 5\n"],
        ["k: v\n", "k: w\n", "k: 'w'\n", 'k: "w"\n', "k: w\n# c\n"],
        ["plain\n", "other\n"],
        ["'${x}'\n", "'${x}'\n"],
        ["", "\n", "# c\n", "---\n...\n"],
        ["a: 1\n---\nb: 2\n", "a: 2\n---\nb: 2\n"],
        ["1: a\n'1': b\n", "1: c\n'1': d\n"],
        ["a: |\n  x\n  # not a comment\nb: 1\n", "a: |\n  x\n  # still not one\nb: 1\n"],
        ["a: 'x\n  # in a string'\nb: 1\n", "a: 'x\n  # in a strong'\nb: 1\n"],
        ["a: x\n\n  \nb: 1\n", "a: y\n\n  \nb: 1\n", "a: y\n\n  z\nb: 1\n"],
        ["a:\n  b: 1\n\n  # c\n  d: 2\n", "a:\n  b: 3\n\n  # e\n  d: 4\n", "a:\n  b: 3\n\n    # e\n  d: 4\n"],
    ]
    for texts in groups:
        reader = IncrementalConfigReader()
        check(reader.read_many(texts), texts)
        check(reader.read_many(texts), texts)


def test_substitution_is_used_where_it_is_sound() -> None:
    texts = [
        "# run a\na:\n  - x: 1\n    y: [1, 2]\n  - z: 'q'\nb: c\n",
        "# run b\na:\n  - x: -2\n    y: [1, 2]\n  - z: r\nb: 'd'\n",
    ]
    reader = IncrementalConfigReader()
    check(reader.read_many(texts), texts)
    assert reader.stats == {"whole": 1, "incremental": 1}


# -- mutated configs (hypothesis)

# fmt: off
TRICKY = [
    ": ", " #", "#", "[", "]", "{", "}", "|", ">", "|-", ">+", "&a", "*a", "!", "!!str ", "!!int ", "'", '"', "%", "@",
    "`", "\t", " ", "  ", "${x}", "${output_dir}", "${seed}", "${model.lora_rank}", "\\${", "\\\\${seed}", "~", "null",
    "Null", "NULL", "yes", "no", "on", "off", "y", "true", "False", "0x1F", "0o7", "0b101", "1e5", "1E-3", ".inf",
    "-.inf", ".NaN", "1_000", "1:30", "-1", "+1", ".5", "5.", "0.0", "-0.0", "007", "2001-12-14", "2001-13-45",
    "2001-12-14 21:59:43.10 -5", "-", "- ", "--", "---", "...", "?", "? ", ",", "=", "<<", "\n", "\n  ", "\n    x",
    "\r", "\x85", "\u2028", "\ufeff", "\x00", "\x07", "\u00e9", "\U0001f600", "a", "b", "x:y", "a/b", "a.b",
    "\rk: 1", "\x85k: 1", "\u2028k: 1", "\u2029k: 1", "\r  k: 1", "\nk: 1", "\n  k: 1",
]
# fmt: on
PIECES = st.sampled_from(TRICKY) | st.text(alphabet="ab01.-_:/+ '\"#", max_size=4)
VALUES = st.lists(PIECES, max_size=4).map("".join)
SAFE_VALUES = st.one_of(
    st.text(alphabet="Az09_./+-:", min_size=1, max_size=8),  # mostly safe plain scalars
    st.text(alphabet=" !#%&'()*+,-./09:;<=>?@AZ[]^_`az|~", max_size=6).map(lambda s: f'"{s}"'),
    st.text(alphabet=' !"#%&()*+,-./09:;<=>?@AZ[]^_`az|~', max_size=6).map(lambda s: f"'{s}'"),
    st.sampled_from(["null", "~", "yes", "0x1F", "1e5", ".inf", "0o7", "1_000", "1:30", "2001-12-14", "-1", "true"]),
)


@st.composite
def mutated(draw, base: str, values=VALUES, kinds=None) -> str:
    lines = base.split("\n")
    kinds = kinds or [
        "value", "value", "value", "line", "delete", "insert", "indent", "key", "comment", "uncomment", "marker",
        "duplicate", "next", "comment text",
    ]  # fmt: skip
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(kinds))
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        key, sep, _ = line.partition(": ")
        if kind == "value":
            lines[i] = (key + sep if sep else line + ": ") + draw(values)
        elif kind == "line":
            lines[i] = draw(VALUES)
        elif kind == "delete" and len(lines) > 1:
            del lines[i]
        elif kind == "insert":
            lines.insert(i, draw(st.sampled_from(lines) | VALUES))
        elif kind == "indent":
            lines[i] = " " * draw(st.integers(1, 4)) + line
        elif kind == "key" and sep:
            lines[i] = key.rstrip("abcdefghijklmnopqrstuvwxyz_") + draw(VALUES) + sep + line.partition(": ")[2]
        elif kind == "comment text":  # the comment lines of the reference
            lines[i % 2] += draw(VALUES)
        elif kind == "comment":
            lines[i] = line[: len(line) - len(line.lstrip(" "))] + "# " + draw(VALUES)
        elif kind == "uncomment":
            lines[i] = line.replace("#", draw(st.sampled_from(["key:", "key: 1", "", "- "])), 1)
        elif kind == "marker":
            lines[i] = draw(st.sampled_from(["---", "...", "--- # x", "%YAML 1.1"]))
        elif kind == "duplicate" and sep:
            lines.insert(i + 1, key + sep + draw(values))
        elif kind == "next" and i + 1 < len(lines):
            lines[i] = (key + sep if sep else line + ": ") + draw(values)
            lines[i + 1] = " " * draw(st.integers(0, 8)) + lines[i + 1].lstrip(" ")
    return "\n".join(lines)


@st.composite
def cases(draw, values=VALUES, kinds=None) -> tuple[str, list[str]]:
    bases = draw(st.sampled_from(["grid", "text", "full"]))
    base = BASES[bases]
    return base, draw(st.lists(mutated(base, values, kinds), min_size=1, max_size=4))


BASES: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def bases(sweeps) -> None:
    BASES.update({name: texts[len(texts) // 2] for name, texts in sweeps.items()})


HYPOTHESIS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@HYPOTHESIS
@given(cases())
def test_mutated_configs_read_as_whole(case) -> None:
    base, texts = case
    reader = IncrementalConfigReader()
    check(reader.read_many([base]), [base])
    check(reader.read_many(texts), texts)


@HYPOTHESIS
@given(cases(SAFE_VALUES, ["value", "value", "value", "value", "comment", "comment text", "next"]))
def test_mutated_values_read_as_whole(case) -> None:
    """Mostly substitutable changes: the incremental path, its scalar batches and its checks."""
    base, texts = case
    reader = IncrementalConfigReader()
    check(reader.read_many([base, *texts]), [base, *texts])
    check(reader.read_many(texts[::-1]), texts[::-1])


@pytest.mark.parametrize("text", ["a: 1\na: 2\n", "x:\n  a: 1\n  b: 2\n  a: 3\n", "a: 1\n'a': 2\n"])
def test_generated_configs_with_a_key_given_twice_do_not_load(text: str) -> None:
    """OmegaConf (torchtune's loader) rejects a repeated key; PyYAML alone would keep the last value."""
    with pytest.raises(yaml.YAMLError, match="duplicate key a"):
        load_generated_config(text)
