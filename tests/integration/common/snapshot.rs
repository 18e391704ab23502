//! Snapshots of a real tree, to prove that an operation changed nothing.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::fs::{fnv1a, lgetxattr, llistxattr};

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

/// Visits `dir` and everything below it without following symlinks, each
/// directory before its entries, names sorted: `visit(rel, full, lstat)`, where
/// `rel` is the path relative to `dir` ("" for `dir` itself).
pub fn walk_tree(dir: &Path, visit: &mut dyn FnMut(&Path, &Path, &fs::Metadata)) {
    walk_rec(dir, Path::new(""), visit);
}

fn walk_rec(base: &Path, rel: &Path, visit: &mut dyn FnMut(&Path, &Path, &fs::Metadata)) {
    let full = if rel.as_os_str().is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    };
    let md =
        fs::symlink_metadata(&full).unwrap_or_else(|e| panic!("lstat {}: {e}", full.display()));
    visit(rel, &full, &md);
    if md.is_dir() {
        let mut names: Vec<OsString> = fs::read_dir(&full)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            walk_rec(base, &rel.join(n), visit);
        }
    }
}

/// "dir", "symlink", "file", "fifo" or "special" (sockets, devices).
pub fn kind_name(ft: &fs::FileType) -> &'static str {
    if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_file() {
        "file"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "special"
    }
}

/// Recursive snapshot of `dir` (not following symlinks), keyed by the
/// path relative to `dir` ("" is `dir` itself).
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, SnapEntry> {
    let mut out = BTreeMap::new();
    walk_tree(dir, &mut |rel, full, md| {
        out.insert(rel.to_path_buf(), snap_entry(full, md));
    });
    out
}

fn snap_entry(full: &Path, md: &fs::Metadata) -> SnapEntry {
    let ft = md.file_type();
    let kind = kind_name(&ft);
    let content_hash = if ft.is_file() {
        Some(fnv1a(&fs::read(full).unwrap()))
    } else {
        None
    };
    let link_target = if ft.is_symlink() {
        Some(fs::read_link(full).unwrap())
    } else {
        None
    };
    let mut xattrs = BTreeMap::new();
    if !ft.is_symlink() {
        if let Ok(names) = llistxattr(full) {
            for n in names {
                if let Ok(v) = lgetxattr(full, &n) {
                    xattrs.insert(n, v);
                }
            }
        }
    }
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
