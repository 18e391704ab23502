//! One generation of the rules: the prefix table with the real directories its rules point to,
//! opened once. A reload builds a new generation; nodes keep the one they were found under, so
//! open files and working directories stay valid while new lookups see the new rules.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use crate::config::Mode;
use crate::prefix::{PrefixTable, RuleId};

/// A rule's real directory, pinned by an `O_PATH` fd opened at start (or reload).
pub struct RuleRoot {
    pub fd: OwnedFd,
    pub to: PathBuf,
    pub mode: Mode,
    pub stat: libc::stat,
}

pub struct Rules {
    /// Counts reloads; part of virtual directory ids so generations never share an id.
    pub generation: u32,
    pub table: PrefixTable,
    /// Indexed by `RuleId`; `None` for deny rules.
    pub roots: Vec<Option<RuleRoot>>,
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
    pub fn root_of(&self, rule: RuleId) -> Option<&RuleRoot> {
        self.roots.get(rule.0 as usize).and_then(Option::as_ref)
    }

    /// The first mapped rule's directory: what a virtual directory reports for statfs.
    pub fn first_root(&self) -> Option<&RuleRoot> {
        self.roots.iter().flatten().next()
    }
}
