//! Every libc call of the daemon, as small safe wrappers that keep the OS errno intact.
//!
//! The rest of the crate never writes `unsafe` (the crate root denies it; only this module is
//! allowed it): each wrapper here states why its call is sound.
//! Node fds are `O_PATH | O_NOFOLLOW` handles; operations that have no `*at()` form reach the
//! object through `/proc/self/fd/N`, which names the object itself and follows nothing further.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Turns a libc return value into `io::Result`, capturing errno right away.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The `/proc/self/fd/N` name of an fd, for the calls that have no `*at()` form.
fn proc_fd_path(fd: BorrowedFd<'_>) -> CString {
    // A decimal number never contains a NUL byte.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

/// Opens a directory given by an absolute path as an `O_PATH` handle (rule roots, at start).
/// Symlinks in the operator's own configured path are followed: that is the operator's choice.
pub fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    let c = cstring(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated string; the returned fd is checked and then owned.
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just returned by open(2) and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens one name below a directory as an `O_PATH | O_NOFOLLOW` handle: never follows a symlink.
pub fn open_child(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    let c = cstring(name.as_bytes())?;
    // SAFETY: `dir` is a live fd for the duration of the call; `c` is NUL-terminated.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just returned by openat(2) and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `stat` of the object an fd refers to (the symlink itself for a symlink's `O_PATH` fd).
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the empty path with AT_EMPTY_PATH names `fd` itself; `st` is writable.
    check(unsafe {
        libc::fstatat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            &mut st,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// `access(2)` with the real uid: may this user read/write `path`?
pub fn access(path: &Path, mode: libc::c_int) -> io::Result<()> {
    let c = cstring(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is NUL-terminated.
    check(unsafe { libc::access(c.as_ptr(), mode) })?;
    Ok(())
}

/// An all-zero `stat`, to fill in by hand (virtual directories).
pub fn zeroed_stat() -> libc::stat {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    unsafe { std::mem::zeroed() }
}

/// `lstat` of a path, for preflight checks on operator-given paths.
pub fn lstat(path: &Path) -> io::Result<libc::stat> {
    let c = cstring(path.as_os_str().as_bytes())?;
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is writable.
    check(unsafe { libc::lstat(c.as_ptr(), &mut st) })?;
    Ok(st)
}

/// Opens the object behind an `O_PATH` fd for I/O with `flags`. Callers only pass regular files
/// and directories: reopening a device or fifo through the magic link would act on it.
pub fn reopen(fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<File> {
    // O_NOFOLLOW would refuse the magic link itself; O_CREAT cannot apply to an existing object.
    let flags = (flags & !(libc::O_NOFOLLOW | libc::O_CREAT | libc::O_EXCL)) | libc::O_CLOEXEC;
    // Through `/proc/self/fd` opened once, by a name on the stack (see `procfd`).
    procfd::reopen(fd, flags)
}

/// The target of a symlink given by its `O_PATH` fd, as stored.
pub fn readlink(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: the empty path names `fd` itself (Linux >= 2.6.39); `buf` has `buf.len()` bytes.
    let n = check_size(unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

/// Filesystem statistics of the filesystem holding `fd`.
pub fn fstatvfs(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs> {
    // SAFETY: an all-zero `statvfs` is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is live (O_PATH fds are accepted by fstatvfs) and `st` is writable.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// Reads an extended attribute; with `size == 0` returns only the value's length.
pub fn getxattr(fd: BorrowedFd<'_>, name: &OsStr, size: usize) -> io::Result<Vec<u8>> {
    let path = proc_fd_path(fd);
    let name = cstring(name.as_bytes())?;
    let mut buf = vec![0u8; size];
    // SAFETY: both strings are NUL-terminated; `buf` has exactly `size` writable bytes (a null
    // pointer with size 0 asks for the length only).
    let n = check_size(unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            if size == 0 {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr().cast()
            },
            size,
        )
    })?;
    buf.truncate(n.min(size));
    if size == 0 {
        buf = vec![0; n];
    }
    Ok(buf)
}

/// Lists extended attribute names; with `size == 0` returns a buffer of the needed length.
pub fn listxattr(fd: BorrowedFd<'_>, size: usize) -> io::Result<Vec<u8>> {
    let path = proc_fd_path(fd);
    let mut buf = vec![0u8; size];
    // SAFETY: `path` is NUL-terminated; `buf` has `size` writable bytes (null for size 0).
    let n = check_size(unsafe {
        libc::listxattr(
            path.as_ptr(),
            if size == 0 {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr().cast()
            },
            size,
        )
    })?;
    if size == 0 {
        return Ok(vec![0; n]);
    }
    buf.truncate(n);
    Ok(buf)
}

/// `lseek` on an open file (SEEK_DATA / SEEK_HOLE included).
pub fn lseek(file: &File, offset: i64, whence: libc::c_int) -> io::Result<i64> {
    // SAFETY: `file` owns a live fd for the duration of the call.
    let ret = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

use dirent::parse_dirents;

/// One directory entry as `getdents64` returns it.
pub struct DirEntry {
    pub name: OsString,
    pub ino: u64,
    /// `DT_*` type, or `DT_UNKNOWN` on filesystems that do not fill it in.
    pub kind: u8,
}

/// One `getdents64` call: the filled part of `buf` (empty at the end of the directory).
/// More bytes than asked for is EIO, never a panic.
fn getdents<'a>(dir: &File, buf: &'a mut [u8]) -> io::Result<&'a [u8]> {
    // SAFETY: `dir` owns a live directory fd; `buf` has `buf.len()` writable bytes.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            dir.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.get(..n as usize)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))
}

/// Reads all entries of an open directory from its start (`.` and `..` excluded).
pub fn read_dir_all(dir: &File) -> io::Result<Vec<DirEntry>> {
    lseek(dir, 0, libc::SEEK_SET)?;
    let mut entries = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let filled = getdents(dir, &mut buf)?;
        if filled.is_empty() {
            return Ok(entries);
        }
        // A broken record is an I/O error, never a panic or a listing silently cut short.
        parse_dirents(filled, &mut entries).map_err(|_| io::Error::from_raw_os_error(libc::EIO))?;
    }
}

pub mod creds;
mod dirent;
mod procfd;
pub use procfd::fs_magic;
pub mod fusedev;
pub mod uring;

/// Raises the limit on open files as far as allowed: every node the kernel caches holds an
/// fd. Root may go up to the system's `fs.nr_open`; others to their hard limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    // SAFETY: an all-zero rlimit is valid; getrlimit/setrlimit only read/write that struct.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `lim` is writable.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    let system_max = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<libc::rlim_t>().ok());
    if let Some(max) = system_max.filter(|&m| m > lim.rlim_max) {
        let raised = libc::rlimit {
            rlim_cur: max,
            rlim_max: max,
        };
        // SAFETY: `raised` is a valid rlimit; failing (not root) leaves the old one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(max);
        }
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid rlimit with cur <= max.
    check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    Ok(lim.rlim_cur)
}

/// The current soft limit on open files.
pub fn nofile_limit() -> usize {
    // SAFETY: an all-zero rlimit is valid; getrlimit only writes it.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `lim` is writable.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

pub fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Blocks the signals the daemon handles in the calling thread (and every thread it starts
/// afterwards), so that only the signal thread receives them through `sigwait`.
pub fn block_signals(signals: &[libc::c_int]) -> io::Result<libc::sigset_t> {
    // SAFETY: sigemptyset/sigaddset initialise and fill the local set; pthread_sigmask only
    // reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        let ret = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if ret != 0 {
            return Err(io::Error::from_raw_os_error(ret));
        }
        Ok(set)
    }
}

/// Waits for one of the blocked signals in `set`.
pub fn wait_signal(set: &libc::sigset_t) -> io::Result<libc::c_int> {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` was initialised by `block_signals`; `sig` is writable.
    let ret = unsafe { libc::sigwait(set, &mut sig) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    Ok(sig)
}

/// Ignores SIGPIPE: a closed audit reader or terminal must give EPIPE, not kill the daemon.
pub fn ignore_sigpipe() {
    // SAFETY: installing SIG_IGN for SIGPIPE has no memory effects.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Unmounts `path` (`flags` 0 or `MNT_DETACH`).
pub fn umount(path: &Path, flags: libc::c_int) -> io::Result<()> {
    let c = cstring(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is NUL-terminated.
    check(unsafe { libc::umount2(c.as_ptr(), flags) })?;
    Ok(())
}

/// The outcome of `fork` for the caller.
pub enum Forked {
    Parent,
    Child,
}

/// Forks the process. Called before any thread exists, so the child is a full copy.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: the process is single-threaded at this point (checked by the caller's design:
    // fork happens before the audit writer and FUSE threads start).
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        _ => Ok(Forked::Parent),
    }
}

/// Starts a new session so the daemon is not killed with the terminal that started it.
pub fn setsid() {
    // SAFETY: setsid has no memory effects; failing (already a leader) is harmless.
    unsafe {
        libc::setsid();
    }
}

/// Points stdin, stdout and stderr at /dev/null once the daemon is detached.
pub fn detach_stdio() -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for target in 0..3 {
        // SAFETY: dup2 onto the standard fds; `null` stays open for the duration of the call.
        check(unsafe { libc::dup2(null.as_raw_fd(), target) })?;
    }
    Ok(())
}

/// A pipe whose ends are closed on exec.
pub fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// Converts a path-like byte string to a C string (names and symlink targets from the kernel).
fn c_name(name: &OsStr) -> io::Result<CString> {
    cstring(name.as_bytes())
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub fn stat_child(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<libc::stat> {
    let c = c_name(name)?;
    let mut st = zeroed_stat();
    // SAFETY: `dir` is live, `c` NUL-terminated, `st` writable.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// Creates (or, without O_EXCL, opens) a regular file below `dir`, never through a symlink.
pub fn create_child(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    flags: libc::c_int,
    mode: u32,
) -> io::Result<File> {
    let c = c_name(name)?;
    let flags = flags | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `dir` is live, `c` NUL-terminated; the new fd is checked and then owned.
    let fd =
        check(unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags, mode as libc::c_uint) })?;
    // SAFETY: `fd` was just returned by openat(2) and nobody else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(false)` when another open file description holds it.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: `file` is a live fd; flock takes no pointers.
    match check(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// An `O_PATH` handle on the object an open file refers to.
pub fn path_fd_of(file: &File) -> io::Result<OwnedFd> {
    reopen(file.as_fd(), libc::O_PATH).map(OwnedFd::from)
}

pub fn mkdir_child(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = c_name(name)?;
    // SAFETY: `dir` is live and `c` NUL-terminated.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) })?;
    Ok(())
}

pub fn mknod_child(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, rdev: u64) -> io::Result<()> {
    let c = c_name(name)?;
    // SAFETY: `dir` is live and `c` NUL-terminated.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t, rdev) })?;
    Ok(())
}

pub fn symlink_child(dir: BorrowedFd<'_>, name: &OsStr, target: &OsStr) -> io::Result<()> {
    let c = c_name(name)?;
    let t = c_name(target)?;
    // SAFETY: `dir` is live; both strings are NUL-terminated.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) })?;
    Ok(())
}

/// Makes a new name for the object behind an `O_PATH` fd. Through the magic link, because
/// `AT_EMPTY_PATH` would need CAP_DAC_READ_SEARCH, which the caller's credentials lack.
pub fn link_child(obj: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let from = proc_fd_path(obj);
    let c = c_name(name)?;
    // SAFETY: both fds are live; the strings are NUL-terminated.
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })?;
    Ok(())
}

/// `unlinkat`; `flags` 0 or `AT_REMOVEDIR`.
pub fn unlink_child(dir: BorrowedFd<'_>, name: &OsStr, flags: libc::c_int) -> io::Result<()> {
    let c = c_name(name)?;
    // SAFETY: `dir` is live and `c` NUL-terminated.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) })?;
    Ok(())
}

/// `renameat2` (flags: RENAME_NOREPLACE, RENAME_EXCHANGE, ...).
pub fn rename_child(
    olddir: BorrowedFd<'_>,
    old: &OsStr,
    newdir: BorrowedFd<'_>,
    new: &OsStr,
    flags: u32,
) -> io::Result<()> {
    let o = c_name(old)?;
    let n = c_name(new)?;
    // SAFETY: both fds are live and both names NUL-terminated.
    check(unsafe {
        libc::renameat2(
            olddir.as_raw_fd(),
            o.as_ptr(),
            newdir.as_raw_fd(),
            n.as_ptr(),
            flags,
        )
    })?;
    Ok(())
}

/// chmod of the object behind an `O_PATH` fd (not a symlink: Linux cannot chmod those).
pub fn chmod(obj: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    let path = proc_fd_path(obj);
    // SAFETY: `path` is NUL-terminated.
    check(unsafe { libc::fchmodat(libc::AT_FDCWD, path.as_ptr(), mode as libc::mode_t, 0) })?;
    Ok(())
}

/// chown of the object itself (a symlink's own owner for a symlink); `u32::MAX` keeps a value.
pub fn chown(obj: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: the empty path with AT_EMPTY_PATH names `obj` itself.
    check(unsafe {
        libc::fchownat(
            obj.as_raw_fd(),
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// truncate by the object (no open file at hand).
pub fn truncate(obj: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    let path = proc_fd_path(obj);
    // SAFETY: `path` is NUL-terminated.
    check(unsafe { libc::truncate(path.as_ptr(), size as libc::off_t) })?;
    Ok(())
}

/// A time for `utimensat`: `None` leaves it (UTIME_OMIT), `Some(None)` is now (UTIME_NOW).
pub type SetTime = Option<Option<(i64, i64)>>;

fn timespec(t: SetTime) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(None) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(Some((sec, nsec))) => libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
    }
}

/// Sets atime/mtime of the object behind an `O_PATH` fd itself (a symlink's own times for a
/// symlink; `AT_EMPTY_PATH` on utimensat needs Linux >= 5.8).
pub fn utimens(obj: BorrowedFd<'_>, atime: SetTime, mtime: SetTime) -> io::Result<()> {
    let times = [timespec(atime), timespec(mtime)];
    // SAFETY: the empty path with AT_EMPTY_PATH names `obj` itself; `times` holds the two
    // entries read.
    check(unsafe {
        libc::utimensat(
            obj.as_raw_fd(),
            c"".as_ptr(),
            times.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

pub fn setxattr(obj: BorrowedFd<'_>, name: &OsStr, value: &[u8], flags: i32) -> io::Result<()> {
    let path = proc_fd_path(obj);
    let n = c_name(name)?;
    // SAFETY: strings NUL-terminated; `value` has `value.len()` readable bytes.
    check(unsafe {
        libc::setxattr(
            path.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })?;
    Ok(())
}

pub fn removexattr(obj: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let path = proc_fd_path(obj);
    let n = c_name(name)?;
    // SAFETY: both strings are NUL-terminated.
    check(unsafe { libc::removexattr(path.as_ptr(), n.as_ptr()) })?;
    Ok(())
}

pub fn fallocate(file: &File, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: `file` owns a live fd.
    check(unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    })?;
    Ok(())
}

/// `struct fsxattr` of `linux/fs.h`, as raw bytes: u32 xflags, extsize, nextents, projid,
/// cowextsize, then 8 bytes of padding.
pub const FSXATTR_SIZE: usize = 28;

/// `FS_IOC_FSGETXATTR` = `_IOR('X', 31, struct fsxattr)`.
pub const FS_IOC_FSGETXATTR: u32 = 0x801c_581f;
/// `FS_IOC_FSSETXATTR` = `_IOW('X', 32, struct fsxattr)`.
pub const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;

/// The inode flags of an open file (`FS_IOC_GETFLAGS`; `lsattr`). The kernel reads and writes
/// an `int` whatever the `long` in the command's definition says.
pub fn get_inode_flags(file: &File) -> io::Result<u32> {
    let mut flags: libc::c_int = 0;
    // SAFETY: `file` owns a live fd; the kernel writes one int to `flags`.
    check(unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) })?;
    Ok(flags as u32)
}

/// Sets the inode flags of an open file (`FS_IOC_SETFLAGS`; `chattr`).
pub fn set_inode_flags(file: &File, flags: u32) -> io::Result<()> {
    let flags = flags as libc::c_int;
    // SAFETY: `file` owns a live fd; the kernel reads one int from `flags`.
    check(unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) })?;
    Ok(())
}

/// The extended inode attributes of an open file (`FS_IOC_FSGETXATTR`).
pub fn get_fsxattr(file: &File) -> io::Result<[u8; FSXATTR_SIZE]> {
    let mut buf = [0u8; FSXATTR_SIZE];
    // SAFETY: `file` owns a live fd; the kernel writes one struct fsxattr (28 bytes) to `buf`.
    check(unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            FS_IOC_FSGETXATTR as libc::Ioctl,
            buf.as_mut_ptr(),
        )
    })?;
    Ok(buf)
}

/// Sets the extended inode attributes of an open file (`FS_IOC_FSSETXATTR`).
pub fn set_fsxattr(file: &File, attr: &[u8; FSXATTR_SIZE]) -> io::Result<()> {
    // SAFETY: `file` owns a live fd; the kernel reads one struct fsxattr (28 bytes).
    check(unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            FS_IOC_FSSETXATTR as libc::Ioctl,
            attr.as_ptr(),
        )
    })?;
    Ok(())
}

pub fn copy_file_range(
    from: &File,
    from_off: u64,
    to: &File,
    to_off: u64,
    len: u64,
    flags: u32,
) -> io::Result<usize> {
    let mut off_in = from_off as libc::loff_t;
    let mut off_out = to_off as libc::loff_t;
    // SAFETY: both fds are live; the offsets are local variables the kernel updates.
    check_size(unsafe {
        libc::copy_file_range(
            from.as_raw_fd(),
            &mut off_in,
            to.as_raw_fd(),
            &mut off_out,
            len as usize,
            flags,
        )
    })
}

/// Sends one datagram to systemd's notification socket (`NOTIFY_SOCKET`, a path or an
/// abstract name starting with '@').
pub fn notify_socket(socket: &OsStr, state: &str) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = socket.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(Path::new(socket))?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// Makes every thread allocate from malloc's one main arena. glibc otherwise gives threads
/// arenas of their own, and the nodes of a big walk, freed again when the kernel forgets them,
/// leave pages in those arenas that `malloc_trim` cannot return while a few live objects sit
/// among them. Per-thread caches (tcache) still serve most small allocations without the
/// arena's lock. Call before the first thread starts.
pub fn single_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a malloc tunable; M_ARENA_MAX takes any positive count.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Returns malloc's free pages to the system (after the kernel forgot many nodes).
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks malloc's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Reads the next chunk of entries of an open directory from where its fd is (`.` and `..`
/// included), each with the offset just after it (`d_off`, for `lseek`); empty at the end.
/// A malformed buffer is EIO, never a panic.
pub fn read_dir_chunk(dir: &File) -> io::Result<Vec<(DirEntry, u64)>> {
    let mut buf = vec![0u8; 16 * 1024];
    let filled = getdents(dir, &mut buf)?;
    dirent::parse_records(filled).map_err(|_| io::Error::from_raw_os_error(libc::EIO))
}

/// statfs(2) of a path, result discarded: the FUSE kernel never answers it from a cache, so
/// on a relocfs mount it always reaches the daemon (ENOTCONN when the daemon is dead).
pub fn statfs(path: &Path) -> io::Result<()> {
    let c = cstring(path.as_os_str().as_bytes())?;
    // SAFETY: an all-zero statfs is valid; `c` is NUL-terminated and `buf` writable.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    check(unsafe { libc::statfs(c.as_ptr(), &mut buf) })?;
    Ok(())
}

/// The peer of a connected Unix socket: (pid, uid, gid), as the kernel recorded them when the
/// peer connected or listened (SO_PEERCRED): the peer cannot lie about them.
pub fn peer_cred(sock: BorrowedFd<'_>) -> io::Result<(i32, u32, u32)> {
    // SAFETY: an all-zero ucred is valid; getsockopt writes at most `len` bytes into it.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `sock` is a live fd; `cred` and `len` are writable and sized as told.
    check(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok((cred.pid, cred.uid, cred.gid))
}

/// Sends `signal` to `pid`.
pub fn kill(pid: i32, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill has no memory effects.
    check(unsafe { libc::kill(pid, signal) })?;
    Ok(())
}

/// The calling thread's id (as audit events and /proc/PID/task name it).
pub fn gettid() -> u32 {
    // SAFETY: gettid cannot fail and touches no memory.
    unsafe { libc::gettid() as u32 }
}

/// The login name of `uid` in the user database (files, LDAP, ...: whatever NSS is set up
/// for), `None` if it has none or the lookup fails.
pub fn user_name(uid: u32) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: all-zero is a valid passwd (null pointers); getpwuid_r fills it with
        // pointers into `buf`, which outlives their use below.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and `buf.len()` is its size.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        // SAFETY: on success pw_name is a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return Some(name.to_bytes().to_vec());
    }
}

/// Opens the connection to syslog: facility daemon, tagged relocfs[PID].
pub fn openlog_daemon() {
    // SAFETY: the identifier is a static NUL-terminated string, as openlog requires (it keeps
    // the pointer).
    unsafe { libc::openlog(c"relocfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
}

/// Writes one message to syslog at `priority`. A message with a NUL byte cannot be passed to
/// syslog whole; it is cut there.
pub fn syslog(priority: libc::c_int, text: &str) {
    let text = text.split('\0').next().unwrap_or_default();
    if let Ok(message) = CString::new(text) {
        // SAFETY: both strings are NUL-terminated; "%s" takes exactly one string argument.
        unsafe { libc::syslog(priority, c"%s".as_ptr(), message.as_ptr()) };
    }
}

/// Makes a FIFO at `path` (tests of the audit writer use one as a log that stalls).
pub fn mkfifo(path: &Path, mode: u32) -> io::Result<()> {
    let c = cstring(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated string; mkfifo only reads it.
    check(unsafe { libc::mkfifo(c.as_ptr(), mode as libc::mode_t) })?;
    Ok(())
}

/// Sets an open file's status flags (F_SETFL: O_NONBLOCK, O_APPEND, ...).
pub fn set_status_flags(fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `fd` is live for the call; F_SETFL takes an int and touches no memory.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gettid_names_this_thread() {
        let tid = gettid();
        std::thread::spawn(move || assert_ne!(gettid(), tid))
            .join()
            .unwrap();
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        assert!(
            status.lines().any(|l| l == format!("Pid:\t{tid}")),
            "{status}"
        );
    }

    #[test]
    fn fifo_and_status_flags() {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f");
        mkfifo(&fifo, 0o600).unwrap();
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        assert_eq!(
            mkfifo(&fifo, 0o600).unwrap_err().raw_os_error(),
            Some(libc::EEXIST)
        );
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        set_status_flags(reader.as_fd(), 0).unwrap();
        // The flags as /proc shows them (octal): O_NONBLOCK is gone.
        let fdinfo =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", reader.as_raw_fd())).unwrap();
        let flags = fdinfo
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| i32::from_str_radix(f.trim(), 8).unwrap())
            .unwrap();
        assert_eq!(flags & libc::O_NONBLOCK, 0);
    }
}
