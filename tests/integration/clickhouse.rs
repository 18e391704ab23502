//! docs/clickhouse.md proven: the log of a real mount loaded into chDB (ClickHouse's embedded
//! engine) by the doc's own statements, and every query's answer equal to the figure of
//! `relocfs report --format json` over the same log.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// The venv with chdb (.ci/run makes it): `RELOCFS_CHDB_VENV` or /var/tmp/relocfs-chdb-venv.
fn chdb_python() -> Option<PathBuf> {
    let venv = std::env::var_os("RELOCFS_CHDB_VENV").map_or_else(
        || PathBuf::from("/var/tmp/relocfs-chdb-venv"),
        PathBuf::from,
    );
    let py = venv.join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import chdb.session"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(py)
}

fn report_json(log: &Path, by: &str) -> Value {
    let out = relocfs(
        ["report", "--format", "json", "--limit", "0", "--by", by]
            .iter()
            .map(std::ffi::OsStr::new)
            .chain([log.as_os_str()]),
    );
    assert!(out.status.success(), "report failed: {}", stderr_str(&out));
    serde_json::from_slice(&out.stdout).expect("report JSON")
}

/// A report timestamp (`2026-11-27T21:49:09.123456Z`) as ClickHouse prints a DateTime64(6).
fn ts(v: &Value) -> Value {
    match v.as_str() {
        Some(s) => Value::from(s.replacen('T', " ", 1).trim_end_matches('Z')),
        None => v.clone(),
    }
}

/// A count, whether printed as a number or (64-bit integers quoted) a string.
fn count(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::from(s.parse::<u64>().expect("a count")),
        _ => v.clone(),
    }
}

/// The `keys` of each row, counts and times normalised, rows in a canonical order.
fn rows(rows: &Value, keys: &[&str]) -> Vec<Vec<(String, Value)>> {
    let mut out: Vec<Vec<(String, Value)>> = rows
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            keys.iter()
                .map(|&k| {
                    let v = &r[k];
                    let v = match k {
                        "first_seen" | "last_seen" => ts(v),
                        "hits" | "events" | "hosts" | "lost_events" | "suppressed_events" => {
                            count(v)
                        }
                        _ => v.clone(),
                    };
                    (k.to_owned(), v)
                })
                .collect()
        })
        .collect();
    out.sort_by_key(|r| serde_json::to_string(r).unwrap_or_default());
    out
}

/// Root and uid 65534 use two rules: reads, misses, refusals by a deny rule and a read-only
/// rule.
fn make_traffic(m: &Mounted) {
    for _ in 0..2 {
        let out = Command::new("cat")
            .arg(m.mnt.join("keys/id_rsa"))
            .output()
            .expect("cat");
        assert!(out.status.success(), "{}", stderr_str(&out));
    }
    let out = run_as(65534, 65534, Command::new("ls").arg(m.mnt.join("data")));
    assert!(out.status.success(), "{}", stderr_str(&out));
    let out = run_as(
        65534,
        65534,
        Command::new("cat").arg(m.mnt.join("data/report.csv")),
    );
    assert!(out.status.success(), "{}", stderr_str(&out));
    for (uid, path) in [
        (65534, "data/gone.csv"),
        (0, "keys/old_key"),
        (0, "nowhere"),
    ] {
        let out = run_as(uid, uid, Command::new("cat").arg(m.mnt.join(path)));
        assert!(!out.status.success(), "{path} exists");
    }
    // The deny rule refuses nobody and root (EACCES), the read-only rule a write (EROFS).
    let out = run_as(
        65534,
        65534,
        Command::new("stat").arg(m.mnt.join("keys/admin")),
    );
    assert!(!out.status.success(), "nobody passed the deny rule");
    for _ in 0..2 {
        assert_errno(
            "stat admin",
            fs::metadata(m.mnt.join("keys/admin/x")),
            libc::EACCES,
        );
    }
    assert_errno(
        "write",
        fs::OpenOptions::new()
            .append(true)
            .open(m.mnt.join("data/report.csv")),
        libc::EROFS,
    );
}

