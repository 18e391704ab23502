//! The operations of the differential test: what they are, how proptest draws them, and
//! how one is applied below a base directory with raw system calls.

use std::ffi::CString;
use std::fs;
use std::path::Path;

use proptest::prelude::*;

use crate::common::*;

use super::{GIDS, MODES, PATHS, TARGETS, UIDS, XATTRS};

#[derive(Debug, Clone, Copy)]
pub(super) enum Time {
    Omit,
    Now,
    At(i64, i64),
}

impl Time {
    fn spec(self) -> (i64, i64) {
        match self {
            Time::Omit => (0, libc::UTIME_OMIT),
            Time::Now => (0, libc::UTIME_NOW),
            Time::At(s, n) => (s, n),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) enum Op {
    Create {
        p: P,
        excl: bool,
        trunc: bool,
        append: bool,
        mode: u32,
    },
    Write {
        p: P,
        off: u64,
        len: usize,
        seed: u64,
    },
    Append {
        p: P,
        len: usize,
        seed: u64,
    },
    Truncate {
        p: P,
        len: u64,
        via_fd: bool,
    },
    Read {
        p: P,
        off: u64,
        len: usize,
    },
    Mkdir {
        p: P,
        mode: u32,
    },
    Mkfifo {
        p: P,
    },
    Rmdir {
        p: P,
    },
    Unlink {
        p: P,
    },
    Rename {
        from: P,
        to: P,
        flags: u32,
    },
    Symlink {
        target: &'static str,
        p: P,
    },
    Link {
        from: P,
        to: P,
    },
    Chmod {
        p: P,
        mode: u32,
    },
    Chown {
        p: P,
        uid: Option<u32>,
        gid: Option<u32>,
        follow: bool,
    },
    Utimens {
        p: P,
        atime: Time,
        mtime: Time,
        follow: bool,
    },
    Setxattr {
        p: P,
        name: &'static str,
        value: Vec<u8>,
        flags: i32,
        follow: bool,
    },
    Removexattr {
        p: P,
        name: &'static str,
        follow: bool,
    },
    Fallocate {
        p: P,
        mode: i32,
        off: u64,
        len: u64,
    },
    CopyRange {
        from: P,
        to: P,
        off_in: u64,
        off_out: u64,
        len: usize,
    },
    Fsync {
        p: P,
        data_only: bool,
    },
}

impl Op {
    /// The same operation with every path operand resolved against `case`.
    pub(super) fn resolve(&self, case: &Path) -> Op {
        let r = |p: &P| p.resolve(case);
        let mut op = self.clone();
        match &mut op {
            Op::Create { p, .. }
            | Op::Write { p, .. }
            | Op::Append { p, .. }
            | Op::Truncate { p, .. }
            | Op::Read { p, .. }
            | Op::Mkdir { p, .. }
            | Op::Mkfifo { p }
            | Op::Rmdir { p }
            | Op::Unlink { p }
            | Op::Symlink { p, .. }
            | Op::Chmod { p, .. }
            | Op::Chown { p, .. }
            | Op::Utimens { p, .. }
            | Op::Setxattr { p, .. }
            | Op::Removexattr { p, .. }
            | Op::Fallocate { p, .. }
            | Op::Fsync { p, .. } => *p = r(p),
            Op::Rename { from, to, .. }
            | Op::Link { from, to }
            | Op::CopyRange { from, to, .. } => {
                // Resolve the source first: a fresh destination is fresh
                // whatever the source is.
                *from = r(from);
                *to = r(to);
            }
        }
        op
    }
}

/// What an operation returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Val {
    Unit,
    Count(i64),
    Bytes(Content),
}

pub(super) type OpResult = Result<Val, String>;

/// A path operand. Generated abstractly and resolved against the twin's
/// current state just before the operation runs (so most operations meet a
/// name of the right kind), then applied on both sides as `At`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum P {
    /// `PATHS[i % len]`, whatever is there.
    Any(usize),
    /// One of the names that exist now (any type).
    Existing(usize),
    /// A name that does not exist now, in a directory that does.
    Fresh(usize),
    At(&'static str),
}

impl P {
    fn at(self) -> &'static str {
        match self {
            P::At(p) => p,
            other => panic!("unresolved path operand {other:?}"),
        }
    }

