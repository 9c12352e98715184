#!/usr/bin/env bash
# Installs, from Debian's packages, the system tools the tests call and a new machine may lack:
# systemd-analyze (the agent unit's verify, security and system-call filter checks), setpriv
# and strace (the agent run under its unit's identity and capabilities, its system calls held
# against the unit's filter), dpkg-deb and rpmbuild (the agent's packages). Does nothing when
# they are there.
#
#   scripts/system-tools.sh --promtool
#
# prints the path of promtool instead, taken from Debian's prometheus package into
# ${LIFEGUARD_CACHE:-$HOME/.cache/lifeguard}/tools without installing Prometheus itself.
set -euo pipefail

sudo_=""
[ "$(id -u)" -eq 0 ] || sudo_="sudo"
updated=0
apt_update() {
  if [ "$updated" = 0 ]; then
    $sudo_ apt-get update -qq >&2
    updated=1
  fi
}

if [ "${1:-}" = "--promtool" ]; then
  tools="${LIFEGUARD_CACHE:-$HOME/.cache/lifeguard}/tools"
  promtool="$tools/promtool"
  if [ ! -x "$promtool" ]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    echo "system-tools.sh: taking promtool from Debian's prometheus package" >&2
    (cd "$work" && apt-get download -qq prometheus >&2 2>/dev/null) || {
      apt_update
      (cd "$work" && apt-get download -qq prometheus >&2)
    }
    dpkg-deb --fsys-tarfile "$work"/prometheus_*.deb | tar -x -C "$work" ./usr/bin/promtool
    mkdir -p "$tools"
    install -m 0755 "$work/usr/bin/promtool" "$promtool"
  fi
  echo "$promtool"
  exit 0
fi

missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
command -v strace >/dev/null 2>&1 || missing+=(strace)
command -v dpkg-deb >/dev/null 2>&1 || missing+=(dpkg)
command -v rpmbuild >/dev/null 2>&1 || missing+=(rpm)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "system-tools.sh: installing ${missing[*]} from Debian's packages" >&2
  apt_update
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
