//! Tests of the config parser and validation: every key, every refusal, the example file.

use super::*;

const FILE: &str = "/etc/relocfs/test.toml";

fn parse_ok(text: &str) -> Config {
    match parse(text, Path::new(FILE)) {
        Ok(config) => config,
        Err(e) => panic!("expected {text:?} to parse, got: {e}"),
    }
}

fn parse_err(text: &str) -> String {
    match parse(text, Path::new(FILE)) {
        Ok(config) => panic!("expected {text:?} to be refused, got {config:?}"),
        Err(e) => e.to_string(),
    }
}

/// The shipped example documents every key: it must parse, with its stated defaults.
#[test]
fn shipped_example_parses_with_documented_values() {
    let config = parse_ok(include_str!("../../config.example.toml"));
    assert_eq!(config.rules.len(), 4);
    assert_eq!(config.rules[2].action, Action::Deny);
    assert!(config.rules[..3].iter().all(|r| r.stage.is_plain()));
    let defaults = FuseConfig::default();
    assert_eq!(config.fuse.threads, defaults.threads);
    assert_eq!(config.fuse.attr_timeout, defaults.attr_timeout);
    assert_eq!(config.fuse.entry_timeout, defaults.entry_timeout);
    assert_eq!(config.fuse.passthrough, defaults.passthrough);
    assert_eq!(config.fuse.readdirplus, defaults.readdirplus);
    assert!(!config.audit.cmdline);
    assert_eq!(config.audit.collapse_window, Duration::ZERO);
}

#[test]
fn audit_limits_parse_with_defaults_and_ranges() {
    let map = "[[map]]\nfrom = \"/\"\nto = \"/opt\"\n";
    let config = parse_ok(map);
    assert_eq!(config.audit.queue_bytes, crate::audit::DEFAULT_QUEUE_BYTES);
    assert_eq!(
        config.audit.rate.bytes_per_sec,
        crate::audit::DEFAULT_RATE_LIMIT
    );
    assert_eq!(config.audit.rate.burst, crate::audit::DEFAULT_RATE_BURST);
    assert_eq!(
        config.audit.shutdown_timeout,
        crate::audit::DEFAULT_SHUTDOWN_TIMEOUT
    );
    let config = parse_ok(&format!(
        "{map}[audit]\nqueue_bytes = 1048576\nrate_limit = 0\nrate_burst = 65536\nshutdown_timeout = 0.5\n"
    ));
    assert_eq!(config.audit.queue_bytes, 1 << 20);
    assert_eq!(config.audit.rate.bytes_per_sec, 0);
    assert_eq!(config.audit.rate.burst, 1 << 16);
    assert_eq!(config.audit.shutdown_timeout, Duration::from_millis(500));
    for (key, bad) in [
        ("queue_bytes", "1000"),
        ("rate_limit", "-1"),
        ("rate_burst", "100"),
        ("shutdown_timeout", "-1.0"),
    ] {
        let err = parse_err(&format!("{map}[audit]\n{key} = {bad}\n"));
        assert!(err.contains(&format!("[audit] {key}")), "{err}");
        assert!(err.contains("out of range"), "{err}");
    }
}

#[test]
fn audit_options_parse() {
    let config = parse_ok(
        "[[map]]\nfrom = \"/\"\nto = \"/opt\"\n[audit]\ncmdline = true\ncollapse_window = 2.5\n",
    );
    assert!(config.audit.cmdline);
    assert_eq!(config.audit.collapse_window, Duration::from_millis(2500));
    assert_eq!(config.audit.log, None);
}

const EXAMPLE: &str = r#"
[[map]]
from = "/"                    # path below the mount root; "/" is the root itself
to   = "/opt/jumpserver"      # absolute real directory
mode = "ro"                   # "ro" (default) or "rw"

[[map]]
from = "/keys"
to   = "/srv/jumpserver-keys"

[[map]]
from = "/keys/admin"
deny = true                   # every access refused with EACCES

[audit]
log = "/var/log/relocfs/jumpserver.jsonl"   # optional; no audit log when absent

[fuse]
threads = 2
attr_timeout = 1.0
entry_timeout = 1.0
"#;

