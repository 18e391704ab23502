//! Shared fixture and helpers for the real-FUSE integration tests.
//!
//! Every test builds its own [`MountBuilder`] (own tempdir, own mountpoint),
//! so tests can run in parallel. A [`Mounted`] unmounts everything below its
//! tempdir on drop and a watchdog kills a hung daemon so that a broken daemon
//! makes tests fail instead of hanging CI.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_relocfs");

/// How long to wait for the audit writer (it flushes asynchronously).
pub const AUDIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound for anything that "should happen promptly" (unmount, exit).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A test fixture older than this is considered hung: its daemon is killed.
const WATCHDOG: Duration = Duration::from_secs(90);

/// Unprivileged uids/gids used by the permission tests.
pub const KEY_UID: u32 = 4242;
pub const KEY_GID: u32 = 4242;
pub const NOBODY: u32 = 65534;

// ---------------------------------------------------------------------------
// Skipping
// ---------------------------------------------------------------------------

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
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("real-FUSE integration tests cannot run on CI: {why}");
    }
    // Straight to fd 2: the test harness captures eprintln! of passing tests,
    // and a skip must be visible.
    let _ = writeln!(
        io::stderr(),
        "SKIP: {}: real-FUSE integration test skipped: {why}",
        std::thread::current().name().unwrap_or("?")
    );
    false
}

// ---------------------------------------------------------------------------
// Small filesystem helpers
// ---------------------------------------------------------------------------

pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn cvt(rc: libc::c_int) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", p.display()));
}

pub fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {uid}:{gid} {}: {e}", p.display()));
}

/// `mkdir -p` with every created directory set to 0755 (umask independent).
pub fn mkdir_p(p: &Path) {
    let mut missing = Vec::new();
    let mut cur = p.to_path_buf();
    while !cur.exists() {
        missing.push(cur.clone());
        if !cur.pop() {
            break;
        }
    }
    for d in missing.into_iter().rev() {
        fs::create_dir(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        chmod(&d, 0o755);
    }
}

/// Writes a file (creating parent dirs) and sets its mode.
pub fn write_file(p: &Path, content: &[u8], mode: u32) {
    if let Some(parent) = p.parent() {
        mkdir_p(parent);
    }
    fs::write(p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    chmod(p, mode);
}

/// Sets atime and mtime with nanosecond precision (without following symlinks).
pub fn set_times(p: &Path, sec: i64, nsec: i64) {
    let ts = [
        libc::timespec {
            tv_sec: sec as libc::time_t,
            tv_nsec: nsec as _,
        },
        libc::timespec {
            tv_sec: sec as libc::time_t,
            tv_nsec: nsec as _,
        },
    ];
    let c = cpath(p);
    cvt(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
}

pub fn mkfifo(p: &Path, mode: u32) -> io::Result<()> {
    let c = cpath(p);
    cvt(unsafe { libc::mkfifo(c.as_ptr(), mode as libc::mode_t) })
}

pub fn truncate(p: &Path, len: i64) -> io::Result<()> {
    let c = cpath(p);
    cvt(unsafe { libc::truncate(c.as_ptr(), len as libc::off_t) })
}

pub fn utimes_now(p: &Path) -> io::Result<()> {
    let c = cpath(p);
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) })
}

pub fn access(p: &Path, mode: libc::c_int) -> io::Result<()> {
    let c = cpath(p);
    cvt(unsafe { libc::access(c.as_ptr(), mode) })
}

pub fn setxattr(p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    cvt(unsafe {
        libc::setxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr() as *const libc::c_void,
            value.len(),
            0,
        )
    })
}

pub fn removexattr(p: &Path, name: &str) -> io::Result<()> {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    cvt(unsafe { libc::removexattr(c.as_ptr(), n.as_ptr()) })
}

