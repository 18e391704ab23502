//! Builds an `Fs` over temporary directories as the daemon does, and walks it as the kernel
//! would: one `lookup` per name component from the root inode, then getattr/open/read/readdir.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use relocfs::audit::AuditLog;
use relocfs::config;
use relocfs::fs::{Attr, Caller, Fs, FsOptions};
use relocfs::node::ROOT_ID;
use relocfs::prefix::PrefixTable;
use relocfs::preflight;

/// One `[[map]]` rule of a test config.
#[derive(Debug, Clone)]
pub struct RuleSpec {
    pub from: String,
    /// `None` for a deny rule.
    pub to: Option<PathBuf>,
    pub rw: bool,
}

impl RuleSpec {
    pub fn ro(from: &str, to: &Path) -> RuleSpec {
        RuleSpec {
            from: from.into(),
            to: Some(to.into()),
            rw: false,
        }
    }

    pub fn rw(from: &str, to: &Path) -> RuleSpec {
        RuleSpec {
            from: from.into(),
            to: Some(to.into()),
            rw: true,
        }
    }

    pub fn deny(from: &str) -> RuleSpec {
        RuleSpec {
            from: from.into(),
            to: None,
            rw: false,
        }
    }
}

/// The config file the rules would be written as.
fn config_text(rules: &[RuleSpec]) -> String {
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut text = String::new();
    for rule in rules {
        text.push_str(&format!("[[map]]\nfrom = {}\n", quote(&rule.from)));
        match &rule.to {
            None => text.push_str("deny = true\n"),
            Some(to) => {
                let to = to.to_str().expect("temporary paths are UTF-8");
                let mode = if rule.rw { "rw" } else { "ro" };
                text.push_str(&format!("to = {}\nmode = \"{mode}\"\n", quote(to)));
            }
        }
    }
    text
}

/// Builds the core from `rules` the way `daemon::serve_inner` does, with the audit log off.
pub fn build(rules: &[RuleSpec]) -> Fs {
    build_with_log(rules, AuditLog::disabled())
}

/// Like `build`, writing audit events to `audit`.
pub fn build_with_log(rules: &[RuleSpec], audit: AuditLog) -> Fs {
    let text = config_text(rules);
    let config = config::parse(&text, Path::new("core-test.toml"))
        .unwrap_or_else(|e| panic!("config refused: {e}\n{text}"));
    let roots = preflight::open_roots(&config).unwrap_or_else(|e| panic!("open_roots: {e}"));
    let table = PrefixTable::new(&config.rules);
    Fs::new(
        PathBuf::from("/legacy"),
        table,
        roots,
        Arc::new(audit),
        FsOptions::default(),
    )
    .unwrap_or_else(|e| panic!("Fs::new: {e}"))
}

/// The test process itself, as the kernel would name it in a request.
pub fn me() -> Caller {
    // SAFETY: geteuid and getegid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    Caller {
        pid: std::process::id(),
        uid,
        gid,
    }
}

/// What the kernel would be told about a node: the reply's node id and the stat fields a
/// caller sees (everything but atime, which reading changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub id: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub size: i64,
    pub mtime: (i64, i64),
}

impl Seen {
    pub fn of(attr: &Attr) -> Seen {
        let st = &attr.stat;
        Seen {
            id: attr.id,
            ino: st.st_ino,
            mode: st.st_mode,
            nlink: st.st_nlink,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec),
        }
    }

    pub fn format(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
}

/// One entry of a listing as the kernel gets it, with the offset that resumes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: OsString,
    pub ino: u64,
    pub format: u32,
    pub next: u64,
}

pub fn lookup(fs: &Fs, parent: u64, name: &OsStr) -> Result<Seen, i32> {
    fs.lookup(me(), parent, name)
        .map(|a| Seen::of(&a))
        .map_err(|e| e.errno())
}

pub fn getattr(fs: &Fs, id: u64) -> Result<Seen, i32> {
    fs.getattr(id).map(|a| Seen::of(&a)).map_err(|e| e.errno())
}

/// The legacy path's components ("/" has none).
pub fn components(path: &str) -> Vec<OsString> {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(OsString::from)
        .collect()
}

/// Looks `path` up from the root, one component at a time; returns the ids looked up (each
/// holds one kernel lookup until forgotten) and the last one's attributes, or the first
/// error with the ids looked up before it.
pub fn walk(fs: &Fs, path: &str) -> (Vec<u64>, Result<Seen, i32>) {
    let mut ids = Vec::new();
    let mut seen = getattr(fs, ROOT_ID);
    for name in components(path) {
        let parent = match &seen {
            Ok(s) => s.id,
            Err(_) => break,
        };
        seen = lookup(fs, parent, &name);
        if let Ok(s) = &seen {
            ids.push(s.id);
        }
    }
    (ids, seen)
}

/// Gives back one kernel lookup on each id, as the kernel's FORGET would.
pub fn forget_all(fs: &Fs, ids: &[u64]) {
    for &id in ids {
        fs.forget(id, 1);
    }
}

/// The whole listing of directory `id` through a fresh handle, from offset 0.
pub fn list(fs: &Fs, id: u64) -> Vec<Listed> {
    let fh = fs.opendir(me(), id, libc::O_RDONLY).expect("opendir").fh;
    let entries = list_handle(fs, fh, 0, usize::MAX);
    fs.releasedir(fh);
    entries
}

/// Reads handle `fh` from `offset` on, at most `chunk` entries per readdir call (as a kernel
/// buffer that fills up), resuming each call at the last entry's offset, until a call
/// returns nothing.
pub fn list_handle(fs: &Fs, fh: u64, mut offset: u64, chunk: usize) -> Vec<Listed> {
    let mut all = Vec::new();
    loop {
        let mut got = Vec::new();
        fs.readdir(fh, offset, |entry, next| {
            if got.len() == chunk {
                return true;
            }
            got.push(Listed {
                name: entry.name.clone(),
                ino: entry.ino,
                format: entry.format,
                next,
            });
            false
        })
        .expect("readdir");
        let Some(last) = got.last() else {
            return all;
        };
        // Hang guards: a listing that stops advancing or never ends fails instead.
        assert_ne!(
            last.next, offset,
            "readdir resumed at its own offset: {last:?}"
        );
        offset = last.next;
        all.extend(got);
        assert!(all.len() < 100_000, "the listing does not end");
    }
}

/// The whole content of regular file `id`, read through an open handle in small pieces.
pub fn read_all(fs: &Fs, id: u64) -> Result<Vec<u8>, i32> {
    let fh = fs.open(me(), id, libc::O_RDONLY).map_err(|e| e.errno())?.fh;
    let mut data = Vec::new();
    loop {
        let piece = fs.read(fh, data.len() as u64, 7).map_err(|e| e.errno());
        match piece {
            Ok(p) if p.is_empty() => break,
            Ok(p) => data.extend(p),
            Err(e) => {
                fs.release(fh);
                return Err(e);
            }
        }
    }
    fs.release(fh);
    Ok(data)
}

pub fn names(entries: &[Listed]) -> Vec<&[u8]> {
    entries.iter().map(|e| e.name.as_bytes()).collect()
}
