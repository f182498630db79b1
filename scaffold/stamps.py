"""A file's stamp, and caches keyed by it: the one rule for telling whether a file may have changed.

A stamp is what changes when a file is rewritten or edited: its size, modification time (ns) and inode (an atomic
write by rename gives a new inode even within one timestamp tick). Anything cached about a file's content is keyed
by its path and stamp, so a long-lived process (the pytest plugin, a caller of the Python API) never serves an old
version of a file that changed since."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache, wraps
from pathlib import Path
from typing import TypeVar

Stamp = tuple[int, int, int]  # size, modification time (ns), inode
T = TypeVar("T")


def stamp(path: Path | str) -> Stamp | None:
    """The file's stamp, or None when it cannot be looked at (missing, unreadable directory)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def cached_by_stamp(maxsize: int = 64) -> Callable[[Callable[[Path], T]], Callable[[Path], T]]:
    """Cache a function of one file's content by the file's path and stamp: a changed file is read again, an
    unchanged one is not (the `maxsize` most recent versions are kept)."""

    def decorate(func: Callable[[Path], T]) -> Callable[[Path], T]:
        @lru_cache(maxsize=maxsize)
        def by_version(path: Path, version: Stamp | None) -> T:
            return func(path)

        @wraps(func)
        def wrapper(path: Path) -> T:
            return by_version(Path(path), stamp(path))

        wrapper.cache_clear = by_version.cache_clear  # type: ignore[attr-defined]
        return wrapper

    return decorate
