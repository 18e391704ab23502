//! Audit recording: what an operation did, described as legacy path, real target and rule,
//! counted for `relocfs status` and written to the audit log.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::sync::Arc;

use super::{Caller, Error, Fs};
use crate::audit::{self, Event};
use crate::config::Action;
use crate::node::{join, lock, Node};

impl Fs {
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
        let outcome = match result {
            Ok(()) => "ok",
            Err(e) => audit::errno_name(e.errno()),
        };
        *lock(&self.counts).entry((what.op, outcome)).or_insert(0) += 1;
        if let Some(metrics) = self.metrics.get() {
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
