"""The experiment's layout: the names of its files and directories, and finding its summary and local (site)
config. Every module takes these names from here."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .errors import InputError, Problem, display_path

SUMMARY_NAME = "experiment_summary.yaml"
NAMES = ("scaffold.local.yaml", "claude.local.md")
ENV_VAR = "SCAFFOLD_LOCAL_CONFIG"
# The types of run the summary lists (runs[].type, schemas/experiment_summary.schema.json): only a fine-tuned run
# has a run directory with the files below.
FINE_TUNED = "fine-tuned"
CONTROL = "control"
EVAL_ONLY = "eval-only"
# A fine-tuned run's files.
SETUP_FILE = "setup_finetune.yaml"
FINETUNE_FILE = "finetune.yaml"
SLURM_FILE = "finetune.slurm"
TRAINING_FILES = (SETUP_FILE, FINETUNE_FILE, SLURM_FILE)
# A fine-tuned run's output_dir, where --output points (kept in git: scaffold.output.writer.keep_in_git).
ARTIFACTS_DIR = "artifacts"
# The experiment's job array scripts (scaffold.slurm.arrays).
ARRAY_DIR = "arrays"
# The tool's log (scaffold.output.runlog), and the experiment's lock beside it.
LOG_DIR = "logs"
LOG_NAME = "scaffold-torchtune.log"
LOCK_NAME = ".scaffold.lock"  # one writer per experiment (scaffold.output.lock)
# Under the log directory: the job ids `scaffold submit` queued (scaffold.commands.submit).
SUBMISSIONS = "submissions.json"
# Under the log directory: the texts of each run that failed its self-check (logs/rejected/RUN/), never written.
REJECTED_DIR = "rejected"
# Models in no registry, as generate recognised them from their config.json (scaffold.inputs.modelrecognition):
# read where the model directory is not looked at (--no-check-paths, CI), so a run that generated is never "unknown".
RECOGNISED_MODELS = "recognised_models.yaml"
# Hashes of the files this tool generated (scaffold.output.writer).
MANIFEST = ".scaffold-manifest.json"
# ...and the journal beside it, to which each run is appended as it is written (scaffold.output.writer.Manifest).
JOURNAL = ".scaffold-manifest.journal"


def summary_path(target: Path) -> Path:
    """EXPERIMENT may be the directory holding experiment_summary.yaml or the summary file itself."""
    target = Path(target)
    if target.is_dir():
        return target / SUMMARY_NAME
    return target


def find(experiment_dir: Path, explicit: Path | None = None) -> Path:
    """The local config's path (see `locate`)."""
    return locate(experiment_dir, explicit)[0]


def locate(experiment_dir: Path, explicit: Path | None = None) -> tuple[Path, str]:
    """(the local config, how it was found): --local-config, else $SCAFFOLD_LOCAL_CONFIG, else the nearest one upward
    from the experiment, else the nearest one upward from the current directory (the original's layout: its
    claude.local.md at the root of the repository the commands are run from, the experiments on scratch)."""
    if explicit is not None:
        return Path(explicit), "--local-config"
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env), f"${ENV_VAR}"
    starts = [(experiment_dir.resolve(), "the experiment's directory or above")]
    with contextlib.suppress(OSError):  # (the current directory may have been removed)
        starts.append((Path.cwd(), "the current directory or above"))
    for start, how in starts:
        for d in (start, *start.parents):
            for name in NAMES:
                if (d / name).is_file():
                    return d / name, f"found in {how}"
    raise InputError(
        [
            Problem(
                "no local config found (searched upward from the experiment and from the current directory for "
                + " or ".join(NAMES)
                + f", and ${ENV_VAR} is unset)",
                display_path(experiment_dir),
                fix="create scaffold.local.yaml beside the experiment (or claude.local.md where you run the "
                "commands) or pass --local-config PATH",
            )
        ]
    )
