"""The corpus of hostile experiment repositories and failing clusters (tests/hostile/, see its README): links planted
in a cloned experiment, damaged state files, SLURM clients that print junk or hang. Every case is answered with one
error line naming the path, the cause and the fix, never an internal error; nothing outside the experiment is read,
written or printed; and no job is queued twice or lost.

Each case starts from the shipped example generated afresh in its own directory (experiment.dir removed, so the
batch scripts name the copy and `submit` can queue them), lays its plants over it, and runs its command in-process
through `scaffold.commands.cli.main`, as the console script does. Around the experiment lie files a link may point
at: `victim.txt` (something to overwrite or append to), `secret.txt` (something to leak) and `elsewhere/` (a
directory to write into); they must be exactly as they were, and the secret's text must appear in no output and
in no file of the experiment.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from scaffold.commands import cli
from scaffold.slurm import sbatch

from .conftest import EXAMPLE, EXAMPLE_LOCAL

CORPUS = Path(__file__).resolve().parent / "hostile"
CASES = sorted(p for p in CORPUS.iterdir() if (p / "case.yaml").is_file())
SECRET = "TOP-SECRET-7f3a91 do not print"
OUTSIDE = {"victim.txt": "the victim's own file\n", "secret.txt": SECRET + "\n", "elsewhere/note.txt": "elsewhere\n"}
# A well-behaved stand-in sbatch (a case may give its own): job ids from 100, one line each, every call counted.
SBATCH = """#!/bin/bash
n=$(cat "$STUB_DIR/next" 2>/dev/null || echo 100)
echo $((n + 1)) > "$STUB_DIR/next"
echo "queued $n" >> "$STUB_DIR/queued"
echo "$n"
"""
SINFO = "#!/bin/bash\necho gpu\n"
SCONTROL = '#!/bin/bash\necho "MaxArraySize            = 1001"\n'
TOOLS = ("sbatch", "sinfo", "scontrol")


def expectation(case: Path) -> dict:
    expect = yaml.safe_load((case / "case.yaml").read_text(encoding="utf-8"))
    expect.setdefault("command", "generate")
    expect.setdefault("args", [])
    expect.setdefault("plant", [])
    expect.setdefault("fix", True)
    return expect


@dataclass
class Outcome:
    code: int
    text: str


def invoke(root: Path, command: str, args: list[str]) -> Outcome:
    """`scaffold COMMAND ...` in-process, in `root`, on the experiment cap/ (setup-finetune: in its rank4 run)."""
    if command == "setup-finetune":
        argv = [
            "setup-finetune",
            "--dir",
            "cap/Llama-3.2-1B-Instruct_rank4",
            "--local-config",
            "scaffold.local.yaml",
            "--no-check-paths",
        ]
    elif command == "submit":
        argv = ["submit", "cap", "--local-config", "scaffold.local.yaml"]
    else:
        argv = [command, "cap", "--local-config", "scaffold.local.yaml", "--no-check-paths"]
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv + args)
    finally:
        os.chdir(cwd)
    return Outcome(code, out.getvalue() + err.getvalue())


def plant(root: Path, step: dict) -> None:
    """One plant: a link, a directory, a file's text (or bytes, `hex`), a mode, or a removal, at a path under root."""
    (what, where), *_ = ((k, step[k]) for k in ("link", "dir", "write", "remove", "chmod") if k in step)
    path = root / where
    if what != "chmod":
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
    if what == "remove":
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if what == "link":
        path.symlink_to(step["to"])
    elif what == "dir":
        path.mkdir()
    elif what == "write":
        path.write_bytes(bytes.fromhex(step["hex"]) if "hex" in step else step.get("text", "").encode("utf-8"))
    else:
        path.chmod(int(step["mode"], 8))


def outside_files(root: Path) -> dict[str, bytes]:
    """Every file under root but outside cap/ and the stand-in clients' directory."""
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if rel.parts[:1] in (("cap",), ("bin",)):
            continue
        for name in names:
            p = Path(dirpath) / name
            if not p.is_symlink():
                out[(rel / name).as_posix()] = p.read_bytes()
    return out


