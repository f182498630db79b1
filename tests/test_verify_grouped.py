"""One test per run and file (`--items file`), each running every check of that file and its golden comparison; a
planted defect fails that file's test and names the check. (Above 50 runs `--items auto` collects one test per run:
tests/test_verify_scale.py.)"""

from __future__ import annotations

import re

from .conftest import Experiment, run_cli

RUN = "Llama-3.2-1B-Instruct_rank4"


def verify(exp: Experiment, *args: str):
    return run_cli(
        "verify",
        exp.dir,
        "--local-config",
        exp.local,
        "--no-check-paths",
        "--items",
        "file",
        "-p",
        "no:cacheprovider",
        *args,
    )


def test_grouped_items_pass_then_name_the_failing_check(example: Experiment) -> None:
    assert example.generate("--no-check-paths").code == 0
    assert verify(example, "--snapshot-update").code == 0  # accept golden copies for this experiment
    clean = verify(example)
    assert clean.code == 0, clean.out + clean.err
    assert re.search(rf"::finetune_yaml\[{re.escape(RUN)}\]\s+PASSED", verify(example, "-v").out)
    config = example.dir / RUN / "finetune.yaml"
    config.write_text(config.read_text().replace("lr: 0.0001", "lr: 1.0e-05"))
    res = verify(example)
    assert res.code == 1
    assert "FAILED" in res.out and f"finetune_yaml[{RUN}]" in res.out
    assert "[parameter_values]" in res.out and "[golden]" in res.out
    assert f"finetune_slurm[{RUN}]" not in [ln.split()[-1] for ln in res.out.splitlines() if ln.startswith("FAILED")]


def test_every_mode_groups_the_same_check_target_pairs(verify_template: Experiment) -> None:
    """The plugin builds its tests one way: every (check, target) pair of the registry (the golden comparisons
    among them) once, whichever tests they are grouped into; a pair of the experiment is a test of its own."""
    from scaffold.engine import all_checks
    from scaffold.engine.expectations import Expectations, Options
    from scaffold.verify.plugin import pairs, tests

    expectations = Expectations(Options(verify_template.dir, local_config=verify_template.local, check_paths=False))
    key = lambda t: (t.check.id, t.check.scope, t.ref.name if t.ref else None, t.file)  # noqa: E731
    per_check = pairs(expectations, "check")
    assert len({key(t) for t in per_check}) == len(per_check)
    assert {(c.id, c.scope) for c in all_checks()} == {(t.check.id, t.check.scope) for t in per_check}
    names = {t.test_id(expectations.name) for t in per_check}
    assert f"golden[{RUN}-finetune.yaml]" in names and f"golden[{expectations.name}-arrays]" in names
    for mode in ("check", "file", "run"):
        grouped = tests(expectations, mode)
        assert sorted(key(t) for _, group in grouped for t in group) == sorted(key(t) for t in per_check), mode
        for name, group in grouped:
            assert len({t.ref.name if t.ref else None for t in group}) == 1, name  # one run's, or the experiment's
            if group[0].ref is None or mode == "check":
                assert len(group) == 1 and name == group[0].test_id(expectations.name), name
    by_run = dict(tests(expectations, "run"))
    assert [t.file for t in by_run[f"run[{RUN}]"] if t.check.snapshot] == [
        "setup_finetune.yaml",
        "finetune.yaml",
        "finetune.slurm",
    ]
    by_file = dict(tests(expectations, "file"))
    assert [t.check.id for t in by_file[f"finetune_yaml[{RUN}]"]][-1] == "golden"
