"""Stage 8, submit: job array scripts, #SBATCH directives, sbatch --test-only, `scaffold submit`."""
