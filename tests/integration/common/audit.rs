//! Reading the audit log: parse its lines, wait for events, check the fields
//! every event must have.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::process::Command;

use serde_json::Value;

use super::proc::wait_until;
use super::users::run_as_pid;
use super::{AUDIT_TIMEOUT, SETTLE_TIMEOUT};

/// All complete lines of the audit log, each parsed as a JSON object.
/// A line that is not a JSON object is a daemon bug: panics.
pub fn read_audit(path: &Path) -> Vec<Value> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(_) => return Vec::new(),
    };
    let text = String::from_utf8_lossy(&data);
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}"));
            assert!(v.is_object(), "audit line is not a JSON object: {l}");
            v
        })
        .collect()
}

/// Polls the audit log until a line satisfying `pred` appears.
#[track_caller]
pub fn wait_for_audit(path: &Path, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
    wait_for_audit_n(path, pred, 1, timeout).remove(0)
}

/// Polls the audit log until at least `n` lines satisfy `pred`; returns them all.
#[track_caller]
pub fn wait_for_audit_n(
    path: &Path,
    pred: impl Fn(&Value) -> bool,
    n: usize,
    timeout: Duration,
) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let found: Vec<Value> = read_audit(path).into_iter().filter(|v| pred(v)).collect();
        if found.len() >= n {
            return found;
        }
        if Instant::now() >= deadline {
            let all = fs::read_to_string(path).unwrap_or_else(|e| format!("<unreadable: {e}>"));
            let tail: Vec<&str> = all.lines().rev().take(40).collect();
            panic!(
                "audit log {}: wanted {n} matching line(s) within {timeout:?}, found {}.\nlast lines (newest first):\n{}",
                path.display(),
                found.len(),
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `cat PATH` as root, then waits until its open of `path` is in the audit
/// log `log`. Returns cat's pid.
#[track_caller]
pub fn cat_and_wait_for_open(log: &Path, path: &Path) -> u32 {
    let (pid, _) = run_as_pid(0, 0, Command::new("cat").arg(path));
    wait_for_audit(log, ev("open", path, Some(pid)), AUDIT_TIMEOUT);
    pid
}

/// After a log rotation: does a new `cat PATH` (retried up to `SETTLE_TIMEOUT`)
/// show up in a new file at `log`?
pub fn new_opens_reach(log: &Path, path: &Path) -> bool {
    wait_until(SETTLE_TIMEOUT, || {
        let (p, _) = run_as_pid(0, 0, Command::new("cat").arg(path));
        std::thread::sleep(Duration::from_millis(50));
        read_audit(log).iter().any(ev("open", path, Some(p)))
    })
}

/// Field accessors that tolerate absence.
pub fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

pub fn n(v: &Value, k: &str) -> Option<u64> {
    v.get(k).and_then(Value::as_u64)
}

/// Predicate: `op`, `path` and (if given) requesting `pid` match.
pub fn ev<'a>(op: &'a str, path: &'a Path, pid: Option<u32>) -> impl Fn(&Value) -> bool + 'a {
    move |v: &Value| {
        s(v, "op") == Some(op)
            && s(v, "path") == path.to_str()
            && pid.is_none_or(|p| n(v, "pid") == Some(u64::from(p)))
    }
}

/// Parses an audit timestamp to Unix seconds: RFC 3339 in UTC exactly as the daemon writes it
/// (`YYYY-MM-DDTHH:MM:SS[.frac]Z`, upper-case `T` and `Z`); the calendar is the crate's.
pub fn parse_rfc3339_utc(ts: &str) -> Option<i64> {
    let strict = ts.ends_with('Z') && ts.as_bytes().get(10) == Some(&b'T');
    strict
        .then(|| relocfs::time::parse_rfc3339(ts).ok())
        .flatten()
        .map(|us| us.div_euclid(1_000_000))
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Checks the fields every audit event must have; returns the problems found.
pub fn audit_common_problems(v: &Value) -> Vec<String> {
    let mut p = Vec::new();
    if !v.get("v").is_some_and(|x| x.is_u64()) {
        p.push("`v` missing or not an integer".to_string());
    }
    match s(v, "ts") {
        None => p.push("`ts` missing".into()),
        Some(ts) => match parse_rfc3339_utc(ts) {
            None => p.push(format!("`ts` {ts:?} is not RFC 3339 UTC ending in Z")),
            Some(t) if (t - now_unix()).abs() > 600 => {
                p.push(format!("`ts` {ts:?} is far from now"))
            }
            _ => {}
        },
    }
    for k in ["op", "path", "comm", "result"] {
        if s(v, k).is_none() {
            p.push(format!("`{k}` missing or not a string"));
        }
    }
    for k in ["pid", "uid", "gid"] {
        if n(v, k).is_none() {
            p.push(format!("`{k}` missing or not an integer"));
        }
    }
    p
}
