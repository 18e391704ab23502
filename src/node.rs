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
//! - every real node holds an `O_PATH` fd while the number of open node fds stays within a
//!   budget (what RLIMIT_NOFILE leaves after the daemon's reserve and the open handles' fds);
//!   past it, fds of ordinary nodes are closed oldest-first and reopened on demand: from an
//!   open file of the object if there is one (so an open but unlinked file stays reachable),
//!   else from the parent's fd by name, checked to be the same object (ESTALE otherwise).
//!   Rule roots and their parents keep theirs while their generation of rules is current;
//!   a node pinned by open handles that hold no file of their own (passthrough) keeps its fd.
//!
//! Lock order: maps, then the fd queue, then one node's fd slot; none is held across I/O.

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// An open file or directory of a node's object, through which the object can be reached
/// again when its name no longer leads to it (unlinked, renamed elsewhere).
pub trait OpenObject: Send + Sync + std::fmt::Debug {
    /// A new `O_PATH` fd of the object, if this handle holds a file.
    fn path_fd(&self) -> Option<io::Result<OwnedFd>>;
}
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::prefix::{RuleId, TrieId};
use crate::rules::Rules;

/// The error of a node (or rule root) that its name no longer leads to: ESTALE for the
/// caller (see `fs::Error::Stale`), told apart from an ESTALE of the real filesystem.
pub fn stale() -> io::Error {
    io::Error::other(Stale)
}

/// Whether `e` is a `stale()` error.
pub fn is_stale(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Stale>())
}

#[derive(Debug)]
struct Stale;

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stale node: its name leads to another object now")
    }
}

impl std::error::Error for Stale {}

/// The kernel's fixed id for the mount root.
pub const ROOT_ID: u64 = 1;
/// Virtual directories get `VIRTUAL_BASE + generation << 32 + trie id`: stable while a
/// generation of rules lives, never shared between generations.
pub const VIRTUAL_BASE: u64 = 1 << 62;

/// The node id of a virtual directory.
pub fn virtual_id(generation: u32, trie: TrieId) -> u64 {
    VIRTUAL_BASE + (u64::from(generation) << 32) + u64::from(trie.0)
}
/// Entries the fd queue may hold beyond twice the open fds before it drops dead ones.
const QUEUE_SLACK: usize = 1024;
/// At or below this many nodes the table counts as drained (the root and a few pinned ones).
const DRAINED: usize = 16;
/// Freed nodes between two hand-backs of free memory (a trim costs about a millisecond).
const TRIM_EVERY: usize = 8192;
/// Below this many slots the node maps are not worth shrinking.
const SHRINK_MIN: usize = 4096;
/// The fewest node fds the table is ever asked to make do with.
pub const MIN_BUDGET: usize = 8;
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
        fd: FdSlot,
        dev: u64,
        ino: u64,
        /// `S_IFMT` bits of the object: only regular files and directories are reopened.
        format: u32,
    },
}

/// A node's fd, shared with the operations using it, so closing it under fd pressure never
/// pulls it from under a running call.
pub type NodeFd = Arc<OwnedFd>;

/// The fd a real node holds, or none after eviction; counted in the table's open-fd total.
#[derive(Debug)]
pub struct FdSlot {
    fd: Mutex<Option<NodeFd>>,
    open: Arc<AtomicUsize>,
}

impl FdSlot {
    fn new(fd: OwnedFd, open: &Arc<AtomicUsize>) -> FdSlot {
        open.fetch_add(1, Ordering::Relaxed);
        FdSlot {
            fd: Mutex::new(Some(Arc::new(fd))),
            open: Arc::clone(open),
        }
    }

    fn get(&self) -> Option<NodeFd> {
        lock(&self.fd).clone()
    }

