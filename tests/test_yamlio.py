"""The input reader keeps marks, rejects duplicate keys and reads floats as YAML 1.2 does; libyaml's composer, used where
it reads a document, gives what the pure-Python one gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaffold.errors import InputError
from scaffold.inputs import yamlio
from scaffold.inputs.yamlio import parse_yaml


def test_duplicate_keys_are_an_error_with_their_line() -> None:
    with pytest.raises(InputError) as e:
        parse_yaml("a: 1\nb: 2\na: 3\n", Path("x.yaml"))
    assert str(e.value).startswith("x.yaml:3:1:") and "duplicate key 'a' (first defined on line 1)" in str(e.value)


def test_1e_minus_5_is_a_float_as_omegaconf_reads_it() -> None:
    assert parse_yaml("lr: 1e-5\n", Path("x.yaml")).data == {"lr": 1e-5}


# --- libyaml's composer gives what the pure-Python one gives --------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent
YAML_FILES = sorted(
    p
    for base in ("tests/bad_inputs", "tests/hostile", "examples", "golden", "templates")
    for p in (REPO / base).rglob("*")
    if p.is_file() and p.suffix in (".yaml", ".yml")
)


def outcome(text: str, libyaml: bool, monkeypatch) -> object:
    """What parse_yaml gives, composed by libyaml or (forced) by the pure-Python loader: the data, marks and source
    texts, or the message of its InputError."""
    with monkeypatch.context() as m:
        if not libyaml:
            m.setattr(yamlio, "_libyaml_reads", lambda text: False)
        try:
            doc = parse_yaml(text, Path("x.yaml"))
        except InputError as e:
            return ("error", str(e))
    return (repr(doc.data), doc.marks, doc.raw)


def test_libyaml_is_there_and_used() -> None:
    assert yamlio._LibyamlLoader is not yamlio.InputLoader
    assert yamlio._libyaml_reads("a: [1, {b: c}]\n")
    assert not yamlio._libyaml_reads("[" * 64 + "]" * 64)  # deeper than MAX_DEPTH: the pure-Python loader says so


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_libyaml_reads_every_yaml_file_here_as_the_pure_python_loader(path: Path, monkeypatch) -> None:
    text = path.read_bytes().decode("utf-8", errors="replace").replace("\r\n", "\n")
    assert outcome(text, True, monkeypatch) == outcome(text, False, monkeypatch)


CASES = [
    "a: 1\nb: é: x\n",  # an error after a character of two bytes
    "é: [1, 2]\nnom: 'ü'\nx: {ß: 1e-5}\n",
    "a: 1\na: 2\n",
    "x: &a [1]\ny: *a\n",
    "x: *a\n",
    "a: 1\n---\nb: 2\n",
    "<<: {a: 1}\nb: 2\n",
    "a: !!python/object/apply:os.system [ls]\n",
    "a: .nan\n",
    "t: 4:00:00\n",
    "a:\n\t- b\n",
    "- [" * 40 + "]" * 40,
    "[" * 63 + "]" * 63,
    "[" * 65 + "]" * 65,
    "\ufeffa: 1\n",
    "a: b\x07\n",
    "%YAML 1.2\n---\na: 1\n",
    "%YAML 2.0\n---\na: 1\n",
    "a: |\n  two\n  lines\n",
    "? [a, b]\n: c\n",
    "[a:b, c: d, {e: f}]\n",
    "a: 'x\n  y'\nb: \"\\u00e9\\x41\"\n",
    "",
    "# only a comment\n",
]


@pytest.mark.parametrize("text", CASES)
def test_libyaml_reads_edge_cases_as_the_pure_python_loader(text: str, monkeypatch) -> None:
    assert outcome(text, True, monkeypatch) == outcome(text, False, monkeypatch)


PIECES = list("ab1.-:#&*!|>'\"[]{},?% \t\n") + ["é", "\x85", "\u2028", "- ", ": ", "  ", "\n  ", "x: ", "&a ", "*a"]
YAMLISH = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=YAMLISH)
def test_libyaml_reads_any_text_as_the_pure_python_loader(text: str, monkeypatch) -> None:
    assert outcome(text, True, monkeypatch) == outcome(text, False, monkeypatch)
