//! The prefix table: a trie of legacy path components that finds the rule covering a path.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

use crate::config::Rule;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrieId(pub u32);

/// Index into [`PrefixTable::rules`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleId(pub u32);

/// The rule covering a legacy path, and the part of the path below that rule's `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub rule: RuleId,
    /// Components below the rule's `from`, joined by "/"; "" for the `from` itself.
    pub rest: String,
}

#[derive(Debug)]
pub struct PrefixTable {
    rules: Vec<Rule>,
    nodes: Vec<Node>,
}

#[derive(Debug)]
struct Node {
    path: String,
    rule: Option<RuleId>,
    // Sorted, so that directory listings of virtual parents come out in a stable order.
    children: BTreeMap<OsString, TrieId>,
}

impl PrefixTable {
    pub const ROOT: TrieId = TrieId(0);

    /// Expects validated rules: unique, normalised `from`s.
    pub fn new(rules: &[Rule]) -> PrefixTable {
        let mut table = PrefixTable {
            rules: rules.to_vec(),
            nodes: vec![Node {
                path: "/".to_string(),
                rule: None,
                children: BTreeMap::new(),
            }],
        };
        for (index, rule) in rules.iter().enumerate() {
            let mut node = Self::ROOT;
            for name in rule.components() {
                node = table.child_or_insert(node, name);
            }
            // A config file cannot hold anywhere near u32::MAX rules.
            table.node_mut(node).rule = Some(RuleId(index as u32));
        }
        table
    }

    fn child_or_insert(&mut self, parent: TrieId, name: &str) -> TrieId {
        if let Some(child) = self.child(parent, OsStr::new(name)) {
            return child;
        }
        let parent_path = &self.node(parent).path;
        let path = if parent_path == "/" {
            format!("/{name}")
        } else {
            format!("{parent_path}/{name}")
        };
        // Nodes are at most the components of all rules: far below u32::MAX.
        let id = TrieId(self.nodes.len() as u32);
        self.nodes.push(Node {
            path,
            rule: None,
            children: BTreeMap::new(),
        });
        self.node_mut(parent).children.insert(name.into(), id);
        id
    }

    // Ids are only made by this table, so indexing with them cannot go out of bounds.
    fn node(&self, id: TrieId) -> &Node {
        &self.nodes[id.0 as usize]
    }

    fn node_mut(&mut self, id: TrieId) -> &mut Node {
        &mut self.nodes[id.0 as usize]
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, id: RuleId) -> &Rule {
        &self.rules[id.0 as usize]
    }

    pub fn child(&self, node: TrieId, name: &OsStr) -> Option<TrieId> {
        self.node(node).children.get(name).copied()
    }