/// getxattr(2), following symlinks.
pub fn getxattr(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    let size = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; size as usize + 1];
    let got = unsafe {
        libc::getxattr(
            c.as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(got as usize);
    Ok(buf)
}

/// listxattr(2), following symlinks; names sorted.
pub fn listxattr(p: &Path) -> io::Result<Vec<String>> {
    list_xattr_impl(p, true)
}

fn list_xattr_impl(p: &Path, follow: bool) -> io::Result<Vec<String>> {
    let c = cpath(p);
    let call = |buf: *mut libc::c_char, len: usize| unsafe {
        if follow {
            libc::listxattr(c.as_ptr(), buf, len)
        } else {
            libc::llistxattr(c.as_ptr(), buf, len)
        }
    };
    let size = call(std::ptr::null_mut(), 0);
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; size as usize + 1];
    let got = call(buf.as_mut_ptr() as *mut libc::c_char, buf.len());
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(got as usize);
    let mut names: Vec<String> = buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    Ok(names)
}

fn lgetxattr(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    let size = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; size as usize + 1];
    let got = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(got as usize);
    Ok(buf)
}

pub fn statvfs(p: &Path) -> io::Result<libc::statvfs> {
    let c = cpath(p);
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
    Ok(st)
}

/// The errno of a failed result, or a panic naming `what` if it succeeded.
pub fn errno_of<T: std::fmt::Debug>(what: &str, r: io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("{what}: expected failure, but it succeeded ({v:?})"),
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// Checks that `r` failed with `want`; returns a description when it did not.
pub fn check_errno<T: std::fmt::Debug>(what: &str, r: io::Result<T>, want: i32) -> Option<String> {
    match r {
        Ok(v) => Some(format!(
            "{what}: expected {}, but it succeeded ({v:?})",
            errno_name(want)
        )),
        Err(e) if e.raw_os_error() == Some(want) => None,
        Err(e) => Some(format!("{what}: expected {}, got {e}", errno_name(want))),
    }
}

#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(what: &str, r: io::Result<T>, want: i32) {
    if let Some(msg) = check_errno(what, r, want) {
        panic!("{msg}");
    }
}

pub fn errno_name(e: i32) -> &'static str {
    match e {
        libc::ENOENT => "ENOENT",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::EROFS => "EROFS",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EEXIST => "EEXIST",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ENOTCONN => "ENOTCONN",
        libc::EXDEV => "EXDEV",
        libc::ENOSYS => "ENOSYS",
        libc::EINVAL => "EINVAL",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => "errno",
    }
}

/// Deterministic content hash (FNV-1a, 64 bit).
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Deterministic pseudo-random bytes (so content mismatches are detectable).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Snapshots of a real tree
// ---------------------------------------------------------------------------

/// Everything about one entry of the real tree that a write could change
/// (atime deliberately excluded: reads may update it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapEntry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u64,
    pub ino: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub content_hash: Option<u64>,
    pub link_target: Option<PathBuf>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Recursive snapshot of `dir` (not following symlinks), keyed by the
/// path relative to `dir` ("" is `dir` itself).
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, SnapEntry> {
    let mut out = BTreeMap::new();
    snap_rec(dir, Path::new(""), &mut out);
    out
}

fn snap_rec(base: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, SnapEntry>) {
    let full = if rel.as_os_str().is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    };
    let md =
        fs::symlink_metadata(&full).unwrap_or_else(|e| panic!("lstat {}: {e}", full.display()));
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_file() {
        "file"
    } else {
        "special"
    };
    let content_hash = if ft.is_file() {
        Some(fnv1a(&fs::read(&full).unwrap()))
    } else {
        None
    };
    let link_target = if ft.is_symlink() {
        Some(fs::read_link(&full).unwrap())
    } else {
        None
    };
    let mut xattrs = BTreeMap::new();
    if !ft.is_symlink() {
        if let Ok(names) = list_xattr_impl(&full, false) {
            for n in names {
                if let Ok(v) = lgetxattr(&full, &n) {
                    xattrs.insert(n, v);
                }
            }
        }
    }
    out.insert(
        rel.to_path_buf(),
        SnapEntry {
            kind,
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            size: md.size(),
            nlink: md.nlink(),
            ino: md.ino(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            content_hash,
            link_target,
            xattrs,
        },
    );
    if ft.is_dir() {
        let mut names: Vec<OsString> = fs::read_dir(&full)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            snap_rec(base, &rel.join(n), out);
        }
    }
}

