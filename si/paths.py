"""Where a hub keeps its state, and how clients find its socket.

One hub serves one *home*. With ``--home DIR`` (or ``SI_HOME``) everything lives under that
directory; without it the per-user directories of platformdirs are used: the data dir for
sequences, the state dir for instances and the lock, the runtime dir for the API socket.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Unix socket paths are limited to 108 bytes including the terminating NUL (sun_path).
MAX_UNIX_PATH = 107


@dataclass(frozen=True)
class HubPaths:
    """The files and directories of one hub home."""

    sequences: Path
    instances: Path
    lock: Path
    socket: Path
    log: Path

    @classmethod
    def under(cls, home: Path) -> HubPaths:
        home = home.absolute()
        return cls(
            sequences=home / "sequences",
            instances=home / "instances",
            lock=home / "hub.lock",
            socket=home / "hub.sock",
            log=home / "hub.log",
        )

    @classmethod
    def default(cls) -> HubPaths:
        """The home named by ``SI_HOME``, else platformdirs' per-user directories."""
        env_home = os.environ.get("SI_HOME")
        if env_home:
            return cls.under(Path(env_home))
        import platformdirs

        data = Path(platformdirs.user_data_dir("si"))
        state = Path(platformdirs.user_state_dir("si"))
        runtime = Path(platformdirs.user_runtime_dir("si"))
        return cls(
            sequences=data / "sequences",
            instances=state / "instances",
            lock=state / "hub.lock",
            socket=runtime / "hub.sock",
            log=state / "hub.log",
        )

    @classmethod
    def resolve(cls, home: Path | None) -> HubPaths:
        return cls.under(home) if home is not None else cls.default()

    def make_dirs(self) -> None:
        for directory in (self.sequences, self.instances, self.lock.parent, self.socket.parent):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)


def connectable_unix_path(path: str | os.PathLike[str]) -> tuple[str, int | None]:
    """Return a path that ``connect``/``bind`` accept even when ``path`` is too long.

    A path longer than the sun_path limit is reached through ``/proc/self/fd/<dirfd>/<name>``,
    which the kernel resolves like the real directory. The caller owns the returned directory
    descriptor (``None`` when the path was short enough) and closes it after connecting.
    """
    text = os.fspath(path)
    if len(text.encode()) <= MAX_UNIX_PATH:
        return text, None
    directory, name = os.path.split(text)
    dirfd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY)
    return f"/proc/self/fd/{dirfd}/{name}", dirfd
