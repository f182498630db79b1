"""The only place that writes into an experiment: atomic writes, a manifest of generated hashes, hand-edit safety."""

from __future__ import annotations

import contextlib
import difflib
import errno
import hashlib
import itertools
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..errors import Problem, display_path
from ..layout import JOURNAL, MANIFEST, TRAINING_FILES
from ..stamps import Stamp, stamp

TEMP_SUFFIX = ".tmp"
_TEMP_NUMBERS = itertools.count()

# A directory the suite requires that holds no generated file (a run's artifacts/, where --output points: SLURM does
# not create it) gets this file, so that git stores it and a fresh clone has it; it also keeps what the run writes
# there (checkpoints, logs) out of the repository.
KEEP_FILE = ".gitignore"
KEEP_TEXT = (
    "# Written by scaffold-torchtune: git stores no empty directory, and this one must exist before the job starts\n"
    "# (SLURM writes the job's log here). What the run writes here (checkpoints, logs) is not committed.\n"
    "*\n!.gitignore\n"
)

CREATED, UPDATED, UNCHANGED, KEPT, FORCED = "created", "updated", "unchanged", "kept (edited by hand)", "overwritten"
NOT_WRITTEN = "not written"  # a file of a run that failed: the run's files stay as they were


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
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as e:
        raise _named(e, path) from None
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            st = os.fstat(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _named(e, path) from None
        raise
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def keep_in_git(directory: Path | str) -> bool:
    """Create `directory` and its KEEP_FILE where missing (an existing KEEP_FILE is the user's: left as it is).
    True when the file was written."""
    path = os.path.join(directory, KEEP_FILE)
    if os.path.isfile(path):
        return False
    os.makedirs(directory, exist_ok=True)
    atomic_write(path, KEEP_TEXT)
    return True


def _named(e: OSError, path: str) -> OSError:
    """The error of writing `path` (through its temporary) as the user needs it: naming the file, not the temporary's
    bare name (a full disk's ENOSPC from os.write names no file at all)."""
    return type(e)(e.errno, e.strerror or str(e), path)


def cannot_write(e: OSError, run: str | None = None) -> Problem:
    """The one way a failed write is reported: the file, the cause, and what to do about it."""
    where = display_path(e.filename) if e.filename else None
    cause = e.strerror or str(e) or type(e).__name__
    directory = display_path(os.path.dirname(os.path.abspath(e.filename))) if e.filename else "the experiment"
    fixes = {
        errno.ENOSPC: f"free space where {directory} is (`df -h {directory}`), then run again: nothing was "
        "half-written",
        errno.EDQUOT: f"free space in your quota where {directory} is, then run again: nothing was half-written",
        errno.EROFS: f"{directory} is on a read-only filesystem: run where the experiment can be written (a writable "
        "clone), or remount it",
        errno.EACCES: f"make {directory} writable for you (chmod u+w), or run where the experiment can be written",
        errno.EPERM: f"make {directory} writable for you (chmod u+w), or run where the experiment can be written",
        errno.EEXIST: f"remove old .bak backups in {directory}, then run again",
        errno.EISDIR: f"{where} is a directory where this tool writes a file: move it away, then run again",
    }
    fix = fixes.get(e.errno or 0, "check the path and the filesystem, then run again")
    return Problem(f"cannot write: {cause}", where, fix=fix, run=run)


# A file whose stamp was taken this close to the manifest's saving may have been changed again within the same
# filesystem timestamp tick: its content is compared instead (git's "racily clean" entries).
RACY_NS = 50_000_000


def backup(path: Path, stamp: str | None = None) -> Path:
    """Copy a file to `{name}.{UTC time}.bak` (or `.1.bak`, `.2.bak`... when that name is taken) and return it
    (`stamp`: the time's text, by default now). FileExistsError, naming the file, when no name is free."""
    stamp = stamp or datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    data = path.read_bytes()
    for n in range(1000):
        candidate = path.with_name(f"{path.name}.{stamp}{f'.{n}' if n else ''}.bak")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except OSError as e:  # a full disk: no half backup left behind
            with contextlib.suppress(OSError):
                os.unlink(candidate)
            raise type(e)(e.errno, e.strerror or str(e), str(candidate)) from None
        return candidate
    raise FileExistsError(
        errno.EEXIST, f"no free backup name ({path.name}.{stamp}.bak to .999.bak all exist)", str(path)
    )


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
    """Hashes of the files this tool generated, keyed by path relative to the experiment directory, with the
    fingerprint of the settings each run's files were generated (and checked) from.

    It is `.scaffold-manifest.json`, saved whole at the end of a command, plus a journal beside it,
    `.scaffold-manifest.journal`, to which each run (or file) is appended as it is committed: one line naming its
    files' new hashes (and the run's fingerprint), written before the first of them is renamed into place. A
    process killed at any point (SIGKILL included) leaves a manifest that knows every file it wrote: the next one
    to load it takes each journaled file whose content on disk is the journaled hash as this tool's (a file whose
    rename never happened still has its old content, so keeps its old record), and a run's fingerprint once all
    its files are as journaled. Saving the manifest folds the journal in and removes it."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._prefix = str(self.root.resolve()) + os.sep
        self.path = self.root / MANIFEST
        self.journal = self.root / JOURNAL
        self.files: dict[str, str] = {}
        self.sources: dict[str, str] = {}
        self.stamps: dict[str, list[int]] = {}  # path -> stamp when written (see `unchanged`)
        self.saved_ns = 0
        # Why the manifest on disk could not be used (None: read, or there is none yet). `unreadable`: it cannot
        # even be replaced (a directory, no permission), so nothing generated can be recorded.
        self.damaged: str | None = None
        self.unreadable = False
        text = None
        try:
            text = self.path.read_text(encoding="utf-8")
            body = json.loads(text)
            self.files = dict(body.get("files", {}))
            self.sources = dict(body.get("sources", {}))
            self.stamps = {k: v for k, v in dict(body.get("stamps", {})).items() if isinstance(v, list) and len(v) == 3}
            self.saved_ns = int(body.get("saved_ns", 0))
        except FileNotFoundError:
            pass
        except OSError as e:
            self.damaged, self.unreadable = f"cannot be read: {e.strerror}", True
        except (ValueError, AttributeError, TypeError) as e:
            self.files, self.sources, self.stamps = {}, {}, {}
            empty = text is not None and not text.strip()
            self.damaged = "empty" if empty else f"not the JSON object this tool writes ({str(e)[:120]})"
        self._dirty = False
        self._journal_fd: int | None = None
        self._pending: list[dict] = []  # entries this process journaled and has not yet seen through
        self._pending_paths: set[str] = set()
        for entry in _read_journal(self.journal):
            self._adopt(entry)

    def key(self, path: Path | str) -> str:
        text = str(path)
        if text.startswith(self._prefix) and ".." not in text:  # the common case: paths built under the root
            return text[len(self._prefix) :]
        return Path(path).resolve().relative_to(self.root.resolve()).as_posix()

    def generated_hash(self, path: Path) -> str | None:
        return self.files.get(self.key(path))

    def record(self, path: Path | str, digest: str, written: Stamp | None = None) -> None:
        """What this tool wrote at `path`: its hash and, when known, its stamp right after writing."""
        k = self.key(path)
        if self.files.get(k) != digest:
            self.files[k] = digest
            self._dirty = True
            if written is None:
                self.stamps.pop(k, None)  # the stamp was the old content's
        if written is not None and self.stamps.get(k) != list(written):
            self.stamps[k] = list(written)
            self._dirty = True

    def forget(self, path: Path) -> None:
        """A generated file this tool has removed."""
        k = self.key(path)
        if self.files.pop(k, None) is not None or self.stamps.pop(k, None) is not None:
            self._dirty = True

    def source(self, run: str) -> str | None:
        """The fingerprint of the settings a run's files were last generated and checked from."""
        return self.sources.get(run)

    def record_source(self, run: str, fingerprint: str) -> None:
        if self.sources.get(run) != fingerprint:
            self.sources[run] = fingerprint
            self._dirty = True

    def forget_source(self, run: str) -> None:
        if self.sources.pop(run, None) is not None:
            self._dirty = True

    def unchanged(self, paths: list[Path] | list[str]) -> bool:
        """Every file exists and is byte-for-byte what this tool last wrote there. As git does, a file whose
        size, modification time and inode are those it had right after writing is taken as unchanged without
        reading it, unless that stamp is too close to the manifest's saving to tell a later edit apart (then
        its content is compared). So an edit that keeps the size and lands within the same filesystem
        timestamp tick as the generation itself would not be seen."""
        return all(self.unchanged_file(path) for path in paths)

    def unchanged_file(self, path: Path | str) -> bool:
        """One file of `unchanged`."""
        k = self.key(path)
        want = self.files.get(k)
        if want is None:
            return False
        recorded = self.stamps.get(k)
        if recorded is not None and recorded[1] < self.saved_ns - RACY_NS:
            now = stamp(path)
            if now is not None and list(now) == recorded:
                return True
        try:
            with open(path, "rb") as f:
                return sha256(f.read()) == want
        except OSError:
            return False

    def checked(self, run: str, fingerprint: str, paths: list[str]) -> bool:
        """The rule of "generated and checked": a run's files are byte-for-byte those this tool wrote, and were
        generated (and passed the self-check) from settings with this fingerprint (scaffold.render.fingerprint:
        the run's settings, its model's entry and the generator itself). generate skips such a run; submit queues
        only such runs."""
        return self.sources.get(run) == fingerprint and self.unchanged(paths)

    def commit(self, files: dict[str, str], run: str | None = None, source: str | None = None) -> None:
        """Journal files about to be written (absolute path -> hash of the new content), and the fingerprint their
        run is generated from, before the first of them is renamed into place (see the class)."""
        entry: dict = {"files": {self.key(path): digest for path, digest in files.items()}}
        if run is not None and source is not None:
            entry.update(run=run, source=source)
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode("utf-8")
        if self._journal_fd is None:
            self._journal_fd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(self._journal_fd, line)  # one write of one line: whole, or not there
        self._pending.append(entry)
        self._pending_paths.update(files)

    @contextlib.contextmanager
    def writing(self, path: Path | str, digest: str) -> Iterator[None]:
        """Around writing one file and recording it: journaled first (unless its run's `commit` journaled it), so
        that a process interrupted in between (after the rename, before the record) leaves it known."""
        if os.fspath(path) not in self._pending_paths:
            self.commit({os.fspath(path): digest})
        yield

    def _adopt(self, entry: dict) -> None:
        """Take what a journal entry says was written, for each file whose content is the journaled one."""
        files = entry.get("files")
        if not isinstance(files, dict):
            return
        whole = True
        for k, digest in files.items():
            if self.files.get(k) == digest and k in self.stamps:
                continue  # recorded after its write
            path = self.root / k
            try:
                with open(path, "rb") as f:
                    same = sha256(f.read()) == digest
            except OSError:
                same = False
            if same:
                self.record(path, digest, stamp(path))
            whole = whole and same
        run, source = entry.get("run"), entry.get("source")
        if whole and isinstance(run, str) and isinstance(source, str):
            self.record_source(run, source)

    def save(self) -> None:
        """Write the manifest whole (when anything changed), folding in what this process journaled, and remove the
        journal."""
        pending, self._pending, self._pending_paths = self._pending, [], set()
        for entry in pending:  # interrupted between a rename and its record (Ctrl-C, SIGTERM): see `writing`
            self._adopt(entry)
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
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.journal)  # folded into the manifest just written (or read when this one was loaded)

    def close(self) -> None:
        """Stop journaling (the journal stays for the next process to fold in)."""
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None


