//! What relocfs commands print: escaped for a terminal, and a reader that goes away early
//! (`relocfs check ... | head -1`) ends the output quietly instead of a panic.

use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// A pipe whose reader is already closed: every write to it fails with EPIPE.
fn closed_pipe() -> OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds were just created; each is owned once.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    write
}

/// Runs relocfs with stdout on a closed pipe; returns (exit status, stderr).
fn run_into_closed_pipe(args: &[&std::ffi::OsStr], env: &[(&str, &Path)]) -> (bool, String) {
    let mut err = tempfile::tempfile().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(closed_pipe()))
        .stderr(err.try_clone().unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let ok = wait_until(Duration::from_secs(60), || {
        child.try_wait().unwrap().is_some()
    });
    if !ok {
        let _ = child.kill();
        panic!("relocfs {args:?} did not finish");
    }
    let status = child.wait().unwrap();
    use std::io::{Read, Seek};
    let mut stderr = String::new();
    err.seek(std::io::SeekFrom::Start(0)).unwrap();
    err.read_to_string(&mut stderr).unwrap();
    (status.success(), stderr)
}

fn config_file(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("relocfs.toml");
    fs::write(&path, text).unwrap();
    path
}

/// Before: `println!` panicked ("failed printing to stdout: Broken pipe"), exit 101.
#[test]
fn check_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &format!(
            "[[map]]\nfrom = \"/\"\nto = {:?}\n",
            dir.path().to_str().unwrap()
        ),
    );
    let (ok, stderr) = run_into_closed_pipe(&["check".as_ref(), config.as_os_str()], &[]);
    assert!(ok, "relocfs check into a closed pipe failed: {stderr}");
    assert!(stderr.is_empty(), "relocfs check complained: {stderr}");
}

#[test]
fn generate_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    for what in ["man", "completions"] {
        let out = dir.path().join(what);
        let (ok, stderr) =
            run_into_closed_pipe(&["generate".as_ref(), what.as_ref(), out.as_os_str()], &[]);
        assert!(
            ok,
            "relocfs generate {what} into a closed pipe failed: {stderr}"
        );
        assert!(
            stderr.is_empty(),
            "relocfs generate {what} complained: {stderr}"
        );
        assert!(fs::read_dir(&out).unwrap().count() > 0, "nothing generated");
    }
}

/// The demo's reader going away stops only its printing: it still unmounts, removes its
/// directory and ends quietly.
#[test]
fn demo_into_a_closed_pipe_still_cleans_up() {
    skip_without_fuse!();
    // A temporary directory of its own, so that what the demo leaves is easy to see.
    // As root the demo needs its temporary directory open to nobody (search only).
    let tmp = tempdir_0755("relocfs-test-");
    let (ok, stderr) = run_into_closed_pipe(&["demo".as_ref()], &[("TMPDIR", tmp.path())]);
    let left: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for p in &left {
        for m in mounts_below(p) {
            let c = cpath(&m);
            // SAFETY: `c` is a NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
    assert!(ok, "the demo into a closed pipe failed: {stderr}");
    assert!(stderr.is_empty(), "the demo complained: {stderr}");
    assert!(left.is_empty(), "the demo left {left:?} behind");
}

/// A TOML string can hold escape sequences and newlines; `check` prints them escaped. Before,
/// `\u001b[2J` in a `from` reached the terminal raw and cleared it.
#[test]
fn check_escapes_control_characters_in_what_it_prints() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t\u{1b}[2J\u{9b}x");
    fs::create_dir(&target).unwrap();
    let config = config_file(
        dir.path(),
        &format!(
            "[[map]]\nfrom = \"/\"\nto = {}\n\n[[map]]\nfrom = \"/a\\u001b[2J\\nb\\u007f\\u0085\"\ndeny = true\n",
            serde_json::to_string(target.to_str().unwrap()).unwrap()
        ),
    );
    let out = relocfs([Path::new("check"), &config]);
    let stdout = stdout_str(&out);
    assert!(out.status.success(), "{}", stderr_str(&out));
    let raw: Vec<char> = stdout
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(raw.is_empty(), "check printed raw {raw:?}: {stdout:?}");
    assert_eq!(stdout.lines().count(), 3, "{stdout:?}");
    assert!(
        stdout.contains(r"/a\u{1b}[2J\nb\u{7f}\u{85} denied"),
        "{stdout:?}"
    );
    assert!(stdout.contains(r"t\u{1b}[2J\u{9b}x (ro)"), "{stdout:?}");

    // And the same in a refusal on stderr: one line, escaped.
    let bad = config_file(dir.path(), "[[map]]\n\"x\\u001b]0;owned\\u0007\\ny\" = 1\n");
    let out = relocfs([Path::new("check"), &bad]);
    let stderr = stderr_str(&out);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        !stderr.trim_end().chars().any(char::is_control),
        "{stderr:?}"
    );
}

/// `relocfs CONFIG MOUNTPOINT` returns once the mount serves and prints nothing when it
/// succeeds (the README's promise; fstab and systemd users see every stray line), whatever the
/// transport: the daemon's own diagnostics go to syslog once it is in the background.
#[test]
fn a_successful_background_mount_prints_nothing() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    fs::create_dir_all(real.join("app")).unwrap();
    let (m, out) = b.map("/app", real.join("app")).try_mount();
    assert!(out.status.success(), "{}", stderr_str(&out));
    assert!(m.mnt.join("app").exists());
    assert_eq!(stdout_str(&out), "", "the mount printed on stdout");
    assert_eq!(stderr_str(&out), "", "the mount printed on stderr");
}
