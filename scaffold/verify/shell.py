"""`bash -n` over the batch scripts of many runs: the same command as for one script (`bash -n PATH`), started for
each script by one bash process in the background instead of one Python subprocess each, so its results are ready
when the runs' tests ask for them.

What it buys (measured for issue 16 with `nox -s bench`, on /dev/shm, medians of 3 rounds): `scaffold verify` of
1,000 runs takes 7.8 s with it and 12.4 s with one `bash -n` subprocess per script, over the budget of 10 s; of 100
runs, 2.2 s and 3.0 s.

Each script is parsed alone (never concatenated with others: a quote left open in one script could otherwise be
closed by the next one, and two broken scripts would parse together)."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import threading
from collections.abc import Iterable
from pathlib import Path

# Reads NUL-separated paths; writes, per path: the path, NUL, what `bash -n` wrote to stderr, NUL, its status, NUL.
_LOOP = r"""
while IFS= read -r -d '' f; do
  printf '%s\0' "$f"
  bash -n -- "$f" </dev/null 2>&1 >/dev/null
  printf '\0%d\0' "$?"
done
"""
TIMEOUT = 60  # seconds without any result: the loop is stopped and the rest checked one at a time


def bash_n(path: Path | str, timeout: float = TIMEOUT) -> tuple[int, str]:
    """`bash -n PATH` alone: (exit status, stderr)."""
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, timeout=timeout)
    return proc.returncode, proc.stderr.decode("utf-8", errors="replace")


class BashSyntax:
    """`bash -n` for many scripts, in the background; `result(path)` waits for one script's answer."""

    def __init__(self, paths: Iterable[Path | str]):
        self._paths = [os.fsencode(str(p)) for p in paths]
        self._results: dict[bytes, tuple[int, str]] = {}
        self._buffer = b""
        self._proc: subprocess.Popen | None = None
        self._done = not self._paths
        if self._paths:
            try:
                self._proc = subprocess.Popen(
                    ["bash", "-c", _LOOP], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
                )
            except OSError:
                self._done = True
                return
            feed = b"".join(p + b"\0" for p in self._paths)
            threading.Thread(target=self._feed, args=(self._proc, feed), daemon=True).start()

    @staticmethod
    def _feed(proc: subprocess.Popen, data: bytes) -> None:
        assert proc.stdin is not None
        with contextlib.suppress(OSError):  # the loop was stopped: the remaining scripts are checked alone
            proc.stdin.write(data)
            proc.stdin.close()

    def result(self, path: Path | str) -> tuple[int, str]:
        """(exit status, stderr) of `bash -n PATH`."""
        key = os.fsencode(str(path))
        while key not in self._results and not self._done:
            self._read()
        if key in self._results:
            return self._results.pop(key)
        return bash_n(path)  # not in the batch, or the batch stopped before it

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], TIMEOUT)
        chunk = os.read(fd, 1 << 16) if ready else b""
        if not chunk:
            self.close()
            return
        self._buffer += chunk
        fields = self._buffer.split(b"\0")
        complete = (len(fields) - 1) // 3
        for i in range(complete):
            path, err, status = fields[3 * i : 3 * i + 3]
            self._results[path] = (int(status or 1), err.decode("utf-8", errors="replace"))
        self._buffer = b"\0".join(fields[3 * complete :])

    def close(self) -> None:
        """Stop the loop (if it still runs) and reap it."""
        self._done = True
        proc, self._proc = self._proc, None
        stop(proc)


def stop(proc: subprocess.Popen | None) -> None:
    """Kill a helper process if it still runs, reap it, and close our ends of its pipes."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stdout):
        with contextlib.suppress(OSError):
            if stream is not None:
                stream.close()
