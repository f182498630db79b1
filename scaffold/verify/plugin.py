"""The pytest plugin (entry point `pytest11: scaffold_verify`): `pytest --experiment DIR` collects the
verification suite of one experiment as ordinary pytest Function items with stable, unique ids:

    experiment_summary.yaml::summary_schema[EXPERIMENT]     experiment-level checks (EXPERIMENT: the directory name)
    experiment_summary.yaml::slurm_job_name[RUN]            one per check and run (`--items check`)
    experiment_summary.yaml::golden[RUN-finetune.yaml]      one per generated file (syrupy's `snapshot` fixture)
    experiment_summary.yaml::finetune_yaml[RUN]             `--items file`: every check of one run and file
    experiment_summary.yaml::run[RUN]                       `--items run`: every check and golden file of one run

`--items auto` (the default) collects per check up to PER_CHECK_UP_TO runs and per run above: pytest's own cost
per test, and what it keeps per test, dominate sweeps of thousands of runs.

The summary file is the collector, so an experiment repo needs no test files: installing the package is enough.
Without --experiment the plugin does nothing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from ..checks import EXPERIMENT, RUN, Check, Skipped, all_checks, run_check
from ..checks.context import ExperimentContext
from ..checks.expectations import CollectionError, Expectations, Options, RunRef, item_id
from ..checks.findings import Blocked, CheckFailed
from ..checks.shapes import EVERY, PER_SHAPE
from ..errors import Problem
from ..inputs.summary import summary_path
from ..layout import ARRAY_DIR, FINE_TUNED, TRAINING_FILES

PER_CHECK_UP_TO = 50  # runs; above, --items auto collects one test per run, and --omegaconf auto loads by shape
SUMMARY_KEY = pytest.StashKey[Path]()
CONTEXT_KEY = pytest.StashKey[ExperimentContext]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("scaffold-verify", "scaffold-torchtune verification suite")
    group.addoption(
        "--experiment",
        metavar="DIR",
        default=None,
        help="check the generated runs of this experiment (directory holding experiment_summary.yaml, or the file)",
    )
    group.addoption(
        "--local-config",
        metavar="PATH",
        default=None,
        help="site config for --experiment (default: $SCAFFOLD_LOCAL_CONFIG, else the nearest one upward)",
    )
    group.addoption(
        "--no-check-paths",
        action="store_true",
        default=False,
        help="do not check model, tokenizer and dataset paths outside the experiment (machines that do not mount "
        "the cluster's storage); those checks are skipped with the reason",
    )
    group.addoption(
        "--items",
        choices=("auto", "check", "file", "run"),
        default="auto",
        help="one test per check and run (`check`); per run and file, with every check of that file in it (`file`); "
        "per run, with every check and golden file of the run in it (`run`: pytest's cost per test dominates large "
        f"sweeps). `auto`: per check up to {PER_CHECK_UP_TO} runs, per run above. Failures name the run, file, "
        "line and check in every mode",
    )
    group.addoption(
        "--omegaconf",
        choices=("auto", EVERY, PER_SHAPE),
        default="auto",
        help="load every finetune.yaml with OmegaConf itself (`every`), or parse each with OmegaConf's YAML loader "
        "and load the first config of each shape (keys, nesting, scalar types, interpolations) with OmegaConf, "
        f"the others taking its result (`per-shape`, ~10x faster). `auto`: every up to {PER_CHECK_UP_TO} runs, "
        "per-shape above",
    )
    group.addoption(
        "--full-report",
        action="store_true",
        default=False,
        help="pytest's own report of each failed and skipped test (default: one line per failing check, the failures "
        "of one cause folded into one line with the count and the fix, the skipped checks counted by reason)",
    )
    group.addoption(
        "--golden-dir",
        metavar="DIR",
        default=None,
        help="golden snapshots of --experiment (default: golden/ beside the summary)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    experiment = config.getoption("experiment", None)
    if not experiment:
        return
    summary = summary_path(Path(experiment)).resolve()
    if not summary.is_file():
        raise pytest.UsageError(f"--experiment {experiment}: no experiment summary at {summary}")
    config.stash[SUMMARY_KEY] = summary
    # The summary is the suite's collector: collect it, alone unless test paths were given explicitly.
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        named = any(Path(arg.partition("::")[0]).resolve() == summary for arg in config.args)
        config.args = config.args if named else [*config.args, str(summary)]
    else:
        config.args = [str(summary)]
    # Skip reasons (--no-check-paths, torchtune not importable, blocked checks) belong in the report: counted by
    # reason on one line (pytest_terminal_summary), or, with --full-report, pytest's line per skipped test.
    if config.getoption("full_report") and not {"s", "a", "A"} & set(config.option.reportchars):
        config.option.reportchars += "s"


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    summary = parent.config.stash.get(SUMMARY_KEY, None)
    if summary is None or file_path.name != summary.name or file_path.resolve() != summary:
        return None
    if CONTEXT_KEY in parent.config.stash:
        return None  # reached twice (an explicit argument and a directory holding it): collect it once
    try:
        file_path.relative_to(parent.config.rootpath)
        nodeid = None  # pytest's own: the path below the rootdir
    except ValueError:  # pytest would name an initial path outside the rootdir "": give it its absolute path
        nodeid = file_path.as_posix()
    return ExperimentFile.from_parent(parent, path=file_path, nodeid=nodeid)


def options_from(config: pytest.Config) -> Options:
    local, golden = config.getoption("local_config"), config.getoption("golden_dir")
    return Options(
        experiment=config.stash[SUMMARY_KEY],
        local_config=Path(local) if local else None,
        check_paths=not config.getoption("no_check_paths"),
        golden_dir=Path(golden) if golden else None,
        update_golden=bool(getattr(config.option, "update_snapshots", False)),
    )


class SuiteCollectionError(Exception):
    """The experiment cannot be collected (no runs, duplicate run names...); the message says why and the fix."""


class ExperimentFile(pytest.File):
    """experiment_summary.yaml as the collector of its experiment's verification items."""

    def collect(self):
        try:
            expectations = Expectations(options_from(self.config))
        except CollectionError as e:
            raise SuiteCollectionError(str(e)) from None
        large = len(expectations.runs) > PER_CHECK_UP_TO
        omegaconf = self.config.getoption("omegaconf", "auto")
        if omegaconf == "auto":
            omegaconf = PER_SHAPE if large else EVERY
        context = ExperimentContext(expectations, omegaconf)
        self.config.stash[CONTEXT_KEY] = context
        mode = self.config.getoption("items", "auto")
        if mode == "auto":
            mode = "run" if large else "check"
        if mode == "run":
            items = self._items_per_run(expectations, context)
        elif mode == "file":
            items = self._items_per_file(expectations, context)
        else:
            items = self._items_per_check(expectations, context)
        counts = Counter(item.nodeid for item in items)
        duplicates = sorted(n.rpartition("::")[2] for n, count in counts.items() if count > 1)
        if duplicates:
            raise SuiteCollectionError(f"test ids are not unique: {', '.join(duplicates)} (fix: rename the runs)")
        return items

    def _run_checks(self, ref: RunRef, fine_tuned: set[str]) -> list[Check]:
        return [c for c in all_checks() if c.scope == RUN or (c.scope == FINE_TUNED and ref.name in fine_tuned)]

    def _items_per_run(self, expectations: Expectations, context: ExperimentContext) -> list[VerifyItem]:
        """Experiment checks one test each; per run, one test (run[RUN]) running every check of the run and its
        golden comparisons. Experiment checks that read every run's files come last, so that each file is read
        once: a run's files are released when its test is done (memory does not grow with the sweep)."""
        context.release_runs = True
        experiment = [c for c in all_checks() if c.scope == EXPERIMENT]
        items = [self._item(c.id, expectations.name, c, context, None) for c in experiment if not c.reads_runs]
        fine_tuned = {ref.name for ref in expectations.fine_tuned_runs()}
        shared: dict[bool, object] = {}  # the fixture info of every run's test, by whether it compares golden files
        for ref in expectations.runs:
            golden = TRAINING_FILES if ref.name in fine_tuned else ()
            name = item_id("run", ref.name)
            func = _group_function(name, self._run_checks(ref, fine_tuned), context, ref, golden, release=True)
            item = VerifyItem.from_parent(self, name=name, callobj=func, fixtureinfo=shared.get(bool(golden)))
            shared.setdefault(bool(golden), item._fixtureinfo)
            item.line, item.run = max(ref.line - 1, 0), ref
            items.append(item)
        items += [self._item(c.id, expectations.name, c, context, None) for c in experiment if c.reads_runs]
        return [*items, self._arrays_golden(expectations, context)]

    def _items_per_file(self, expectations: Expectations, context: ExperimentContext) -> list[VerifyItem]:
        """Experiment checks one test each; then per run, one test per file (e.g. finetune_yaml[RUN]) running every check of
        that file (and the file's golden comparison), and one (checks[RUN]) for the checks of no single file."""
        items = [self._item(c.id, expectations.name, c, context, None) for c in all_checks() if c.scope == EXPERIMENT]
        fine_tuned = {ref.name for ref in expectations.fine_tuned_runs()}
        for ref in expectations.runs:
            groups: dict[str, list[Check]] = {}
            for c in self._run_checks(ref, fine_tuned):
                groups.setdefault(c.file or "checks", []).append(c)
            if ref.name in fine_tuned:
                for file in TRAINING_FILES:
                    groups.setdefault(file, [])
            for file, checks in groups.items():
                # pytest shows a "." in a test name as "::": name the test finetune_yaml[RUN], not finetune.yaml
                name = item_id(file.replace(".", "_").replace("/", "_"), ref.name)
                golden = (file,) if file in TRAINING_FILES and ref.name in fine_tuned else ()
                func = _group_function(name, checks, context, ref, golden)
                item = VerifyItem.from_parent(self, name=name, callobj=func)
                item.line, item.run = max(ref.line - 1, 0), ref
                items.append(item)
        return [*items, self._arrays_golden(expectations, context)]

    def _items_per_check(self, expectations: Expectations, context: ExperimentContext) -> list[VerifyItem]:
        items: list[VerifyItem] = []
        for check in all_checks():
            if check.scope == EXPERIMENT:
                items.append(self._item(check.id, expectations.name, check, context, None))
                continue
            for ref in expectations.fine_tuned_runs() if check.scope == FINE_TUNED else expectations.runs:
                items.append(self._item(check.id, ref.name, check, context.run(ref), ref))
        for ref in expectations.fine_tuned_runs():
            for file in TRAINING_FILES:
                items.append(self._item("golden", f"{ref.name}-{file}", None, (context, ref, file), ref))
        return [*items, self._arrays_golden(expectations, context)]

    def _arrays_golden(self, expectations: Expectations, context: ExperimentContext) -> VerifyItem:
        """golden[EXPERIMENT-arrays]: every job array script against its golden copy (`{golden_dir}/arrays/`)."""
        name = item_id("golden", f"{expectations.name}-{ARRAY_DIR}")
        return VerifyItem.from_parent(self, name=name, callobj=_arrays_golden_function(name, context))

    def _item(self, check_id: str, target: str, check: Check | None, subject, ref: RunRef | None) -> VerifyItem:
        name = item_id(check_id, target)
        func = _check_function(name, check, subject) if check else _golden_function(name, *subject)
        item = VerifyItem.from_parent(self, name=name, callobj=func)
        item.check = check
        if ref is not None:
            item.line = max(ref.line - 1, 0)  # pytest reports line + 1
            item.run = ref
        return item

    def repr_failure(self, excinfo, *args, **kwargs):
        if isinstance(excinfo.value, SuiteCollectionError):
            return f"scaffold verify: {excinfo.value}"
        return super().repr_failure(excinfo, *args, **kwargs)


