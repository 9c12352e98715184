#!/usr/bin/env bash
# Lints the AWS side as code: cfn-lint on packaging/cloudformation/lifeguard.yaml (warnings are
# failures too), then check_policies.py, which fails when the template's IAM statements or SSM
# document differ from packaging/iam/*.json and packaging/ssm/ (the ones the tests check).
#
# cfn-lint and PyYAML live in a venv in ${LIFEGUARD_CACHE:-$HOME/.cache/lifeguard}/cfn-venv,
# (re)built with `python3 -m venv` + `pip install -r packaging/cloudformation/requirements.txt`
# only when the stamp inside it does not hold that file's sha256; otherwise nothing is fetched.
# Needs CPython >= 3.10 with venv and pip (set PYTHON to use another interpreter).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
dir="packaging/cloudformation"
venv="${LIFEGUARD_CACHE:-$HOME/.cache/lifeguard}/cfn-venv"
requirements="$dir/requirements.txt"
stamp="$venv/.lifeguard-requirements.sha256"
python="${PYTHON:-python3}"

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
up_to_date() {
  [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && "$venv/bin/python" -c 'import importlib.metadata as m; m.version("cfn-lint"); m.version("PyYAML")' >/dev/null 2>&1
}

if ! up_to_date; then
  mkdir -p "$(dirname "$venv")"
  # Serialise concurrent runs on a lock file next to the venv.
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$venv.lock"
    flock 9
  fi
  if ! up_to_date; then
    if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
      echo "lint-aws-template.sh: $python is missing or older than Python 3.10" >&2
      exit 1
    fi
    echo "lint-aws-template.sh: building the cfn-lint venv in $venv" >&2
    if [ -f "$venv/pyvenv.cfg" ]; then
      "$python" -m venv --clear "$venv" >&2
    else
      "$python" -m venv "$venv" >&2
    fi
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$requirements" >&2
    echo "$want" >"$stamp"
  fi
fi

echo "cfn-lint $("$venv/bin/cfn-lint" --version | awk '{print $2}'): $dir/lifeguard.yaml"
# Exit codes are a bit mask (2 errors, 4 warnings, 8 informational): any of them fails.
"$venv/bin/cfn-lint" --non-zero-exit-code informational -- "$dir/lifeguard.yaml"
echo "cfn-lint: clean"
"$venv/bin/python" "$dir/check_policies.py" "$dir/lifeguard.yaml"
