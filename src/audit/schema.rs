//! The audit log's wire format, declared once: the schema version, the field names and the
//! operation names. The writer serialises with these names and `relocfs report` reads with
//! them, so renaming a field or an op here renames it on both sides.
//!
//! A line is one JSON object; an event line has its fields in the order of [`EVENT_FIELDS`]
//! (optional ones left out when empty); a `dropped` line has `v, ts, host, op, count`; a
//! `suppressed` line `v, ts, host, op, uid, count, since` (`host` left out if unreadable).
//! `docs/audit-schema.json` publishes the same as a JSON Schema.

/// Written as `v` in every line; bump when a field changes meaning or a reader could misread
/// a line. Readers skip (and count) lines of a newer version rather than misread them, so a
/// field that is only *added* (readers ignore fields they do not know) keeps the version:
/// `tgid`, `host`, `unit`, `user_unit` and `container` were added in version 1.
/// `docs/audit-schema.json` is the contract, checked against real lines by the tests.
pub const VERSION: u32 = 1;

/// Field names of a line.
pub mod field {
    pub const V: &str = "v";
    pub const TS: &str = "ts";
    pub const OP: &str = "op";
    pub const PATH: &str = "path";
    pub const TARGET: &str = "target";
    pub const MAP: &str = "map";
    pub const FLAGS: &str = "flags";
    pub const DEST: &str = "dest";
    pub const DETAIL: &str = "detail";
    pub const PID: &str = "pid";
    pub const UID: &str = "uid";
    pub const GID: &str = "gid";
    pub const COMM: &str = "comm";
    pub const EXE: &str = "exe";
    pub const CMDLINE: &str = "cmdline";
    pub const RESULT: &str = "result";
    pub const REASON: &str = "reason";
    pub const COUNT: &str = "count";
    pub const ESCAPED: &str = "escaped";
    pub const TRUNCATED: &str = "truncated";
    pub const SINCE: &str = "since";
    pub const TGID: &str = "tgid";
    pub const HOST: &str = "host";
    pub const UNIT: &str = "unit";
    pub const USER_UNIT: &str = "user_unit";
    pub const CONTAINER: &str = "container";
}

/// The fields of an event line, in the order they are written.
pub const EVENT_FIELDS: [&str; 25] = [
    field::V,
    field::TS,
    field::HOST,
    field::OP,
    field::PATH,
    field::TARGET,
    field::MAP,
    field::FLAGS,
    field::DEST,
    field::DETAIL,
    field::PID,
    field::TGID,
    field::UID,
    field::GID,
    field::COMM,
    field::EXE,
    field::CMDLINE,
    field::UNIT,
    field::USER_UNIT,
    field::CONTAINER,
    field::RESULT,
    field::REASON,
    field::COUNT,
    field::ESCAPED,
    field::TRUNCATED,
];

/// `result` of an operation that succeeded; a failure is its errno's name (`errno_name`).
pub const RESULT_OK: &str = "ok";

/// Every `op` the daemon writes: the audited filesystem operations, and the writer's own
/// `dropped` and `suppressed` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Lookup,
    Readlink,
    Open,
    Opendir,
    Create,
    Mkdir,
    Mknod,
    Symlink,
    Link,
    Unlink,
    Rmdir,
    Rename,
    Setattr,
    Setxattr,
    Removexattr,
    /// `FS_IOC_SETFLAGS`.
    Setflags,
    /// `FS_IOC_FSSETXATTR`.
    Fssetxattr,
    /// A read-only ioctl (`FS_IOC_GETFLAGS`, `FS_IOC_FSGETXATTR`).
    Ioctl,
    /// Events that could not be written, with their `count`.
    Dropped,
    /// One uid's events over its rate limit, with `uid`, `count` and `since`.
    Suppressed,
}

impl Op {
    pub const ALL: [Op; 20] = [
        Op::Lookup,
        Op::Readlink,
        Op::Open,
        Op::Opendir,
        Op::Create,
        Op::Mkdir,
        Op::Mknod,
        Op::Symlink,
        Op::Link,
        Op::Unlink,
        Op::Rmdir,
        Op::Rename,
        Op::Setattr,
        Op::Setxattr,
        Op::Removexattr,
        Op::Setflags,
        Op::Fssetxattr,
        Op::Ioctl,
        Op::Dropped,
        Op::Suppressed,
    ];

