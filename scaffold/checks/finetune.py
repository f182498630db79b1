"""Checks of finetune.yaml, read as torchtune reads it, against the run's expectations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import rules
from ..engine import check
from ..engine.context import RunContext, RunView, inside
from ..engine.expectations import RunExpectation
from ..engine.findings import NotApplicable
from ..engine.generated import components
from ..errors import Problem, suggest
from ..inputs import params
from ..layout import FINE_TUNED, FINETUNE_FILE
from ..render import DATASET_BUILDERS
from ..resources import load_data
from ..runplanner import checkpoint_file_names

REGEN = "regenerate with `scaffold generate` (or `scaffold setup-finetune` in the run directory)"


@check("finetune_yaml_loads", scope=FINE_TUNED, file=FINETUNE_FILE, texts=True)
def finetune_yaml_loads(run: RunView) -> Iterator[Problem]:
    """finetune.yaml loads as torchtune loads it: OmegaConf, no duplicate keys, every interpolation resolves."""
    run.require(FINETUNE_FILE)
    err = run.config_error()
    if err is not None:
        yield run.problem(f"torchtune cannot load it: {err.message}", line=err.line, fix=REGEN)


def recipe_keys(recipe: str) -> tuple[set[str], set[str]] | None:
    """(required, optional) top-level keys a recipe reads (templates/recipes.yaml), or None when unknown."""
    keys = load_data("recipes.yaml").get(recipe)
    if keys is None:
        return None
    return set(keys.get("required", ())), set(keys.get("optional", ()))


@check("recipe_keys", scope=FINE_TUNED, file=FINETUNE_FILE, texts=True)
def recipe_keys_present(run: RunView) -> Iterator[Problem]:
    """Every top-level key the run's recipe requires is present, and no key is one the recipe never reads."""
    recipe = run.expected().recipe
    cfg = run.config().data
    keys = recipe_keys(recipe)
    if keys is None:
        yield run.problem(
            f"no key list for recipe {recipe} in templates/recipes.yaml, so its keys cannot be checked",
            fix="add the recipe's required and optional keys to templates/recipes.yaml",
        )
        return
    required, optional = keys
    for key in sorted(required - set(cfg)):
        yield run.problem(
            f"{recipe} requires this key (it reads cfg.{key}), but it is missing",
            field=key,
            line=1,
            fix=REGEN,
        )
    known = required | optional
    for key in [k for k in cfg if k not in known]:
        close = suggest(str(key), known)
        yield run.problem(
            f"{recipe} never reads this key: torchtune ignores it silently",
            key=str(key),
            fix=f"did you mean '{close}'?" if close else "remove it",
        )


def allowed_components(expected: RunExpectation) -> dict[str, list[str]]:
    """Per top-level section, the components this run's recipe may be given (templates/components.yaml)."""
    data = load_data("components.yaml")
    allowed = {section: list(names) for section, names in data["sections"].items()}
    kind = "lora" if "lora" in expected.recipe else "full"
    builder = expected.model.get(data["registry"]["model"][kind])
    allowed["model"] = [builder] if builder else []
    tokenizer = expected.model.get("tokenizer", {}).get("component")
    allowed["tokenizer"] = [tokenizer] if tokenizer else []
    builder = DATASET_BUILDERS.get(expected.setup["dataset_type"])
    for section in data["dataset_sections"]:
        allowed[section] = [builder] if builder else []
    return allowed


