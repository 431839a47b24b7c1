#!/usr/bin/env bash
# The main job in one go: a hub on a temporary home, the counter sequence packed, sent and
# started, and its output streamed to this terminal. Ctrl-C stops everything.
set -euo pipefail
home=$(mktemp -d "${TMPDIR:-/tmp}/si-demo.XXXXXX")
export SI_HUB="$home/hub.sock"
si hub serve --home "$home" --kill-on-exit 2>"$home/hub.log" &
hub=$!
trap 'kill $hub 2>/dev/null; wait $hub 2>/dev/null; rm -rf "$home"' EXIT
for _ in $(seq 100); do si hub version >/dev/null 2>&1 && break; sleep 0.05; done
here=$(cd "$(dirname "$0")" && pwd)
si seq pack "$here/counter" -o "$home/counter.tar.gz"
si seq send - >/dev/null
si seq start - 3000 "${COUNT:-20}" 0.25 >/dev/null
echo "streaming the output of instance $(si inst info - --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'):" >&2
si inst output -
