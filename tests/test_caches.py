"""What the user's caches rest on.

The templates compiled once for the user (render._bytecode_cache, jinja's bytecode cache in the user's cache
directory): a cached template renders exactly what a compiled one does, a changed template is compiled again, and a
cache that cannot be read or written is a template compiled again, never an error. An installed package's stamp
(resources.package_stamp, in the keys of the validation verdicts and of the token audit's records) changes with its
files."""

from __future__ import annotations

import os
import sys

import jinja2
import pytest

from scaffold import plan, render, resources
from scaffold.inputs import localconfig, summary

from .conftest import EXAMPLE, EXAMPLE_LOCAL

TEMPLATES = ("finetune.yaml.j2", "finetune.slurm.j2")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A cache of this test's own; the process's environment is made again before and after."""
    monkeypatch.setenv(render.TEMPLATE_CACHE_ENV, str(tmp_path / "templates"))
    render._environment.cache_clear()
    yield tmp_path / "templates"
    render._environment.cache_clear()


def _example_texts() -> list[dict[str, str]]:
    p = plan.make_plan(summary.load(EXAMPLE), localconfig.load(EXAMPLE_LOCAL), check_paths=False)
    return [render.render_run(rp.setup, p.models[rp.setup["model"]]) for rp in p.runs if rp.fine_tuned]


def _entries(cache_dir) -> list:
    return [f for d in cache_dir.iterdir() for f in d.iterdir()] if cache_dir.exists() else []


def _no_compiling(monkeypatch) -> None:
    def compile_(*args, **kwargs):
        raise AssertionError("a template was compiled, not loaded from the cache")

    monkeypatch.setattr(jinja2.Environment, "compile", compile_)


def test_a_cached_template_renders_what_a_compiled_one_does(cache_dir, monkeypatch) -> None:
    compiled = _example_texts()
    assert len(_entries(cache_dir)) == len(TEMPLATES), "each template is kept once"
    render._environment.cache_clear()  # as a new process: the templates come from the cache
    with monkeypatch.context() as m:
        _no_compiling(m)
        assert _example_texts() == compiled
    monkeypatch.setenv(render.TEMPLATE_CACHE_ENV, "off")
    render._environment.cache_clear()
    assert _example_texts() == compiled


def test_a_changed_template_is_compiled_again(cache_dir) -> None:
    """An entry is keyed by the template's name and used only for the source it was compiled from."""
    first = jinja2.Environment(loader=jinja2.DictLoader({"t": "old {{ x }}"}), bytecode_cache=render._bytecode_cache())
    assert first.get_template("t").render(x=1) == "old 1" and len(_entries(cache_dir)) == 1
    again = jinja2.Environment(loader=jinja2.DictLoader({"t": "new {{ x }}"}), bytecode_cache=render._bytecode_cache())
    assert again.get_template("t").render(x=1) == "new 1"


def test_a_cache_that_cannot_be_read_compiles_again(cache_dir, monkeypatch) -> None:
    compiled = _example_texts()
    entries = _entries(cache_dir)
    assert entries
    for i, entry in enumerate(entries):  # cut short, or not a cache file at all
        entry.write_bytes(entry.read_bytes()[:40] if i % 2 == 0 else b"\x80\x04garbage")
    render._environment.cache_clear()
    assert _example_texts() == compiled
    render._environment.cache_clear()
    with monkeypatch.context() as m:  # and compiled again means written again: the next process loads it
        _no_compiling(m)
        assert _example_texts() == compiled


def test_a_cache_that_cannot_be_written_compiles(tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(render.TEMPLATE_CACHE_ENV, str(blocker / "templates"))  # cannot be a directory
    render._environment.cache_clear()
    try:
        texts = _example_texts()
        monkeypatch.setenv(render.TEMPLATE_CACHE_ENV, "off")
        assert render._bytecode_cache() is None
        render._environment.cache_clear()
        assert _example_texts() == texts
    finally:
        render._environment.cache_clear()


def test_a_package_stamp_changes_with_its_files(tmp_path, monkeypatch) -> None:
    package = tmp_path / "site" / "stamped_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("VERSION = 1\n")
    (package / "core.py").write_text("x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))

    def stamp() -> str:
        resources.package_stamp.cache_clear()
        return resources.package_stamp("stamped_pkg")

    first = stamp()
    assert "core.py" in first and stamp() == first
    (package / "core.py").write_text("x = 22\n")  # an upgrade: another size
    second = stamp()
    assert second != first
    os.utime(package / "core.py", ns=(1, 1))  # a reinstall: another modification time
    assert stamp() != second
    assert "stamped_pkg" not in sys.modules, "the stamp imported the package"
    resources.package_stamp.cache_clear()
    assert resources.package_stamp("no_such_package_here") == "no_such_package_here: not found"
