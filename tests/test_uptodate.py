"""The unchanged re-run (scaffold.uptodate) and the stamps that let generate skip reading unchanged files.

The shortcut may only ever give the answer the ordinary path gives: the same report when nothing changed, and
no answer at all (so the ordinary path runs) when anything it depends on changed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from scaffold import uptodate
from scaffold.discover import MANIFEST
from scaffold.generate import generate
from scaffold.report import as_json
from scaffold.writer import RACY_NS, Manifest, atomic_write

from .conftest import Experiment, make_model_dir

RANK4 = "Llama-3.2-1B-Instruct_rank4"
FILES = ("setup_finetune.yaml", "finetune.yaml", "finetune.slurm")


def shortcut(exp: Experiment, check_paths: bool = False):
    return uptodate.try_unchanged(exp.dir, local_config=exp.local, check_paths=check_paths)


def generated(exp: Experiment, check_paths: bool = False) -> Experiment:
    report = generate(exp.dir, local_config=exp.local, check_paths=check_paths)
    assert report.exit_status == 0, [r.errors for r in report.runs]
    return exp


def age_manifest(exp: Experiment) -> None:
    """Move the manifest's saving well after the files were written (as a re-run minutes later sees it)."""
    body = json.loads((exp.dir / MANIFEST).read_text())
    body["saved_ns"] += 10 * RACY_NS
    (exp.dir / MANIFEST).write_text(json.dumps(body))


def comparable(report) -> dict:
    doc = json.loads(as_json(report))
    doc.pop("seconds")
    return doc


def test_an_unchanged_rerun_is_answered_from_the_manifest_with_the_ordinary_report(example: Experiment):
    generated(example)
    fast = shortcut(example)
    assert fast is not None
    slow = generate(example.dir, local_config=example.local, check_paths=False)
    assert comparable(fast) == comparable(slow)
    assert {s for r in fast.runs for s in r.files.values()} == {"unchanged"}
    log = (example.dir / "logs" / "scaffold-torchtune.log").read_text()
    assert "nothing changed since the last generation" in log
    assert log.count(f"===== run {RANK4} ") == 3  # generated, answered at once, then by the ordinary path


def test_the_cli_takes_the_shortcut_and_prints_the_same_json(example: Experiment):
    first = example.generate("--no-check-paths", "--json")
    assert first.code == 0, first.err
    again = example.generate("--no-check-paths", "--json")
    forced_slow = example.generate("--no-check-paths", "--json", env={"SCAFFOLD_NO_SHORTCUT": "1"})
    assert again.code == forced_slow.code == 0
    a, b = json.loads(again.out), json.loads(forced_slow.out)
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    log = (example.dir / "logs" / "scaffold-torchtune.log").read_text()
    assert log.count("nothing changed since the last generation") == 1  # the forced one went the long way


def test_the_first_generation_has_no_shortcut(example: Experiment):
    assert shortcut(example) is None


@pytest.mark.parametrize(
    "change",
    [
        "summary_text",
        "summary_whitespace",
        "local_config",
        "dataset",
        "check_paths_option",
        "tool_file",
        "run_dir_removed",
        "run_dir_is_a_link",
        "file_edited",
        "file_removed",
        "control_dir_removed",
        "manifest_source_missing",
    ],
)
def test_any_change_sends_the_rerun_the_ordinary_way(example: Experiment, change: str, monkeypatch, tmp_path):
    generated(example)
    age_manifest(example)
    assert shortcut(example) is not None
    check_paths = False
    run = example.dir / RANK4
    if change == "summary_text":
        example.summary.write_text(example.summary.read_text().replace("seed: 14", "seed: 15", 1))
    elif change == "summary_whitespace":
        example.summary.write_text(example.summary.read_text() + "\n")
    elif change == "local_config":
        example.local.write_text(example.local.read_text() + "\n# a comment\n")
    elif change == "dataset":
        dataset = next((example.dir / "data").glob("*.json"))
        dataset.write_text(dataset.read_text() + " ")
    elif change == "check_paths_option":
        check_paths = True
    elif change == "tool_file":
        real = uptodate.tool_signature()
        monkeypatch.setattr(uptodate, "tool_signature", lambda: [*real, ["templates/new.j2", 1, 1]])
    elif change == "run_dir_removed":
        shutil.rmtree(run)
    elif change == "run_dir_is_a_link":
        moved = tmp_path / "elsewhere"
        shutil.move(run, moved)
        run.symlink_to(moved)
    elif change == "file_edited":
        (run / "finetune.yaml").write_text((run / "finetune.yaml").read_text() + "# edited\n")
    elif change == "file_removed":
        (run / "finetune.slurm").unlink()
    elif change == "control_dir_removed":
        shutil.rmtree(example.dir / "Llama-3.2-1B-Instruct_base")
    elif change == "manifest_source_missing":
        body = json.loads((example.dir / MANIFEST).read_text())
        del body["sources"][RANK4]
        (example.dir / MANIFEST).write_text(json.dumps(body))
    assert uptodate.try_unchanged(example.dir, local_config=example.local, check_paths=check_paths) is None


def test_a_model_file_that_goes_away_is_seen(local_example: Experiment, tmp_path: Path):
    generated(local_example, check_paths=True)
    age_manifest(local_example)
    assert shortcut(local_example, check_paths=True) is not None
    (tmp_path / "models" / "Llama-3.2-1B-Instruct" / "model.safetensors").unlink()
    assert shortcut(local_example, check_paths=True) is None
    make_model_dir(tmp_path / "models" / "Llama-3.2-1B-Instruct", ["model.safetensors"])
    # Back, but not as it was (another inode and time): the ordinary path runs, finds nothing to change,
    # and records the new state.
    assert shortcut(local_example, check_paths=True) is None
    generated(local_example, check_paths=True)
    assert shortcut(local_example, check_paths=True) is not None


def test_a_write_drops_the_state_on_disk_before_the_first_file_changes(example: Experiment, monkeypatch):
    generated(example)
    example.summary.write_text(example.summary.read_text().replace("seed: 14", "seed: 15", 1))
    import scaffold.generate as gen

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as if killed at the first write

    monkeypatch.setattr(gen, "write", killed)
    monkeypatch.setattr(gen, "write_new", killed)
    with pytest.raises(KeyboardInterrupt):
        generate(example.dir, local_config=example.local, check_paths=False)
    assert "state" not in json.loads((example.dir / MANIFEST).read_text())


def test_a_failed_run_records_no_state(example: Experiment):
    data = example.load()
    data["runs"][0]["model"] = "no-such-model"
    example.save(data)
    report = generate(example.dir, local_config=example.local, check_paths=False)
    assert report.exit_status == 1
    assert "state" not in json.loads((example.dir / MANIFEST).read_text())
    assert shortcut(example) is None


# --- stamps ----------------------------------------------------------------------------------------------------


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
    import scaffold.writer as writer

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