/// Panics with a readable diff when two snapshots differ.
#[track_caller]
pub fn assert_same_snapshot(
    before: &BTreeMap<PathBuf, SnapEntry>,
    after: &BTreeMap<PathBuf, SnapEntry>,
) {
    let mut diffs = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => diffs.push(format!("removed: {}", k.display())),
            Some(a) if a != v => diffs.push(format!(
                "changed: {}\n  before {v:?}\n  after  {a:?}",
                k.display()
            )),
            _ => {}
        }
    }
    for k in after.keys() {
        if !before.contains_key(k) {
            diffs.push(format!("added: {}", k.display()));
        }
    }
    assert!(
        diffs.is_empty(),
        "real tree was modified:\n{}",
        diffs.join("\n")
    );
}

// ---------------------------------------------------------------------------
// /proc/self/mountinfo
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    /// Per-mount options (field 6), e.g. `rw,nosuid,nodev,relatime`.
    pub options: Vec<String>,
    pub fstype: String,
    pub source: String,
    /// Superblock options, e.g. `rw,user_id=0,group_id=0,default_permissions`.
    pub super_options: Vec<String>,
    /// `major:minor` of the mount.
    pub dev: String,
}

/// Decodes the octal escapes (`\040`, `\011`, `\012`, `\134`) of mountinfo.
pub fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

pub fn mount_entries() -> Vec<MountEntry> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    if fields.len() < 10 {
        return None;
    }
    let sep = fields.iter().position(|f| *f == "-")?;
    if sep < 6 || fields.len() < sep + 4 {
        return None;
    }
    Some(MountEntry {
        mount_point: PathBuf::from(OsString::from_vec(unescape_mountinfo(fields[4]))),
        options: fields[5].split(',').map(str::to_string).collect(),
        fstype: fields[sep + 1].to_string(),
        source: String::from_utf8_lossy(&unescape_mountinfo(fields[sep + 2])).into_owned(),
        super_options: fields[sep + 3].split(',').map(str::to_string).collect(),
        dev: fields[2].to_string(),
    })
}

/// The (topmost) mount entry whose mount point is exactly `path`.
pub fn mount_entry(path: &Path) -> Option<MountEntry> {
    mount_entries()
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path)
}

/// Is something mounted exactly at `path`?
pub fn mounted(path: &Path) -> bool {
    mount_entry(path).is_some()
}

/// Mount points strictly below `dir`, deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mount_entries()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p != dir && p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    v.dedup();
    v
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// Is `pid` a live process: does any of its threads still run? (A killed
/// multi-threaded process can show a zombie leader while other threads are
/// still exiting; a reaped-never zombie counts as gone.)
pub fn pid_alive(pid: i32) -> bool {
    let task_state = |path: &Path| -> Option<char> {
        let s = fs::read_to_string(path).ok()?;
        // "pid (comm) S ..." -- comm may contain spaces/parens.
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
    };
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        !matches!(
            task_state(&t.path().join("stat")),
            Some('Z') | Some('X') | None
        )
    })
}

/// Pids of live processes (not this one, not mount helpers) whose command line
/// has an argument equal to `arg` -- like `pgrep -f`, but exact.
pub fn pids_with_arg(arg: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let want = arg.as_os_str().as_bytes();
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if !cmdline.split(|b| *b == 0).any(|a| a == want) {
            continue;
        }
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let comm = comm.trim();
        if matches!(
            comm,
            "umount" | "mount" | "fusermount" | "fusermount3" | "mount.fuse3"
        ) {
            continue;
        }
        if pid_alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// Polls `cond` every 10 ms until it is true or `timeout` elapses.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a command with a hard timeout. stdout/stderr go to anonymous files,
/// not pipes, so a daemon that inherits them cannot make this block.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut out_f = tempfile::tempfile().unwrap();
    let mut err_f = tempfile::tempfile().unwrap();
    cmd.stdin(Stdio::null())
        .stdout(out_f.try_clone().unwrap())
        .stderr(err_f.try_clone().unwrap())
        .env("LC_ALL", "C");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let status: ExitStatus = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    out_f.seek(SeekFrom::Start(0)).unwrap();
    out_f.read_to_end(&mut stdout).unwrap();
    err_f.seek(SeekFrom::Start(0)).unwrap();
    err_f.read_to_end(&mut stderr).unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Runs the relocfs binary with `args` (30 s timeout).
pub fn relocfs<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    run_with_timeout(&mut cmd, Duration::from_secs(30))
}

