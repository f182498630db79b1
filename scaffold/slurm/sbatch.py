"""Asking a SLURM controller about batch scripts: is one reachable here, would it accept a script
(`sbatch --test-only`), and submitting one.

`--test-only` asks the controller to validate a script and estimate its start, creating no job. It rejects
malformed times, unknown partitions, impossible memory/CPU/GPU/node requests, unknown features, and (where the
site enforces partition limits) a time over the partition's limit. It accepts any account on a cluster without
accounting and a missing `--output` directory: those stay with the static checks.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# A client whose controller is down retries for about 10 s before giving up.
QUERY_TIMEOUT_S = 30.0
# How every SLURM client's output is read (sbatch, sinfo, scontrol): as UTF-8, any other byte replaced, so whatever
# a misbehaving client or wrapper prints (Latin-1 messages, binary junk) is reported rather than a crash.
CLIENT_TEXT = {"encoding": "utf-8", "errors": "replace"}


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
            ["sinfo", "--noheader", "--format=%P"], env=env, capture_output=True, **CLIENT_TEXT, timeout=QUERY_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return f"sinfo did not answer within {QUERY_TIMEOUT_S:.0f} s"
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()
        where = f"SLURM_CONF={slurm_conf}" if slurm_conf else "SLURM_CONF unset"
        return f"sinfo failed ({where}): {last[-1] if last else f'exit {proc.returncode}'}"
    return None


def _sbatch(
    flag: str, script: Path | str, env: Mapping[str, str] | None, options: Sequence[str] = ()
) -> subprocess.CompletedProcess | str:
    """`sbatch FLAG [OPTIONS] SCRIPT` from the script's directory, or why it could not be run (one line)."""
    script = Path(script)
    try:
        return subprocess.run(
            ["sbatch", flag, *options, str(script)],
            cwd=script.parent,
            env=_environ(env),
            capture_output=True,
            **CLIENT_TEXT,
            timeout=QUERY_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return f"sbatch {flag} did not answer within {QUERY_TIMEOUT_S:.0f} s"
    except OSError as e:
        return f"sbatch could not be run: {e.strerror}"


def _lines(text: str) -> str:
    return "; ".join(ln.strip().removeprefix("sbatch: ") for ln in text.splitlines() if ln.strip())


def test_only(script: Path | str, env: Mapping[str, str] | None = None, options: Sequence[str] = ()) -> TestOnly:
    """`sbatch --test-only [OPTIONS] SCRIPT`: whether the controller would accept the script, and sbatch's message
    (`Job N to start at ... on nodes ...`, or why not). Runs in the script's directory; creates no job."""
    proc = _sbatch("--test-only", script, env, options)
    if isinstance(proc, str):
        return TestOnly(False, proc)
    return TestOnly(proc.returncode == 0, _lines(proc.stderr + proc.stdout) or f"exit {proc.returncode}")


# What sbatch prints when the controller refuses a job for a limit rather than for the script. On "temporarily
# unable to accept job" (the controller's MaxJobCount, or a busy controller) and "job queue full", sbatch sleeps and
# retries for up to two minutes on its own and has no option to stop that; the per-user and per-account submit
# limits (QOS/association MaxSubmitJobs...) are refused at once as an accounting policy violation.
LIMIT = re.compile(
    r"temporarily unable to accept job|job queue full|MaxSubmitJob|MaxJobCount|job submit limit",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Submitted:
    """What `sbatch --parsable` did: the job id, or why not; `limit` when the cluster refused it for a limit
    (the script may be fine: later submissions would be refused too)."""

    job_id: str | None
    why: str = ""
    limit: bool = False
    uncertain: bool = False  # sbatch may have queued a job whose id we do not know (see `submit`)
    hung: bool = False  # sbatch did not answer in time (uncertain too): the next would likely hang as well


def submit(
    script: Path | str,
    env: Mapping[str, str] | None = None,
    options: Sequence[str] = (),
    args: Sequence[str] = (),
) -> Submitted:
    """`sbatch --parsable [OPTIONS] SCRIPT [ARGS]` from the script's directory. sbatch's stderr is read as it comes:
    at the first sign of a limit sbatch is stopped (before it sleeps and retries, so no job is created) rather than
    left to block for minutes."""
    script = Path(script)
    try:
        proc = subprocess.Popen(
            ["sbatch", "--parsable", *options, str(script), *args],
            cwd=script.parent,
            env=_environ(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **CLIENT_TEXT,
            start_new_session=True,  # its own process group: stopped whole, wrappers included
        )
    except OSError as e:
        return Submitted(None, f"sbatch could not be run: {e.strerror}")
    timed_out = threading.Event()

    def stop() -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # gone already
            os.killpg(proc.pid, signal.SIGKILL)

    def expire() -> None:
        timed_out.set()
        stop()

    timer = threading.Timer(QUERY_TIMEOUT_S, expire)
    timer.start()
    err: list[str] = []
    limit = False
    try:
        assert proc.stderr is not None and proc.stdout is not None
        for line in proc.stderr:
            err.append(line)
            if LIMIT.search(line):
                limit = True
                stop()
                break
        out = proc.stdout.read()
        returncode = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:  # interrupted (Ctrl-C, SIGTERM): stop sbatch too
            stop()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    stderr = "".join(err)
    if limit:
        return Submitted(None, re.sub(r",? sleeping and retrying\.?$", "", _lines(stderr)), limit=True)
    if timed_out.is_set():
        return Submitted(
            None, f"sbatch --parsable did not answer within {QUERY_TIMEOUT_S:.0f} s", uncertain=True, hung=True
        )
    if returncode != 0:
        return Submitted(None, _lines(stderr.strip() or out.strip() or f"exit {returncode}"))
    job_id = parse_job_id(out)
    if job_id is None:
        # Exit 0: the controller may well have queued the job. Never taken for "refused" (the next submit would
        # queue it a second time).
        printed = (out.strip() or "nothing")[:200]
        return Submitted(None, f"sbatch exited 0 but printed no job id that can be read ({printed!r})", uncertain=True)
    return Submitted(job_id)


_PARSABLE = re.compile(r"([0-9]+)(?:;[A-Za-z0-9_.-]+)?")


def parse_job_id(out: str) -> str | None:
    """The job id of `sbatch --parsable`'s output: one line, `ID` or `ID;CLUSTER`; None for anything else (two
    ids, words, nothing)."""
    m = _PARSABLE.fullmatch(out.strip())
    return m.group(1) if m else None
