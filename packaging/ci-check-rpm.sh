#!/usr/bin/env bash
# CI check of the RPM package: packaging/rpm/relocfs.spec built with rpmbuild (Debian's `rpm`
# package) from the binary and the generated man pages and completions that
# packaging/build-deb.sh left in target/ (run again when they are missing or older than the
# binary), then inspected: file list, modes, owners, config and doc flags, contents
# (digests against the tree), dependencies, scriptlets. Any difference fails the check, with a
# diff. The RPM is not installed (this is Debian). Leaves nothing behind; takes seconds.
set -euo pipefail

cd "$(dirname "$0")/.."

die() {
    echo "ci-check-rpm: $*" >&2
    exit 1
}

command -v rpmbuild >/dev/null 2>&1 || die "rpmbuild is missing (apt-get install --no-install-recommends rpm)"

# The binary is where cargo put it (CARGO_TARGET_DIR, .cargo/config.toml), as in build-deb.sh;
# the generated files are in target/packaging/ under the crate.
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="${target_dir:-target}/release/relocfs"
case $bin in /*) ;; *) bin="$PWD/$bin" ;; esac
generated=(
    target/packaging/man/relocfs.8.gz
    target/packaging/man/relocfs.toml.5.gz
    target/packaging/completions/relocfs.bash
    target/packaging/completions/_relocfs
    target/packaging/completions/relocfs.fish
)
# Up to date with the sources (a no-op after build-deb.sh), so the package is of this tree.
cargo build --release --locked --quiet
stale=
[[ -x $bin ]] || stale="no $bin"
for f in "${generated[@]}"; do
    [[ -n $stale ]] && break
    [[ -f $f ]] || { stale="no $f"; break; }
    [[ ! $bin -nt $f ]] || stale="$f is older than $bin"
done
if [[ -n $stale ]]; then
    echo "ci-check-rpm: $stale: running packaging/build-deb.sh"
    packaging/build-deb.sh >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/tmp"

# --nodeps: the BuildRequires are RHEL packages, and Debian's rpm database is empty.
# --with prebuilt: no tarball, no cargo; %install takes the files from this tree.
if ! rpmbuild -bb --nodeps --nocheck --with prebuilt \
    --define "tree $PWD" --define "relocfs_bin $bin" \
    --define "_topdir $work" --define "_tmppath $work/tmp" \
    packaging/rpm/relocfs.spec >"$work/rpmbuild.log" 2>&1; then
    cat "$work/rpmbuild.log" >&2
    die "rpmbuild failed"
fi
rpms=("$work"/RPMS/*/relocfs-*.rpm)
((${#rpms[@]} == 1)) && [[ -f ${rpms[0]} ]] || die "rpmbuild wrote ${#rpms[@]} packages: ${rpms[*]}"
rpm=${rpms[0]}
echo "ci-check-rpm: built $(basename "$rpm")"

failed=0
# same WHAT EXPECTED ACTUAL: a diff and a failure when they differ.
same() {
    if ! diff -u --label "expected $1" --label "in the rpm" <(printf '%s\n' "$2") <(printf '%s\n' "$3") >"$work/diff"; then
        echo "ci-check-rpm: $1 differs:" >&2
        cat "$work/diff" >&2
        failed=1
    fi
}

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
same "name, version (Cargo.toml), license" "relocfs $version MIT" \
    "$(rpm -qp --qf '%{NAME} %{VERSION} %{LICENSE}' "$rpm")"
evr=$(rpm -qp --qf '%{VERSION}-%{RELEASE}' "$rpm")

# Files: mode, owner, flags (c: %config, n: noreplace, d: documentation), path.
same "file list (rpm -qlp)" "\
/etc/logrotate.d/relocfs
/usr/bin/relocfs
/usr/lib/systemd/system/relocfs@.service
/usr/share/bash-completion/completions/relocfs
/usr/share/doc/relocfs
/usr/share/doc/relocfs/README.md
/usr/share/doc/relocfs/examples
/usr/share/doc/relocfs/examples/config.example.toml
/usr/share/fish/vendor_completions.d/relocfs.fish
/usr/share/man/man5/relocfs.toml.5.gz
/usr/share/man/man8/relocfs.8.gz
/usr/share/zsh/site-functions/_relocfs
/var/log/relocfs" "$(rpm -qlp "$rpm")"
same "files: mode, owner, flags" "\
-rw-r--r-- root:root cn /etc/logrotate.d/relocfs
-rwxr-xr-x root:root - /usr/bin/relocfs
-rw-r--r-- root:root - /usr/lib/systemd/system/relocfs@.service
-rw-r--r-- root:root - /usr/share/bash-completion/completions/relocfs
drwxr-xr-x root:root - /usr/share/doc/relocfs
-rw-r--r-- root:root d /usr/share/doc/relocfs/README.md
drwxr-xr-x root:root - /usr/share/doc/relocfs/examples
-rw-r--r-- root:root d /usr/share/doc/relocfs/examples/config.example.toml
-rw-r--r-- root:root - /usr/share/fish/vendor_completions.d/relocfs.fish
-rw-r--r-- root:root d /usr/share/man/man5/relocfs.toml.5.gz
-rw-r--r-- root:root d /usr/share/man/man8/relocfs.8.gz
-rw-r--r-- root:root - /usr/share/zsh/site-functions/_relocfs
drwxr-x--- root:root - /var/log/relocfs" \
    "$(rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm" |
        sed 's/:\([a-z]*\)  /:\1 - /')"
same "config files (rpm -qcp)" "/etc/logrotate.d/relocfs" "$(rpm -qcp "$rpm")"

# Contents: each file is the tree's (or build-deb.sh's) file, byte for byte. brp-strip may
# have run `strip -g` on the binary: that copy counts too.
expected_digests=
while read -r path source; do
    expected_digests+="$(sha256sum <"$source" | cut -d' ' -f1) $path"$'\n'
done <<EOF
/etc/logrotate.d/relocfs packaging/logrotate/relocfs
/usr/lib/systemd/system/relocfs@.service packaging/systemd/relocfs@.service
/usr/share/bash-completion/completions/relocfs target/packaging/completions/relocfs.bash
/usr/share/doc/relocfs/README.md README.md
/usr/share/doc/relocfs/examples/config.example.toml config.example.toml
/usr/share/fish/vendor_completions.d/relocfs.fish target/packaging/completions/relocfs.fish
/usr/share/man/man5/relocfs.toml.5.gz target/packaging/man/relocfs.toml.5.gz
/usr/share/man/man8/relocfs.8.gz target/packaging/man/relocfs.8.gz
/usr/share/zsh/site-functions/_relocfs target/packaging/completions/_relocfs
EOF
digests=$(rpm -qp --qf '[%{FILEDIGESTS} %{FILENAMES}\n]' "$rpm" | grep -v '^ ')
bin_digest=$(sed -n 's| /usr/bin/relocfs$||p' <<<"$digests")
same "file contents (sha256)" "${expected_digests%$'\n'}" "$(grep -v ' /usr/bin/relocfs$' <<<"$digests")"
cp "$bin" "$work/stripped"
strip -g "$work/stripped" 2>/dev/null || true
if [[ $bin_digest != "$(sha256sum <"$bin" | cut -d' ' -f1)" &&
    $bin_digest != "$(sha256sum <"$work/stripped" | cut -d' ' -f1)" ]]; then
    echo "ci-check-rpm: /usr/bin/relocfs in the rpm is not $bin" >&2
    failed=1
fi

# Dependencies: fuse3 by hand; /bin/sh for the scriptlets; what rpm finds in the ELF binary
# (the C library, libgcc_s, the dynamic loader; nothing else: no libfuse, the FUSE protocol
# is spoken directly) and rpmlib features.
same "dependencies (rpm -qRp, without the ELF and rpmlib ones)" "\
/bin/sh
/bin/sh
config(relocfs) = $evr
fuse3" "$(rpm -qRp "$rpm" | grep -Ev '^(rpmlib\(|rtld\(GNU_HASH\)$|(libc\.so\.6|libgcc_s\.so\.1|ld-linux[-a-z0-9_]*\.so\.[0-9]+)\()')"
same "dependency kinds" "\
post,interp /bin/sh
postun,interp /bin/sh
config config(relocfs)
manual fuse3" "$(rpm -qp --qf '[%{REQUIREFLAGS:deptype} %{REQUIRENAME}\n]' "$rpm" | grep -Ev '^(auto|rpmlib) ')"
rpm -qRp "$rpm" | grep -q '^libc\.so\.6' || { echo "ci-check-rpm: no libc.so.6 dependency: rpm found no ELF dependencies" >&2; failed=1; }
same "weak dependencies (rpm -qp --recommends)" "\
logrotate
procps-ng" "$(rpm -qp --recommends "$rpm")"

# Scriptlets: what packaging/debian/postinst and postrm do for systemd (daemon-reload after
# install and removal), nothing else; no triggers (tests/packaging.rs compares them with the
# .deb's). /var/log/relocfs is a packaged directory.
reload='if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi'
same "scriptlets (rpm -qp --scripts)" "\
postinstall scriptlet (using /bin/sh):
$reload
postuninstall scriptlet (using /bin/sh):
$reload" "$(rpm -qp --scripts "$rpm")"
same "triggers" "" "$(rpm -qp --triggers --filetriggers "$rpm")"

((failed == 0)) || die "$(basename "$rpm") differs from what is expected (above)"
echo "ci-check-rpm: $(basename "$rpm"): files, contents, dependencies, scriptlets: ok"
