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
