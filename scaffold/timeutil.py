"""SLURM time strings: parsed to seconds and written back as `[D-]HH:MM:SS`."""

from __future__ import annotations

import re

# SLURM accepts MM:SS, HH:MM:SS, D-HH, D-HH:MM and D-HH:MM:SS; we always write [D-]HH:MM:SS.
_TIME = re.compile(r"^(?:(?P<d>\d+)-)?(?:(?P<h>\d{1,2}):)?(?P<m>\d{1,2}):(?P<s>[0-5]\d)$")


def parse_time(text: str) -> int | None:
    """Seconds in a SLURM time string, or None when it is not one (minutes >= 60 are refused)."""
    m = _TIME.match(text.strip())
    if not m:
        return None
    d, h, mm, s = (int(m.group(k) or 0) for k in ("d", "h", "m", "s"))
    if mm >= 60 or (m.group("d") is not None and h >= 24):
        return None
    return ((d * 24 + h) * 60 + mm) * 60 + s


def format_time(seconds: int) -> str:
    """`[D-]HH:MM:SS`, with days once the time reaches 24 hours."""
    d, rest = divmod(int(seconds), 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{d}-{h:02d}:{m:02d}:{s:02d}" if d else f"{h:02d}:{m:02d}:{s:02d}"
