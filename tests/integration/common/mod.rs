//! Shared fixture and helpers for the real-FUSE integration tests.
//!
//! Every test builds its own [`MountBuilder`] (own tempdir, own mountpoint),
//! so tests can run in parallel. A [`Mounted`] unmounts everything below its
//! tempdir on drop and a watchdog kills a hung daemon so that a broken daemon
//! makes tests fail instead of hanging CI. Tests `use crate::common::*`:
//! this file re-exports every module below.
//!
//! - `mount`: the fixture ([`MountBuilder`], [`Mounted`]), [`assert_refusal`]
//! - `fixtures`: trees and mounts several test files share
//!   ([`hello_tree`], [`rw_root_with_home`], ...)
//! - `users`: acting as an unprivileged user (processes and threads)
//! - `audit`: reading and waiting for audit events
//! - `fs`: file and syscall helpers, errno assertions
//! - `snapshot`: snapshots of a real tree
//! - `proc`: mountinfo, daemon pids, commands with a hang guard
#![allow(dead_code)]

mod audit;
mod fixtures;
mod fs;
mod mount;
mod proc;
mod snapshot;
mod users;

pub use audit::*;
pub use fixtures::*;
pub use fs::*;
pub use mount::*;
pub use proc::*;
pub use snapshot::*;
pub use users::*;

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_relocfs");

/// How long to wait for the audit writer (it flushes asynchronously).
pub const AUDIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound for anything that "should happen promptly" (unmount, exit).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Unprivileged uids/gids used by the permission tests.
pub const KEY_UID: u32 = 4242;
pub const KEY_GID: u32 = 4242;
pub const NOBODY: u32 = 65534;

// ---------------------------------------------------------------------------
// Skipping
// ---------------------------------------------------------------------------

/// `skip_without_fuse!();` opens every real-FUSE test: it returns from the
/// test (a visible skip) when [`require_fuse`] says FUSE tests cannot run
/// here, and fails the test on CI.
macro_rules! skip_without_fuse {
    () => {
        if !$crate::common::require_fuse() {
            return;
        }
    };
}
pub(crate) use skip_without_fuse;

/// Returns `true` when real FUSE tests can run. Otherwise prints a skip
/// message and returns `false` -- except on CI (`CI=true`), where it panics:
/// CI must fail, not silently skip.
pub fn require_fuse() -> bool {
    let mut missing = Vec::new();
    if !Path::new("/dev/fuse").exists() {
        missing.push("/dev/fuse is missing");
    }
    if unsafe { libc::geteuid() } != 0 {
        missing.push("not running as root");
    }
    if missing.is_empty() {
        return true;
    }
    let why = missing.join(", ");
    if on_ci() {
        panic!("real-FUSE integration tests cannot run on CI: {why}");
    }
    print_skip(&format!("real-FUSE integration test skipped: {why}"));
    false
}

/// `SKIP: TEST: WHY` straight to fd 2: the test harness captures eprintln! of
/// passing tests, and a skip must be visible.
fn print_skip(why: &str) {
    let _ = writeln!(
        io::stderr(),
        "SKIP: {}: {why}",
        std::thread::current().name().unwrap_or("?")
    );
}

/// `CI=true`: missing prerequisites fail instead of skipping.
pub fn on_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// A missing prerequisite other than FUSE itself: panics on CI, otherwise
/// prints a visible skip message. Always returns `false` (for `return`).
pub fn skip_or_fail(why: &str) -> bool {
    if on_ci() {
        panic!("prerequisite missing on CI: {why}");
    }
    print_skip(why);
    false
}

/// Finds an executable by name on `PATH`, then in `$CARGO_HOME/bin` and
/// `~/.cargo/bin` (where `cargo install` puts it).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(ch) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(ch).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The distribution's python3 (`/usr/bin/python3`, usable by every uid,
/// unlike a pyenv shim below /root) if it can `import sqlite3`.
pub fn system_python() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/python3");
    let ok = Command::new(&p)
        .args(["-c", "import sqlite3, json, os"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(p)
}
