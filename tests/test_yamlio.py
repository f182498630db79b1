"""The input reader keeps marks, rejects duplicate keys and reads floats as YAML 1.2 does."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaffold.errors import InputError
from scaffold.inputs.yamlio import parse_yaml


def test_duplicate_keys_are_an_error_with_their_line() -> None:
    with pytest.raises(InputError) as e:
        parse_yaml("a: 1\nb: 2\na: 3\n", Path("x.yaml"))
    assert str(e.value).startswith("x.yaml:3:1:") and "duplicate key 'a' (first defined on line 1)" in str(e.value)


def test_1e_minus_5_is_a_float_as_omegaconf_reads_it() -> None:
    assert parse_yaml("lr: 1e-5\n", Path("x.yaml")).data == {"lr": 1e-5}