    fn resolve(self, case: &Path) -> P {
        let any = |i: usize| P::At(PATHS[i % PATHS.len()]);
        let pick = |i: usize, v: Vec<&'static str>| {
            if v.is_empty() {
                any(i)
            } else {
                P::At(v[i % v.len()])
            }
        };
        match self {
            P::At(_) => self,
            P::Any(i) => any(i),
            P::Existing(i) => pick(
                i,
                PATHS
                    .iter()
                    .copied()
                    .filter(|p| fs::symlink_metadata(case.join(p)).is_ok())
                    .collect(),
            ),
            P::Fresh(i) => pick(
                i,
                PATHS
                    .iter()
                    .copied()
                    .filter(|p| {
                        let full = case.join(p);
                        fs::symlink_metadata(&full).is_err()
                            && full.parent().is_some_and(|d| d.is_dir())
                    })
                    .collect(),
            ),
        }
    }
}

/// Mostly a name that exists.
pub(super) fn path() -> impl Strategy<Value = P> {
    prop_oneof![
        1 => (0..PATHS.len()).prop_map(P::Any),
        4 => any::<usize>().prop_map(P::Existing),
    ]
}

/// Mostly a name that does not exist yet.
pub(super) fn fresh() -> impl Strategy<Value = P> {
    prop_oneof![
        1 => (0..PATHS.len()).prop_map(P::Any),
        1 => any::<usize>().prop_map(P::Existing),
        3 => any::<usize>().prop_map(P::Fresh),
    ]
}

/// Either.
pub(super) fn either() -> impl Strategy<Value = P> {
    prop_oneof![
        1 => (0..PATHS.len()).prop_map(P::Any),
        2 => any::<usize>().prop_map(P::Existing),
        2 => any::<usize>().prop_map(P::Fresh),
    ]
}

pub(super) fn mode() -> impl Strategy<Value = u32> {
    prop::sample::select(MODES)
}

pub(super) fn time() -> impl Strategy<Value = Time> {
    prop_oneof![
        Just(Time::Omit),
        Just(Time::Now),
        (
            prop::sample::select(&[1_000_000_000_i64, 1_234_567_890, -1_000_000_000][..]),
            prop::sample::select(&[0_i64, 1, 123_456_789, 999_999_999][..]),
        )
            .prop_map(|(s, n)| Time::At(s, n)),
    ]
}

pub(super) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (either(), any::<bool>(), any::<bool>(), any::<bool>(), mode())
            .prop_map(|(p, excl, trunc, append, mode)| Op::Create { p, excl, trunc, append, mode }),
        5 => (path(), 0u64..6000, 0usize..3000, any::<u64>())
            .prop_map(|(p, off, len, seed)| Op::Write { p, off, len, seed }),
        2 => (path(), 0usize..200, any::<u64>()).prop_map(|(p, len, seed)| Op::Append { p, len, seed }),
        2 => (path(), 0u64..9000, any::<bool>()).prop_map(|(p, len, via_fd)| Op::Truncate { p, len, via_fd }),
        3 => (path(), 0u64..6000, 0usize..5000).prop_map(|(p, off, len)| Op::Read { p, off, len }),
        4 => (fresh(), mode()).prop_map(|(p, mode)| Op::Mkdir { p, mode }),
        1 => fresh().prop_map(|p| Op::Mkfifo { p }),
        3 => path().prop_map(|p| Op::Rmdir { p }),
        2 => path().prop_map(|p| Op::Unlink { p }),
        4 => (
            path(),
            either(),
            prop::sample::select(&[0, libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE][..])
        )
            .prop_map(|(from, to, flags)| Op::Rename { from, to, flags }),
        2 => (prop::sample::select(TARGETS), fresh()).prop_map(|(target, p)| Op::Symlink { target, p }),
        3 => (path(), fresh()).prop_map(|(from, to)| Op::Link { from, to }),
        2 => (path(), mode()).prop_map(|(p, mode)| Op::Chmod { p, mode }),
        2 => (path(), prop::sample::select(UIDS), prop::sample::select(GIDS), any::<bool>())
            .prop_map(|(p, uid, gid, follow)| Op::Chown { p, uid, gid, follow }),
        2 => (path(), time(), time(), any::<bool>())
            .prop_map(|(p, atime, mtime, follow)| Op::Utimens { p, atime, mtime, follow }),
        2 => (
            path(),
            prop::sample::select(XATTRS),
            prop::collection::vec(any::<u8>(), 0..24),
            prop::sample::select(&[0, libc::XATTR_CREATE, libc::XATTR_REPLACE][..]),
            any::<bool>()
        )
            .prop_map(|(p, name, value, flags, follow)| Op::Setxattr { p, name, value, flags, follow }),
        2 => (path(), prop::sample::select(XATTRS), any::<bool>())
            .prop_map(|(p, name, follow)| Op::Removexattr { p, name, follow }),
        2 => (
            path(),
            prop::sample::select(&[
                0,
                libc::FALLOC_FL_KEEP_SIZE,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                libc::FALLOC_FL_ZERO_RANGE,
                libc::FALLOC_FL_PUNCH_HOLE,
            ][..]),
            0u64..6000,
            0u64..6000
        )
            .prop_map(|(p, mode, off, len)| Op::Fallocate { p, mode, off, len }),
        2 => (path(), path(), 0u64..4000, 0u64..4000, 0usize..5000)
            .prop_map(|(from, to, off_in, off_out, len)| Op::CopyRange { from, to, off_in, off_out, len }),
        1 => (path(), any::<bool>()).prop_map(|(p, data_only)| Op::Fsync { p, data_only }),
    ]
}

