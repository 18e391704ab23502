//! Fixtures that several test files share, built once here on [`MountBuilder`]:
//! a tree with one small file, and an rw root with a home directory that an
//! unprivileged user owns.

use std::path::{Path, PathBuf};

use super::fs::{mkdir_owned, write_file};
use super::mount::{MountBuilder, Mounted};
use super::{KEY_GID, KEY_UID};

/// A fresh builder whose `real/` holds `hello.txt` (`hello\n`, 0644); nothing
/// mapped yet. Returns the builder and `real/`.
pub fn hello_tree() -> (MountBuilder, PathBuf) {
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("hello.txt"), b"hello\n", 0o644);
    (b, real)
}

/// Creates `real/home4242`, owned by [`KEY_UID`]:[`KEY_GID`] (0755): where
/// that user may write below an rw root. Returns its path.
pub fn user_home(real: &Path) -> PathBuf {
    let home = real.join("home4242");
    mkdir_owned(&home, KEY_UID, KEY_GID, 0o755);
    home
}

/// `/` → `real/` (rw) with `allow_other` and every option of `opts` (each
/// one `-o` option, in order), and `real/home4242` owned by uid 4242
/// ([`user_home`]). Returns the mount and `real/`.
pub fn rw_root_with_home(opts: &[&str]) -> (Mounted, PathBuf) {
    let b = MountBuilder::new();
    let real = b.real();
    user_home(&real);
    let b = opts
        .iter()
        .fold(b.map_mode("/", &real, "rw").opt("allow_other"), |b, o| {
            b.opt(o)
        });
    (b.mount(), real)
}