@check("components_known", scope=FINE_TUNED, file=FINETUNE_FILE, texts=True)
def components_are_known(run: RunView) -> Iterator[Problem]:
    """Every `_component_` is one the run's recipe can use there: the registry's model builder and tokenizer, the
    dataset builder for its dataset_type, and the project's optimizer, scheduler, loss, logger, checkpointer and
    profiler."""
    expected = run.expected()
    key = ("allowed_components", expected.recipe, expected.setup["model"], expected.setup["dataset_type"])
    if key not in run.memo:
        run.memo[key] = allowed_components(expected)
    allowed = run.memo[key]
    for path, component in components(run.config().data):
        section = path.split(".")[0]
        key = f"{path}._component_"
        if section not in allowed:
            yield run.problem(
                f"section {section} names a component, and this project generates none there",
                key=key,
                found=component,
                fix="remove the section (the recipe does not read it)",
            )
        elif component not in allowed[section]:
            why = {
                "model": f"the {expected.setup['model']} builder for {expected.recipe}",
                "tokenizer": f"the {expected.setup['model']} tokenizer",
                "dataset": f"the dataset builder for dataset_type {expected.setup['dataset_type']}",
                "dataset_val": f"the dataset builder for dataset_type {expected.setup['dataset_type']}",
            }.get(section, f"a {section} component this project generates")
            want = allowed[section][0] if len(allowed[section]) == 1 else allowed[section]
            yield run.problem(f"not {why}", key=key, expected=want, found=component, fix=REGEN)


@check("parameter_values", scope=FINE_TUNED, file=FINETUNE_FILE, texts=True)
def parameters_at_their_paths(run: RunView) -> Iterator[Problem]:
    """Each parameter of the table sits at its path with the value the run, `controls` or the default gives it
    (numbers compared numerically: 1e-5 equals 1.0e-05; texts such as the prompt character for character)."""
    expected = run.expected()
    cfg = run.config().data
    for name, p in params.table().items():
        if not p.applies(expected.setup) or name == "lora_alpha":  # lora_alpha has its own rule (lora_alpha_rule)
            continue
        want = expected.setup[name]
        found, value = params.get_path(cfg, p.path)
        if found and params.same_value(value, want):
            continue
        what = f"{name} (from {expected.summary_field(name)})"
        if not found:
            yield run.problem(f"{what} is missing", key=p.path, expected=want, fix=REGEN)
        else:
            yield run.problem(what, key=p.path, expected=want, found=value, fix=REGEN)


WANDB_LOGGER = "torchtune.training.metric_logging.WandBLogger"
DISK_LOGGER = "torchtune.training.metric_logging.DiskLogger"
WANDB_MODES = ("offline", "online", "disabled")


