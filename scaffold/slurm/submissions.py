"""The record of the jobs `scaffold submit` queued (`logs/submissions.json`): run -> its job id (ARRAYJOB_TASK for a
task of an array; None where sbatch may have queued it under an id we do not know), when, the hash of the script
submitted, and its earlier job ids. One JSON object, rewritten whole (atomically) after each queued job."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from ..output.writer import atomic_write


def read(path: Path) -> dict:
    """The record ({} where there is none yet); OSError or ValueError where it cannot be read, or is not a JSON
    object (never start afresh over it: every run would be queued a second time)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    return record


def add(
    record: dict,
    run: str,
    digest: str,
    previous: dict | None,
    job_id: str | None,
    array: str | None = None,
    sbatch_said: str | None = None,
) -> list[str]:
    """Record run `run`'s job id (its script's hash `digest`; `previous`, its entry from before); None, with what
    sbatch said, when it may be queued under an id we do not know. The run's earlier job ids."""
    history = list(previous.get("earlier_job_ids", [])) + [str(previous.get("job_id"))] if previous else []
    record[run] = {
        "job_id": job_id,
        **({"may_be_queued": sbatch_said} if sbatch_said is not None else {}),
        **({"array": array} if array else {}),
        "submitted": datetime.now(UTC).isoformat(timespec="seconds"),
        "script_sha256": digest,
        **({"earlier_job_ids": history} if history else {}),
    }
    return history


def write(path: Path, record: dict) -> None:
    """Write the record whole, atomically; OSError where it cannot be written."""
    atomic_write(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