def leaked(root: Path) -> list[str]:
    """Files of the experiment (not through links) that hold the secret's text."""
    hits = []
    for dirpath, _dirs, names in os.walk(root / "cap"):
        for name in names:
            p = Path(dirpath) / name
            if not p.is_symlink() and stat.S_ISREG(p.lstat().st_mode) and SECRET.encode() in p.read_bytes():
                hits.append(p.relative_to(root).as_posix())
    return hits


@pytest.fixture
def work(tmp_path: Path, monkeypatch) -> Path:
    """The example generated in tmp_path/work/cap, the outside files beside it, and stand-in SLURM clients on PATH."""
    monkeypatch.delenv("SCAFFOLD_LOCAL_CONFIG", raising=False)
    root = tmp_path / "work"
    shutil.copytree(
        EXAMPLE, root / "cap", ignore=shutil.ignore_patterns("Llama-*", "logs", "arrays", ".scaffold-manifest.json")
    )
    shutil.copy(EXAMPLE_LOCAL, root / "scaffold.local.yaml")
    summary = root / "cap" / "experiment_summary.yaml"
    text = summary.read_text(encoding="utf-8")
    summary.write_text("".join(ln for ln in text.splitlines(True) if not ln.startswith("  dir: ")), encoding="utf-8")
    for name, content in OUTSIDE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content, encoding="utf-8")
    res = invoke(root, "generate", [])
    assert res.code == 0, res.text
    (root / "bin").mkdir()
    monkeypatch.setenv("PATH", f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STUB_DIR", str(root / "bin"))
    monkeypatch.setenv("SLURM_CONF", "")
    return root


def test_the_corpus_is_large_and_listed():
    assert len(CASES) >= 50
    readme = (CORPUS / "README.md").read_text(encoding="utf-8")
    assert not [c.name for c in CASES if f"| `{c.name}` |" not in readme], "list every case in the README's table"
    for case in CASES:
        expect = expectation(case)
        assert expect["about"] and expect["exit"] in (0, 1, 2) and expect["message"], case.name


def assert_line(res: Outcome, parts: list[str], fix: bool) -> None:
    lines = [ln for ln in res.text.splitlines() if all(p in ln for p in parts)]
    assert lines, f"no line with {parts} in:\n{res.text}"
    if fix:
        assert any("(fix: " in ln for ln in lines), f"no fix in: {lines}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_case(case: Path, work: Path, monkeypatch):
    expect = expectation(case)
    if "timeout" in expect:  # a hanging client: the clients' timeout shortened (30 s on a cluster)
        monkeypatch.setattr(sbatch, "QUERY_TIMEOUT_S", float(expect["timeout"]))
    for name, text in (("sbatch", expect.get("sbatch", SBATCH)), ("sinfo", expect.get("sinfo", SINFO))):
        (work / "bin" / name).write_text(text)
    (work / "bin" / "scontrol").write_text(expect.get("scontrol", SCONTROL))
    for name in TOOLS:
        (work / "bin" / name).chmod(0o755)
    for step in expect["plant"]:
        plant(work, step)
    before = outside_files(work)
    res = invoke(work, expect["command"], expect["args"])
    assert "Traceback" not in res.text and "internal error" not in res.text, res.text
    assert res.code == expect["exit"], res.text
    assert_line(res, expect["message"], expect["fix"])
    if "again" in expect:  # the same command once more (e.g. a second submit): what it must say
        again = expect["again"]
        res2 = invoke(work, again.get("command", expect["command"]), again.get("args", expect["args"]))
        assert "Traceback" not in res2.text and "internal error" not in res2.text, res2.text
        assert res2.code == again["exit"], res2.text
        assert_line(res2, again["message"], again.get("fix", False))
        res = Outcome(res2.code, res.text + res2.text)
    if "queued" in expect:  # jobs the stand-in sbatch created, over both invocations
        calls = work / "bin" / "queued"
        assert (len(calls.read_text().splitlines()) if calls.exists() else 0) == expect["queued"], res.text
    assert outside_files(work) == before, "a file outside the experiment was written"
    assert SECRET not in res.text, "the content of a file outside the experiment was printed"
    assert not leaked(work), f"the content of a file outside the experiment was copied in: {leaked(work)}"
