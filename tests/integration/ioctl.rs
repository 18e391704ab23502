//! ioctls through the mount: every Python open() asks TCGETS, and lsattr/chattr ask for the
//! inode flags. The daemon answers as the real file would (ENOTTY for terminal commands, the
//! real flags for lsattr), changes flags only through rw rules and as the caller, and its own
//! log stays quiet however often a client asks.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::common::*;

/// A relocfs in the foreground with its stderr (the operator's log) in a file, RUST_LOG at its
/// default; killed and unmounted on drop whatever happens.
struct Foreground {
    m: Mounted,
    child: Child,
    log: fs::File,
}

impl Foreground {
    fn start(b: MountBuilder) -> Foreground {
        let m = b.into_mounted();
        let log = tempfile::tempfile().unwrap();
        let child = Command::new(BIN)
            .arg("-f")
            .arg(&m.config)
            .arg(&m.mnt)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log.try_clone().unwrap())
            .spawn()
            .unwrap();
        let mut fg = Foreground { m, child, log };
        assert!(
            wait_until(SETTLE_TIMEOUT, || mounted(&fg.m.mnt)),
            "relocfs -f did not mount: {}",
            fg.log_text()
        );
        fg
    }

    fn log_text(&mut self) -> String {
        use std::io::Seek;
        let mut text = String::new();
        self.log.rewind().unwrap();
        self.log.read_to_string(&mut text).unwrap();
        text
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        self.m.unmount_all();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a Python script with `args`; returns its stdout, asserting success.
fn python(script: &str, args: &[&Path]) -> String {
    let Some(py) = system_python() else {
        panic!("/usr/bin/python3 is needed");
    };
    let mut cmd = Command::new(py);
    cmd.arg("-c").arg(script).args(args);
    let out = run_with_timeout(&mut cmd, std::time::Duration::from_secs(120));
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        stderr_str(&out),
        stdout_str(&out)
    );
    stdout_str(&out)
}

/// The errno (or 0) of each of TCGETS, FS_IOC32_GETFLAGS and FS_IOC32_SETFLAGS (sent by a
/// 64-bit process, these reach the filesystem as they are) on each path, opened read-only.
const IOCTLS: &str = r#"
import errno, fcntl, os, sys, termios
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    for cmd in (termios.TCGETS, 0x80046601, 0x40046602):
        try:
            fcntl.ioctl(fd, cmd, bytes(64))
            print(0)
        except OSError as e:
            print(errno.errorcode[e.errno])
    os.close(fd)
"#;

