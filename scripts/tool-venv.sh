#!/usr/bin/env bash
# Prints the path of a Python venv holding exactly the packages of a requirements file, building
# it first when needed: ${LIFEGUARD_CACHE:-$HOME/.cache/lifeguard}/NAME (or NAME itself when it
# is an absolute path), (re)built with
# `python3 -m venv` + `pip install -r FILE` only when the stamp inside it does not hold the
# file's sha256; otherwise nothing is fetched. Concurrent runs are serialised on a lock file.
#
#   scripts/tool-venv.sh NAME REQUIREMENTS_FILE
#
# Needs CPython >= 3.10 with venv and pip (set PYTHON to use another interpreter).
set -euo pipefail

name="$1"
requirements="$2"
case "$name" in
  /*) venv="$name" ;;
  *) venv="${LIFEGUARD_CACHE:-$HOME/.cache/lifeguard}/$name" ;;
esac
stamp="$venv/.lifeguard-requirements.sha256"
python="${PYTHON:-python3}"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"

up_to_date() {
  [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]
}

if ! up_to_date; then
  mkdir -p "$(dirname "$venv")"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$venv.lock"
    flock 9
  fi
  if ! up_to_date; then
    if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
      echo "tool-venv.sh: $python is missing or older than Python 3.10" >&2
      exit 1
    fi
    echo "tool-venv.sh: building $venv from $requirements" >&2
    if [ -f "$venv/pyvenv.cfg" ]; then
      "$python" -m venv --clear "$venv" >&2
    else
      "$python" -m venv "$venv" >&2
    fi
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$requirements" >&2
    echo "$want" >"$stamp"
  fi
fi
echo "$venv"
