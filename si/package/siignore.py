"""``.siignore``: the files ``si seq pack`` leaves out of a package.

The file sits in the package root and holds one glob per line, matched against a member's whole
relative posix path (``sub/a.log``); there is no basename matching, so ``*.log`` matches top-level
files only and ``**/*.log`` matches at any depth:

* ``*`` matches any run of characters except ``/``, ``?`` one such character, ``[abc]`` and
  ``[!abc]`` a character class, ``**`` as a whole segment any number of directories, and ``\\``
  makes the next character literal (``\\#``, ``\\!``, ``\\*``);
* wildcards never match the leading dot of a name (``*`` skips ``.env``; write ``.*`` for that);
* a trailing ``/`` restricts a pattern to directories; a leading ``/`` is allowed and changes
  nothing, since every pattern is anchored at the package root anyway;
* a directory that matches is dropped with its whole subtree;
* lines starting with ``#`` are comments, blank lines are ignored, surrounding spaces stripped.

Two STH quirks are fixed on purpose, because the STH behaviour surprises users:

* ``!pattern`` re-includes what it matches, the last matching line deciding (in STH it excluded
  nearly everything). As in git, it cannot bring back a file below a dropped directory: the
  packer never looks inside one;
* ``pattern  # note`` ignores the trailing comment when the ``#`` follows whitespace (STH dropped
  the whole line); ``a#b`` keeps its ``#`` as part of the pattern.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from si.errors import PackageError

# Strips "  # note" at the end of a pattern; a '#' glued to text stays part of the pattern.
INLINE_COMMENT = re.compile(r"\s+#.*$")

# A pattern segment is compiled to a regex; None stands for a "**" segment.
Segment = re.Pattern[str] | None


@dataclass(frozen=True)
class _Rule:
    segments: tuple[Segment, ...]
    negate: bool
    dirs_only: bool


def _compile_segment(glob: str) -> re.Pattern[str]:
    # Wildcards must not match a leading dot, so unless the glob itself starts with one, the
    # name may not either.
    out = [] if glob.startswith((".", "\\.")) else [r"(?!\.)"]
    i = 0
    while i < len(glob):
        char = glob[i]
        i += 1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "\\" and i < len(glob):
            out.append(re.escape(glob[i]))
            i += 1
        elif char == "[" and (end := glob.find("]", i + 1)) != -1:
            body = glob[i:end]
            i = end + 1
            negate = body[0] in "!^"
            body = "".join(c if c == "-" else re.escape(c) for c in body[negate:])
            out.append(f"[{'^' if negate else ''}{body}]")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out))


def _parse_line(line: str) -> _Rule | None:
    pattern = INLINE_COMMENT.sub("", line).strip()
    if not pattern or pattern.startswith("#"):
        return None
    negate = pattern.startswith("!")
    pattern = pattern.removeprefix("!")
    dirs_only = pattern.endswith("/")
    pattern = pattern.strip("/")
    if not pattern:
        return None
    segments = tuple(None if s == "**" else _compile_segment(s) for s in pattern.split("/") if s)
    return _Rule(segments, negate, dirs_only)


def _matches(segments: tuple[Segment, ...], parts: list[str]) -> bool:
    if not segments:
        return not parts
    head, rest = segments[0], segments[1:]
    if head is None:
        # "**" takes zero or more whole names, but like "*" never a dot-name.
        for taken in range(len(parts) + 1):
            if _matches(rest, parts[taken:]):
                return True
            if taken < len(parts) and parts[taken].startswith("."):
                return False
        return False
    return bool(parts) and head.fullmatch(parts[0]) is not None and _matches(rest, parts[1:])


def load_siignore(directory: Path) -> Callable[[str, bool], bool]:
    """The ``.siignore`` of ``directory`` as a test ``(relative path, is a directory) -> ignored``.

    Without a ``.siignore`` nothing is ignored.

    Raises:
        PackageError: the file cannot be read or holds a pattern that does not compile.
    """
    path = directory / ".siignore"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return lambda relpath, is_dir: False
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise PackageError(f"cannot read {path}: {reason}") from None

    rules: list[_Rule] = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            rule = _parse_line(line)
        except re.error:  # a character class such as [z-a]
            raise PackageError(f"{path}, line {number}: bad pattern {line.strip()!r}") from None
        if rule is not None:
            rules.append(rule)

    def ignored(relpath: str, is_dir: bool) -> bool:
        parts = relpath.strip("/").split("/")
        verdict = False
        for rule in rules:  # the last matching line decides
            if (is_dir or not rule.dirs_only) and _matches(rule.segments, parts):
                verdict = not rule.negate
        return verdict

    return ignored