class VerifyItem(pytest.Function):
    """One check on one target; a failure prints its findings (run, file:line, expected, found), no traceback."""

    check: Check | None = None
    #: 0-based line of the item's run in the summary (0 for the experiment): where skips point.
    line: int = 0
    #: the run the item checks (None for the experiment)
    run: RunRef | None = None

    def repr_failure(self, excinfo, *args, **kwargs):
        if isinstance(excinfo.value, CheckFailed):
            head = f"{self.name}: {self.check.description}" if self.check else self.name
            problems = excinfo.value.problems
            first = problems[0] if problems else None
            crash = (f"{first.field}: {first.message}" if first.field else first.message) if first else head
            more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
            # In the suite's own report each problem names its check (a grouped test's are tagged already).
            tag = self.check.id if self.check else self.name.partition("[")[0]
            tagged = [p if p.message.startswith("[") else _tagged(p, tag) for p in problems]
            return FailureRepr(head, crash.splitlines()[0] + more, excinfo.value.text(), tagged)
        return super().repr_failure(excinfo, *args, **kwargs)

    def reportinfo(self):
        return self.path, self.line, self.name


class _Crash:
    def __init__(self, message: str):
        self.path, self.lineno, self.message = "", 0, message


class FailureRepr:
    """A failure's text for the terminal, with a one-line `reprcrash` for the short summary and JUnit XML."""

    def __init__(self, head: str, first: str, text: str, problems: list[Problem]):
        self.text = f"{head}\n{text}"
        self.reprcrash = _Crash(first)
        self.problems = problems

    def toterminal(self, tw) -> None:
        for line in self.text.splitlines():
            tw.line(line)

    def __str__(self) -> str:
        return self.text