#[test]
fn clickhouse_recipe_answers_as_the_report_does() {
    skip_without_fuse!();
    let Some(py) = chdb_python() else {
        skip_or_fail("the chdb venv (/var/tmp/relocfs-chdb-venv, made by .ci/run) is needed");
        return;
    };
    let b = MountBuilder::new();
    let real = b.real();
    let data = b.root().join("data-real");
    mkdir_p(&real.join("keys"));
    mkdir_p(&data);
    write_file(&real.join("keys/id_rsa"), b"KEY", 0o600);
    write_file(&data.join("report.csv"), b"a,b\n", 0o644);
    let m = b
        .map("/data", &data)
        .map("/keys", real.join("keys"))
        .deny("/keys/admin")
        .opt("allow_other")
        .extra("rate_limit = 65536\nrate_burst = 65536\n")
        .mount();
    make_traffic(&m);
    // Nobody over its rate limit: events counted in `suppressed` lines, not written.
    let d = m.mnt.join("data");
    spawn_as_user(NOBODY, NOBODY, &[], move || {
        for i in 0..2000 {
            let _ = fs::symlink_metadata(d.join(format!("x{i}")));
        }
    })
    .join()
    .expect("flood");
    wait_for_audit(&m.audit, |e| e["op"] == "suppressed", AUDIT_TIMEOUT);
    let log = m.audit.clone();
    let pid = m.daemon_pid();
    m.unmount_all();
    assert!(wait_until(Duration::from_secs(10), || !pid_alive(pid)));

    let db = m.root().join("chdb");
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/clickhouse.md");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chdb/check.py");
    let out = Command::new(&py)
        .arg(&script)
        .arg(&doc)
        .arg(&log)
        .arg(&db)
        .output()
        .expect("run check.py");
    assert!(out.status.success(), "check.py: {}", stderr_str(&out));
    let ch: Value = serde_json::from_slice(&out.stdout).expect("check.py JSON");

    let by_rule = report_json(&log, "rule");
    let by_host = report_json(&log, "host");
    let by_unit = report_json(&log, "unit");
    let times = ["hits", "first_seen", "last_seen"];
    let with = |keys: &[&'static str]| -> Vec<&'static str> {
        keys.iter().copied().chain(times).collect()
    };

    // Each NAME of the doc's queries, the report's rows and the columns compared.
    let t = &by_rule["totals"];
    let totals = Value::from(vec![serde_json::json!({
        "events": t["events"], "first_seen": t["first_seen"],
        "last_seen": t["last_seen"], "hosts": t["hosts"],
    })]);
    let not_logged = Value::from(vec![serde_json::json!({
        "lost_events": t["lost_events"], "suppressed_events": t["suppressed_events"],
    })]);
    let checks: Vec<(&str, &Value, Vec<&str>)> = vec![
        (
            "totals",
            &totals,
            vec!["events", "first_seen", "last_seen", "hosts"],
        ),
        (
            "not_logged",
            &not_logged,
            vec!["lost_events", "suppressed_events"],
        ),
        ("by_rule", &by_rule["groups"]["rows"], with(&["rule"])),
        ("by_host", &by_host["groups"]["rows"], with(&["host"])),
        (
            "by_unit",
            &by_unit["groups"]["rows"],
            with(&["unit", "user_unit", "container"]),
        ),
        ("misses", &by_rule["misses"]["rows"], with(&["path"])),
        (
            "denials",
            &by_rule["denials"]["rows"],
            with(&["op", "path", "result"]),
        ),
    ];
    let names: Vec<&str> = checks.iter().map(|c| c.0).collect();
    let mut doc_names: Vec<&String> = ch.as_object().expect("object").keys().collect();
    doc_names.sort();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(
        doc_names, sorted,
        "every query of docs/clickhouse.md is compared, and only those"
    );
    for (name, report, keys) in &checks {
        let want = rows(report, keys);
        let got = rows(&ch[*name], keys);
        assert_eq!(
            got, want,
            "{name}: chDB (left) and relocfs report (right) differ"
        );
    }

    // The comparison is not vacuous: two rules and no rule, misses, each kind of refusal,
    // events of both users.
    assert!(
        t["suppressed_events"].as_u64().is_some_and(|n| n > 0),
        "{t}"
    );
    let rules = rows(&by_rule["groups"]["rows"], &["rule"]);
    assert!(rules.len() >= 3, "{rules:?}");
    let misses = by_rule["misses"]["rows"].as_array().expect("misses");
    let gone = m.mnt.join("data/gone.csv");
    assert!(misses.iter().any(|r| r["path"] == gone.to_str().unwrap()));
    let denials = by_rule["denials"]["rows"].as_array().expect("denials");
    for result in ["EACCES", "EROFS"] {
        assert!(denials.iter().any(|d| d["result"] == result), "{result}");
    }
    let admin = m.mnt.join("keys/admin");
    assert!(denials
        .iter()
        .any(|d| d["path"] == admin.to_str().unwrap() && d["result"] == "EACCES"));
    let users = report_json(&log, "user");
    let uids: Vec<&Value> = users["groups"]["rows"]
        .as_array()
        .expect("users")
        .iter()
        .map(|r| &r["uid"])
        .collect();
    assert!(uids.contains(&&Value::from(0)) && uids.contains(&&Value::from(65534)));
}
