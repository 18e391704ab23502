//! File and syscall helpers: create trees with exact modes, raw calls the std
//! library lacks (xattrs, mknod, renameat2, openat2, utimensat), and errno
//! assertions.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

pub use relocfs::audit::errno_name;
pub use relocfs::control::fnv1a;

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

/// [`mkdir_p`], then the directory itself is given to `uid`:`gid` and
/// `mode` (in that order: the mode may carry set-id bits).
pub fn mkdir_owned(p: &Path, uid: u32, gid: u32, mode: u32) {
    mkdir_p(p);
    chown(p, uid, gid);
    chmod(p, mode);
}

/// A fresh temporary directory named `PREFIX...`, mode 0755 (so that other
/// users can reach what is below it).
pub fn tempdir_0755(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir");
    chmod(dir.path(), 0o755);
    dir
}

/// Writes a file (creating parent dirs) and sets its mode.
pub fn write_file(p: &Path, content: &[u8], mode: u32) {
    if let Some(parent) = p.parent() {
        mkdir_p(parent);
    }
    fs::write(p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    chmod(p, mode);
}

/// [`write_file`], then the file is given to `uid`:`gid`.
pub fn write_owned(p: &Path, content: &[u8], mode: u32, uid: u32, gid: u32) {
    write_file(p, content, mode);
    chown(p, uid, gid);
}

/// Sets atime and mtime with nanosecond precision (without following symlinks).
pub fn set_times(p: &Path, sec: i64, nsec: i64) {
    utimensat(p, (sec, nsec), (sec, nsec), libc::AT_SYMLINK_NOFOLLOW)
        .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
}

/// Creates a FIFO.
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
    setxattr_flags(p, name, value, 0)
}

pub fn removexattr(p: &Path, name: &str) -> io::Result<()> {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    cvt(unsafe { libc::removexattr(c.as_ptr(), n.as_ptr()) })
}

/// getxattr(2), following symlinks.
pub fn getxattr(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    get_xattr_impl(p, name, true)
}

/// lgetxattr(2): the xattr of a symlink itself.
pub fn lgetxattr(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    get_xattr_impl(p, name, false)
}

fn get_xattr_impl(p: &Path, name: &str, follow: bool) -> io::Result<Vec<u8>> {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    sized_read(|buf, len| unsafe {
        if follow {
            libc::getxattr(c.as_ptr(), n.as_ptr(), buf.cast(), len)
        } else {
            libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.cast(), len)
        }
    })
}

/// The xattr calls' protocol: `call(NULL, 0)` gives the size, then
/// `call(buf, len)` fills the buffer (one spare byte, so growth shows).
fn sized_read(call: impl Fn(*mut u8, usize) -> isize) -> io::Result<Vec<u8>> {
    let size = call(std::ptr::null_mut(), 0);
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; size as usize + 1];
    let got = call(buf.as_mut_ptr(), buf.len());
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

/// llistxattr(2): the xattrs of a symlink itself; names sorted.
pub fn llistxattr(p: &Path) -> io::Result<Vec<String>> {
    list_xattr_impl(p, false)
}

fn list_xattr_impl(p: &Path, follow: bool) -> io::Result<Vec<String>> {
    let c = cpath(p);
    let buf = sized_read(|buf, len| unsafe {
        if follow {
            libc::listxattr(c.as_ptr(), buf.cast(), len)
        } else {
            libc::llistxattr(c.as_ptr(), buf.cast(), len)
        }
    })?;
    let mut names: Vec<String> = buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    Ok(names)
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

/// `errno_problems! { WANT; "what" => call, ... }`: [`check_errno`] for each
/// call, in order, all expected to fail with `WANT`: one problem per call that
/// did not. (A macro, so that the calls may return different types.)
macro_rules! errno_problems {
    ($want:expr; $($what:expr => $call:expr),+ $(,)?) => {{
        let mut problems: Vec<String> = Vec::new();
        $(problems.extend($crate::common::check_errno($what, $call, $want));)+
        problems
    }};
}
pub(crate) use errno_problems;

#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(what: &str, r: io::Result<T>, want: i32) {
    if let Some(msg) = check_errno(what, r, want) {
        panic!("{msg}");
    }
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
