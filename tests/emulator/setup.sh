#!/usr/bin/env bash
# Creates (or reuses) the Python virtual environment of the lifeguard AWS API emulator and
# prints its path on stdout (everything else goes to stderr), e.g.:
#
#   venv="$(tests/emulator/setup.sh)" && "$venv/bin/python" -m pytest tests/emulator/tests
#
# The venv lives in ${LIFEGUARD_EMULATOR_VENV:-$HOME/.cache/lifeguard/emulator-venv}; it is
# (re)built from requirements.txt by scripts/tool-venv.sh only when that file changed, else this
# returns at once. Needs CPython >= 3.10 with venv and pip (set PYTHON to use another one).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$here/../../scripts/tool-venv.sh" \
  "${LIFEGUARD_EMULATOR_VENV:-$HOME/.cache/lifeguard/emulator-venv}" "$here/requirements.txt"
