"""One writer per experiment at a time: an advisory lock on `{experiment}/logs/.scaffold.lock`.

A second `scaffold generate` on the same experiment (an orchestrator may start one beside another) waits for
the first, saying so on stderr, and gives up with a clear message after a timeout. `scaffold setup-finetune` holds it
from reading the run to writing it, so it and `generate` exclude each other too. The lock is released by the kernel
when its holder exits, also when it is killed, so a stale lock file never blocks anyone.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from ..layout import LOCK_NAME, LOG_DIR

DEFAULT_TIMEOUT = 300.0
# The locks this process holds (flock excludes two descriptors of one process too): taken again, they are re-entered.
_HELD: set[str] = set()


class LockTimeout(Exception):
    """Another process held the experiment's lock for longer than we were willing to wait."""


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096) or b"{}")
        return f"pid {info.get('pid')} ({info.get('command')}, since {info.get('since')})"
    except (OSError, ValueError):
        return "another process"


@contextmanager
def experiment_lock(
    directory: Path, command: str, timeout: float = DEFAULT_TIMEOUT, wait: bool = True
) -> Iterator[None]:
    """Hold the experiment's lock for the duration of the block (waiting up to `timeout` seconds for it; with
    `wait=False`, LockTimeout at once and silently when another process holds it)."""
    path = Path(directory) / LOG_DIR / LOCK_NAME  # beside the log, which every invocation changes anyway
    key = os.path.realpath(path)
    if key in _HELD:  # this process holds it already (setup-finetune around the generate it runs)
        yield
        return
    path.parent.mkdir(exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    raise LockTimeout(f"{path} is held by {_holder(fd)}") from None
                if not told:
                    print(f"scaffold: waiting for {path}, held by {_holder(fd)}", file=sys.stderr)
                    told = True
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"{path} is held by {_holder(fd)}: another scaffold-torchtune process is writing this "
                        f"experiment (waited {timeout:.0f} s)"
                    ) from None
                time.sleep(0.1)
        info = {"pid": os.getpid(), "command": command, "since": datetime.now(UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextmanager
def lock_where_writable(directory: Path, command: str, timeout: float = DEFAULT_TIMEOUT) -> Iterator[None]:
    """`experiment_lock`, except where the lock file cannot even be created (a read-only experiment, no permission):
    nothing can be written there either, and each write then reports why, so the block runs without it."""
    try:
        lock = experiment_lock(directory, command, timeout)
        lock.__enter__()
    except LockTimeout:
        raise
    except OSError:
        yield
        return
    try:
        yield
    finally:
        lock.__exit__(None, None, None)
