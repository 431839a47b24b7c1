"""The session file: what ``-`` stands for in ``si seq send -``, ``si inst output -`` and friends.

As in STH, "the last one" is remembered per POSIX session (one terminal, or one test runner and
everything it spawns) in ``<tmpdir>/.si-tmp/<SID>/session-config.json``, where tmpdir is
``$TMPDIR`` or ``/tmp`` and SID is ``os.getsid(0)``. The file is STH's: pretty JSON (2-space
indent, no trailing newline) with the keys of :data:`SESSION_KEYS` plus ``sessionId``.

Writers: ``seq pack`` (lastPackagePath), ``seq send`` (lastSequenceId), ``seq start``
(lastInstanceId). Clearers: ``seq rm`` of the last sequence, ``inst kill`` of the last instance.

Session directories of sessions that ended are deleted when a new session creates its own, so
the cost at start-up is one ``stat`` in the common case.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from si.errors import SiError

SessionKey = Literal[
    "lastPackagePath", "lastInstanceId", "lastSequenceId", "lastSpaceId", "lastHubId"
]
SESSION_KEYS: tuple[SessionKey, ...] = (
    "lastPackagePath",
    "lastInstanceId",
    "lastSequenceId",
    "lastSpaceId",
    "lastHubId",
)
SESSION_FILE = "session-config.json"
# STH's wording, kept verbatim (including its grammar) so scripts matching it keep working.
NO_PREVIOUS_VALUE = "Previous value isn't said - you can't use '-' to replace it."
# The shared parent lives in a world-writable tmp dir: make it sticky like /tmp, so each user
# can create their own session directory but not remove anyone else's.
SHARED_ROOT_MODE = 0o1777


def session_root() -> Path:
    """``<tmpdir>/.si-tmp``; tmpdir is ``$TMPDIR`` (as Node's os.tmpdir) or ``/tmp``."""
    tmpdir = os.environ.get("TMPDIR", "").rstrip("/") or "/tmp"
    return Path(tmpdir) / ".si-tmp"


def current_session_id() -> str:
    """The POSIX session id of this process, ``""`` where there is none."""
    try:
        return str(os.getsid(0))
    except (AttributeError, OSError):
        return ""


class Session:
    """The "last" values of one session, read and written on demand.

    Args:
        root: the ``.si-tmp`` directory (default :func:`session_root`).
        session_id: the session to use (default :func:`current_session_id`).
    """

    def __init__(self, root: Path | None = None, session_id: str | None = None) -> None:
        self.root = root if root is not None else session_root()
        self.session_id = current_session_id() if session_id is None else session_id
        self.directory = self.root / self.session_id if self.session_id else self.root
        self.path = self.directory / SESSION_FILE

    def prepare(self) -> None:
        """Make sure the session file exists; the first command of a session also cleans up.

        Failures are ignored here: only a command that needs ``-`` or records a value must fail.
        """
        try:
            if self.path.exists():
                return
            created = self._make_directory()
            if not self.path.exists():
                self._write(self._defaults())
            if created:
                collect_dead_sessions(self.root, keep=self.session_id)
        except (OSError, SiError):
            pass

    def get(self, key: SessionKey) -> str:
        """The stored value for ``key`` (``""`` when none)."""
        return self._load()[key]

    def resolve(self, value: str, key: SessionKey) -> str:
        """``value`` itself, or the stored "last" value when ``value`` is exactly ``-``.

        Raises:
            SiError: ``-`` was given but nothing is stored.
        """
        if value != "-":
            return value
        stored = self.get(key)
        if not stored:
            raise SiError(NO_PREVIOUS_VALUE)
        return stored

    def update(self, **values: str) -> None:
        """Store new values (keys from :data:`SESSION_KEYS`)."""
        unknown = set(values) - set(SESSION_KEYS)
        if unknown:
            raise ValueError(f"unknown session keys: {sorted(unknown)}")
        data = self._load()
        data.update(values)
        self._make_directory()
        self._write(data)

    def clear_if(self, key: SessionKey, value: str) -> None:
        """Forget ``key`` when it holds ``value`` (the thing it named was deleted)."""
        if value and self.get(key) == value:
            self.update(**{key: ""})

    def _defaults(self) -> dict[str, str]:
        data: dict[str, str] = dict.fromkeys(SESSION_KEYS, "")
        data["sessionId"] = self.session_id
        return data

    def _load(self) -> dict[str, str]:
        data = self._defaults()
        self._check_owner()
        try:
            stored = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return data
        except (OSError, ValueError):
            return data  # a damaged file is as good as an empty one; the next write repairs it
        if isinstance(stored, dict):
            for key in SESSION_KEYS:
                value = stored.get(key)
                if isinstance(value, str):
                    data[key] = value
        return data

    def _check_owner(self) -> None:
        """Refuse a session directory someone else made: its values could point anywhere."""
        try:
            owner = self.directory.stat().st_uid
        except OSError:
            return
        if self.session_id and owner != os.getuid():
            raise SiError(f"the session directory {self.directory} belongs to another user")

    def _make_directory(self) -> bool:
        """Create the session directory; True when it did not exist before."""
        if not self.root.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            try:
                os.chmod(self.root, SHARED_ROOT_MODE)
            except OSError:
                pass  # someone else's root: fine as long as we can create our directory
        if self.directory.exists():
            self._check_owner()
            return False
        self.directory.mkdir(mode=0o700, exist_ok=True)
        return True

    def _write(self, data: dict[str, str]) -> None:
        """Write atomically, so a concurrent ``si`` never reads half a file."""
        temporary = self.directory / f".{SESSION_FILE}.{os.getpid()}.tmp"
        try:
            temporary.write_text(json.dumps(data, indent=2), encoding="utf-8")
            os.replace(temporary, self.path)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise


def collect_dead_sessions(root: Path, keep: str) -> None:
    """Delete the session directories whose session leader (SID = its pid) is gone."""
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        if not entry.name.isdigit() or entry.name == keep:
            continue
        if not entry.is_dir(follow_symlinks=False) or not os.access(entry.path, os.W_OK):
            continue
        if _pid_alive(int(entry.name)):
            continue
        import shutil

        shutil.rmtree(entry.path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if os.path.isdir("/proc/self"):
        return os.path.exists(f"/proc/{pid}")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True
