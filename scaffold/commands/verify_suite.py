"""Starting the suite from the command line (`scaffold verify DIR [pytest args]`): the pytest arguments, and
pytest itself, in this process."""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

from .reply import Reply

PLUGIN = "scaffold.verify.plugin"
REWRITE_WARNING = "pytest.PytestAssertRewriteWarning"


def plugin_autoloads() -> bool:
    """Whether pytest loads the suite's plugin by itself (the package is installed, autoloading is on)."""
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    return any(ep.value == PLUGIN for ep in entry_points(group="pytest11"))


def pytest_args(
    experiment: Path,
    *,
    local_config: Path | None = None,
    check_paths: bool = True,
    golden_dir: Path | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The pytest command line that runs the suite over one experiment."""
    args: list[str] = [] if plugin_autoloads() else ["-p", PLUGIN, "-p", "syrupy"]
    # The checks raise CheckFailed and never `assert`: rewriting the asserts of every module that installed
    # pytest plugins import (seconds where bytecode is not cached, e.g. PYTHONDONTWRITEBYTECODE) buys nothing.
    # Test files of one's own given as extra arguments can ask for it again with --assert=rewrite.
    args.append("--assert=plain")
    # This process imported scaffold before pytest could mark it for assertion rewriting; say nothing about it.
    args += ["-W", f"ignore:Module already imported so cannot be rewritten:{REWRITE_WARNING}"]
    args += ["--experiment", str(experiment)]
    if local_config is not None:
        args += ["--local-config", str(local_config)]
    if not check_paths:
        args.append("--no-check-paths")
    if golden_dir is not None:
        args += ["--golden-dir", str(golden_dir)]
    return args + list(extra)


def run(experiment: Path, **kwargs) -> int:
    """Run the suite; the exit status is pytest's (0 all passed, 1 some check failed, 2 collection error...)."""
    import pytest

    return int(pytest.main(pytest_args(experiment, **kwargs)))


def reply(status: int) -> Reply:
    """What verify prints once pytest is done: nothing more (pytest printed its report); pytest's exit status."""
    return Reply(status)
