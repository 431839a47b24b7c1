"""``python -m si.daemon --home DIR [...]``: the hub without the CLI's imports.

For supervisors and test harnesses that start hubs often; ``si hub serve`` is the same hub.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    # Start-up creates tens of thousands of objects (modules, classes, functions) that live as
    # long as the hub: collecting while they are made costs ~5 ms and frees little. run_hub
    # turns the collector back on once the hub answers.
    gc.disable()
    from si.daemon.options import (
        DEFAULT_BODY_IDLE_TIMEOUT,
        DEFAULT_HEAD_TIMEOUT,
        DEFAULT_KEEP_ALIVE_TIMEOUT,
        DEFAULT_RETENTION_SECONDS,
        HubOptions,
    )
    from si.daemon.serve import serve_hub

    parser = argparse.ArgumentParser(prog="python -m si.daemon", description=__doc__)
    parser.add_argument("--home", type=Path)
    parser.add_argument("--port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("-K", "--kill-on-exit", action="store_true")
    parser.add_argument("--retention", type=float, default=DEFAULT_RETENTION_SECONDS)
    parser.add_argument("--head-timeout", type=float, default=DEFAULT_HEAD_TIMEOUT)
    parser.add_argument("--body-idle-timeout", type=float, default=DEFAULT_BODY_IDLE_TIMEOUT)
    parser.add_argument("--keep-alive-timeout", type=float, default=DEFAULT_KEEP_ALIVE_TIMEOUT)
    args = parser.parse_args(argv)
    options = HubOptions(
        home=args.home,
        port=args.port,
        host=args.host,
        kill_on_exit=args.kill_on_exit,
        retention=args.retention,
        head_timeout=args.head_timeout,
        body_idle_timeout=args.body_idle_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
    )
    return serve_hub(options)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