    /// Puts a reopened fd in an empty slot; returns the slot's fd (ours or a racing one's).
    fn fill(&self, fd: OwnedFd) -> NodeFd {
        let mut slot = lock(&self.fd);
        if let Some(existing) = &*slot {
            return Arc::clone(existing);
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        let fd = Arc::new(fd);
        *slot = Some(Arc::clone(&fd));
        fd
    }

    /// Closes the fd (once its current users are done); false if it was closed already.
    fn evict(&self) -> bool {
        if lock(&self.fd).take().is_some() {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return true;
        }
        false
    }
}

impl Drop for FdSlot {
    fn drop(&mut self) {
        if lock(&self.fd).is_some() {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
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
    /// Open handles that hold no file of their own and so need the node's fd kept open.
    pins: AtomicUsize,
    /// Open handles holding a file of the object (see `OpenObject`).
    open: Mutex<Vec<Weak<dyn OpenObject>>>,
}

impl Node {
    pub fn new(id: u64, kind: Kind, rules: Arc<Rules>, trie: Option<TrieId>, link: Link) -> Node {
        Node {
            id,
            kind,
            rules,
            trie,
            link: Mutex::new(link),
            pins: AtomicUsize::new(0),
            open: Mutex::new(Vec::new()),
        }
    }

    /// An open handle with a file of this object: the node's fd can always be had from it.
    pub fn add_open(&self, object: Weak<dyn OpenObject>) {
        let mut open = lock(&self.open);
        open.retain(|w| w.strong_count() > 0);
        open.push(object);
    }

    /// A handle holding no file of its own needs the node's fd until `unpin`.
    pub fn pin(&self) {
        self.pins.fetch_add(1, Ordering::Relaxed);
    }

    /// An `O_PATH` fd of the object from one of its open handles.
    fn fd_from_open(&self) -> Option<io::Result<OwnedFd>> {
        let open: Vec<_> = lock(&self.open).iter().filter_map(Weak::upgrade).collect();
        open.iter().find_map(|o| o.path_fd())
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

    /// Whether the node's fd may be closed under fd pressure: not while a handle pins it, and
    /// not for rule roots and the real directories the prefix table passes through while
    /// their generation is current (they are not found by name, and are few).
    fn evictable(&self) -> bool {
        matches!(self.kind, Kind::Real { .. })
            && self.pins.load(Ordering::Relaxed) == 0
            && (self.trie.is_none() || self.rules.is_retired())
    }

    /// Whether this node is the target directory of its own rule.
    fn is_rule_root(&self) -> bool {
        let rule = self.rule();
        rule.is_some() && self.trie.and_then(|t| self.rules.table.rule_at(t)) == rule
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

    /// [`Node::names_below_trie`] in one buffer: the names' bytes and where each ends (from
    /// this node up), so an audit event's two paths cost no allocation per name.
    pub fn tail_below_trie(self: &Arc<Node>) -> (Arc<Node>, Tail) {
        let mut tail = Tail::default();
        let mut node = Arc::clone(self);
        while node.trie.is_none() {
            let parent = {
                let link = lock(&node.link);
                match &link.parent {
                    Some(parent) => {
                        tail.bytes
                            .extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(
                                link.name.as_os_str(),
                            ));
                        tail.ends.push(tail.bytes.len());
                        Some(Arc::clone(parent))
                    }
                    None => None,
                }
            };
            match parent {
                Some(parent) => node = parent,
                None => break,
            }
        }
        (node, tail)
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

/// Names below a node with a prefix-table position, gathered bottom-up (see
/// [`Node::tail_below_trie`]).
#[derive(Debug, Default)]
pub struct Tail {
    bytes: Vec<u8>,
    /// End of each name in `bytes`, the deepest first.
    ends: Vec<usize>,
}

impl Tail {
    /// The names, outermost first.
    pub fn names(&self) -> impl Iterator<Item = &OsStr> + '_ {
        (0..self.ends.len()).rev().map(|i| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            let bytes = &self.bytes[start..self.ends[i]];
            // The bytes of each name came whole from one `OsStr`.
            std::os::unix::ffi::OsStrExt::from_bytes(bytes)
        })
    }

    /// Bytes a path made of these names needs beyond its base (names and separators).
    pub fn len(&self) -> usize {
        self.bytes.len() + self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// Drops queue entries of nodes that are gone: a `Weak` keeps its node's memory allocated.
fn compact(queue: &mut VecDeque<Weak<Node>>) {
    queue.retain(|w| w.strong_count() > 0);
    queue.shrink_to_fit();
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
    /// Nodes freed since memory was last handed back to the system.
    freed_since_trim: usize,
}

/// All nodes the kernel knows, by id and by real identity, and their fds.
pub struct NodeTable {
    maps: Mutex<Maps>,
    /// Node fds open now, against `fd_budget`.
    open_fds: Arc<AtomicUsize>,
    fd_budget: AtomicUsize,
    /// Evictable nodes in the order they got their fd: the oldest go first.
    fd_queue: Mutex<VecDeque<Weak<Node>>>,
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
    /// A table that keeps at most `fd_budget` node fds open (at least `MIN_BUDGET`).
    pub fn new(fd_budget: usize) -> NodeTable {
        NodeTable {
            maps: Mutex::new(Maps {
                next_synthetic: SYNTHETIC_BASE,
                ..Maps::default()
            }),
            open_fds: Arc::new(AtomicUsize::new(0)),
            fd_budget: AtomicUsize::new(fd_budget.max(MIN_BUDGET)),
            fd_queue: Mutex::new(VecDeque::new()),
        }
    }

    /// Wraps an fd for a node of this table (counted against the budget).
    pub fn slot(&self, fd: OwnedFd) -> FdSlot {
        FdSlot::new(fd, &self.open_fds)
    }

    /// Node fds open now.
    pub fn open_fds(&self) -> usize {
        self.open_fds.load(Ordering::Relaxed)
    }

    /// The fd of a real node (`None` for a virtual directory), reopened from its parent by
    /// name if it was closed under fd pressure. A name that now leads to another object (or
    /// to nothing) means the node is stale: ESTALE, and the kernel looks the name up again.
    pub fn fd(&self, node: &Arc<Node>) -> io::Result<Option<NodeFd>> {
        let Kind::Real {
            fd: slot, dev, ino, ..
        } = &node.kind
        else {
            return Ok(None);
        };
        if let Some(fd) = slot.get() {
            return Ok(Some(fd));
        }
        let fd = match node.fd_from_open() {
            Some(fd) => fd?,
            None if node.is_rule_root() => {
                let root = node.rule().and_then(|r| node.rules.root_of(r));
                root.ok_or_else(stale)?.fd()?
            }
            None => {
                let link = node.link();
                let parent = link.parent.ok_or_else(stale)?;
                let parent_fd = self.fd(&parent)?.ok_or_else(stale)?;
                crate::sys::open_child(parent_fd.as_fd(), &link.name).map_err(|e| {
                    match e.raw_os_error() {
                        Some(libc::ENOENT) | Some(libc::ENOTDIR) => stale(),
                        _ => e,
                    }
                })?
            }
        };
        let st = crate::sys::fstat(fd.as_fd())?;
        if (st.st_dev, st.st_ino) != (*dev, *ino) {
            return Err(stale());
        }
        if node.rules.is_retired() && node.pins.load(Ordering::Relaxed) == 0 {
            // An old generation's node: used for this call, not kept.
            return Ok(Some(Arc::new(fd)));
        }
        let fd = slot.fill(fd);
        self.remember(node);
        Ok(Some(fd))
    }

    /// Queues a node that just got an fd for eviction, and evicts if over budget.
    fn remember(&self, node: &Arc<Node>) {
        let mut queue = lock(&self.fd_queue);
        if node.evictable() {
            queue.push_back(Arc::downgrade(node));
        }
        let open = self.open_fds.load(Ordering::Relaxed);
        if queue.len() > 2 * open + QUEUE_SLACK {
            compact(&mut queue);
        }
        self.evict_over_budget(&mut queue);
    }

    /// Closes node fds oldest-first while more are open than the budget allows, a batch at a
    /// time so the scan is rare. Pinned nodes leave the queue; `unpin` puts them back.
    fn evict_over_budget(&self, queue: &mut VecDeque<Weak<Node>>) {
        let open = self.open_fds.load(Ordering::Relaxed);
        let budget = self.fd_budget.load(Ordering::Relaxed);
        if open <= budget {
            return;
        }
        let mut to_close = open - budget + budget / 8;
        while to_close > 0 {
            let Some(weak) = queue.pop_front() else {
                break;
            };
            if let Some(node) = weak.upgrade() {
                if let Kind::Real { fd, .. } = &node.kind {
                    if node.evictable() && fd.evict() {
                        to_close -= 1;
                    }
                }
            }
        }
    }

    /// Sets how many node fds may be open (open handles take their fds first) and closes
    /// the oldest ones if more are open now.
    pub fn set_budget(&self, budget: usize) {
        self.fd_budget
            .store(budget.max(MIN_BUDGET), Ordering::Relaxed);
        if self.open_fds.load(Ordering::Relaxed) > budget {
            self.evict_over_budget(&mut lock(&self.fd_queue));
        }
    }

    /// A handle that pinned `node` closed: its fd may be closed again under pressure.
    pub fn unpin(&self, node: &Arc<Node>) {
        if node.pins.fetch_sub(1, Ordering::Relaxed) != 1 {
            return;
        }
        match &node.kind {
            // An old generation's node keeps no fd once nothing needs it (see `fd`).
            Kind::Real { fd, .. } if node.rules.is_retired() => {
                fd.evict();
            }
            _ => self.remember(node),
        }
    }

    /// A reload replaced the rules: close the fds of every node of older generations now
    /// (they are reopened if still used), so old generations hold no fds of their own.
    pub fn retire_old(&self, old_root: Option<Arc<Node>>) {
        let mut old: Vec<Arc<Node>> = lock(&self.maps)
            .by_id
            .values()
            .filter(|e| e.node.rules.is_retired())
            .map(|e| Arc::clone(&e.node))
            .collect();
        old.extend(old_root);
        for node in old {
            if let Kind::Real { fd, .. } = &node.kind {
                if node.evictable() {
                    fd.evict();
                }
            }
        }
        compact(&mut lock(&self.fd_queue));
    }

    /// Sets the root, which the kernel reaches without a lookup and never forgets; a reload
    /// replaces it. Returns the previous root.
    pub fn set_root(&self, node: Node) -> Option<Arc<Node>> {
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
        let old = old.map(|e| e.node);
        if let Some(identity) = old.as_ref().and_then(|n| n.identity()) {
            if maps.by_identity.get(&identity) == Some(&node.id)
                && node.identity() != Some(identity)
            {
                maps.by_identity.remove(&identity);
            }
        }
        old
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

    /// Counts one more kernel lookup on the node of `identity`, if the kernel knows it.
    pub fn add_lookup_known(&self, identity: Identity) -> Option<Arc<Node>> {
        let mut maps = lock(&self.maps);
        let id = *maps.by_identity.get(&identity)?;
        let entry = maps.by_id.get_mut(&id)?;
        entry.lookups += 1;
        Some(Arc::clone(&entry.node))
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
                fd: self.slot(found.fd),
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
        drop(maps);
        if node.rules.is_retired() {
            // Found below an old generation's directory: its fd is not kept (see `fd`).
            if let Kind::Real { fd, .. } = &node.kind {
                fd.evict();
            }
        } else {
            self.remember(&node);
        }
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
        // After the kernel forgets a big walk (e.g. drop_caches), give the memory back: hash
        // maps never shrink by themselves, and freed nodes stay in malloc's arenas.
        let len = maps.by_id.len();
        if maps.by_id.capacity() > SHRINK_MIN && len < maps.by_id.capacity() / 4 {
            maps.by_id.shrink_to(len * 2);
            maps.by_identity.shrink_to(len * 2);
        }
        maps.freed_since_trim += 1;
        // Also when the kernel has let go of (nearly) everything: the last nodes of a big
        // forget would otherwise stay in malloc's arenas until the next one.
        let drained = maps.by_id.len() <= DRAINED && maps.freed_since_trim >= DRAINED;
        if maps.freed_since_trim >= TRIM_EVERY || drained {
            maps.freed_since_trim = 0;
            drop(maps);
            compact(&mut lock(&self.fd_queue));
            crate::sys::release_free_memory();
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