/// Runs `cmd` as `uid:gid` (no supplementary groups), cwd `/`, stdin null.
pub fn run_as(uid: u32, gid: u32, cmd: &mut Command) -> Output {
    cmd.uid(uid).gid(gid).current_dir("/");
    run_with_timeout(cmd, Duration::from_secs(30))
}

/// Spawns `cmd` as `uid:gid` and returns (pid, output) -- the pid is needed
/// to find the child's own audit events.
pub fn run_as_pid(uid: u32, gid: u32, cmd: &mut Command) -> (u32, Output) {
    cmd.uid(uid)
        .gid(gid)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C");
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    (pid, out)
}

/// `sh -c SCRIPT` (arguments available as $1, $2, ...).
pub fn sh(script: &str, args: &[&Path]) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script).arg("sh");
    for a in args {
        c.arg(a);
    }
    c
}

pub fn stdout_str(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr_str(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// ---------------------------------------------------------------------------
// Audit log
// ---------------------------------------------------------------------------

/// All complete lines of the audit log, each parsed as a JSON object.
/// A line that is not a JSON object is a daemon bug: panics.
pub fn read_audit(path: &Path) -> Vec<Value> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(_) => return Vec::new(),
    };
    let text = String::from_utf8_lossy(&data);
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}"));
            assert!(v.is_object(), "audit line is not a JSON object: {l}");
            v
        })
        .collect()
}

/// Polls the audit log until a line satisfying `pred` appears.
#[track_caller]
pub fn wait_for_audit(path: &Path, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
    wait_for_audit_n(path, pred, 1, timeout).remove(0)
}

