#!/usr/bin/env bash
# The local demo, on one machine and against the emulator only: a group with a terminate hook,
# lifeguard-agent on each simulated instance, a scale-in, the drain, and the archive in S3.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lifeguard/target}"

bash tests/emulator/setup.sh >/dev/null
cargo build --locked -p lifeguard-agent -p lifeguard-controller -p lifeguard-e2e --bins
exec "$CARGO_TARGET_DIR/debug/lifeguard-demo"
