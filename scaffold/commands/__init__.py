"""The commands: the CLI and what each subcommand runs, over the stages below."""
