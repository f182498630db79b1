"""Golden snapshots of generated files, as readable single files (syrupy single-file extensions).

A test that compares a generated file uses `snapshot.use_extension(golden_extension(root, file, run))`: the
snapshot of `{run}/{file}` is stored as `{root}/{run}/{file}`, byte for byte, so a reviewer reads a golden
finetune.yaml like any other file. Without `run`, the test's `run` parameter names the directory.

Snapshots must not differ between machines: generated files name paths as the cluster sees them
(`experiment.dir`), never where the repository happens to be checked out, and carry no timestamps. A summary
without `experiment.dir` names the local experiment directory: `machine_independent` replaces it with
EXPERIMENT_DIR_PLACEHOLDER before comparing.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from syrupy.data import SnapshotCollections
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

EXPERIMENT_DIR_PLACEHOLDER = "<experiment-dir>"
# The one command that accepts an intended change of the generated files (and writes the golden copies missing).
ACCEPT_COMMAND = "scaffold verify {experiment} --snapshot-update"


def local_dir_named(summary) -> Path | None:
    """The local experiment directory when the generated files name it (a summary without `experiment.dir`), else
    None: what `machine_independent` replaces."""
    return None if summary.data["experiment"].get("dir") else summary.local_dir


def machine_independent(text: str, experiment_dir: Path | None) -> str:
    """A generated file's text with the local experiment directory (when files name it) replaced by a placeholder."""
    if experiment_dir is None:
        return text
    return text.replace(str(experiment_dir), EXPERIMENT_DIR_PLACEHOLDER)


@cache
def golden_extension(root: Path, file_name: str, run: str | None = None) -> type[SingleFileSnapshotExtension]:
    """A syrupy extension storing the snapshot of one generated file as `{root}/{run}/{file_name}`.

    With `run` given (the verification suite), syrupy discovers no snapshots through this extension: stale golden
    files are found by the suite's `golden_stale` check, which knows every run and file of the experiment.
    """
    stem, _, suffix = file_name.rpartition(".")
    root = Path(root)

    class GoldenFile(SingleFileSnapshotExtension):
        _write_mode = WriteMode.TEXT
        file_extension = suffix

        @classmethod
        def dirname(cls, *, test_location) -> str:
            if run is not None:
                return str(root / run)
            callspec = getattr(test_location.item, "callspec", None)
            return str(root / callspec.params["run"]) if callspec else str(root)

        @classmethod
        def discovery_dirname(cls, *, test_location) -> str:
            # Snapshots are {root}/{run}/{file}: discovery (and unused-snapshot detection) covers all of root.
            return str(root)

        @classmethod
        def get_file_basename(cls, *, test_location, index=0) -> str:
            return stem

        @classmethod
        def get_snapshot_name(cls, *, test_location, index=0) -> str:
            # For the suite's items, the test's own name relates snapshot and test (the file is found by
            # dirname/get_file_basename), so syrupy does not warn that it cannot relate them.
            return test_location.snapshot_name if run is not None else stem

        @classmethod
        def matches_test_location(cls, *, test_location, snapshot_location) -> bool:
            if run is not None:  # the location is given by construction, not derived from a test file's name
                return True
            return super().matches_test_location(test_location=test_location, snapshot_location=snapshot_location)

        def discover_snapshots(self, *, test_location, ignore_extensions=None) -> SnapshotCollections:
            if run is not None:
                return SnapshotCollections()
            return super().discover_snapshots(test_location=test_location, ignore_extensions=ignore_extensions)

    GoldenFile.__name__ = f"GoldenFile_{stem}_{suffix}"
    return GoldenFile
