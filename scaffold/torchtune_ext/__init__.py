"""torchtune extensions that generated configs may name: a validating recipe and dataset builders.

Everything here is imported inside the training environment (torchtune 0.6.1 installed), never by the
generator itself.
"""