/// `lsattr -d` of a path: the flags column only.
fn lsattr(p: &Path) -> String {
    let out = Command::new("lsattr").arg("-d").arg(p).output().unwrap();
    assert!(
        out.status.success(),
        "lsattr {}: {}",
        p.display(),
        stderr_str(&out)
    );
    stdout_str(&out)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn chattr(p: &Path, change: &str) -> std::process::Output {
    Command::new("chattr").arg(change).arg(p).output().unwrap()
}

/// 1,000 Python opens (each asks TCGETS) and polls leave no per-request line in the daemon's
/// log; TCGETS (and the 32-bit flag commands) answer ENOTTY as natively, on a file and on a
/// directory.
#[test]
fn python_opens_leave_the_daemon_log_quiet() {
    skip_without_fuse!();
    if system_python().is_none() {
        skip_or_fail("/usr/bin/python3 is needed");
        return;
    }
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("f"), b"data\n", 0o644);
    mkdir_p(&real.join("d"));
    let mut fg = Foreground::start(b.map_mode("/", &real, "rw").opt("allow_other"));
    // The daemon logs "serving" just after the mount is live: only lines after it count.
    assert!(
        wait_until(SETTLE_TIMEOUT, || fg.log_text().contains("serving")),
        "no \"serving\" line: {}",
        fg.log_text()
    );
    let before = fg.log_text();

    let opened = python(
        r#"
import fcntl, os, select, sys
p = sys.argv[1]
for _ in range(1000):
    with open(p) as f:
        f.read()
with open(p) as f:
    po = select.poll()
    po.register(f, select.POLLIN)
    for _ in range(100):
        po.poll(0)
# Other requests a client can send at will, none of which may log per request: O_TMPFILE
# (no FUSE_TMPFILE in fuser), locks (kept by the kernel), lseek, fallocate, copy_file_range,
# xattrs that are not there.
d = sys.argv[2]
for i in range(50):
    try:
        os.close(os.open(d, os.O_TMPFILE | os.O_RDWR, 0o600))
    except OSError:
        pass
    fd = os.open(p, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    fcntl.flock(fd, fcntl.LOCK_UN)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    fcntl.lockf(fd, fcntl.LOCK_UN)
    os.lseek(fd, 0, os.SEEK_DATA)
    os.posix_fallocate(fd, 0, 8)
    out = os.open(os.path.join(d, "copy"), os.O_WRONLY | os.O_CREAT, 0o600)
    os.copy_file_range(fd, out, 4)
    os.close(out)
    try:
        os.getxattr(p, "user.none")
    except OSError:
        pass
    os.close(fd)
print("done")
"#,
        &[&fg.m.at("f"), &fg.m.at("d")],
    );
    assert_eq!(opened.trim(), "done");

    let native = python(IOCTLS, &[&real.join("f"), &real.join("d")]);
    let through = python(IOCTLS, &[&fg.m.at("f"), &fg.m.at("d")]);
    assert_eq!(native, "ENOTTY\n".repeat(6));
    assert_eq!(
        through, native,
        "the ioctls through the mount answer as natively"
    );

    let log = fg.log_text();
    let new: Vec<&str> = log.lines().skip(before.lines().count()).collect();
    assert!(
        new.is_empty(),
        "the daemon logged {} lines for client requests, e.g. {:?}",
        new.len(),
        &new[..new.len().min(5)]
    );
    assert!(!log.contains("Not Implemented"), "{log}");
}

/// lsattr through the mount shows the real flags; chattr through an rw rule changes them as
/// the caller (root may set immutable; a user may set their own file's noatime flag, not
/// immutable, and nothing on another user's file); through an ro rule nothing changes.
#[test]
fn lsattr_and_chattr_act_on_the_real_file() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    let ro = b.root().join("ro");
    mkdir_p(&ro);
    write_file(&ro.join("f"), b"ro\n", 0o644);
    write_file(&real.join("f"), b"rw\n", 0o644);
    write_owned(&real.join("mine"), b"mine\n", 0o644, KEY_UID, KEY_GID);
    mkdir_p(&real.join("d"));
    let m = b
        .map_mode("/", &real, "rw")
        .map_mode("/ro", &ro, "ro")
        .opt("allow_other")
        .mount();
    // Whatever happens, no immutable file is left behind (the tempdir could not be removed).
    struct Unimmutable(std::path::PathBuf);
    impl Drop for Unimmutable {
        fn drop(&mut self) {
            let _ = Command::new("chattr").arg("-i").arg(&self.0).output();
        }
    }
    let _guard = Unimmutable(real.join("f"));

    let initial = lsattr(&real.join("f"));
    for (native, through) in [
        (real.join("f"), m.at("f")),
        (real.join("d"), m.at("d")),
        (ro.join("f"), m.at("ro/f")),
    ] {
        assert_eq!(lsattr(&through), lsattr(&native), "{}", through.display());
    }

    // Root through the rw rule: noatime, then immutable, then both off again.
    assert!(chattr(&m.at("f"), "+A").status.success());
    assert!(
        lsattr(&real.join("f")).contains('A'),
        "{}",
        lsattr(&real.join("f"))
    );
    assert!(chattr(&m.at("f"), "+i").status.success());
    assert!(lsattr(&real.join("f")).contains('i'));
    assert_errno(
        "write an immutable file through the mount",
        fs::write(m.at("f"), b"x"),
        libc::EPERM,
    );
    assert!(chattr(&m.at("f"), "-i").status.success());
    assert!(chattr(&m.at("f"), "-A").status.success());
    assert_eq!(lsattr(&real.join("f")), initial);
    let e = wait_for_audit(&m.audit, ev("setflags", &m.at("f"), None), AUDIT_TIMEOUT);
    assert_eq!(s(&e, "result"), Some("ok"), "{e}");

    // Through the ro rule: refused, the real file unchanged.
    let before = lsattr(&ro.join("f"));
    assert!(!chattr(&m.at("ro/f"), "+A").status.success());
    assert_eq!(lsattr(&ro.join("f")), before);

    // As uid 4242: noatime on their own file works, immutable does not (no
    // CAP_LINUX_IMMUTABLE), and another user's file is not theirs to flag.
    let as_user = |p: &Path, change: &str| {
        run_as(KEY_UID, KEY_GID, Command::new("chattr").arg(change).arg(p))
    };
    assert!(as_user(&m.at("mine"), "+A").status.success());
    assert!(lsattr(&real.join("mine")).contains('A'));
    let out = as_user(&m.at("mine"), "+i");
    assert!(!out.status.success());
    assert!(
        stderr_str(&out).contains("Operation not permitted"),
        "{}",
        stderr_str(&out)
    );
    assert!(!lsattr(&real.join("mine")).contains('i'));
    let out = as_user(&m.at("f"), "+A");
    assert!(!out.status.success());
    assert!(!lsattr(&real.join("f")).contains('A'));
}

/// A virtual directory (a parent of a rule's `from`) has no real inode: lsattr shows no flags
/// and chattr is refused, like every change there.
#[test]
fn virtual_directories_have_no_flags_to_change() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    let m = b.map_mode("/v/w", &real, "rw").opt("allow_other").mount();
    let flags = lsattr(&m.at("v"));
    assert!(
        !flags.is_empty() && flags.chars().all(|c| c == '-'),
        "{flags}"
    );
    let out = chattr(&m.at("v"), "+A");
    assert!(!out.status.success());
    assert!(
        stderr_str(&out).contains("Read-only file system"),
        "{}",
        stderr_str(&out)
    );
}
