"""package.json of a sequence: parse it, check it, and work out the language and entry file.

STH requires only ``main`` and type-checks a few optional fields; we do the same
checks on both sides (``si seq pack`` and the hub's upload), so a package the packer accepts is not
refused later, and every refusal is one :class:`~si.errors.PackageError` line naming the field.

The language is ``engines.python3`` -> Python, ``engines.node`` -> Node, otherwise guessed from the
extension of ``main``. STH would run a Python file without ``engines.python3`` with Node and fail;
we guess instead and say so in :func:`manifest_warnings`, so a package stays portable to STH.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from si.errors import PackageError
from si.package._paths import contained

Language = Literal["python", "node"]

# Optional fields STH type-checks as strings; a wrong type there makes its upload fail with 422.
STRING_FIELDS = ("name", "version", "description", "author")
# Extensions of a main that make it a Node sequence: "" because STH appends ".js" to it, ".ts"
# so the author gets a warning (compile it) rather than a refusal.
NODE_EXTENSIONS = frozenset({".js", ".cjs", ".mjs", ".ts", ""})


@dataclass(frozen=True)
class Manifest:
    """The checked content of a package.json."""

    name: str
    version: str
    main: str
    engines: dict[str, str]
    language: Language
    entry: str
    raw: dict[str, Any]


def _json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "boolean"
    names = {dict: "object", list: "array", str: "string", int: "number", float: "number"}
    return names[type(value)]  # json.loads makes nothing else


def parse_manifest(data: bytes, *, source: str = "package.json") -> Manifest:
    """Parse and check the bytes of a package.json; ``source`` names it in messages.

    Raises:
        PackageError: the JSON is invalid or a field is missing, of the wrong type or unsafe.
    """
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError) as exc:  # ValueError covers bad UTF-8 as well as syntax
        reason = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
        raise PackageError(f"{source} is not valid JSON: {reason}") from None
    if not isinstance(raw, dict):
        raise PackageError(f"{source} must hold a JSON object, not {_json_type(raw)}")

    for key in STRING_FIELDS:
        if key in raw and not isinstance(raw[key], str):
            raise PackageError(f'{source}: "{key}" must be a string, not {_json_type(raw[key])}')
    engines = raw.get("engines", {})
    if not isinstance(engines, dict) or not all(isinstance(v, str) for v in engines.values()):
        raise PackageError(
            f'{source}: "engines" must be an object of strings, like {{"python3": "3"}}'
        )

    main = raw.get("main")
    if not isinstance(main, str) or not main:
        found = "missing" if main is None else f"a {_json_type(main)}"
        raise PackageError(f'{source}: "main" must name the entry file (it is {found})')
    entry = contained(main)
    if entry is None:
        raise PackageError(f'{source}: "main" ({main!r}) must be a path inside the package')
    if entry == ".":
        raise PackageError(f'{source}: "main" ({main!r}) names the package directory, not a file')

    extension = posixpath.splitext(entry)[1]
    language: Language
    if "python3" in engines:
        language = "python"
    elif "node" in engines or extension in NODE_EXTENSIONS:
        language = "node"
    elif extension == ".py":
        language = "python"
    else:
        listed = ", ".join(engines) or "nothing"
        raise PackageError(
            f"unknown engine: engines lists {listed} and main is {main!r}; "
            'si runs Python ("engines": {"python3": ...}) and Node ("engines": {"node": ...})'
        )
    if language == "node" and not extension:
        entry += ".js"  # STH's Node runner does the same before require()

    return Manifest(
        name=raw.get("name", ""),
        version=raw.get("version", ""),
        main=main,
        engines=dict(engines),
        language=language,
        entry=entry,
        raw=raw,
    )


def read_manifest(directory: Path) -> Manifest:
    """Read ``<directory>/package.json`` and check that its entry file is in the directory.

    The entry must be a regular file whose real path (after symlinks) stays inside ``directory``:
    the runner loads it by that path, so a link out of the package would run foreign code.

    Raises:
        PackageError: no readable package.json, a bad field, or a missing or escaping entry file.
    """
    path = directory / "package.json"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PackageError(f"{directory.absolute()}/package.json not found.") from None
    except OSError as exc:
        raise PackageError(f"cannot read package.json: {exc.strerror}") from None
    manifest = parse_manifest(data)

    what = f"main ({manifest.main!r})"
    root = directory.resolve()
    try:
        target = (root / manifest.entry).resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise PackageError(f"{what}: {manifest.entry} is not in the package") from None
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop, on Python 3.11
        raise PackageError(f"{what}: {manifest.entry} cannot be resolved (symlink loop?)") from None
    if not target.is_relative_to(root):
        raise PackageError(f"{what}: {manifest.entry} is a symlink out of the package")
    if not target.is_file():
        raise PackageError(f"{what}: {manifest.entry} is not a regular file")
    return manifest


def manifest_warnings(manifest: Manifest) -> list[str]:
    """Things that are allowed but will probably not do what the author wants, one line each."""
    warnings: list[str] = []
    if manifest.entry.endswith(".ts"):
        warnings.append(
            f"main names a TypeScript file ({manifest.entry}): "
            "compile it and point main at the .js output"
        )
    if manifest.language == "python" and "python3" not in manifest.engines:
        warnings.append(
            f'package.json has no "engines": {{"python3": ...}}: si runs {manifest.entry} with '
            "Python, but STH hubs would run it with Node"
        )
    return warnings
