"""Stage 4, write: the only writer (atomic, with the manifest), the lock, the log, the report."""
