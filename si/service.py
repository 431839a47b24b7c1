"""A systemd unit that starts the hub at boot (``si hub service install``).

With the hub started at boot, a reboot is survived: the hub finds every instance's runner gone
with the old boot, starts again those whose restart policy is ``on-failure`` or ``always``
(same id, args and config) and shows the others ``lost`` (``si.daemon.supervise``).

``KillMode=process`` matters: a ``systemctl stop`` or ``restart`` of the hub ends the hub alone,
not its runners, which share its cgroup; they go on running and the next hub re-adopts them,
the same promise as for a hub that crashed.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

UNIT_NAME = "si-hub.service"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")


@dataclass(frozen=True)
class ServiceUnit:
    """Where the unit goes and what it runs."""

    user: bool
    home: Path | None = None
    port: int | None = None
    host: str | None = None

    @property
    def path(self) -> Path:
        if not self.user:
            return SYSTEM_UNIT_DIR / UNIT_NAME
        config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(config) / "systemd" / "user" / UNIT_NAME

    @property
    def command(self) -> list[str]:
        """The hub's own entry point, by the interpreter that has si installed."""
        command = [sys.executable, "-m", "si.daemon"]
        if self.home is not None:
            command += ["--home", str(self.home.absolute())]
        if self.port is not None:
            command += ["--port", str(self.port)]
        if self.host is not None:
            command += ["--host", self.host]
        return command

    def text(self) -> str:
        target = "default.target" if self.user else "multi-user.target"
        where = f" (home {self.home.absolute()})" if self.home is not None else ""
        return "\n".join(
            [
                "# Written by `si hub service install`; `si hub service uninstall` removes it.",
                "[Unit]",
                f"Description=si transform hub{where}",
                "After=network.target",
                "",
                "[Service]",
                "Type=simple",
                f"ExecStart={shlex.join(self.command)}",
                # The hub alone: its runners outlive it and the next hub re-adopts them.
                "KillMode=process",
                "Restart=on-failure",
                "RestartSec=1",
                "",
                "[Install]",
                f"WantedBy={target}",
                "",
            ]
        )

    def systemctl(self, *args: str) -> list[str]:
        return ["systemctl", *(["--user"] if self.user else []), *args]


def systemd_runs() -> bool:
    """Whether this machine was booted with systemd (so ``systemctl`` can enable the unit)."""
    return Path("/run/systemd/system").is_dir()
