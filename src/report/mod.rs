//! `relocfs report`: summarises audit logs (plain, rotated, gzip) into who still uses the legacy path.
//!
//! The logs are streamed line by line and aggregated on the fly, so memory grows with the
//! number of distinct paths, processes, users and rules, never with the number of events.
//! Every string seen is interned once; the aggregation maps are keyed by small integer ids.
//! Bad lines are counted, not fatal: a log being written has a half-written last line, and
//! an operator wants the rest of the report anyway.
//!
//! The way through: [`read`] (files, gzip, line-aligned chunks, parsing threads) →
//! [`parse`] (one line into the aggregation, by [`crate::audit::schema`]'s names; the time
//! arguments, over [`crate::time`]) → [`aggregate`] (one tuple per distinct event, within
//! the memory budget) → [`sections`] (the report document) → [`render`] (table, CSV, JSON:
//! every name from the log made safe to print).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::{mpsc, Mutex, PoisonError};
use std::time::SystemTime;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::Serialize;

use crate::time::{self, MICROS_PER_SEC, SECS_PER_DAY};

mod aggregate;
pub mod idle;
mod parse;
mod read;
mod render;
mod sections;
#[cfg(test)]
mod tests;

use aggregate::*;
pub(crate) use parse::parse_relative;
pub use parse::parse_size;
use parse::*;
use read::*;
use render::*;
use sections::*;

/// Default of `--max-memory`: what the aggregation may use before it summarises rows.
pub const DEFAULT_MAX_MEMORY: u64 = 512 << 20;

/// Id of "not logged" (no exe, no rule) in keys, so keys stay plain integer tuples.
const NONE: u32 = u32::MAX;

/// Results shown in the denials section: permission denied, not permitted, read-only.
const DENIAL_RESULTS: [&str; 3] = ["EACCES", "EPERM", "EROFS"];

/// What section 2 of the report groups events by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// The directory of the legacy path (for opendir, the directory itself)
    #[default]
    Path,
    /// The process: its name (comm) and executable when logged
    Process,
    /// The user id (with its login name from this machine's user database)
    User,
    /// The mapping rule (its `from`)
    Rule,
    /// The caller's service: systemd unit (and the user's unit below user@UID.service) and
    /// container
    Unit,
    /// The host that logged the event (for logs of many hosts)
    Host,
}

impl GroupBy {
    fn name(self) -> &'static str {
        match self {
            GroupBy::Path => "path",
            GroupBy::Process => "process",
            GroupBy::User => "user",
            GroupBy::Rule => "rule",
            GroupBy::Unit => "unit",
            GroupBy::Host => "host",
        }
    }
}

/// Output format of the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned plain-text tables, for a terminal
    #[default]
    Table,
    /// One JSON document with every section
    Json,
    /// The grouping rows only (header line + rows)
    Csv,
}

/// Everything `relocfs report` takes from the command line.
#[derive(Debug, Clone)]
pub struct ReportArgs {
    /// Audit logs, in any order: plain, rotated (.1, .2) or gzip-compressed (detected by
    /// content, not name).
    pub logs: Vec<PathBuf>,
    /// Only events at or after this: RFC 3339 timestamp, date `YYYY-MM-DD` (midnight UTC) or
    /// relative to now (`30s`, `15m`, `12h`, `7d`, `2w`).
    pub since: Option<String>,
    /// Only events strictly before this (same forms), so consecutive windows never overlap.
    pub until: Option<String>,
    pub by: GroupBy,
    pub format: Format,
    /// Rows per section; 0 means all.
    pub limit: usize,
    /// Memory the aggregation may use (bytes, estimated) before it summarises the rows of
    /// the users with the most distinct events; 0: no cap. Totals stay exact either way.
    pub max_memory: u64,
    /// Uids only: no login names from this machine's user database (for logs of other
    /// hosts, whose users this one may not know or number differently).
    pub numeric: bool,
    /// The current time, for tests; `None` means `SystemTime::now()`.
    pub now: Option<SystemTime>,
}

