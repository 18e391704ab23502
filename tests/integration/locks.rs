//! File locks through an rw rule. relocfs implements neither getlk/setlk nor
//! flock, so the kernel keeps POSIX record locks and flock(2) locks itself, on
//! the mount's inodes: they work between processes using the mount -- and
//! only between them (a process at the real path does not see them).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

/// A second process: runs lock operations (non-blocking) on `path` in order
/// and prints their results as JSON: "ok", an errno name, or for getlk the
/// conflicting lock.
const PROBE: &str = r#"
import fcntl, os, sys, json, struct, errno
path, ops = sys.argv[1], json.loads(sys.argv[2])
fd = os.open(path, os.O_RDWR)
T = {"r": fcntl.F_RDLCK, "w": fcntl.F_WRLCK, "u": fcntl.F_UNLCK}
N = {v: k for k, v in T.items()}
FMT = "hh4xqqi4x"   # struct flock on x86_64/aarch64 Linux
out = []
for op in ops:
    try:
        if op[0] == "setlk":
            fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack(FMT, T[op[1]], 0, op[2], op[3], 0))
            out.append("ok")
        elif op[0] == "getlk":
            r = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack(FMT, T[op[1]], 0, op[2], op[3], 0))
            t, _, s, l, pid = struct.unpack(FMT, r)
            out.append({"type": N[t], "start": s, "len": l, "pid": pid} if t != fcntl.F_UNLCK else "none")
        elif op[0] == "flock":
            fcntl.flock(fd, {"sh": fcntl.LOCK_SH, "ex": fcntl.LOCK_EX, "un": fcntl.LOCK_UN}[op[1]] | fcntl.LOCK_NB)
            out.append("ok")
    except OSError as e:
        out.append(errno.errorcode[e.errno])
print(json.dumps(out))
"#;

fn probe(py: &Path, path: &Path, ops: Value) -> Value {
    let out = run_with_timeout(
        std::process::Command::new(py)
            .arg("-c")
            .arg(PROBE)
            .arg(path)
            .arg(ops.to_string()),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "lock probe: {}", stderr_str(&out));
    serde_json::from_str(stdout_str(&out).trim()).unwrap()
}

fn setlk(f: &File, typ: i32, start: i64, len: i64) -> std::io::Result<()> {
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = len;
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &fl) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn flock(f: &File, op: i32) -> std::io::Result<()> {
    if unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn setup() -> Option<(Mounted, std::path::PathBuf, std::path::PathBuf)> {
    if !require_fuse() {
        return None;
    }
    let Some(py) = system_python() else {
        skip_or_fail("/usr/bin/python3 is needed for the second process");
        return None;
    };
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("lockfile"), &[b'.'; 100], 0o666);
    let m = b.map_mode("/", &real, "rw").no_audit().mount();
    Some((m, real, py))
}

#[test]
fn posix_record_locks_between_two_processes_through_the_mount() {
    let Some((m, _real, py)) = setup() else {
        return;
    };
    let path = m.at("lockfile");
    // Keep this the only fd of the file in this process: closing any fd of a
    // file drops the process's POSIX locks on it.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    setlk(&f, libc::F_WRLCK, 0, 10).expect("write lock on bytes 0..10");
    let me = std::process::id();
    assert_eq!(
        probe(
            &py,
            &path,
            json!([
                ["setlk", "w", 0, 10],
                ["setlk", "r", 5, 1],
                ["setlk", "w", 20, 10],
                ["getlk", "w", 0, 100],
                ["getlk", "r", 10, 5]
            ])
        ),
        json!([
            "EAGAIN",
            "EAGAIN",
            "ok",
            {"type": "w", "start": 0, "len": 10, "pid": me},
            "none"
        ]),
        "while this process holds a write lock on 0..10"
    );
    // Downgrade to a read lock: readers share it, writers still conflict.
    setlk(&f, libc::F_RDLCK, 0, 10).unwrap();
    assert_eq!(
        probe(
            &py,
            &path,
            json!([["setlk", "r", 0, 10], ["setlk", "w", 9, 1]])
        ),
        json!(["ok", "EAGAIN"]),
        "while this process holds a read lock"
    );
    setlk(&f, libc::F_UNLCK, 0, 0).unwrap();
    assert_eq!(
        probe(
            &py,
            &path,
            json!([["setlk", "w", 0, 0], ["getlk", "w", 0, 0]])
        ),
        json!(["ok", "none"]),
        "after unlock"
    );
    drop(f);
}

#[test]
fn flock_between_two_processes_through_the_mount() {
    let Some((m, _real, py)) = setup() else {
        return;
    };
    let path = m.at("lockfile");
    let f = File::open(&path).unwrap();
    flock(&f, libc::LOCK_EX).expect("LOCK_EX");
    assert_eq!(
        probe(&py, &path, json!([["flock", "ex"], ["flock", "sh"]])),
        json!(["EAGAIN", "EAGAIN"]),
        "while this process holds LOCK_EX"
    );
    flock(&f, libc::LOCK_SH).expect("downgrade to LOCK_SH");
    assert_eq!(
        probe(&py, &path, json!([["flock", "sh"], ["flock", "ex"]])),
        // The probe's own LOCK_SH is converted in place to LOCK_EX: refused.
        json!(["ok", "EAGAIN"]),
        "while this process holds LOCK_SH"
    );
    flock(&f, libc::LOCK_UN).unwrap();
    assert_eq!(probe(&py, &path, json!([["flock", "ex"]])), json!(["ok"]));
    // A second open file description in this process conflicts as well.
    let g = File::open(&path).unwrap();
    flock(&f, libc::LOCK_EX).unwrap();
    assert_errno(
        "LOCK_EX on a second open of the file",
        flock(&g, libc::LOCK_EX),
        libc::EAGAIN,
    );
}

/// The limit of kernel-local locking: a lock taken through the mount is not
/// seen by a process that opens the real path, nor the other way round.
#[test]
fn locks_through_the_mount_are_not_seen_at_the_real_path() {
    let Some((m, real, py)) = setup() else { return };
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.at("lockfile"))
        .unwrap();
    setlk(&f, libc::F_WRLCK, 0, 0).unwrap();
    flock(&f, libc::LOCK_EX).unwrap();
    assert_eq!(
        probe(
            &py,
            &real.join("lockfile"),
            json!([["setlk", "w", 0, 0], ["flock", "ex"]])
        ),
        json!(["ok", "ok"]),
        "at the real path, the mount's locks are invisible"
    );
    assert_eq!(
        probe(
            &py,
            &m.at("lockfile"),
            json!([["setlk", "w", 0, 0], ["flock", "ex"]])
        ),
        json!(["EAGAIN", "EAGAIN"]),
        "through the mount they hold"
    );
}
