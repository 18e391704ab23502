//! The filesystem core: resolves legacy names through the prefix table to real objects, serves
//! reads, refuses changes on read-only rules, and writes the audit events. Plain Rust: it knows
//! nothing of fuser (see `fuse/`), so most of it is testable without `/dev/fuse`, and every
//! operation is decided here whichever transport brought it.
//!
//! - `mod.rs`: the `Fs` struct, construction, reload, counters;
//! - `error.rs`: the one errno table (refusals with their reasons, and the OS's errnos);
//! - `lookup.rs`: lookup, forget, getattr, readlink, statfs, access;
//! - `dir.rs`: opendir, readdir, readdirplus, releasedir, and the listing state;
//! - `handles.rs`: the handle table, the per-uid budget, and the openers' credentials;
//! - `io.rs`: open and the I/O on file handles, release;
//! - `passthrough.rs`: which opens the kernel passes through, and with which backing file;
//! - `namespace.rs`: create, mkdir, mknod, symlink, link, unlink, rmdir, rename;
//! - `attr.rs`: setattr, extended attributes, the inode-flag ioctls;
//! - `record.rs`: what an operation did, for the audit log and the counters.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

mod attr;
mod dir;
mod error;
mod handles;
mod io;
mod lookup;
mod namespace;
mod passthrough;
mod record;

pub use attr::SetAttr;
pub use error::{Error, Result};
pub use handles::Opener;
pub use passthrough::{Backing, Opened, OpenedFlags, RegisterBacking};

use crate::audit::AuditLog;
use crate::config::{Action, Mode};
use crate::creds::GroupsCache;
use crate::node::{Kind, Link, Node, NodeFd, NodeTable, ROOT_ID};
use crate::prefix::PrefixTable;
pub use crate::rules::RuleRoot;
use crate::rules::Rules;
use crate::sys;
use dir::DirState;
use handles::{Budget, Handle, Open};
use passthrough::Passthrough;
use record::Audited;

/// Who made a request, as the kernel tells us.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Attributes of a node as the kernel should see them.
pub struct Attr {
    pub id: u64,
    pub stat: libc::stat,
}

/// One entry of a directory listing.
pub struct ListEntry {
    pub ino: u64,
    /// `S_IFMT` bits of the entry.
    pub format: u32,
    pub name: OsString,
}

/// Behaviour chosen at mount time. (`-o dev` is the kernel's alone: creating devices follows
/// the caller's own privilege either way, see `Fs::mknod`.)
#[derive(Debug, Clone, Copy, Default)]
pub struct FsOptions {
    /// Fds the transport holds for the daemon's life beside fuser's (io_uring: a ring and an
    /// eventfd per queue, one `/dev/fuse` dup), added to the daemon's reserve so that they
    /// come out of no user's share (see `Budget`).
    pub transport_fds: usize,
}

/// The mounted filesystem's state.
pub struct Fs {
    /// Present when the daemon runs as root and so can act as each caller; an unprivileged
    /// daemon serves only its own user and acts as itself.
    groups: Option<GroupsCache>,
    mountpoint: PathBuf,
    /// The current rules: new lookups from the root use them; other nodes keep theirs.
    rules: RwLock<Arc<Rules>>,
    nodes: NodeTable,
    handles: Mutex<HashMap<u64, Open>>,
    budget: Budget,
    next_fh: AtomicU64,
    /// The last device found to check permissions generically, plus one (0: none yet); see
    /// `Fs::open_as_caller_matters`.
    generic_dev: AtomicU64,
    passthrough: Passthrough,
    audit: Arc<AuditLog>,
    /// Audited operations by op and result, for `relocfs status` (lock-free).
    counts: record::Counts,
    /// Per-rule counters for the metrics textfile, when `[metrics]` is on.
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
    started: SystemTime,
}

impl Fs {
    /// Builds the filesystem over opened rule roots. `mountpoint` is the absolute legacy path
    /// the audit log reports.
    pub fn new(
        mountpoint: PathBuf,
        table: PrefixTable,
        roots: Vec<Option<RuleRoot>>,
        audit: Arc<AuditLog>,
        options: FsOptions,
    ) -> std::io::Result<Fs> {
        let rules = Arc::new(Rules::new(0, table, roots));
        let budget = Budget::new(sys::nofile_limit(), options.transport_fds);
        let fs = Fs {
            groups: (sys::geteuid() == 0).then(GroupsCache::default),
            mountpoint,
            rules: RwLock::new(Arc::clone(&rules)),
            // Open handles take their fds first; node fds get what is left (see `Budget`).
            nodes: NodeTable::new(budget.node_budget(0)),
            handles: Mutex::new(HashMap::new()),
            budget,
            next_fh: AtomicU64::new(1),
            generic_dev: AtomicU64::new(0),
            passthrough: Passthrough::default(),
            audit,
            counts: record::Counts::default(),
            metrics: std::sync::OnceLock::new(),
            started: SystemTime::now(),
        };
        fs.nodes.set_root(root_node(&fs.nodes, rules)?);
        Ok(fs)
    }

