//! The filesystem core: resolves legacy names through the prefix table to real objects, serves
//! reads, refuses changes on read-only rules, and writes the audit events. Plain Rust: it knows
//! nothing of fuser (see `fuse.rs`), so most of it is testable without `/dev/fuse`.

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

mod write;

pub use write::SetAttr;

use crate::audit::{self, AuditLog, Event};
use crate::config::{Action, Mode};
use crate::creds::{AsCaller, GroupsCache};
use crate::node::{
    is_bad_name, join, lock, virtual_id, Found, Kind, Link, Node, NodeFd, NodeTable, OpenObject,
    ROOT_ID,
};
use crate::prefix::{PrefixTable, RuleId, TrieId};
pub use crate::rules::RuleRoot;
use crate::rules::Rules;
use crate::sys;

/// An errno for the caller. The OS errno passes through untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const EACCES: Errno = Errno(libc::EACCES);
    pub const EROFS: Errno = Errno(libc::EROFS);
    pub const EBADF: Errno = Errno(libc::EBADF);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const ENOTDIR: Errno = Errno(libc::ENOTDIR);
    pub const ENODATA: Errno = Errno(libc::ENODATA);
    pub const ERANGE: Errno = Errno(libc::ERANGE);
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const EMFILE: Errno = Errno(libc::EMFILE);
}

impl From<io::Error> for Errno {
    fn from(e: io::Error) -> Errno {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

pub type Result<T> = std::result::Result<T, Errno>;

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

/// An open file or directory.
#[derive(Debug)]
enum Handle {
    /// A regular file whose I/O the daemon serves.
    File(File),
    /// A regular file whose reads and writes the kernel does itself through the backing file
    /// it registered (passthrough), which pins the file: the daemon keeps no fd for it and
    /// reopens the object (pinned node fd) for the few operations that still come here.
    Passthrough(Arc<Node>),
    Dir {
        node: Arc<Node>,
        /// `None` for virtual directories.
        file: Option<File>,
        /// Where the kernel is in the listing; read from the fd as the kernel asks.
        state: Mutex<DirState>,
    },
}

impl OpenObject for Handle {
    fn path_fd(&self) -> Option<io::Result<OwnedFd>> {
        match self {
            Handle::File(file)
            | Handle::Dir {
                file: Some(file), ..
            } => Some(sys::path_fd_of(file)),
            _ => None,
        }
    }
}

/// A real directory's listing is read from its fd chunk by chunk as the kernel asks, so a
/// handle costs a chunk of memory, not a copy of the directory; the kernel's offsets are the
/// real filesystem's (`d_off`), so seekdir, rewinddir and changes during a listing behave as
/// on the real directory. Names the prefix table owns follow the real entries, at offsets
/// from `TAIL_OFFSET` on.
#[derive(Default)]
struct DirState {
    /// The offset just after the last entry handed out (where the fd is, past `pending`).
    pos: u64,
    /// Entries read from the fd but not yet handed out, each with its next offset.
    pending: VecDeque<(sys::DirEntry, u64)>,
}

impl std::fmt::Debug for DirState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirState")
            .field("pos", &self.pos)
            .field("pending", &self.pending.len())
            .finish()
    }
}

/// Offsets of the entries a pass-through directory gets from the prefix table: above every
/// real `d_off` (ext4's largest is 2^63 - 1).
const TAIL_OFFSET: u64 = 1 << 63;

/// Who opened a handle: every write through it is made with these credentials (a WRITE
/// request's own uid is not usable: writeback and mmap writes carry none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opener {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
}

/// An entry of the handle table.
struct Open {
    handle: Arc<Handle>,
    node: Arc<Node>,
    opener: Opener,
    /// Open flags of a file (the access mode is reused when the object is reopened).
    flags: i32,
}

/// How many handles the daemon grants, out of RLIMIT_NOFILE. The daemon keeps a reserve for
/// its own fds (FUSE devices, audit log, control socket, work in progress) and a minimum of
/// node fds; of the rest, root may use everything, other users all but a reserve for root,
/// and each non-root uid at most `per_uid`, so one user holding files open leaves the others
/// (and root) able to work. Node fds get what the handles leave.
#[derive(Debug)]
struct Budget {
    limit: usize,
    reserve: usize,
    /// Handles anybody may hold (root), and non-root users together.
    pool: usize,
    users_pool: usize,
    per_uid: usize,
    state: Mutex<BudgetState>,
}

#[derive(Debug, Default)]
struct BudgetState {
    total: usize,
    users: usize,
    /// Handles that hold an fd (passthrough files hold none).
    fds: usize,
    by_uid: HashMap<u32, usize>,
}

impl Budget {
    fn new(limit: usize) -> Budget {
        let reserve = 12 + limit / 64;
        let node_min = crate::node::MIN_BUDGET + limit / 64;
        let pool = limit.saturating_sub(reserve + node_min).max(8);
        let users_pool = pool - (4 + limit / 128).min(pool / 2);
        let per_uid = users_pool - (users_pool / 8).max(4).min(users_pool / 2);
        Budget {
            limit,
            reserve,
            pool,
            users_pool,
            per_uid,
            state: Mutex::new(BudgetState::default()),
        }
    }

