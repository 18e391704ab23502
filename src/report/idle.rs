//! `relocfs report --idle-for 30d`: when each rule was last used and by whom, and an exit code
//! that says whether the legacy path was idle for the whole window (a gate for cron or Ansible).
//!
//! Idleness is proven only by logs that cover the window; everything that could hide a use
//! makes the verdict *unproven* rather than *idle*:
//! - no event at or before the window's start in the logs given (an empty log, a fresh
//!   mount, or rotated files left out): nothing shows the log was being written then;
//! - events lost within the window (`dropped`: the queue was full; `suppressed`: a per-user
//!   rate limit): each could have been a use, of any rule;
//! - lines that cannot be read (malformed, of a newer schema, a read error midway): a use
//!   could be among them.
//!
//! Every event counts as a use of its rule, whatever its result: a process whose opens now
//! fail (ENOENT in a brownout, EACCES) still depends on the legacy path. Events outside any
//! rule (a miss in the virtual directories) count as a use of "(no rule)".

use super::*;
use crate::audit::schema;

/// Verdicts of `--idle-for`, each with its own exit code (see [`crate::exit::Exit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No use within the window, and the logs cover all of it: exit 0.
    Idle,
    /// A rule was used within the window: exit 3.
    InUse,
    /// No use seen, but the logs cannot prove there was none: exit 4.
    Unproven,
}

impl Verdict {
    pub fn exit(self) -> crate::exit::Exit {
        match self {
            Verdict::Idle => crate::exit::Exit::Success,
            Verdict::InUse => crate::exit::Exit::InUse,
            Verdict::Unproven => crate::exit::Exit::Unproven,
        }
    }
}

/// What `relocfs report --idle-for` takes from the command line.
#[derive(Debug, Clone)]
pub struct IdleArgs {
    pub logs: Vec<PathBuf>,
    /// The window, as `--idle-for` spells it: 90s, 15m, 12h, 30d, 2w.
    pub window: String,
    /// Rules of this config are listed even if never used; without it, the rules the logs
    /// name are.
    pub config: Option<PathBuf>,
    pub format: Format,
    /// Uids only: no login names from this machine's user database (`--numeric`).
    pub numeric: bool,
    /// The current time, for tests; `None` means `SystemTime::now()`.
    pub now: Option<SystemTime>,
}

/// The last use of a rule: the event, as logged.
#[derive(Debug, Clone, Serialize)]
struct LastUse {
    ts: String,
    ago_seconds: i64,
    op: String,
    path: Option<String>,
    result: Option<String>,
    uid: Option<u32>,
    user: Option<String>,
    pid: Option<u32>,
    comm: Option<String>,
    exe: Option<String>,
    unit: Option<String>,
    host: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct RuleRow {
    /// The rule's `from`; `null` for events outside any rule.
    rule: Option<String>,
    /// In the `--config` given (`null` without one).
    in_config: Option<bool>,
    /// Uses (events, collapsed repeats counted) within the window.
    uses_in_window: u64,
    last_use: Option<LastUse>,
}

#[derive(Debug, Serialize)]
struct IdleReport {
    verdict: Verdict,
    window_seconds: i64,
    since: String,
    now: String,
    /// The oldest event in the logs: the logs cover the window only if it is at or before
    /// `since`.
    oldest_event: Option<String>,
    /// Why the verdict is `unproven` (empty otherwise).
    unproven: Vec<String>,
    lost_in_window: u64,
    unreadable_lines: u64,
    files: Vec<String>,
    rules: Vec<RuleRow>,
}

#[derive(Default)]
struct Last {
    micros: i64,
    use_: Option<LastUse>,
    in_window: u64,
}

#[derive(Default)]
struct State {
    rules: HashMap<Option<String>, Last>,
    oldest: Option<i64>,
    lost_in_window: u64,
    unreadable: u64,
}

impl State {
    fn line(&mut self, line: &[u8], since: i64, now: i64) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        // The report's own line parser: the same fields, names and malformed lines.
        let Ok(ev) = serde_json::from_slice::<RawEvent<'_>>(line) else {
            self.unreadable += 1;
            return;
        };
        let ts = ev.ts.as_ref().and_then(|t| parse_rfc3339(&t.0));
        let (Some(ts), Some(op)) = (ts, ev.op.as_ref()) else {
            self.unreadable += 1;
            return;
        };
        // Version 0 is malformed; a newer one may mean anything: both unreadable.
        if ev.v.unwrap_or(1) != u64::from(crate::audit::schema::VERSION) {
            self.unreadable += 1;
            return;
        }
        self.oldest = Some(self.oldest.map_or(ts, |o| o.min(ts)));
        let count = ev.count.unwrap_or(1);
        let op = &*op.0;
        if op == schema::Op::Dropped.as_str() || op == schema::Op::Suppressed.as_str() {
            if ts >= since {
                self.lost_in_window = self.lost_in_window.saturating_add(count.max(1));
            }
            return;
        }
        let rule = ev.map.as_ref().map(|m| m.0.to_string());
        let last = self.rules.entry(rule).or_default();
        if ts >= since {
            last.in_window = last.in_window.saturating_add(count);
        }
        if last.use_.is_none() || ts >= last.micros {
            let text = |s: &Option<Str<'_>>| s.as_ref().map(|s| s.0.to_string());
            last.micros = ts;
            last.use_ = Some(LastUse {
                ts: fmt_ts(ts),
                ago_seconds: now.saturating_sub(ts) / MICROS_PER_SEC,
                op: op.to_string(),
                path: text(&ev.path),
                result: text(&ev.result),
                uid: ev.uid,
                // Named from the user database below, unless --numeric.
                user: None,
                // The process, where the line names it; the thread otherwise.
                pid: ev.tgid.or(ev.pid),
                comm: text(&ev.comm),
                exe: text(&ev.exe),
                unit: text(&ev.unit),
                host: text(&ev.host),
            });
        }
    }
}

