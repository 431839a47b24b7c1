"""Files of structured data a user writes: JSON, or YAML by extension (configs, stacks)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from si.errors import SiError


def read_structured(path: Path, unreadable: str) -> Any:
    """A JSON or (by extension ``.yaml``/``.yml``) YAML file's content."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise SiError(f"{unreadable}: {path}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            yaml: Any = importlib.import_module("yaml")
        except ImportError:  # pragma: no cover - PyYAML is a dependency
            raise SiError(f"{path} is YAML, which needs PyYAML (pip install pyyaml)") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SiError(f"{path}: invalid YAML: {exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SiError(f"{path}: invalid JSON: {exc}") from None
