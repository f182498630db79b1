"""Stage 1, inputs: the summary, the site config, the parameter table and the model registry."""
