//! Fixtures that several test files share, built once here on [`MountBuilder`]:
//! a tree with one small file, an rw root with a home directory that an
//! unprivileged user owns, a mount under a hard open-file limit.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::fs::{mkdir_owned, write_file};
use super::mount::{MountBuilder, Mounted};
use super::proc::{mounts_at, run_with_timeout, stderr_str};
use super::{BIN, KEY_GID, KEY_UID};

/// A fresh builder whose `real/` holds `hello.txt` (`hello\n`, 0644); nothing
/// mapped yet. Returns the builder and `real/`.
pub fn hello_tree() -> (MountBuilder, PathBuf) {
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("hello.txt"), b"hello\n", 0o644);
    (b, real)
}

/// [`hello_tree`] with `/` → `real/` (read-only), mounted.
#[track_caller]
pub fn hello_mount() -> Mounted {
    let (b, real) = hello_tree();
    b.map("/", &real).mount()
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

/// Mounts with an open-file limit of `limit` that the daemon cannot raise: it runs without
/// CAP_SYS_RESOURCE (dropped from the bounding set), as in a container. Plain `prlimit` is not
/// enough: a root daemon raises its limit to `fs.nr_open`.
#[track_caller]
pub fn mount_with_hard_fd_limit(b: MountBuilder, limit: u32) -> Mounted {
    fs::write(b.config_path(), b.config_text()).expect("write config");
    let out = run_with_timeout(
        Command::new("setpriv")
            .args(["--bounding-set", "-sys_resource", "--", "prlimit"])
            .arg(format!("--nofile={limit}:{limit}"))
            .arg(BIN)
            .args(b.args()),
        Duration::from_secs(30),
    );
    let mounted = b.into_mounted();
    assert!(out.status.success(), "mount failed: {}", stderr_str(&out));
    let limits = fs::read_to_string(format!("/proc/{}/limits", mounted.daemon_pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        line.split_whitespace().nth(3),
        Some(limit.to_string().as_str()),
        "the daemon raised its limit: {line}"
    );
    mounted
}
