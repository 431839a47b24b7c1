""".siignore matching: anchored globs, dotfiles, directories, comments and re-includes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from si.errors import PackageError
from si.package.siignore import load_siignore


def rules(tmp_path: Path, text: str) -> Callable[[str, bool], bool]:
    (tmp_path / ".siignore").write_text(text)
    return load_siignore(tmp_path)


def test_without_a_siignore_nothing_is_ignored(tmp_path: Path) -> None:
    ignored = load_siignore(tmp_path)
    assert not ignored("a.log", False)
    assert not ignored("node_modules", True)


def test_top_level_pattern_does_not_match_deeper_paths(tmp_path: Path) -> None:
    ignored = rules(tmp_path, "*.log\n")
    assert ignored("a.log", False)
    assert not ignored("sub/a.log", False)


def test_double_star_matches_at_any_depth(tmp_path: Path) -> None:
    ignored = rules(tmp_path, "**/*.log\n")
    assert ignored("a.log", False)
    assert ignored("sub/deep/a.log", False)
    assert not ignored(".cache/a.log", False)  # "**" does not walk into dot-directories


def test_star_crosses_no_slash_and_skips_a_leading_dot(tmp_path: Path) -> None:
    ignored = rules(tmp_path, "*\n")
    assert ignored("index.py", False)
    assert not ignored(".env", False)
    explicit = rules(tmp_path, ".*\n")
    assert explicit(".env", False)
    assert not explicit("index.py", False)


def test_question_mark_and_character_classes(tmp_path: Path) -> None:
    ignored = rules(tmp_path, "v?.txt\nlog[0-9]\nx[!a]\n")
    assert ignored("v1.txt", False)
    assert not ignored("v10.txt", False)
    assert ignored("log7", False)
    assert not ignored("logx", False)
    assert ignored("xb", False)
    assert not ignored("xa", False)


def test_trailing_slash_matches_directories_only(tmp_path: Path) -> None:
    ignored = rules(tmp_path, "build/\n")
    assert ignored("build", True)
    assert not ignored("build", False)


def test_comments_blank_lines_and_inline_comments(tmp_path: Path) -> None:
    ignored = rules(tmp_path, "# *.py\n\n   \n*.log   # logs stay home\nissue#1\n\\#literal\n")
    assert not ignored("index.py", False)
    assert ignored("a.log", False)
    assert ignored("issue#1", False)  # a '#' glued to text is part of the pattern
    assert ignored("#literal", False)


def test_negation_re_includes_and_the_last_match_wins(tmp_path: Path) -> None:
    ignored = rules(tmp_path, "*.txt\n!keep.txt\n")
    assert ignored("drop.txt", False)
    assert not ignored("keep.txt", False)
    assert not ignored("index.py", False)  # STH's quirk would have excluded this
    again = rules(tmp_path, "!keep.txt\n*.txt\n")
    assert again("keep.txt", False)


def test_leading_slash_and_nested_paths_are_anchored_at_the_root(tmp_path: Path) -> None:
    ignored = rules(tmp_path, "/sub/a.txt\n")
    assert ignored("sub/a.txt", False)
    assert not ignored("sub", True)
    assert not ignored("other/sub/a.txt", False)


def test_bad_pattern_is_refused_with_its_line_number(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match=r"\.siignore, line 2: bad pattern '\[z-a\]'"):
        rules(tmp_path, "ok\n[z-a]\n")
