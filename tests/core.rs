//! The filesystem core (`relocfs::fs::Fs`) built directly, without FUSE and without root: the
//! lookup path production runs, checked against a naive reference model and by direct tests.
//!
//! Every test here builds the core the way the daemon does (config -> `PrefixTable` -> rule
//! roots from `preflight::open_roots` -> `Fs::new`) over temporary directories, and calls it as
//! the current user: no `/dev/fuse`, no mount, no privilege. They pass as any user that can
//! write `$TMPDIR`, e.g. `setpriv --reuid 65534 --regid 65534 --clear-groups
//! target/debug/deps/core-*` with `TMPDIR` set to a directory that user owns.

// The modules live in tests/core/ (a file directly in tests/ would be a test binary of its own).
#[path = "core/direct.rs"]
mod direct;
#[path = "core/fixture.rs"]
mod fixture;
#[path = "core/reference.rs"]
mod reference;
