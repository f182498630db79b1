"""The only place that writes into an experiment: atomic writes, a manifest of generated hashes, hand-edit safety."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import itertools
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..discover import MANIFEST
from ..stamps import Stamp, stamp

TEMP_SUFFIX = ".tmp"
_TEMP_NUMBERS = itertools.count()

CREATED, UPDATED, UNCHANGED, KEPT, FORCED = "created", "updated", "unchanged", "kept (edited by hand)", "overwritten"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write(path: Path | str, content: str | bytes, mode: int = 0o644) -> Stamp:
    """Write a whole file or nothing: a temporary file in the same directory, then rename over the target.
    Returns the file's stamp (the rename keeps size, modification time and inode)."""
    path = os.fspath(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    # O_EXCL on a name of our own (pid + counter): no other process or call can share it. The mode is given
    # at creation (then subject to the umask, like any new file), so no chmod is needed.
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.{os.getpid()}.{next(_TEMP_NUMBERS)}{TEMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            st = os.fstat(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return (st.st_size, st.st_mtime_ns, st.st_ino)


# A file whose stamp was taken this close to the manifest's saving may have been changed again within the same
# filesystem timestamp tick: its content is compared instead (git's "racily clean" entries).
RACY_NS = 50_000_000


def backup(path: Path) -> Path:
    """Copy a file to `{name}.{UTC time}.bak` (or `.1.bak`, `.2.bak`... when that name is taken) and return it."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    data = path.read_bytes()
    for n in range(1000):
        candidate = path.with_name(f"{path.name}.{stamp}{f'.{n}' if n else ''}.bak")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return candidate
    raise FileExistsError(f"no free backup name for {path}")


def remove_stale_temporaries(directory: Path, names: tuple[str, ...]) -> list[Path]:
    """Remove the temporary files a killed write of these files left (`.{name}.{pid}.{n}.tmp`). Only call it
    while holding the experiment's lock: then no other writer can own them."""
    removed = []
    try:
        entries = os.listdir(directory)
    except OSError:
        return removed
    for entry in entries:
        if entry.endswith(TEMP_SUFFIX) and any(entry.startswith(f".{name}.") for name in names):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(Path(directory) / entry)
                removed.append(Path(directory) / entry)
    return removed


@dataclass
class FileResult:
    path: Path
    status: str
    diff: str = ""
    backup: Path | None = None


class Manifest:
    """Hashes of the files this tool generated, keyed by path relative to the experiment directory."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._prefix = str(self.root.resolve()) + os.sep
        self.path = self.root / MANIFEST
        self.files: dict[str, str] = {}
        self.sources: dict[str, str] = {}
        self.stamps: dict[str, list[int]] = {}  # path -> stamp when written (see `unchanged`)
        self.saved_ns = 0
        try:
            body = json.loads(self.path.read_text(encoding="utf-8"))
            self.files = dict(body.get("files", {}))
            self.sources = dict(body.get("sources", {}))
            self.stamps = {k: v for k, v in dict(body.get("stamps", {})).items() if isinstance(v, list) and len(v) == 3}
            self.saved_ns = int(body.get("saved_ns", 0))
        except (FileNotFoundError, ValueError, AttributeError, TypeError):
            self.files, self.sources, self.stamps = {}, {}, {}
        self._dirty = False
        self._pending: dict[str, str] = {}

    def key(self, path: Path) -> str:
        text = str(path)
        if text.startswith(self._prefix) and ".." not in text:  # the common case: paths built under the root
            return text[len(self._prefix) :]
        return Path(path).resolve().relative_to(self.root.resolve()).as_posix()

    def generated_hash(self, path: Path) -> str | None:
        return self.files.get(self.key(path))

    def record(self, path: Path, digest: str, written: Stamp | None = None) -> None:
        """What this tool wrote at `path`: its hash and, when known, its stamp right after writing."""
        k = self.key(path)
        if self.files.get(k) != digest:
            self.files[k] = digest
            self._dirty = True
        if written is not None and self.stamps.get(k) != list(written):
            self.stamps[k] = list(written)
            self._dirty = True
        elif written is None and k in self.stamps and self.files.get(k) != digest:
            del self.stamps[k]

    def forget(self, path: Path) -> None:
        """A generated file this tool has removed."""
        k = self.key(path)
        if self.files.pop(k, None) is not None or self.stamps.pop(k, None) is not None:
            self._dirty = True

    def source(self, run: str) -> str | None:
        """The fingerprint of the settings a run's files were last generated from."""
        return self.sources.get(run)

    def record_source(self, run: str, fingerprint: str) -> None:
        if self.sources.get(run) != fingerprint:
            self.sources[run] = fingerprint
            self._dirty = True

    def unchanged(self, paths: list[Path] | list[str]) -> bool:
        """Every file exists and is byte-for-byte what this tool last wrote there. As git does, a file whose
        size, modification time and inode are those it had right after writing is taken as unchanged without
        reading it, unless that stamp is too close to the manifest's saving to tell a later edit apart (then
        its content is compared). So an edit that keeps the size and lands within the same filesystem
        timestamp tick as the generation itself would not be seen."""
        for path in paths:
            k = self.key(path)
            want = self.files.get(k)
            if want is None:
                return False
            recorded = self.stamps.get(k)
            if recorded is not None and recorded[1] < self.saved_ns - RACY_NS:
                now = stamp(path)
                if now is not None and list(now) == recorded:
                    continue
            try:
                with open(path, "rb") as f:
                    if sha256(f.read()) != want:
                        return False
            except OSError:
                return False
        return True

    @contextlib.contextmanager
    def writing(self, path: Path | str, digest: str) -> Iterator[None]:
        """Around writing a file and recording it: when the process is interrupted in between (Ctrl-C, SIGTERM:
        after the rename, before the record), `save` still records the file if it holds what was written."""
        self._pending[os.fspath(path)] = digest
        yield  # (not in a `finally`: an interrupted write stays pending for `save`)
        self._pending.pop(os.fspath(path), None)

    def save(self) -> None:
        pending, self._pending = self._pending, {}
        for path, digest in pending.items():  # interrupted mid-write: see `writing`
            try:
                with open(path, "rb") as f:
                    if sha256(f.read()) == digest:
                        self.record(path, digest, stamp(path))
            except OSError:
                pass
        if self._dirty:
            # Written before the file, so that no stamp taken before saving is newer than it.
            self.saved_ns = time.time_ns()
            body = {
                "tool": "scaffold-torchtune",
                "saved_ns": self.saved_ns,
                "files": dict(sorted(self.files.items())),
                "sources": dict(sorted(self.sources.items())),
                "stamps": dict(sorted(self.stamps.items())),
            }
            atomic_write(self.path, json.dumps(body, indent=1, separators=(",", ":")) + "\n")
            self._dirty = False


def edited_by_hand(path: Path, manifest: Manifest) -> bool:
    """True when a file exists and is not byte-for-byte what this tool last wrote there."""
    if not path.exists():
        return False
    return sha256(path.read_bytes()) != manifest.generated_hash(path)


def plan_write(path: Path, text: str, manifest: Manifest, force: bool) -> FileResult:
    """What writing `text` to `path` would do, without doing it."""
    new = text.encode("utf-8")
    if not path.exists():
        return FileResult(path, CREATED)
    old = path.read_bytes()
    if old == new:
        return FileResult(path, UNCHANGED)
    diff = "".join(
        difflib.unified_diff(
            old.decode("utf-8", "replace").splitlines(True),
            text.splitlines(True),
            fromfile=f"{path.name} (on disk)",
            tofile=f"{path.name} (generated)",
        )
    )
    if sha256(old) == manifest.generated_hash(path):
        return FileResult(path, UPDATED, diff)
    return FileResult(path, FORCED if force else KEPT, diff)


def write(path: Path, text: str, manifest: Manifest, force: bool, dry_run: bool = False) -> FileResult:
    """Write one generated file: create, update what we wrote, leave unchanged files alone, keep hand edits
    unless forced (then keep the old version as a backup)."""
    result = plan_write(path, text, manifest, force)
    if dry_run or result.status == KEPT:
        return result
    if result.status == FORCED:
        result.backup = backup(path)
    data = text.encode("utf-8")
    written = None
    digest = sha256(data)
    with manifest.writing(path, digest):
        if result.status != UNCHANGED:
            written = atomic_write(path, data, mode=_mode(path))
        manifest.record(path, digest, written)
    return result


def write_new(path: Path | str, text: str, manifest: Manifest) -> str:
    """Write a generated file into a directory this process has just created (nothing there to keep); its
    status."""
    data = text.encode("utf-8")
    digest = sha256(data)
    with manifest.writing(path, digest):
        manifest.record(path, digest, atomic_write(path, data, mode=_mode(path)))
    return CREATED


def _mode(path: Path) -> int:
    return 0o755 if os.fspath(path).endswith(".slurm") else 0o644