def _skip(name: str, reason: str):
    # Reported at the item's location (the run in the summary), not at this line of the plugin.
    return pytest.skip.Exception(f"{name}: {reason}", _use_item_location=True)


def _check_function(name: str, check: Check, subject) -> Callable[[], None]:
    def one_check() -> None:
        if check.requires_torchtune and not torchtune_importable():
            raise _skip(name, "torchtune is not importable here; run the suite where the runs train to include it")
        outcome = run_check(check, subject)
        if isinstance(outcome, Skipped):
            raise _skip(name, outcome.reason)
        if outcome:
            raise CheckFailed(outcome)

    one_check.__name__ = check.id
    one_check.__doc__ = check.func.__doc__
    return one_check


def torchtune_importable() -> bool:
    """Whether torchtune can be imported here (asked once per session: a search of sys.path)."""
    global _TORCHTUNE
    if _TORCHTUNE is None:
        _TORCHTUNE = importlib.util.find_spec("torchtune") is not None
    return _TORCHTUNE


_TORCHTUNE: bool | None = None


def _group_function(
    name: str,
    checks: list[Check],
    context: ExperimentContext,
    ref: RunRef,
    golden: tuple[str, ...],
    release: bool = False,
) -> Callable:
    """Every check of one run (and file) in one test: each failing check's problems are reported under its id; the
    test is skipped, with every reason, only when every check was, and checks skipped in a test that ran others are
    counted for the summary, with their reasons. With `release`, the run's files are forgotten when the test is
    done."""

    def run_checks(**fixtures) -> None:
        failed, skipped = [], []
        subject = context.run(ref)
        try:
            for c in checks:
                if c.requires_torchtune and not torchtune_importable():
                    skipped.append((c.id, "torchtune is not importable here"))
                    continue
                outcome = run_check(c, subject)
                if isinstance(outcome, Skipped):
                    skipped.append((c.id, outcome.reason))
                else:
                    failed += [_tagged(p, c.id) for p in outcome]
            if golden:
                from .snapshots import compare, same_as_golden

                for file in golden:
                    try:
                        if not same_as_golden(subject, file):  # syrupy reports the difference, or updates the copy
                            compare(subject, file, fixtures["request"].getfixturevalue("snapshot"))
                    except Blocked as e:
                        skipped.append((f"golden {file}", f"blocked: {e.reason}"))
                    except CheckFailed as e:
                        failed += [_tagged(p, "golden") for p in e.problems]
        finally:
            if release:
                context.release(ref)
        if not failed and skipped and len(skipped) == len(checks) + len(golden):
            raise _skip(name, "; ".join(f"{check}: {reason}" for check, reason in skipped))
        for check, reason in skipped:
            context.partial_skips[(check, reason)] += 1
        if failed:
            raise CheckFailed(failed)

    if golden:

        def with_snapshot(request) -> None:
            run_checks(request=request)  # syrupy's `snapshot` fixture is asked for when a golden copy differs

        func = with_snapshot
    else:
        func = run_checks  # type: ignore[assignment]
    func.__doc__ = f"The checks of {name}: {', '.join(c.id for c in checks)}" + (" and golden" if golden else "")
    return func


