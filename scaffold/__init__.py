"""scaffold-torchtune: one experiment summary in, verified torchtune fine-tuning runs for SLURM out."""

__version__ = "0.1.0"
