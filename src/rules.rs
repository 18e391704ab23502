//! One generation of the rules: the prefix table with the real directories its rules point to,
//! opened once. A reload builds a new generation; nodes keep the one they were found under, so
//! open files and working directories stay valid while new lookups see the new rules.
//!
//! A generation that a reload replaced is retired: it closes the fds of its rule roots at
//! once (250 reloads must not cost 250 sets of fds until the kernel forgets every old inode).
//! Nodes still using it reach a root again by its path, checked to be the same directory.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::Mode;
use crate::node::lock;
use crate::prefix::{PrefixTable, RuleId};
use crate::stage::RuleState;

/// A rule's real directory, pinned by an `O_PATH` fd opened at start (or reload).
pub struct RuleRoot {
    pub fd: OwnedFd,
    pub to: PathBuf,
    pub mode: Mode,
    pub stat: libc::stat,
}

/// A rule root inside a generation: what it is, and its fd while the generation is current.
pub struct Root {
    pub to: PathBuf,
    pub mode: Mode,
    pub stat: libc::stat,
    fd: Mutex<Option<Arc<OwnedFd>>>,
}

impl Root {
    fn new(root: RuleRoot) -> Root {
        Root {
            to: root.to,
            mode: root.mode,
            stat: root.stat,
            fd: Mutex::new(Some(Arc::new(root.fd))),
        }
    }

    /// An `O_PATH` fd of the root: the pinned one, or (retired generation) the directory at
    /// the configured path if it is still the same one (ESTALE otherwise).
    pub fn fd(&self) -> io::Result<OwnedFd> {
        if let Some(fd) = &*lock(&self.fd) {
            return fd.try_clone();
        }
        let fd = crate::sys::open_dir_path(&self.to)?;
        let st = crate::sys::fstat(fd.as_fd())?;
        if (st.st_dev, st.st_ino) != (self.stat.st_dev, self.stat.st_ino) {
            return Err(crate::node::stale());
        }
        Ok(fd)
    }
}

pub struct Rules {
    /// Counts reloads; part of virtual directory ids so generations never share an id.
    pub generation: u32,
    pub table: PrefixTable,
    /// Indexed by `RuleId`; `None` for deny rules.
    pub roots: Vec<Option<Root>>,
    /// Indexed by `RuleId`: each rule's lifecycle and last access, shared with every other
    /// generation that has a rule on the same `from` (see `stage.rs`).
    stages: Vec<Arc<RuleState>>,
    /// Set when a reload replaced this generation (see the module comment).
    retired: AtomicBool,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("generation", &self.generation)
            .field("rules", &self.table.rules().len())
            .finish()
    }
}

impl Rules {
    pub fn new(generation: u32, table: PrefixTable, roots: Vec<Option<RuleRoot>>) -> Rules {
        let stages = table
            .rules()
            .iter()
            .map(|rule| crate::stage::state_for(&rule.from, &rule.stage))
            .collect();
        Rules {
            generation,
            table,
            roots: roots.into_iter().map(|r| r.map(Root::new)).collect(),
            stages,
            retired: AtomicBool::new(false),
        }
    }

    pub fn root_of(&self, rule: RuleId) -> Option<&Root> {
        self.roots.get(rule.0 as usize).and_then(Option::as_ref)
    }

    /// The lifecycle state of `rule`.
    pub fn stage(&self, rule: RuleId) -> Option<&Arc<RuleState>> {
        self.stages.get(rule.0 as usize)
    }

    /// The first mapped rule's directory: what a virtual directory reports for statfs.
    pub fn first_root(&self) -> Option<&Root> {
        self.roots.iter().flatten().next()
    }

    /// A reload replaced this generation: close the roots' fds.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        for root in self.roots.iter().flatten() {
            lock(&root.fd).take();
        }
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }
}
