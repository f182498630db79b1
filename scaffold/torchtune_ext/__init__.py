"""torchtune extensions that generated configs may name: a validating recipe, dataset builders and the post-training
step; beside them, what the evaluator of a trained run does (`eval_contract`: the facts; `evaluator`: the ids it
feeds the model, which the parity check compares with the training's), and the token audit of a run's data
(`audit`).

The recipe is imported inside the training environment (torchtune 0.6.1 installed). The dataset builders import
neither torch nor torchtune at the top (only `transformers`, when a dataset is built), so the generator reads
their constants and the verification suite builds a run's dataset with them wherever `transformers` is installed.
"""
