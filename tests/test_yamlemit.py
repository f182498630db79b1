"""The YAML writer's fast path writes exactly what PyYAML writes, what it writes reads back as the same values
(here and in OmegaConf), and its memo stays bounded and tells apart values that are equal but not alike."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from scaffold.errors import InputError
from scaffold.inputs import yamlemit
from scaffold.inputs.yamlemit import _pyyaml_flow, dump_flat, dump_yaml, yaml_scalar
from scaffold.inputs.yamlio import parse_yaml

VALUES = [
    None,
    True,
    False,
    0,
    8,
    -3,
    10**12,
    0.0,
    1e-5,
    1e-4,
    3e-4,
    0.1,
    2.5,
    1e20,
    1.5e-07,
    float("inf"),
    float("nan"),
    "",
    "a",
    "lora",
    "/scratch/x/y.json",
    "Llama-3.2-1B-Instruct_rank8",
    "yes",
    "no",
    "on",
    "null",
    "~",
    "true",
    "1e-5",
    "0x10",
    "12",
    "1.5",
    "4:00:00",
    "00:59:00",
    "10:00:00",
    "a b",
    "a: b",
    "#x",
    "-x",
    "x#y",
    "é",
    "Capitalize the given word: {input}\n",
    "line1\nline2",
    "'q'",
    '"dq"',
    "tab\there",
    "[x]",
    "{x}",
    "*a",
    "&a",
    ["q_proj", "v_proj"],
    [],
    [1, 2],
    ["a b"],
    {"a": 1},
    {},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_scalar_fast_path_matches_pyyaml(value) -> None:
    assert yaml_scalar(value) == _pyyaml_flow(value)


simple = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**15), 10**15),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(VALUES[:-6]),
)
flat = st.dictionaries(
    st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
    st.one_of(
        simple,
        st.lists(simple, max_size=4),
        st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), simple, max_size=3),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(flat)
@example({"_": {"a": "\xa0"}})  # found by hypothesis: dump_flat quoted it, dump_yaml wrote it plain
@example({"a": "\x85"})  # NEL: dump_yaml's single quotes folded it into a space
@example({"a": ["x\u2028y", "\t", " lead", "trail "]})
def test_dump_flat_matches_dump_yaml(data) -> None:
    """The two writers agree byte for byte on every value, and what they write reads back as the same data."""
    text = dump_flat(data)
    assert text == dump_yaml(data)
    if _non_finite(data):  # written as YAML writes them, refused by the reader (no setting takes a non-finite value)
        with pytest.raises(InputError, match="is not a finite number"):
            parse_yaml(text, Path("x.yaml"))
        return
    assert repr(parse_yaml(text, Path("x.yaml")).data) == repr(data) or not data


def _non_finite(value) -> bool:
    if isinstance(value, dict):
        return any(map(_non_finite, value.values()))
    if isinstance(value, list):
        return any(map(_non_finite, value))
    return isinstance(value, float) and not math.isfinite(value)


@settings(max_examples=300, deadline=None)
@given(simple)
def test_scalar_round_trips_through_our_reader_and_omegaconf(value) -> None:
    text = f"k: {yaml_scalar(value)}"
    if _non_finite(value):  # NaN and infinities are refused by the reader (OmegaConf reads them)
        with pytest.raises(InputError, match="is not a finite number"):
            parse_yaml(text, Path("x.yaml"))
        return
    assert parse_yaml(text, Path("x.yaml")).data["k"] == value
    if not (isinstance(value, str) and "${" in value):  # interpolation: finetune.yaml escapes it, see render
        assert OmegaConf.create(text)["k"] == value


def test_the_memo_tells_apart_values_equal_but_not_alike() -> None:
    assert [yaml_scalar(v) for v in (1, True, 1.0, 0.0, -0.0, [1], [True], "1")] == [
        "1", "true", "1.0", "0.0", "-0.0", "[1]", "[true]", "'1'",
    ]  # fmt: skip


def test_the_memo_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(yamlemit, "MEMO_SIZE", 10)
    monkeypatch.setattr(yamlemit, "_MEMO", {})
    texts = [yaml_scalar(f"/scratch/run{i}") for i in range(25)]
    assert texts == [f"/scratch/run{i}" for i in range(25)]
    assert 0 < len(yamlemit._MEMO) <= 10
    assert yaml_scalar([{"a": 1}]) == "[{a: 1}]"  # a list holding a dict is remembered too
    assert yaml_scalar([{"a": [1]}]) == "[{a: [1]}]"
