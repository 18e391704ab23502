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
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use crate::common::*;

mod model;
use model::*;

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