def _read_journal(path: Path) -> list[dict]:
    """The entries of a journal a process left (none when there is none); a line that is not whole is skipped."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


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
    commit_write(result, text, manifest)
    return result


def commit_write(result: FileResult, text: str, manifest: Manifest) -> None:
    """Carry out a planned write (`plan_write`; not one that keeps a hand edit) and record it: the file is
    journaled first (unless its run's `Manifest.commit` journaled it), an unchanged one is only recorded."""
    assert result.status != KEPT
    data = text.encode("utf-8")
    digest = sha256(data)
    if result.status == UNCHANGED:
        manifest.record(result.path, digest)
        return
    with manifest.writing(result.path, digest):
        manifest.record(result.path, digest, atomic_write(result.path, data, mode=_mode(result.path)))


def write_new(path: Path | str, content: str | bytes, manifest: Manifest, digest: str | None = None) -> str:
    """Write a generated file into a directory this process has just created (nothing there to keep); its
    status. (`digest`: the content's hash, when the caller has it.)"""
    data = content.encode("utf-8") if isinstance(content, str) else content
    digest = digest or sha256(data)
    with manifest.writing(path, digest):
        manifest.record(path, digest, atomic_write(path, data, mode=_mode(path)))
    return CREATED


def run_files(run_dir: Path | str) -> list[str]:
    """The paths of a fine-tuned run's three generated files."""
    run_dir = os.fspath(run_dir)
    return [os.path.join(run_dir, name) for name in TRAINING_FILES]


def _mode(path: Path) -> int:
    return 0o755 if os.fspath(path).endswith(".slurm") else 0o644