/// Polls the audit log until at least `n` lines satisfy `pred`; returns them all.
#[track_caller]
pub fn wait_for_audit_n(
    path: &Path,
    pred: impl Fn(&Value) -> bool,
    n: usize,
    timeout: Duration,
) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let found: Vec<Value> = read_audit(path).into_iter().filter(|v| pred(v)).collect();
        if found.len() >= n {
            return found;
        }
        if Instant::now() >= deadline {
            let all = fs::read_to_string(path).unwrap_or_else(|e| format!("<unreadable: {e}>"));
            let tail: Vec<&str> = all.lines().rev().take(40).collect();
            panic!(
                "audit log {}: wanted {n} matching line(s) within {timeout:?}, found {}.\nlast lines (newest first):\n{}",
                path.display(),
                found.len(),
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Field accessors that tolerate absence.
pub fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

pub fn n(v: &Value, k: &str) -> Option<u64> {
    v.get(k).and_then(Value::as_u64)
}

/// Predicate: `op`, `path` and (if given) requesting `pid` match.
pub fn ev<'a>(op: &'a str, path: &'a Path, pid: Option<u32>) -> impl Fn(&Value) -> bool + 'a {
    move |v: &Value| {
        s(v, "op") == Some(op)
            && s(v, "path") == path.to_str()
            && pid.is_none_or(|p| n(v, "pid") == Some(u64::from(p)))
    }
}

/// Parses an RFC 3339 UTC timestamp `YYYY-MM-DDTHH:MM:SS[.frac]Z` to Unix seconds.
pub fn parse_rfc3339_utc(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    if b.len() < 20 || *b.last()? != b'Z' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = ts.get(r)?;
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (h, mi, se) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let rest = &ts[19..ts.len() - 1];
    if !rest.is_empty() {
        let frac = rest.strip_prefix('.')?;
        if frac.is_empty() || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // days from civil (Howard Hinnant)
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Checks the fields every audit event must have; returns the problems found.
pub fn audit_common_problems(v: &Value) -> Vec<String> {
    let mut p = Vec::new();
    if !v.get("v").is_some_and(|x| x.is_u64()) {
        p.push("`v` missing or not an integer".to_string());
    }
    match s(v, "ts") {
        None => p.push("`ts` missing".into()),
        Some(ts) => match parse_rfc3339_utc(ts) {
            None => p.push(format!("`ts` {ts:?} is not RFC 3339 UTC ending in Z")),
            Some(t) if (t - now_unix()).abs() > 600 => {
                p.push(format!("`ts` {ts:?} is far from now"))
            }
            _ => {}
        },
    }
    for k in ["op", "path", "comm", "result"] {
        if s(v, k).is_none() {
            p.push(format!("`{k}` missing or not a string"));
        }
    }
    for k in ["pid", "uid", "gid"] {
        if n(v, k).is_none() {
            p.push(format!("`{k}` missing or not an integer"));
        }
    }
    p
}

// ---------------------------------------------------------------------------
// The fixture
// ---------------------------------------------------------------------------

/// One rule of the prefix table.
#[derive(Debug, Clone)]
pub struct Rule {
    pub from: String,
    pub to: Option<PathBuf>,
    pub deny: bool,
    pub mode: Option<String>,
}

fn toml_string(s: &str) -> String {
    // A JSON string literal is a valid TOML basic string.
    serde_json::to_string(s).unwrap()
}

/// Builds a config + mountpoint in a fresh 0755 tempdir and mounts it.
///
/// Layout of the tempdir (`root`): `real/` (a convenient target), `mnt/`
/// (the default mountpoint), `relocfs.toml`, `audit.jsonl`.
pub struct MountBuilder {
    dir: tempfile::TempDir,
    rules: Vec<Rule>,
    raw: Option<String>,
    extra: String,
    opts: Vec<String>,
    opts_after: bool,
    audit: bool,
    mountpoint: PathBuf,
}

impl Default for MountBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl MountBuilder {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("relocfs-test-")
            .tempdir()
            .expect("tempdir");
        chmod(dir.path(), 0o755);
        let root = dir.path().to_path_buf();
        mkdir_p(&root.join("real"));
        mkdir_p(&root.join("mnt"));
        MountBuilder {
            dir,
            rules: Vec::new(),
            raw: None,
            extra: String::new(),
            opts: Vec::new(),
            opts_after: false,
            audit: true,
            mountpoint: root.join("mnt"),
        }
    }

    /// The tempdir (0755).
    pub fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// `root/real`, an empty 0755 directory to use as a target.
    pub fn real(&self) -> PathBuf {
        self.dir.path().join("real")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("relocfs.toml")
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    pub fn mnt(&self) -> PathBuf {
        self.mountpoint.clone()
    }

    /// `[[map]] from = FROM, to = TO`.
    pub fn map(mut self, from: &str, to: impl AsRef<Path>) -> Self {
        self.rules.push(Rule {
            from: from.into(),
            to: Some(to.as_ref().to_path_buf()),
            deny: false,
            mode: None,
        });
        self
    }

    /// `[[map]] from = FROM, to = TO, mode = MODE`.
    pub fn map_mode(mut self, from: &str, to: impl AsRef<Path>, mode: &str) -> Self {
        self.rules.push(Rule {
            from: from.into(),
            to: Some(to.as_ref().to_path_buf()),
            deny: false,
            mode: Some(mode.into()),
        });
        self
    }

    /// `[[map]] from = FROM, deny = true`.
    pub fn deny(mut self, from: &str) -> Self {
        self.rules.push(Rule {
            from: from.into(),
            to: None,
            deny: true,
            mode: None,
        });
        self
    }

    /// Use this TOML text verbatim as the whole config (no rules, no audit).
    pub fn raw_config(mut self, text: &str) -> Self {
        self.raw = Some(text.to_string());
        self
    }

    /// Extra TOML appended after the generated rules.
    pub fn extra(mut self, text: &str) -> Self {
        self.extra.push_str(text);
        self.extra.push('\n');
        self
    }

    /// Adds a `-o` mount option.
    pub fn opt(mut self, o: &str) -> Self {
        self.opts.push(o.to_string());
        self
    }

    /// Pass `-o ...` after the positional arguments instead of before.
    pub fn opts_after_positionals(mut self) -> Self {
        self.opts_after = true;
        self
    }

    pub fn no_audit(mut self) -> Self {
        self.audit = false;
        self
    }

    /// Mount somewhere else (the caller creates it, or not).
    pub fn mountpoint(mut self, p: impl AsRef<Path>) -> Self {
        self.mountpoint = p.as_ref().to_path_buf();
        self
    }

    pub fn config_text(&self) -> String {
        if let Some(raw) = &self.raw {
            return raw.clone();
        }
        let mut t = String::new();
        for r in &self.rules {
            t.push_str("[[map]]\n");
            t.push_str(&format!("from = {}\n", toml_string(&r.from)));
            if let Some(to) = &r.to {
                t.push_str(&format!("to = {}\n", toml_string(to.to_str().unwrap())));
            }
            if let Some(m) = &r.mode {
                t.push_str(&format!("mode = {}\n", toml_string(m)));
            }
            if r.deny {
                t.push_str("deny = true\n");
            }
            t.push('\n');
        }
        if self.audit {
            t.push_str(&format!(
                "[audit]\nlog = {}\n\n",
                toml_string(self.audit_path().to_str().unwrap())
            ));
        }
        t.push_str(&self.extra);
        t
    }

    /// Command-line arguments for a background mount.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let o: Option<[OsString; 2]> = if self.opts.is_empty() {
            None
        } else {
            Some(["-o".into(), self.opts.join(",").into()])
        };
        if !self.opts_after {
            if let Some(o) = &o {
                a.extend(o.iter().cloned());
            }
        }
        a.push(self.config_path().into());
        a.push(self.mountpoint.clone().into());
        if self.opts_after {
            if let Some(o) = o {
                a.extend(o);
            }
        }
        a
    }

    /// Writes the config and runs `relocfs` (background mode) without
    /// asserting anything. Whatever happens, the returned fixture unmounts
    /// everything below its tempdir on drop.
    pub fn try_mount(self) -> (Mounted, Output) {
        fs::write(self.config_path(), self.config_text()).expect("write config");
        let args = self.args();
        let out = relocfs(&args);
        (self.into_mounted(), out)
    }

    /// Like `try_mount`, but asserts success (exit 0, mount listed).
    #[track_caller]
    pub fn mount(self) -> Mounted {
        let config = self.config_text();
        let (m, out) = self.try_mount();
        assert!(
            out.status.success(),
            "relocfs failed to mount: {:?}\nstderr: {}\nstdout: {}\nconfig:\n{config}",
            out.status,
            stderr_str(&out),
            stdout_str(&out),
        );
        assert!(
            mounted(&m.mnt),
            "relocfs exited 0 but {} is not in /proc/self/mountinfo",
            m.mnt.display()
        );
        m
    }

    /// The fixture without mounting (e.g. for foreground-mode tests).
    pub fn into_mounted(self) -> Mounted {
        if !self.config_path().exists() {
            fs::write(self.config_path(), self.config_text()).expect("write config");
        }
        let (tx, rx) = mpsc::channel::<()>();
        let root = self.dir.path().to_path_buf();
        std::thread::spawn(move || watchdog(root, rx));
        Mounted {
            mnt: self.mountpoint.clone(),
            config: self.config_path(),
            audit: self.audit_path(),
            dir: Some(self.dir),
            _watchdog: tx,
        }
    }
}

/// Kills the daemon(s) of a fixture that outlives `WATCHDOG`, so hung FUSE
/// requests fail (ENOTCONN) instead of blocking the test run forever.
fn watchdog(root: PathBuf, rx: mpsc::Receiver<()>) {
    if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(WATCHDOG) {
        eprintln!(
            "WATCHDOG: fixture {} alive for {WATCHDOG:?}; killing its daemon(s)",
            root.display()
        );
        for mp in mounts_below(&root) {
            for pid in pids_with_arg(&mp) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if let Some(m) = mount_entry(&mp) {
                // Abort the FUSE connection as well (needs fusectl; best effort).
                if let Some((_, minor)) = m.dev.split_once(':') {
                    let _ = fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), "1");
                }
            }
            let _ = Command::new("umount").arg("-l").arg(&mp).status();
        }
    }
}

