"""Rendering and self-checking runs on the second core while the generator writes.

Writing a run's files is the filesystem's work (creating files and directories), rendering and checking them is
Python's: a forked worker process renders the runs to be written, in batches, checks what it rendered (each
finetune.yaml read back as torchtune reads it, each batch script's directives and its `bash -n`), and hands the
texts and the checks back in order; the generator writes each run as its batch arrives. When the generator gets
to a batch the worker has not started yet (the disk is fast, rendering is the slower part), it renders that batch
itself, so both cores render. Where fork is unavailable, or for a handful of runs, all the work is done in this
process, in the same order.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .lock import close_inherited_locks
from .plan import describe
from .render import RenderError, fingerprint, render_run

if TYPE_CHECKING:
    from .outcome import CheckResult
    from .plan import Plan

BATCH = 32  # runs per task handed to the worker
AHEAD = 8  # batches in flight: the worker runs ahead of the writer by this many (bounded memory)


@dataclass
class Job:
    """What the forked worker renders: set before the fork, inherited by it (no plan is pickled)."""

    plan: Plan
    check: bool  # self-check what is rendered
    model_texts: dict[str, str]  # model registry entries as fingerprints include them
    shared: frozenset[str]  # settings every run shares (logged once; a run's description lists the others)


@dataclass
class Row:
    """What the renderer gives for one run."""

    fingerprint: str
    settings: str  # the run's own settings, as the log describes them
    texts: dict[str, str] | None = None  # by file name
    error: tuple[str, str] | None = None  # (message, file) of a rendering error
    checks: list[CheckResult] | None = None


_JOB: Job | None = None


def _worker_init() -> None:
    close_inherited_locks()  # never keep the experiment locked after the generator died
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the generator's to handle: it stops this worker
    # The generator's SIGTERM handler (sys.exit), inherited through fork, would turn close()'s terminate() into an
    # exception the pool's worker loop survives, and the exiting generator then waited for it forever (seen: 1 in
    # 10 interrupted generations hung in concurrent.futures' exit hook). The default action ends the worker.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _render_batch(indices: list[int]) -> list[tuple[int, Row]]:
    """Render (and, when asked, check) the runs at these indices of the plan."""
    from . import selfcheck

    assert _JOB is not None
    job = _JOB
    rows: list[tuple[int, Row]] = []
    for i in indices:
        rp = job.plan.runs[i]
        assert rp.setup is not None
        model = rp.setup["model"]
        row = Row(fingerprint(rp.setup, job.plan.models[model], job.model_texts[model]), describe(rp, skip=job.shared))
        try:
            row.texts = render_run(rp.setup, job.plan.models[model])
        except RenderError as e:
            row.error = (str(e), e.file)
        rows.append((i, row))
    if job.check:
        ok = [(i, row) for i, row in rows if row.texts is not None]
        results = selfcheck.check_texts([(job.plan.runs[i], row.texts) for i, row in ok])  # type: ignore[misc]
        for (_, row), checks in zip(ok, results, strict=True):
            row.checks = checks
    return rows


class Renderer:
    """The texts (and self-checks) of the runs at `indices` of `plan`, asked for in that order with `get`."""

    def __init__(
        self, plan: Plan, indices: list[int], check: bool, model_texts: dict[str, str], shared: frozenset[str]
    ):
        global _JOB
        _JOB = Job(plan, check, model_texts, shared)
        self._batches = [indices[k : k + BATCH] for k in range(0, len(indices), BATCH)]
        self._batch_of = {i: b for b, batch in enumerate(self._batches) for i in batch}
        self._rows: dict[int, Row] = {}
        self._futures: dict[int, Future] = {}
        self._submitted = 0
        self._pool: ProcessPoolExecutor | None = None
        self.local_batches = 0  # batches this process rendered itself (see get)
        if len(self._batches) > 1 and "fork" in multiprocessing.get_all_start_methods():
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("fork"), initializer=_worker_init
            )
            for _ in range(AHEAD):
                self._submit()

    def _submit(self) -> None:
        if self._pool is not None and self._submitted < len(self._batches):
            self._futures[self._submitted] = self._pool.submit(_render_batch, self._batches[self._submitted])
            self._submitted += 1

    def get(self, index: int) -> Row:
        if index not in self._rows:
            b = self._batch_of[index]
            rows = None
            if self._pool is not None:
                while self._submitted <= b:
                    self._submit()
                future = self._futures[b]
                # While the worker is still on this batch, render the last batch it has not started here (the
                # disk is fast, rendering is the slower part): both cores render, from both ends of the queue.
                while not future.done() and self._steal(b):
                    pass
                del self._futures[b]
                try:
                    rows = future.result()
                except Exception:  # a broken worker must not cost the run: render that batch here
                    rows = None
                self._submit()
            if rows is None:
                rows = _render_batch(self._batches[b])
            self._rows.update(rows)
        return self._rows.pop(index)

    def _steal(self, waiting_for: int) -> bool:
        for later in sorted(self._futures, reverse=True):
            if later <= waiting_for:
                return False
            if self._futures[later].cancel():
                del self._futures[later]
                self._rows.update(_render_batch(self._batches[later]))
                self.local_batches += 1
                return True
        return False

    def close(self, interrupted: bool = False) -> None:
        global _JOB
        _JOB = None
        if self._pool is None:
            return
        if interrupted:
            processes = list(getattr(self._pool, "_processes", {}).values())
            for process in processes:
                process.terminate()
            for process in processes:
                process.join(timeout=5)
                if process.is_alive():
                    process.kill()
            # A worker stopped while writing a result leaves half a message in the result pipe, and the pool's
            # manager thread (joined when the interpreter exits) would wait for the rest forever: close this
            # process's copy of the pipe's write end, so the read sees EOF and the pool winds down as broken.
            writer = getattr(getattr(self._pool, "_result_queue", None), "_writer", None)
            if writer is not None:
                with contextlib.suppress(OSError):
                    writer.close()
        self._pool.shutdown(wait=not interrupted, cancel_futures=True)
        self._pool = None
