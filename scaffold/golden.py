"""Golden snapshots of generated files, as readable single files (syrupy single-file extensions).

A test that compares a generated file is parametrised with `run` and `file` and uses
`snapshot.use_extension(golden_extension(root, file))`: the snapshot of `{run}/{file}` is stored as
`{root}/{run}/{file}`, byte for byte, so a reviewer reads a golden finetune.yaml like any other file.

Snapshots must not differ between machines: generated files name paths as the cluster sees them
(`experiment.dir`), never where the repository happens to be checked out, and carry no timestamps.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode


@cache
def golden_extension(root: Path, file_name: str) -> type[SingleFileSnapshotExtension]:
    """A syrupy extension storing the snapshot of one generated file as `{root}/{run}/{file_name}`."""
    stem, _, suffix = file_name.rpartition(".")
    root = Path(root)

    class GoldenFile(SingleFileSnapshotExtension):
        _write_mode = WriteMode.TEXT
        file_extension = suffix

        @classmethod
        def dirname(cls, *, test_location) -> str:
            callspec = getattr(test_location.item, "callspec", None)
            return str(root / callspec.params["run"]) if callspec else str(root)

        @classmethod
        def discovery_dirname(cls, *, test_location) -> str:
            # Snapshots are {root}/{run}/{file}: discovery (and unused-snapshot detection) covers all of root.
            return str(root)

        @classmethod
        def get_snapshot_name(cls, *, test_location, index=0) -> str:
            return stem

    GoldenFile.__name__ = f"GoldenFile_{stem}_{suffix}"
    return GoldenFile