/// A mounted relocfs (or an attempt at one). Drop unmounts every mount
/// below the tempdir and waits until they are gone from mountinfo.
pub struct Mounted {
    pub mnt: PathBuf,
    pub config: PathBuf,
    pub audit: PathBuf,
    dir: Option<tempfile::TempDir>,
    _watchdog: mpsc::Sender<()>,
}

impl Mounted {
    pub fn root(&self) -> PathBuf {
        self.dir.as_ref().unwrap().path().to_path_buf()
    }

    pub fn real(&self) -> PathBuf {
        self.root().join("real")
    }

    /// The legacy path `mnt/inner` (`inner` relative, may be "").
    pub fn at(&self, inner: &str) -> PathBuf {
        if inner.is_empty() {
            self.mnt.clone()
        } else {
            self.mnt.join(inner.trim_start_matches('/'))
        }
    }

    /// Live daemon pids for this mountpoint (like `pgrep -f MOUNTPOINT`).
    pub fn daemon_pids(&self) -> Vec<i32> {
        pids_with_arg(&self.mnt)
    }

    /// The single daemon pid; panics if there is not exactly one.
    #[track_caller]
    pub fn daemon_pid(&self) -> i32 {
        let pids = self.daemon_pids();
        assert_eq!(
            pids.len(),
            1,
            "expected exactly one relocfs process with argument {}, found {pids:?}",
            self.mnt.display()
        );
        pids[0]
    }

