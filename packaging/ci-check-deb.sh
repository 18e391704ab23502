#!/usr/bin/env bash
# CI check of the Debian package, as an operator would use it: build it, check what it ships,
# install it, mount from an fstab line of type fuse.relocfs (mount(8) -> mount.fuse3 ->
# /usr/bin/relocfs), read through the mount, unmount, purge. Needs root. Leaves nothing behind.
set -euo pipefail

cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

deb=$(packaging/build-deb.sh | tail -n 1)
echo "ci-check-deb: built $deb"

contents=$(dpkg-deb -c "$deb")
for path in \
    ./usr/bin/relocfs \
    ./usr/share/man/man8/relocfs.8.gz \
    ./usr/share/man/man5/relocfs.toml.5.gz \
    ./usr/share/bash-completion/completions/relocfs \
    ./usr/share/zsh/vendor-completions/_relocfs \
    ./usr/share/fish/vendor_completions.d/relocfs.fish \
    ./usr/share/doc/relocfs/examples/config.example.toml \
    ./lib/systemd/system/relocfs@.service \
    ./etc/logrotate.d/relocfs; do
    grep -q " $path\$" <<<"$contents" || { echo "ci-check-deb: $path missing from $deb" >&2; exit 1; }
done
dpkg-deb -f "$deb" Depends | grep -q fuse3 || { echo "ci-check-deb: Depends lacks fuse3" >&2; exit 1; }

work=$(mktemp -d)
cleanup() {
    umount "$work/legacy" 2>/dev/null || umount -l "$work/legacy" 2>/dev/null || true
    dpkg --purge relocfs >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

case $deb in /*) ;; *) deb="./$deb" ;; esac
apt-get install -y -qq "$deb" >/dev/null
[[ -x /usr/bin/relocfs ]] || { echo "ci-check-deb: /usr/bin/relocfs not installed" >&2; exit 1; }
[[ -d /var/log/relocfs ]] || { echo "ci-check-deb: /var/log/relocfs not created" >&2; exit 1; }
man -w relocfs.toml >/dev/null 2>&1 || [[ -f /usr/share/man/man5/relocfs.toml.5.gz ]]

mkdir -p "$work/real" "$work/legacy"
echo "served through the installed package" >"$work/real/file"
cat >"$work/app.toml" <<EOF
[[map]]
from = "/"
to = "$work/real"

[audit]
log = "$work/audit.jsonl"
EOF
echo "$work/app.toml $work/legacy fuse.relocfs defaults,allow_other,nodev,nosuid,nofail 0 0" >"$work/fstab"
mount -T "$work/fstab" "$work/legacy"
got=$(cat "$work/legacy/file")
[[ $got == "served through the installed package" ]] || { echo "ci-check-deb: read '$got'" >&2; exit 1; }
grep -q " $work/legacy .* fuse.relocfs " /proc/self/mountinfo
umount "$work/legacy"
for _ in $(seq 50); do grep -q '"op":"open"' "$work/audit.jsonl" 2>/dev/null && break; sleep 0.1; done
grep -q '"op":"open"' "$work/audit.jsonl" || { echo "ci-check-deb: no audit line" >&2; exit 1; }

dpkg --purge relocfs >/dev/null
[[ ! -e /usr/bin/relocfs ]] || { echo "ci-check-deb: purge left /usr/bin/relocfs" >&2; exit 1; }
echo "ci-check-deb: package built, installed, mounted from fstab, purged: ok"
