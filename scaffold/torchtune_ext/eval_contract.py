"""The evaluator contract: what a run's epoch directory must hold so that its evaluator feeds the model exactly the
prompt tokens the run trained on.

The evaluator is cruijff_kit's evaluation step: inspect-ai's Hugging Face provider with `model_path` = the run's
`artifacts/epoch_N`. It loads the tokenizer and the chat template from that directory (torchtune's checkpointer
copies the model directory's tokenizer files there), renders each sample with
`apply_chat_template(messages, add_generation_prompt=True, tokenize=False)` (no `date_string`), or, without a chat
template, as `f"{role}: {content}\\n"` per message, and tokenizes that text with the tokenizer's special tokens on.
cruijff_kit's tasks send `[system(system_prompt), user(prompt)]` to chat models (an empty system prompt included)
and `[user(prompt)]` to base models.

Training keeps each model's own format (docs/training.md says why, point by point): for chat runs the tokens of
`apply_chat_template(..., tokenize=True)` with the run's fixed `chat_template_date` and the system turn always
present; for base-model runs the plain encoding of the filled prompt. The post-training step then makes the
evaluator's path give exactly those tokens, by three edits of each epoch directory's tokenizer files
(`prepare`):

- chat runs, the BOS: the tokenizer adds no special tokens of its own (its post-processor's special tokens are
  removed, `add_bos_token`/`add_eos_token` turned off), so the BOS the chat template writes is the only one. Plain
  `apply_chat_template(tokenize=True)` is unchanged by this (it never lets the tokenizer add any); a plain
  `tokenizer(text)` of that directory no longer starts with a BOS.
- chat runs, the date: the chat template's `date_string`, when the caller gives none, is the run's training date
  instead of the day the template is applied. A caller that passes `date_string` still gets its own.
- base-model runs, the prompt form: the chat template is one that writes each message's content verbatim (no
  roles, no special tokens), so the evaluator feeds the filled prompt as the plain encoding that trained (the
  tokenizer's own BOS included), instead of its `user: PROMPT` fallback or a template the base model never saw.

Standard library only: the post-training step runs it in the training environment after `tune run`, and the
verification suite applies the same `prepare` to a copy of the model directory's tokenizer files to get the
tokenizer the evaluator will load.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

EVALUATOR = "inspect-ai-hf"  # the only contract today: inspect-ai's Hugging Face provider, as cruijff_kit runs it
TOKENIZER_CONFIG = "tokenizer_config.json"
TOKENIZER_JSON = "tokenizer.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
# The chat template of a base-model run's epoch directory: each message's content as it is.
PLAIN_TEMPLATE = "{%- for message in messages %}{{- message['content'] }}{%- endfor %}"
# Put before a chat template: the date a caller does not give is the training date (Llama 3.x templates read
# `date_string`; templates that do not are unchanged by it).
_DATE_MARK = "{#- scaffold-torchtune: training date -#}"
_DATE_DEFAULT = re.compile(re.escape(_DATE_MARK) + r"\{%- if date_string is not defined %\}.*?\{%- endif %\}", re.S)
# Files of a model directory the evaluator's tokenizer is made of (what the checkpointer copies, less weights).
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")


def messages(dataset_type: str, system_prompt: str | None, user: str) -> list[dict[str, str]]:
    """The messages the evaluator sends for one sample: chat models always get the system turn (cruijff_kit's
    tasks insert `system_message(system_prompt)`, an empty one included); base models get the user turn alone."""
    if dataset_type == "chat_completion":
        return [{"role": "system", "content": system_prompt or ""}, {"role": "user", "content": user}]
    return [{"role": "user", "content": user}]


def with_date_default(template: str, date: str) -> str:
    """`template` whose `date_string`, when the caller gives none, is `date` (an earlier default is replaced); a
    template that reads no `date_string` is returned as it is."""
    if "date_string" not in template:
        return template
    template = _DATE_DEFAULT.sub("", template, count=1) if template.startswith(_DATE_MARK) else template
    return f"{_DATE_MARK}{{%- if date_string is not defined %}}{{%- set date_string = {json.dumps(date)} %}}{{%- endif %}}{template}"


def without_special_tokens(post_processor: Any) -> Any:
    """A tokenizer.json post-processor that adds no special tokens (TemplateProcessing entries lose theirs, also
    inside a Sequence; other processors, e.g. ByteLevel, are kept)."""
    if not isinstance(post_processor, dict):
        return post_processor
    kind = post_processor.get("type")
    if kind == "Sequence":
        return {**post_processor, "processors": [without_special_tokens(p) for p in post_processor["processors"]]}
    if kind == "TemplateProcessing":
        return {
            **post_processor,
            "single": [{"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {},
        }
    if kind in ("BertProcessing", "RobertaProcessing"):  # they always add their CLS/SEP: replace by nothing
        return None
    return post_processor


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _write_atomically(path: Path, text: str) -> None:
    """A reader sees the old file or the new one, never half of one; the file keeps its permissions."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomically(path: Path, data: Any) -> None:
    """Write `data` as JSON to `path` through a temporary file in the same directory and a rename (the post step's
    edits of tokenizer and adapter files): a reader sees the old file or the new one; the file keeps its
    permissions."""
    _write_atomically(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _templates(directory: Path) -> tuple[dict | None, str | None]:
    """(tokenizer_config.json as a dict or None, the chat template file's text or None)."""
    config_path, file_path = directory / TOKENIZER_CONFIG, directory / CHAT_TEMPLATE_FILE
    config = _read_json(config_path) if config_path.is_file() else None
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"{config_path} is not a JSON object")
    text = file_path.read_text(encoding="utf-8") if file_path.is_file() else None
    return config, text