    pub fn audit_lines(&self) -> Vec<Value> {
        read_audit(&self.audit)
    }

    /// Unmounts (umount, falling back to umount -l) and waits until gone.
    pub fn unmount_all(&self) {
        let Some(dir) = self.dir.as_ref() else { return };
        let root = dir.path();
        for mp in mounts_below(root) {
            let ok = Command::new("umount")
                .arg(&mp)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&mp)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            if !wait_until(SETTLE_TIMEOUT, || !mounted(&mp)) {
                eprintln!("WARNING: {} still mounted after umount", mp.display());
            }
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.unmount_all();
        let Some(dir) = self.dir.take() else { return };
        if !mounts_below(dir.path()).is_empty() {
            // Never recurse into a live mount while deleting the tempdir.
            eprintln!("WARNING: leaking {} (mounts remain)", dir.path().display());
            let _ = dir.keep();
        }
    }
}

/// Asserts the shape of a refusal: non-zero exit, stderr is exactly one line
/// starting with `relocfs: `, containing every needle (case-insensitive).
#[track_caller]
pub fn assert_refusal(out: &Output, needles: &[&str]) {
    let err = stderr_str(out);
    assert!(
        !out.status.success(),
        "expected a refusal containing {needles:?}, but it succeeded\nstderr: {err}\nstdout: {}",
        stdout_str(out)
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stderr must be exactly one line, got {}: {err:?}",
        lines.len()
    );
    assert!(
        lines[0].starts_with("relocfs: "),
        "stderr must start with `relocfs: `: {err:?}"
    );
    let lower = lines[0].to_lowercase();
    for n in needles {
        assert!(
            lower.contains(&n.to_lowercase()),
            "stderr should mention {n:?}: {err:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Read-write proof helpers: external programs, unprivileged threads, raw calls
// ---------------------------------------------------------------------------

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
    let _ = writeln!(
        io::stderr(),
        "SKIP: {}: {why}",
        std::thread::current().name().unwrap_or("?")
    );
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
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
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

/// The errno of the last failed libc call.
pub fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

/// `rc == -1` → `Err(errno)`, else `Ok(rc)`.
pub fn rc_result(rc: i64) -> Result<i64, i32> {
    if rc == -1 {
        Err(last_errno())
    } else {
        Ok(rc)
    }
}

/// Errno name for messages (`EFOO (text)`), any errno.
pub fn errno_text(e: i32) -> String {
    format!("{} ({})", errno_name(e), io::Error::from_raw_os_error(e))
}

/// Switches the CALLING THREAD ONLY to `uid`/`gid` with supplementary `groups`,
/// for good: raw syscalls, not glibc's wrappers (which would change every
/// thread of the test process). With all uids non-zero the thread loses every
/// capability, like a real unprivileged process. Use only in a thread that
/// ends afterwards (see [`spawn_as_user`]).
pub fn become_user_in_this_thread(uid: u32, gid: u32, groups: &[u32]) {
    let gs: Vec<libc::gid_t> = groups.to_vec();
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_setgroups, gs.len(), gs.as_ptr()),
            0,
            "setgroups: {}",
            io::Error::last_os_error()
        );
        assert_eq!(
            libc::syscall(libc::SYS_setresgid, gid, gid, gid),
            0,
            "setresgid: {}",
            io::Error::last_os_error()
        );
        assert_eq!(
            libc::syscall(libc::SYS_setresuid, uid, uid, uid),
            0,
            "setresuid: {}",
            io::Error::last_os_error()
        );
    }
}

