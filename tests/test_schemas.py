"""The shipped schemas are valid draft 2020-12 schemas, and every setup the generator writes satisfies the
setup_finetune schema (the generator builds setups from validated inputs and does not re-validate each one)."""

from __future__ import annotations

import jsonschema
import pytest

from scaffold.inputs import schemas
from scaffold.inputs.yamlio import load_yaml

from .conftest import Experiment


@pytest.mark.parametrize("name", [schemas.SUMMARY, schemas.LOCAL_CONFIG, schemas.SETUP])
def test_schema_is_valid(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(schemas.schema(name))
    jsonschema.Draft202012Validator.check_schema(schemas._inline_refs(schemas.schema(name), name))


def test_generated_setups_satisfy_their_schema(local_example: Experiment) -> None:
    data = local_example.load()
    data["runs"][1]["parameters"].update(validation_during_training=True, run_val_every_n_steps=5)
    data["runs"][1]["compute"] = {"time": "23:30:00", "mem": "80G", "cpus_per_task": 8}
    local_example.save(data)
    assert local_example.generate().code == 0
    setups = sorted(local_example.dir.glob("*/setup_finetune.yaml"))
    assert len(setups) == 2
    for path in setups:
        doc = load_yaml(path)
        assert schemas.validate(schemas.SETUP, doc) == [], path


# --- passes remembered on disk (schemas.Verdicts) ----------------------------------------------------------------

LOCAL = "account: nlplab\npartition: gpu\nconda_env: tune\nmodels_dir: /m\nscratch_dir: /s\n"


@pytest.fixture
def verdicts(tmp_path, monkeypatch):
    """Passes remembered in a fresh directory; a record of each time the schema itself is applied."""
    monkeypatch.setenv(schemas.VERDICTS_ENV, str(tmp_path / "validated"))
    applied: list[object] = []
    real = schemas._problems

    def problems(name, doc, data, run):
        applied.append(data)
        return real(name, doc, data, run)

    monkeypatch.setattr(schemas, "_problems", problems)
    return applied


def _doc(text: str, tmp_path):
    from scaffold.inputs.yamlio import parse_yaml

    return parse_yaml(text, tmp_path / "scaffold.local.yaml")


def test_a_pass_is_remembered_and_a_problem_never(verdicts, tmp_path) -> None:
    good, bad = _doc(LOCAL, tmp_path), _doc(LOCAL + "partition_max_time: soon\n", tmp_path)
    assert schemas.validate(schemas.LOCAL_CONFIG, good) == []
    assert schemas.validate(schemas.LOCAL_CONFIG, good) == []
    assert len(verdicts) == 1, "the second pass validated again"
    first = schemas.validate(schemas.LOCAL_CONFIG, bad)
    assert first and schemas.validate(schemas.LOCAL_CONFIG, bad) == first and len(verdicts) == 3
    assert len(list((tmp_path / "validated").iterdir())) == 1


def test_what_decides_the_verdict_decides_the_key(verdicts, tmp_path, monkeypatch) -> None:
    """The text "1" is not the number 1; another schema, another version of this package or another jsonschema
    is another key."""
    store = schemas.Verdicts.default()
    key = store.key(schemas.LOCAL_CONFIG, {"default_gpus": 1})
    assert key != store.key(schemas.LOCAL_CONFIG, {"default_gpus": "1"})
    assert key != store.key(schemas.LOCAL_CONFIG, {"default_gpus": 1.0})
    assert key != store.key(schemas.LOCAL_CONFIG, {"default_gpus": True})
    assert key != store.key(schemas.SUMMARY, {"default_gpus": 1})
    monkeypatch.setattr(schemas, "generator_digest", lambda: "another version")
    assert key != store.key(schemas.LOCAL_CONFIG, {"default_gpus": 1})
    monkeypatch.undo()
    monkeypatch.setattr(schemas, "package_stamp", lambda name: f"another {name}")
    assert key != store.key(schemas.LOCAL_CONFIG, {"default_gpus": 1})


def test_off_or_unwritable_validates_every_time(verdicts, tmp_path, monkeypatch) -> None:
    good = _doc(LOCAL, tmp_path)
    monkeypatch.setenv(schemas.VERDICTS_ENV, "off")
    assert schemas.validate(schemas.LOCAL_CONFIG, good) == [] and schemas.validate(schemas.LOCAL_CONFIG, good) == []
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(schemas.VERDICTS_ENV, str(blocker / "validated"))  # cannot be a directory
    assert schemas.validate(schemas.LOCAL_CONFIG, good) == [] and schemas.validate(schemas.LOCAL_CONFIG, good) == []
    assert len(verdicts) == 4


def test_a_remembered_pass_does_not_pass_a_changed_document(verdicts, tmp_path) -> None:
    assert schemas.validate(schemas.LOCAL_CONFIG, _doc(LOCAL, tmp_path)) == []
    changed = _doc(LOCAL.replace("nlplab", "nlp lab; rm -rf ~"), tmp_path)
    problems = schemas.validate(schemas.LOCAL_CONFIG, changed)
    assert [p.field for p in problems] == ["account"], problems


def test_a_cache_directory_that_cannot_be_read_validates(verdicts, tmp_path, monkeypatch) -> None:
    """A lookup that fails (another user's cache directory; root reads any, so the lookup is made to fail here)
    is no error: the document is validated."""
    good = _doc(LOCAL, tmp_path)

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(schemas.Path, "is_file", denied)
    assert schemas.validate(schemas.LOCAL_CONFIG, good) == [] and len(verdicts) == 1
