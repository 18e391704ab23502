//! Differential test of rw rules: random sequences of operations over a small
//! name space are applied through an rw mount and directly to a twin real
//! directory; every operation must give the same result (value or errno), and
//! afterwards the trees must be identical -- seen through the mount and at the
//! real path behind it. Once as root, once as an unprivileged user in a
//! directory it owns (on a thread with that uid, gid and groups and no
//! capabilities, so the kernel and the daemon see exactly that user).
//!
//! One mount per run; each case works in a fresh subdirectory of both trees.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use crate::common::*;

const CASES: u32 = 64;
const MAX_OPS: usize = 40;

/// The name space: three names on the first level, two below each.
const PATHS: &[&str] = &["a", "b", "c", "a/a", "a/b", "b/a", "b/b", "c/a", "c/b"];
/// Symlink targets, all relative and free of "..": they resolve inside the case.
const TARGETS: &[&str] = &["a", "b", "a/b", "b/a", "nonexist", "a/nonexist"];
const XATTRS: &[&str] = &["user.a", "user.b"];
const MODES: &[u32] = &[
    0o644, 0o600, 0o755, 0o700, 0o000, 0o2755, 0o4755, 0o1777, 0o666,
];
/// Owners chown may ask for; 4343 is a supplementary group of the unprivileged user.
const UIDS: &[Option<u32>] = &[None, Some(0), Some(KEY_UID), Some(NOBODY)];
const GIDS: &[Option<u32>] = &[None, Some(0), Some(KEY_GID), Some(4343)];
const EXTRA_GID: u32 = 4343;

/// Explicit times are all before this; "now" is after.
const EXPLICIT_BEFORE: i64 = 1_500_000_000;