    /// Node fds that fit beside the handles' fds (half the limit at most, as before).
    fn node_budget(&self, handle_fds: usize) -> usize {
        (self.limit / 2).min(self.limit.saturating_sub(self.reserve + handle_fds))
    }

    /// Grants `uid` one more handle, or EMFILE; returns the node fd budget left.
    fn admit(&self, uid: u32, holds_fd: bool) -> Result<usize> {
        let mut st = lock(&self.state);
        let mine = st.by_uid.get(&uid).copied().unwrap_or(0);
        let full = if uid == 0 {
            st.total >= self.pool
        } else {
            st.users >= self.users_pool || mine >= self.per_uid
        };
        if full {
            return Err(Errno::EMFILE);
        }
        st.total += 1;
        if uid != 0 {
            st.users += 1;
            *st.by_uid.entry(uid).or_insert(0) += 1;
        }
        st.fds += usize::from(holds_fd);
        Ok(self.node_budget(st.fds))
    }

    /// A handle closed; returns the node fd budget.
    fn release(&self, uid: u32, held_fd: bool) -> usize {
        let mut st = lock(&self.state);
        st.total = st.total.saturating_sub(1);
        if uid != 0 {
            st.users = st.users.saturating_sub(1);
            if let Some(n) = st.by_uid.get_mut(&uid) {
                *n -= 1;
                if *n == 0 {
                    st.by_uid.remove(&uid);
                }
            }
        }
        if held_fd {
            st.fds = st.fds.saturating_sub(1);
        }
        self.node_budget(st.fds)
    }

    /// A handle gave its fd up (passthrough); returns the node fd budget.
    fn fd_released(&self) -> usize {
        let mut st = lock(&self.state);
        st.fds = st.fds.saturating_sub(1);
        self.node_budget(st.fds)
    }
}

/// Behaviour chosen at mount time.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsOptions {
    /// `-o dev`: the kernel lets device nodes on the mount be opened. Creating them follows
    /// the caller's own privilege either way (`mknod` in fs/write.rs), so nothing reads it.
    pub allow_devices: bool,
}

