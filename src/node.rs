//! The node table: every inode the kernel currently knows, with the lookup counts it holds.
//!
//! Invariants (kept by `NodeTable` alone; callers never touch the maps):
//! - a node stays in the table exactly while the kernel holds lookups on it (the root and the
//!   virtual directories are pinned);
//! - a real object is one node per `(rule, st_dev, st_ino)`, so a hard link seen under two names
//!   is one node, and the same file under two rules is two;
//! - node ids are the real `st_ino` whenever that number is free, because fuser reports the node
//!   id as `st_ino` and tools like git compare inode numbers; otherwise an id from a range that
//!   real inode numbers do not reach.
//!
//! Lock order: the table mutex is a leaf lock, never held across I/O.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::prefix::{RuleId, TrieId};
use crate::rules::Rules;

/// The kernel's fixed id for the mount root.
pub const ROOT_ID: u64 = 1;
/// Virtual directories get `VIRTUAL_BASE + generation << 32 + trie id`: stable while a
/// generation of rules lives, never shared between generations.
pub const VIRTUAL_BASE: u64 = 1 << 62;

/// The node id of a virtual directory.
pub fn virtual_id(generation: u32, trie: TrieId) -> u64 {
    VIRTUAL_BASE + (u64::from(generation) << 32) + u64::from(trie.0)
}
/// Real objects whose inode number is taken (or unusable) get ids from here upwards.
const SYNTHETIC_BASE: u64 = 1 << 63;

/// What a node stands for.
#[derive(Debug)]
pub enum Kind {
    /// A legacy directory that exists only because a rule lies below it.
    Virtual,
    /// A real object below (or at) a rule's target, held by an `O_PATH | O_NOFOLLOW` fd.
    Real {
        rule: RuleId,
        fd: OwnedFd,
        dev: u64,
        ino: u64,
        /// `S_IFMT` bits of the object: only regular files and directories are reopened.
        format: u32,
    },
}

/// Where a node was found: its parent and name, for the audit log's paths.
#[derive(Debug, Clone)]
pub struct Link {
    pub parent: Option<Arc<Node>>,
    pub name: OsString,
}

#[derive(Debug)]
pub struct Node {
    pub id: u64,
    pub kind: Kind,
    /// The rules this node was found under (see `rules.rs`).
    pub rules: Arc<Rules>,
    /// The prefix-table position of this exact legacy path, if a rule lies at or below it.
    pub trie: Option<TrieId>,
    /// Behind a mutex because renames (read-write rules) move nodes.
    link: Mutex<Link>,
}

impl Node {
    pub fn new(id: u64, kind: Kind, rules: Arc<Rules>, trie: Option<TrieId>, link: Link) -> Node {
        Node {
            id,
            kind,
            rules,
            trie,
            link: Mutex::new(link),
        }
    }

    pub fn link(&self) -> Link {
        lock(&self.link).clone()
    }

    /// What makes a real node unique (see `Identity`); `None` for virtual directories.
    pub fn identity(&self) -> Option<Identity> {
        match self.kind {
            Kind::Real { rule, dev, ino, .. } => Some((self.rules.generation, rule, dev, ino)),
            Kind::Virtual => None,
        }
    }

    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.kind {
            Kind::Real { fd, .. } => Some(fd.as_fd()),
            Kind::Virtual => None,
        }
    }

    pub fn rule(&self) -> Option<RuleId> {
        match &self.kind {
            Kind::Real { rule, .. } => Some(*rule),
            Kind::Virtual => None,
        }
    }

    pub fn is_dir(&self) -> bool {
        match &self.kind {
            Kind::Real { format, .. } => *format == libc::S_IFDIR,
            Kind::Virtual => true,
        }
    }

    /// Names from the nearest node with a prefix-table position down to this one, and that
    /// node: the legacy path is the trie path plus these names; for a real node the target is
    /// the rule's target plus the names below the rule root.
    pub fn names_below_trie(self: &Arc<Node>) -> (Arc<Node>, Vec<OsString>) {
        let mut names = Vec::new();
        let mut node = Arc::clone(self);
        while node.trie.is_none() {
            let link = node.link();
            match link.parent {
                Some(parent) => {
                    names.push(link.name);
                    node = parent;
                }
                None => break,
            }
        }
        names.reverse();
        (node, names)
    }
}

/// Locks a mutex, recovering from poisoning: a panicked thread must not take the mount down.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A real object: generation of rules, rule, `st_dev`, `st_ino`.
pub type Identity = (u32, RuleId, u64, u64);

struct Entry {
    node: Arc<Node>,
    lookups: u64,
    pinned: bool,
}

#[derive(Default)]
struct Maps {
    by_id: HashMap<u64, Entry>,
    by_identity: HashMap<Identity, u64>,
    next_synthetic: u64,
}

/// All nodes the kernel knows, by id and by real identity.
pub struct NodeTable {
    maps: Mutex<Maps>,
}

/// A real object found by a lookup, before it has a node.
pub struct Found {
    pub rules: Arc<Rules>,
    pub rule: RuleId,
    pub fd: OwnedFd,
    pub stat: libc::stat,
    pub trie: Option<TrieId>,
    pub link: Link,
}