/// Reads the logs and writes the verdict with one row per rule. Errors (exit 1): an invalid
/// `--idle-for`, an unreadable `--config`, a log that cannot be opened at all, a failed write.
///
/// The JSON document (`--format json`): verdict ("idle"|"in_use"|"unproven"), window_seconds,
/// since, now, oldest_event (RFC 3339 or null), unproven (reasons), lost_in_window,
/// unreadable_lines, files, rules: [{rule (null: outside any rule), in_config (null without
/// --config), uses_in_window, last_use: null | {ts, ago_seconds, op, path, result, uid, user,
/// pid, comm, exe, unit, host}}], most recently used first, never-used rules last.
pub fn run(args: &IdleArgs, out: &mut dyn Write) -> Result<Verdict, String> {
    if args.logs.is_empty() {
        return Err("no audit log given".into());
    }
    let window = parse_relative(args.window.trim())
        .filter(|w| *w > 0)
        .ok_or_else(|| {
            format!(
                "invalid --idle-for '{}': expected a duration such as 90s, 15m, 12h, 30d or 2w",
                args.window
            )
        })?;
    if args.format == Format::Csv {
        return Err("--idle-for writes a table or JSON: use --format table or json".into());
    }
    let configured = match &args.config {
        Some(path) => Some(
            crate::config::load(path)
                .map_err(|e| e.to_string())?
                .rules
                .into_iter()
                .map(|r| r.from)
                .collect::<Vec<_>>(),
        ),
        None => None,
    };
    let now = time::micros_since_epoch(args.now.unwrap_or_else(SystemTime::now));
    let since = now.saturating_sub(window);

    let mut state = State::default();
    let mut files = Vec::new();
    let mut read_errors = Vec::new();
    for (index, path) in args.logs.iter().enumerate() {
        let stats = read_chunks(path, index, &mut |chunk: Chunk| {
            for line in chunk.data.split(|&b| b == b'\n') {
                state.line(line, since, now);
            }
        })?;
        state.unreadable += stats.malformed;
        if let Some(e) = &stats.error {
            read_errors.push(format!("{}: read error: {e}", stats.path));
        }
        files.push(stats.path);
    }

    let mut rules: Vec<RuleRow> = Vec::new();
    let in_config = |rule: &Option<String>| {
        configured
            .as_ref()
            .map(|c| rule.as_ref().is_some_and(|r| c.contains(r)))
    };
    let mut names = std::collections::HashMap::new();
    for (rule, mut last) in state.rules.drain() {
        if let Some(u) = last
            .use_
            .as_mut()
            .filter(|u| u.user.is_none() && !args.numeric)
        {
            // Named from this machine's user database, as the report names uids.
            u.user = u.uid.and_then(|uid| {
                names
                    .entry(uid)
                    .or_insert_with(|| {
                        crate::sys::user_name(uid).map(|n| String::from_utf8_lossy(&n).into_owned())
                    })
                    .clone()
            });
        }
        rules.push(RuleRow {
            in_config: in_config(&rule),
            rule,
            uses_in_window: last.in_window,
            last_use: last.use_,
        });
    }
    for from in configured.iter().flatten() {
        if !rules
            .iter()
            .any(|r| r.rule.as_deref() == Some(from.as_str()))
        {
            rules.push(RuleRow {
                rule: Some(from.clone()),
                in_config: Some(true),
                uses_in_window: 0,
                last_use: None,
            });
        }
    }
    // Most recent use first; never used last, by name.
    rules.sort_by(|a, b| {
        let ts = |r: &RuleRow| r.last_use.as_ref().map(|u| u.ts.clone());
        ts(b).cmp(&ts(a)).then_with(|| a.rule.cmp(&b.rule))
    });

    let mut unproven = read_errors;
    if state.unreadable > 0 {
        unproven.push(format!(
            "{} line{} could not be read (malformed or of a newer schema): a use may be among them",
            state.unreadable,
            plural(state.unreadable)
        ));
    }
    if state.lost_in_window > 0 {
        unproven.push(format!(
            "{} event{} within the window were not logged (dropped or rate-limited): each may \
             have been a use",
            state.lost_in_window,
            plural(state.lost_in_window)
        ));
    }
    match state.oldest {
        None => unproven.push(
            "the logs hold no event: they cannot show the legacy path was watched during the \
             window"
                .into(),
        ),
        Some(oldest) if oldest > since => unproven.push(format!(
            "the oldest event is at {}, after the window's start {}: give the rotated logs too \
             (e.g. /var/log/relocfs/NAME.jsonl*)",
            fmt_ts_short(oldest),
            fmt_ts_short(since)
        )),
        Some(_) => {}
    }
    let used = rules.iter().any(|r| r.uses_in_window > 0);
    let verdict = if used {
        Verdict::InUse
    } else if unproven.is_empty() {
        Verdict::Idle
    } else {
        Verdict::Unproven
    };
    let report = IdleReport {
        verdict,
        window_seconds: window / MICROS_PER_SEC,
        since: fmt_ts(since),
        now: fmt_ts(now),
        oldest_event: state.oldest.map(fmt_ts),
        unproven,
        lost_in_window: state.lost_in_window,
        unreadable_lines: state.unreadable,
        files,
        rules,
    };
    let written = match args.format {
        Format::Json => {
            let mut ser = serde_json::Serializer::with_formatter(&mut *out, SafeJson::default());
            report
                .serialize(&mut ser)
                .map_err(io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
        }
        _ => write_idle_table(&report, &args.window, out),
    }
    .and_then(|()| out.flush());
    match written {
        Ok(()) => Ok(verdict),
        // The verdict is the exit code: a closed pipe does not change it.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(verdict),
        Err(e) => Err(format!("cannot write the report: {e}")),
    }
}

fn write_idle_table(r: &IdleReport, window: &str, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "Rules used since {} (the last {}), in {} log{}:",
        short(&r.since),
        clean(window.trim()),
        r.files.len(),
        plural(r.files.len() as u64)
    )?;
    let mut table = Table::new(&[
        ("RULE", false),
        ("USES", true),
        ("LAST USE", false),
        ("AGO", false),
        ("BY", false),
    ]);
    for row in &r.rules {
        let mut rule = row.rule.as_deref().map_or("(no rule)".into(), name);
        if row.in_config == Some(false) {
            rule.push_str(" (not in config)");
        }
        let (when, ago, by) = match &row.last_use {
            None => ("never (in these logs)".into(), "-".into(), "-".into()),
            Some(u) => (
                short(&u.ts),
                human_duration(u.ago_seconds.saturating_mul(MICROS_PER_SEC)),
                who(u),
            ),
        };
        table.row(vec![rule, row.uses_in_window.to_string(), when, ago, by]);
    }
    table.write(out, "  ")?;
    let text = match r.verdict {
        Verdict::Idle => "IDLE: no rule was used within the window (exit 0)".to_string(),
        Verdict::InUse => {
            let n = r.rules.iter().filter(|r| r.uses_in_window > 0).count() as u64;
            format!(
                "IN USE: {n} rule{} used within the window (exit 3)",
                plural(n)
            )
        }
        Verdict::Unproven => {
            "UNPROVEN: no use seen, but the logs cannot prove there was none (exit 4)".to_string()
        }
    };
    writeln!(out, "\n{text}")?;
    // Beside a use, why the logs would not prove idleness is beside the point.
    let reasons = if r.verdict == Verdict::Unproven {
        &r.unproven[..]
    } else {
        &[]
    };
    for why in reasons {
        writeln!(out, "  - {}", clean(why))?;
    }
    Ok(())
}

