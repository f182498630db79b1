"""Asking a SLURM controller about batch scripts: is one reachable here, would it accept a script
(`sbatch --test-only`), and submitting one.

`--test-only` asks the controller to validate a script and estimate its start, creating no job. It rejects
malformed times, unknown partitions, impossible memory/CPU/GPU/node requests, unknown features, and (where the
site enforces partition limits) a time over the partition's limit. It accepts any account on a cluster without
accounting and a missing `--output` directory: those stay with the static checks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# A client whose controller is down retries for about 10 s before giving up.
QUERY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class TestOnly:
    """sbatch's answer to `--test-only`: accepted (with the estimated start) or rejected (with the reason)."""

    __test__ = False  # not a pytest test class

    ok: bool
    message: str


def _environ(env: Mapping[str, str] | None) -> dict[str, str]:
    return {**os.environ, **(env or {})}


def controller_unreachable(env: Mapping[str, str] | None = None) -> str | None:
    """Why no SLURM controller answers from here (no client tools, no configuration, controller down), or None
    when one does. Asked once per process and SLURM_CONF."""
    merged = _environ(env)
    return _unreachable(merged.get("SLURM_CONF", ""), merged.get("PATH", ""))


@cache
def _unreachable(slurm_conf: str, path: str) -> str | None:
    if shutil.which("sbatch", path=path) is None or shutil.which("sinfo", path=path) is None:
        return "sbatch/sinfo are not installed here"
    if slurm_conf and not Path(slurm_conf).is_file():
        return f"SLURM_CONF={slurm_conf} does not exist"
    env = {**os.environ, "PATH": path}
    if slurm_conf:
        env["SLURM_CONF"] = slurm_conf
    else:
        env.pop("SLURM_CONF", None)
    try:
        proc = subprocess.run(
            ["sinfo", "--noheader", "--format=%P"], env=env, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return f"sinfo did not answer within {QUERY_TIMEOUT_S:.0f} s"
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()
        where = f"SLURM_CONF={slurm_conf}" if slurm_conf else "SLURM_CONF unset"
        return f"sinfo failed ({where}): {last[-1] if last else f'exit {proc.returncode}'}"
    return None


def _sbatch(flag: str, script: Path | str, env: Mapping[str, str] | None) -> subprocess.CompletedProcess | str:
    """`sbatch FLAG SCRIPT` from the script's directory, or why it could not be run (one line)."""
    script = Path(script)
    try:
        return subprocess.run(
            ["sbatch", flag, str(script)],
            cwd=script.parent,
            env=_environ(env),
            capture_output=True,
            text=True,
            timeout=QUERY_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return f"sbatch {flag} did not answer within {QUERY_TIMEOUT_S:.0f} s"
    except OSError as e:
        return f"sbatch could not be run: {e.strerror}"


def _lines(text: str) -> str:
    return "; ".join(ln.strip().removeprefix("sbatch: ") for ln in text.splitlines() if ln.strip())


def test_only(script: Path | str, env: Mapping[str, str] | None = None) -> TestOnly:
    """`sbatch --test-only SCRIPT`: whether the controller would accept the script, and sbatch's message
    (`Job N to start at ... on nodes ...`, or why not). Runs in the script's directory; creates no job."""
    proc = _sbatch("--test-only", script, env)
    if isinstance(proc, str):
        return TestOnly(False, proc)
    return TestOnly(proc.returncode == 0, _lines(proc.stderr + proc.stdout) or f"exit {proc.returncode}")


def submit(script: Path | str, env: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """`sbatch --parsable SCRIPT` from the script's directory: (job id, "") or (None, why not)."""
    proc = _sbatch("--parsable", script, env)
    if isinstance(proc, str):
        return None, proc
    job_id = proc.stdout.strip().split(";")[0]
    if proc.returncode != 0 or not job_id.isdigit():
        return None, _lines(proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}")
    return job_id, ""
