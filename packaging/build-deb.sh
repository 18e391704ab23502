#!/usr/bin/env bash
# Build the relocfs Debian package; prints the path of the .deb. Run from anywhere:
#
#   packaging/build-deb.sh
#
# 1. builds the release binary (cargo build --release --locked);
# 2. has it write its man pages and shell completions into target/packaging/ (the hidden
#    `relocfs generate man|completions DIR`), man pages gzipped;
# 3. packages with `cargo deb --no-build`: the assets in Cargo.toml [package.metadata.deb]
#    point at the binary, target/packaging/ and packaging/.
# Installs cargo-deb (cargo install cargo-deb --locked) if missing. The man page date is
# SOURCE_DATE_EPOCH, by default the time of the last commit, so rebuilds are reproducible.
set -euo pipefail

cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb: installing cargo-deb" >&2
    cargo install cargo-deb --locked
fi

cargo build --release --locked

# The binary is where cargo put it (CARGO_TARGET_DIR, .cargo/config.toml); the generated
# files always go to target/packaging/ under the crate, where Cargo.toml's assets expect them.
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="${target_dir:-target}/release/relocfs"

SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH

out=target/packaging
rm -rf "$out"
"$bin" generate man "$out/man" >/dev/null
"$bin" generate completions "$out/completions" >/dev/null
gzip -9n "$out"/man/*

# cargo deb prints the path of the package it wrote as its last line on stdout.
deb=$(cargo deb --no-build --locked | tail -n 1)
if [[ ! -f "$deb" ]]; then
    echo "build-deb: cargo deb did not report a package (got: $deb)" >&2
    exit 1
fi
echo "$deb"