/// The mounted filesystem's state.
pub struct Fs {
    #[allow(dead_code)]
    options: FsOptions,
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
    audit: Arc<AuditLog>,
    /// Audited operations by op and result name, for `relocfs status`.
    counts: Mutex<HashMap<(&'static str, &'static str), u64>>,
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
    ) -> io::Result<Fs> {
        let rules = Arc::new(Rules::new(0, table, roots));
        let budget = Budget::new(sys::nofile_limit());
        let fs = Fs {
            options,
            groups: (sys::geteuid() == 0).then(GroupsCache::default),
            mountpoint,
            rules: RwLock::new(Arc::clone(&rules)),
            // Open handles take their fds first; node fds get what is left (see `Budget`).
            nodes: NodeTable::new(budget.node_budget(0)),
            handles: Mutex::new(HashMap::new()),
            budget,
            next_fh: AtomicU64::new(1),
            audit,
            counts: Mutex::new(HashMap::new()),
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
    ) -> io::Result<Vec<OsString>> {
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

    pub fn node_count(&self) -> usize {
        self.nodes.count()
    }

    pub fn node_fds(&self) -> usize {
        self.nodes.open_fds()
    }

    /// Audited operations so far, by op and result, sorted.
    pub fn operation_counts(&self) -> Vec<(String, String, u64)> {
        let mut rows: Vec<_> = lock(&self.counts)
            .iter()
            .map(|(&(op, result), &n)| (op.to_string(), result.to_string(), n))
            .collect();
        rows.sort();
        rows
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
        self.nodes.get(id).ok_or(Errno::EBADF)
    }

    // ---- lookups ------------------------------------------------------------------------

    /// Resolves `name` in directory `parent`: the prefix table first (so the longest prefix
    /// wins without string matching), then the real directory one component at a time.
    pub fn lookup(&self, caller: Caller, parent: u64, name: &OsStr) -> Result<Attr> {
        let parent = self.node(parent)?;
        let result = self.lookup_inner(&parent, name);
        match &result {
            Err(e) if *e == Errno::ENOENT || *e == Errno::EACCES => {
                self.record(caller, "lookup", &parent, Some(name), None, Err(e));
            }
            _ => {}
        }
        result
    }

    fn lookup_inner(&self, parent: &Arc<Node>, name: &OsStr) -> Result<Attr> {
        if is_bad_name(name) {
            return Err(Errno::ENOENT);
        }
        let link = || Link {
            parent: Some(Arc::clone(parent)),
            name: name.to_os_string(),
        };
        if let Some(child) = parent.trie.and_then(|t| parent.rules.table.child(t, name)) {
            return self.lookup_trie_child(parent, child, link());
        }
        match parent.kind {
            Kind::Virtual => Err(Errno::ENOENT),
            Kind::Real { rule, .. } => {
                if !parent.is_dir() {
                    return Err(Errno::ENOTDIR);
                }
                let dir = self.fd(parent)?.ok_or(Errno::ENOENT)?;
                // An object the kernel already knows costs one fstatat: no fd to open and
                // close again (warm walks, `git status`, readdirplus of a known directory).
                let seen = sys::stat_child(dir.as_fd(), name)?;
                let identity = (parent.rules.generation, rule, seen.st_dev, seen.st_ino);
                if let Some(node) = self.nodes.add_lookup_known(identity) {
                    return Ok(self.attr_of(&node, seen));
                }
                let fd = sys::open_child(dir.as_fd(), name)?;
                let stat = sys::fstat(fd.as_fd())?;
                Ok(self.register(parent, rule, fd, stat, None, link()))
            }
        }
    }

    fn lookup_trie_child(&self, parent: &Arc<Node>, child: TrieId, link: Link) -> Result<Attr> {
        let rules = &parent.rules;
        match rules.table.rule_at(child) {
            Some(rule) => match rules.root_of(rule) {
                None => Err(Errno::EACCES), // a deny rule
                Some(root) => {
                    let fd = root.fd()?;
                    let stat = sys::fstat(fd.as_fd())?;
                    Ok(self.register(parent, rule, fd, stat, Some(child), link))
                }
            },
            None => {
                // A parent of a deeper rule: the real directory when the covering rule has one,
                // otherwise a virtual directory, so the deeper rule stays reachable.
                if let (Kind::Real { rule, .. }, Some(dir)) = (&parent.kind, self.fd(parent)?) {
                    let rule = *rule;
                    if let Ok(fd) = sys::open_child(dir.as_fd(), &link.name) {
                        let stat = sys::fstat(fd.as_fd())?;
                        if stat.st_mode & libc::S_IFMT == libc::S_IFDIR {
                            return Ok(self.register(parent, rule, fd, stat, Some(child), link));
                        }
                    }
                }
                let id = virtual_id(rules.generation, child);
                let node = self.nodes.virtual_node(id, || {
                    Node::new(id, Kind::Virtual, Arc::clone(rules), Some(child), link)
                });
                Ok(self.attr_of(&node, self.virtual_stat()))
            }
        }
    }

    /// Registers a real object found below `parent`, under `parent`'s rules, as a node with
    /// one more kernel lookup, and returns its attributes.
    fn register(
        &self,
        parent: &Arc<Node>,
        rule: RuleId,
        fd: OwnedFd,
        stat: libc::stat,
        trie: Option<TrieId>,
        link: Link,
    ) -> Attr {
        let node = self.nodes.found(Found {
            rules: Arc::clone(&parent.rules),
            rule,
            fd,
            stat,
            trie,
            link,
        });
        self.attr_of(&node, stat)
    }

    pub fn forget(&self, id: u64, n: u64) {
        self.nodes.forget(id, n);
    }

    // ---- attributes ---------------------------------------------------------------------

    pub fn getattr(&self, id: u64) -> Result<Attr> {
        let node = self.node(id)?;
        let stat = match self.fd(&node)? {
            Some(fd) => sys::fstat(fd.as_fd())?,
            None => self.virtual_stat(),
        };
        Ok(self.attr_of(&node, stat))
    }

    /// The node id is what the kernel reports as `st_ino` (fuser ties them), so it is the real
    /// inode number unless that was taken. The root's id is fixed at 1; its `getattr` answer
    /// still carries the real number, which the kernel shows to `stat`.
    fn attr_of(&self, node: &Node, mut stat: libc::stat) -> Attr {
        if node.id != ROOT_ID {
            stat.st_ino = node.id;
        }
        Attr { id: node.id, stat }
    }

    fn virtual_stat(&self) -> libc::stat {
        let mut st = sys::zeroed_stat();
        st.st_mode = libc::S_IFDIR | 0o555;
        st.st_nlink = 2;
        st.st_blksize = 4096;
        let since = self
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        st.st_mtime = since.as_secs() as i64;
        st.st_mtime_nsec = i64::from(since.subsec_nanos());
        st.st_atime = st.st_mtime;
        st.st_atime_nsec = st.st_mtime_nsec;
        st.st_ctime = st.st_mtime;
        st.st_ctime_nsec = st.st_mtime_nsec;
        st
    }

    pub fn readlink(&self, caller: Caller, id: u64) -> Result<Vec<u8>> {
        let node = self.node(id)?;
        let result = match self.fd(&node) {
            Ok(Some(fd)) => sys::readlink(fd.as_fd()).map_err(Errno::from),
            Ok(None) => Err(Errno::EINVAL),
            Err(e) => Err(e),
        };
        self.record(
            caller,
            "readlink",
            &node,
            None,
            None,
            result.as_ref().map(|_| ()),
        );
        result
    }

    pub fn statfs(&self, id: u64) -> Result<libc::statvfs> {
        let node = self.node(id)?;
        match self.fd(&node)? {
            Some(fd) => Ok(sys::fstatvfs(fd.as_fd())?),
            // A virtual directory has no filesystem of its own: report the first target's.
            None => match node.rules.first_root() {
                Some(root) => Ok(sys::fstatvfs(root.fd()?.as_fd())?),
                None => Err(Errno::ENOENT),
            },
        }
    }

    pub fn getxattr(&self, id: u64, name: &OsStr, size: u32) -> Result<Vec<u8>> {
        let node = self.node(id)?;
        match self.fd(&node)? {
            Some(fd) => Ok(sys::getxattr(fd.as_fd(), name, size as usize)?),
            None => Err(Errno::ENODATA),
        }
    }

    /// The names of a node's extended attributes, as the caller would see them natively:
    /// `trusted.*` names only for root. The daemon lists as root, and the kernel passes the
    /// list on unfiltered, so the filtering is ours. With `size` 0, only the length counts.
    pub fn listxattr(&self, caller: Caller, id: u64, size: u32) -> Result<Vec<u8>> {
        let node = self.node(id)?;
        let Some(fd) = self.fd(&node)? else {
            return Ok(Vec::new());
        };
        if caller.uid == 0 {
            return Ok(sys::listxattr(fd.as_fd(), size as usize)?);
        }
        let needed = sys::listxattr(fd.as_fd(), 0)?.len();
        let all = sys::listxattr(fd.as_fd(), needed)?;
        let visible: Vec<u8> = all
            .split_inclusive(|&b| b == 0)
            .filter(|name| !name.starts_with(b"trusted."))
            .flatten()
            .copied()
            .collect();
        if size != 0 && visible.len() > size as usize {
            return Err(Errno::ERANGE);
        }
        Ok(visible)
    }

    /// `access(2)`: the kernel already checked the mode bits (`default_permissions`); what is
    /// left is the one thing it does not know, that a read-only rule refuses writes.
    pub fn access(&self, id: u64, mask: i32) -> Result<()> {
        let node = self.node(id)?;
        if mask & libc::W_OK != 0 {
            self.writable(&node)?;
        }
        Ok(())
    }

    // ---- files --------------------------------------------------------------------------

    pub fn open(&self, caller: Caller, id: u64, flags: i32) -> Result<u64> {
        let node = self.node(id)?;
        let result = self.open_inner(caller, &node, flags);
        self.record(
            caller,
            "open",
            &node,
            None,
            Some(audit::access_flags(flags)),
            result.as_ref().map(|_| ()),
        );
        result
    }

    fn open_inner(&self, caller: Caller, node: &Arc<Node>, flags: i32) -> Result<u64> {
        if wants_write(flags) {
            self.writable(node)?;
        }
        let Kind::Real { format, .. } = node.kind else {
            return Err(Errno(libc::EISDIR));
        };
        if format != libc::S_IFREG {
            // Devices and fifos are opened by the kernel itself; never through the daemon.
            return Err(Errno::EPERM);
        }
        let fd = self.fd(node)?.ok_or(Errno::EPERM)?;
        let opener = self.opener(caller);
        let admitted = self.admit(caller.uid)?;
        let file = {
            let _as_caller = self.as_caller(caller, None)?;
            sys::reopen(fd.as_fd(), flags & OPEN_FLAGS_KEPT)
        };
        match file {
            Ok(file) => Ok(self.add_handle(admitted, node, Handle::File(file), opener, flags)),
            Err(e) => {
                self.nodes.set_budget(self.budget.release(caller.uid, true));
                Err(e.into())
            }
        }
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let io = self.io_file(fh)?;
        let file = io.file()?;
        let mut buf = vec![0u8; size as usize];
        let mut filled = 0;
        // A short read is only the end of the file if the next read returns nothing.
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }

    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> Result<i64> {
        let io = self.io_file(fh)?;
        Ok(sys::lseek(io.file()?, offset, whence)?)
    }

    pub fn release(&self, fh: u64) {
        self.close_handle(fh);
    }

    // ---- directories --------------------------------------------------------------------

    pub fn opendir(&self, caller: Caller, id: u64, flags: i32) -> Result<u64> {
        let node = self.node(id)?;
        let result = self.opendir_inner(caller, &node, flags);
        self.record(
            caller,
            "opendir",
            &node,
            None,
            None,
            result.as_ref().map(|_| ()),
        );
        result
    }

    fn opendir_inner(&self, caller: Caller, node: &Arc<Node>, flags: i32) -> Result<u64> {
        if !node.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let fd = self.fd(node)?;
        let admitted = self.admit(caller.uid)?;
        let file = match fd {
            Some(fd) => match sys::reopen(
                fd.as_fd(),
                libc::O_RDONLY | libc::O_DIRECTORY | (flags & libc::O_NOATIME),
            ) {
                Ok(file) => Some(file),
                Err(e) => {
                    self.nodes.set_budget(self.budget.release(caller.uid, true));
                    return Err(e.into());
                }
            },
            None => None,
        };
        let handle = Handle::Dir {
            node: Arc::clone(node),
            file,
            state: Mutex::new(DirState::default()),
        };
        Ok(self.add_handle(admitted, node, handle, self.opener(caller), flags))
    }

    /// Calls `add(entry, next_offset)` for the entries from `offset` on until it returns true
    /// (the kernel's buffer is full).
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&ListEntry, u64) -> bool,
    ) -> Result<()> {
        self.each_entry(fh, offset, |_, entry, next| add(entry, next))
    }

    /// Like `readdir`, with each entry's attributes: every entry but `.` and `..` becomes a
    /// node with one kernel lookup, as the kernel counts it. An entry that does not fit the
    /// kernel's buffer is not sent, so its lookup is taken back. A denied entry is sent
    /// without attributes (id 0), so the name is listed but every access still comes here.
    pub fn readdirplus(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&ListEntry, u64, &Attr) -> bool,
    ) -> Result<()> {
        self.each_entry(fh, offset, |node, entry, next| {
            if entry.name == "." || entry.name == ".." {
                let mut stat = sys::zeroed_stat();
                stat.st_ino = entry.ino;
                stat.st_mode = libc::S_IFDIR;
                let attr = Attr {
                    id: entry.ino,
                    stat,
                };
                return add(entry, next, &attr);
            }
            match self.lookup_inner(node, &entry.name) {
                Ok(attr) => {
                    let full = add(entry, next, &attr);
                    if full {
                        self.nodes.forget(attr.id, 1);
                    }
                    full
                }
                Err(Errno::EACCES) => {
                    let mut stat = sys::zeroed_stat();
                    stat.st_mode = entry.format;
                    add(entry, next, &Attr { id: 0, stat })
                }
                // Gone since it was read: leave it out.
                Err(_) => false,
            }
        })
    }

    /// Hands the entries of an open directory from `offset` on to `add(dir, entry, next)`
    /// until it returns true (full; that entry is handed out again next time).
    fn each_entry(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&Arc<Node>, &ListEntry, u64) -> bool,
    ) -> Result<()> {
        let handle = self.handle(fh)?;
        let Handle::Dir { node, file, state } = &*handle else {
            return Err(Errno::ENOTDIR);
        };
        let parent_id = node.link().parent.map_or(ROOT_ID, |p| p.id);
        let Some(file) = file else {
            // A virtual directory: `.`, `..` and the prefix table's children, by index.
            let mut entries = vec![
                ListEntry {
                    ino: node.id,
                    format: libc::S_IFDIR,
                    name: ".".into(),
                },
                ListEntry {
                    ino: parent_id,
                    format: libc::S_IFDIR,
                    name: "..".into(),
                },
            ];
            entries.extend(self.table_entries(node));
            for (i, entry) in entries.iter().enumerate().skip(offset as usize) {
                if add(node, entry, i as u64 + 1) {
                    break;
                }
            }
            return Ok(());
        };
        let tail = |from: u64, add: &mut dyn FnMut(&Arc<Node>, &ListEntry, u64) -> bool| {
            for (i, entry) in self
                .table_entries(node)
                .iter()
                .enumerate()
                .skip(from as usize)
            {
                if add(node, entry, TAIL_OFFSET + i as u64 + 1) {
                    break;
                }
            }
        };
        if offset >= TAIL_OFFSET {
            tail(offset - TAIL_OFFSET, &mut add);
            return Ok(());
        }
        let mut st = lock(state);
        if offset == 0 || offset != st.pos {
            st.pending.clear();
            sys::lseek(file, offset as i64, libc::SEEK_SET)?;
            st.pos = offset;
        }
        let trie = node.trie;
        let table = &node.rules.table;
        loop {
            let Some((raw, next)) = st.pending.front() else {
                let chunk = sys::read_dir_chunk(file)?;
                if chunk.is_empty() {
                    tail(0, &mut add);
                    return Ok(());
                }
                st.pending.extend(chunk);
                continue;
            };
            let next = *next;
            // Names the prefix table owns are its entries (listed in the tail), not these.
            let shadowed = trie.is_some_and(|t| table.child(t, &raw.name).is_some());
            if !shadowed {
                let entry = self.list_entry(node, parent_id, raw);
                if add(node, &entry, next) {
                    return Ok(());
                }
            }
            st.pos = next;
            st.pending.pop_front();
        }
    }

    /// A real directory entry as listed: `.` and `..` carry node ids, and a type the
    /// filesystem does not report is looked up.
    fn list_entry(&self, node: &Arc<Node>, parent_id: u64, raw: &sys::DirEntry) -> ListEntry {
        let ino = match raw.name.as_encoded_bytes() {
            b"." => node.id,
            b".." => parent_id,
            _ => raw.ino,
        };
        let format = match dtype_to_format(raw.kind) {
            Some(f) => f,
            None => self
                .fd(node)
                .ok()
                .flatten()
                .and_then(|fd| sys::open_child(fd.as_fd(), &raw.name).ok())
                .and_then(|fd| sys::fstat(fd.as_fd()).ok())
                .map_or(libc::S_IFREG, |st| st.st_mode & libc::S_IFMT),
        };
        ListEntry {
            ino,
            format,
            name: raw.name.clone(),
        }
    }

    /// The prefix table's children of a directory, as entries.
    fn table_entries(&self, node: &Arc<Node>) -> Vec<ListEntry> {
        let Some(t) = node.trie else {
            return Vec::new();
        };
        let table = &node.rules.table;
        table
            .children(t)
            .map(|(name, child)| {
                let ino = match table.rule_at(child).and_then(|r| node.rules.root_of(r)) {
                    Some(root) => root.stat.st_ino,
                    None => virtual_id(node.rules.generation, child),
                };
                ListEntry {
                    ino,
                    format: libc::S_IFDIR,
                    name: name.to_os_string(),
                }
            })
            .collect()
    }

    /// Runs `f` on the real file behind an open handle (for kernel passthrough, and ioctls):
    /// the handle's own file, or for a passthrough handle the object reopened with the
    /// handle's access mode.
    pub fn with_open_file<R>(&self, fh: u64, f: impl FnOnce(&File) -> R) -> Option<R> {
        let io = self.io_file(fh).ok()?;
        Some(f(io.file().ok()?))
    }

    pub fn releasedir(&self, fh: u64) {
        self.close_handle(fh);
    }

    // ---- changes ------------------------------------------------------------------------

    /// Whether a node's rule lets changes through.
    fn writable(&self, node: &Node) -> Result<()> {
        match node.rule().and_then(|r| node.rules.root_of(r)) {
            Some(root) if root.mode == Mode::ReadWrite => Ok(()),
            _ => Err(Errno::EROFS),
        }
    }

    /// Acts as the caller until the guard drops (see `creds`); a no-op for a daemon that is
    /// not root, which can only be its own user.
    fn as_caller(&self, caller: Caller, umask: Option<u32>) -> Result<Option<AsCaller>> {
        let Some(groups) = &self.groups else {
            return Ok(None);
        };
        // Root acting as root: nothing to switch (root's rights do not depend on its groups);
        // a create still needs the caller's umask.
        if caller.uid == 0 && caller.gid == 0 && umask.is_none() {
            return Ok(None);
        }
        let groups = groups.groups(caller.pid);
        AsCaller::new(caller.uid, caller.gid, &groups, umask)
            .map(Some)
            .map_err(|e| {
                log::error!("cannot act as uid {} gid {}: {e}", caller.uid, caller.gid);
                Errno::from(e)
            })
    }

    // ---- handles and audit --------------------------------------------------------------

    /// The credentials of `caller`, kept with a handle for the writes made through it.
    fn opener(&self, caller: Caller) -> Opener {
        Opener {
            uid: caller.uid,
            gid: caller.gid,
            groups: self
                .groups
                .as_ref()
                .map(|g| g.groups(caller.pid))
                .unwrap_or_default(),
        }
    }

    /// Acts as a handle's opener until the guard drops (root's opener: nothing to switch).
    fn as_opener(&self, opener: &Opener) -> Result<Option<AsCaller>> {
        if self.groups.is_none() || (opener.uid == 0 && opener.gid == 0) {
            return Ok(None);
        }
        AsCaller::new(opener.uid, opener.gid, &opener.groups, None)
            .map(Some)
            .map_err(|e| {
                log::error!("cannot act as uid {} gid {}: {e}", opener.uid, opener.gid);
                Errno::from(e)
            })
    }

    /// Acts as the opener of handle `fh` (the kernel keeps the creds of whoever registers a
    /// passthrough backing file, and does that file's I/O with them).
    pub fn as_handle_opener(&self, fh: u64) -> Result<Option<AsCaller>> {
        let opener = self.handle_opener(fh)?;
        self.as_opener(&opener)
    }

    /// The credentials handle `fh` was opened with.
    pub fn handle_opener(&self, fh: u64) -> Result<Opener> {
        lock(&self.handles)
            .get(&fh)
            .map(|o| o.opener.clone())
            .ok_or(Errno::EBADF)
    }

    /// Takes one handle of `uid`'s share (EMFILE past it), closing node fds if the handles
    /// now need them. Returns the proof to hand to `add_handle`.
    fn admit(&self, uid: u32) -> Result<Admitted> {
        let nodes = self.budget.admit(uid, true)?;
        self.nodes.set_budget(nodes);
        Ok(Admitted(()))
    }

    fn add_handle(
        &self,
        _: Admitted,
        node: &Arc<Node>,
        handle: Handle,
        opener: Opener,
        flags: i32,
    ) -> u64 {
        let handle = Arc::new(handle);
        if matches!(
            &*handle,
            Handle::File(_) | Handle::Dir { file: Some(_), .. }
        ) {
            let object: Arc<dyn OpenObject> = Arc::clone(&handle) as Arc<dyn OpenObject>;
            node.add_open(Arc::downgrade(&object));
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(
            fh,
            Open {
                handle,
                node: Arc::clone(node),
                opener,
                flags,
            },
        );
        fh
    }

    /// The kernel registered a backing file for handle `fh` (passthrough): from now on it
    /// does the I/O itself, so the daemon drops its fd and keeps the node's fd pinned for the
    /// operations that still come here (fsync, fallocate, lseek, ioctl...).
    pub fn to_passthrough(&self, fh: u64) {
        let mut handles = lock(&self.handles);
        let Some(open) = handles.get_mut(&fh) else {
            return;
        };
        if !matches!(&*open.handle, Handle::File(_)) {
            return;
        }
        open.node.pin();
        open.handle = Arc::new(Handle::Passthrough(Arc::clone(&open.node)));
        drop(handles);
        self.nodes.set_budget(self.budget.fd_released());
    }

    fn close_handle(&self, fh: u64) {
        let Some(open) = lock(&self.handles).remove(&fh) else {
            return;
        };
        let held_fd = !matches!(&*open.handle, Handle::Passthrough(_));
        if let Handle::Passthrough(node) = &*open.handle {
            self.nodes.unpin(node);
        }
        drop(open.handle);
        self.nodes
            .set_budget(self.budget.release(open.opener.uid, held_fd));
    }

    fn handle(&self, fh: u64) -> Result<Arc<Handle>> {
        lock(&self.handles)
            .get(&fh)
            .map(|o| Arc::clone(&o.handle))
            .ok_or(Errno::EBADF)
    }

    /// The file behind a file handle for I/O, with the handle's opener.
    fn io_file(&self, fh: u64) -> Result<IoFile> {
        let (handle, opener, flags) = {
            let handles = lock(&self.handles);
            let open = handles.get(&fh).ok_or(Errno::EBADF)?;
            (Arc::clone(&open.handle), open.opener.clone(), open.flags)
        };
        let reopened = match &*handle {
            Handle::File(_) => None,
            Handle::Passthrough(node) => {
                let fd = self.fd(node)?.ok_or(Errno::EBADF)?;
                // As the daemon: the open was the permission check (a file created 0444 and
                // opened for writing stays writable through its fd).
                Some(sys::reopen(fd.as_fd(), flags & libc::O_ACCMODE)?)
            }
            Handle::Dir { .. } => return Err(Errno::EBADF),
        };
        Ok(IoFile {
            handle,
            reopened,
            opener,
        })
    }

    /// The legacy path, real target and rule of `node` (plus `name` below it).
    pub fn describe(
        &self,
        node: &Arc<Node>,
        name: Option<&OsStr>,
    ) -> (PathBuf, Option<PathBuf>, Option<String>) {
        let (base, mut names) = node.names_below_trie();
        if let Some(name) = name {
            names.push(name.to_os_string());
        }
        let rules = &base.rules;
        let table = &rules.table;
        let trie_path = base.trie.map_or("/", |t| table.path(t));
        let below_root = trie_path.trim_start_matches('/');
        let base_path = if below_root.is_empty() {
            self.mountpoint.clone()
        } else {
            self.mountpoint.join(below_root)
        };
        let legacy = join(base_path, &names);
        // A lookup below a trie node may hit a deny rule or a deeper rule: name it.
        if let (Some(t), Some(name)) = (base.trie, name) {
            if node.trie.is_some() {
                if let Some(child) = table.child(t, name) {
                    if let Some(rule) = table.rule_at(child) {
                        let from = table.rule(rule).from.clone();
                        let target = rules.root_of(rule).map(|r| r.to.clone());
                        return (legacy, target, Some(from));
                    }
                }
            }
        }
        let Some(rule) = base.rule() else {
            return (legacy, None, None);
        };
        let from = &table.rule(rule).from;
        let target = match &table.rule(rule).action {
            Action::Map { to, .. } => {
                let below = trie_path
                    .strip_prefix(from.as_str())
                    .unwrap_or("")
                    .trim_start_matches('/');
                let base_target = if below.is_empty() {
                    to.clone()
                } else {
                    to.join(below)
                };
                Some(join(base_target, &names))
            }
            Action::Deny => None,
        };
        (legacy, target, Some(from.clone()))
    }

    fn record(
        &self,
        caller: Caller,
        op: &'static str,
        node: &Arc<Node>,
        name: Option<&OsStr>,
        flags: Option<&'static str>,
        result: std::result::Result<(), &Errno>,
    ) {
        self.record_change(
            caller,
            Audited {
                op,
                node,
                name,
                flags,
                dest: None,
                detail: None,
            },
            result,
        );
    }

    fn record_change(
        &self,
        caller: Caller,
        what: Audited<'_>,
        result: std::result::Result<(), &Errno>,
    ) {
        let outcome = match result {
            Ok(()) => "ok",
            Err(e) => audit::errno_name(e.0),
        };
        *lock(&self.counts).entry((what.op, outcome)).or_insert(0) += 1;
        if !self.audit.is_enabled() {
            return;
        }
        let (path, target, map) = self.describe(what.node, what.name);
        let dest = what
            .dest
            .map(|(node, name)| self.describe(node, Some(name)).0);
        self.audit.record(Event {
            op: what.op,
            path,
            target,
            map,
            flags: what.flags,
            dest,
            detail: what.detail,
            pid: caller.pid,
            uid: caller.uid,
            gid: caller.gid,
            result: result.map_err(|e| e.0),
            reason: None,
        });
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }
}

