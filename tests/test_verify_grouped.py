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