/// Runs `f` on a new thread that is `uid`/`gid` with `groups` (and no
/// capabilities); the rest of the test process stays root.
pub fn spawn_as_user<T, F>(uid: u32, gid: u32, groups: &[u32], f: F) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let groups = groups.to_vec();
    std::thread::Builder::new()
        .name(format!("uid-{uid}"))
        .spawn(move || {
            become_user_in_this_thread(uid, gid, &groups);
            f()
        })
        .expect("spawn thread")
}

/// A long-lived unprivileged worker thread: jobs sent to it run as its user.
pub struct UserWorker {
    tx: Option<mpsc::Sender<Box<dyn FnOnce() + Send>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl UserWorker {
    pub fn new(uid: u32, gid: u32, groups: &[u32]) -> UserWorker {
        let (tx, rx) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let handle = spawn_as_user(uid, gid, groups, move || {
            for job in rx {
                job();
            }
        });
        UserWorker {
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    /// Runs `f` on the worker and returns its result (panics propagate as a
    /// panic here, naming the worker).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (rtx, rrx) = mpsc::channel();
        let job: Box<dyn FnOnce() + Send> = Box::new(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = rtx.send(r);
        });
        self.tx
            .as_ref()
            .unwrap()
            .send(job)
            .expect("worker thread gone");
        match rrx.recv().expect("worker thread gone") {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

impl Drop for UserWorker {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// `openat2(dirfd, path, flags | O_CLOEXEC, mode, resolve)`.
pub fn openat2(
    dirfd: libc::c_int,
    path: &Path,
    flags: libc::c_int,
    mode: u32,
    resolve: u64,
) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let c = cpath(path);
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = u64::from(mode);
    how.resolve = resolve;
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as libc::c_int) })
    }
}

/// renameat2(2) on two paths.
pub fn rename2(from: &Path, to: &Path, flags: u32) -> io::Result<()> {
    let (f, t) = (cpath(from), cpath(to));
    cvt(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        )
    })
}

/// mknod(2).
pub fn mknod(p: &Path, mode: u32, dev: libc::dev_t) -> io::Result<()> {
    let c = cpath(p);
    cvt(unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, dev) })
}

/// `utimensat(AT_FDCWD, p, [atime, mtime], flags)`; each time is a raw
/// timespec (use `libc::UTIME_NOW` / `libc::UTIME_OMIT` in `tv_nsec`).
pub fn utimensat(p: &Path, atime: (i64, i64), mtime: (i64, i64), flags: i32) -> io::Result<()> {
    let ts = [
        libc::timespec {
            tv_sec: atime.0 as libc::time_t,
            tv_nsec: atime.1 as _,
        },
        libc::timespec {
            tv_sec: mtime.0 as libc::time_t,
            tv_nsec: mtime.1 as _,
        },
    ];
    let c = cpath(p);
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), flags) })
}

/// setxattr(2) with flags (`XATTR_CREATE` / `XATTR_REPLACE`).
pub fn setxattr_flags(p: &Path, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    cvt(unsafe {
        libc::setxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr() as *const libc::c_void,
            value.len(),
            flags,
        )
    })
}

/// A file's mode bits (`& 0o7777`), uid and gid, without following symlinks.
pub fn mode_owner(p: &Path) -> (u32, u32, u32) {
    let md = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    (md.mode() & 0o7777, md.uid(), md.gid())
}

/// Names in a directory, sorted.
pub fn dir_names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", p.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Like [`run_as`], with supplementary `groups` (std's `uid()` would drop
/// them: the switch is done here, in the child, before exec).
pub fn run_as_groups(uid: u32, gid: u32, groups: &[u32], cmd: &mut Command) -> Output {
    let groups: Vec<libc::gid_t> = groups.to_vec();
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.current_dir("/");
    run_with_timeout(cmd, Duration::from_secs(30))
}
