#!/usr/bin/env bash
# Lints the AWS side as code: cfn-lint on packaging/cloudformation/lifeguard.yaml (warnings are
# failures too), then check_policies.py, which fails when the template's IAM statements or SSM
# document differ from packaging/iam/*.json and packaging/ssm/ (the ones the tests check).
#
# cfn-lint and PyYAML live in a venv built by scripts/tool-venv.sh from
# packaging/cloudformation/requirements.txt.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
dir="packaging/cloudformation"
venv="$(bash scripts/tool-venv.sh cfn-venv "$dir/requirements.txt")"

echo "cfn-lint $("$venv/bin/cfn-lint" --version | awk '{print $2}'): $dir/lifeguard.yaml"
# Exit codes are a bit mask (2 errors, 4 warnings, 8 informational): any of them fails.
"$venv/bin/cfn-lint" --non-zero-exit-code informational -- "$dir/lifeguard.yaml"
echo "cfn-lint: clean"
"$venv/bin/python" "$dir/check_policies.py" "$dir/lifeguard.yaml"
