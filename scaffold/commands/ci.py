"""`scaffold init-ci`: a GitHub Actions workflow for an experiment repository that installs scaffold-torchtune and
runs the verification suite on pull requests, and the golden copies of the generated files the suite compares
with. Like generated runs, an existing workflow edited since is never overwritten silently.

The first-time sequence is `scaffold generate`, `scaffold init-ci`, commit: init-ci writes each golden copy that is
missing from the file `generate` wrote (never one edited since, never over an existing copy); accepting a later,
intended change is `scaffold verify EXPERIMENT --snapshot-update`.

`python -m scaffold.commands.ci site-config DIR` is the workflow's own step: it saves the site config kept in the
secret under the name of the form it is in (scaffold.local.yaml or claude.local.md) and prints the path.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

import jinja2

from .. import __version__
from ..engine.golden import ACCEPT_COMMAND as ACCEPT
from ..engine.golden import local_dir_named, machine_independent
from ..errors import InputError, Problem, display_path
from ..inputs import localconfig
from ..inputs import summary as summary_mod
from ..inputs.summary import summary_path
from ..inputs.yamlemit import yaml_scalar
from ..layout import ARRAY_DIR, TRAINING_FILES
from ..output.writer import Manifest, atomic_write, sha256
from ..resources import data_dir
from ..slurm.arrays import is_array_file
from .reply import Reply, errors, print_reply

WORKFLOW = Path(".github") / "workflows" / "scaffold-verify.yml"
PYTHON = "3.11"
DISTRIBUTION = "scaffold-torchtune"
SECRET_VARIABLE = "LOCAL_CONFIG"  # the workflow step's environment variable holding the secret's text
PACKAGE_FIX = (
    "give the workflow an install spec a CI runner can reach: --package SPEC, e.g. --package "
    "'scaffold-torchtune @ git+https://github.com/OWNER/scaffold-torchtune@COMMIT' or --package "
    "'scaffold-torchtune==VERSION' (a version on the package index)"
)


@dataclass
class InitResult:
    path: Path
    status: str  # written | unchanged | kept (exists with other content; --force to replace)
    golden_dir: Path | None = None
    golden_written: list[str] = field(default_factory=list)
    golden_present: int = 0
    problems: list[Problem] = field(default_factory=list)  # generated files not taken as golden copies, and why

    @property
    def exit_status(self) -> int:
        """1: an existing workflow differs (kept), or a generated file was not taken as its golden copy; else 0."""
        return 1 if self.status == "kept" or self.problems else 0


class NotInstallable(Exception):
    """The tool that runs here cannot be installed from where it came from by a CI runner; says why."""


def repository_root(start: Path) -> Path:
    """The nearest directory upward holding `.git`, else `start` itself."""
    start = start.resolve()
    for d in (start, *start.parents):
        if (d / ".git").exists():
            return d
    return start


def installed_spec(dist: metadata.Distribution | None = None) -> str:
    """The pip requirement that installs, on a CI runner, the scaffold-torchtune installed here: from what pip
    recorded for it (PEP 610 `direct_url.json`): a VCS URL at its commit, an archive URL; with no record it came
    from a package index, which holds that version. NotInstallable for a local path, an editable install or a
    source tree that is not installed: a runner cannot reach those."""
    if dist is None:
        try:
            dist = metadata.distribution(DISTRIBUTION)
        except metadata.PackageNotFoundError:
            raise NotInstallable(
                f"{DISTRIBUTION} is not installed as a package here (it runs from a source tree)"
            ) from None
    raw = dist.read_text("direct_url.json")
    if raw is None:
        return f"{DISTRIBUTION}=={dist.version}"
    try:
        record = json.loads(raw)
        url = record["url"]
    except (ValueError, TypeError, KeyError):
        raise NotInstallable(
            f"pip's record of where {DISTRIBUTION} came from (direct_url.json) is unreadable"
        ) from None
    if urlsplit(url).scheme in ("", "file"):
        what = "an editable install of" if record.get("dir_info", {}).get("editable") else "the local path"
        raise NotInstallable(
            f"{DISTRIBUTION} {dist.version} is installed from {what} {url}, which a CI runner cannot reach"
        )
    subdirectory = f"#subdirectory={record['subdirectory']}" if record.get("subdirectory") else ""
    vcs = record.get("vcs_info")
    if isinstance(vcs, dict) and vcs.get("vcs") and vcs.get("commit_id"):
        return f"{DISTRIBUTION} @ {vcs['vcs']}+{url}@{vcs['commit_id']}{subdirectory}"
    if "archive_info" in record:
        return f"{DISTRIBUTION} @ {url}{subdirectory}"
    raise NotInstallable(f"{DISTRIBUTION} is installed from {url} in a way pip's record does not let CI repeat")


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
        secret_variable=SECRET_VARIABLE,
        accept=ACCEPT.format(experiment=shlex.quote(experiment))
        + (f" --golden-dir {shlex.quote(golden)}" if golden else ""),
    )


def check_package(spec: str) -> str:
    """A --package SPEC as the workflow's pip command gets it; InputError for one that cannot be one requirement."""
    spec = spec.strip()
    if not spec or "\n" in spec or "\r" in spec or spec.startswith("-"):
        raise InputError(
            [Problem(f"--package {spec!r} is not one pip requirement", field="--package", fix=PACKAGE_FIX)]
        )
    return spec


