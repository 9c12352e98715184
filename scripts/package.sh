#!/usr/bin/env bash
# Builds the agent's .deb and .rpm: binary, units, sysusers entry, configuration in
# /etc/lifeguard (a conffile / %config(noreplace)), documentation and maintainer scripts.
#
#   scripts/package.sh [--binary PATH] [--out DIR] [--fast]
#
# Without --binary it builds the release binary first. --fast compresses little (tests package
# a large debug binary; releases leave it out). Needs dpkg-deb and rpmbuild (Debian's
# dpkg and rpm packages; installed when missing).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lifeguard/target}"
binary=""
out="$CARGO_TARGET_DIR/packages"
fast=0
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --fast) fast=1; shift ;;
    *) echo "usage: $0 [--binary PATH] [--out DIR] [--fast]" >&2; exit 64 ;;
  esac
done
if [ -z "$binary" ]; then
  cargo build --release --locked -p lifeguard-agent >&2
  binary="$CARGO_TARGET_DIR/release/lifeguard-agent"
fi
bash scripts/system-tools.sh

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
deb_arch="$(dpkg --print-architecture)"
rpm_arch="$(uname -m)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The installed tree, shared by both packages.
staged="$work/root"
install -D -m 0755 "$binary" "$staged/usr/bin/lifeguard-agent"
for unit in lifeguard-agent.service lifeguard-step.socket lifeguard-step@.service; do
  install -D -m 0644 "systemd/$unit" "$staged/usr/lib/systemd/system/$unit"
done
install -D -m 0644 packaging/sysusers/lifeguard-agent.conf "$staged/usr/lib/sysusers.d/lifeguard-agent.conf"
install -D -m 0640 packaging/etc/agent.toml "$staged/etc/lifeguard/agent.toml"
doc="$staged/usr/share/doc/lifeguard-agent"
install -D -m 0644 README.md "$doc/README.md"
for example in packaging/examples/agent.toml packaging/examples/agent-minimal.toml; do
  install -D -m 0644 "$example" "$doc/examples/$(basename "$example")"
done

mkdir -p "$out"

# .deb
debroot="$work/deb"
cp -a "$staged" "$debroot"
mkdir -p "$debroot/DEBIAN"
size="$(du -sk --exclude=DEBIAN "$debroot" | cut -f1)"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$deb_arch/" -e "s/@SIZE@/$size/" \
  packaging/deb/control.in > "$debroot/DEBIAN/control"
echo /etc/lifeguard/agent.toml > "$debroot/DEBIAN/conffiles"
for script in postinst prerm postrm; do
  install -m 0755 "packaging/deb/$script" "$debroot/DEBIAN/$script"
done
deb="$out/lifeguard-agent_${version}_${deb_arch}.deb"
deb_compression=()
rpm_compression=()
if [ "$fast" = 1 ]; then
  deb_compression=(-Zgzip -z1)
  rpm_compression=(--define "_binary_payload w1.gzdio")
fi
dpkg-deb --root-owner-group "${deb_compression[@]}" --build "$debroot" "$deb" >&2

# .rpm
rpmbuild -bb --quiet "${rpm_compression[@]}" \
  --define "_topdir $work/rpmbuild" \
  --define "_rpmdir $out" \
  --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
  --define "lifeguard_version $version" \
  --define "staged $staged" \
  --define "__strip /bin/true" \
  --define "_build_id_links none" \
  --define "debug_package %{nil}" \
  --target "$rpm_arch" \
  packaging/rpm/lifeguard-agent.spec >&2
rpm="$out/lifeguard-agent-${version}-1.${rpm_arch}.rpm"

echo "$deb"
echo "$rpm"
