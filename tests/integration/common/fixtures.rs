//! Fixtures that several test files share, built once here on [`MountBuilder`]:
//! a tree with one small file, and an rw root with a home directory that an
//! unprivileged user owns.

use std::fs;
use std::path::{Path, PathBuf};

use super::fs::{mkdir_owned, write_file};
use super::mount::{MountBuilder, Mounted};
use super::proc::{mounts_at, stderr_str};
use super::{KEY_GID, KEY_UID};

/// A fresh builder whose `real/` holds `hello.txt` (`hello\n`, 0644); nothing
/// mapped yet. Returns the builder and `real/`.
pub fn hello_tree() -> (MountBuilder, PathBuf) {
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("hello.txt"), b"hello\n", 0o644);
    (b, real)
}

/// Starts `m` again over its dead mount (a [`hello_tree`] one) and asserts
/// that it succeeds (`what` names the case), serves `hello.txt` and leaves one
/// mount at the path: the dead one was detached.
#[track_caller]
pub fn assert_remount_replaces_dead_mount(m: &Mounted, what: &str) {
    let out = m.remount();
    assert!(out.status.success(), "{what}: {}", stderr_str(&out));
    assert_eq!(fs::read(m.at("hello.txt")).unwrap(), b"hello\n");
    assert_eq!(mounts_at(&m.mnt), 1, "the dead mount was not detached");
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
