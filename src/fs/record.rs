//! Audit recording: what an operation did, described as legacy path, real target and rule,
//! counted for `relocfs status` and written to the audit log.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Caller, Error, Fs};
use crate::audit::schema::Op;
use crate::audit::{self, Event};
use crate::config::Action;
use crate::node::{lock, Node};

impl Fs {
    /// The legacy path, real target and rule of `node` (plus `name` below it). The names below
    /// the node's nearest prefix-table position are gathered once, into one buffer, and each
    /// path is built at its final size.
    pub fn describe(
        &self,
        node: &Arc<Node>,
        name: Option<&OsStr>,
    ) -> (PathBuf, Option<PathBuf>, Option<String>) {
        let (base, tail) = node.tail_below_trie();
        let rules = &base.rules;
        let table = &rules.table;
        let trie_path = base.trie.map_or("/", |t| table.path(t));
        let below_root = trie_path.trim_start_matches('/');
        let extra = tail.len() + name.map_or(0, |n| n.len() + 1);
        let build = |base: &Path, below: &str| {
            let mut path = PathBuf::with_capacity(base.as_os_str().len() + below.len() + 1 + extra);
            path.push(base);
            if !below.is_empty() {
                path.push(below);
            }
            for n in tail.names() {
                path.push(n);
            }
            if let Some(name) = name {
                path.push(name);
            }
            path
        };
        let legacy = build(&self.mountpoint, below_root);
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
                Some(build(to, below))
            }
            Action::Deny => None,
        };
        (legacy, target, Some(from.clone()))
    }

    pub(super) fn record(
        &self,
        caller: Caller,
        op: &'static str,
        node: &Arc<Node>,
        name: Option<&OsStr>,
        flags: Option<&'static str>,
        result: std::result::Result<(), &Error>,
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

    pub(super) fn record_change(
        &self,
        caller: Caller,
        what: Audited<'_>,
        result: std::result::Result<(), &Error>,
    ) {
        self.counts.add(what.op, result.map_err(|e| e.errno()));
        if let Some(metrics) = self.metrics.get() {
            let outcome = match result {
                Ok(()) => "ok",
                Err(e) => audit::errno_name(e.errno()),
            };
            metrics.count(what.node, what.name, outcome);
        }
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
            result: result.map_err(|e| e.errno()),
            reason: result.err().and_then(|e| e.reason()),
        });
    }
}

/// What an audit event says about an operation.
pub(super) struct Audited<'a> {
    pub(super) op: &'static str,
    pub(super) node: &'a Arc<Node>,
    /// The entry below `node` the operation named, if any.
    pub(super) name: Option<&'a OsStr>,
    pub(super) flags: Option<&'static str>,
    /// The second path of a rename or link: directory node and new name.
    pub(super) dest: Option<(&'a Arc<Node>, &'a OsStr)>,
    pub(super) detail: Option<OsString>,
}

/// Highest errno counted in the lock-free table (Linux's errnos end at 133, EHWPOISON).
const ERRNO_SLOTS: usize = 134;

/// Audited operations by op and result, for `relocfs status`: one atomic counter per known op
/// and errno (slot 0: success), so counting takes no lock and threads serving opens in
/// parallel never wait on each other here. An op or errno outside the table (none today) goes
/// to a small locked map.
pub(super) struct Counts {
    table: Box<[[AtomicU64; ERRNO_SLOTS]]>,
    other: Mutex<HashMap<(&'static str, &'static str), u64>>,
}

impl Default for Counts {
    fn default() -> Counts {
        Counts {
            table: (0..Op::ALL.len())
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            other: Mutex::new(HashMap::new()),
        }
    }
}

impl Counts {
    pub(super) fn add(&self, op: &'static str, result: std::result::Result<(), i32>) {
        let slot = match result {
            Ok(()) => Some(0),
            Err(errno) => usize::try_from(errno)
                .ok()
                .filter(|&e| e > 0 && e < ERRNO_SLOTS),
        };
        let row = Op::ALL.iter().position(|o| o.as_str() == op);
        match (row, slot) {
            (Some(row), Some(slot)) => {
                self.table[row][slot].fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                let outcome = match result {
                    Ok(()) => "ok",
                    Err(errno) => audit::errno_name(errno),
                };
                *lock(&self.other).entry((op, outcome)).or_insert(0) += 1;
            }
        }
    }

    /// Every op and result counted at least once, sorted; results named as the audit log
    /// names them (errnos sharing a name are summed).
    pub(super) fn rows(&self) -> Vec<(String, String, u64)> {
        let mut rows: BTreeMap<(&'static str, &'static str), u64> = BTreeMap::new();
        for (op, counters) in Op::ALL.iter().zip(self.table.iter()) {
            for (slot, n) in counters.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                let outcome = if slot == 0 {
                    "ok"
                } else {
                    audit::errno_name(slot as i32)
                };
                *rows.entry((op.as_str(), outcome)).or_insert(0) += n;
            }
        }
        for (&key, &n) in lock(&self.other).iter() {
            *rows.entry(key).or_insert(0) += n;
        }
        rows.into_iter()
            .map(|((op, result), n)| (op.to_string(), result.to_string(), n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lock-free table counts what the locked map counted: by op and result name, sorted,
    /// unknown ops and odd errnos included.
    #[test]
    fn counts_by_op_and_result() {
        let counts = Counts::default();
        counts.add("open", Ok(()));
        counts.add("open", Ok(()));
        counts.add("open", Err(libc::EACCES));
        counts.add("lookup", Err(libc::ENOENT));
        counts.add("made-up", Ok(()));
        counts.add("open", Err(-5));
        counts.add("open", Err(100_000));
        let rows = counts.rows();
        let name = |e| audit::errno_name(e).to_string();
        let row = |op: &str, result: String, n| (op.to_string(), result, n);
        let mut expected = vec![
            row("lookup", "ENOENT".into(), 1),
            row("made-up", "ok".into(), 1),
            row("open", "EACCES".into(), 1),
            row("open", "ok".into(), 2),
        ];
        // Out-of-table errnos keep their (generic) names.
        for e in [-5, 100_000] {
            expected.push(row("open", name(e), 1));
        }
        expected.sort();
        let mut merged: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (op, result, n) in expected {
            *merged.entry((op, result)).or_insert(0) += n;
        }
        let expected: Vec<_> = merged.into_iter().map(|((o, r), n)| (o, r, n)).collect();
        assert_eq!(rows, expected);
    }

    /// Threads counting at once lose nothing.
    #[test]
    fn parallel_counting_is_exact() {
        let counts = Counts::default();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        counts.add("open", Ok(()));
                    }
                });
            }
        });
        assert_eq!(counts.rows(), vec![("open".into(), "ok".into(), 40_000)]);
    }
}
