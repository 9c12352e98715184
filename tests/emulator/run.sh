#!/usr/bin/env bash
# Starts the lifeguard AWS API emulator in the foreground (Ctrl-C or SIGTERM stops it):
#
#   tests/emulator/run.sh [--port 4566] [--host 127.0.0.1] [--port-file PATH] [--verbose]
#
# Runs setup.sh first (fast when the venv is already built). Prints the endpoint URL and
# the IMDS base URL pattern, http://HOST:PORT/_imds/<instance-id>. See README.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$("$here/setup.sh")"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
exec "$venv/bin/python" -m lifeguard_emulator "$@"
