//! Name resolution and attributes: lookup, forget, getattr, readlink, statfs and access.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::SystemTime;

use super::{Attr, Caller, Error, Fs, Result};
use crate::node::{is_bad_name, virtual_id, Found, Kind, Link, Node, ROOT_ID};
use crate::prefix::{RuleId, TrieId};
use crate::stage::{self, Verdict};
use crate::sys;

impl Fs {
    /// Resolves `name` in directory `parent`: the prefix table first (so the longest prefix
    /// wins without string matching), then the real directory one component at a time.
    pub fn lookup(&self, caller: Caller, parent: u64, name: &OsStr) -> Result<Attr> {
        let parent = self.node(parent)?;
        let result = self
            .stage_gate(caller, &parent, Some(name))
            .and_then(|()| self.lookup_inner(&parent, name));
        match &result {
            Err(e) if matches!(e.errno(), libc::ENOENT | libc::EACCES) => {
                self.record(caller, "lookup", &parent, Some(name), None, Err(e));
            }
            _ => {}
        }
        result
    }

    /// The rule lifecycle's one check per lookup, open and create: the access is counted for
    /// the rule's last access (an atomic), and that is all while the rule serves (no lock, no
    /// allocation). `name`: a lookup or create of `name` in `node`; `None`: `node` itself.
    ///
    /// The rule is the one `name` is the root of, or else the one `node` lies below; names
    /// in a virtual directory belong to no rule.
    pub(super) fn stage_gate(
        &self,
        caller: Caller,
        node: &Arc<Node>,
        name: Option<&OsStr>,
    ) -> Result<()> {
        let rules = &node.rules;
        let rule_root = match (node.trie, name) {
            (Some(t), Some(name)) => rules
                .table
                .child(t, name)
                .and_then(|c| rules.table.rule_at(c)),
            _ => None,
        };
        let rule = match (rule_root, &node.kind) {
            (Some(rule), _) => rule,
            (None, Kind::Real { rule, .. }) => *rule,
            (None, Kind::Virtual) => return Ok(()),
        };
        let Some(state) = rules.stage(rule) else {
            return Ok(());
        };
        let now = stage::now_secs();
        state.touch(now);
        if state.is_plain() {
            return Ok(());
        }
        match stage::decide(&state.lifecycle(), now, caller.uid, caller.pid) {
            Verdict::Serve => Ok(()),
            Verdict::Warn => {
                let (legacy, real, from) = self.describe(node, name);
                stage::warn(&stage::Warning {
                    pid: caller.pid,
                    legacy: &legacy,
                    real: real.as_deref(),
                    rule: from.as_deref().unwrap_or(""),
                });
                Ok(())
            }
            Verdict::Brownout => Err(Error::Brownout),
            Verdict::Retired => Err(Error::Retired),
        }
    }

    /// Each current rule's `from` and lifecycle state, in config order.
    pub fn stage_states(&self) -> Vec<(String, Arc<stage::RuleState>)> {
        let rules = self.current_rules();
        (0..rules.table.rules().len())
            .filter_map(|i| {
                let id = RuleId(i as u32);
                let state = rules.stage(id)?;
                Some((rules.table.rule(id).from.clone(), Arc::clone(state)))
            })
            .collect()
    }

    /// The names directly below the root whose cached kernel entries cover the rule on
    /// `from`: its first component, or every name in the root for a rule on "/".
    pub fn names_covering(&self, from: &str) -> Vec<std::ffi::OsString> {
        if let Some(first) = from.split('/').find(|c| !c.is_empty()) {
            return vec![first.into()];
        }
        let rules = self.current_rules();
        let mut names: Vec<_> = rules
            .table
            .children(crate::prefix::PrefixTable::ROOT)
            .map(|(n, _)| n.to_os_string())
            .collect();
        let root = rules
            .table
            .rule_at(crate::prefix::PrefixTable::ROOT)
            .and_then(|r| rules.root_of(r));
        if let Some(dir) = root
            .and_then(|root| root.fd().ok())
            .and_then(|fd| sys::reopen(fd.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY).ok())
        {
            if let Ok(entries) = sys::read_dir_all(&dir) {
                names.extend(entries.into_iter().map(|e| e.name));
            }
        }
        names
    }

    pub(super) fn lookup_inner(&self, parent: &Arc<Node>, name: &OsStr) -> Result<Attr> {
        if is_bad_name(name) {
            return Err(Error::BadNameLookup);
        }
        let link = || Link {
            parent: Some(Arc::clone(parent)),
            name: name.to_os_string(),
        };
        if let Some(child) = parent.trie.and_then(|t| parent.rules.table.child(t, name)) {
            return self.lookup_trie_child(parent, child, link());
        }
        match parent.kind {
            Kind::Virtual => Err(Error::NotInTable),
            Kind::Real { rule, .. } => {
                if !parent.is_dir() {
                    return Err(Error::NotDir);
                }
                let dir = self.fd(parent)?.ok_or(Error::NotInTable)?;
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

    pub(super) fn lookup_trie_child(
        &self,
        parent: &Arc<Node>,
        child: TrieId,
        link: Link,
    ) -> Result<Attr> {
        let rules = &parent.rules;
        match rules.table.rule_at(child) {
            Some(rule) => match rules.root_of(rule) {
                None => Err(Error::DenyRule),
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
    pub(super) fn register(
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
    pub(super) fn attr_of(&self, node: &Node, mut stat: libc::stat) -> Attr {
        if node.id != ROOT_ID {
            stat.st_ino = node.id;
        }
        Attr { id: node.id, stat }
    }

    pub(super) fn virtual_stat(&self) -> libc::stat {
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
            Ok(Some(fd)) => sys::readlink(fd.as_fd()).map_err(Error::from),
            Ok(None) => Err(Error::NotSymlink),
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
                None => Err(Error::NoTarget),
            },
        }
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
}

impl stage::Edges for Fs {
    fn stage_states(&self) -> Vec<(String, Arc<stage::RuleState>)> {
        Fs::stage_states(self)
    }

    fn names_covering(&self, from: &str) -> Vec<std::ffi::OsString> {
        Fs::names_covering(self, from)
    }
}
