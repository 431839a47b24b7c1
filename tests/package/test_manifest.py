"""package.json checks: language, entry resolution, refusals and warnings."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from si.errors import PackageError
from si.package.manifest import Manifest, manifest_warnings, parse_manifest, read_manifest
from tests.package.helpers import PY_MANIFEST, write_package


def parse(body: Any) -> Manifest:
    return parse_manifest(json.dumps(body).encode())


@pytest.mark.parametrize(
    ("body", "language", "entry"),
    [
        ({"main": "index.py", "engines": {"python3": "3"}}, "python", "index.py"),
        ({"main": "./src/main.py"}, "python", "src/main.py"),
        ({"main": "index.js"}, "node", "index.js"),
        ({"main": "index"}, "node", "index.js"),
        ({"main": "./lib/index", "engines": {"node": ">=18"}}, "node", "lib/index.js"),
        ({"main": "index.mjs"}, "node", "index.mjs"),
        ({"main": "dist/../index.cjs"}, "node", "index.cjs"),
        ({"main": "run", "engines": {"python3": "3"}}, "python", "run"),
        ({"main": "index.ts"}, "node", "index.ts"),
    ],
)
def test_language_and_entry_are_resolved(body: dict[str, Any], language: str, entry: str) -> None:
    manifest = parse(body)
    assert (manifest.language, manifest.entry, manifest.main) == (language, entry, body["main"])


def test_fields_are_kept_and_absent_ones_default_to_empty() -> None:
    manifest = parse(PY_MANIFEST | {"scripts": {"x": "y"}})
    assert (manifest.name, manifest.version, manifest.engines) == (
        "seq",
        "1.0.0",
        {"python3": "3.11"},
    )
    assert manifest.raw["scripts"] == {"x": "y"}
    bare = parse({"main": "index.py"})
    assert (bare.name, bare.version, bare.engines) == ("", "", {})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "package.json is not valid JSON: Expecting property name"),
        (b"\xff\xfe{}", "package.json is not valid JSON:"),
        (b"[" * 100_000 + b"]" * 100_000, "package.json is not valid JSON:"),
        (b'["main"]', "package.json must hold a JSON object, not array"),
        (b'{"name": "x"}', '"main" must name the entry file (it is missing)'),
        (b'{"main": 3}', '"main" must name the entry file (it is a number)'),
        (b'{"main": ""}', '"main" must name the entry file (it is a string)'),
        (
            b'{"main": "/etc/passwd.js"}',
            "\"main\" ('/etc/passwd.js') must be a path inside the package",
        ),
        (b'{"main": "../up.py"}', "\"main\" ('../up.py') must be a path inside the package"),
        (b'{"main": "a/../../up.py"}', "must be a path inside the package"),
        (b'{"main": "./"}', "\"main\" ('./') names the package directory, not a file"),
        (b'{"main": "i.py", "name": 1}', 'package.json: "name" must be a string, not number'),
        (b'{"main": "i.py", "version": null}', '"version" must be a string, not null'),
        (b'{"main": "i.py", "author": {"n": 1}}', '"author" must be a string, not object'),
        (b'{"main": "i.py", "description": []}', '"description" must be a string, not array'),
        (b'{"main": "i.py", "engines": ["python3"]}', '"engines" must be an object of strings'),
        (b'{"main": "i.py", "engines": {"python3": 3}}', '"engines" must be an object of strings'),
        (b'{"main": "x.rb", "engines": {"ruby": "3"}}', "unknown engine: engines lists ruby"),
        (b'{"main": "x.rb"}', "unknown engine: engines lists nothing and main is 'x.rb'"),
    ],
)
def test_bad_manifest_is_refused_with_one_line(data: bytes, message: str) -> None:
    with pytest.raises(PackageError, match=re.escape(message)) as refused:
        parse_manifest(data)
    assert "\n" not in str(refused.value)


def test_read_manifest_names_the_missing_package_json(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match=re.escape(f"{tmp_path}/package.json not found.")):
        read_manifest(tmp_path)


def test_read_manifest_finds_the_node_entry_with_js_appended(tmp_path: Path) -> None:
    write_package(tmp_path, {"main": "lib/index"}, {"lib/index.js": b"module.exports = x => x"})
    assert read_manifest(tmp_path).entry == "lib/index.js"


@pytest.mark.parametrize(
    ("main", "message"),
    [
        ("gone.py", "main ('gone.py'): gone.py is not in the package"),
        ("index", "main ('index'): index.js is not in the package"),
        ("index.py/x.py", "index.py/x.py is not in the package"),
        ("sub", "main ('sub'): sub.js is not in the package"),
        ("./sub.py/", "main ('./sub.py/'): sub.py is not a regular file"),
        ("out.py", "main ('out.py'): out.py is a symlink out of the package"),
        ("loop.py", "main ('loop.py'): loop.py cannot be resolved (symlink loop?)"),
    ],
)
def test_read_manifest_refuses_an_entry_that_is_not_a_file_inside(
    tmp_path: Path, main: str, message: str
) -> None:
    outside = tmp_path / "outside.py"
    outside.write_bytes(b"")
    package = write_package(tmp_path / "seq", {"main": main})
    (package / "sub").mkdir()
    (package / "sub.py").mkdir()
    (package / "out.py").symlink_to(outside)
    os.symlink("loop.py", package / "loop.py")
    with pytest.raises(PackageError, match=re.escape(message)):
        read_manifest(package)


def test_entry_reached_through_an_inner_symlink_is_accepted(tmp_path: Path) -> None:
    package = write_package(tmp_path, {"main": "alias.py"})
    (package / "alias.py").symlink_to("index.py")
    assert read_manifest(package).entry == "alias.py"


def test_typescript_main_gets_a_warning() -> None:
    assert manifest_warnings(parse({"main": "index.ts"})) == [
        "main names a TypeScript file (index.ts): compile it and point main at the .js output"
    ]


def test_python_without_engines_python3_gets_a_warning() -> None:
    (warning,) = manifest_warnings(parse({"main": "main.py"}))
    assert "STH hubs would run it with Node" in warning


def test_ordinary_packages_get_no_warning() -> None:
    assert manifest_warnings(parse(PY_MANIFEST)) == []
    assert manifest_warnings(parse({"main": "index.js"})) == []