#[test]
fn example_file_parses() {
    let config = parse_ok(EXAMPLE);
    assert_eq!(config.source, PathBuf::from(FILE));
    assert_eq!(
        config.rules,
        vec![
            Rule {
                from: "/".into(),
                action: Action::Map {
                    to: "/opt/jumpserver".into(),
                    mode: Mode::ReadOnly
                },
                stage: Default::default(),
            },
            Rule {
                from: "/keys".into(),
                action: Action::Map {
                    to: "/srv/jumpserver-keys".into(),
                    mode: Mode::ReadOnly
                },
                stage: Default::default(),
            },
            Rule {
                from: "/keys/admin".into(),
                action: Action::Deny,
                stage: Default::default(),
            },
        ]
    );
    assert_eq!(
        config.audit.log,
        Some(PathBuf::from("/var/log/relocfs/jumpserver.jsonl"))
    );
    assert_eq!(config.fuse.threads, 2);
    assert_eq!(config.fuse.attr_timeout, Duration::from_secs(1));
    assert_eq!(config.fuse.entry_timeout, Duration::from_secs(1));
}

#[test]
fn defaults_apply() {
    let config = parse_ok("[[map]]\nfrom = \"/\"\nto = \"/opt/app\"\n");
    assert_eq!(
        config.rules[0].action,
        Action::Map {
            to: "/opt/app".into(),
            mode: Mode::ReadOnly
        }
    );
    assert_eq!(config.audit.log, None);
    assert_eq!(config.fuse.threads, 2);
    assert_eq!(config.fuse.attr_timeout, Duration::from_secs(1));
    assert_eq!(config.fuse.entry_timeout, Duration::from_secs(1));

    // An empty [fuse] table also means the defaults.
    let config = parse_ok("[[map]]\nfrom = \"/\"\nto = \"/\"\n[fuse]\n[audit]\n");
    assert_eq!(config.fuse.threads, 2);
    assert_eq!(config.fuse.attr_timeout, Duration::from_secs(1));
    assert_eq!(config.audit.log, None);
}

#[test]
fn accepted_variants() {
    let config = parse_ok(
        "[[map]]\nfrom = \"/a\"\nto = \"/\"\nmode = \"rw\"\ndeny = false\n\
         [fuse]\nthreads = 64\npassthrough = \"off\"\nreaddirplus = false\nattr_timeout = 0\nentry_timeout = 3600\n",
    );
    assert_eq!(
        config.rules[0].action,
        Action::Map {
            to: "/".into(),
            mode: Mode::ReadWrite
        }
    );
    assert_eq!(config.fuse.threads, 64);
    assert!(!config.fuse.passthrough);
    assert!(!config.fuse.readdirplus);
    assert_eq!(config.fuse.attr_timeout, Duration::ZERO);
    assert_eq!(config.fuse.entry_timeout, Duration::from_secs(3600));

    let config =
        parse_ok("[[map]]\nfrom = \"/a\"\ndeny = true\n[fuse]\nthreads = 1\nattr_timeout = 0.25\n");
    assert_eq!(config.rules[0].action, Action::Deny);
    assert_eq!(config.fuse.threads, 1);
    assert!(config.fuse.passthrough);
    assert_eq!(config.fuse.attr_timeout, Duration::from_millis(250));
}

#[test]
fn components_split_the_path() {
    let rule = |from: &str| Rule {
        from: from.into(),
        action: Action::Deny,
        stage: Default::default(),
    };
    assert_eq!(rule("/").components(), Vec::<&str>::new());
    assert_eq!(rule("/a").components(), vec!["a"]);
    assert_eq!(rule("/a/b").components(), vec!["a", "b"]);
}

