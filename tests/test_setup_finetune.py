"""`scaffold setup-finetune`: re-render one run from a hand-edited setup_finetune.yaml, with flag overrides."""

from __future__ import annotations

import yaml
from omegaconf import OmegaConf

from .conftest import Experiment, run_cli

RUN = "Llama-3.2-1B-Instruct_rank4"


def _cfg(run_dir):
    return OmegaConf.to_container(OmegaConf.load(run_dir / "finetune.yaml"), resolve=True)


def test_hand_edit_then_rerender(local_example: Experiment) -> None:
    assert local_example.generate().code == 0
    run_dir = local_example.dir / RUN
    setup = run_dir / "setup_finetune.yaml"
    setup.write_text(setup.read_text().replace("epochs: 1", "epochs: 3").replace("time: 00:59:00", 'time: "02:00:00"'))
    res = run_cli("setup-finetune", cwd=run_dir)
    assert res.code == 0, res.out + res.err
    assert _cfg(run_dir)["epochs"] == 3
    assert "#SBATCH --time=02:00:00" in (run_dir / "finetune.slurm").read_text()
    # generate keeps the hand-edited setup (and the files rendered from it) rather than silently reverting them
    again = local_example.generate()
    assert again.code == 1 and "edited by hand" in again.out
    assert _cfg(run_dir)["epochs"] == 3


def test_flags_override_and_are_recorded(local_example: Experiment) -> None:
    assert local_example.generate().code == 0
    run_dir = local_example.dir / RUN
    res = run_cli("setup-finetune", "--lr", "1e-5", "--lora-dropout=0.1", cwd=run_dir)
    assert res.code == 0, res.out + res.err
    cfg = _cfg(run_dir)
    assert cfg["optimizer"]["lr"] == 1e-5 and cfg["model"]["lora_dropout"] == 0.1
    recorded = yaml.safe_load((run_dir / "setup_finetune.yaml").read_text())
    assert recorded["lora_dropout"] == 0.1 and recorded["lr"] == 1e-5


def test_rank_flag_moves_alpha_but_the_run_name_still_disagrees(local_example: Experiment) -> None:
    assert local_example.generate().code == 0
    run_dir = local_example.dir / RUN
    res = run_cli("setup-finetune", "--lora-rank=16", cwd=run_dir)
    cfg = _cfg(run_dir)
    assert cfg["model"]["lora_rank"] == 16 and cfg["model"]["lora_alpha"] == 32  # alpha was 2 x rank: it follows
    assert res.code == 1 and "run_name_tokens: the run name says rank4: expected 4, found 16" in res.err


def test_unknown_flag_gets_a_suggestion(local_example: Experiment) -> None:
    assert local_example.generate().code == 0
    res = run_cli("setup-finetune", "--lora_ranl", "16", cwd=local_example.dir / RUN)
    assert res.code == 2
    assert "unknown setting 'lora_ranl'" in res.err and "did you mean 'lora_rank'" in res.err
    assert "Traceback" not in res.err


def test_unknown_key_in_file_gets_a_suggestion_with_line(local_example: Experiment) -> None:
    assert local_example.generate().code == 0
    setup = local_example.dir / RUN / "setup_finetune.yaml"
    before = (local_example.dir / RUN / "finetune.yaml").read_bytes()
    setup.write_text(setup.read_text().replace("epochs: 1", "epocs: 2"))
    res = run_cli("setup-finetune", cwd=local_example.dir / RUN)
    assert res.code == 2
    assert "setup_finetune.yaml:" in res.err and "unknown key 'epocs'" in res.err and "did you mean 'epochs'" in res.err
    assert (local_example.dir / RUN / "finetune.yaml").read_bytes() == before


def test_unquoted_time_in_setup_is_explained(local_example: Experiment) -> None:
    assert local_example.generate().code == 0
    setup = local_example.dir / RUN / "setup_finetune.yaml"
    setup.write_text(setup.read_text().replace("time: 00:59:00", "time: 4:00:00"))
    res = run_cli("setup-finetune", cwd=local_example.dir / RUN)
    assert res.code == 2
    assert "YAML read 4:00:00 as the number 14400" in res.err and 'quote it: "4:00:00"' in res.err


def test_more_gpus_switches_to_distributed(local_example: Experiment) -> None:
    assert local_example.generate().code == 0
    run_dir = local_example.dir / RUN
    res = run_cli("setup-finetune", "--gpus", "2", cwd=run_dir)
    assert res.code == 0, res.out + res.err
    script = (run_dir / "finetune.slurm").read_text()
    assert "tune run --nproc_per_node 2 lora_finetune_distributed" in script and "--gres=gpu:2" in script
    assert "compile" in _cfg(run_dir)  # optional for the distributed recipe, still read by it
