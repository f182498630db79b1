"""An inspect-ai task that evaluates a run as cruijff_kit's capitalization task does.

Run as the evaluation step runs it::

    HF_HUB_OFFLINE=1 inspect eval capitalization_task.py --model hf/local -M model_path=RUN/artifacts/epoch_N \\
        -M do_sample=false -T config_path=RUN/setup_finetune.yaml -T data_path=DATA.json \\
        [-T use_chat_template=false] --seed S

What it shares with that task, and what the test relies on: the prompt and the system prompt come from the YAML
file at `config_path` (here the run's own setup_finetune.yaml; "{input}" and "" when absent); each record of the
split becomes one sample whose input is `prompt.format(input=record["input"])` and whose target is its `output`;
chat models (use_chat_template true) get `system_message(system_prompt)` before `generate`, an empty system prompt
included; base models get `generate` alone; scoring by exact match and inclusion. The records are read with the
standard library (that task reads the same file through the `datasets` library, which is not installed here).
"""

from __future__ import annotations

import json

import yaml
from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.scorer import includes, match
from inspect_ai.solver import chain, generate, system_message


def _settings(config_path: str) -> tuple[str, str]:
    if not config_path:
        return "{input}", ""
    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    return config.get("prompt", "{input}"), config.get("system_prompt", "")


@task
def capitalization(
    data_path: str,
    config_path: str = "",
    split: str = "test",
    temperature: float = 1e-7,
    max_tokens: int = 20,
    use_chat_template: bool = True,
) -> Task:
    prompt, system_prompt = _settings(config_path)
    with open(data_path, encoding="utf-8") as f:
        records = json.load(f)[split]
    samples = [Sample(input=prompt.format(input=r["input"]), target=r["output"]) for r in records]
    steps = [generate(temperature=temperature, max_tokens=max_tokens)]
    if use_chat_template:
        steps.insert(0, system_message(system_prompt))
    return Task(
        name="capitalization",
        dataset=MemoryDataset(samples, name=f"capitalization_{split}"),
        solver=chain(*steps),
        scorer=[match(location="exact", ignore_case=False), includes(ignore_case=False)],
    )