    /// Sorted by name.
    pub fn children(&self, node: TrieId) -> impl Iterator<Item = (&OsStr, TrieId)> + '_ {
        self.node(node)
            .children
            .iter()
            .map(|(name, id)| (name.as_os_str(), *id))
    }

    /// The rule whose `from` is exactly this node; None for a virtual parent.
    pub fn rule_at(&self, node: TrieId) -> Option<RuleId> {
        self.node(node).rule
    }

    /// The legacy path of this node, "/" for the root.
    pub fn path(&self, node: TrieId) -> &str {
        &self.node(node).path
    }

    /// Longest-prefix match, by whole components, of a normalised absolute legacy path.
    pub fn resolve(&self, path: &str) -> Option<Resolved> {
        let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let mut node = Self::ROOT;
        let mut best = self.rule_at(node).map(|rule| (rule, 0));
        for (depth, name) in components.iter().enumerate() {
            let Some(child) = self.child(node, OsStr::new(name)) else {
                break;
            };
            node = child;
            if let Some(rule) = self.rule_at(node) {
                best = Some((rule, depth + 1));
            }
        }
        best.map(|(rule, depth)| Resolved {
            rule,
            rest: components[depth..].join("/"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Action, Mode};
    use proptest::prelude::*;

    fn map(from: &str, to: &str) -> Rule {
        Rule {
            from: from.into(),
            action: Action::Map {
                to: to.into(),
                mode: Mode::ReadOnly,
            },
        }
    }

    fn deny(from: &str) -> Rule {
        Rule {
            from: from.into(),
            action: Action::Deny,
        }
    }

    fn resolved(rule: u32, rest: &str) -> Option<Resolved> {
        Some(Resolved {
            rule: RuleId(rule),
            rest: rest.into(),
        })
    }

    fn example() -> PrefixTable {
        PrefixTable::new(&[
            map("/", "/opt/jumpserver"),
            map("/keys", "/srv/jumpserver-keys"),
            deny("/keys/admin"),
        ])
    }

    #[test]
    fn longest_prefix_wins() {
        let table = example();
        assert_eq!(table.resolve("/"), resolved(0, ""));
        assert_eq!(table.resolve("/bin/ls"), resolved(0, "bin/ls"));
        assert_eq!(table.resolve("/keys"), resolved(1, ""));
        assert_eq!(
            table.resolve("/keys/host/id_rsa"),
            resolved(1, "host/id_rsa")
        );
        assert_eq!(table.resolve("/keys/admin"), resolved(2, ""));
        assert_eq!(table.resolve("/keys/admin/id_rsa"), resolved(2, "id_rsa"));
    }

    #[test]
    fn matches_whole_components_only() {
        let table = PrefixTable::new(&[map("/keys", "/k")]);
        assert_eq!(table.resolve("/keys/a"), resolved(0, "a"));
        assert_eq!(table.resolve("/keysafe"), None);
        assert_eq!(table.resolve("/keysafe/a"), None);
        assert_eq!(table.resolve("/key"), None);
        assert_eq!(table.resolve("/"), None);
    }

    #[test]
    fn deny_rule_is_found() {
        let table = example();
        let id = table.resolve("/keys/admin/x").map(|r| r.rule);
        assert_eq!(id.map(|id| &table.rule(id).action), Some(&Action::Deny));
    }

    #[test]
    fn root_rule_sits_on_root() {
        let table = PrefixTable::new(&[map("/", "/opt")]);
        assert_eq!(table.rule_at(PrefixTable::ROOT), Some(RuleId(0)));
        assert_eq!(table.path(PrefixTable::ROOT), "/");
        assert_eq!(table.children(PrefixTable::ROOT).count(), 0);
        assert_eq!(table.resolve("/a/b/c"), resolved(0, "a/b/c"));
    }

    #[test]
    fn intermediates_are_virtual() {
        let table = PrefixTable::new(&[map("/srv/app/data", "/data")]);
        assert_eq!(table.rule_at(PrefixTable::ROOT), None);
        let srv = table.child(PrefixTable::ROOT, OsStr::new("srv")).unwrap();
        let app = table.child(srv, OsStr::new("app")).unwrap();
        let data = table.child(app, OsStr::new("data")).unwrap();
        assert_eq!(table.rule_at(srv), None);
        assert_eq!(table.rule_at(app), None);
        assert_eq!(table.rule_at(data), Some(RuleId(0)));
        assert_eq!(table.path(srv), "/srv");
        assert_eq!(table.path(app), "/srv/app");
        assert_eq!(table.path(data), "/srv/app/data");
        assert_eq!(table.child(data, OsStr::new("x")), None);
        // A path through virtual parents only is covered by no rule.
        assert_eq!(table.resolve("/srv/app"), None);
        assert_eq!(table.resolve("/srv/other"), None);
        assert_eq!(table.resolve("/srv/app/data/x"), resolved(0, "x"));
    }

    #[test]
    fn children_are_sorted() {
        let table = PrefixTable::new(&[
            deny("/zeta"),
            deny("/alpha/x"),
            deny("/mid"),
            deny("/alpha/b"),
            deny("/Beta"),
        ]);
        let names: Vec<&OsStr> = table.children(PrefixTable::ROOT).map(|(n, _)| n).collect();
        assert_eq!(names, ["Beta", "alpha", "mid", "zeta"].map(OsStr::new));
        let alpha = table.child(PrefixTable::ROOT, OsStr::new("alpha")).unwrap();
        let names: Vec<&OsStr> = table.children(alpha).map(|(n, _)| n).collect();
        assert_eq!(names, ["b", "x"].map(OsStr::new));
        for (name, id) in table.children(PrefixTable::ROOT) {
            assert_eq!(table.child(PrefixTable::ROOT, name), Some(id));
        }
    }

    #[test]
    fn rules_keep_file_order() {
        let table = example();
        assert_eq!(table.rules().len(), 3);
        assert_eq!(table.rule(RuleId(1)).from, "/keys");
    }

    /// The specification of `resolve`: scan every rule, keep the longest matching `from`.
    fn naive_resolve(rules: &[Rule], path: &str) -> Option<Resolved> {
        let (index, rule) = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.from == "/" || r.from == path || path.starts_with(&format!("{}/", r.from))
            })
            .max_by_key(|(_, r)| r.from.len())?;
        let rest = path[rule.from.len()..].trim_start_matches('/');
        Some(Resolved {
            rule: RuleId(index as u32),
            rest: rest.to_string(),
        })
    }

    fn legacy_path(max_depth: usize) -> impl Strategy<Value = String> {
        // A small alphabet, with "k" a prefix of "ka" as a string but not as a component.
        let component = prop::sample::select(vec!["a", "b", "k", "ka"]);
        prop::collection::vec(component, 0..=max_depth).prop_map(|c| format!("/{}", c.join("/")))
    }

    fn rule_set() -> impl Strategy<Value = Vec<Rule>> {
        prop::collection::btree_set(legacy_path(3), 0..8).prop_flat_map(|froms| {
            let n = froms.len();
            (Just(froms), prop::collection::vec(any::<bool>(), n)).prop_map(|(froms, denies)| {
                froms
                    .into_iter()
                    .zip(denies)
                    .map(|(from, d)| if d { deny(&from) } else { map(&from, "/t") })
                    .collect()
            })
        })
    }

    proptest! {
        #[test]
        fn resolve_matches_naive_scan(
            rules in rule_set().prop_shuffle(),
            paths in prop::collection::vec(legacy_path(5), 1..16),
        ) {
            let table = PrefixTable::new(&rules);
            for path in &paths {
                prop_assert_eq!(table.resolve(path), naive_resolve(&rules, path), "path {}", path);
            }
            // Every rule sits at the trie node reached by its own `from`.
            for (index, rule) in rules.iter().enumerate() {
                let mut node = PrefixTable::ROOT;
                for name in rule.components() {
                    node = table.child(node, OsStr::new(name)).unwrap();
                }
                prop_assert_eq!(table.rule_at(node), Some(RuleId(index as u32)));
                prop_assert_eq!(table.path(node), rule.from.as_str());
            }
        }
    }
}
