"""torchtune extensions that generated configs may name: a validating recipe and dataset builders.

The recipe is imported inside the training environment (torchtune 0.6.1 installed). The dataset builders import
neither torch nor torchtune at the top (only `transformers`, when a dataset is built), so the generator reads
their constants and the verification suite builds a run's dataset with them wherever `transformers` is installed.
"""
