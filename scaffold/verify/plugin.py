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
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..configread import EVERY, PER_SHAPE, ConfigLoader
from ..engine import EXPERIMENT, RUN, Check, Skipped, all_checks, run_check
from ..engine.context import ExperimentContext
from ..engine.expectations import CollectionError, Expectations, Options, RunRef, item_id
from ..engine.findings import CheckFailed
from ..errors import Problem
from ..inputs.summary import summary_path
from ..layout import FINE_TUNED

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
        help="load every finetune.yaml with OmegaConf itself (`every`), or parse each with libyaml "
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


@dataclass(frozen=True)
class Target:
    """One check on one target: the experiment (`ref` None) or a run, and for a check of each of its files
    (`Check.files`: the golden comparisons) one of those files."""

    check: Check
    ref: RunRef | None
    file: str | None = None

    def test_id(self, experiment: str) -> str:
        """The id of this pair's own test: check[EXPERIMENT], check[RUN], golden[RUN-FILE]."""
        target = self.ref.name if self.ref else experiment
        return item_id(self.check.id, f"{target}-{self.file}" if self.file else target)

    @property
    def label(self) -> str:
        """How a test of several pairs names this one in a skip: the check, and the file it compares."""
        return f"{self.check.id} {self.file}" if self.file else self.check.id


def targets(check: Check, expectations: Expectations, ref: RunRef | None = None) -> list[Target]:
    """The pairs of one check: on the experiment, every run or every fine-tuned run (or only `ref`), and on each
    of its files."""
    if check.scope == EXPERIMENT:
        refs: list[RunRef | None] = [None]
    elif ref is not None:
        refs = [ref]
    else:
        refs = list(expectations.fine_tuned_runs() if check.scope == FINE_TUNED else expectations.runs)
    return [Target(check, r, file) for r in refs for file in check.files or (None,)]


def pairs(expectations: Expectations, mode: str) -> list[Target]:
    """Every (check, target) pair, in the order of their tests: check by check (`--items check`); or the experiment's
    pairs, the runs' run by run, then the experiment's that read every run's files (`--items run`, where a run's
    files are released once its test is done, so that each is read once) and the golden comparisons."""
    if mode == "check":
        return [t for c in all_checks() for t in targets(c, expectations)]
    fine_tuned = {ref.name for ref in expectations.fine_tuned_runs()}
    experiment = [c for c in all_checks() if c.scope == EXPERIMENT]
    late = [c for c in experiment if c.snapshot or (mode == "run" and c.reads_runs)]
    out = [Target(c, None) for c in experiment if c not in late]
    for ref in expectations.runs:
        for c in all_checks():
            if c.scope == RUN or (c.scope == FINE_TUNED and ref.name in fine_tuned):
                out += targets(c, expectations, ref)
    return out + [t for c in late for t in targets(c, expectations)]


def tests(expectations: Expectations, mode: str) -> list[tuple[str, list[Target]]]:
    """The pairs grouped into tests, by name, in order: a pair of the experiment is a test of its own, and so is
    each pair with `--items check`; a run's pairs are grouped by run (`run`: run[RUN]) or by the file they read
    (`file`: finetune_yaml[RUN], a golden comparison with the checks of its file, checks[RUN] for the checks of no
    single file)."""
    groups: dict[tuple, tuple[str, list[Target]]] = {}
    for i, t in enumerate(pairs(expectations, mode)):
        if mode == "check" or t.ref is None:
            key: tuple = (i,)
            name = t.test_id(expectations.name)
        elif mode == "run":
            key, name = (id(t.ref),), item_id("run", t.ref.name)
        else:
            file = t.file or t.check.file or "checks"
            # pytest shows a "." in a test name as "::": name the test finetune_yaml[RUN], not finetune.yaml
            key, name = (id(t.ref), file), item_id(file.replace(".", "_").replace("/", "_"), t.ref.name)
        groups.setdefault(key, (name, []))[1].append(t)
    return list(groups.values())


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
        context = ExperimentContext(expectations, ConfigLoader(omegaconf))
        self.config.stash[CONTEXT_KEY] = context
        mode = self.config.getoption("items", "auto")
        if mode == "auto":
            mode = "run" if large else "check"
        # A run's files are forgotten once its test is done (memory does not grow with the sweep).
        context.release_runs = mode == "run"
        shared: dict[bool, object] = {}  # the fixture info of the tests, by whether they compare golden copies
        items = []
        for name, group in tests(expectations, mode):
            alone = mode == "check" or group[0].ref is None
            func = _check_function(name, group[0], context) if alone else _group_function(name, group, context)
            golden = any(t.check.snapshot for t in group)
            item = VerifyItem.from_parent(self, name=name, callobj=func, fixtureinfo=shared.get(golden))
            shared.setdefault(golden, item._fixtureinfo)
            item.check = group[0].check if alone else None
            ref = group[0].ref
            if ref is not None:
                item.line = max(ref.line - 1, 0)  # pytest reports line + 1
                item.run = ref
            items.append(item)
        counts = Counter(item.nodeid for item in items)
        duplicates = sorted(n.rpartition("::")[2] for n, count in counts.items() if count > 1)
        if duplicates:
            raise SuiteCollectionError(f"test ids are not unique: {', '.join(duplicates)} (fix: rename the runs)")
        return items

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
            # a golden comparison's failure is its diff, headed by the test id alone
            described = self.check is not None and not self.check.snapshot
            head = f"{self.name}: {self.check.description}" if described else self.name
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


