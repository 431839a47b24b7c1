"""CLI profiles: named sets of settings (which hub, output format, debug), STH's model.

Files live under platformdirs' user config directory (``~/.config/si`` on Linux, or
``$XDG_CONFIG_HOME/si``) rather than STH's ``~/.si``:

- ``si-config.json``: ``{"profile": "<name>"}``, the profile every shell uses by default;
- ``profiles/<name>.json``: one profile with STH's keys (:data:`DEFAULTS`).

Which profile a command uses (highest first, as in STH's CLI): ``--config-path FILE``,
``--config NAME``, ``SI_CONFIG_PATH``, ``SI_CONFIG``, ``si-config.json``, ``default``. A profile
given as a file is read-only.

Nothing is written until a setting is changed: the default profile exists implicitly. Files are
written atomically and carry ``configVersion``; a file with missing keys is completed from the
defaults (STH refuses it, which broke users' profiles on upgrades, STH #721), one with keys this
version does not know keeps them.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from si.errors import SiError

CONFIG_VERSION = 1
DEFAULT_PROFILE = "default"
SELECTION_FILE = "si-config.json"
# Profile names become file names: no separators, no leading dot.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_JWT = re.compile(r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*$")
# A token of an si hub (`si hub token create`); STH's are JWTs.
_SI_TOKEN = re.compile(r"^sit_[A-Za-z0-9_\-]{20,}$")

FORMATS = ("pretty", "json")
ENVIRONMENTS = ("development", "production")


def defaults() -> dict[str, Any]:
    """A fresh default profile. ``apiUrl`` empty means "the local hub's socket"."""
    return {
        "configVersion": CONFIG_VERSION,
        "apiUrl": "",
        "middlewareApiUrl": "",
        "env": "development",
        "scope": "",
        "token": "",
        "log": {"debug": False, "format": "pretty"},
    }


def config_root() -> Path:
    """platformdirs' user config dir for si (computed directly on Linux: every command reads
    the profile, and importing platformdirs would cost each a few milliseconds)."""
    if sys.platform == "linux":
        base = os.environ.get("XDG_CONFIG_HOME", "").strip() or os.path.expanduser("~/.config")
        return Path(base) / "si"
    import platformdirs

    return Path(platformdirs.user_config_dir("si"))


def profile_file(name: str, root: Path | None = None) -> Path:
    check_name(name)
    return (root or config_root()) / "profiles" / f"{name}.json"


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise SiError(f"Invalid profile name {name!r}: use letters, digits, '.', '_' and '-'")


@dataclass
class Profile:
    """One loaded profile.

    Attributes:
        name: the profile's name, or the file's path for ``--config-path``.
        path: its file (which may not exist yet for ``default``).
        data: every key, defaults filled in.
        read_only: given as a file (``--config-path`` / ``SI_CONFIG_PATH``).
    """

    name: str
    path: Path
    data: dict[str, Any]
    read_only: bool = False

    @property
    def api_url(self) -> str:
        return str(self.data["apiUrl"])

    @property
    def token(self) -> str:
        return str(self.data.get("token") or "")

    @property
    def log_format(self) -> str:
        return str(self.data["log"]["format"])

    @property
    def debug(self) -> bool:
        return bool(self.data["log"]["debug"])

    def save(self) -> None:
        if self.read_only:
            raise SiError(f"the profile {self.path} was given as a file and is read-only")
        write_json(self.path, self.data)


def validate(data: Any, source: str) -> dict[str, Any]:
    """``data`` as a complete profile, or :class:`SiError` naming what is wrong."""
    if not isinstance(data, dict):
        raise SiError(f"{source}: a profile must be a JSON object")
    profile = defaults()
    for key, value in data.items():
        if key == "log":
            if not isinstance(value, dict):
                raise SiError(f"{source}: log must be an object")
            for log_key, log_value in value.items():
                profile["log"][log_key] = log_value
        else:
            profile[key] = value
    checks: list[tuple[str, Any, type | tuple[type, ...]]] = [
        ("configVersion", profile["configVersion"], int),
        ("apiUrl", profile["apiUrl"], str),
        ("middlewareApiUrl", profile["middlewareApiUrl"], str),
        ("env", profile["env"], str),
        ("scope", profile["scope"], str),
        ("token", profile["token"], str),
        ("log.debug", profile["log"]["debug"], bool),
        ("log.format", profile["log"]["format"], str),
    ]
    for key, value, kind in checks:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise SiError(f"{source}: {key} has the wrong type")
    if profile["log"]["format"] not in FORMATS:
        raise SiError(f"{source}: log.format must be pretty or json")
    if profile["env"] not in ENVIRONMENTS:
        raise SiError(f"{source}: env must be development or production")
    return profile


def read_profile_file(path: Path, name: str, *, read_only: bool) -> Profile:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if name == DEFAULT_PROFILE and not read_only:
            return Profile(name, path, defaults())
        raise
    except (OSError, ValueError) as exc:
        raise SiError(f"{path}: cannot read the profile: {exc}") from None
    return Profile(name, path, validate(raw, str(path)), read_only=read_only)


def load_named(name: str, root: Path | None = None) -> Profile:
    """The profile ``name``; :class:`SiError` if it does not exist or is invalid."""
    path = profile_file(name, root)
    try:
        return read_profile_file(path, name, read_only=False)
    except FileNotFoundError:
        raise SiError(f"Unable to find profile: {name}") from None


def load_path(path: str) -> Profile:
    """A read-only profile from a file (``--config-path``)."""
    target = Path(path).expanduser()
    try:
        return read_profile_file(target, str(target), read_only=True)
    except FileNotFoundError:
        raise SiError(f"Invalid config file: {path} does not exist") from None
    except SiError as exc:
        raise SiError(f"Invalid config file: {exc}") from None


def selected_name(root: Path | None = None) -> str:
    """The profile named in ``si-config.json`` (``default`` when none)."""
    try:
        stored = json.loads(((root or config_root()) / SELECTION_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return DEFAULT_PROFILE
    name = stored.get("profile") if isinstance(stored, dict) else None
    return name if isinstance(name, str) and _NAME.match(name) else DEFAULT_PROFILE


def select_name(name: str, root: Path | None = None) -> None:
    """Make ``name`` the profile every shell uses."""
    write_json((root or config_root()) / SELECTION_FILE, {"profile": name})


def select_profile(path: str | None, name: str | None, root: Path | None = None) -> Profile:
    """The profile a command uses, by STH's precedence (see the module's docstring).

    A profile chosen by ``si-config.json`` or ``SI_CONFIG`` that turns out broken is replaced
    by ``default`` with a warning, so one bad file cannot lock the user out of the CLI.
    """
    if path:
        return load_path(path)
    if name:
        return load_named(name, root)
    env_path = os.environ.get("SI_CONFIG_PATH")
    if env_path:
        return load_path(env_path)
    chosen = os.environ.get("SI_CONFIG") or selected_name(root)
    try:
        return load_named(chosen, root)
    except SiError as exc:
        if chosen == DEFAULT_PROFILE:
            raise
        from si.cli import render

        render.warning(f"{exc}; using the default profile instead")
        if selected_name(root) == chosen:
            try:
                select_name(DEFAULT_PROFILE, root)
            except OSError:
                pass
        return load_named(DEFAULT_PROFILE, root)


def list_profiles(root: Path | None = None) -> list[str]:
    folder = (root or config_root()) / "profiles"
    names = {DEFAULT_PROFILE}
    try:
        names.update(entry.stem for entry in folder.glob("*.json") if _NAME.match(entry.stem))
    except OSError:
        pass
    return sorted(names)


def normalise_hub_url(value: str) -> str:
    """An ``apiUrl`` as stored: an http(s) URL with a port, or an absolute socket path.

    ``host:port`` gains ``http://``, a trailing slash goes, the host is lower-cased; an empty
    value means the local hub.

    Raises:
        SiError: ``Invalid url`` (STH's message) with the reason.
    """
    text = value.strip()
    if not text:
        return ""
    if text.startswith(("/", "./", "../", "~")):
        return str(Path(text).expanduser().absolute())
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise SiError(f"Invalid url: {value} (use http:// or https://, or a socket path)")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise SiError(f"Invalid url: {value} (a host and a port are required)")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{host}:{port}{path}"


def check_token(value: str) -> str:
    if value and not (_JWT.match(value) or _SI_TOKEN.match(value)):
        raise SiError("Invalid token")
    return value


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise SiError("Invalid debug value")


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, fsync, rename), creating the directory."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as out:
            out.write(json.dumps(data, indent=2) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
