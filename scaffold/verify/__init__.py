"""The verification suite: a pytest plugin (`pytest --experiment DIR`, `scaffold verify DIR`) that checks every
generated file of an experiment against expectations re-derived from experiment_summary.yaml, the local config and
the model registry, and compares each file with its golden snapshot.

Modules: `expectations` (what each run should be, from the inputs alone), `generated` (the files as torchtune, bash
and sbatch read them), `findings` (how a failure is reported, in one place), `checks/` (the registry of small named
checks), `snapshots` (golden files), `plugin` (collection and items), `runner` (how the CLI starts pytest).
For large sweeps: `context` (each file read once, shared by the checks), `shapes` (finetune.yaml as OmegaConf loads
it, without OmegaConf's cost for every config), `shell` (`bash -n` over many scripts in the background).
"""