/// Proof that a handle was admitted by the budget (see `Fs::admit`).
struct Admitted(());

/// A file to do I/O on for a handle: its own, or the object reopened for a passthrough one.
struct IoFile {
    handle: Arc<Handle>,
    reopened: Option<File>,
    opener: Opener,
}

impl IoFile {
    fn file(&self) -> Result<&File> {
        match (&*self.handle, &self.reopened) {
            (Handle::File(file), _) | (_, Some(file)) => Ok(file),
            _ => Err(Errno::EBADF),
        }
    }
}

/// What an audit event says about an operation.
struct Audited<'a> {
    op: &'static str,
    node: &'a Arc<Node>,
    /// The entry below `node` the operation named, if any.
    name: Option<&'a OsStr>,
    flags: Option<&'static str>,
    /// The second path of a rename or link: directory node and new name.
    dest: Option<(&'a Arc<Node>, &'a OsStr)>,
    detail: Option<OsString>,
}

/// Open flags passed on to the real file; O_CREAT/O_EXCL only apply to `create`.
const OPEN_FLAGS_KEPT: i32 = libc::O_ACCMODE
    | libc::O_TRUNC
    | libc::O_APPEND
    | libc::O_DIRECT
    | libc::O_DSYNC
    | libc::O_SYNC
    | libc::O_NOATIME
    | libc::O_LARGEFILE;

