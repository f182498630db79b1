"""The stamps that let generate skip reading unchanged files (size, modification time and inode, as git does)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scaffold.output.writer import RACY_NS, Manifest, atomic_write


def test_a_stamped_file_is_not_read_and_a_changed_one_is(tmp_path: Path, monkeypatch):
    m = Manifest(tmp_path)
    path = tmp_path / "f.yaml"
    m.record(path, "0" * 64, atomic_write(path, "a: 1\n"))  # a wrong hash: only reading would notice
    m.save()
    m = Manifest(tmp_path)
    m.saved_ns += 10 * RACY_NS
    assert m.unchanged([path])  # taken on its stamp, content never read
    path.write_text("a: 2\n")  # same size, new time
    assert not m.unchanged([path])


def test_a_racy_stamp_is_checked_by_content(tmp_path: Path):
    """A file whose stamp is as recent as the manifest's saving may have been edited within the same timestamp
    tick without its stamp changing: its content decides."""
    m = Manifest(tmp_path)
    path = tmp_path / "f.yaml"
    written = atomic_write(path, "a: 1\n")
    m.record(path, "0" * 64, written)  # hash of other content
    m.save()
    m = Manifest(tmp_path)
    m.saved_ns = written[1] + RACY_NS // 2  # saved right after the write
    assert not m.unchanged([path])
    m.saved_ns = written[1] + 2 * RACY_NS
    assert m.unchanged([path])


def test_an_edit_that_keeps_size_and_time_but_not_inode_is_seen(tmp_path: Path):
    m = Manifest(tmp_path)
    path = tmp_path / "f.yaml"
    written = atomic_write(path, "a: 1\n")
    m.record(path, "0" * 64, written)
    m.saved_ns = written[1] + 10 * RACY_NS
    st = os.stat(path)
    atomic_write(path, "a: 2\n")  # an editor's save: a new file renamed over the old
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert not m.unchanged([path])


def test_a_file_renamed_into_place_but_not_yet_recorded_is_recorded_on_interrupt(tmp_path: Path, monkeypatch):
    """SIGTERM (or Ctrl-C) right after a file's rename and before its record: saving the manifest on the way out
    still records it, so the next generation does not take it for a hand edit."""
    import scaffold.output.writer as writer

    m = Manifest(tmp_path)
    path = tmp_path / "f.yaml"

    def interrupted_record(*args, **kwargs):
        raise SystemExit(143)

    monkeypatch.setattr(m, "record", interrupted_record)
    with pytest.raises(SystemExit):
        writer.write_new(path, "a: 1\n", m)
    assert path.read_text() == "a: 1\n"
    monkeypatch.undo()
    m.save()
    assert Manifest(tmp_path).generated_hash(path) == writer.sha256(b"a: 1\n")


# --- caches keyed by stamps (scaffold/stamps.py) ------------------------------------------------------------------


def test_a_cache_keyed_by_stamp_reads_a_changed_file_again(tmp_path: Path):
    """A long-lived process (the pytest plugin, a caller of the Python API) sees every version of a file: a cache of
    its content is keyed by path and stamp, so an edit that keeps the modification time (an editor's save
    renamed over the old file) is read again, and an unchanged file is not."""
    from scaffold.stamps import cached_by_stamp

    reads = []

    @cached_by_stamp()
    def content(path: Path) -> str:
        reads.append(path)
        return path.read_text()

    path = tmp_path / "data.json"
    atomic_write(path, '{"train": [1, 2]}')
    assert content(path) == content(path) == '{"train": [1, 2]}' and len(reads) == 1
    st = os.stat(path)
    atomic_write(path, '{"train": [1, 3]}')  # same size, new inode
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old time
    assert content(path) == '{"train": [1, 3]}'
    path.unlink()
    with pytest.raises(FileNotFoundError):
        content(path)


def test_the_planner_sees_a_dataset_changed_within_one_process(local_example):
    """The planner's dataset split counts were cached by path alone: a second generate in the same process missed
    a dataset changed in between (its split count no longer the summary's)."""
    import json

    from scaffold.commands.generate import generate

    first = generate(local_example.dir, local_config=local_example.local, dry_run=True)
    assert first.exit_status == 0, [p.format() for r in first.runs for p in r.errors]
    dataset = local_example.dir / "data" / "words_5L_80P_10.json"
    data = json.loads(dataset.read_text())
    data["train"] = data["train"][:7]
    dataset.write_text(json.dumps(data))
    second = generate(local_example.dir, local_config=local_example.local, dry_run=True)
    assert second.exit_status == 1
    messages = [p.message for r in second.runs for p in r.errors]
    assert any("data.training.splits.train is 8, but the file has 7 records in 'train'" in m for m in messages), (
        messages
    )


# --- the manifest's journal: what a killed process wrote ---------------------------------------------------------


def test_the_journal_knows_what_a_killed_process_renamed_and_only_that(tmp_path: Path):
    """A run's files are journaled before the first rename: the next process takes a journaled file whose content
    is the journaled one as the tool's own, keeps the old record of one whose rename never happened, adopts the
    run's fingerprint only when all its files are as journaled, and skips a torn last line."""
    from scaffold.output.writer import sha256

    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    m = Manifest(tmp_path)
    for path in (a, b):
        m.record(path, sha256(b"old\n"), atomic_write(path, "old\n"))
    m.record_source("r", "fp-old")
    m.save()
    m = Manifest(tmp_path)
    m.commit({str(a): sha256(b"new\n"), str(b): sha256(b"new\n")}, run="r", source="fp-new")
    atomic_write(a, "new\n")  # renamed; then the process is killed before b's rename and before any record
    m.close()
    with open(tmp_path / ".scaffold-manifest.journal", "ab") as f:
        f.write(b'{"files":{"b.yaml":"')  # a line cut short
    after = Manifest(tmp_path)
    assert after.generated_hash(a) == sha256(b"new\n") and after.generated_hash(b) == sha256(b"old\n")
    assert after.source("r") == "fp-old", "a fingerprint adopted for files that are not all written"
    atomic_write(b, "new\n")
    again = Manifest(tmp_path)
    assert again.generated_hash(b) == sha256(b"new\n") and again.source("r") == "fp-new"
    again.save()
    assert not (tmp_path / ".scaffold-manifest.journal").exists()
    assert Manifest(tmp_path).source("r") == "fp-new"