impl NodeTable {
    pub fn new() -> NodeTable {
        NodeTable {
            maps: Mutex::new(Maps {
                next_synthetic: SYNTHETIC_BASE,
                ..Maps::default()
            }),
        }
    }

    /// Sets the root, which the kernel reaches without a lookup and never forgets; a reload
    /// replaces it.
    pub fn set_root(&self, node: Node) -> Arc<Node> {
        let mut maps = lock(&self.maps);
        let node = Arc::new(node);
        if let Some(identity) = node.identity() {
            maps.by_identity.insert(identity, node.id);
        }
        let old = maps.by_id.insert(
            node.id,
            Entry {
                node: Arc::clone(&node),
                lookups: 0,
                pinned: true,
            },
        );
        if let Some(identity) = old.and_then(|e| e.node.identity()) {
            if maps.by_identity.get(&identity) == Some(&node.id)
                && node.identity() != Some(identity)
            {
                maps.by_identity.remove(&identity);
            }
        }
        node
    }

    pub fn get(&self, id: u64) -> Option<Arc<Node>> {
        lock(&self.maps).by_id.get(&id).map(|e| Arc::clone(&e.node))
    }

    /// Counts one kernel lookup on the virtual directory `id`, creating it with `make` first
    /// if the kernel does not know it yet.
    pub fn virtual_node(&self, id: u64, make: impl FnOnce() -> Node) -> Arc<Node> {
        let mut maps = lock(&self.maps);
        let entry = maps.by_id.entry(id).or_insert_with(|| Entry {
            node: Arc::new(make()),
            lookups: 0,
            pinned: false,
        });
        entry.lookups += 1;
        Arc::clone(&entry.node)
    }

    /// Returns the node for a real object, creating it if the kernel does not know it yet, and
    /// counts one kernel lookup on it. A duplicate fd from a racing lookup is simply dropped.
    pub fn found(&self, found: Found) -> Arc<Node> {
        let identity = (
            found.rules.generation,
            found.rule,
            found.stat.st_dev,
            found.stat.st_ino,
        );
        let mut maps = lock(&self.maps);
        if let Some(id) = maps.by_identity.get(&identity).copied() {
            if let Some(entry) = maps.by_id.get_mut(&id) {
                entry.lookups += 1;
                return Arc::clone(&entry.node);
            }
        }
        let ino = found.stat.st_ino;
        let id = if ino > ROOT_ID && ino < VIRTUAL_BASE && !maps.by_id.contains_key(&ino) {
            ino
        } else {
            loop {
                let candidate = maps.next_synthetic;
                maps.next_synthetic = maps.next_synthetic.wrapping_add(1).max(SYNTHETIC_BASE);
                if !maps.by_id.contains_key(&candidate) {
                    break candidate;
                }
            }
        };
        let node = Arc::new(Node::new(
            id,
            Kind::Real {
                rule: found.rule,
                fd: found.fd,
                dev: found.stat.st_dev,
                ino,
                format: found.stat.st_mode & libc::S_IFMT,
            },
            found.rules,
            found.trie,
            found.link,
        ));
        maps.by_identity.insert(identity, id);
        maps.by_id.insert(
            id,
            Entry {
                node: Arc::clone(&node),
                lookups: 1,
                pinned: false,
            },
        );
        node
    }

    /// The kernel dropped `n` lookups; the node goes when none are left (unless pinned).
    pub fn forget(&self, id: u64, n: u64) {
        let mut maps = lock(&self.maps);
        let Some(entry) = maps.by_id.get_mut(&id) else {
            return;
        };
        entry.lookups = entry.lookups.saturating_sub(n);
        if entry.lookups > 0 || entry.pinned {
            return;
        }
        if let Some(identity) = maps.by_id.remove(&id).and_then(|e| e.node.identity()) {
            if maps.by_identity.get(&identity) == Some(&id) {
                maps.by_identity.remove(&identity);
            }
        }
    }

    /// A rename moved the object `identity` to a new parent and name.
    pub fn relink(&self, identity: Identity, link: Link) {
        let maps = lock(&self.maps);
        let node = maps
            .by_identity
            .get(&identity)
            .and_then(|id| maps.by_id.get(id))
            .map(|e| Arc::clone(&e.node));
        drop(maps);
        if let Some(node) = node {
            *lock(&node.link) = link;
        }
    }

    /// Number of nodes in memory (for status and tests).
    pub fn count(&self) -> usize {
        lock(&self.maps).by_id.len()
    }
}

impl Default for NodeTable {
    fn default() -> Self {
        NodeTable::new()
    }
}

/// Joins names onto a base path.
pub fn join(base: impl Into<PathBuf>, names: &[OsString]) -> PathBuf {
    let mut path = base.into();
    for name in names {
        path.push(name);
    }
    path
}

/// True for a name the kernel should never send and the daemon must never use: it would walk.
pub fn is_bad_name(name: &OsStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let b = name.as_bytes();
    b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0)
}
