"""Rendering in forked worker processes (scaffold.commands.pipeline.Workers): the files, the report and the verdicts
are those of rendering in one process; a worker's failure is the run's error, never a hang or a half-written
experiment; SCAFFOLD_WORKERS decides how many (0: none)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from scaffold.commands import pipeline
from scaffold.commands.generate import generate
from scaffold.output.report import as_json

from .conftest import Experiment

GENERATED = ("logs", "arrays", ".scaffold-manifest.json")

# Imported at collection, as the audit's other tests do (a pytester run restores sys.modules, and numpy, which
# transformers imports, cannot be loaded twice in a process).
try:
    import transformers  # noqa: F401

    HAVE_TRANSFORMERS = True
except ImportError:
    HAVE_TRANSFORMERS = False


def _sweep(exp: Experiment, ranks: int = 20) -> None:
    """The example as a sweep of `ranks` x 2 seeds fine-tuned runs (the listed runs and the matrix dropped)."""
    data = exp.load()
    data["variables"] = {"lora_rank": list(range(16, 16 + ranks)), "seed": [1, 2]}
    del data["runs"]
    data["evaluation"].pop("matrix", None)
    exp.save(data)


def _clean(exp: Experiment) -> None:
    for p in exp.dir.iterdir():
        if p.name.startswith("Llama-") or p.name in GENERATED:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def _files(exp: Experiment) -> dict[str, bytes]:
    """What generate wrote but its log and its manifest (which carry times)."""
    return {k: v for k, v in exp.snapshot().items() if not k.startswith("logs/") and k != ".scaffold-manifest.json"}


@pytest.fixture
def started(monkeypatch) -> list:
    """Batches of two runs (so a small sweep has enough of them), and a record of the workers each generate
    started (None: rendered in this process)."""
    monkeypatch.setattr(pipeline, "BATCH", 2)
    seen: list = []
    real = pipeline.Workers.start.__func__

    def start(cls, renderer, count):
        workers = real(cls, renderer, count)
        seen.append(None if workers is None else len(workers._pids))
        return workers

    monkeypatch.setattr(pipeline.Workers, "start", classmethod(start))
    return seen


def _report(exp: Experiment, check_paths: bool) -> dict:
    """The JSON report of a generate, but for how long it took."""
    report = generate(exp.summary, local_config=exp.local, check_paths=check_paths)
    assert report.exit_status == 0, as_json(report)
    return {k: v for k, v in json.loads(as_json(report)).items() if k != "seconds"}


@pytest.mark.parametrize("check_paths", [True, False], ids=["audited", "no-check-paths"])
def test_workers_write_what_one_process_writes(local_example: Experiment, started, monkeypatch, check_paths) -> None:
    if check_paths and not HAVE_TRANSFORMERS:
        pytest.skip("transformers is not installed (pip install '.[test]')")
    _sweep(local_example)
    monkeypatch.setenv(pipeline.WORKERS_ENV, "3")
    parallel = _report(local_example, check_paths)
    files = _files(local_example)
    _clean(local_example)
    monkeypatch.setenv(pipeline.WORKERS_ENV, "0")
    serial = _report(local_example, check_paths)
    assert started == [3, None]
    assert _files(local_example) == files and len([k for k in files if k.endswith("/finetune.yaml")]) == 40
    assert parallel == serial


def test_a_planted_defect_fails_its_runs_in_the_workers_too(example: Experiment, started, monkeypatch) -> None:
    """A renderer that writes the wrong rank (patched before the workers fork) fails every run, by its check."""
    from .test_selfcheck import _wrong_rank

    _sweep(example, ranks=10)
    _wrong_rank(monkeypatch)
    monkeypatch.setenv(pipeline.WORKERS_ENV, "2")
    report = generate(example.summary, local_config=example.local, check_paths=False)
    assert started == [2]
    assert report.exit_status == 1
    assert {r.status for r in report.runs} == {"failed"} and len(report.runs) == 20
    assert not list(example.dir.glob("Llama-*/finetune.yaml"))


@pytest.mark.parametrize("how", ["raises", "dies"])
def test_a_worker_that_fails_is_an_error_of_generate_not_a_hang(example: Experiment, started, monkeypatch, how):
    """A bug in a worker (an exception, or the process gone) ends generate with an error naming the batch, the
    other workers reaped, and nothing of the runs not yet written left half done."""
    _sweep(example, ranks=10)
    real = pipeline.render_run
    here = os.getpid()

    def broken(setup, model):
        if setup["lora_rank"] == 22:
            if how == "dies" and os.getpid() != here:  # (never this process: the test would end with it)
                os._exit(7)
            raise ValueError("planted")
        return real(setup, model)

    monkeypatch.setattr(pipeline, "render_run", broken)
    monkeypatch.setenv(pipeline.WORKERS_ENV, "2")
    with pytest.raises(RuntimeError) as err:
        generate(example.summary, local_config=example.local, check_paths=False)
    assert started == [2]
    if how == "raises":
        assert "failed on batch" in str(err.value) and str(err.value).endswith("ValueError: planted")
        assert "Traceback" in err.value.__notes__[0] and "in broken" in err.value.__notes__[0]
    else:
        assert "ended before batch" in str(err.value)
    with pytest.raises(ChildProcessError):  # every worker reaped
        os.waitpid(-1, os.WNOHANG)
    for d in example.dir.glob("Llama-*"):  # a run is written whole or not at all
        assert {p.name for p in d.iterdir()} in (
            {"setup_finetune.yaml", "finetune.yaml", "finetune.slurm", "artifacts"},
            set(),
        )


@pytest.mark.parametrize(
    ("env", "batches", "expected"),
    [
        ("0", 40, 0),
        ("1", 40, 0),
        ("3", 40, 3),
        ("8", 5, 0),  # fewer batches than pay for the fork
        ("3", pipeline.MIN_BATCHES, 3),
        ("many", 40, 0),
    ],
)
def test_how_many_workers(monkeypatch, env, batches, expected) -> None:
    monkeypatch.setenv(pipeline.WORKERS_ENV, env)
    assert pipeline.worker_count(batches) == expected


def test_no_workers_are_forked_beside_threads(monkeypatch) -> None:
    import threading

    monkeypatch.setenv(pipeline.WORKERS_ENV, "2")
    assert pipeline.worker_count(40) == 2
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert pipeline.worker_count(40) == 0
    finally:
        stop.set()
        thread.join()