/// "uid 998 (jumpserver) python3 /usr/bin/python3.11 pid 1234 jumpserver.service @host1":
/// what the event tells of the caller, every name escaped for the terminal.
fn who(u: &LastUse) -> String {
    let mut parts = Vec::new();
    if let Some(uid) = u.uid {
        match &u.user {
            Some(user) => parts.push(format!("uid {uid} ({})", name(user))),
            None => parts.push(format!("uid {uid}")),
        }
    }
    for v in [&u.comm, &u.exe].into_iter().flatten() {
        parts.push(name(v));
    }
    if let Some(pid) = u.pid {
        parts.push(format!("pid {pid}"));
    }
    if let Some(unit) = &u.unit {
        parts.push(format!("unit {}", name(unit)));
    }
    if let Some(host) = &u.host {
        parts.push(format!("on {}", name(host)));
    }
    parts.push(format!(
        "{} {}",
        name(&u.op),
        u.result.as_deref().map_or(String::new(), name)
    ));
    parts.join(" ").trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const NOW: u64 = 1_795_816_149; // 2026-11-27T21:49:09Z
    const DAY: u64 = 86_400;

    fn ts(secs_ago: u64) -> String {
        time::format_rfc3339(UNIX_EPOCH + Duration::from_secs(NOW - secs_ago))
    }

    fn event(secs_ago: u64, rule: &str) -> String {
        format!(
            r#"{{"v":1,"ts":"{}","op":"open","path":"/legacy{rule}/f","map":"{rule}","pid":7,"uid":998,"gid":998,"comm":"python3","exe":"/usr/bin/python3","result":"ok"}}"#,
            ts(secs_ago)
        )
    }

    fn check(lines: &[String], window: &str, format: Format) -> (Verdict, String) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        std::fs::write(&log, lines.join("\n") + "\n").unwrap();
        let args = IdleArgs {
            logs: vec![log],
            window: window.into(),
            config: None,
            format,
            numeric: true,
            now: Some(UNIX_EPOCH + Duration::from_secs(NOW)),
        };
        let mut out = Vec::new();
        let verdict = run(&args, &mut out).unwrap();
        (verdict, String::from_utf8(out).unwrap())
    }

    #[test]
    fn used_within_the_window_is_in_use() {
        let lines = [event(40 * DAY, "/old"), event(2 * DAY, "/keys")];
        let (v, text) = check(&lines, "30d", Format::Table);
        assert_eq!(v, Verdict::InUse, "{text}");
        assert!(text.contains("/keys"), "{text}");
        assert!(text.contains("IN USE: 1 rule"), "{text}");
        let (v, _) = check(&lines, "1d", Format::Table);
        assert_eq!(v, Verdict::Idle);
    }

    #[test]
    fn lost_events_in_the_window_leave_it_unproven() {
        let dropped = format!(r#"{{"v":1,"ts":"{}","op":"dropped","count":5}}"#, ts(DAY));
        let (v, text) = check(&[event(40 * DAY, "/old"), dropped], "30d", Format::Table);
        assert_eq!(v, Verdict::Unproven, "{text}");
        assert!(
            text.contains("5 events within the window were not logged"),
            "{text}"
        );
    }

    #[test]
    fn logs_that_start_inside_the_window_prove_nothing() {
        let (v, text) = check(&[event(10 * DAY, "/old")], "30d", Format::Table);
        assert_eq!(v, Verdict::InUse, "{text}");
        // Only a use outside a shorter window, but the log starts after the longer one.
        let (v, text) = check(&[event(10 * DAY, "/old")], "5d", Format::Table);
        assert_eq!(v, Verdict::Idle, "{text}");
        let (v, text) = check(&[], "5d", Format::Table);
        assert_eq!(v, Verdict::Unproven, "{text}");
        assert!(text.contains("hold no event"), "{text}");
    }

    #[test]
    fn unreadable_lines_leave_it_unproven() {
        let lines = [event(40 * DAY, "/old"), "{\"v\":1,\"ts\":".to_string()];
        assert_eq!(check(&lines, "30d", Format::Table).0, Verdict::Unproven);
        let newer = event(40 * DAY, "/old").replace("\"v\":1", "\"v\":2");
        let lines = [event(40 * DAY, "/old"), newer];
        assert_eq!(check(&lines, "30d", Format::Table).0, Verdict::Unproven);
    }

    #[test]
    fn json_names_the_last_user_and_escapes_names() {
        let evil = event(40 * DAY, "/old").replace("python3", "py\\u001b[31m");
        let (v, json) = check(std::slice::from_ref(&evil), "30d", Format::Json);
        assert_eq!(v, Verdict::Idle);
        assert!(!json.contains('\u{1b}'), "{json}");
        let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(doc["verdict"], "idle");
        assert_eq!(doc["rules"][0]["rule"], "/old");
        assert_eq!(doc["rules"][0]["last_use"]["uid"], 998);
        assert_eq!(doc["rules"][0]["last_use"]["comm"], "py\u{1b}[31m");
        let (_, table) = check(&[evil], "30d", Format::Table);
        assert!(!table.contains('\u{1b}'), "{table}");
    }

    /// After logrotate: the current log is empty and the old events are in a `.gz`. The
    /// current file alone proves nothing; with the rotated one the window is covered.
    #[test]
    fn rotated_logs_cover_the_window() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("audit.jsonl");
        std::fs::write(&current, b"").unwrap();
        let rotated = dir.path().join("audit.jsonl.2.gz");
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&rotated).unwrap(),
            flate2::Compression::default(),
        );
        writeln!(gz, "{}", event(40 * DAY, "/keys")).unwrap();
        gz.finish().unwrap();
        let verdict = |logs: Vec<PathBuf>| {
            let args = IdleArgs {
                logs,
                window: "30d".into(),
                config: None,
                format: Format::Json,
                numeric: true,
                now: Some(UNIX_EPOCH + Duration::from_secs(NOW)),
            };
            run(&args, &mut Vec::new()).unwrap()
        };
        assert_eq!(verdict(vec![current.clone()]), Verdict::Unproven);
        assert_eq!(verdict(vec![current, rotated]), Verdict::Idle);
    }

    #[test]
    fn bad_windows_are_refused() {
        for bad in ["", "30", "0d", "d", "-1d", "1y", "30 days"] {
            let args = IdleArgs {
                logs: vec![PathBuf::from("/nonexistent")],
                window: bad.into(),
                config: None,
                format: Format::Table,
                numeric: true,
                now: None,
            };
            let e = run(&args, &mut Vec::new()).unwrap_err();
            assert!(e.starts_with("invalid --idle-for"), "{bad}: {e}");
        }
    }

    /// The fields the idle check takes from the report's parser are the writer's.
    #[test]
    fn fields_are_the_schemas() {
        use crate::audit::schema::field;
        let line = format!(
            r#"{{"{}":1,"{}":"{}","{}":"open","{}":"/a","{}":"/r","{}":5,"{}":6,"{}":"c","{}":"e","{}":"ok","{}":2}}"#,
            field::V,
            field::TS,
            ts(0),
            field::OP,
            field::PATH,
            field::MAP,
            field::UID,
            field::PID,
            field::COMM,
            field::EXE,
            field::RESULT,
            field::COUNT
        );
        let ev: RawEvent<'_> = serde_json::from_str(&line).unwrap();
        assert_eq!(ev.uid, Some(5));
        assert_eq!(ev.pid, Some(6));
        assert_eq!(ev.count, Some(2));
        assert_eq!(ev.map.map(|m| m.0.into_owned()), Some("/r".into()));
    }
}
