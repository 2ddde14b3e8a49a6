#!/usr/bin/env bash
# The local SQS endpoint, in the foreground, on 127.0.0.1:$LOCAL_SQS_PORT (default 4566) only.
# SQS_LOCAL=fauxqs (the default): fauxqs on Node, in memory, fast at any queue depth.
# SQS_LOCAL=moto: moto's server from the virtualenv; also the fallback when Node or fauxqs is
# missing. It re-scans every message on each call, so it slows as the queue grows.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv_bin="${VENV_BIN:-$here/../../.venv/bin}"
export LOCAL_SQS_PORT="${LOCAL_SQS_PORT:-4566}"
engine="${SQS_LOCAL:-fauxqs}"

if [ "$engine" = fauxqs ] && ! { command -v node >/dev/null && [ -d "$here/node_modules/fauxqs" ]; }; then
  echo "local SQS: Node.js or fauxqs is not installed (make run installs fauxqs when Node is" >&2
  echo "there); using moto_server instead, which slows down as the queue grows." >&2
  engine=moto
fi
if [ "$engine" = moto ] && [ ! -x "$venv_bin/python" ]; then
  echo "local SQS: moto_server needs the virtualenv, and there is none at $venv_bin:" >&2
  echo "run 'make run' (or 'make venv local-sqs' first)" >&2
  exit 1
fi
case "$engine" in
  fauxqs) exec node "$here/launch.mjs" ;;
  moto)
    echo "moto_server: SQS endpoint on http://127.0.0.1:$LOCAL_SQS_PORT (in memory)"
    exec "$venv_bin/python" "$here/../../scripts/local_moto.py" -H 127.0.0.1 -p "$LOCAL_SQS_PORT" ;;
  *) echo "SQS_LOCAL must be fauxqs or moto, not '$engine'" >&2; exit 2 ;;
esac
