#!/usr/bin/env bash
# Runs every test: the emulator's own suite (pytest, boto3 against the emulator) and the Rust
# workspace (unit, fixture, fuzz, CLI and end-to-end tests; the end-to-end ones start their own
# emulator on a free loopback port). Builds what it needs; installs the emulator's Python
# environment on first use. Extra arguments go to `cargo nextest run`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lifeguard/target}"

echo "== emulator environment"
venv="$(bash tests/emulator/setup.sh)"

echo "== emulator tests (pytest)"
"$venv/bin/python" -m pytest tests/emulator/tests -q -p no:cacheprovider

echo "== system tools"
bash scripts/system-tools.sh

echo "== workspace tests (cargo nextest)"
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest is missing: installing it from crates.io"
  cargo install cargo-nextest --locked
fi
cargo nextest run --workspace --locked --no-fail-fast "$@"