def _check_function(name: str, target: Target, context: ExperimentContext) -> Callable[..., None]:
    """The test of one pair: skipped with the reason when the check does not run here."""
    check = target.check
    subject = context if target.ref is None else context.run(target.ref)

    def one_check(request=None) -> None:
        if check.requires_torchtune and not torchtune_importable():
            raise _skip(name, "torchtune is not importable here; run the suite where the runs train to include it")
        snapshot = _snapshot(request, eager=True) if check.snapshot else None
        outcome = run_check(check, subject, target.file, snapshot)
        if isinstance(outcome, Skipped):
            raise _skip(name, outcome.reason)
        if outcome:
            raise CheckFailed(outcome)

    func = _with_request(one_check) if check.snapshot else lambda: one_check()
    func.__name__ = check.id
    func.__doc__ = check.func.__doc__
    return func


def _snapshot(request, eager: bool):
    from ..engine.snapshots import Snapshot  # syrupy: imported when a golden comparison runs

    return Snapshot(request, eager)


def _with_request(run: Callable[..., None]) -> Callable[..., None]:
    """A test that asks pytest for its request: syrupy's `snapshot` fixture is asked for through it when a golden
    comparison needs it."""

    def with_request(request) -> None:
        run(request)

    return with_request


def torchtune_importable() -> bool:
    """Whether torchtune can be imported here (asked once per session: a search of sys.path)."""
    global _TORCHTUNE
    if _TORCHTUNE is None:
        _TORCHTUNE = importlib.util.find_spec("torchtune") is not None
    return _TORCHTUNE


_TORCHTUNE: bool | None = None


def _group_function(name: str, group: list[Target], context: ExperimentContext) -> Callable[..., None]:
    """Every check of one run (and file) in one test: each failing check's problems are reported under its id; the
    test is skipped, with every reason, only when every check was, and checks skipped in a test that ran others are
    counted for the summary, with their reasons. With `--items run` (context.release_runs), the run's files are
    forgotten when the test is done."""
    ref = group[0].ref
    assert ref is not None
    golden = any(t.check.snapshot for t in group)

    def run_checks(request=None) -> None:
        failed, skipped = [], []
        subject = context.run(ref)
        snapshot = _snapshot(request, eager=False) if golden else None  # asks for syrupy's fixture if a copy differs
        try:
            for t in group:
                if t.check.requires_torchtune and not torchtune_importable():
                    skipped.append((t.label, "torchtune is not importable here"))
                    continue
                outcome = run_check(t.check, subject, t.file, snapshot)
                if isinstance(outcome, Skipped):
                    # a golden comparison is blocked by its file alone (its own checks, in this test, say why)
                    blocked = t.file is not None and outcome.blocked is not None
                    skipped.append((t.label, f"blocked: {outcome.blocked}" if blocked else outcome.reason))
                else:
                    failed += [_tagged(p, t.check.id) for p in outcome]
        finally:
            if context.release_runs:
                context.release(ref)
        if not failed and skipped and len(skipped) == len(group):
            raise _skip(name, "; ".join(f"{check}: {reason}" for check, reason in skipped))
        for check, reason in skipped:
            context.partial_skips[(check, reason)] += 1
        if failed:
            raise CheckFailed(failed)

    func = _with_request(run_checks) if golden else lambda: run_checks()
    checks = [t.check.id for t in group if not t.check.snapshot]
    func.__doc__ = f"The checks of {name}: {', '.join(checks)}" + (" and golden" if golden else "")
    return func


def _tagged(problem: Problem, check_id: str) -> Problem:
    """A problem with the id of the check that found it in front of its message."""
    return dataclasses.replace(problem, message=f"[{check_id}] {problem.message}")


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
    reported here folded (scaffold.verify.folded_report); pytest's counts on the last line are its own."""
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
    from . import folded_report as report

    exp = context.expectations
    write = terminalreporter.write_line
    terminalreporter.write_sep("-", "scaffold verify")
    write(
        f"experiment {exp.name}: {len(exp.runs)} runs ({len(exp.fine_tuned_runs())} fine-tuned), "
        f"{sum(not c.snapshot for c in all_checks())} checks; golden files in {exp.golden_dir}"
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
