//! The lookup path production runs (`Fs::lookup` from the root, component by component, then
//! getattr/open/read/readlink/readdir/readdirplus) against a naive reference model: linear
//! scans over the rules and path-based `lstat`s of the real trees, no trie and no fds.
//!
//! The model, for a legacy path P:
//! - a deny rule whose `from` is P or above it: EACCES (a deny rule on "/" only leaves an empty
//!   virtual root: names no other rule covers do not exist there);
//! - P is a rule's `from`: that rule's real directory;
//! - a rule lies below P: a directory, the covering rule's real one if it has a directory
//!   there (reached without following a symlink), otherwise a virtual one (mode 0555) that
//!   lists only the names of the rules below;
//! - otherwise the covering rule (longest matching `from`, by whole components) maps P to its
//!   real object, reached one component at a time without following symlinks: ENOENT when a
//!   name is missing (or its directory is virtual), ENOTDIR through a non-directory; the object's
//!   real st_ino, mode, type and content; changes refused with EROFS on read-only rules.
//! - a directory lists its real entries, minus the names the rules own, plus those names.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use relocfs::fs::Fs;
use relocfs::node::ROOT_ID;

use crate::fixture::{build, getattr, list, lookup, me, RuleSpec, Seen};

/// Names of rules, trees and queries: "k" is a prefix of "ka" as a string, not as a component;
/// "\xff" is not UTF-8 (trees and queries only: a config holds UTF-8); "zz" exists nowhere.
const RULE_NAMES: &[&str] = &["a", "b", "k", "ka"];
const TREE_NAMES: &[&[u8]] = &[b"a", b"b", b"k", b"ka", b"f", b"\xff"];
const QUERY_NAMES: &[&[u8]] = &[b"a", b"b", b"k", b"ka", b"f", b"\xff", b"zz"];
/// Rule sets have at most this many rules, and one random tree per possible rule.
const MAX_RULES: usize = 6;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Deny,
    Ro,
    Rw,
}