#[derive(Debug, Clone, Copy)]
enum Time {
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
enum Op {
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
    fn resolve(&self, case: &Path) -> Op {
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
enum Val {
    Unit,
    Count(i64),
    Bytes(Content),
}

type OpResult = Result<Val, String>;

/// A path operand. Generated abstractly and resolved against the twin's
/// current state just before the operation runs (so most operations meet a
/// name of the right kind), then applied on both sides as `At`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum P {
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
fn path() -> impl Strategy<Value = P> {
    prop_oneof![
        1 => (0..PATHS.len()).prop_map(P::Any),
        4 => any::<usize>().prop_map(P::Existing),
    ]
}

/// Mostly a name that does not exist yet.
fn fresh() -> impl Strategy<Value = P> {
    prop_oneof![
        1 => (0..PATHS.len()).prop_map(P::Any),
        1 => any::<usize>().prop_map(P::Existing),
        3 => any::<usize>().prop_map(P::Fresh),
    ]
}

/// Either.
fn either() -> impl Strategy<Value = P> {
    prop_oneof![
        1 => (0..PATHS.len()).prop_map(P::Any),
        2 => any::<usize>().prop_map(P::Existing),
        2 => any::<usize>().prop_map(P::Fresh),
    ]
}

fn mode() -> impl Strategy<Value = u32> {
    prop::sample::select(MODES)
}

fn time() -> impl Strategy<Value = Time> {
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

fn op() -> impl Strategy<Value = Op> {
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

fn c(base: &Path, p: &P) -> CString {
    cpath(&base.join(p.at()))
}

fn err() -> String {
    errno_text(last_errno())
}

fn check(rc: libc::c_int) -> Result<(), String> {
    if rc == -1 {
        Err(err())
    } else {
        Ok(())
    }
}

/// An fd closed on drop.
struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        unsafe { libc::close(self.0) };
    }
}

fn xopen(base: &Path, p: &P, flags: i32, mode: u32) -> Result<Fd, String> {
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

fn count(n: isize) -> OpResult {
    if n < 0 {
        Err(err())
    } else {
        Ok(Val::Count(n as i64))
    }
}

fn apply(op: &Op, base: &Path) -> OpResult {
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

fn utimensat_raw(p: &Path, a: (i64, i64), m: (i64, i64), flags: i32) -> OpResult {
    utimensat(p, a, m, flags)
        .map(|_| Val::Unit)
        .map_err(|e| errno_text(e.raw_os_error().unwrap_or(-1)))
}

// ---------------------------------------------------------------------------
// Comparing trees
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    /// Octal, for readable failures.
    mode: String,
    uid: u32,
    gid: u32,
    size: Option<u64>,
    nlink: u64,
    content: Option<Content>,
    target: Option<PathBuf>,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// Only when set explicitly (before [`EXPLICIT_BEFORE`]).
    mtime: Option<(i64, i64)>,
}

/// File content, compared exactly, shown short (length, hash, first bytes).
#[derive(Clone, PartialEq, Eq)]
struct Content(Vec<u8>);

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

/// Every xattr of `p` itself (not following a symlink); a failure to read them panics.
fn llist(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let names = llistxattr(p).unwrap_or_else(|e| panic!("llistxattr {}: {e}", p.display()));
    names
        .into_iter()
        .map(|n| {
            let v =
                lgetxattr(p, &n).unwrap_or_else(|e| panic!("lgetxattr {} {n:?}: {e}", p.display()));
            (n, v)
        })
        .collect()
}

fn tree(base: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    walk_tree(base, &mut |rel, full, md| {
        out.insert(rel.to_string_lossy().into_owned(), entry(full, md));
    });
    out
}

fn entry(full: &Path, md: &fs::Metadata) -> Entry {
    let ft = md.file_type();
    let kind = kind_name(&ft);
    let mtime = (md.mtime() < EXPLICIT_BEFORE).then(|| (md.mtime(), md.mtime_nsec()));
    Entry {
        kind,
        mode: format!("{:04o}", md.mode() & 0o7777),
        uid: md.uid(),
        gid: md.gid(),
        size: (kind != "fifo").then_some(md.len()),
        nlink: md.nlink(),
        content: ft.is_file().then(|| {
            Content(fs::read(full).unwrap_or_else(|e| panic!("read {}: {e}", full.display())))
        }),
        target: ft.is_symlink().then(|| fs::read_link(full).unwrap()),
        xattrs: llist(full),
        mtime,
    }
}

fn tree_diff(
    what: &str,
    want: &BTreeMap<String, Entry>,
    got: &BTreeMap<String, Entry>,
) -> Vec<String> {
    let mut d = Vec::new();
    for (k, w) in want {
        match got.get(k) {
            None => d.push(format!("{what}: {k:?} missing (twin has {w:?})")),
            Some(g) if g != w => d.push(format!(
                "{what}: {k:?} differs:\n   twin: {w:?}\n   this: {g:?}"
            )),
            _ => {}
        }
    }
    for k in got.keys() {
        if !want.contains_key(k) {
            d.push(format!("{what}: {k:?} extra ({:?})", got[k]));
        }
    }
    d
}

// ---------------------------------------------------------------------------
// The runs
// ---------------------------------------------------------------------------

/// Runs the ops on both sides (through `run`, which decides the thread) and
/// compares. `mnt`/`twin`/`real` are the case directories.
fn compare_case(
    ops: &[Op],
    mnt: &Path,
    twin: &Path,
    real: &Path,
    run: &dyn Fn(Op, PathBuf) -> OpResult,
    stats: &Stats,
) -> Result<(), TestCaseError> {
    let mut done: Vec<String> = Vec::new();
    let history =
        |done: &[String]| format!("operations so far (resolved):\n  {}", done.join("\n  "));
    for (i, op) in ops.iter().enumerate() {
        let op = op.resolve(twin);
        let got = run(op.clone(), mnt.to_path_buf());
        let want = run(op.clone(), twin.to_path_buf());
        stats.add(&op, &want);
        done.push(format!("#{i} {op:?} -> {want:?}"));
        if got != want {
            return Err(TestCaseError::fail(format!(
                "op #{i} {op:?}: through relocfs {got:?}, natively {want:?}\n{}",
                history(&done)
            )));
        }
    }
    let twin_tree = tree(twin);
    let mut d = tree_diff("through the mount", &twin_tree, &tree(mnt));
    d.extend(tree_diff("at the real path", &twin_tree, &tree(real)));
    if d.is_empty() {
        Ok(())
    } else {
        Err(TestCaseError::fail(format!(
            "{}\n{}",
            d.join("\n"),
            history(&done)
        )))
    }
}

/// How often each kind of operation succeeded and failed (natively), so a
/// run that exercises nothing shows -- and fails.
#[derive(Default)]
struct Stats(std::sync::Mutex<BTreeMap<String, (usize, usize)>>);

impl Stats {
    fn add(&self, op: &Op, r: &OpResult) {
        let kind = format!("{op:?}");
        let kind = kind.split([' ', '{']).next().unwrap().to_string();
        let mut m = self.0.lock().unwrap();
        let e = m.entry(kind).or_default();
        if r.is_ok() {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }

    /// Prints the table; checks that most kinds of operation succeeded at
    /// least once and that a good share of all operations succeeded.
    fn report(&self, what: &str) {
        let m = self.0.lock().unwrap();
        let ok: usize = m.values().map(|v| v.0).sum();
        let failed: usize = m.values().map(|v| v.1).sum();
        let table: Vec<String> = m.iter().map(|(k, (o, f))| format!("{k} {o}/{f}")).collect();
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!(
                "differential {what}: {ok} ok, {failed} errors (ok/err: {})\n",
                table.join(", ")
            )
            .as_bytes(),
        );
        let kinds_ok = m.values().filter(|v| v.0 > 0).count();
        assert!(
            kinds_ok >= 17,
            "only {kinds_ok} kinds of operation ever succeeded: {table:?}"
        );
        assert!(
            ok * 3 >= ok + failed,
            "under a third of the operations succeeded: {table:?}"
        );
    }
}

/// Panics with the failure and the (compact) minimal input.
fn fail_on(result: Result<(), TestError<Vec<Op>>>) {
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, ops)) => {
            panic!("{why}\n\nminimal failing input (unresolved): {ops:?}")
        }
        Err(e) => panic!("{e}"),
    }
}

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    Config {
        cases,
        max_shrink_iters: 128,
        max_shrink_time: 5_000,
        failure_persistence: None,
        ..Config::default()
    }
}