def _map_templates(config: dict, text: str | None, change: Any) -> tuple[dict, str | None]:
    """Apply `change` to every chat template of the directory (the config's string or named list, the file)."""
    value = config.get("chat_template")
    if isinstance(value, str):
        config = {**config, "chat_template": change(value)}
    elif isinstance(value, list):
        config = {
            **config,
            "chat_template": [
                {**t, "template": change(t["template"])} if isinstance(t, dict) and "template" in t else t
                for t in value
            ],
        }
    return config, (change(text) if text is not None else None)


def prepare(directory: str | os.PathLike, *, dataset_type: str, chat_template_date: str | None) -> list[str]:
    """Edit the tokenizer files of one directory (an epoch directory, or a copy of the model directory's) so that
    the evaluator feeds what the run trained on (see the module's docstring). Idempotent. Returns what it changed,
    one phrase each. Raises ValueError for a file that is not what it should be, OSError when it cannot write."""
    directory = Path(directory)
    changed: list[str] = []
    config, text = _templates(directory)
    if config is None:
        raise ValueError(f"{directory} has no {TOKENIZER_CONFIG}: the evaluator loads its tokenizer from here")
    before_config, before_text = dict(config), text
    tokenizer_json = directory / TOKENIZER_JSON
    if dataset_type == "chat_completion":
        if not (config.get("chat_template") or text):
            raise ValueError(f"{directory} has no chat template: a chat run is evaluated through it")
        if chat_template_date:
            config, text = _map_templates(config, text, lambda t: with_date_default(t, chat_template_date))
        for key in ("add_bos_token", "add_eos_token"):
            if config.get(key):
                config = {**config, key: False}
                changed.append(f"{key} false")
        if tokenizer_json.is_file():
            data = _read_json(tokenizer_json)
            if not isinstance(data, dict):
                raise ValueError(f"{tokenizer_json} is not a JSON object")
            post_processor = without_special_tokens(data.get("post_processor"))
            if post_processor != data.get("post_processor"):
                write_json_atomically(tokenizer_json, {**data, "post_processor": post_processor})
                changed.append("the tokenizer adds no special tokens (the chat template writes them)")
    else:
        config = {**config, "chat_template": PLAIN_TEMPLATE}
        text = PLAIN_TEMPLATE if text is not None else None
    if (config.get("chat_template"), text) != (before_config.get("chat_template"), before_text):
        changed.append(
            f"chat template: date default {chat_template_date!r}"
            if dataset_type == "chat_completion"
            else "plain chat template (the prompt as it is, as the base model trained)"
        )
    if text != before_text:
        _write_atomically(directory / CHAT_TEMPLATE_FILE, text or "")
    if config != before_config:
        write_json_atomically(directory / TOKENIZER_CONFIG, config)
    return changed


def copy_tokenizer_files(model_dir: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy the files of a model directory that are not weights (what torchtune's checkpointer copies into each
    epoch directory) into `target`; the target."""
    source, target = Path(model_dir), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and not path.name.endswith(_WEIGHTS):
            shutil.copy2(path, target / path.name)
    return target