    /// Puts a new generation of rules in place: the root is replaced at once, so every path
    /// walked from the root sees the new rules; nodes found earlier (open files, working
    /// directories) keep the rules they were found under. Returns the names directly below the
    /// root whose cached kernel entries must be dropped (old and new alike).
    pub fn reload(
        &self,
        table: PrefixTable,
        roots: Vec<Option<RuleRoot>>,
    ) -> std::io::Result<Vec<OsString>> {
        let old = self.current_rules();
        let rules = Arc::new(Rules::new(old.generation.wrapping_add(1), table, roots));
        let mut names = std::collections::BTreeSet::new();
        for generation in [&old, &rules] {
            names.extend(
                generation
                    .table
                    .children(PrefixTable::ROOT)
                    .map(|(n, _)| n.to_os_string()),
            );
            let root_rule = generation.table.rule_at(PrefixTable::ROOT);
            if let Some(root) = root_rule.and_then(|r| generation.root_of(r)) {
                let fd = root.fd()?;
                if let Ok(dir) = sys::reopen(fd.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY) {
                    names.extend(sys::read_dir_all(&dir)?.into_iter().map(|e| e.name));
                }
            }
        }
        let root = root_node(&self.nodes, Arc::clone(&rules))?;
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = rules;
        let old_root = self.nodes.set_root(root);
        // The old generation's roots and nodes give their fds back now; nodes still in use
        // reopen theirs for each call (see `rules.rs`).
        old.retire();
        self.nodes.retire_old(old_root);
        Ok(names.into_iter().collect())
    }

    fn current_rules(&self) -> Arc<Rules> {
        Arc::clone(&self.rules.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Counts every audited operation into `metrics` from now on (once; later calls do
    /// nothing).
    pub fn set_metrics(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// The current rules, as configured.
    pub fn rules(&self) -> Vec<crate::config::Rule> {
        self.current_rules().table.rules().to_vec()
    }

    pub fn node_count(&self) -> usize {
        self.nodes.count()
    }

    pub fn node_fds(&self) -> usize {
        self.nodes.open_fds()
    }

    /// Audited operations so far, by op and result, sorted.
    pub fn operation_counts(&self) -> Vec<(String, String, u64)> {
        self.counts.rows()
    }

    /// The current rules, one line each ("/keys -> /srv/keys (rw)", "/keys/admin denied").
    pub fn describe_rules(&self) -> Vec<String> {
        let rules = self.current_rules();
        rules
            .table
            .rules()
            .iter()
            .map(|rule| match &rule.action {
                Action::Map { to, mode } => format!(
                    "{} -> {} ({})",
                    rule.from,
                    to.display(),
                    if *mode == Mode::ReadWrite { "rw" } else { "ro" }
                ),
                Action::Deny => format!("{} denied", rule.from),
            })
            .collect()
    }

    /// A real node's fd (reopened if it was closed under fd pressure); `None` when virtual.
    fn fd(&self, node: &Arc<Node>) -> Result<Option<NodeFd>> {
        Ok(self.nodes.fd(node)?)
    }

    fn node(&self, id: u64) -> Result<Arc<Node>> {
        self.nodes.get(id).ok_or(Error::UnknownNode)
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }
}

/// The root node of a generation of rules: the real directory of a rule on "/", or a virtual
/// directory listing the top-level rules.
fn root_node(nodes: &NodeTable, rules: Arc<Rules>) -> std::io::Result<Node> {
    let link = Link {
        parent: None,
        name: OsString::new(),
    };
    let rule = rules.table.rule_at(PrefixTable::ROOT);
    let kind = match rule.and_then(|r| rules.root_of(r).map(|root| (r, root))) {
        Some((rule, root)) => Kind::Real {
            rule,
            fd: nodes.slot(root.fd()?),
            dev: root.stat.st_dev,
            ino: root.stat.st_ino,
            format: libc::S_IFDIR,
        },
        // No rule on "/", or a deny rule there: a virtual root (empty for a deny rule).
        None => Kind::Virtual,
    };
    Ok(Node::new(
        ROOT_ID,
        kind,
        rules,
        Some(PrefixTable::ROOT),
        link,
    ))
}
