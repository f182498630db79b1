"""`bash -n` of batch scripts, for the generator's self-check (the texts it renders) and the suite (the files on
disk) alike: each script is parsed alone (never concatenated with another: a quote left open in one would be closed
by the next, and two broken scripts would parse together), and the scripts of a sweep, which differ only in each
run's own values, are parsed once (`bash_syntax` masks those values).

What it buys (measured with `nox -s bench`, on /dev/shm, medians of 3 rounds): generate of 1,000 runs took 1.25 s
with the masking and 5.95 s with a `bash -n` of each script, of 100 runs 0.44 s and 1.07 s (the budget is 0.5 s)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

# A run's own value that may be masked: letters, digits and `._/-`, at least one of `._/` or a digit (so never a
# reserved word, a builtin that changes how its arguments parse, such as `declare`, or a word `[[ ]]` reads as an
# operator, such as `-nt`), not starting with `-`.
_INERT = re.compile(r"(?!-)(?=.*[._/0-9])[A-Za-z0-9._/-]{3,}\Z")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PARSED: set[str] = set()  # scripts (masked, see bash_syntax) that bash -n accepted, in this process


def _masked(text: str, setup: dict[str, Any]) -> str:
    """The script with the run's own inert values (a run name, a path) replaced by a placeholder named after the
    setting, wherever one stands whole (no letter, digit, `_`, `.` or `-` touches it). Such a swap cannot change how
    bash parses the script: no quote, operator, expansion, blank or `=` comes or goes, the word stays a name or
    not a name (`x=` stays an assignment or a plain word), and neither the value nor the placeholder can be a
    reserved word, a declaration builtin or a test operator. So a sweep's scripts mask to a few texts."""
    values = [(v, k) for k, v in setup.items() if isinstance(v, str) and _INERT.match(v)]
    for value, key in sorted(values, key=lambda vk: (-len(vk[0]), vk[1])):
        placeholder = f"__scaffold_{key}__" if _IDENTIFIER.match(value) else f"__scaffold-{key}__"
        text = _replace_whole(text, value, placeholder)
    return text


_WORD_PART = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def _replace_whole(text: str, value: str, placeholder: str) -> str:
    """`text` with each occurrence of `value` that no letter, digit, `_`, `.` or `-` touches replaced."""
    parts, start = [], 0
    at = text.find(value)
    while at >= 0:
        end = at + len(value)
        if (at == 0 or text[at - 1] not in _WORD_PART) and (end == len(text) or text[end] not in _WORD_PART):
            parts += [text[start:at], placeholder]
            start = end
        at = text.find(value, end if start == end else at + 1)
    return "".join(parts) + text[start:] if parts else text


# Reads NUL-separated scripts; for each, runs `bash -n` on it alone and writes its stderr, NUL, status, NUL.
_LOOP = r"""
while IFS= read -r -d '' script; do
  printf '%s' "$script" | bash -n 2>&1 >/dev/null
  printf '\0%d\0' "$?"
done
"""


def bash_syntax(scripts: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """`bash -n` of each (script, its run's settings): "" when it parses, else bash's message. Each script is
    parsed alone (never with another: a quote one leaves open would be closed by the next); scripts that mask (see
    `_masked`) to a text already parsed are not parsed again."""
    # Only the values that differ between these runs need a placeholder (the others are the same text in each).
    varying = {k for _, setup in scripts[1:] for k, v in setup.items() if scripts[0][1].get(k) != v}
    masked = [_masked(text, {k: setup[k] for k in varying if k in setup}) for text, setup in scripts]
    todo = sorted({m for m in masked if m not in _PARSED})
    errors = dict(zip(todo, _bash_n_each(todo), strict=True))
    _PARSED.update(m for m in todo if not errors[m])
    out = []
    for (text, _), m in zip(scripts, masked, strict=True):
        if m in _PARSED:
            out.append("")
        else:
            out.append(bash_n(text))  # the script itself, to report bash's own words about it
    return out


def _bash_n_each(texts: list[str]) -> list[str]:
    """`bash -n` of each text alone: a subprocess each for a few, else one bash loop (cheaper per script)."""
    if len(texts) <= 4 or any("\0" in t for t in texts):
        return [bash_n(t) for t in texts]
    proc = subprocess.run(["bash", "-c", _LOOP], input="".join(t + "\0" for t in texts).encode(), capture_output=True)
    fields = proc.stdout.decode("utf-8", "replace").split("\0")
    if proc.returncode != 0 or len(fields) != 2 * len(texts) + 1:
        return [bash_n(t) for t in texts]
    results = []
    for n in range(len(texts)):
        stderr, status = fields[2 * n], fields[2 * n + 1]
        results.append("" if status == "0" else (stderr.strip() or f"bash -n exited {status}"))
    return results


def script_text(path: Path) -> str:
    """A script's text as bash reads it, for parsing (bytes that are not utf-8 replaced: they are never shell
    syntax)."""
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace")


def bash_n(text: str) -> str:
    """`bash -n` of one script's text: \"\" when it parses, else bash's message."""
    proc = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    return "" if proc.returncode == 0 else (proc.stderr.strip() or f"bash -n exited {proc.returncode}")
