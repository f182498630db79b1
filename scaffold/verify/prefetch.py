"""Reading the runs' files ahead of their tests, in another process (large sweeps): for each selected fine-tuned
run, a worker (a Python process running main() below) reads finetune.yaml, finetune.slurm and setup_finetune.yaml
once, parses finetune.yaml by the shape rule (steps 1 and 2 of shapes.py: OmegaConf's YAML loader), parses the
batch script as sbatch and bash read it, and compares each file with its golden copy. The runs' tests, in this
process, take those results and run the checks on them; OmegaConf itself still loads the first config of each
shape here. The worker runs the same functions this process would, so the results are the same; a run the worker
did not answer (it failed, or was stopped) is read here as it would be without it.

Protocol: the worker reads one pickled header (the runs, the golden directory...) on stdin and writes, per run, a
4-byte length and a pickled (run name, bundle) on stdout, in the order of the header's runs.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ..plan import FINETUNE_FILE, SLURM_FILE, TRAINING_FILES
from .shell import stop

TIMEOUT = 120  # seconds without an answer: the worker is stopped and the rest is read in this process
_WORKER = "import sys; sys.path.insert(0, sys.argv[1]); from scaffold.verify.prefetch import main; main()"


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:
        return None


def bundle(run_dir: str, golden_run_dir: str | None, local_named: str | None, yaml_loader: Any) -> dict:
    """What a run's tests need from its files, read once: which files exist, the parsed config (shapes.parse), the
    parsed batch script, and whether each file is the same as its golden copy."""
    from ..golden import machine_independent
    from .generated import parse_slurm_text
    from .shapes import parse

    out: dict[str, Any] = {"exists": {}, "golden": {}}
    for file in TRAINING_FILES:
        path = os.path.join(run_dir, file)
        if not os.path.isfile(path):
            out["exists"][file] = False
            continue
        out["exists"][file] = True
        text = _read_text(path)
        if file == FINETUNE_FILE and yaml_loader is not None:
            out["config"] = parse(yaml_loader, text) if text is not None else None
        if file == SLURM_FILE:
            script_text = text if text is not None else Path(path).read_bytes().decode("utf-8", errors="replace")
            out["slurm"] = parse_slurm_text(Path(path), script_text)
        if golden_run_dir is not None:
            if text is None:
                text = Path(path).read_bytes().decode("utf-8", errors="replace")
            text = machine_independent(text, Path(local_named) if local_named else None)
            try:
                golden = _read_text(os.path.join(golden_run_dir, file))
            except OSError:
                golden = None
            out["golden"][file] = golden == text
    return out


def main() -> None:
    """The worker: answers the runs of the header on stdin, in order."""
    from .shapes import omegaconf_yaml_loader

    header = pickle.load(sys.stdin.buffer)
    if header["package"] != str(Path(__file__).resolve().parent):
        return  # another copy of scaffold than the suite's: answer nothing, the suite reads the files itself
    yaml_loader = omegaconf_yaml_loader() if header["per_shape"] else None
    golden_dir = header["golden_dir"]
    out = sys.stdout.buffer
    for name, run_dir in header["runs"]:
        golden_run_dir = os.path.join(golden_dir, name) if golden_dir is not None else None
        data = pickle.dumps((name, bundle(run_dir, golden_run_dir, header["local_named"], yaml_loader)), protocol=5)
        out.write(len(data).to_bytes(4, "big") + data)
        out.flush()


class Prefetcher:
    """The worker seen from the suite: `get(run)` waits for one run's bundle (None when the worker cannot say)."""

    def __init__(
        self, runs: list[tuple[str, Path]], golden_dir: Path | None, local_named: Path | None, per_shape: bool
    ):
        self._names = {name for name, _ in runs}
        self._got: dict[str, dict] = {}
        self._buffer = b""
        self._done = not runs
        self._proc: subprocess.Popen | None = None
        if not runs:
            return
        header = {
            "runs": [(name, str(run_dir)) for name, run_dir in runs],
            "golden_dir": str(golden_dir) if golden_dir is not None else None,
            "local_named": str(local_named) if local_named is not None else None,
            "per_shape": per_shape,
            "package": str(Path(__file__).resolve().parent),
        }
        # The worker must run this very code: the directory holding this copy of `scaffold` is searched first
        # (a source checkout may be tested while another copy is installed), and a worker that still finds
        # another copy answers nothing.
        root = str(Path(__file__).resolve().parent.parent.parent)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER, root],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except OSError:
            self._done = True
            return
        data = pickle.dumps(header, protocol=5)
        threading.Thread(target=self._feed, args=(self._proc, data), daemon=True).start()

    @staticmethod
    def _feed(proc: subprocess.Popen, data: bytes) -> None:
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.write(data)
            proc.stdin.close()

    def get(self, name: str) -> dict | None:
        if name not in self._names:
            return None
        while name not in self._got and not self._done:
            self._read()
        self._names.discard(name)
        return self._got.pop(name, None)

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], TIMEOUT)
        chunk = os.read(fd, 1 << 20) if ready else b""
        if not chunk:
            self.close()
            return
        buffer, pos = self._buffer + chunk, 0
        while len(buffer) - pos >= 4:
            size = int.from_bytes(buffer[pos : pos + 4], "big")
            if len(buffer) - pos - 4 < size:
                break
            record, pos = buffer[pos + 4 : pos + 4 + size], pos + 4 + size
            try:
                name, answer = pickle.loads(record)
            except Exception:  # noqa: BLE001 - a broken answer: those runs are read in this process
                self.close()
                return
            self._got[name] = answer
        self._buffer = buffer[pos:]

    def close(self) -> None:
        self._done = True
        proc, self._proc = self._proc, None
        stop(proc)


if __name__ == "__main__":
    main()
