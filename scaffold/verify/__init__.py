"""The verification suite: a pytest plugin (`pytest --experiment DIR`, `scaffold verify DIR`) that checks every
generated file of an experiment against expectations re-derived from experiment_summary.yaml, the local config and
the model registry, and compares each file with its golden snapshot.

Modules: `plugin` (collection and items: the registry's (check, target) pairs, grouped into tests) and
`folded_report` (the suite's part of the log). The checks it runs are scaffold.checks; the registry, what they read
the experiment with, and the self-check (the same checks on the texts the generator has just rendered),
scaffold.engine; the command that starts pytest with it, scaffold.commands.verify_suite.
"""