impl Default for ReportArgs {
    fn default() -> ReportArgs {
        ReportArgs {
            logs: Vec::new(),
            since: None,
            until: None,
            by: GroupBy::Path,
            format: Format::Table,
            limit: 10,
            max_memory: DEFAULT_MAX_MEMORY,
            numeric: false,
            now: None,
        }
    }
}

/// Reads `args.logs`, aggregates them and writes the report in `args.format` to `out`.
///
/// Errors (one line each, meant to be prefixed with `relocfs: `): an invalid `--since` or
/// `--until`, a log that cannot be opened or read at all, a failed write. A broken pipe
/// (`relocfs report | head`) is not an error. Malformed lines and a log that becomes
/// unreadable midway (a truncated `.gz`) are reported inside the report instead.
///
/// The JSON document (`--format json`) has these stable fields; timestamps are RFC 3339 UTC
/// strings with microseconds, absent values are `null`:
///
/// ```text
/// totals:     events (sum of `count`), lost_events (sum of "dropped" counts),
///             lower_bounds (lost_events > 0: every figure is a lower bound),
///             suppressed_events (not logged: the daemon's per-user rate limit; not in
///             events), truncated_events (events with a name the daemon shortened),
///             summarised_events (events in summarised rows), max_memory (bytes, 0: none),
///             malformed_lines, overlong_lines (of those, longer than 8 MiB),
///             newer_version_lines (schema newer than 1: skipped),
///             files_read, hosts (distinct `host` values; 0 for logs without them),
///             outside_window (events skipped by since/until),
///             first_seen, last_seen, since, until, now,
///             files: [{path, gzip, lines, malformed, overlong, newer_version, error}]
///                    (error: a read error midway)
/// groups:     by ("path"|"process"|"user"|"rule"|"unit"|"host"), total (rows before --limit),
///             rows: [{key, <by fields>, hits, processes, users, paths, first_seen, last_seen,
///                     <marks>}]
///             <by fields>: path: directory; process: comm, exe; user: uid, user,
///             suppressed; rule: rule; unit: unit, user_unit, container; host: host
/// processes:  total, rows: [{comm, exe, uid, user, unit, user_unit, container, host, hits,
///                            paths, first_seen, last_seen, <marks>}]
/// misses:     total, rows: [{path, hits, processes: [{comm, hits, <marks>}],
///                            hosts: [{host, hits, <marks>}], first_seen, last_seen, <marks>}]
/// denials:    total, rows: [{op, path, result, hits, processes: [{comm, hits, <marks>}],
///                            hosts: [...], first_seen, last_seen, <marks>}]
/// suppressed: total, rows: [{uid, user, events, first_seen, last_seen}]
/// verdict:    text, last_access: null | {ts, ago_seconds, op, path, result, comm, exe, uid,
///                                        user, unit, user_unit, container, host, <marks>}
/// user:       the uid's login name in this machine's user database (null: none, or
///             --numeric); the uid is always given beside it
/// <marks>:    escaped: [field names whose value is not UTF-8, shown encoded: \\, \xHH],
///             truncated: [field names the daemon shortened],
///             summarised (the row holds events folded to stay within max_memory; its
///             names are "" where it is keyed by them, its distinct counts lower bounds)
/// ```
///
/// `processes`/`paths`/`users` in rows are counts of distinct values; in misses and denials
/// `processes` lists every process name with its hits, most hits first.
pub fn run(args: &ReportArgs, out: &mut dyn Write) -> Result<(), String> {
    if args.logs.is_empty() {
        return Err("no audit log given".into());
    }
    let now = time::micros_since_epoch(args.now.unwrap_or_else(SystemTime::now));
    let window = Window::new(args.since.as_deref(), args.until.as_deref(), now)?;
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let (agg, files) = aggregate(&args.logs, window, workers, args.max_memory)?;
    let mut report = agg.into_report(args.by, files, args.limit, now, !args.numeric);
    report.totals.max_memory = args.max_memory;
    let written = match args.format {
        Format::Table => write_table(&report, out),
        Format::Json => write_json(&report, out),
        Format::Csv => write_csv(&report, out),
    }
    .and_then(|()| out.flush());
    match written {
        Ok(()) => Ok(()),
        // The reader (head, less) has seen enough; that is not a failure of the report.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("cannot write the report: {e}")),
    }
}
