"""`scaffold init-ci`: a GitHub Actions workflow for an experiment repository that installs scaffold-torchtune and
runs the verification suite on pull requests. Like generated runs, an existing workflow edited since is never
overwritten silently."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import jinja2

from .. import __version__
from ..inputs.summary import summary_path
from ..inputs.yamlio import yaml_scalar
from ..resources import data_dir

WORKFLOW = Path(".github") / "workflows" / "scaffold-verify.yml"
PYTHON = "3.11"


@dataclass
class InitResult:
    path: Path
    status: str  # written | unchanged | kept (exists with other content; --force to replace)


def repository_root(start: Path) -> Path:
    """The nearest directory upward holding `.git`, else `start` itself."""
    start = start.resolve()
    for d in (start, *start.parents):
        if (d / ".git").exists():
            return d
    return start


def render_workflow(experiment: str, *, package: str, golden: str | None = None, python: str = PYTHON) -> str:
    """The workflow text; `experiment` and `golden` are paths relative to the repository root."""
    # Other delimiters than jinja's: the workflow's own `${{ ... }}` expressions pass through untouched.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        variable_start_string="[[",
        variable_end_string="]]",
        block_start_string="[%",
        block_end_string="%]",
        comment_start_string="[#",
        comment_end_string="#]",
    )
    env.filters["yaml"] = yaml_scalar
    env.filters["sh"] = lambda v: shlex.quote(str(v))
    return env.get_template("ci-workflow.yml.j2").render(
        version=__version__,
        experiment=experiment,
        golden=golden or f"{experiment.rstrip('/')}/golden/".removeprefix("./"),
        golden_arg=golden,
        package=package,
        python=python,
    )


def init_ci(
    experiment: Path,
    *,
    package: str | None = None,
    golden_dir: Path | None = None,
    force: bool = False,
) -> InitResult:
    """Write `.github/workflows/scaffold-verify.yml` at the root of the repository holding the experiment."""
    exp_dir = summary_path(Path(experiment)).resolve().parent
    root = repository_root(exp_dir)
    rel = exp_dir.relative_to(root).as_posix() or "."
    golden = Path(golden_dir).resolve().relative_to(root).as_posix() if golden_dir else None
    text = render_workflow(rel, package=package or f"scaffold-torchtune=={__version__}", golden=golden)
    path = root / WORKFLOW
    if path.is_file():
        old = path.read_text(encoding="utf-8")
        if old == text:
            return InitResult(path, "unchanged")
        if not force:
            return InitResult(path, "kept")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return InitResult(path, "written")
