#!/usr/bin/env bash
# Creates (or reuses) the Python virtual environment of the lifeguard AWS API emulator and
# prints its path on stdout (everything else goes to stderr), e.g.:
#
#   venv="$(tests/emulator/setup.sh)" && "$venv/bin/python" -m pytest tests/emulator/tests
#
# The venv lives in ${LIFEGUARD_EMULATOR_VENV:-$HOME/.cache/lifeguard/emulator-venv}. It is
# (re)built with `python3 -m venv` + `pip install -r requirements.txt` only when the stamp
# file inside it does not hold the sha256 of requirements.txt; otherwise this returns at once.
# Needs CPython >= 3.10 with venv and pip (set PYTHON to use another interpreter).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${LIFEGUARD_EMULATOR_VENV:-$HOME/.cache/lifeguard/emulator-venv}"
requirements="$here/requirements.txt"
stamp="$venv/.lifeguard-requirements.sha256"
python="${PYTHON:-python3}"

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
up_to_date() {
  [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && "$venv/bin/python" -c 'import importlib.metadata as m; m.version("moto"); m.version("pytest")' >/dev/null 2>&1
}

if up_to_date; then
  echo "$venv"
  exit 0
fi

mkdir -p "$(dirname "$venv")"
# Serialise concurrent runs (two test jobs starting at once) on a lock file next to the venv.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$venv.lock"
  flock 9
  if up_to_date; then
    echo "$venv"
    exit 0
  fi
fi

if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
  echo "setup.sh: $python is missing or older than Python 3.10" >&2
  exit 1
fi

echo "setup.sh: building the emulator venv in $venv" >&2
if [ -f "$venv/pyvenv.cfg" ]; then
  "$python" -m venv --clear "$venv" >&2
else
  "$python" -m venv "$venv" >&2
fi
"$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$requirements" >&2
echo "$want" >"$stamp"
echo "setup.sh: done" >&2
echo "$venv"