struct Trees {
    m: Mounted,
    twin: PathBuf,
}

fn trees() -> Trees {
    let b = MountBuilder::new();
    let real = b.real();
    let twin = b.root().join("twin");
    mkdir_p(&twin);
    let m = b
        .map_mode("/", &real, "rw")
        .opt("allow_other")
        .no_audit()
        .extra("[fuse]\nthreads = 2\nattr_timeout = 60.0\nentry_timeout = 60.0\n")
        .mount();
    Trees { m, twin }
}

fn new_case(t: &Trees, n: usize, owner: Option<(u32, u32)>) -> (PathBuf, PathBuf, PathBuf) {
    let name = format!("case-{n}");
    let (real, twin) = (t.m.real().join(&name), t.twin.join(&name));
    for d in [&real, &twin] {
        fs::create_dir(d).unwrap();
        chmod(d, 0o755);
        if let Some((u, g)) = owner {
            chown(d, u, g);
        }
    }
    (t.m.at(&name), twin, real)
}

/// A starting tree, built by ordinary (compared) operations: each top-level
/// name a directory, file, symlink or nothing; each name below a directory a
/// file, directory or nothing.
fn prelude() -> impl Strategy<Value = Vec<Op>> {
    let top = prop::sample::select(
        &[
            "dir", "dir", "dir", "dir", "file", "file", "symlink", "none",
        ][..],
    );
    let child =
        prop::sample::select(&["file", "file", "file", "dir", "dir", "none", "none", "none"][..]);
    (
        prop::collection::vec(top, 3),
        prop::collection::vec(child, 6),
        prop::collection::vec((0usize..3000, any::<u64>()), 9),
        prop::collection::vec(prop::sample::select(TARGETS), 3),
    )
        .prop_map(|(tops, kids, data, targets)| {
            let mut v = Vec::new();
            let file = |v: &mut Vec<Op>, p: P, i: usize| {
                v.push(Op::Create {
                    p,
                    excl: true,
                    trunc: false,
                    append: false,
                    mode: 0o644,
                });
                let (len, seed) = data[i];
                v.push(Op::Write {
                    p,
                    off: 0,
                    len,
                    seed,
                });
                if seed % 2 == 0 {
                    let name = XATTRS[(seed / 2 % 2) as usize];
                    v.push(Op::Setxattr {
                        p,
                        name,
                        value: vec![b'v'; (seed % 7) as usize],
                        flags: 0,
                        follow: false,
                    });
                }
            };
            for (i, top) in tops.iter().enumerate() {
                let p = P::At(PATHS[i]);
                match *top {
                    "dir" => {
                        v.push(Op::Mkdir { p, mode: 0o755 });
                        for j in 0..2 {
                            let q = P::At(PATHS[3 + 2 * i + j]);
                            match kids[2 * i + j] {
                                "file" => file(&mut v, q, 3 + 2 * i + j),
                                "dir" => v.push(Op::Mkdir { p: q, mode: 0o755 }),
                                _ => {}
                            }
                        }
                    }
                    "file" => file(&mut v, p, i),
                    "symlink" => v.push(Op::Symlink {
                        target: targets[i],
                        p,
                    }),
                    _ => {}
                }
            }
            v
        })
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    (prelude(), prop::collection::vec(op(), 1..=MAX_OPS)).prop_map(|(mut p, ops)| {
        p.extend(ops);
        p
    })
}