def _tagged(problem: Problem, check_id: str) -> Problem:
    """A problem with the id of the check that found it in front of its message."""
    return dataclasses.replace(problem, message=f"[{check_id}] {problem.message}")


def _golden_function(name: str, context: ExperimentContext, ref: RunRef, file: str) -> Callable:
    from .snapshots import compare

    def golden(snapshot) -> None:
        try:
            compare(context.run(ref), file, snapshot)
        except Blocked as e:
            raise _skip(name, f"blocked: {e.reason}; {e.by} reports it") from None

    golden.__doc__ = f"{file} is the same as its golden copy."
    return golden


def _arrays_golden_function(name: str, context: ExperimentContext) -> Callable:
    from ..checks.arrays import array_files
    from .snapshots import compare_array

    def golden(snapshot) -> None:
        try:
            files = array_files(context)
        except Blocked as e:
            raise _skip(name, f"blocked: {e.reason}; {e.by} reports it") from None
        if not files:
            raise _skip(name, "no job array scripts on disk (array_scripts reports any missing)")
        failed: list[Problem] = []
        for file in files:
            try:
                compare_array(context.expectations, file, snapshot)
            except CheckFailed as e:
                failed += e.problems
        if failed:
            raise CheckFailed(failed)

    golden.__doc__ = "Every job array script is the same as its golden copy."
    return golden


