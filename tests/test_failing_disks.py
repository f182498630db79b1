"""Writes that fail for the disk's reasons (a full disk, a read-only filesystem, no free backup name) and two commands
on one experiment: each is an error naming the file, the cause and the fix (never an internal error), and nothing
already on disk is lost or half-written.

The full and read-only disks are real: a small tmpfs mounted for the test (root only; skipped elsewhere).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from scaffold.commands.setupfinetune import setup_finetune
from scaffold.output import writer

from .conftest import EXAMPLE, EXAMPLE_LOCAL, REPO, Experiment, run_cli

RANK4 = "Llama-3.2-1B-Instruct_rank4"


def _mount(path: Path, options: str) -> bool:
    return (
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode == 0
    )


@pytest.fixture
def tmpfs():
    """mount(size): a fresh tmpfs of that size (e.g. "64k"), unmounted afterwards; or a skip."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix="scaffold-disk-"))
        if not _mount(path, f"size={size}"):
            pytest.skip("cannot mount a tmpfs here")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
        shutil.rmtree(path, ignore_errors=True)


def _copy_example(top: Path) -> Experiment:
    exp = top / "cap"
    shutil.copytree(EXAMPLE, exp, ignore=shutil.ignore_patterns("Llama-*", "logs", "arrays", ".scaffold-manifest.json"))
    shutil.copy(EXAMPLE_LOCAL, top / "scaffold.local.yaml")
    return Experiment(exp, top / "scaffold.local.yaml")


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_full_disk_is_an_error_with_the_file_and_the_fix(tmpfs):
    exp = _copy_example(tmpfs("48k"))  # the inputs fit (4 pages), the generated files do not
    res = exp.generate("--no-check-paths")
    text = res.out + res.err
    assert res.code in (1, 2), text
    assert "internal error" not in text and "Traceback" not in text, text
    lines = [ln for ln in text.splitlines() if "No space left on device" in ln]
    assert lines, text
    assert all("(None)" not in ln and "None (" not in ln for ln in lines), lines
    assert any("cap/" in ln and "(fix: free space" in ln for ln in lines), lines
    assert not [p for p in exp.dir.rglob("*") if p.name.endswith(writer.TEMP_SUFFIX)], "a temporary was left"


def test_a_read_only_experiment_is_an_error_with_the_fix(tmpfs):
    top = tmpfs("1m")
    exp = _copy_example(top)
    assert subprocess.run(["mount", "-o", "remount,ro", str(top)], capture_output=True).returncode == 0
    before = _files(top)
    res = exp.generate("--no-check-paths")
    text = res.out + res.err
    assert res.code == 1, text
    assert "internal error" not in text and "Traceback" not in text, text
    line = next(ln for ln in text.splitlines() if f"[run {RANK4}]" in ln and "Read-only file system" in ln)
    assert "(fix: " in line and "read-only filesystem" in line, line
    assert _files(top) == before


def test_cannot_write_names_the_file_and_the_fix_for_each_cause(tmp_path: Path):
    """The one rule (scaffold.output.writer.cannot_write) for the errors the disk gives: never `None (None)`."""
    target = tmp_path / "run" / "finetune.yaml"
    for code, fix in [
        (errno.ENOSPC, "free space"),
        (errno.EROFS, "read-only filesystem"),
        (errno.EACCES, "chmod u+w"),
        (errno.EEXIST, "remove old .bak backups"),
        (errno.EISDIR, "is a directory"),
    ]:
        p = writer.cannot_write(OSError(code, os.strerror(code), str(target)), "r")
        assert p.file and p.file.endswith("finetune.yaml") and fix in (p.fix or ""), p
        assert "None" not in p.format(), p.format()


def test_an_existing_file_is_never_replaced_by_a_half_written_one_on_a_full_disk(tmpfs):
    top = tmpfs("64k")
    target = top / "kept.txt"
    target.write_text("as it was\n")
    with pytest.raises(OSError) as e:
        writer.atomic_write(target, "x" * 200_000)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)  # the target, not the temporary
    assert target.read_text() == "as it was\n"
    assert [p.name for p in top.iterdir()] == ["kept.txt"]


def test_atomic_write_names_the_target_when_the_directory_is_not_writable(tmp_path: Path):
    missing = tmp_path / "no-such-dir" / "finetune.yaml"
    with pytest.raises(OSError) as e:
        writer.atomic_write(missing, "x")
    assert e.value.filename == str(missing), e.value  # was the temporary's bare name (.finetune.yaml.PID.N.tmp)


# --- setup-finetune and generate exclude each other ---------------------------------------------------------------

HOLD = """
import sys, time
from pathlib import Path
from scaffold.output.lock import experiment_lock
with experiment_lock(Path(sys.argv[1]), "generate"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_setup_finetune_waits_for_a_generate_holding_the_lock(example: Experiment):
    assert example.generate("--no-check-paths").code == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(example.dir), "30"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        summary = example.summary.read_bytes()
        setup = (example.dir / RANK4 / "setup_finetune.yaml").read_bytes()
        started = time.monotonic()
        result = setup_finetune(
            example.dir / RANK4, ["--epochs", "3"], local_config=example.local, check_paths=False, lock_timeout=1
        )
        assert time.monotonic() - started >= 1
        assert result.exit_status == 1, result
        assert any("is held by" in p.message and "generate" in p.message for p in result.problems), result.problems
        assert example.summary.read_bytes() == summary
        assert (example.dir / RANK4 / "setup_finetune.yaml").read_bytes() == setup
    finally:
        holder.kill()
        holder.wait()
    # Once the lock is free, the change is made.
    res = run_cli(
        "setup-finetune",
        "--dir",
        example.dir / RANK4,
        "--local-config",
        example.local,
        "--no-check-paths",
        "--epochs",
        "3",
    )
    assert res.code == 0, res.out + res.err
    assert "epochs: 3" in (example.dir / RANK4 / "setup_finetune.yaml").read_text()


def test_no_free_backup_name_is_an_error_naming_the_file(tmp_path: Path):
    """Every backup name of one instant taken (was `cannot write: None (None)`)."""
    target = tmp_path / "finetune.yaml"
    target.write_text("edited by hand\n")
    stamp = "20261207T120000.000000Z"
    for n in range(1000):
        (tmp_path / f"finetune.yaml.{stamp}{f'.{n}' if n else ''}.bak").write_text("older\n")
    with pytest.raises(FileExistsError) as e:
        writer.backup(target, stamp)
    assert e.value.errno == errno.EEXIST and e.value.filename == str(target)
    problem = writer.cannot_write(e.value, RANK4)
    assert "no free backup name" in problem.message and "remove old .bak backups" in (problem.fix or "")
    assert "None" not in problem.format()
    assert target.read_text() == "edited by hand\n"
