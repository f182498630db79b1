"""The verification suite: a pytest plugin (`pytest --experiment DIR`, `scaffold verify DIR`) that checks every
generated file of an experiment against expectations re-derived from experiment_summary.yaml, the local config and
the model registry, and compares each file with its golden snapshot.

Modules: `plugin` (collection and items), `snapshots` (golden files), `golden` (golden files as readable single
files: syrupy extensions). The checks it runs, and what they read the experiment with, are scaffold.checks; the
command that starts pytest with it is scaffold.commands.verify.
"""