def metric_logger_problems(cfg: dict, setup: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, expected, found) for each metric_logger setting that is not as the run's settings say: the logger,
    and for W&B its project, entity and mode (offline unless the local config says otherwise)."""
    logger = cfg.get("metric_logger") if isinstance(cfg, dict) else None
    logger = logger if isinstance(logger, dict) else {}
    wandb = setup.get("metric_logger") == "wandb"
    want = {"_component_": WANDB_LOGGER if wandb else DISK_LOGGER}
    if wandb:
        want.update(
            project=setup.get("wandb_project"),
            entity=setup.get("wandb_entity"),
            mode=setup.get("wandb_mode") or "offline",
        )
    out = [(k, v, logger.get(k)) for k, v in want.items() if logger.get(k) != v]
    if wandb and logger.get("mode") not in WANDB_MODES:
        out = [p for p in out if p[0] != "mode"] + [("mode", " or ".join(WANDB_MODES), logger.get("mode"))]
    return out


@check("metric_logger", scope=FINE_TUNED, file=FINETUNE_FILE, texts=True)
def metric_logger_as_expected(run: RunView) -> Iterator[Problem]:
    """metric_logger is W&B when the run logs there (output.wandb_project or metric_logger: wandb), else the disk
    logger; a W&B logger has the project (the summary's, else the local config's default), the local config's
    entity and its mode (offline, online or disabled; offline unless the local config says otherwise)."""
    expected = run.expected()
    for key, want, found in metric_logger_problems(run.config().data, expected.setup):
        yield run.problem(f"metric_logger.{key}", key=f"metric_logger.{key}", expected=want, found=found, fix=REGEN)


@check("lora_alpha_rule", scope=FINE_TUNED, file=FINETUNE_FILE, texts=True)
def lora_alpha_follows_its_rule(run: RunView) -> Iterator[Problem]:
    """model.lora_alpha is the given lora_alpha, else 2 x lora_rank (the rule: scaffold.rules)."""
    expected = run.expected()
    if not params.table()["lora_alpha"].applies(expected.setup):
        raise NotApplicable(f"method {expected.setup.get('method')}: no LoRA adapter, so no lora_alpha")
    if expected.source("lora_alpha") not in ("default", rules.ALPHA_RULE):  # given: by the run, controls or setup
        want = expected.setup["lora_alpha"]
        rule = f"lora_alpha is given ({expected.summary_field('lora_alpha')})"
    else:
        want = rules.default_lora_alpha(expected.setup["lora_rank"])
        rule = f"lora_alpha is {rules.ALPHA_RULE} ({expected.setup['lora_rank']}) when not given"
    found, value = params.get_path(run.config().data, "model.lora_alpha")
    if not found or not params.same_value(value, want):
        yield run.problem(rule, key="model.lora_alpha", expected=want, found=value if found else None, fix=REGEN)


@check("run_name_tokens", scope=FINE_TUNED, file=FINETUNE_FILE, texts=True)
def run_name_agrees_with_values(run: RunView) -> Iterator[Problem]:
    """Every parameter the run name spells (`rank8`, `lr1e-5`, `s7`) has that value in finetune.yaml."""
    cfg = run.config().data
    for name, spelt in params.parse_run_name(run.name).items():
        path = params.table()[name].path
        found, value = params.get_path(cfg, path) if path else (False, None)
        for token, spelt_value in spelt:
            if not found or not params.same_value(spelt_value, value):
                yield run.problem(
                    f"the run name says {token}",
                    key=path,
                    expected=int(spelt_value) if float(spelt_value).is_integer() else spelt_value,
                    found=value if found else None,
                    fix="rename the run, or correct the value in experiment_summary.yaml and regenerate",
                )


@check("output_dir_placement", scope=FINE_TUNED, file=FINETUNE_FILE, texts=True)
def output_dir_inside_run_not_checkpoint(run: RunView) -> Iterator[Problem]:
    """output_dir (and the checkpointer's) is inside the run directory and not inside the checkpoint directory."""
    expected = run.expected()
    cfg = run.config().data
    ckpt = cfg.get("checkpointer") if isinstance(cfg.get("checkpointer"), dict) else {}
    checkpoint_dir = ckpt.get("checkpoint_dir")
    for key, value in (("output_dir", cfg.get("output_dir")), ("checkpointer.output_dir", ckpt.get("output_dir"))):
        if value is None and key == "checkpointer.output_dir":
            continue
        if not isinstance(value, str) or not value:
            yield run.problem(f"{key} is not a path", key=key, found=value, fix=REGEN)
            continue
        if not inside(value, expected.run_dir):
            yield run.problem(f"{key} is outside the run directory {expected.run_dir}", key=key, found=value, fix=REGEN)
        if isinstance(checkpoint_dir, str) and inside(value, checkpoint_dir):
            yield run.problem(
                f"{key} is inside the checkpoint directory {checkpoint_dir}: the HF checkpointer refuses it, and "
                "outputs would mix with the base model",
                key=key,
                found=value,
                fix=REGEN,
            )


@check("model_matches_registry", scope=FINE_TUNED, file=FINETUNE_FILE, texts=True)
def model_matches_registry(run: RunView) -> Iterator[Problem]:
    """The checkpointer and tokenizer read the run's model where the summary puts it, with the registry's
    checkpoint files, model_type and tokenizer files."""
    expected = run.expected()
    cfg = run.config().data
    model_dir = expected.model_dir
    want = {
        "checkpointer.checkpoint_dir": str(model_dir),
        "checkpointer.checkpoint_files": expected.model["checkpoint_files"],
        "checkpointer.model_type": expected.model["model_type"],
    }
    for arg, rel in expected.model["tokenizer"]["files"].items():
        want[f"tokenizer.{arg}"] = str(model_dir / rel)
    for key, value in want.items():
        found, got = params.get_path(cfg, key)
        if not found or got != value:
            yield run.problem(
                f"not what the registry says for {expected.setup['model']}",
                key=key,
                expected=value,
                found=got if found else None,
                fix=REGEN,
            )


@check("dataset_matches_summary", scope=FINE_TUNED, file=FINETUNE_FILE, texts=True)
def dataset_matches_summary(run: RunView) -> Iterator[Problem]:
    """The dataset section reads the summary's dataset file (or the run's dataset_path), train split, with the
    run's model's own tokenizer; with validation during training, dataset_val reads its validation split."""
    expected = run.expected()
    cfg = run.config().data
    sections = [("dataset", "train")]
    if expected.setup.get("validation_during_training"):
        sections.append(("dataset_val", "validation"))
    for section, split in sections:
        for key, value in (
            (f"{section}.data_files", expected.setup["dataset_path"]),
            (f"{section}.field", split),
            (f"{section}.model_path", str(expected.model_dir)),  # the tokenizer the records are tokenized with
        ):
            found, got = params.get_path(cfg, key)
            if not found or got != value:
                yield run.problem(
                    "not the dataset the summary declares",
                    key=key,
                    expected=value,
                    found=got if found else None,
                    fix=REGEN,
                )


def model_paths(cfg: dict) -> list[tuple[str, str, str]]:
    """(what, config key, path) for every file or directory the checkpointer and tokenizer open."""
    ckpt = cfg.get("checkpointer") if isinstance(cfg.get("checkpointer"), dict) else {}
    out: list[tuple[str, str, str]] = []
    ckpt_dir = ckpt.get("checkpoint_dir")
    if isinstance(ckpt_dir, str):
        out.append(("model directory", "checkpointer.checkpoint_dir", ckpt_dir))
        out.append(("model config", "checkpointer.checkpoint_dir", str(Path(ckpt_dir) / "config.json")))
        files = ckpt.get("checkpoint_files")
        try:
            names = checkpoint_file_names(files) if files is not None else []
        except (KeyError, TypeError, ValueError):
            names = []
        out += [("checkpoint file", "checkpointer.checkpoint_files", str(Path(ckpt_dir) / n)) for n in names]
    tok = cfg.get("tokenizer") if isinstance(cfg.get("tokenizer"), dict) else {}
    for arg in ("path", "merges_file", "special_tokens_path"):
        if isinstance(tok.get(arg), str):
            out.append((f"tokenizer {arg}", f"tokenizer.{arg}", tok[arg]))
    ds = cfg.get("dataset") if isinstance(cfg.get("dataset"), dict) else {}
    if isinstance(ds.get("data_files"), str):
        out.append(("dataset", "dataset.data_files", ds["data_files"]))
    return out


@check("paths_exist", scope=FINE_TUNED, file=FINETUNE_FILE)
def paths_exist(run: RunContext) -> Iterator[Problem]:
    """The model directory, its config and checkpoint files, the tokenizer files and the dataset exist (not checked
    under --no-check-paths, for machines that do not mount the cluster's storage)."""
    cfg = run.config().data
    paths = model_paths(cfg)
    if not run.experiment.options.check_paths:
        dirs = sorted({path for what, _, path in paths if what in ("model directory", "dataset")})
        raise NotApplicable(
            f"--no-check-paths: {len(paths)} model, tokenizer and dataset paths not checked ({', '.join(dirs)})"
        )
    for what, key, path in paths:
        local = run.to_local(path)
        if not local.exists():
            yield run.problem(f"{what} not found: {local}", key=key, fix="fix the path, or download the files there")
