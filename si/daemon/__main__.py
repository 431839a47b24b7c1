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
    from si.daemon.options import HubOptions, parse_nats_urls, parse_size
    from si.daemon.serve import serve_hub

    # Options left unset stay out of the namespace, so HubOptions' defaults apply; each option
    # is named as its HubOptions field (``si hub serve --detach`` relies on that).
    parser = argparse.ArgumentParser(
        prog="python -m si.daemon", description=__doc__, argument_default=argparse.SUPPRESS
    )
    parser.add_argument("--home", type=Path)
    parser.add_argument("--port", type=int)
    parser.add_argument("--host")
    parser.add_argument("-K", "--kill-on-exit", action="store_true")
    parser.add_argument("--retention", type=float)
    parser.add_argument("--reader-lag-bytes", type=int)
    parser.add_argument("--reader-lag-seconds", type=float)
    parser.add_argument("--max-package-size", type=parse_size)
    parser.add_argument("--head-timeout", type=float)
    parser.add_argument("--body-idle-timeout", type=float)
    parser.add_argument("--keep-alive-timeout", type=float)
    parser.add_argument("--insecure-no-auth", action="store_true")
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    parser.add_argument("--token-rate", type=float)
    parser.add_argument("--token-concurrency", type=int)
    parser.add_argument("--max-connections", type=int)
    parser.add_argument("--nats", type=parse_nats_urls)
    parser.add_argument("--nats-creds", type=Path)
    parser.add_argument("--hub-name")
    parser.add_argument("--advertise-url")
    parser.add_argument("--cluster-topics", action="store_true")
    options = HubOptions(**vars(parser.parse_args(argv)))
    return serve_hub(options)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
