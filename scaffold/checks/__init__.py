"""The verification checks: small named functions, one concern each, registered with `@check` (scaffold.engine,
which runs them). One module per subject:

    input_files    the summary, the site config and each run's files being there and readable
    finetune       finetune.yaml: it loads, its recipe keys, components and values
    dataset        the run's dataset: its splits and the training steps they give
    parity         train/eval parity: the evaluator sees the prompt the model was trained on
                   (the evaluator's side of it: scaffold.torchtune_ext.evaluator)
    token_audit    the dataset's tokens against max_seq_len, and the time the steps take against the limit
    batch_script   finetune.slurm: its directives, launch, environment and time limit
    cluster        finetune.slurm as the cluster's sbatch reads it (`sbatch --test-only`)
    job_arrays     the job array scripts of the groups of runs
    golden_copies  the golden copies: none stale, each generated file the same as its copy
    components_bind  the components of finetune.yaml bind with the real torchtune (needs torchtune importable)
"""

# Modules holding checks, in the order their tests are collected.
MODULES = (
    "input_files",
    "finetune",
    "dataset",
    "parity",
    "token_audit",
    "batch_script",
    "cluster",
    "job_arrays",
    "golden_copies",
    "components_bind",
)
