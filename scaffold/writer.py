"""The only place that writes into an experiment: atomic writes, a manifest of generated hashes, hand-edit safety."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

MANIFEST = ".scaffold-manifest.json"
TEMP_SUFFIX = ".tmp"
_TEMP_NUMBERS = itertools.count()

CREATED, UPDATED, UNCHANGED, KEPT, FORCED = "created", "updated", "unchanged", "kept (edited by hand)", "overwritten"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write(path: Path, content: str | bytes, mode: int = 0o644) -> None:
    """Write a whole file or nothing: a temporary file in the same directory, then rename over the target."""
    path = Path(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    # O_EXCL on a name of our own (pid + counter): no other process or call can share it. The mode is given
    # at creation (then subject to the umask, like any new file), so no chmod is needed.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_TEMP_NUMBERS)}{TEMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
        try:
            body = json.loads(self.path.read_text(encoding="utf-8"))
            self.files: dict[str, str] = dict(body.get("files", {}))
            self.sources: dict[str, str] = dict(body.get("sources", {}))
        except (FileNotFoundError, ValueError, AttributeError, TypeError):
            self.files, self.sources = {}, {}
        self._dirty = False

    def key(self, path: Path) -> str:
        text = str(path)
        if text.startswith(self._prefix) and ".." not in text:  # the common case: paths built under the root
            return text[len(self._prefix) :]
        return Path(path).resolve().relative_to(self.root.resolve()).as_posix()

    def generated_hash(self, path: Path) -> str | None:
        return self.files.get(self.key(path))

    def record(self, path: Path, digest: str) -> None:
        k = self.key(path)
        if self.files.get(k) != digest:
            self.files[k] = digest
            self._dirty = True

    def source(self, run: str) -> str | None:
        """The fingerprint of the settings a run's files were last generated from."""
        return self.sources.get(run)

    def record_source(self, run: str, fingerprint: str) -> None:
        if self.sources.get(run) != fingerprint:
            self.sources[run] = fingerprint
            self._dirty = True

    def unchanged(self, paths: list[Path]) -> bool:
        """Every file exists and is byte-for-byte what this tool last wrote there."""
        for path in paths:
            want = self.generated_hash(path)
            try:
                if want is None or sha256(path.read_bytes()) != want:
                    return False
            except OSError:
                return False
        return True

    def save(self) -> None:
        if self._dirty:
            body = {
                "tool": "scaffold-torchtune",
                "files": dict(sorted(self.files.items())),
                "sources": dict(sorted(self.sources.items())),
            }
            atomic_write(self.path, json.dumps(body, indent=1) + "\n")
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
    if result.status != UNCHANGED:
        atomic_write(path, text, mode=0o755 if path.suffix == ".slurm" else 0o644)
    manifest.record(path, sha256(text.encode("utf-8")))
    return result