#[test]
fn random_ops_as_root_match_the_real_filesystem() {
    skip_without_fuse!();
    let t = trees();
    let n = AtomicUsize::new(0);
    let stats = Stats::default();
    let run = |op: Op, base: PathBuf| apply(&op, &base);
    let mut runner = TestRunner::new(config());
    let result = runner.run(&ops(), |ops| {
        let (mnt, twin, real) = new_case(&t, n.fetch_add(1, Ordering::Relaxed), None);
        compare_case(&ops, &mnt, &twin, &real, &run, &stats)
    });
    fail_on(result);
    assert!(n.load(Ordering::Relaxed) >= config().cases as usize);
    stats.report("as root");
}

#[test]
fn random_ops_as_unprivileged_user_match_the_real_filesystem() {
    skip_without_fuse!();
    let t = trees();
    let worker = UserWorker::new(KEY_UID, KEY_GID, &[KEY_GID, EXTRA_GID]);
    // The worker really is unprivileged: it cannot chown to root.
    let probe = t.twin.join("probe");
    fs::write(&probe, b"").unwrap();
    chown(&probe, KEY_UID, KEY_GID);
    let p2 = probe.clone();
    let r = worker.run(move || std::os::unix::fs::chown(&p2, Some(0), None));
    assert_errno("chown to root as the worker", r, libc::EPERM);
    fs::remove_file(&probe).unwrap();

    let n = AtomicUsize::new(0);
    let stats = Stats::default();
    let run = |op: Op, base: PathBuf| worker.run(move || apply(&op, &base));
    let mut runner = TestRunner::new(config());
    let result = runner.run(&ops(), |ops| {
        let (mnt, twin, real) = new_case(
            &t,
            n.fetch_add(1, Ordering::Relaxed),
            Some((KEY_UID, KEY_GID)),
        );
        compare_case(&ops, &mnt, &twin, &real, &run, &stats)
    });
    fail_on(result);
    assert!(n.load(Ordering::Relaxed) >= config().cases as usize);
    stats.report(&format!("as uid {KEY_UID}"));
}
