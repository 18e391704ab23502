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
    // The daemon resolves names through `child`, `rule_at`, `children` and `path` (lookups,
    // listings, audit paths), so these tests check those. What a legacy path resolves to
    // end to end (longest prefix wins, deny, virtual parents) is checked through the core's
    // own lookups in tests/core (`longest_prefix_wins_through_lookups` and the reference
    // model `lookups_match_the_reference_model`).
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
            stage: Default::default(),
        }
    }

    fn deny(from: &str) -> Rule {
        Rule {
            from: from.into(),
            action: Action::Deny,
            stage: Default::default(),
        }
    }

    /// The trie node of a legacy path, walked one component at a time as lookups do.
    fn node_at(table: &PrefixTable, path: &str) -> Option<TrieId> {
        let mut node = PrefixTable::ROOT;
        for name in path.split('/').filter(|c| !c.is_empty()) {
            node = table.child(node, OsStr::new(name))?;
        }
        Some(node)
    }

    fn rule_of(table: &PrefixTable, path: &str) -> Option<RuleId> {
        node_at(table, path).and_then(|n| table.rule_at(n))
    }

    fn example() -> PrefixTable {
        PrefixTable::new(&[
            map("/", "/opt/jumpserver"),
            map("/keys", "/srv/jumpserver-keys"),
            deny("/keys/admin"),
        ])
    }

    #[test]
    fn each_rule_sits_at_its_from() {
        let table = example();
        assert_eq!(rule_of(&table, "/"), Some(RuleId(0)));
        assert_eq!(rule_of(&table, "/keys"), Some(RuleId(1)));
        assert_eq!(rule_of(&table, "/keys/admin"), Some(RuleId(2)));
        // Names no rule owns are not in the trie: a lookup goes to the real directory of the
        // rule above (here "/" for "/bin", "/keys" for "/keys/host").
        assert_eq!(node_at(&table, "/bin"), None);
        assert_eq!(node_at(&table, "/keys/host"), None);
        assert_eq!(node_at(&table, "/keys/admin/id_rsa"), None);
    }

    #[test]
    fn matches_whole_components_only() {
        let table = PrefixTable::new(&[map("/keys", "/k")]);
        assert_eq!(rule_of(&table, "/keys"), Some(RuleId(0)));
        assert_eq!(node_at(&table, "/keysafe"), None);
        assert_eq!(node_at(&table, "/key"), None);
        assert_eq!(table.rule_at(PrefixTable::ROOT), None);
    }

    #[test]
    fn deny_rule_is_found() {
        let table = example();
        let id = rule_of(&table, "/keys/admin");
        assert_eq!(id.map(|id| &table.rule(id).action), Some(&Action::Deny));
    }

    #[test]
    fn root_rule_sits_on_root() {
        let table = PrefixTable::new(&[map("/", "/opt")]);
        assert_eq!(table.rule_at(PrefixTable::ROOT), Some(RuleId(0)));
        assert_eq!(table.path(PrefixTable::ROOT), "/");
        assert_eq!(table.children(PrefixTable::ROOT).count(), 0);
        assert_eq!(node_at(&table, "/a"), None);
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
        assert_eq!(table.child(srv, OsStr::new("other")), None);
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

    /// Whether `from` is `path` or lies below it, by whole components.
    fn at_or_below(from: &str, path: &str) -> bool {
        path == "/" || from == path || from.starts_with(&format!("{path}/"))
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
        /// The trie against a linear scan of the rules, through the calls lookups make: a
        /// path other than "/" has a node exactly when a rule lies at or below it; the node holds the rule
        /// whose `from` is the path, its path, and as children (sorted) the next components
        /// of the rules below.
        #[test]
        fn trie_matches_a_scan_of_the_rules(
            rules in rule_set().prop_shuffle(),
            paths in prop::collection::vec(legacy_path(5), 1..16),
        ) {
            let table = PrefixTable::new(&rules);
            for path in &paths {
                // The root is always there (the mount root), with or without rules.
                let owned = path == "/" || rules.iter().any(|r| at_or_below(&r.from, path));
                let node = node_at(&table, path);
                prop_assert_eq!(node.is_some(), owned, "path {}", path);
                let Some(node) = node else { continue };
                let exact = rules.iter().position(|r| r.from == *path);
                prop_assert_eq!(table.rule_at(node), exact.map(|i| RuleId(i as u32)));
                prop_assert_eq!(table.path(node), path.as_str());
                let depth = path.split('/').filter(|c| !c.is_empty()).count();
                let below: std::collections::BTreeSet<&str> = rules
                    .iter()
                    .filter(|r| r.from != *path && at_or_below(&r.from, path))
                    .map(|r| r.components()[depth])
                    .collect();
                let children: Vec<&str> = table
                    .children(node)
                    .map(|(n, _)| n.to_str().unwrap())
                    .collect();
                prop_assert_eq!(children, below.into_iter().collect::<Vec<_>>(), "path {}", path);
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
