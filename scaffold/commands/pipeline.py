"""Rendering and self-checking the runs generate writes, a batch at a time: the runs to be written are rendered in
batches of BATCH, in order, and each batch is self-checked as it is rendered (each finetune.yaml read back as
torchtune reads it, each batch script read as bash and sbatch read it: `selfcheck.check_texts`, which runs the
verification suite's text checks and parses the batch's scripts together), and each run that passes is audited
before it is written (`scaffold.checks.token_audit.preflight`: its data's tokens, its steps and its budget; a run given no
time limit anywhere is rendered again with the time the estimate sets). The texts of the runs rendered but not yet
written are held: one batch's, or, while the audit's worker process builds a run's records, those of the runs rendered
ahead meanwhile (at most LOOKAHEAD), so memory does not grow with the sweep beyond that bound.

Where the sweep has more than one batch and the machine more than one core, the batches are rendered and self-checked
by forked worker processes (`Workers`), each taking every n-th batch, while this process audits and writes the runs
they hand back, in order; the rows are the same either way (rendering and the self-check read only the plan and the
texts). SCAFFOLD_WORKERS=N sets how many (0 or 1: none, all in this process)."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..output.outcome import failures
from ..output.runlog import describe
from ..render import RenderError, fingerprint, render_run
from ..timeutil import parse_time

if TYPE_CHECKING:
    from ..checks.token_audit import Preflight
    from ..errors import Problem
    from ..plan import Plan, RunPlan

BATCH = 32  # runs rendered and self-checked together
LOOKAHEAD = 2048  # the most runs rendered ahead while the background builder works (their texts are held)
WORKERS_ENV = "SCAFFOLD_WORKERS"  # how many worker processes render (0 or 1: none)
MAX_WORKERS = 4  # the most started by default (past that, this process's audits and writes are the bound)
# The fewest batches worth forking for: below it, starting the workers and moving their rows costs more than they
# save (benchmarks/bench_generate.py, 2 cores: 100 runs, 4 batches, 0.53 s with 2 workers against 0.46 s without).
MIN_BATCHES = 8


@dataclass
class Row:
    """What the renderer gives for one run."""

    fingerprint: str
    settings: str  # the run's own settings, as the log describes them
    texts: dict[str, str] | None = None  # by file name
    error: tuple[str, str] | None = None  # (message, file) of a rendering error
    checks: dict[str, list[Problem]] | None = None  # the self-check: check id -> its problems
    preflight: Preflight | None = None  # the pre-flight audit of a run that passed its self-check
    config: dict | None = None  # its finetune.yaml as torchtune loads it, until it is audited
    inputs: tuple[Path, Path] | None = None  # its data file and model directory here, when they are read
    prefetched: tuple = ()  # the keys of its splits' records, asked of the background builder
    time_from: str | None = None  # the time limit the estimate set (the run was rendered again with it)


class Renderer:
    """The texts (and, with `check`, self-checks) of the runs at `indices` of `plan`, asked for in that order with
    `get`. `model_texts`: each model's registry entry as fingerprints include it; `shared`: the settings every run
    shares (logged once; a run's description lists the others)."""

    def __init__(
        self,
        plan: Plan,
        indices: list[int],
        check: bool,
        model_texts: dict[str, str],
        shared: frozenset[str],
        check_paths: bool = True,
    ):
        self.plan, self.check, self.model_texts, self.shared = plan, check, model_texts, shared
        self.check_paths = check_paths
        self._batches = [indices[k : k + BATCH] for k in range(0, len(indices), BATCH)]
        self._batch_of = {i: b for b, batch in enumerate(self._batches) for i in batch}
        self._rows: dict[int, Row] = {}
        self._next = 0  # the next batch to render
        self._workers: Workers | None = None

    def close(self) -> None:
        from ..torchtune_ext import audit

        if self._workers is not None:
            self._workers.stop()
            self._workers = None
        audit.stop_worker()

    def get(self, index: int) -> Row:
        while index not in self._rows:
            self._render_next()
        row = self._rows.pop(index)
        if row.config is not None:
            from ..torchtune_ext import audit

            # Render ahead (a bounded number of runs) while the worker builds this run's records.
            while (
                not all(audit.ready(k) for k in row.prefetched)
                and self._next < len(self._batches)
                and len(self._rows) < LOOKAHEAD
            ):
                self._render_next()
            config, row.config = row.config, None
            self._preflight(self.plan.runs[index], row, config)
        return row

    def _render_next(self) -> None:
        if self._workers is None and self._next == 0:
            self._workers = Workers.start(self, worker_count(len(self._batches)))
        if self._workers is not None:
            rows = self._workers.result(self._next)
        else:
            rows = self._render(self._batches[self._next])
        for row in rows.values():
            if row.config is not None:
                row.prefetched = self._prefetch(row.inputs, row.config)
        self._rows.update(rows)
        self._next += 1

    def _render(self, indices: list[int]) -> dict[int, Row]:
        from ..engine import selfcheck  # here: an unchanged re-run renders nothing

        plan = self.plan
        rows: dict[int, Row] = {}
        for i in indices:
            rp = plan.runs[i]
            assert rp.setup is not None
            model = rp.setup["model"]
            row = Row(
                fingerprint(rp.setup, plan.models[model], self.model_texts[model]), describe(rp, skip=self.shared)
            )
            try:
                row.texts = render_run(rp.setup, plan.models[model])
            except RenderError as e:
                row.error = (str(e), e.file)
            rows[i] = row
        if self.check:
            ok = [(i, row) for i, row in rows.items() if row.texts is not None]
            results = selfcheck.check_batch(plan, [(plan.runs[i], row.texts) for i, row in ok])  # type: ignore[misc]
            for (i, row), (checks, config) in zip(ok, results, strict=True):
                row.checks = checks
                if config is not None and not failures(checks):
                    row.config, row.inputs = config, self._inputs(plan.runs[i])
        return rows

    def _inputs(self, rp: RunPlan) -> tuple[Path, Path] | None:
        """The run's data file and model directory on this machine; None where they are not read
        (--no-check-paths, outside the experiment)."""
        assert rp.setup is not None
        summary = self.plan.summary
        data_named, model_named = Path(rp.setup["dataset_path"]), Path(rp.setup["model_dir"])
        if not self.check_paths and not (summary.is_inside(data_named) and summary.is_inside(model_named)):
            return None
        return summary.to_local(data_named), summary.to_local(model_named)

    def _prefetch(self, inputs: tuple[Path, Path] | None, config: dict) -> tuple:
        from ..checks.token_audit import audited_sections
        from ..torchtune_ext import audit

        if inputs is None:
            return ()
        data, model = inputs
        # Found on disk, or built by the worker (started once) while the next runs are rendered and checked.
        return tuple(
            audit.prefetch(section["_component_"], section, split, str(data), str(model))
            for _, section, split in audited_sections(config)
        )

    def _preflight(self, rp: RunPlan, row: Row, config: dict) -> None:
        """Audit a run that passed its self-check; a run given no time limit gets the estimate's, rendered and
        checked again (its fingerprint stays the plan's: the inputs it was generated from)."""
        from ..checks.token_audit import Preflight, preflight
        from ..engine import selfcheck

        assert rp.setup is not None
        inputs = row.inputs
        if inputs is None:
            row.preflight = Preflight(None, rp.steps, None, skipped="--no-check-paths: the data and model are not read")
            return
        found = preflight(rp, config, *inputs, self.plan.local)
        row.preflight = found
        if not (rp.time_estimated and found.time) or parse_time(found.time) == parse_time(rp.setup["time"]):
            return
        rp.setup = {**rp.setup, "time": found.time}  # type: ignore[assignment]
        row.time_from = found.time
        model = self.plan.models[rp.setup["model"]]
        try:
            row.texts = render_run(rp.setup, model)
        except RenderError as e:
            row.texts, row.error = None, (str(e), e.file)
            return
        ((row.checks, _),) = selfcheck.check_batch(self.plan, [(rp, row.texts)])


def worker_count(batches: int) -> int:
    """How many worker processes render `batches` batches: SCAFFOLD_WORKERS where set, else one per core this
    process may use (at most MAX_WORKERS); 0 where there are fewer than MIN_BATCHES batches or one core, or where
    fork is not safe here (not Linux, or threads running in this process)."""
    value = os.environ.get(WORKERS_ENV, "").strip()
    if value:
        try:
            wanted = int(value)
        except ValueError:
            wanted = 0  # not a number: no workers (the rows are the same either way)
    else:
        try:
            wanted = min(len(os.sched_getaffinity(0)), MAX_WORKERS)
        except (AttributeError, OSError):
            wanted = 1
    if batches < MIN_BATCHES or wanted < 2 or not sys.platform.startswith("linux") or threading.active_count() > 1:
        return 0
    return min(wanted, batches)


_HEADER = struct.Struct("!Q")  # the length of a pickled message


class Workers:
    """Worker processes, forked from this one, rendering and self-checking a Renderer's batches: worker k renders
    batches k, k + n, k + 2n, ... in order and writes each batch's rows to its pipe, pickled; `result(b)` reads
    batch b from worker b % n. A pipe holds little, so a worker stays at most a batch or two ahead of the reader
    (memory stays bounded, as in one process). Forked, the workers share what the plan holds without copying it;
    they read nothing but the plan and write nothing but their pipe, and end with os._exit (no exit handlers, no
    buffers of this process's files flushed twice)."""

    def __init__(self, pids: list[int], pipes: list[BinaryIO]):
        self._pids, self._pipes = pids, pipes

    @classmethod
    def start(cls, renderer: Renderer, count: int) -> Workers | None:
        if count < 2:
            return None
        pids, pipes = [], []
        for k in range(count):
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the worker
                os.close(read)
                code = 1
                try:
                    for pipe in pipes:
                        pipe.close()
                    with os.fdopen(write, "wb") as out:
                        _serve(renderer, range(k, len(renderer._batches), count), out)
                    code = 0
                finally:
                    os._exit(code)
            os.close(write)
            pids.append(pid)
            pipes.append(os.fdopen(read, "rb"))
        return cls(pids, pipes)

    def result(self, batch: int) -> dict[int, Row]:
        pipe = self._pipes[batch % len(self._pipes)]
        header = pipe.read(_HEADER.size)
        if len(header) < _HEADER.size:
            raise RuntimeError(f"a rendering worker ended before batch {batch} (killed, or out of memory)")
        (size,) = _HEADER.unpack(header)
        kind, value = pickle.loads(pipe.read(size))
        if kind == "error":  # a bug: its last line said, the worker's traceback kept for SCAFFOLD_DEBUG=1
            error = RuntimeError(f"a rendering worker failed on batch {batch}: {value.strip().splitlines()[-1]}")
            error.add_note(f"the worker's traceback:\n{value}")
            raise error
        return value

    def stop(self) -> None:
        """End the workers (those done have ended already) and reap them."""
        for pipe in self._pipes:
            pipe.close()
        for pid in self._pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self._pids, self._pipes = [], []


def _serve(renderer: Renderer, batches: range, out: BinaryIO) -> None:
    """A worker's loop: each of its batches rendered and checked, written to `out` (an error as its traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends a worker at once; the caller reports it
    for b in batches:
        try:
            message: tuple = ("rows", renderer._render(renderer._batches[b]))
        except Exception:
            message = ("error", traceback.format_exc())
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        out.write(_HEADER.pack(len(data)))
        out.write(data)
        out.flush()
        if message[0] == "error":
            return