#[derive(Debug, Clone)]
enum Entry {
    Dir,
    File(Vec<u8>),
    Symlink(&'static str),
}

type Tree = Vec<(Vec<&'static [u8]>, Entry)>;

/// A rule of the model: `from` by components; `to` None for deny.
#[derive(Debug, Clone)]
struct MRule {
    from: Vec<OsString>,
    to: Option<PathBuf>,
    rw: bool,
}

struct Model {
    rules: Vec<MRule>,
}

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Err(i32),
    Virtual,
    /// A real object; `root` for a rule's own directory.
    Real {
        path: PathBuf,
        rw: bool,
        root: bool,
    },
}

fn is_prefix(p: &[OsString], q: &[OsString]) -> bool {
    p.len() <= q.len() && p.iter().zip(q).all(|(a, b)| a == b)
}

fn join(base: &Path, names: &[OsString]) -> PathBuf {
    let mut path = base.to_path_buf();
    for name in names {
        path.push(name);
    }
    path
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// The object at `base/rest`, reached one component at a time without following symlinks.
fn real_object(base: &Path, rest: &[OsString]) -> Result<fs::Metadata, i32> {
    let mut meta = fs::symlink_metadata(base).map_err(|e| errno(&e))?;
    for i in 0..rest.len() {
        if !meta.is_dir() {
            return Err(libc::ENOTDIR);
        }
        meta = fs::symlink_metadata(join(base, &rest[..=i])).map_err(|e| errno(&e))?;
    }
    Ok(meta)
}

impl Model {
    /// The rule whose `from` is exactly `q`.
    fn exact(&self, q: &[OsString]) -> Option<&MRule> {
        self.rules.iter().find(|r| r.from == q)
    }

    /// The longest rule whose `from` is `q` or lies above it.
    fn cover(&self, q: &[OsString]) -> Option<&MRule> {
        self.rules
            .iter()
            .filter(|r| is_prefix(&r.from, q))
            .max_by_key(|r| r.from.len())
    }

    /// Whether a rule's `from` is `q` or lies below it.
    fn owns(&self, q: &[OsString]) -> bool {
        self.rules.iter().any(|r| is_prefix(q, &r.from))
    }

    /// The names of the rules directly below `q`.
    fn rule_children(&self, q: &[OsString]) -> BTreeSet<OsString> {
        self.rules
            .iter()
            .filter(|r| r.from.len() > q.len() && is_prefix(q, &r.from))
            .map(|r| r.from[q.len()].clone())
            .collect()
    }

    fn expect(&self, q: &[OsString]) -> Expect {
        let denied = self
            .rules
            .iter()
            .any(|r| r.to.is_none() && !r.from.is_empty() && is_prefix(&r.from, q));
        if denied {
            return Expect::Err(libc::EACCES);
        }
        if let Some(MRule {
            to: Some(to), rw, ..
        }) = self.exact(q)
        {
            return Expect::Real {
                path: to.clone(),
                rw: *rw,
                root: true,
            };
        }
        // The only deny rule left above `q` is one on "/", which covers nothing.
        let cover = self.cover(q).and_then(|r| Some((r.to.as_ref()?, r)));
        let real = cover.map(|(to, r)| {
            let rest = &q[r.from.len()..];
            (join(to, rest), real_object(to, rest), r.rw)
        });
        if q.is_empty() || self.owns(q) {
            return match real {
                Some((path, Ok(meta), rw)) if meta.is_dir() => Expect::Real {
                    path,
                    rw,
                    root: false,
                },
                _ => Expect::Virtual,
            };
        }
        // Below the deepest name the rules own, the covering rule's real tree.
        let owned = (0..q.len())
            .rev()
            .find(|&n| self.owns(&q[..n]))
            .unwrap_or(0);
        if self.expect(&q[..owned]) == Expect::Virtual {
            return Expect::Err(libc::ENOENT);
        }
        match real {
            Some((path, Ok(_), rw)) => Expect::Real {
                path,
                rw,
                root: false,
            },
            Some((_, Err(e), _)) => Expect::Err(e),
            None => Expect::Err(libc::ENOENT),
        }
    }
}

/// Builds the trees (whatever of each entry can be made: a later entry may find a file where
/// it wants a directory; the model reads what is there) and the core over them.
fn setup(tmp: &Path, rules: &[(Vec<&'static str>, Kind)], trees: &[Tree]) -> (Model, Fs) {
    let mut specs = Vec::new();
    let mut model = Model { rules: Vec::new() };
    for (i, (from, kind)) in rules.iter().enumerate() {
        let from_path = format!("/{}", from.join("/"));
        let target = tmp.join(format!("t{i}"));
        fs::create_dir(&target).expect("target dir");
        for (names, entry) in &trees[i % trees.len()] {
            let path = names
                .iter()
                .fold(target.clone(), |p, n| p.join(OsStr::from_bytes(n)));
            if let Some(parent) = path.parent() {
                let _ = fs::create_dir_all(parent);
            }
            if fs::symlink_metadata(&path).is_ok() {
                continue;
            }
            let _ = match entry {
                Entry::Dir => fs::create_dir(&path),
                Entry::File(data) => fs::write(&path, data),
                Entry::Symlink(to) => std::os::unix::fs::symlink(to, &path),
            };
        }
        let (spec, to, rw) = match kind {
            Kind::Deny => (RuleSpec::deny(&from_path), None, false),
            Kind::Ro => (RuleSpec::ro(&from_path, &target), Some(target), false),
            Kind::Rw => (RuleSpec::rw(&from_path, &target), Some(target), true),
        };
        specs.push(spec);
        model.rules.push(MRule {
            from: from.iter().map(OsString::from).collect(),
            to,
            rw,
        });
    }
    (model, build(&specs))
}

/// Checks what the core told about `q` against the model; `Ok` when both found an object.
fn check_seen(
    model: &Model,
    q: &[OsString],
    got: &Result<Seen, i32>,
) -> Result<Expect, TestCaseError> {
    let want = model.expect(q);
    let shown = q
        .iter()
        .map(|n| n.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");
    match (&want, got) {
        (Expect::Err(w), Err(g)) => prop_assert_eq!(w, g, "/{}", shown),
        (Expect::Virtual, Ok(seen)) => {
            prop_assert_eq!(seen.mode, libc::S_IFDIR | 0o555, "/{} virtual", shown);
            prop_assert_eq!(seen.nlink, 2);
            prop_assert_eq!(q.is_empty(), seen.id == ROOT_ID, "/{}", shown);
        }
        (Expect::Real { path, root, .. }, Ok(seen)) => {
            let meta = fs::symlink_metadata(path).expect("model's path");
            prop_assert_eq!(seen.ino, meta.ino(), "/{} st_ino of {:?}", shown, path);
            // The node id is the real inode number too, but for the mount root's fixed id.
            let id = if q.is_empty() { ROOT_ID } else { meta.ino() };
            prop_assert_eq!(seen.id, id, "/{} node id", shown);
            prop_assert_eq!(seen.mode, meta.mode(), "/{} mode", shown);
            prop_assert_eq!(seen.nlink, meta.nlink());
            prop_assert_eq!((seen.uid, seen.gid), (meta.uid(), meta.gid()));
            prop_assert_eq!(seen.size, meta.size() as i64, "/{} size", shown);
            prop_assert_eq!(seen.mtime, (meta.mtime(), meta.mtime_nsec()));
            prop_assert!(!root || meta.is_dir());
        }
        _ => {
            return Err(TestCaseError::fail(format!(
                "/{shown}: model says {want:?}, core says {}",
                match got {
                    Ok(seen) => format!("{seen:?}"),
                    Err(e) => format!("errno {e}"),
                }
            )))
        }
    }
    Ok(want)
}

/// Deeper checks on a node found at `q`: getattr, content, link target, write refusal,
/// listings (readdir and readdirplus). Returns the ids readdirplus looked up.
fn check_node(
    fs_: &Fs,
    model: &Model,
    q: &[OsString],
    seen: &Seen,
    want: &Expect,
) -> Result<Vec<u64>, TestCaseError> {
    let again = getattr(fs_, seen.id);
    prop_assert_eq!(again.as_ref().ok(), Some(seen), "getattr after lookup");
    let mut looked_up = Vec::new();
    let (path, rw) = match want {
        Expect::Real { path, rw, .. } => (Some(path), *rw),
        _ => (None, false),
    };
    match seen.format() {
        libc::S_IFREG => {
            let path = path.expect("a regular file is real");
            let data = crate::fixture::read_all(fs_, seen.id);
            prop_assert_eq!(data.ok(), fs::read(path).ok(), "content of {:?}", path);
            match fs_.open(me(), seen.id, libc::O_WRONLY) {
                Ok(opened) => {
                    fs_.release(opened.fh);
                    prop_assert!(rw, "opened for writing under a read-only rule");
                }
                Err(e) => prop_assert!(
                    !rw && e.errno() == libc::EROFS,
                    "open for writing: {}",
                    e.errno()
                ),
            }
        }
        libc::S_IFLNK => {
            let path = path.expect("a symlink is real");
            let target = fs_.readlink(me(), seen.id).map_err(|e| e.errno());
            let real = fs::read_link(path).map(|t| t.into_os_string().into_vec());
            prop_assert_eq!(target.ok(), real.ok());
        }
        libc::S_IFDIR => {
            let entries = list(fs_, seen.id);
            let mut want_names = model.rule_children(q);
            if let Some(path) = path {
                for entry in fs::read_dir(path).expect("read_dir") {
                    want_names.insert(entry.expect("entry").file_name());
                }
            }
            let got: Vec<&OsStr> = entries
                .iter()
                .map(|e| e.name.as_os_str())
                .filter(|n| *n != "." && *n != "..")
                .collect();
            let got_set: BTreeSet<OsString> = got.iter().map(|n| n.to_os_string()).collect();
            prop_assert_eq!(got.len(), got_set.len(), "a name listed twice");
            prop_assert_eq!(&got_set, &want_names);
            for dot in [".", ".."] {
                prop_assert_eq!(entries.iter().filter(|e| e.name == dot).count(), 1);
            }
            let owned = model.rule_children(q);
            for entry in &entries {
                if entry.name == "." || entry.name == ".." {
                    continue;
                }
                let mut below = q.to_vec();
                below.push(entry.name.clone());
                if owned.contains(&entry.name) {
                    prop_assert_eq!(entry.format, libc::S_IFDIR);
                    if let Expect::Real {
                        path, root: true, ..
                    } = model.expect(&below)
                    {
                        let meta = fs::symlink_metadata(path).expect("rule root");
                        prop_assert_eq!(entry.ino, meta.ino());
                    }
                } else {
                    let real = path
                        .expect("real entries are in a real dir")
                        .join(&entry.name);
                    let meta = fs::symlink_metadata(real).expect("listed entry");
                    prop_assert_eq!(entry.ino, meta.ino());
                    prop_assert_eq!(entry.format, meta.mode() & libc::S_IFMT);
                }
            }
            // readdirplus: each entry as a lookup would find it; a denied one without attributes.
            let fh = fs_
                .opendir(me(), seen.id, libc::O_RDONLY)
                .expect("opendir")
                .fh;
            let mut plus = Vec::new();
            fs_.readdirplus(fh, 0, |entry, _, attr| {
                plus.push((entry.name.clone(), attr.id, Seen::of(attr)));
                false
            })
            .expect("readdirplus");
            fs_.releasedir(fh);
            let plus_names: BTreeSet<OsString> = plus
                .iter()
                .map(|(n, _, _)| n.clone())
                .filter(|n| n != "." && n != "..")
                .collect();
            prop_assert_eq!(&plus_names, &want_names, "readdirplus names");
            for (name, id, attr) in plus {
                if name == "." || name == ".." {
                    continue;
                }
                let mut below = q.to_vec();
                below.push(name);
                if id == 0 {
                    prop_assert_eq!(model.expect(&below), Expect::Err(libc::EACCES));
                } else {
                    looked_up.push(id);
                    check_seen(model, &below, &Ok(attr))?;
                }
            }
        }
        other => prop_assert!(false, "unexpected file type {:o}", other),
    }
    Ok(looked_up)
}

fn rule_sets() -> impl Strategy<Value = Vec<(Vec<&'static str>, Kind)>> {
    let from = prop::collection::vec(prop::sample::select(RULE_NAMES), 0..=3);
    let kind = prop_oneof![1 => Just(Kind::Deny), 2 => Just(Kind::Ro), 1 => Just(Kind::Rw)];
    prop::collection::btree_map(from, kind, 1..=MAX_RULES)
        .prop_map(|m| m.into_iter().collect::<Vec<_>>())
        .prop_shuffle()
}

fn trees() -> impl Strategy<Value = Vec<Tree>> {
    let names = prop::collection::vec(prop::sample::select(TREE_NAMES), 1..=3);
    let entry = prop_oneof![
        2 => Just(Entry::Dir),
        2 => prop::collection::vec(any::<u8>(), 0..24).prop_map(Entry::File),
        1 => prop::sample::select(vec!["a", "../b", "/", "ka/f"]).prop_map(Entry::Symlink),
    ];
    let tree = prop::collection::vec((names, entry), 0..12);
    prop::collection::vec(tree, MAX_RULES)
}

/// A legacy path to look up: random names, or (to reach real objects more often) a rule's
/// `from`, then an entry of some tree, then maybe a random name more.
#[derive(Debug, Clone)]
enum Query {
    Random(Vec<&'static [u8]>),
    Derived(usize, usize, Vec<&'static [u8]>),
}

impl Query {
    fn path(&self, rules: &[(Vec<&'static str>, Kind)], trees: &[Tree]) -> Vec<OsString> {
        let os = |n: &[u8]| OsStr::from_bytes(n).to_os_string();
        match self {
            Query::Random(names) => names.iter().map(|n| os(n)).collect(),
            Query::Derived(rule, entry, extra) => {
                let (from, _) = &rules[rule % rules.len()];
                let mut q: Vec<OsString> = from.iter().map(OsString::from).collect();
                let tree = &trees[rule % trees.len()];
                if !tree.is_empty() {
                    q.extend(tree[entry % tree.len()].0.iter().map(|n| os(n)));
                }
                q.extend(extra.iter().map(|n| os(n)));
                q
            }
        }
    }
}

fn queries() -> impl Strategy<Value = Vec<Query>> {
    let name = || prop::sample::select(QUERY_NAMES);
    let query = prop_oneof![
        1 => prop::collection::vec(name(), 0..=4).prop_map(Query::Random),
        2 => (any::<usize>(), any::<usize>(), prop::collection::vec(name(), 0..=1))
            .prop_map(|(r, e, x)| Query::Derived(r, e, x)),
    ];
    prop::collection::vec(query, 1..16)
}

proptest! {
    // Each case builds up to 6 trees and one core: 64 cases take 1-4 s on 2 loaded vCPUs.
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn lookups_match_the_reference_model(
        rules in rule_sets(),
        trees in trees(),
        queries in queries(),
    ) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (model, fs_) = setup(tmp.path(), &rules, &trees);
        let baseline = fs_.node_count();
        prop_assert_eq!(baseline, 1, "only the root before any lookup");
        let mut held = Vec::new();
        let root = getattr(&fs_, ROOT_ID);
        check_seen(&model, &[], &root)?;
        for query in &queries {
            let q = query.path(&rules, &trees);
            let mut parent = ROOT_ID;
            let mut last = root.clone();
            let mut n = 0;
            // Component by component, as the kernel walks; the model checks every step.
            for (i, name) in q.iter().enumerate() {
                let got = lookup(&fs_, parent, name);
                check_seen(&model, &q[..=i], &got)?;
                n = i + 1;
                last = got;
                match &last {
                    Ok(seen) => {
                        held.push(seen.id);
                        parent = seen.id;
                    }
                    Err(_) => break,
                }
            }
            if let Ok(seen) = &last {
                let want = model.expect(&q[..n]);
                held.extend(check_node(&fs_, &model, &q[..n], seen, &want)?);
            }
        }
        // Every lookup given back, the node table is back to the root alone.
        for id in held {
            fs_.forget(id, 1);
        }
        prop_assert_eq!(fs_.node_count(), baseline, "nodes left after forgetting all");
    }
}
