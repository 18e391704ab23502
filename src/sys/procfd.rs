//! Reopening an `O_PATH` fd through the daemon's own `/proc/self/fd` directory, opened once:
//! `openat(dir, "N")` walks one name where `open("/proc/self/fd/N")` walks four, and the name
//! is written into a stack buffer, so a reopen (one per open(2) through the mount) allocates
//! nothing. A forked child drops the parent's directory (an `atfork` handler) and opens its own
//! on first use: `/proc/self` is resolved when the directory is opened.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;

use super::check;

/// The directory's fd, or -1 before first use (and in a child after fork).
static DIR: AtomicI32 = AtomicI32::new(-1);
static ATFORK: Once = Once::new();

/// Runs in a forked child: the directory names the parent's fd table.
extern "C" fn forget_in_child() {
    let fd = DIR.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: `fd` was opened by `dir` and is owned by this static; close(2) is
        // async-signal-safe, as a child of a multi-threaded parent needs.
        unsafe { libc::close(fd) };
    }
}

fn dir() -> io::Result<RawFd> {
    let fd = DIR.load(Ordering::Acquire);
    if fd >= 0 {
        return Ok(fd);
    }
    ATFORK.call_once(|| {
        // SAFETY: registers a plain function with no captured state; it only touches an
        // atomic and closes an fd.
        unsafe { libc::pthread_atfork(None, None, Some(forget_in_child)) };
    });
    // SAFETY: a NUL-terminated literal path; the result is checked.
    let new = check(unsafe {
        libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    match DIR.compare_exchange(-1, new, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Ok(new),
        Err(existing) => {
            // Another thread was first: keep its fd.
            // SAFETY: `new` was just opened here and is owned by nobody else.
            unsafe { libc::close(new) };
            Ok(existing)
        }
    }
}

/// `n` in decimal, NUL-terminated, in `buf`; returns the start of the digits.
fn decimal(mut n: u32, buf: &mut [u8; 12]) -> usize {
    let mut i = buf.len() - 1;
    buf[i] = 0;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return i;
        }
    }
}

/// Opens the object behind `fd` with `flags` (already stripped of O_NOFOLLOW/O_CREAT/O_EXCL)
/// through its magic link in `/proc/self/fd`.
pub(super) fn reopen(fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<File> {
    let raw = fd.as_raw_fd();
    let n = u32::try_from(raw).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    let mut buf = [0u8; 12];
    let start = decimal(n, &mut buf);
    let dir = dir()?;
    // SAFETY: `buf[start..]` is a NUL-terminated name inside `buf`; `dir` is a live directory
    // fd owned by `DIR` (never closed while this process lives); the result is checked and then
    // owned.
    let new = check(unsafe { libc::openat(dir, buf[start..].as_ptr().cast(), flags) })?;
    // SAFETY: `new` was just returned by openat(2) and nobody else owns it.
    Ok(unsafe { File::from_raw_fd(new) })
}

/// The filesystem type (`statfs.f_type`) of the object behind `fd`: whether a reopen's
/// permission check is the kernel's generic one (see `fs::handles`).
pub fn fs_magic(fd: BorrowedFd<'_>) -> io::Result<i64> {
    // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is live (fstatfs accepts O_PATH fds) and `st` is writable.
    check(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st.f_type as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;

    #[test]
    fn decimal_names() {
        for n in [0u32, 7, 10, 99, 100, 4242, u32::MAX] {
            let mut buf = [0u8; 12];
            let start = decimal(n, &mut buf);
            let end = buf.len() - 1;
            assert_eq!(&buf[start..end], n.to_string().as_bytes());
            assert_eq!(buf[end], 0);
        }
    }

    /// A reopened O_PATH fd reads the same object, also in a forked child, for an fd the child
    /// opened itself (so the parent's `/proc/PID/fd`, where that number is not the same file,
    /// must not be the one used).
    #[test]
    fn reopens_the_object_here_and_after_fork() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"hello").unwrap();
        std::fs::write(dir.path().join("g"), b"child").unwrap();
        let opath = super::super::open_dir_path(dir.path()).unwrap();
        let file = super::super::open_child(opath.as_fd(), std::ffi::OsStr::new("f")).unwrap();
        let mut s = String::new();
        reopen(file.as_fd(), libc::O_RDONLY | libc::O_CLOEXEC)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "hello");
        // SAFETY: the child only opens, reads and leaves with _exit (no allocation, no lock
        // another thread of the test harness could hold).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // Give `file`'s number to another file here: through the parent's fd table that
            // number is still "hello".
            let raw = file.as_raw_fd();
            let mut buf = [0u8; 5];
            let ok =
                super::super::open_child(opath.as_fd(), std::ffi::OsStr::new("g")).is_ok_and(|g| {
                    // SAFETY: replaces this process's copy of `file` (never used again here)
                    // by a duplicate of `g`.
                    let moved = unsafe { libc::dup2(g.as_raw_fd(), raw) } == raw;
                    // SAFETY: `raw` is open in this process until _exit.
                    let at = unsafe { BorrowedFd::borrow_raw(raw) };
                    moved
                        && reopen(at, libc::O_RDONLY | libc::O_CLOEXEC)
                            .and_then(|mut f| f.read_exact(&mut buf))
                            .is_ok()
                        && &buf == b"child"
                });
            // SAFETY: ends the child at once, running nothing of the parent's.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is writable.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}
