"""The planner is pure: what it needs of the disk it asks a probe (scaffold/probe.py), so a sweep plans with a fake
probe and no experiment, dataset or model on disk, and what the probe answers is what the runs' problems say."""

from __future__ import annotations

import inspect
from collections import Counter
from pathlib import Path

import pytest

from scaffold import plan, precedence, probe
from scaffold.inputs import localconfig, summary

from .conftest import EXAMPLE, EXAMPLE_LOCAL

NOWHERE = Path("/nonexistent/experiments/cap")  # no file of the experiment is looked at
TRAIN_RECORDS = 8
RUN = "Llama-3.2-1B-Instruct_rank4_s1"  # the name the sweep gives its run of rank 4, seed 1


class FakeProbe:
    """Answers as a complete experiment on a cluster would, less what a test takes away; counts the questions."""

    def __init__(self, **answers):
        self.asked: Counter[str] = Counter()
        self.dataset_facts = answers.get(
            "dataset", probe.DatasetFacts({"train": TRAIN_RECORDS, "validation": 1, "test": 1}, {})
        )
        self.missing = answers.get("missing", [])
        self.tokenizer = answers.get("tokenizer", probe.TokenizerFacts(config=True, chat_template=True))
        self.links = answers.get("links", frozenset())
        self.link_target = answers.get("link_target")

    def symlinks(self, directory: Path) -> frozenset[str]:
        self.asked["symlinks"] += 1
        return self.links

    def link_elsewhere(self, run_dir: Path) -> Path | None:
        self.asked["link_elsewhere"] += 1
        return self.link_target

    def dataset(self, path: Path) -> probe.DatasetFacts | None:
        self.asked["dataset"] += 1
        return self.dataset_facts

    def missing_files(self, directory: Path, names) -> list[str] | None:
        self.asked["missing_files"] += 1
        return self.missing

    def hf_tokenizer(self, model_dir: Path) -> probe.TokenizerFacts:
        self.asked["hf_tokenizer"] += 1
        return self.tokenizer

    def is_directory(self, path: Path) -> bool:
        self.asked["is_directory"] += 1
        return True

    def is_venv(self, path: Path) -> bool:
        self.asked["is_venv"] += 1
        return True

    def recognise_model(self, name, models, model_dir):
        raise AssertionError("every model of the example is in the registry")

    def recorded_models(self, experiment_dir: Path) -> dict:
        self.asked["recorded_models"] += 1
        return {}

    def condition_resolver(self):
        self.asked["condition_resolver"] += 1
        return None


def _sweep(ranks: list[int], seeds: list[int]) -> summary.Summary:
    """The example experiment as a sweep of len(ranks) x len(seeds) runs, read from text at a path that is not there."""
    text = (EXAMPLE / "experiment_summary.yaml").read_text(encoding="utf-8")
    text = text.replace("  lora_rank: [4, 8]\n", f"  lora_rank: {ranks}\n  seed: {seeds}\n")
    text = text.replace("  seed: 14\n", "")
    head, _, _ = text.partition("\nruns:\n")  # the runs come from `variables` alone
    return summary.load(NOWHERE / "experiment_summary.yaml", text=head + "\n")


def _plan(fake: FakeProbe, ranks=(4, 8), seeds=(1, 2, 3)) -> plan.Plan:
    return plan.make_plan(_sweep(list(ranks), list(seeds)), localconfig.load(EXAMPLE_LOCAL), probe=fake)


def test_a_sweep_plans_with_a_fake_probe_and_no_files() -> None:
    fake = FakeProbe()
    p = _plan(fake, ranks=(4, 8, 16), seeds=(1, 2, 3, 4))
    assert len(p.runs) == 12
    assert all(rp.problems == [] and rp.setup is not None for rp in p.runs), [rp.problems for rp in p.runs]
    assert {rp.setup["lora_rank"] for rp in p.runs} == {4, 8, 16}
    assert all(rp.steps is not None and rp.steps.records == TRAIN_RECORDS for rp in p.runs)
    # each question once per plan, whatever the number of runs (the planner keeps what its runs share)
    assert fake.asked == Counter(symlinks=1, dataset=1, missing_files=1, hf_tokenizer=1)


def test_the_fakes_missing_dataset_is_every_runs_problem() -> None:
    p = _plan(FakeProbe(dataset=None))
    local = NOWHERE / "data" / "words_5L_80P_10.json"  # the summary's dataset, where this machine would read it
    for rp in p.runs:
        assert [(x.message, x.field) for x in rp.problems] == [(f"dataset not found: {local}", "data.training.path")]
        assert rp.setup is not None and rp.steps is None