#[test]
fn refusals() {
    const MAP: &str = "[[map]]\nfrom = \"/\"\nto = \"/opt/app\"\n";
    // (what, file text, line of the error, facts the message must state)
    let cases: Vec<(&str, String, Option<usize>, &[&str])> = vec![
        (
            "malformed toml",
            "[[map]\nfrom = \"/\"\n".into(),
            Some(1),
            &["invalid table header"],
        ),
        (
            "unterminated string",
            format!("{MAP}[audit]\nlog = \"/x\n"),
            Some(5),
            &["invalid"],
        ),
        (
            "unknown top-level key",
            format!("bogus = 1\n{MAP}"),
            Some(1),
            &["unknown field `bogus`"],
        ),
        // TOML puts a key after [[map]] into that map, and so does this check.
        (
            "unknown key after map",
            format!("{MAP}bogus = 1\n"),
            Some(4),
            &["unknown field `bogus`"],
        ),
        (
            "unknown top-level table",
            format!("{MAP}[other]\n"),
            Some(4),
            &["unknown field `other`"],
        ),
        (
            "unknown map key",
            "[[map]]\nfrom = \"/\"\ntoo = \"/x\"\n".into(),
            Some(3),
            &["unknown field `too`"],
        ),
        (
            "unknown audit key",
            format!("{MAP}[audit]\npath = \"/x\"\n"),
            Some(5),
            &["unknown field `path`"],
        ),
        (
            "unknown fuse key",
            format!("{MAP}[fuse]\nthread = 2\n"),
            Some(5),
            &["unknown field `thread`"],
        ),
        (
            "wrong type",
            "[[map]]\nfrom = 5\n".into(),
            Some(2),
            &["invalid type: integer `5`"],
        ),
        (
            "empty file",
            "".into(),
            None,
            &["no [[map]] rules: add at least one"],
        ),
        (
            "no map",
            "[fuse]\nthreads = 2\n".into(),
            None,
            &["no [[map]] rules: add at least one"],
        ),
        (
            "missing from",
            format!("{MAP}\n[[map]]\nto = \"/x\"\n"),
            Some(5),
            &["map #2:", "missing `from`"],
        ),
        (
            "empty from",
            "[[map]]\nfrom = \"\"\nto = \"/x\"\n".into(),
            Some(2),
            &["map #1 (from = \"\")", "from is empty"],
        ),
        (
            "relative from",
            "[[map]]\nfrom = \"keys\"\nto = \"/x\"\n".into(),
            Some(2),
            &[
                "map #1 (from = \"keys\")",
                "not absolute",
                "starting with \"/\"",
            ],
        ),
        (
            "trailing slash",
            format!("{MAP}[[map]]\nfrom = \"/keys/\"\nto = \"/x\"\n"),
            Some(5),
            &[
                "map #2 (from = \"/keys/\")",
                "not normalised",
                "write \"/keys\"",
            ],
        ),
        (
            "double slash",
            "[[map]]\nfrom = \"/a//b\"\nto = \"/x\"\n".into(),
            Some(2),
            &["not normalised", "write \"/a/b\""],
        ),
        (
            "dot component",
            "[[map]]\nfrom = \"/a/./b\"\nto = \"/x\"\n".into(),
            Some(2),
            &["not normalised", "write \"/a/b\""],
        ),
        (
            "dot-dot component",
            "[[map]]\nfrom = \"/a/../b\"\nto = \"/x\"\n".into(),
            Some(2),
            &["map #1", "contains `..`"],
        ),
        (
            "NUL in from",
            "[[map]]\nfrom = \"/a\\u0000b\"\nto = \"/x\"\n".into(),
            Some(2),
            &["map #1", "NUL byte"],
        ),
        (
            "missing to",
            "[[map]]\nfrom = \"/keys\"\n".into(),
            Some(1),
            &["map #1 (from = \"/keys\")", "missing `to`", "deny = true"],
        ),
        (
            "relative to",
            "[[map]]\nfrom = \"/\"\nto = \"opt/app\"\n".into(),
            Some(3),
            &["map #1 (from = \"/\")", "to = \"opt/app\" is not absolute"],
        ),
        (
            "unnormalised to",
            "[[map]]\nfrom = \"/\"\nto = \"/opt/app/\"\n".into(),
            Some(3),
            &["to = \"/opt/app/\"", "write \"/opt/app\""],
        ),
        (
            "dot-dot to",
            "[[map]]\nfrom = \"/\"\nto = \"/opt/../app\"\n".into(),
            Some(3),
            &["to = ", "`..`"],
        ),
        (
            "deny with to",
            "[[map]]\nfrom = \"/k\"\ndeny = true\nto = \"/x\"\n".into(),
            Some(4),
            &[
                "map #1 (from = \"/k\")",
                "a deny rule takes no `to`/`mode`",
                "remove `to`",
            ],
        ),
        (
            "deny with mode",
            "[[map]]\nfrom = \"/k\"\nmode = \"ro\"\ndeny = true\n".into(),
            Some(3),
            &["a deny rule takes no `to`/`mode`", "remove `mode`"],
        ),
        (
            "bad mode",
            "[[map]]\nfrom = \"/\"\nto = \"/x\"\nmode = \"wr\"\n".into(),
            Some(4),
            &["map #1 (from = \"/\")", "mode = \"wr\"", "\"ro\" or \"rw\""],
        ),
        (
            "duplicate from",
            format!(
                "{MAP}[[map]]\nfrom = \"/k\"\ndeny = true\n[[map]]\nfrom = \"/\"\nto = \"/y\"\n"
            ),
            Some(8),
            &["map #3 (from = \"/\")", "map #1", "remove or merge"],
        ),
        (
            "relative audit log",
            format!("{MAP}[audit]\nlog = \"audit.jsonl\"\n"),
            Some(5),
            &["[audit] log = \"audit.jsonl\" is not absolute"],
        ),
        (
            "unnormalised audit log",
            format!("{MAP}[audit]\nlog = \"/var//log/a\"\n"),
            Some(5),
            &["[audit] log", "write \"/var/log/a\""],
        ),
        (
            "zero threads",
            format!("{MAP}[fuse]\nthreads = 0\n"),
            Some(5),
            &["[fuse] threads = 0 is out of range", "1 to 64"],
        ),
        (
            "negative collapse",
            format!("{MAP}[audit]\ncollapse_window = -1.0\n"),
            Some(5),
            &["[audit] collapse_window = -1 is out of range", "0 to 3600"],
        ),
        (
            "bad passthrough",
            format!("{MAP}[fuse]\npassthrough = \"on\"\n"),
            Some(5),
            &[
                "[fuse] passthrough = \"on\" is not valid",
                "\"auto\" or \"off\"",
            ],
        ),
        (
            "too many threads",
            format!("{MAP}[fuse]\nthreads = 65\n"),
            Some(5),
            &["threads = 65", "1 to 64"],
        ),
        (
            "negative threads",
            format!("{MAP}[fuse]\nthreads = -1\n"),
            Some(5),
            &["threads = -1", "1 to 64"],
        ),
        (
            "negative attr_timeout",
            format!("{MAP}[fuse]\nattr_timeout = -0.5\n"),
            Some(5),
            &["[fuse] attr_timeout = -0.5 is out of range", "0 to 3600"],
        ),
        (
            "nan attr_timeout",
            format!("{MAP}[fuse]\nattr_timeout = nan\n"),
            Some(5),
            &["attr_timeout = NaN", "0 to 3600"],
        ),
        (
            "infinite entry_timeout",
            format!("{MAP}[fuse]\nentry_timeout = inf\n"),
            Some(5),
            &["entry_timeout = inf", "0 to 3600"],
        ),
        (
            "huge entry_timeout",
            format!("{MAP}[fuse]\n\nentry_timeout = 3600.5\n"),
            Some(6),
            &["entry_timeout = 3600.5", "0 to 3600"],
        ),
    ];
    for (what, text, line, facts) in cases {
        let message = parse_err(&text);
        let prefix = match line {
            Some(line) => format!("{FILE}:{line}: "),
            None => format!("{FILE}: "),
        };
        assert!(
            message.starts_with(&prefix),
            "{what}: {message:?} should start with {prefix:?}"
        );
        assert!(
            !message.contains('\n'),
            "{what}: {message:?} should be one line"
        );
        for fact in facts {
            assert!(
                message.contains(fact),
                "{what}: {message:?} should contain {fact:?}"
            );
        }
    }
}

#[test]
fn load_reads_then_parses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relocfs.toml");
    std::fs::write(&path, EXAMPLE).unwrap();
    let config = load(&path).unwrap();
    assert_eq!(config.source, path);
    assert_eq!(config.rules.len(), 3);

    let missing = dir.path().join("missing.toml");
    let message = load(&missing).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("{}: cannot read: ", missing.display())),
        "{message:?}"
    );
}