// ---------------------------------------------------------------------------
// Applying an operation below a base directory
// ---------------------------------------------------------------------------

pub(super) fn c(base: &Path, p: &P) -> CString {
    cpath(&base.join(p.at()))
}

pub(super) fn err() -> String {
    errno_text(last_errno())
}

pub(super) fn check(rc: libc::c_int) -> Result<(), String> {
    if rc == -1 {
        Err(err())
    } else {
        Ok(())
    }
}

/// An fd closed on drop.
pub(super) struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        unsafe { libc::close(self.0) };
    }
}

pub(super) fn xopen(base: &Path, p: &P, flags: i32, mode: u32) -> Result<Fd, String> {
    // O_NONBLOCK: opening a fifo must not wait for a peer.
    let fd = unsafe {
        libc::open(
            c(base, p).as_ptr(),
            flags | libc::O_NONBLOCK | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        Err(err())
    } else {
        Ok(Fd(fd))
    }
}

pub(super) fn count(n: isize) -> OpResult {
    if n < 0 {
        Err(err())
    } else {
        Ok(Val::Count(n as i64))
    }
}

pub(super) fn apply(op: &Op, base: &Path) -> OpResult {
    use libc::*;
    match op {
        Op::Create {
            p,
            excl,
            trunc,
            append,
            mode,
        } => {
            let mut flags = O_CREAT | O_WRONLY;
            if *excl {
                flags |= O_EXCL;
            }
            if *trunc {
                flags |= O_TRUNC;
            }
            if *append {
                flags |= O_APPEND;
            }
            xopen(base, p, flags, *mode).map(|_| Val::Unit)
        }
        Op::Write { p, off, len, seed } => {
            let fd = xopen(base, p, O_WRONLY, 0)?;
            let data = pattern(*len, *seed);
            count(unsafe { pwrite(fd.0, data.as_ptr().cast(), data.len(), *off as off_t) })
        }
        Op::Append { p, len, seed } => {
            let fd = xopen(base, p, O_WRONLY | O_APPEND, 0)?;
            let data = pattern(*len, *seed);
            count(unsafe { write(fd.0, data.as_ptr().cast(), data.len()) })
        }
        Op::Truncate { p, len, via_fd } => {
            if *via_fd {
                let fd = xopen(base, p, O_WRONLY, 0)?;
                check(unsafe { ftruncate(fd.0, *len as off_t) }).map(|_| Val::Unit)
            } else {
                check(unsafe { truncate(c(base, p).as_ptr(), *len as off_t) }).map(|_| Val::Unit)
            }
        }
        Op::Read { p, off, len } => {
            let fd = xopen(base, p, O_RDONLY, 0)?;
            let mut buf = vec![0u8; *len];
            let n = unsafe { pread(fd.0, buf.as_mut_ptr().cast(), buf.len(), *off as off_t) };
            if n < 0 {
                return Err(err());
            }
            buf.truncate(n as usize);
            Ok(Val::Bytes(Content(buf)))
        }
        Op::Mkdir { p, mode } => {
            check(unsafe { mkdir(c(base, p).as_ptr(), *mode) }).map(|_| Val::Unit)
        }
        Op::Mkfifo { p } => check(unsafe { mkfifo(c(base, p).as_ptr(), 0o644) }).map(|_| Val::Unit),
        Op::Rmdir { p } => check(unsafe { rmdir(c(base, p).as_ptr()) }).map(|_| Val::Unit),
        Op::Unlink { p } => check(unsafe { unlink(c(base, p).as_ptr()) }).map(|_| Val::Unit),
        Op::Rename { from, to, flags } => check(unsafe {
            renameat2(
                AT_FDCWD,
                c(base, from).as_ptr(),
                AT_FDCWD,
                c(base, to).as_ptr(),
                *flags,
            )
        })
        .map(|_| Val::Unit),
        Op::Symlink { target, p } => {
            let t = CString::new(*target).unwrap();
            check(unsafe { symlink(t.as_ptr(), c(base, p).as_ptr()) }).map(|_| Val::Unit)
        }
        Op::Link { from, to } => check(unsafe {
            linkat(
                AT_FDCWD,
                c(base, from).as_ptr(),
                AT_FDCWD,
                c(base, to).as_ptr(),
                0,
            )
        })
        .map(|_| Val::Unit),
        Op::Chmod { p, mode } => {
            check(unsafe { chmod(c(base, p).as_ptr(), *mode) }).map(|_| Val::Unit)
        }
        Op::Chown {
            p,
            uid,
            gid,
            follow,
        } => {
            let (u, g) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
            let rc = if *follow {
                unsafe { chown(c(base, p).as_ptr(), u, g) }
            } else {
                unsafe { lchown(c(base, p).as_ptr(), u, g) }
            };
            check(rc).map(|_| Val::Unit)
        }
        Op::Utimens {
            p,
            atime,
            mtime,
            follow,
        } => {
            let flags = if *follow { 0 } else { AT_SYMLINK_NOFOLLOW };
            utimensat_raw(&base.join(p.at()), atime.spec(), mtime.spec(), flags)
        }
        Op::Setxattr {
            p,
            name,
            value,
            flags,
            follow,
        } => {
            let n = CString::new(*name).unwrap();
            let f = if *follow { setxattr } else { lsetxattr };
            check(unsafe {
                f(
                    c(base, p).as_ptr(),
                    n.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    *flags,
                )
            })
            .map(|_| Val::Unit)
        }
        Op::Removexattr { p, name, follow } => {
            let n = CString::new(*name).unwrap();
            let f = if *follow { removexattr } else { lremovexattr };
            check(unsafe { f(c(base, p).as_ptr(), n.as_ptr()) }).map(|_| Val::Unit)
        }
        Op::Fallocate { p, mode, off, len } => {
            let fd = xopen(base, p, O_WRONLY, 0)?;
            check(unsafe { fallocate(fd.0, *mode, *off as off_t, *len as off_t) })
                .map(|_| Val::Unit)
        }
        Op::CopyRange {
            from,
            to,
            off_in,
            off_out,
            len,
        } => {
            let src = xopen(base, from, O_RDONLY, 0)?;
            let dst = xopen(base, to, O_WRONLY, 0)?;
            let (mut i, mut o) = (*off_in as loff_t, *off_out as loff_t);
            let n = unsafe { copy_file_range(src.0, &mut i, dst.0, &mut o, *len, 0) };
            count(n as isize)
        }
        Op::Fsync { p, data_only } => {
            let fd = xopen(base, p, O_RDONLY, 0)?;
            let rc = if *data_only {
                unsafe { fdatasync(fd.0) }
            } else {
                unsafe { fsync(fd.0) }
            };
            check(rc).map(|_| Val::Unit)
        }
    }
}

pub(super) fn utimensat_raw(p: &Path, a: (i64, i64), m: (i64, i64), flags: i32) -> OpResult {
    utimensat(p, a, m, flags)
        .map(|_| Val::Unit)
        .map_err(|e| errno_text(e.raw_os_error().unwrap_or(-1)))
}

/// File content, compared exactly, shown short (length, hash, first bytes).
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Content(pub(super) Vec<u8>);

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head: Vec<u8> = self.0.iter().take(8).copied().collect();
        write!(
            f,
            "{} bytes, fnv {:016x}, {head:?}..",
            self.0.len(),
            fnv1a(&self.0)
        )
    }
}