def init_ci(
    experiment: Path,
    *,
    package: str | None = None,
    golden_dir: Path | None = None,
    force: bool = False,
) -> InitResult:
    """Write `.github/workflows/scaffold-verify.yml` at the root of the repository holding the experiment, and the
    golden copies that are missing. InputError when no install spec is given and none can be told (nothing is
    written then), or the summary cannot be read."""
    exp_dir = summary_path(Path(experiment)).resolve().parent
    root = repository_root(exp_dir)
    rel = exp_dir.relative_to(root).as_posix() or "."
    golden = Path(golden_dir).resolve().relative_to(root).as_posix() if golden_dir else None
    if package is None:
        try:
            package = installed_spec()
        except NotInstallable as e:
            raise InputError(
                [Problem(f"cannot tell how CI installs scaffold-torchtune: {e}", fix=PACKAGE_FIX)]
            ) from None
    text = render_workflow(rel, package=check_package(package), golden=golden)
    summary = summary_mod.load(summary_path(exp_dir))  # InputError when it does not load: nothing written
    golden_root = Path(golden_dir).resolve() if golden_dir else exp_dir / "golden"
    result = InitResult(root / WORKFLOW, "written", golden_root)
    _write_missing_golden(summary, golden_root, result)
    path = result.path
    if path.is_file():
        old = path.read_text(encoding="utf-8")
        if old == text:
            result.status = "unchanged"
            return result
        if not force:
            result.status = "kept"
            return result
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)
    return result


def golden_subjects(manifest: Manifest) -> list[str]:
    """The generated files that have golden copies, as manifest keys (`RUN/FILE`, `arrays/FILE`): the golden copy of
    each is `{golden}/{key}` (scaffold.verify.snapshots)."""
    out = []
    for key in manifest.files:
        parts = key.split("/")
        if len(parts) == 2 and (parts[1] in TRAINING_FILES and parts[0] != ARRAY_DIR or
                                parts[0] == ARRAY_DIR and is_array_file(parts[1])):  # fmt: skip
            out.append(key)
    return sorted(out)


def _write_missing_golden(summary: summary_mod.Summary, golden_root: Path, result: InitResult) -> None:
    """Each missing golden copy, from the generated file when it is byte for byte what `generate` wrote (a file
    edited since is not taken: it is reported, with the fix)."""
    local_dir = summary.local_dir
    manifest = Manifest(local_dir)
    named = local_dir_named(summary)
    for key in golden_subjects(manifest):
        target = golden_root / key
        if target.is_file():
            result.golden_present += 1
            continue
        source = local_dir / key
        try:
            data = source.read_bytes()
        except OSError:
            continue  # a run removed since: not this command's concern (the suite's run_files reports a missing file)
        if sha256(data) != manifest.files[key]:
            result.problems.append(
                Problem(
                    "edited since `scaffold generate` wrote it: not taken as its golden copy",
                    display_path(source),
                    fix=f"regenerate it (`scaffold generate --force`), or review it and accept it with "
                    f"`{ACCEPT.format(experiment=shlex.quote(display_path(local_dir)))}`",
                )
            )
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, machine_independent(data.decode("utf-8", errors="replace"), named))
        result.golden_written.append(key)


def write_site_config(directory: Path, text: str) -> Path:
    """The site config kept in the CI secret, saved in `directory` under the name of its form (0600: a secret)."""
    path = Path(directory) / localconfig.file_name_for(text)
    atomic_write(path, text if text.endswith("\n") else text + "\n", mode=0o600)
    return path


def reply(result: InitResult, experiment: Path) -> Reply:
    """What init-ci prints: the workflow's status (an existing one kept is an error) and the golden copies written;
    the golden copies not taken, on stderr."""
    if result.status == "kept":
        out, err = "", f"error: {result.path} exists with other content; kept (fix: --force to replace it)\n"
    else:
        out, err = f"{result.path}: {result.status}\n", ""
    out += (
        f"golden copies in {display_path(result.golden_dir)}: {len(result.golden_written)} written, "
        f"{result.golden_present} already there (accept an intended change later with "
        f"`{ACCEPT.format(experiment=display_path(experiment))}`)\n"
    )
    return Reply(result.exit_status, out, err + errors(result.problems))


def site_config(args: list[str]) -> Reply:
    """`site-config DIR`: the workflow's site-config step (the text in $LOCAL_CONFIG); the path written."""
    if len(args) != 2 or args[0] != "site-config":
        return Reply(2, err="usage: python -m scaffold.commands.ci site-config DIR\n")
    text = os.environ.get(SECRET_VARIABLE, "")
    if not text.strip():
        return Reply(2, err=f"error: ${SECRET_VARIABLE} is empty (fix: set the repository secret SCAFFOLD_LOCAL_CONFIG "
                     "to the text of your scaffold.local.yaml or claude.local.md)\n")  # fmt: skip
    try:
        return Reply(0, f"{write_site_config(Path(args[1]), text)}\n")
    except OSError as e:
        return Reply(
            2, err=f"error: cannot write the site config into {args[1]}: {e.strerror} (fix: a writable directory)\n"
        )


def main(argv: list[str] | None = None) -> int:
    """`python -m scaffold.commands.ci site-config DIR` (see `site_config`)."""
    return print_reply(site_config(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