    /// The name written as `op`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Readlink => "readlink",
            Op::Open => "open",
            Op::Opendir => "opendir",
            Op::Create => "create",
            Op::Mkdir => "mkdir",
            Op::Mknod => "mknod",
            Op::Symlink => "symlink",
            Op::Link => "link",
            Op::Unlink => "unlink",
            Op::Rmdir => "rmdir",
            Op::Rename => "rename",
            Op::Setattr => "setattr",
            Op::Setxattr => "setxattr",
            Op::Removexattr => "removexattr",
            Op::Setflags => "setflags",
            Op::Fssetxattr => "fssetxattr",
            Op::Ioctl => "ioctl",
            Op::Dropped => "dropped",
            Op::Suppressed => "suppressed",
        }
    }

    /// The op written as `name`, if it is one of ours.
    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == name)
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_names_are_distinct_and_round_trip() {
        let names: std::collections::HashSet<_> = Op::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(names.len(), Op::ALL.len());
        for op in Op::ALL {
            assert_eq!(Op::from_name(op.as_str()), Some(op));
            assert_eq!(op.to_string(), op.as_str());
        }
        assert_eq!(Op::from_name("chmod"), None);
        assert_eq!(Op::from_name("Open"), None);
    }

    /// Every op name the filesystem passes to the log is declared here: a new op, or one
    /// renamed on one side only, fails this test. Until the filesystem names its ops through
    /// [`Op`] (then this test can go), its sources are scanned for the string literals of
    /// its audit calls: `op: "x"`, `(caller, "x"` and the ioctl table's `=> "x"`.
    #[test]
    fn every_op_the_filesystem_writes_is_declared() {
        let mut found = Vec::new();
        let mut uses_op = false;
        let mut stack = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/fs"
        ))];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let p = entry.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
                    uses_op |= flat.contains("Op::Lookup") || flat.contains("Op::Open");
                    found.extend(op_literals(&flat));
                }
            }
        }
        assert!(
            found.len() >= 10 || uses_op,
            "scan found too few ops in src/fs: {found:?}"
        );
        for name in &found {
            assert!(
                Op::from_name(name).is_some(),
                "op {name:?} not in schema::Op"
            );
        }
    }

    /// `docs/audit-schema.json`, the published contract, says what this module says: the
    /// version, every event field (and no other), every op, the record kinds' fields. The
    /// tests/integration attribution tests validate real lines against it.
    #[test]
    fn the_published_json_schema_matches() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/audit-schema.json"
        ))
        .unwrap();
        let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
        let defs = &schema["$defs"];
        assert_eq!(defs["version"]["const"], VERSION);
        let props = |kind: &str| -> Vec<String> {
            let p = defs[kind]["properties"].as_object().unwrap();
            p.keys().cloned().collect()
        };
        // serde_json's map is sorted: compare as sets, then the order by the fields' list.
        let mut event = props("event");
        let mut fields: Vec<String> = EVENT_FIELDS.iter().map(|f| f.to_string()).collect();
        event.sort();
        fields.sort();
        assert_eq!(event, fields);
        let ops: Vec<&str> = defs["event"]["properties"]["op"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_str().unwrap())
            .collect();
        let events: Vec<&str> = Op::ALL
            .iter()
            .filter(|o| !matches!(o, Op::Dropped | Op::Suppressed))
            .map(|o| o.as_str())
            .collect();
        assert_eq!(ops, events);
        let mut dropped = props("dropped");
        dropped.sort();
        assert_eq!(dropped, ["count", "host", "op", "ts", "v"]);
        let mut suppressed = props("suppressed");
        suppressed.sort();
        assert_eq!(
            suppressed,
            ["count", "host", "op", "since", "ts", "uid", "v"]
        );
        assert_eq!(
            defs["dropped"]["properties"]["op"]["const"],
            Op::Dropped.as_str()
        );
        assert_eq!(
            defs["suppressed"]["properties"]["op"]["const"],
            Op::Suppressed.as_str()
        );
        // The order the file documents the event fields in is the order they are written.
        let event_text = &text[text.find("\"event\": {").unwrap()..];
        let at = |f: &str| {
            event_text
                .find(&format!("\"{f}\": {{"))
                .unwrap_or(usize::MAX)
        };
        let in_file: Vec<usize> = EVENT_FIELDS.iter().map(|f| at(f)).collect();
        assert!(in_file.windows(2).all(|w| w[0] < w[1]), "{in_file:?}");
    }

    /// Lower-case string literals after the markers, in whitespace-collapsed source, and
    /// the `=> "x"` arms of the ioctl table (`fn audit_name`).
    fn op_literals(flat: &str) -> Vec<String> {
        let lit = |rest: &str| -> Option<String> {
            let rest = rest.strip_prefix('"')?;
            let name = &rest[..rest.find('"')?];
            (!name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase()))
                .then(|| name.to_string())
        };
        let mut out = Vec::new();
        for marker in ["op: ", "(caller, ", "( caller, "] {
            for (i, _) in flat.match_indices(marker) {
                out.extend(lit(&flat[i + marker.len()..]));
            }
        }
        for (i, _) in flat.match_indices("fn audit_name(") {
            let body = &flat[i..];
            let body = &body[..body[1..].find("fn ").map_or(body.len(), |e| e + 1)];
            for (j, _) in body.match_indices(" => ") {
                out.extend(lit(&body[j + 4..]));
            }
        }
        out
    }
}