ITEM_IDS_KEY = pytest.StashKey[frozenset]()


def pytest_collection_finish(session: pytest.Session) -> None:
    context = session.config.stash.get(CONTEXT_KEY, None)
    if context is None:
        return
    # Work done for every run ahead of its test (bash -n in the background) covers the selected runs only.
    context.selected = {item.run.name for item in session.items if isinstance(item, VerifyItem) and item.run}
    session.config.stash[ITEM_IDS_KEY] = frozenset(i.nodeid for i in session.items if isinstance(i, VerifyItem))


def pytest_sessionfinish(session: pytest.Session) -> None:
    context = session.config.stash.get(CONTEXT_KEY, None)
    if context is not None:
        context.close()


def _skip_of(report) -> tuple[str, str]:
    """(check, reason) of a skipped suite item, the run's name in the reason as {run}."""
    name = report.nodeid.rpartition("::")[2]
    message = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    message = message.removeprefix("Skipped: ").removeprefix(f"{name}: ")
    check, _, target = name.partition("[")
    target = target.removesuffix("]")
    return check, message.replace(target, "{run}") if target else message


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config):
    """The suite's part of the report, last (where a CI log's tail shows it). The suite's failed and skipped tests
    are taken out of pytest's own sections (each test's failure, a line per skipped test) while they print, and
    reported here folded (scaffold.verify.report); pytest's counts on the last line are its own."""
    context = config.stash.get(CONTEXT_KEY, None)
    if context is None:
        return (yield)
    ours = config.stash.get(ITEM_IDS_KEY, frozenset())
    stats = terminalreporter.stats
    taken: dict[str, list] = {}
    if not config.getoption("full_report"):
        for kind, mine in (("failed", lambda r: isinstance(r.longrepr, FailureRepr)), ("skipped", lambda r: True)):
            reports = stats.get(kind, [])
            taken[kind] = [r for r in reports if r.nodeid in ours and mine(r)]
            stats[kind] = [r for r in reports if not (r.nodeid in ours and mine(r))]
    try:
        result = yield
    finally:
        for kind, reports in taken.items():
            stats[kind] = stats.get(kind, []) + reports
    _write_summary(terminalreporter, context, taken)
    return result


def _write_summary(terminalreporter, context: ExperimentContext, taken: dict[str, list]) -> None:
    from . import report

    exp = context.expectations
    write = terminalreporter.write_line
    terminalreporter.write_sep("-", "scaffold verify")
    write(
        f"experiment {exp.name}: {len(exp.runs)} runs ({len(exp.fine_tuned_runs())} fine-tuned), "
        f"{len(all_checks())} checks; golden files in {exp.golden_dir}"
    )
    loading = context.configs.describe()
    if loading:
        write(loading)
    skips: Counter = Counter(context.partial_skips)
    skips.update(_skip_of(r) for r in taken.get("skipped", []))
    line = report.skips_line(skips)
    if line:
        write(line)
    for path in context.removed_golden:
        write(f"removed stale golden file {path}")
    failed = taken.get("failed", [])
    if failed:
        problems = [p for r in failed for p in r.longrepr.problems]
        write(f"{len(problems)} failing check(s) in {len(failed)} test(s):")
        for text in report.failure_lines(problems) + report.failed_tests_lines([r.nodeid for r in failed]):
            write(text)