def test_the_fakes_dataset_facts_reach_the_problems() -> None:
    facts = probe.DatasetFacts(
        {"train": 5, "validation": 1, "test": 1}, {"train": "record train[2] is not an object (1 of 5)"}
    )
    (rp, *_) = _plan(FakeProbe(dataset=facts)).runs
    assert [x.field for x in rp.problems] == ["data.training.path", "data.training.splits.train"]
    assert "record train[2] is not an object" in rp.problems[0].message
    assert "data.training.splits.train is 8, but the file has 5 records" in rp.problems[1].message
    assert rp.steps is not None and rp.steps.records == 5


@pytest.mark.parametrize(
    ("answers", "says"),
    [
        ({"missing": None}, "model directory not found: /scratch/nlplab/pretrained-llms/Llama-3.2-1B-Instruct"),
        ({"missing": ["config.json"]}, "model files missing in /scratch/nlplab/pretrained-llms/Llama-3.2-1B-Instruct"),
        ({"tokenizer": probe.TokenizerFacts(config=False, chat_template=False)}, "no Hugging Face tokenizer in"),
        ({"tokenizer": probe.TokenizerFacts(config=True, chat_template=False)}, "no chat template in"),
        ({"links": frozenset({RUN}), "link_target": Path("/elsewhere")}, "is a symbolic link to /elsewhere"),
    ],
    ids=["no-model-dir", "model-file-missing", "no-tokenizer", "no-chat-template", "run-dir-linked-elsewhere"],
)
def test_what_the_fake_says_of_the_model_and_the_run_directory_is_a_problem(answers: dict, says: str) -> None:
    (rp,) = _plan(FakeProbe(**answers), ranks=(4,), seeds=(1,)).runs
    assert rp.name == RUN
    assert [x.field for x in rp.problems] == ["runs[0].name" if "links" in answers else "runs[0].model"]
    assert says in rp.problems[0].message


def test_without_path_checks_only_the_experiments_own_files_are_asked_about() -> None:
    fake = FakeProbe(missing=None, tokenizer=None)  # a model directory not mounted here
    p = plan.make_plan(_sweep([4, 8], [1]), localconfig.load(EXAMPLE_LOCAL), check_paths=False, probe=fake)
    assert all(rp.problems == [] and rp.setup is not None for rp in p.runs)
    assert fake.asked == Counter(symlinks=1, dataset=1)  # the dataset is inside the experiment: checked anyway


def test_the_disk_probe_answers_every_question_of_the_interface() -> None:
    questions = {n for n, f in inspect.getmembers(probe.Probe, inspect.isfunction) if not n.startswith("_")}
    assert questions <= {n for n in dir(probe.DiskProbe) if not n.startswith("_")}
    assert questions <= {n for n in dir(FakeProbe) if not n.startswith("_")}


def test_the_disk_probe_reads_a_changed_dataset_again(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text('{"train": [{"input": "a", "output": "A"}]}', encoding="utf-8")
    disk = probe.DiskProbe()
    assert disk.dataset(path) == probe.DatasetFacts({"train": 1}, {})
    path.write_text('{"train": [{"input": "a", "output": "A"}, {"input": "b"}]}', encoding="utf-8")
    assert disk.dataset(path) == probe.DatasetFacts(
        {"train": 2}, {"train": "record train[1] has no text 'output' (1 of 2 records are not {input, output})"}
    )
    assert disk.dataset(tmp_path / "absent.json") is None


def test_the_precedence_table_names_where_a_value_came_from() -> None:
    local = localconfig.load(EXAMPLE_LOCAL)
    s = _sweep([4], [1])
    run = dict(s.data["runs"][0])

    def gpus(run: dict, resources: dict) -> tuple:
        return precedence.first(precedence.GPUS, precedence.RunInputs(run, 0, s, resources, local))

    assert gpus(run, {}) == (1, "the local config's default gpus")
    assert gpus(run, {"gpus": 4}) == (4, f"the model registry entry of {run['model']}")
    assert gpus({**run, "compute": {"gpus": 2}}, {"gpus": 4}) == (2, "runs[0].compute.gpus")
    time = precedence.first(precedence.TIME, precedence.RunInputs(run, 0, s, {}, local))
    assert time == ("00:59:00", "the local config's default time")