fn wants_write(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & (libc::O_TRUNC | libc::O_CREAT) != 0
}

fn dtype_to_format(dtype: u8) -> Option<u32> {
    Some(match dtype {
        libc::DT_REG => libc::S_IFREG,
        libc::DT_DIR => libc::S_IFDIR,
        libc::DT_LNK => libc::S_IFLNK,
        libc::DT_FIFO => libc::S_IFIFO,
        libc::DT_SOCK => libc::S_IFSOCK,
        libc::DT_CHR => libc::S_IFCHR,
        libc::DT_BLK => libc::S_IFBLK,
        _ => return None,
    })
}

/// The root node of a generation of rules: the real directory of a rule on "/", or a virtual
/// directory listing the top-level rules.
fn root_node(nodes: &NodeTable, rules: Arc<Rules>) -> io::Result<Node> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Grants handles to `uid` until EMFILE; returns how many.
    fn fill(budget: &Budget, uid: u32) -> usize {
        let mut n = 0;
        while budget.admit(uid, true).is_ok() {
            n += 1;
        }
        n
    }

    #[test]
    fn one_uid_gets_its_share_and_leaves_room_for_others_and_root() {
        let budget = Budget::new(128);
        assert_eq!(fill(&budget, 1000), budget.per_uid);
        assert_eq!(budget.per_uid, 87);
        // Another user gets the rest of the users' part, root its reserve on top.
        assert_eq!(fill(&budget, 1001), budget.users_pool - budget.per_uid);
        assert_eq!(fill(&budget, 0), budget.pool - budget.users_pool);
        // Node fds keep their minimum, and the daemon its reserve.
        let fds = lock(&budget.state).fds;
        assert!(budget.node_budget(fds) >= crate::node::MIN_BUDGET);
        assert!(fds + budget.node_budget(fds) + budget.reserve <= 128);
        // Closing gives the share back.
        budget.release(1000, true);
        assert!(budget.admit(1000, true).is_ok());
        assert_eq!(budget.admit(1000, true), Err(Errno::EMFILE));
    }

    #[test]
    fn shares_hold_at_any_limit() {
        for limit in [0, 1, 16, 64, 128, 256, 1024, 20_000, 1 << 20] {
            let b = Budget::new(limit);
            assert!(
                b.per_uid <= b.users_pool && b.users_pool <= b.pool,
                "limit {limit}"
            );
            assert!(b.per_uid > 0, "limit {limit}");
            if limit >= 128 {
                assert!(b.pool + b.reserve <= limit, "limit {limit}");
                assert!(b.users_pool - b.per_uid >= 4, "limit {limit}");
            }
        }
    }
}
