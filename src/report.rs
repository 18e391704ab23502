//! `relocfs report`: summarises audit logs (plain, rotated, gzip) into who still uses the legacy path.
//!
//! The logs are streamed line by line and aggregated on the fly, so memory grows with the
//! number of distinct paths, processes, users and rules, never with the number of events.
//! Every string seen is interned once; the aggregation maps are keyed by small integer ids.
//! Bad lines are counted, not fatal: a log being written has a half-written last line, and
//! an operator wants the rest of the report anyway.

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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::Serialize;

use crate::audit::format_rfc3339;

/// Large reads amortise syscalls and (for gzip) decoder calls; 256 KiB is far past the
/// point of diminishing returns and still trivial memory.
const READ_BUFFER: usize = 256 * 1024;

/// Longest line accepted. Real lines are two paths plus small fields (and maybe a command
/// line, which Linux caps at a few MiB); anything longer is garbage, and the cap keeps a file
/// without newlines from being read into memory whole.
const MAX_LINE: usize = 8 * 1024 * 1024;

/// Lines are handed to the parsing workers in chunks of about this size: large enough that
/// the channel costs nothing per line, small enough that a few in flight are little memory.
const CHUNK: usize = 1024 * 1024;

/// Upper bound on parsing threads; past the point where reading (or gunzip) is the limit.
const MAX_WORKERS: usize = 8;

/// Default of `--max-memory`: what the aggregation may use before it summarises rows.
pub const DEFAULT_MAX_MEMORY: u64 = 512 << 20;

/// Estimated heap bytes per tuple: the tuple (64), its slot in the key index, and the slack
/// of both growing by doubling.
const TUPLE_COST: usize = 160;

/// Estimated heap bytes per interned string beside its text: the shared allocation, its
/// entry in the id map and in the names vector, with their slack.
const STRING_COST: usize = 120;

/// Of `--max-memory`, the share the merged aggregation may hold; the workers' partial
/// aggregations share as much again, and the sections built at the end need about as much
/// as the merged aggregation. Measured: see README ("Reports").
const BUDGET_SHARE: u64 = 2;

const MICROS_PER_SEC: i64 = 1_000_000;
const SECS_PER_DAY: i64 = 86_400;

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
    /// The user id
    User,
    /// The mapping rule (its `from`)
    Rule,
}

impl GroupBy {
    fn name(self) -> &'static str {
        match self {
            GroupBy::Path => "path",
            GroupBy::Process => "process",
            GroupBy::User => "user",
            GroupBy::Rule => "rule",
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
///             files_read, outside_window (events skipped by since/until),
///             first_seen, last_seen, since, until, now,
///             files: [{path, gzip, lines, malformed, overlong, newer_version, error}]
///                    (error: a read error midway)
/// groups:     by ("path"|"process"|"user"|"rule"), total (rows before --limit),
///             rows: [{key, <by fields>, hits, processes, users, paths, first_seen, last_seen,
///                     <marks>}]
///             <by fields>: path: directory; process: comm, exe; user: uid, suppressed;
///             rule: rule
/// processes:  total, rows: [{comm, exe, uid, hits, paths, first_seen, last_seen, <marks>}]
/// misses:     total, rows: [{path, hits, processes: [{comm, hits, <marks>}], first_seen,
///                            last_seen, <marks>}]
/// denials:    total, rows: [{op, path, result, hits, processes: [{comm, hits, <marks>}],
///                            first_seen, last_seen, <marks>}]
/// suppressed: total, rows: [{uid, events, first_seen, last_seen}]
/// verdict:    text, last_access: null | {ts, ago_seconds, op, path, result, comm, exe, uid,
///                                        <marks>}
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
    let now = micros_of(args.now.unwrap_or_else(SystemTime::now));
    let window = Window::new(args.since.as_deref(), args.until.as_deref(), now)?;
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let (agg, files) = aggregate(&args.logs, window, workers, args.max_memory)?;
    let mut report = agg.into_report(args.by, files, args.limit, now);
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

// ---------------------------------------------------------------------------------------
// Reading

/// Per-file figures, shown so an operator can tell which file had the bad lines.
#[derive(Debug, Clone, Serialize)]
struct FileStats {
    path: String,
    gzip: bool,
    /// Non-blank lines read.
    lines: u64,
    malformed: u64,
    /// Of the malformed lines, those longer than [`MAX_LINE`] (skipped unread).
    overlong: u64,
    /// Lines of a schema version newer than [`SCHEMA_VERSION`]: skipped, not misread.
    newer_version: u64,
    /// Set when reading stopped early (e.g. a truncated or corrupt `.gz`); the lines before
    /// it still count.
    error: Option<String>,
}

/// What became of the lines of one file. Invariant: `lines == accepted + malformed + newer`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct LineCounts {
    /// Non-blank lines.
    lines: u64,
    /// Read as an access, a `dropped` or a `suppressed` line.
    accepted: u64,
    malformed: u64,
    /// Of the malformed, those longer than [`MAX_LINE`].
    overlong: u64,
    /// Of a newer schema version than this report knows.
    newer: u64,
}

impl LineCounts {
    fn add(&mut self, other: &LineCounts) {
        self.lines += other.lines;
        self.accepted += other.accepted;
        self.malformed += other.malformed;
        self.overlong += other.overlong;
        self.newer += other.newer;
    }
}

/// A run of whole lines of one file (only a file's last chunk may end without a newline).
struct Chunk {
    file: usize,
    data: Vec<u8>,
}

/// What one worker has aggregated.
struct Partial {
    agg: Aggregator,
    /// Indexed by file.
    counts: Vec<LineCounts>,
    line: Vec<u8>,
}

impl Partial {
    fn new(window: Window, files: usize, budget: usize) -> Partial {
        Partial {
            agg: Aggregator::new(window, budget),
            counts: vec![LineCounts::default(); files],
            line: Vec::with_capacity(1024),
        }
    }

    fn process(&mut self, chunk: &Chunk) {
        let Partial { agg, counts, line } = self;
        let Some(counts) = counts.get_mut(chunk.file) else {
            return;
        };
        // A slice is a BufRead that cannot fail.
        let _ = for_each_line(&mut &chunk.data[..], line, |l| agg.line(l, counts));
    }
}

/// Reads every log and aggregates it, in parallel when more than one core is available: the
/// calling thread reads (and decompresses) line-aligned chunks, workers parse them into
/// their own aggregators, merged at the end. Parsing JSON is the bulk of the work; the
/// aggregation is commutative, so the split changes nothing in the result.
fn aggregate(
    logs: &[PathBuf],
    window: Window,
    workers: usize,
    max_memory: u64,
) -> Result<(Aggregator, Vec<FileStats>), String> {
    let workers = workers.clamp(1, MAX_WORKERS);
    let nfiles = logs.len();
    let share = |n: u64| {
        if max_memory == 0 {
            usize::MAX
        } else {
            usize::try_from(max_memory / BUDGET_SHARE / n).unwrap_or(usize::MAX)
        }
    };
    let (total_budget, worker_budget) = (share(1), share(workers as u64));
    // Bounded: the reader waits rather than buffering a whole file ahead of the workers.
    let (tx, rx) = mpsc::sync_channel::<Chunk>(workers * 2);
    let rx = Mutex::new(rx);
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        if workers > 1 {
            for n in 0..workers {
                let rx = &rx;
                let spawned = std::thread::Builder::new()
                    .name(format!("relocfs-report-{n}"))
                    .spawn_scoped(scope, move || {
                        let mut partial = Partial::new(window, nfiles, worker_budget);
                        loop {
                            // Holding the lock while waiting is fine: whoever holds it gets
                            // the next chunk, the others would only wait on the channel.
                            let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                            match next {
                                Ok(chunk) => partial.process(&chunk),
                                Err(_) => return partial,
                            }
                        }
                    });
                match spawned {
                    Ok(handle) => handles.push(handle),
                    // Fewer workers (or none: then the reader parses too) still works.
                    Err(_) => break,
                }
            }
        }

        let mut inline = Partial::new(window, nfiles, total_budget);
        let mut files = Vec::with_capacity(nfiles);
        let mut failed = None;
        {
            let mut sink = |chunk: Chunk| {
                if handles.is_empty() {
                    inline.process(&chunk);
                } else if let Err(mpsc::SendError(chunk)) = tx.send(chunk) {
                    // Every worker is gone (only a panic can do that): finish here.
                    inline.process(&chunk);
                }
            };
            for (index, path) in logs.iter().enumerate() {
                match read_chunks(path, index, &mut sink) {
                    Ok(stats) => files.push(stats),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        drop(tx);
        let mut partials = vec![inline];
        for handle in handles {
            match handle.join() {
                Ok(partial) => partials.push(partial),
                Err(_) => return Err("internal error: a report worker failed".to_owned()),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let mut partials = partials.into_iter();
        let Some(mut total) = partials.next() else {
            return Err("internal error: no report worker".to_owned());
        };
        for partial in partials {
            total.agg.absorb(&partial.agg);
            for (sum, c) in total.counts.iter_mut().zip(&partial.counts) {
                sum.add(c);
            }
        }
        for (stats, c) in files.iter_mut().zip(&total.counts) {
            stats.lines += c.lines;
            stats.malformed += c.malformed;
            stats.overlong += c.overlong;
            stats.newer_version += c.newer;
        }
        Ok((total.agg, files))
    })
}

/// Reads one log into line-aligned chunks passed to `sink`. An error only if the file
/// cannot be opened or read at all; a read error later (a truncated `.gz`) ends the file
/// and is recorded in its stats, keeping what was read before.
fn read_chunks(
    path: &Path,
    index: usize,
    sink: &mut dyn FnMut(Chunk),
) -> Result<FileStats, String> {
    let cannot = |e: io::Error| format!("cannot read audit log {}: {e}", path.display());
    let file = File::open(path).map_err(cannot)?;
    let mut raw = BufReader::with_capacity(READ_BUFFER, file);
    // Rotation tools name compressed files inconsistently (or not at all), so trust the
    // content. This first read is also what fails for a directory: a file we cannot read at
    // all is an error, not an empty log.
    let gzip = raw.fill_buf().map_err(cannot)?.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn BufRead> = if gzip {
        // Multi-member: `cat a.gz b.gz` and some compressors produce several gzip members.
        Box::new(BufReader::with_capacity(
            READ_BUFFER,
            flate2::bufread::MultiGzDecoder::new(raw),
        ))
    } else {
        Box::new(raw)
    };
    let mut stats = FileStats {
        path: path.display().to_string(),
        gzip,
        lines: 0,
        malformed: 0,
        overlong: 0,
        newer_version: 0,
        error: None,
    };
    loop {
        let mut data = Vec::with_capacity(CHUNK + 4096);
        let read = <&mut dyn BufRead as Read>::take(&mut *reader, CHUNK as u64)
            .read_to_end(&mut data)
            .and_then(|n| {
                if n < CHUNK {
                    return Ok(true);
                }
                // Complete the last line so every chunk holds whole lines.
                let start = data.len();
                let n = <&mut dyn BufRead as Read>::take(&mut *reader, MAX_LINE as u64 + 1)
                    .read_until(b'\n', &mut data)?;
                if n > MAX_LINE && data.last() != Some(&b'\n') {
                    // Overlong: cut it off here and drop the rest of it unread.
                    let line_start = data
                        .get(..start)
                        .and_then(|head| head.iter().rposition(|&b| b == b'\n'))
                        .map_or(0, |i| i + 1);
                    data.truncate(line_start);
                    stats.lines += 1;
                    stats.malformed += 1;
                    stats.overlong += 1;
                    return skip_line(&mut *reader);
                }
                Ok(n == 0)
            });
        let eof = match read {
            Ok(eof) => eof,
            Err(e) => {
                // What was read before the error still counts; a half line at its end is
                // counted as malformed like any truncated line.
                stats.error = Some(e.to_string());
                true
            }
        };
        if !data.is_empty() {
            sink(Chunk { file: index, data });
        }
        if eof {
            return Ok(stats);
        }
    }
}

/// Discards input up to and including the next newline; `Ok(true)` at end of file.
fn skip_line(reader: &mut dyn BufRead) -> io::Result<bool> {
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(true);
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(false);
            }
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

/// Calls `f` with each line (without its newline), or `None` for a line longer than
/// [`MAX_LINE`], which is skipped without being held in memory. `line` is the reused buffer.
fn for_each_line(
    reader: &mut dyn BufRead,
    line: &mut Vec<u8>,
    mut f: impl FnMut(Option<&[u8]>),
) -> io::Result<()> {
    let cap = MAX_LINE as u64 + 1;
    loop {
        line.clear();
        // read_until uses std's word-at-a-time memchr: twice as fast as a byte loop here.
        if <&mut dyn BufRead as Read>::take(&mut *reader, cap).read_until(b'\n', line)? == 0 {
            return Ok(());
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            f(Some(line));
        } else if line.len() <= MAX_LINE {
            // End of file without a newline: a half-written line, or merely unterminated;
            // the parser decides which.
            f(Some(line));
        } else {
            // Overlong: drop the rest of it, a bounded chunk at a time.
            loop {
                line.clear();
                let n =
                    <&mut dyn BufRead as Read>::take(&mut *reader, cap).read_until(b'\n', line)?;
                if n == 0 || line.last() == Some(&b'\n') {
                    break;
                }
            }
            f(None);
        }
    }
}

/// A string field borrowed from the line when it has no escapes (the common case), owned
/// otherwise. `Option<Cow<str>>` would always allocate: serde only borrows a bare `Cow`.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Str<'a>, D::Error> {
        struct StrVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for StrVisitor<'a> {
            type Value = Cow<'a, str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        deserializer
            .deserialize_str(StrVisitor(PhantomData))
            .map(Str)
    }
}

/// The fields of an audit line the report uses; everything else (pid, gid, target, flags,
/// cmdline, future fields) is skipped by the parser. All optional here so a missing field is
/// a malformed line we count rather than a parse error.
#[derive(serde::Deserialize)]
struct RawEvent<'a> {
    /// Schema version; absent is read as 1 (hand-written lines), 0 is malformed.
    v: Option<u64>,
    #[serde(borrow)]
    ts: Option<Str<'a>>,
    #[serde(borrow)]
    op: Option<Str<'a>>,
    #[serde(borrow)]
    path: Option<Str<'a>>,
    #[serde(borrow)]
    map: Option<Str<'a>>,
    uid: Option<u32>,
    #[serde(borrow)]
    comm: Option<Str<'a>>,
    #[serde(borrow)]
    exe: Option<Str<'a>>,
    #[serde(borrow)]
    result: Option<Str<'a>>,
    /// Collapsed repeats: the line stands for `count` identical events (default 1).
    count: Option<u64>,
    /// Fields whose value was not valid UTF-8 and is encoded: `\\` for a backslash, `\xHH`
    /// for each byte that is not part of valid UTF-8.
    #[serde(borrow)]
    escaped: Option<Vec<Str<'a>>>,
    /// Fields the daemon shortened (head, `…[N bytes]…`, tail).
    #[serde(borrow)]
    truncated: Option<Vec<Str<'a>>>,
}

/// Only the schema version, for a line that does not parse as a known event.
#[derive(serde::Deserialize)]
struct VersionOnly {
    v: Option<u64>,
}

/// The schema version this report reads (the `v` the audit writer puts in every line).
const SCHEMA_VERSION: u64 = 1;

// Flags of an event key: per field, whether the value is escaped (not UTF-8) or truncated.
// Two values that read the same but differ here are different names and never merged.
const PATH_ESCAPED: u16 = 1;
const PATH_TRUNCATED: u16 = 1 << 1;
const COMM_ESCAPED: u16 = 1 << 2;
const COMM_TRUNCATED: u16 = 1 << 3;
const EXE_ESCAPED: u16 = 1 << 4;
const EXE_TRUNCATED: u16 = 1 << 5;
const MAP_ESCAPED: u16 = 1 << 6;
const MAP_TRUNCATED: u16 = 1 << 7;
/// A tuple that stands for many, folded to stay within the memory cap: path, comm and exe
/// are not known (empty), op, result, uid and rule are.
const SUMMARISED: u16 = 1 << 8;

/// The flags that belong to each name of a key (a summarised key has no names at all).
const PATH_FLAGS: u16 = PATH_ESCAPED | PATH_TRUNCATED | SUMMARISED;
const COMM_FLAGS: u16 = COMM_ESCAPED | COMM_TRUNCATED | SUMMARISED;
const EXE_FLAGS: u16 = EXE_ESCAPED | EXE_TRUNCATED | SUMMARISED;
const MAP_FLAGS: u16 = MAP_ESCAPED | MAP_TRUNCATED;

/// The `escaped`/`truncated` flags of a field name the report uses; 0 for the others.
fn field_flag(field: &str, escaped: bool) -> u16 {
    let (e, t) = match field {
        "path" => (PATH_ESCAPED, PATH_TRUNCATED),
        "comm" => (COMM_ESCAPED, COMM_TRUNCATED),
        "exe" => (EXE_ESCAPED, EXE_TRUNCATED),
        "map" => (MAP_ESCAPED, MAP_TRUNCATED),
        _ => return 0,
    };
    if escaped {
        e
    } else {
        t
    }
}

/// What a line turned out to be, when it is not malformed.
enum Outcome {
    Accepted,
    /// A schema version newer than [`SCHEMA_VERSION`]: skipped and counted.
    Newer,
}

/// What makes two events "the same" for every section of the report; borrowed from the line.
#[derive(Hash)]
struct EventKey<'a> {
    op: &'a str,
    path: &'a str,
    map: Option<&'a str>,
    uid: u32,
    comm: &'a str,
    exe: Option<&'a str>,
    result: &'a str,
    /// [`PATH_ESCAPED`] and the others.
    flags: u16,
}

/// The time window of `--since`/`--until`, in microseconds since the epoch, half-open.
#[derive(Debug, Clone, Copy)]
struct Window {
    since: Option<i64>,
    until: Option<i64>,
}

impl Window {
    fn new(since: Option<&str>, until: Option<&str>, now: i64) -> Result<Window, String> {
        let since = since.map(|s| parse_when(s, now, "--since")).transpose()?;
        let until = until.map(|s| parse_when(s, now, "--until")).transpose()?;
        if let (Some(s), Some(u)) = (since, until) {
            if s >= u {
                return Err(format!(
                    "--since ({}) is not before --until ({})",
                    fmt_ts_short(s),
                    fmt_ts_short(u)
                ));
            }
        }
        Ok(Window { since, until })
    }

    fn contains(&self, ts: i64) -> bool {
        self.since.is_none_or(|s| ts >= s) && self.until.is_none_or(|u| ts < u)
    }
}

// ---------------------------------------------------------------------------------------
// Aggregation

/// FxHash (as in rustc), for maps keyed by numbers we produce ourselves (ids, or hashes that
/// are already keyed SipHash), where a fast unkeyed hash is safe. Strings from the log, which
/// users control, always go through std's randomly keyed hasher first.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(u64::from(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;
type IdSet = HashSet<u64, BuildHasherDefault<FxHasher>>;

/// Every distinct string gets one id and one allocation, made the first time it is seen.
#[derive(Default)]
struct Interner {
    ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
    /// Estimated heap bytes held, for the memory cap: [`STRING_COST`] plus the text each.
    bytes: usize,
}

impl Interner {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        // More than 4 billion distinct strings cannot fit in memory anyway; saturating keeps
        // this panic-free, and NONE is never handed out as a real id.
        let id = u32::try_from(self.names.len()).map_or(NONE - 1, |n| n.min(NONE - 1));
        let name: Arc<str> = Arc::from(s);
        self.names.push(Arc::clone(&name));
        self.ids.insert(name, id);
        self.bytes = self.bytes.saturating_add(STRING_COST + s.len());
        id
    }

    fn get(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |s| s)
    }

    fn opt(&self, id: u32) -> Option<&str> {
        (id != NONE).then(|| self.get(id))
    }

    fn opt_id(&mut self, s: Option<&str>) -> u32 {
        s.map_or(NONE, |s| self.id(s))
    }
}

/// Hits and first/last time: what every row of every section carries.
#[derive(Clone, Copy)]
struct Seen {
    hits: u64,
    first: i64,
    last: i64,
}

impl Seen {
    fn new() -> Seen {
        Seen {
            hits: 0,
            first: i64::MAX,
            last: i64::MIN,
        }
    }

    fn add(&mut self, ts: i64, count: u64) {
        self.hits = self.hits.saturating_add(count);
        self.first = self.first.min(ts);
        self.last = self.last.max(ts);
    }

    fn merge(&mut self, other: &Seen) {
        self.hits = self.hits.saturating_add(other.hits);
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
    }
}

/// All events with one [`EventKey`], the key stored as interned ids.
struct Tuple {
    op: u32,
    path: u32,
    map: u32,
    uid: u32,
    comm: u32,
    exe: u32,
    result: u32,
    /// [`PATH_ESCAPED`] and the others.
    flags: u16,
    seen: Seen,
    /// Next tuple whose key hashed to the same 64-bit value, or NONE.
    next: u32,
}

impl Tuple {
    /// The key of this tuple, its strings from `s`.
    fn key<'s>(&self, s: &'s Interner) -> EventKey<'s> {
        EventKey {
            op: s.get(self.op),
            path: s.get(self.path),
            map: s.opt(self.map),
            uid: self.uid,
            comm: s.get(self.comm),
            exe: s.opt(self.exe),
            result: s.get(self.result),
            flags: self.flags,
        }
    }
}

/// The largest `level` such that `sum(min(count, level)) <= allowed`: each uid keeps at most
/// `level` exact tuples. `counts` is sorted in place.
fn water_level(counts: &mut [usize], allowed: usize) -> usize {
    counts.sort_unstable();
    let mut used = 0usize;
    let mut left = counts.len();
    for &c in counts.iter() {
        // Every uid from here on has at least `c`: can all of them keep `c`?
        let all = c.saturating_mul(left);
        if used.saturating_add(all) > allowed {
            return (allowed - used) / left.max(1);
        }
        used += c;
        left -= 1;
    }
    usize::MAX
}

/// The on-the-fly aggregation: one [`Tuple`] per distinct event key. Real logs repeat the
/// same few thousand (process, path, result) combinations millions of times, so per event
/// this is one keyed hash of the borrowed fields, one lookup and a compare; strings are
/// copied only the first time a combination appears. The sections (groups, processes,
/// misses, denials, distinct counts) are all derived from the tuples at the end, which also
/// makes the report independent of the order the logs are read in.
struct Aggregator {
    window: Window,
    strings: Interner,
    /// Keyed (random per run) so crafted paths in a log cannot force collisions.
    hasher: std::collections::hash_map::RandomState,
    /// Key hash → first tuple of its chain.
    heads: IdMap<u64, u32>,
    tuples: Vec<Tuple>,
    events: u64,
    lost: u64,
    outside: u64,
    /// Events the daemon did not write (its per-user rate limit), by uid.
    suppressed: IdMap<u32, Seen>,
    /// Events with a field the daemon shortened.
    truncated: u64,
    /// Estimated bytes this aggregation may hold before it summarises ([`Aggregator::compact`]).
    budget: usize,
}

impl Aggregator {
    fn new(window: Window, budget: usize) -> Aggregator {
        Aggregator {
            budget,
            window,
            strings: Interner::default(),
            hasher: std::collections::hash_map::RandomState::new(),
            heads: IdMap::default(),
            tuples: Vec::new(),
            events: 0,
            lost: 0,
            outside: 0,
            suppressed: IdMap::default(),
            truncated: 0,
        }
    }

    fn line(&mut self, line: Option<&[u8]>, stats: &mut LineCounts) {
        let Some(line) = line else {
            stats.lines += 1;
            stats.malformed += 1;
            stats.overlong += 1;
            return;
        };
        // trim also drops the \r of a log that went through a CRLF tool.
        let line = line.trim_ascii();
        if line.is_empty() {
            // Blank lines carry no event and are not damage (e.g. an editor's final newline).
            return;
        }
        stats.lines += 1;
        match self.event(line) {
            Some(Outcome::Accepted) => stats.accepted += 1,
            Some(Outcome::Newer) => stats.newer += 1,
            None => stats.malformed += 1,
        }
    }

    /// Parses and adds one line; `None` if it is malformed.
    fn event(&mut self, line: &[u8]) -> Option<Outcome> {
        // One UTF-8 check of the whole line, then the str parser: serde_json's slice parser
        // re-validates every string and runs at half the speed.
        let line = std::str::from_utf8(line).ok()?;
        let raw: RawEvent = match serde_json::from_str(line) {
            Ok(raw) => raw,
            // A newer schema may have changed a field this report reads: say that, rather
            // than call the line damaged.
            Err(_) => {
                return match serde_json::from_str::<VersionOnly>(line) {
                    Ok(VersionOnly { v: Some(v) }) if v > SCHEMA_VERSION => Some(Outcome::Newer),
                    _ => None,
                }
            }
        };
        match raw.v {
            Some(0) => return None,
            Some(v) if v > SCHEMA_VERSION => return Some(Outcome::Newer),
            _ => {}
        }
        let ts = parse_rfc3339(&raw.ts?.0)?;
        let op = raw.op?;
        let count = raw.count.unwrap_or(1);
        if op.0 == "dropped" {
            if self.window.contains(ts) {
                self.lost = self.lost.saturating_add(count);
            }
            return Some(Outcome::Accepted);
        }
        if op.0 == "suppressed" {
            // Events the daemon did not write because `uid` exceeded its rate limit: counted
            // for the user, never as accesses of a path (there is none).
            let (uid, count) = (raw.uid?, raw.count?);
            if self.window.contains(ts) && count > 0 {
                self.suppressed
                    .entry(uid)
                    .or_insert_with(Seen::new)
                    .add(ts, count);
            }
            return Some(Outcome::Accepted);
        }
        // Checked before the window so whether a line is malformed never depends on it.
        let (path, comm, result, uid) = (raw.path?, raw.comm?, raw.result?, raw.uid?);
        let mut flags = 0;
        for (list, escaped) in [(&raw.escaped, true), (&raw.truncated, false)] {
            for field in list.iter().flatten() {
                flags |= field_flag(&field.0, escaped);
            }
        }
        if raw.exe.is_none() {
            flags &= !EXE_FLAGS;
        }
        if raw.map.is_none() {
            flags &= !MAP_FLAGS;
        }
        if !self.window.contains(ts) {
            self.outside = self.outside.saturating_add(count);
            return Some(Outcome::Accepted);
        }
        if count == 0 {
            // Stands for no event at all.
            return Some(Outcome::Accepted);
        }
        if raw.truncated.as_ref().is_some_and(|t| !t.is_empty()) {
            self.truncated = self.truncated.saturating_add(count);
        }
        let key = EventKey {
            op: &op.0,
            path: &path.0,
            map: raw.map.as_ref().map(|m| &*m.0),
            uid,
            comm: &comm.0,
            exe: raw.exe.as_ref().map(|e| &*e.0),
            result: &result.0,
            flags,
        };
        self.add(&key, ts, count);
        Some(Outcome::Accepted)
    }

    fn add(&mut self, key: &EventKey<'_>, ts: i64, count: u64) {
        self.events = self.events.saturating_add(count);
        let mut seen = Seen::new();
        seen.add(ts, count);
        if self.merge_tuple(key, &seen) && self.mem() > self.budget {
            self.compact();
        }
    }

    /// Estimated heap bytes of the aggregation: strings and tuples with their index.
    fn mem(&self) -> usize {
        self.strings
            .bytes
            .saturating_add(self.tuples.len().saturating_mul(TUPLE_COST))
    }

    /// Brings the aggregation back under half its budget by folding tuples into summarised
    /// ones, which keep op, result, uid, rule and every count and time, but no path, process
    /// name or executable. Totals stay exact; only rows lose detail.
    ///
    /// Fair between users: the users with the most distinct tuples are summarised first
    /// (each user keeps at most `level` exact tuples, the most-hit ones, `level` chosen as
    /// high as fits), so a user who floods the log with distinct misses gets their own
    /// misses summarised, not another user's one-off access. Each call at least halves the
    /// memory, so the cost is amortised over the tuples added in between.
    fn compact(&mut self) {
        let target = self.budget / 2;
        let exact = self
            .tuples
            .iter()
            .filter(|t| t.flags & SUMMARISED == 0)
            .count();
        let per_tuple = (self.mem() / self.tuples.len().max(1)).max(1);
        let mut allowed = (target / per_tuple).min(exact);
        loop {
            let mut per_uid: IdMap<u32, usize> = IdMap::default();
            for t in self.tuples.iter().filter(|t| t.flags & SUMMARISED == 0) {
                *per_uid.entry(t.uid).or_default() += 1;
            }
            let mut counts: Vec<usize> = per_uid.into_values().collect();
            let level = water_level(&mut counts, allowed);
            self.rebuild(level);
            if self.mem() <= target {
                return;
            }
            if level == 0 {
                // Only summarised tuples are left, and they alone exceed the target (it
                // takes a vast number of users): raise the budget rather than compact again
                // at every new tuple. They are bounded by ops x results x rules x users.
                self.budget = self.budget.max(self.mem().saturating_mul(2));
                return;
            }
            allowed /= 2;
        }
    }

    /// Keeps, per uid, the `level` most-hit exact tuples and folds the others.
    fn rebuild(&mut self, level: usize) {
        let old_tuples = std::mem::take(&mut self.tuples);
        let old_strings = std::mem::take(&mut self.strings);
        self.heads = IdMap::default();
        // Which tuples stay exact: per uid, by hits, then the most recent, then first seen.
        let mut order: Vec<usize> = (0..old_tuples.len())
            .filter(|&i| old_tuples.get(i).is_some_and(|t| t.flags & SUMMARISED == 0))
            .collect();
        let hits = |i: usize| {
            old_tuples
                .get(i)
                .map_or((0, 0, 0), |t| (t.uid, t.seen.hits, t.seen.last))
        };
        order.sort_unstable_by(|&a, &b| {
            let ((ua, ha, la), (ub, hb, lb)) = (hits(a), hits(b));
            ua.cmp(&ub)
                .then(hb.cmp(&ha))
                .then(lb.cmp(&la))
                .then(a.cmp(&b))
        });
        let mut keep = vec![false; old_tuples.len()];
        let mut run: Option<(u32, usize)> = None;
        for &i in &order {
            let uid = hits(i).0;
            let n = match run {
                Some((u, n)) if u == uid => n + 1,
                _ => 1,
            };
            run = Some((uid, n));
            if n <= level {
                if let Some(k) = keep.get_mut(i) {
                    *k = true;
                }
            }
        }
        drop(order);
        let s = &old_strings;
        for (i, t) in old_tuples.iter().enumerate() {
            let summarise = t.flags & SUMMARISED == 0 && !keep.get(i).copied().unwrap_or(false);
            let key = if summarise {
                EventKey {
                    op: s.get(t.op),
                    path: "",
                    map: s.opt(t.map),
                    uid: t.uid,
                    comm: "",
                    exe: None,
                    result: s.get(t.result),
                    flags: SUMMARISED | (t.flags & MAP_FLAGS),
                }
            } else {
                t.key(s)
            };
            self.merge_tuple(&key, &t.seen);
        }
        self.tuples.shrink_to_fit();
    }

    /// Adds `seen` to the tuple of `key`, creating it the first time the key appears;
    /// `true` if it was created.
    fn merge_tuple(&mut self, key: &EventKey<'_>, seen: &Seen) -> bool {
        let hash = self.hasher.hash_one(key);
        let head = self.heads.get(&hash).copied().unwrap_or(NONE);
        let mut at = head;
        while let Some(tuple) = self.tuples.get(at as usize) {
            if self.matches(tuple, key) {
                if let Some(tuple) = self.tuples.get_mut(at as usize) {
                    tuple.seen.merge(seen);
                }
                return false;
            }
            at = tuple.next;
        }
        // A new combination (or, astronomically rarely, a 64-bit hash collision: chained).
        let Some(index) = u32::try_from(self.tuples.len()).ok().filter(|&i| i != NONE) else {
            // 4 billion distinct combinations would not fit in memory long before this.
            return false;
        };
        let s = &mut self.strings;
        let tuple = Tuple {
            op: s.id(key.op),
            path: s.id(key.path),
            map: s.opt_id(key.map),
            uid: key.uid,
            comm: s.id(key.comm),
            exe: s.opt_id(key.exe),
            result: s.id(key.result),
            flags: key.flags,
            seen: *seen,
            next: head,
        };
        self.tuples.push(tuple);
        self.heads.insert(hash, index);
        true
    }

    /// Adds another worker's aggregation to this one.
    fn absorb(&mut self, other: &Aggregator) {
        self.events = self.events.saturating_add(other.events);
        self.lost = self.lost.saturating_add(other.lost);
        self.outside = self.outside.saturating_add(other.outside);
        self.truncated = self.truncated.saturating_add(other.truncated);
        for (&uid, seen) in &other.suppressed {
            self.suppressed
                .entry(uid)
                .or_insert_with(Seen::new)
                .merge(seen);
        }
        let s = &other.strings;
        for t in &other.tuples {
            if self.merge_tuple(&t.key(s), &t.seen) && self.mem() > self.budget {
                self.compact();
            }
        }
    }

    fn matches(&self, t: &Tuple, key: &EventKey<'_>) -> bool {
        let s = &self.strings;
        t.uid == key.uid
            && t.flags == key.flags
            && s.get(t.path) == key.path
            && s.get(t.comm) == key.comm
            && s.get(t.op) == key.op
            && s.get(t.result) == key.result
            && s.opt(t.exe) == key.exe
            && s.opt(t.map) == key.map
    }

    /// Builds the sections from the tuples: rows sorted by hits (ties by name, so output is
    /// deterministic), owned strings made for the top `limit` rows only.
    fn into_report(self, by: GroupBy, files: Vec<FileStats>, limit: usize, now: i64) -> Report {
        let Aggregator {
            window,
            mut strings,
            tuples,
            events,
            lost,
            outside,
            suppressed,
            truncated,
            ..
        } = self;

        #[derive(Default)]
        struct GroupAgg {
            seen: Option<Seen>,
            comms: IdSet,
            uids: IdSet,
            paths: IdSet,
            summarised: bool,
            suppressed: u64,
        }
        #[derive(Default)]
        struct ProcAgg {
            seen: Option<Seen>,
            paths: IdSet,
        }
        /// A miss or denial: which processes, how often each.
        #[derive(Default)]
        struct HitAgg {
            seen: Option<Seen>,
            comms: IdMap<(u32, u16), u64>,
        }
        fn merge(seen: &mut Option<Seen>, other: &Seen) {
            seen.get_or_insert_with(Seen::new).merge(other);
        }
        /// A name and its flags as one set member: two names that read the same but one is
        /// escaped are two names.
        fn member(id: u32, flags: u16) -> u64 {
            // The id in the low bits: FxHash keeps low zero bits zero, and the table indexes
            // by the low bits.
            u64::from(flags) << 32 | u64::from(id)
        }

        let enoent = strings.id("ENOENT");
        let denied: Vec<u32> = DENIAL_RESULTS.iter().map(|r| strings.id(r)).collect();
        let opendir = strings.id("opendir");
        // Directory of each path and its flags, once per distinct (path, flags, opendir?).
        let mut dirs: IdMap<(u32, u16, bool), (u32, u16)> = IdMap::default();

        let mut span: Option<Seen> = None;
        let mut groups: IdMap<(u32, u32, u16), GroupAgg> = IdMap::default();
        let mut procs: IdMap<(u32, u32, u32, u16), ProcAgg> = IdMap::default();
        let mut misses: IdMap<(u32, u16), HitAgg> = IdMap::default();
        let mut denials: IdMap<(u32, u32, u32, u16), HitAgg> = IdMap::default();
        let mut last: Option<&Tuple> = None;
        let mut summarised_events = 0u64;

        for t in &tuples {
            merge(&mut span, &t.seen);
            if t.flags & SUMMARISED != 0 {
                summarised_events = summarised_events.saturating_add(t.seen.hits);
            }
            let path_flags = t.flags & PATH_FLAGS;
            let proc_flags = t.flags & (COMM_FLAGS | EXE_FLAGS);
            let key = match by {
                GroupBy::Path => {
                    let is_opendir = t.op == opendir;
                    let (dir, dir_flags) = match dirs.get(&(t.path, path_flags, is_opendir)) {
                        Some(&dir) => dir,
                        None => {
                            let name = directory_of(strings.get(t.path), is_opendir).to_owned();
                            let mut flags = path_flags;
                            // The directory of a name that is not UTF-8 may well be UTF-8
                            // (no escape left in it), and the directory of a path shortened
                            // in its last component is whole: then it is the plain directory.
                            if !name.contains('\\') {
                                flags &= !PATH_ESCAPED;
                            }
                            if !name.contains("…[") {
                                flags &= !PATH_TRUNCATED;
                            }
                            let dir = (strings.id(&name), flags);
                            dirs.insert((t.path, path_flags, is_opendir), dir);
                            dir
                        }
                    };
                    (dir, NONE, dir_flags)
                }
                GroupBy::Process => (t.comm, t.exe, proc_flags),
                GroupBy::User => (t.uid, NONE, 0),
                GroupBy::Rule => (t.map, NONE, t.flags & MAP_FLAGS),
            };
            let group = groups.entry(key).or_default();
            merge(&mut group.seen, &t.seen);
            group.comms.insert(member(t.comm, proc_flags));
            group.uids.insert(u64::from(t.uid));
            group.paths.insert(member(t.path, path_flags));
            group.summarised |= t.flags & SUMMARISED != 0;

            let proc = procs.entry((t.comm, t.exe, t.uid, proc_flags)).or_default();
            merge(&mut proc.seen, &t.seen);
            proc.paths.insert(member(t.path, path_flags));

            let hit = if t.result == enoent {
                Some(misses.entry((t.path, path_flags)).or_default())
            } else if denied.contains(&t.result) {
                Some(
                    denials
                        .entry((t.op, t.path, t.result, path_flags))
                        .or_default(),
                )
            } else {
                None
            };
            if let Some(hit) = hit {
                merge(&mut hit.seen, &t.seen);
                let hits = hit.comms.entry((t.comm, t.flags & COMM_FLAGS)).or_default();
                *hits = hits.saturating_add(t.seen.hits);
            }

            if last.is_none_or(|l| access_order(&strings, t, l) == Ordering::Greater) {
                last = Some(t);
            }
        }
        if by == GroupBy::User {
            // A user whose every event was suppressed is still a user of the legacy path.
            for (&uid, seen) in &suppressed {
                groups.entry((uid, NONE, 0)).or_default().suppressed = seen.hits;
            }
        }

        let s = &strings;
        let owned = |id: u32| s.get(id).to_owned();
        let opt_owned = |id: u32| s.opt(id).map(str::to_owned);

        let mut groups: Vec<_> = groups.into_iter().collect();
        let group_name = |key: &(u32, u32, u16)| match by {
            GroupBy::User => (None, key.0, None, key.2),
            GroupBy::Path | GroupBy::Process | GroupBy::Rule => {
                (s.opt(key.0), 0, s.opt(key.1), key.2)
            }
        };
        groups.sort_by(|(ka, a), (kb, b)| {
            hits_of(b.seen.as_ref())
                .cmp(&hits_of(a.seen.as_ref()))
                .then_with(|| b.suppressed.cmp(&a.suppressed))
                .then_with(|| group_name(ka).cmp(&group_name(kb)))
        });
        let groups_total = groups.len();
        // CSV shows only this section: if summarised rows exist but none is within the limit,
        // the biggest of them is kept aside to be shown too.
        let extra = (limit > 0)
            .then(|| groups.iter().position(|(_, g)| g.summarised))
            .flatten()
            .filter(|&i| i >= limit)
            .map(|i| groups.remove(i));
        let group_row = |((k0, k1, flags), g): ((u32, u32, u16), GroupAgg)| {
            let (id, fields): (GroupId, &[Field]) = match by {
                GroupBy::Path => (
                    GroupId::Directory {
                        directory: owned(k0),
                    },
                    &[("directory", PATH_ESCAPED, PATH_TRUNCATED)],
                ),
                GroupBy::Process => (
                    GroupId::Process {
                        comm: owned(k0),
                        exe: opt_owned(k1),
                    },
                    &[
                        ("comm", COMM_ESCAPED, COMM_TRUNCATED),
                        ("exe", EXE_ESCAPED, EXE_TRUNCATED),
                    ],
                ),
                GroupBy::User => (
                    GroupId::User {
                        uid: k0,
                        suppressed: g.suppressed,
                    },
                    &[],
                ),
                GroupBy::Rule => (
                    GroupId::Rule {
                        rule: opt_owned(k0),
                    },
                    &[("rule", MAP_ESCAPED, MAP_TRUNCATED)],
                ),
            };
            let mut marks = Marks::of(flags, fields);
            marks.summarised = g.summarised;
            let (first_seen, last_seen) = seen_times(g.seen.as_ref());
            GroupRow {
                key: id.key(&marks),
                id,
                hits: hits_of(g.seen.as_ref()),
                processes: g.comms.len(),
                users: g.uids.len(),
                paths: g.paths.len(),
                first_seen,
                last_seen,
                marks,
            }
        };
        let extra_summarised = extra.map(group_row);
        let group_rows = limited(groups, limit).map(group_row).collect();

        let mut procs: Vec<_> = procs.into_iter().collect();
        procs.sort_by(|((ca, ea, ua, fa), a), ((cb, eb, ub, fb), b)| {
            hits_of(b.seen.as_ref())
                .cmp(&hits_of(a.seen.as_ref()))
                .then_with(|| s.get(*ca).cmp(s.get(*cb)))
                .then_with(|| s.opt(*ea).cmp(&s.opt(*eb)))
                .then_with(|| ua.cmp(ub))
                .then_with(|| fa.cmp(fb))
        });
        let procs_total = procs.len();
        let proc_rows = limited(procs, limit)
            .map(|((comm, exe, uid, flags), p)| {
                let (first_seen, last_seen) = seen_times(p.seen.as_ref());
                ProcessRow {
                    comm: owned(comm),
                    exe: opt_owned(exe),
                    uid,
                    hits: hits_of(p.seen.as_ref()),
                    paths: p.paths.len(),
                    first_seen,
                    last_seen,
                    marks: Marks::of(flags, PROC_FIELDS),
                }
            })
            .collect();

        let mut misses: Vec<_> = misses.into_iter().collect();
        misses.sort_by(|((pa, fa), a), ((pb, fb), b)| {
            hits_of(b.seen.as_ref())
                .cmp(&hits_of(a.seen.as_ref()))
                .then_with(|| s.get(*pa).cmp(s.get(*pb)))
                .then_with(|| fa.cmp(fb))
        });
        let misses_total = misses.len();
        let miss_rows = limited(misses, limit)
            .map(|((path, flags), m)| {
                let (first_seen, last_seen) = seen_times(m.seen.as_ref());
                MissRow {
                    path: owned(path),
                    hits: hits_of(m.seen.as_ref()),
                    processes: proc_hits(s, &m.comms),
                    first_seen,
                    last_seen,
                    marks: Marks::of(flags, PATH_FIELD),
                }
            })
            .collect();

        let mut denials: Vec<_> = denials.into_iter().collect();
        denials.sort_by(|((oa, pa, ra, fa), a), ((ob, pb, rb, fb), b)| {
            hits_of(b.seen.as_ref())
                .cmp(&hits_of(a.seen.as_ref()))
                .then_with(|| s.get(*pa).cmp(s.get(*pb)))
                .then_with(|| s.get(*oa).cmp(s.get(*ob)))
                .then_with(|| s.get(*ra).cmp(s.get(*rb)))
                .then_with(|| fa.cmp(fb))
        });
        let denials_total = denials.len();
        let denial_rows = limited(denials, limit)
            .map(|((op, path, result, flags), d)| {
                let (first_seen, last_seen) = seen_times(d.seen.as_ref());
                DenialRow {
                    op: owned(op),
                    path: owned(path),
                    result: owned(result),
                    hits: hits_of(d.seen.as_ref()),
                    processes: proc_hits(s, &d.comms),
                    first_seen,
                    last_seen,
                    marks: Marks::of(flags, PATH_FIELD),
                }
            })
            .collect();

        let mut suppressed: Vec<(u32, Seen)> = suppressed.into_iter().collect();
        suppressed.sort_by(|(ua, a), (ub, b)| b.hits.cmp(&a.hits).then_with(|| ua.cmp(ub)));
        let suppressed_events = suppressed
            .iter()
            .fold(0u64, |n, (_, seen)| n.saturating_add(seen.hits));
        let suppressed_last = suppressed.iter().map(|(_, seen)| seen.last).max();
        let suppressed_total = suppressed.len();
        let suppressed_rows = limited(suppressed, limit)
            .map(|(uid, seen)| SuppressedRow {
                uid,
                events: seen.hits,
                first_seen: fmt_ts(seen.first),
                last_seen: fmt_ts(seen.last),
            })
            .collect();

        let last_access = last.map(|l| LastAccessRow {
            ts: fmt_ts(l.seen.last),
            ago_seconds: now.saturating_sub(l.seen.last).div_euclid(MICROS_PER_SEC),
            op: owned(l.op),
            path: owned(l.path),
            result: owned(l.result),
            comm: owned(l.comm),
            exe: opt_owned(l.exe),
            uid: l.uid,
            marks: Marks::of(
                l.flags,
                &[
                    ("path", PATH_ESCAPED, PATH_TRUNCATED),
                    ("comm", COMM_ESCAPED, COMM_TRUNCATED),
                    ("exe", EXE_ESCAPED, EXE_TRUNCATED),
                ],
            ),
        });
        let text = verdict_text(
            last.map(|l| l.seen.last),
            last_access.as_ref(),
            window,
            lost,
            (suppressed_events, suppressed_last),
            now,
        );

        Report {
            totals: Totals {
                events,
                lost_events: lost,
                lower_bounds: lost > 0,
                suppressed_events,
                truncated_events: truncated,
                malformed_lines: files.iter().map(|f| f.malformed).sum(),
                overlong_lines: files.iter().map(|f| f.overlong).sum(),
                newer_version_lines: files.iter().map(|f| f.newer_version).sum(),
                summarised_events,
                max_memory: 0,
                files_read: files.len(),
                outside_window: outside,
                first_seen: span.map(|s| fmt_ts(s.first)),
                last_seen: span.map(|s| fmt_ts(s.last)),
                since: window.since.map(fmt_ts),
                until: window.until.map(fmt_ts),
                now: fmt_ts(now),
                files,
            },
            groups: Groups {
                by: by.name(),
                total: groups_total,
                rows: group_rows,
                extra_summarised,
            },
            processes: Section {
                total: procs_total,
                rows: proc_rows,
            },
            misses: Section {
                total: misses_total,
                rows: miss_rows,
            },
            denials: Section {
                total: denials_total,
                rows: denial_rows,
            },
            suppressed: Section {
                total: suppressed_total,
                rows: suppressed_rows,
            },
            verdict: Verdict { text, last_access },
        }
    }
}

/// Orders tuples by their last access; equal times are settled by content, not by which
/// file was read first, so the verdict does not depend on the order of the logs.
fn access_order(s: &Interner, a: &Tuple, b: &Tuple) -> Ordering {
    a.seen
        .last
        .cmp(&b.seen.last)
        .then_with(|| s.get(a.path).cmp(s.get(b.path)))
        .then_with(|| s.get(a.comm).cmp(s.get(b.comm)))
        .then_with(|| a.uid.cmp(&b.uid))
        .then_with(|| s.get(a.op).cmp(s.get(b.op)))
        .then_with(|| s.get(a.result).cmp(s.get(b.result)))
        .then_with(|| s.opt(a.exe).cmp(&s.opt(b.exe)))
        .then_with(|| s.opt(a.map).cmp(&s.opt(b.map)))
        .then_with(|| a.flags.cmp(&b.flags))
}

fn hits_of(seen: Option<&Seen>) -> u64 {
    seen.map_or(0, |s| s.hits)
}

fn seen_times(seen: Option<&Seen>) -> (String, String) {
    match seen {
        Some(s) => (fmt_ts(s.first), fmt_ts(s.last)),
        None => (String::new(), String::new()),
    }
}

/// `limit` 0 means all rows.
fn limited<T>(rows: Vec<T>, limit: usize) -> impl Iterator<Item = T> {
    let n = if limit == 0 { rows.len() } else { limit };
    rows.into_iter().take(n)
}

fn proc_hits(strings: &Interner, comms: &IdMap<(u32, u16), u64>) -> Vec<ProcHits> {
    let mut rows: Vec<ProcHits> = comms
        .iter()
        .map(|(&(comm, flags), &hits)| ProcHits {
            comm: strings.get(comm).to_owned(),
            hits,
            marks: Marks::of(flags, &[("comm", COMM_ESCAPED, COMM_TRUNCATED)]),
        })
        .collect();
    rows.sort_by(|a, b| {
        b.hits
            .cmp(&a.hits)
            .then_with(|| a.comm.cmp(&b.comm))
            .then_with(|| a.marks.escaped.cmp(&b.marks.escaped))
            .then_with(|| a.marks.summarised.cmp(&b.marks.summarised))
    });
    rows
}

/// The directory an event counts against: the parent of `path`, except for opendir, where
/// the directory itself is what was used.
fn directory_of(path: &str, opendir: bool) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        // "/" (or "//"): the root is its own directory.
        return if path.is_empty() { "" } else { "/" };
    }
    if opendir {
        return trimmed;
    }
    match trimmed.rfind('/') {
        Some(0) => "/",
        Some(i) => &trimmed[..i],
        // Not absolute (never written by relocfs): there is no parent to speak of.
        None => trimmed,
    }
}

// ---------------------------------------------------------------------------------------
// The report document

#[derive(Serialize)]
struct Report {
    totals: Totals,
    groups: Groups,
    processes: Section<ProcessRow>,
    misses: Section<MissRow>,
    denials: Section<DenialRow>,
    suppressed: Section<SuppressedRow>,
    verdict: Verdict,
}

/// A name of a row and what the report knows about it: given in JSON as
/// `escaped`/`truncated` (the names of the fields concerned) and `summarised`.
#[derive(Serialize, Default, Debug, Clone, PartialEq, Eq)]
struct Marks {
    /// Fields whose value is not UTF-8 and shown encoded (`\\`, `\xHH`).
    escaped: Vec<&'static str>,
    /// Fields the daemon shortened (`…[N bytes]…` in the middle).
    truncated: Vec<&'static str>,
    /// The row holds events folded to stay within `--max-memory`: its names are unknown
    /// (empty) where the row is keyed by them, and its distinct counts are lower bounds.
    summarised: bool,
}

/// A field of a row: its name in the output, and its escaped and truncated flags.
type Field = (&'static str, u16, u16);
const PATH_FIELD: &[Field] = &[("path", PATH_ESCAPED, PATH_TRUNCATED)];
const PROC_FIELDS: &[Field] = &[
    ("comm", COMM_ESCAPED, COMM_TRUNCATED),
    ("exe", EXE_ESCAPED, EXE_TRUNCATED),
];

impl Marks {
    fn of(flags: u16, fields: &[Field]) -> Marks {
        Marks {
            escaped: fields
                .iter()
                .filter(|f| flags & f.1 != 0)
                .map(|f| f.0)
                .collect(),
            truncated: fields
                .iter()
                .filter(|f| flags & f.2 != 0)
                .map(|f| f.0)
                .collect(),
            summarised: flags & SUMMARISED != 0,
        }
    }

    fn escaped(&self, field: &str) -> bool {
        self.escaped.contains(&field)
    }

    fn truncated(&self, field: &str) -> bool {
        self.truncated.contains(&field)
    }
}

#[derive(Serialize)]
struct Totals {
    events: u64,
    lost_events: u64,
    lower_bounds: bool,
    /// Not written by the daemon (per-user rate limit); not part of `events`.
    suppressed_events: u64,
    /// Events with a field the daemon shortened.
    truncated_events: u64,
    malformed_lines: u64,
    /// Of the malformed lines, those longer than MAX_LINE.
    overlong_lines: u64,
    /// Lines of a newer schema version: skipped.
    newer_version_lines: u64,
    /// Events held in summarised rows (folded to stay within `max_memory`).
    summarised_events: u64,
    /// The `--max-memory` cap in bytes; 0: none.
    max_memory: u64,
    files_read: usize,
    outside_window: u64,
    first_seen: Option<String>,
    last_seen: Option<String>,
    since: Option<String>,
    until: Option<String>,
    now: String,
    files: Vec<FileStats>,
}

#[derive(Serialize)]
struct Groups {
    by: &'static str,
    total: usize,
    rows: Vec<GroupRow>,
    /// The biggest row holding summarised events when none is within the limit (CSV only).
    #[serde(skip)]
    extra_summarised: Option<GroupRow>,
}

#[derive(Serialize)]
struct Section<T> {
    total: usize,
    rows: Vec<T>,
}

#[derive(Serialize)]
struct GroupRow {
    key: String,
    #[serde(flatten)]
    id: GroupId,
    hits: u64,
    processes: usize,
    users: usize,
    paths: usize,
    first_seen: String,
    last_seen: String,
    #[serde(flatten)]
    marks: Marks,
}

/// The typed identity of a group, flattened into its row.
#[derive(Serialize)]
#[serde(untagged)]
enum GroupId {
    Directory { directory: String },
    Process { comm: String, exe: Option<String> },
    User { uid: u32, suppressed: u64 },
    Rule { rule: Option<String> },
}

impl GroupId {
    /// One human-readable string for the group, the `key` field.
    fn key(&self, marks: &Marks) -> String {
        match self {
            GroupId::Directory { directory } if directory.is_empty() && marks.summarised => {
                "(summarised)".into()
            }
            GroupId::Process { comm, .. } if comm.is_empty() && marks.summarised => {
                "(summarised)".into()
            }
            GroupId::Directory { directory } => directory.clone(),
            GroupId::Process { comm, exe: None } => comm.clone(),
            GroupId::Process {
                comm,
                exe: Some(exe),
            } => format!("{comm} ({exe})"),
            GroupId::User { uid, .. } => uid.to_string(),
            GroupId::Rule { rule } => rule.clone().unwrap_or_else(|| "(no rule)".into()),
        }
    }
}

#[derive(Serialize)]
struct ProcessRow {
    comm: String,
    exe: Option<String>,
    uid: u32,
    hits: u64,
    paths: usize,
    first_seen: String,
    last_seen: String,
    #[serde(flatten)]
    marks: Marks,
}

#[derive(Serialize)]
struct ProcHits {
    comm: String,
    hits: u64,
    #[serde(flatten)]
    marks: Marks,
}

#[derive(Serialize)]
struct MissRow {
    path: String,
    hits: u64,
    processes: Vec<ProcHits>,
    first_seen: String,
    last_seen: String,
    #[serde(flatten)]
    marks: Marks,
}

#[derive(Serialize)]
struct DenialRow {
    op: String,
    path: String,
    result: String,
    hits: u64,
    processes: Vec<ProcHits>,
    first_seen: String,
    last_seen: String,
    #[serde(flatten)]
    marks: Marks,
}

/// Events of one user that the daemon did not write (its rate limit), only counted.
#[derive(Serialize)]
struct SuppressedRow {
    uid: u32,
    events: u64,
    first_seen: String,
    last_seen: String,
}

#[derive(Serialize)]
struct Verdict {
    text: String,
    last_access: Option<LastAccessRow>,
}

#[derive(Serialize)]
struct LastAccessRow {
    ts: String,
    ago_seconds: i64,
    op: String,
    path: String,
    result: String,
    comm: String,
    exe: Option<String>,
    uid: u32,
    #[serde(flatten)]
    marks: Marks,
}

/// The one line an operator deciding whether to unmount needs. `suppressed`: how many
/// events the rate limit kept out of the log, and the time of the last such line.
fn verdict_text(
    last_ts: Option<i64>,
    last: Option<&LastAccessRow>,
    window: Window,
    lost: u64,
    suppressed: (u64, Option<i64>),
    now: i64,
) -> String {
    let mut text = match (last_ts, last) {
        (Some(ts), Some(l)) => {
            let ago = now.saturating_sub(ts);
            let when = if ago >= 0 {
                format!("{} ago", human_duration(ago))
            } else {
                // Clock skew between the logging host and this one.
                format!("{} in the future", human_duration(ago.saturating_neg()))
            };
            let exe = l
                .exe
                .as_deref()
                .map(|e| format!(" [{}]", shown(e, &l.marks, "exe")))
                .unwrap_or_default();
            format!(
                "last access {when} by {}{exe} (uid {}) to {} at {}",
                shown(&l.comm, &l.marks, "comm"),
                l.uid,
                shown(&l.path, &l.marks, "path"),
                fmt_ts_short(ts)
            )
        }
        _ => match (window.since, window.until) {
            (Some(s), None) => format!("no access since {}", fmt_ts_short(s)),
            (None, Some(u)) => format!("no access before {}", fmt_ts_short(u)),
            (Some(s), Some(u)) => format!(
                "no access between {} and {}",
                fmt_ts_short(s),
                fmt_ts_short(u)
            ),
            (None, None) => "no access recorded in these logs".to_owned(),
        },
    };
    if lost > 0 {
        // A "dropped" line means accesses happened that no line records.
        let (s, verb) = if lost == 1 {
            ("", "was")
        } else {
            ("s", "were")
        };
        text.push_str(&format!(
            "; but {lost} event{s} {verb} lost, so later accesses may be missing"
        ));
    }
    if let (n @ 1.., Some(at)) = suppressed {
        let verb = if n == 1 { "was" } else { "were" };
        text.push_str(&format!(
            "; {n} more event{} {verb} not logged (audit rate limit), the last at {}",
            plural(n),
            fmt_ts_short(at)
        ));
    }
    text
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// "45 seconds", "1 minute", "5 hours", "3 days": the largest unit that is at least 1,
/// rounded down (so "2 days" means at least two full days).
fn human_duration(micros: i64) -> String {
    let secs = micros.max(0) / MICROS_PER_SEC;
    let (n, unit) = if secs < 60 {
        (secs, "second")
    } else if secs < 3600 {
        (secs / 60, "minute")
    } else if secs < SECS_PER_DAY {
        (secs / 3600, "hour")
    } else {
        (secs / SECS_PER_DAY, "day")
    };
    // n is non-negative here.
    format!("{n} {unit}{}", plural(n.unsigned_abs()))
}

// ---------------------------------------------------------------------------------------
// Output

fn write_json(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, SafeJson::default());
    report.serialize(&mut ser)?;
    out.write_all(b"\n")
}

/// serde_json's pretty output, except that DEL, C1 controls and bidi marks are written as
/// `\u` escapes too (serde_json escapes only C0 and `"`/`\`), so `relocfs report --format json`
/// on a terminal never sends it a control sequence. The parsed values are unchanged.
#[derive(Default)]
struct SafeJson(serde_json::ser::PrettyFormatter<'static>);

impl serde_json::ser::Formatter for SafeJson {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if unsafe_char(c) {
                writer.write_all(&fragment.as_bytes()[start..i])?;
                // All of them are in the Basic Multilingual Plane: one \uXXXX each.
                write!(writer, "\\u{:04x}", u32::from(c))?;
                start = i + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
}

/// The grouping rows only: the part a spreadsheet or script wants. The last column, `notes`,
/// says which names are escaped (`escaped:comm`), truncated (`truncated:directory`) or
/// which rows hold summarised events (`summarised`); by user, `suppressed` counts the events
/// the rate limit kept out of the log.
fn write_csv(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let key_head: &[&str] = match report.groups.by {
        "process" => &["comm", "exe"],
        "user" => &["uid", "suppressed"],
        "rule" => &["rule"],
        _ => &["directory"],
    };
    let tail = [
        "hits",
        "processes",
        "users",
        "paths",
        "first_seen",
        "last_seen",
        "notes",
    ];
    let header: Vec<&str> = key_head.iter().chain(tail.iter()).copied().collect();
    writeln!(out, "{}", header.join(","))?;
    for row in csv_rows(&report.groups) {
        let m = &row.marks;
        let mut fields: Vec<String> = match &row.id {
            GroupId::Directory { directory } => vec![csv_cell(directory, m.escaped("directory"))],
            GroupId::Process { comm, exe } => vec![
                csv_cell(comm, m.escaped("comm")),
                csv_cell(exe.as_deref().unwrap_or(""), m.escaped("exe")),
            ],
            GroupId::User { uid, suppressed } => vec![uid.to_string(), suppressed.to_string()],
            GroupId::Rule { rule } => {
                vec![csv_cell(rule.as_deref().unwrap_or(""), m.escaped("rule"))]
            }
        };
        let mut notes: Vec<String> = m.escaped.iter().map(|f| format!("escaped:{f}")).collect();
        notes.extend(m.truncated.iter().map(|f| format!("truncated:{f}")));
        if m.summarised {
            notes.push("summarised".into());
        }
        fields.extend([
            row.hits.to_string(),
            row.processes.to_string(),
            row.users.to_string(),
            row.paths.to_string(),
            row.first_seen.clone(),
            row.last_seen.clone(),
            notes.join(" "),
        ]);
        writeln!(out, "{}", fields.join(","))?;
    }
    Ok(())
}

/// The rows CSV shows: those within `--limit`, and, when rows were summarised but none of
/// those is marked, the biggest marked row too, so a CSV never hides that it is a summary.
fn csv_rows(groups: &Groups) -> impl Iterator<Item = &GroupRow> {
    let shown_marked = groups.rows.iter().any(|r| r.marks.summarised);
    let extra = groups.extra_summarised.as_ref().filter(|_| !shown_marked);
    groups.rows.iter().chain(extra)
}

/// One CSV cell holding a name from the log (a path, a process name, a rule).
///
/// Spreadsheet-safe: a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return
/// would be read as a formula by Excel, LibreOffice or Google Sheets (any user can name its
/// process `=cmd|' /C calc'!A0` with prctl(PR_SET_NAME)), so it gets a leading `'`, the
/// usual neutralisation. Control and bidi characters are escaped as in the table ([`name`]),
/// then RFC 4180 quoting where needed.
fn csv_cell(s: &str, escaped: bool) -> String {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let mut cell = if escaped { escaped_name(s) } else { name(s) };
    if formula {
        cell.insert(0, '\'');
    }
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell
    }
}

/// A name as the table and the verdict show it: [`name`] or [`escaped_name`], then
/// ` \[not UTF-8]` and ` \[truncated]` where they apply, and `\[summarised]` for the names
/// of summarised rows (which have none). A name's own backslashes are shown doubled, so a
/// single backslash before `[` only ever comes from these marks.
fn shown(text: &str, marks: &Marks, field: &str) -> String {
    if marks.summarised && text.is_empty() {
        return "\\[summarised]".into();
    }
    let escaped = marks.escaped(field);
    let mut s = if escaped {
        escaped_name(text)
    } else {
        name(text)
    };
    if escaped {
        s.push_str(" \\[not UTF-8]");
    }
    if marks.truncated(field) {
        s.push_str(" \\[truncated]");
    }
    s
}

fn write_table(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    let t = &r.totals;
    if t.lost_events > 0 {
        writeln!(
            out,
            "WARNING: {} audit event{} lost (queue full or write errors); every figure below is a lower bound.\n",
            t.lost_events,
            if t.lost_events == 1 { " was" } else { "s were" }
        )?;
    }
    if t.suppressed_events > 0 {
        writeln!(
            out,
            "WARNING: {} event{} not logged because {} exceeded the audit rate limit; counted per user below, their paths are unknown.\n",
            t.suppressed_events,
            if t.suppressed_events == 1 { " was" } else { "s were" },
            if r.suppressed.total == 1 { "a user" } else { "users" }
        )?;
    }
    if t.summarised_events > 0 {
        writeln!(
            out,
            "WARNING: {} event{} summarised to stay within --max-memory {}: rows marked \\[summarised] hold them, without path or process name; totals are exact, other rows and distinct counts are lower bounds.\n",
            t.summarised_events,
            if t.summarised_events == 1 { " was" } else { "s were" },
            fmt_size(t.max_memory)
        )?;
    }
    if t.newer_version_lines > 0 {
        writeln!(
            out,
            "WARNING: {} line{} of a newer audit schema than this relocfs reads (v > {SCHEMA_VERSION}) skipped; read them with a newer relocfs.\n",
            t.newer_version_lines,
            plural(t.newer_version_lines)
        )?;
    }
    for f in &t.files {
        if let Some(e) = &f.error {
            writeln!(
                out,
                "WARNING: {}: reading stopped after {} lines: {}\n",
                clean(&f.path),
                f.lines,
                clean(e)
            )?;
        }
    }

    writeln!(out, "Totals")?;
    let mut totals = Table::new(&[("", false), ("", false)]);
    totals.row(vec!["events".into(), t.events.to_string()]);
    totals.row(vec!["lost events".into(), t.lost_events.to_string()]);
    if t.suppressed_events > 0 {
        totals.row(vec![
            "suppressed events".into(),
            format!("{} (not logged: audit rate limit)", t.suppressed_events),
        ]);
    }
    if t.truncated_events > 0 {
        totals.row(vec![
            "truncated".into(),
            format!(
                "{} event{} with a name shortened by the daemon, marked \\[truncated]",
                t.truncated_events,
                plural(t.truncated_events)
            ),
        ]);
    }
    if t.summarised_events > 0 {
        totals.row(vec![
            "summarised".into(),
            format!(
                "{} event{} (--max-memory {})",
                t.summarised_events,
                plural(t.summarised_events),
                fmt_size(t.max_memory)
            ),
        ]);
    }
    totals.row(vec!["files read".into(), t.files_read.to_string()]);
    let bad: Vec<String> = t
        .files
        .iter()
        .filter(|f| f.malformed > 0)
        .map(|f| format!("{}: {}", clean(&f.path), f.malformed))
        .collect();
    let malformed = if bad.is_empty() {
        t.malformed_lines.to_string()
    } else {
        format!("{} ({})", t.malformed_lines, bad.join(", "))
    };
    totals.row(vec!["malformed lines".into(), malformed]);
    if t.overlong_lines > 0 {
        totals.row(vec![
            "  over-long".into(),
            format!(
                "{} (longer than {} MiB: skipped unread)",
                t.overlong_lines,
                MAX_LINE >> 20
            ),
        ]);
    }
    if t.newer_version_lines > 0 {
        totals.row(vec![
            "newer schema".into(),
            format!("{} lines skipped", t.newer_version_lines),
        ]);
    }
    let span = match (&r.totals.first_seen, &r.totals.last_seen) {
        (Some(f), Some(l)) => {
            let secs = parse_rfc3339(l)
                .zip(parse_rfc3339(f))
                .map_or(0, |(l, f)| l.saturating_sub(f));
            format!("{} to {} ({})", short(f), short(l), human_duration(secs))
        }
        _ => "-".into(),
    };
    totals.row(vec!["time span".into(), span]);
    if t.since.is_some() || t.until.is_some() {
        let mut w = Vec::new();
        if let Some(s) = &t.since {
            w.push(format!("since {}", short(s)));
        }
        if let Some(u) = &t.until {
            w.push(format!("until {}", short(u)));
        }
        totals.row(vec![
            "window".into(),
            format!("{}; {} events outside it", w.join(", "), t.outside_window),
        ]);
    }
    totals.write(out, "  ")?;

    let g = &r.groups;
    let (title, key_cols): (&str, &[(&str, bool)]) = match g.by {
        "process" => (
            "Top processes (grouped by comm and exe)",
            &[("COMM", false), ("EXE", false)],
        ),
        "user" => ("Top users", &[("UID", true), ("SUPPRESSED", true)]),
        "rule" => ("Top rules", &[("RULE", false)]),
        _ => ("Top legacy directories", &[("DIRECTORY", false)]),
    };
    heading(out, title, g.rows.len(), g.total)?;
    let mut cols = key_cols.to_vec();
    cols.extend([
        ("HITS", true),
        ("PROCS", true),
        ("USERS", true),
        ("PATHS", true),
        ("FIRST SEEN", false),
        ("LAST SEEN", false),
    ]);
    let mut table = Table::new(&cols);
    for row in &g.rows {
        let m = &row.marks;
        let mut cells = match &row.id {
            GroupId::Directory { directory } => vec![shown(directory, m, "directory")],
            GroupId::Process { comm, exe } => vec![
                shown(comm, m, "comm"),
                exe.as_deref()
                    .map_or_else(|| "-".into(), |e| shown(e, m, "exe")),
            ],
            GroupId::User { uid, suppressed } => vec![uid.to_string(), suppressed.to_string()],
            GroupId::Rule { rule } => {
                vec![rule
                    .as_deref()
                    .map_or("(no rule)".into(), |r| shown(r, m, "rule"))]
            }
        };
        if m.summarised {
            if let Some(first) = cells.first_mut() {
                if !first.starts_with("\\[summarised]") {
                    first.push_str(" \\[summarised]");
                }
            }
        }
        cells.extend([
            row.hits.to_string(),
            row.processes.to_string(),
            row.users.to_string(),
            row.paths.to_string(),
            short(&row.first_seen),
            short(&row.last_seen),
        ]);
        table.row(cells);
    }
    table.write(out, "")?;

    let p = &r.processes;
    heading(out, "Top processes", p.rows.len(), p.total)?;
    let mut table = Table::new(&[
        ("COMM", false),
        ("EXE", false),
        ("UID", true),
        ("HITS", true),
        ("PATHS", true),
        ("LAST SEEN", false),
    ]);
    for row in &p.rows {
        table.row(vec![
            shown(&row.comm, &row.marks, "comm"),
            row.exe
                .as_deref()
                .map_or_else(|| "-".into(), |e| shown(e, &row.marks, "exe")),
            row.uid.to_string(),
            row.hits.to_string(),
            row.paths.to_string(),
            short(&row.last_seen),
        ]);
    }
    table.write(out, "")?;

    let m = &r.misses;
    heading(
        out,
        "Misses (ENOENT): what the migration missed",
        m.rows.len(),
        m.total,
    )?;
    let mut table = Table::new(&[
        ("PATH", false),
        ("HITS", true),
        ("LAST SEEN", false),
        ("PROCESSES", false),
    ]);
    for row in &m.rows {
        table.row(vec![
            shown(&row.path, &row.marks, "path"),
            row.hits.to_string(),
            short(&row.last_seen),
            proc_list(&row.processes),
        ]);
    }
    table.write(out, "")?;

    let d = &r.denials;
    heading(
        out,
        "Denied and refused (EACCES, EPERM, EROFS)",
        d.rows.len(),
        d.total,
    )?;
    let mut table = Table::new(&[
        ("OP", false),
        ("PATH", false),
        ("RESULT", false),
        ("HITS", true),
        ("LAST SEEN", false),
        ("PROCESSES", false),
    ]);
    for row in &d.rows {
        table.row(vec![
            name(&row.op),
            shown(&row.path, &row.marks, "path"),
            name(&row.result),
            row.hits.to_string(),
            short(&row.last_seen),
            proc_list(&row.processes),
        ]);
    }
    table.write(out, "")?;

    let s = &r.suppressed;
    if s.total > 0 {
        heading(
            out,
            "Not logged: over the audit rate limit (per user)",
            s.rows.len(),
            s.total,
        )?;
        let mut table = Table::new(&[
            ("UID", true),
            ("EVENTS", true),
            ("FIRST SEEN", false),
            ("LAST SEEN", false),
        ]);
        for row in &s.rows {
            table.row(vec![
                row.uid.to_string(),
                row.events.to_string(),
                short(&row.first_seen),
                short(&row.last_seen),
            ]);
        }
        table.write(out, "")?;
    }

    writeln!(out, "\nVerdict: {}", clean(&r.verdict.text))
}

fn heading(out: &mut dyn Write, title: &str, shown: usize, total: usize) -> io::Result<()> {
    if shown < total {
        writeln!(out, "\n{title} ({shown} of {total})")
    } else {
        writeln!(out, "\n{title}")
    }
}

/// "python3 (12), bash (1)" — the three busiest, then how many more.
fn proc_list(procs: &[ProcHits]) -> String {
    const SHOWN: usize = 3;
    let mut s: Vec<String> = procs
        .iter()
        .take(SHOWN)
        .map(|p| format!("{} ({})", shown(&p.comm, &p.marks, "comm"), p.hits))
        .collect();
    if procs.len() > SHOWN {
        s.push(format!("+{} more", procs.len() - SHOWN));
    }
    s.join(", ")
}

/// Characters never written raw to a terminal or a CSV cell: C0 controls, DEL, C1 controls
/// (U+0080-U+009F: some terminals act on them, e.g. U+009B as CSI) and the bidi marks and
/// overrides that visually reorder a path.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Escapes control and bidi-override characters in text that is not a name from the log
/// (file names given on the command line, error messages): the table goes to a terminal,
/// where such characters could move the cursor, recolour the screen or reorder a line.
fn clean(s: &str) -> String {
    if !s.contains(unsafe_char) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// A name from the log (path, process name, executable, rule) as the table and CSV show it:
/// unsafe characters as `\u{1b}`, and a backslash as `\\`, so the display is unambiguous:
/// a real ESC shows as `\u{1b}`, a name that literally contains `\u{1b}` as `\\u{1b}`.
fn name(s: &str) -> String {
    if !s.contains(|c| c == '\\' || unsafe_char(c)) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// A value the daemon logged escaped because it is not UTF-8 (`\\` is a backslash, `\xHH` a
/// byte): shown as it is, with unsafe characters escaped as in [`name`].
fn escaped_name(s: &str) -> String {
    clean(s)
}

/// Minimal aligned text table: columns separated by two spaces, numbers right-aligned.
struct Table {
    head: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(cols: &[(&'static str, bool)]) -> Table {
        Table {
            head: cols.iter().map(|c| c.0).collect(),
            right: cols.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn write(&self, out: &mut dyn Write, indent: &str) -> io::Result<()> {
        if self.rows.is_empty() {
            return writeln!(out, "{indent}(none)");
        }
        let has_head = self.head.iter().any(|h| !h.is_empty());
        let mut widths: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut s = String::from(indent);
            for (i, cell) in cells.enumerate() {
                let width = widths.get(i).copied().unwrap_or(0);
                let pad = " ".repeat(width.saturating_sub(cell.chars().count()));
                if i > 0 {
                    s.push_str("  ");
                }
                if self.right.get(i).copied().unwrap_or(false) {
                    s.push_str(&pad);
                    s.push_str(cell);
                } else {
                    s.push_str(cell);
                    s.push_str(&pad);
                }
            }
            s.truncate(s.trim_end().len());
            s
        };
        if has_head {
            writeln!(out, "{}", line(&mut self.head.iter().copied()))?;
        }
        for row in &self.rows {
            writeln!(out, "{}", line(&mut row.iter().map(String::as_str)))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Time

fn micros_of(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |m| -m),
    }
}

fn time_of(micros: i64) -> SystemTime {
    let d = Duration::from_micros(micros.unsigned_abs());
    let t = if micros >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    };
    t.unwrap_or(UNIX_EPOCH)
}

/// Full precision, for JSON: "2026-11-27T21:56:23.416335Z".
fn fmt_ts(micros: i64) -> String {
    format_rfc3339(time_of(micros))
}

/// To the second, for people: "2026-11-27T21:56:23Z".
fn fmt_ts_short(micros: i64) -> String {
    short(&fmt_ts(micros))
}

/// Drops the fraction of an RFC 3339 UTC timestamp (what [`fmt_ts`] produces).
fn short(ts: &str) -> String {
    match ts.find('.') {
        Some(dot) if ts.ends_with('Z') => format!("{}Z", &ts[..dot]),
        _ => ts.to_owned(),
    }
}

/// A size as `--max-memory` takes it: "512M", "3G", "1000".
fn fmt_size(n: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if n >= 1 << shift && n % (1 << shift) == 0 {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// `--max-memory`: bytes, or a number with K, M, G or T (powers of 1024; `KiB`, `MB`, ...
/// read the same). 0 means no cap.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => u32::MAX,
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|_| shift != u32::MAX)
        .and_then(|n| n.checked_mul(1u64.checked_shl(shift)?))
        .ok_or_else(|| {
            format!("invalid size '{s}': expected bytes or a number with K, M, G or T (512M)")
        })
}

/// `--since`/`--until`: an RFC 3339 timestamp, a date (midnight UTC), or an age relative to
/// `now` such as `7d`.
fn parse_when(s: &str, now: i64, what: &str) -> Result<i64, String> {
    let s = s.trim();
    parse_rfc3339(s)
        .or_else(|| parse_date(s.as_bytes()).map(|days| days * SECS_PER_DAY * MICROS_PER_SEC))
        .or_else(|| parse_relative(s).map(|ago| now.saturating_sub(ago)))
        .ok_or_else(|| {
            format!(
                "invalid {what} '{s}': expected an RFC 3339 timestamp (2026-11-01T08:00:00Z), \
                 a date (2026-11-01) or an age (30m, 12h, 7d, 2w)"
            )
        })
}

/// "12h" → microseconds. Units: s, m, h, d, w.
fn parse_relative(s: &str) -> Option<i64> {
    let unit = s.chars().last()?;
    let secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => SECS_PER_DAY,
        'w' => 7 * SECS_PER_DAY,
        _ => return None,
    };
    let digits = &s[..s.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    n.checked_mul(secs)?.checked_mul(MICROS_PER_SEC)
}

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, &d| n * 10 + i64::from(d - b'0')))
}

/// "YYYY-MM-DD" → days since 1970-01-01, validated (no February 30th).
fn parse_date(b: &[u8]) -> Option<i64> {
    let [y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = *b else {
        return None;
    };
    let (y, m, d) = (
        digits(&[y0, y1, y2, y3])?,
        digits(&[m0, m1])?,
        digits(&[d0, d1])?,
    );
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if d < 1 || d > month_days {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// Howard Hinnant's days_from_civil, the inverse of audit's civil_from_days.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// RFC 3339 → microseconds since the epoch. Accepts 'T', 't' or ' ' between date and time,
/// any number of fraction digits (beyond microseconds truncated), and `Z` or `±HH:MM`.
/// A leap second (:60) counts as :59.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let (date, rest) = s.as_bytes().split_at_checked(10)?;
    let days = parse_date(date)?;
    let [b'T' | b't' | b' ', h0, h1, b':', n0, n1, b':', s0, s1, rest @ ..] = rest else {
        return None;
    };
    let (hour, min, sec) = (
        digits(&[*h0, *h1])?,
        digits(&[*n0, *n1])?,
        digits(&[*s0, *s1])?,
    );
    if hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let (micros, rest) = match rest {
        [b'.', fraction @ ..] => {
            let n = fraction.iter().take_while(|d| d.is_ascii_digit()).count();
            let (fraction, rest) = fraction.split_at_checked(n)?;
            if fraction.is_empty() {
                return None;
            }
            // Exactly six digits: pad, or truncate what is finer than a microsecond.
            let micros = fraction
                .iter()
                .chain(std::iter::repeat(&b'0'))
                .take(6)
                .fold(0, |n, &d| n * 10 + i64::from(d - b'0'));
            (micros, rest)
        }
        _ => (0, rest),
    };
    let offset = match *rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), oh0, oh1, b':', om0, om1] => {
            let (oh, om) = (digits(&[oh0, oh1])?, digits(&[om0, om1])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let offset = oh * 3600 + om * 60;
            if sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return None,
    };
    let secs = days * SECS_PER_DAY + hour * 3600 + min * 60 + sec.min(59) - offset;
    Some(secs * MICROS_PER_SEC + micros)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The fixed "now" of every test: 2026-11-27T12:00:00Z.
    fn now() -> SystemTime {
        time_of(ts("2026-11-27T12:00:00Z"))
    }

    fn ts(s: &str) -> i64 {
        parse_rfc3339(s).expect("test timestamp")
    }

    fn ev(ts: &str, op: &str, path: &str, comm: &str, uid: u32, result: &str) -> Value {
        json!({"v": 1, "ts": ts, "op": op, "path": path, "pid": 4242, "uid": uid, "gid": uid,
               "comm": comm, "result": result})
    }

    fn with(mut v: Value, key: &str, value: Value) -> Value {
        v[key] = value;
        v
    }

    fn dropped(ts: &str, count: u64) -> Value {
        json!({"v": 1, "ts": ts, "op": "dropped", "count": count})
    }

    fn jsonl(events: &[Value]) -> String {
        events.iter().map(|e| format!("{e}\n")).collect()
    }

    fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, data).expect("write test log");
        path
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).expect("gzip");
        enc.finish().expect("gzip")
    }

    fn args(logs: Vec<PathBuf>) -> ReportArgs {
        ReportArgs {
            logs,
            now: Some(now()),
            ..ReportArgs::default()
        }
    }

    fn output(args: &ReportArgs) -> String {
        let mut out = Vec::new();
        run(args, &mut out).expect("report");
        String::from_utf8(out).expect("utf-8 report")
    }

    fn json_of(args: &ReportArgs) -> Value {
        let args = ReportArgs {
            format: Format::Json,
            ..args.clone()
        };
        serde_json::from_str(&output(&args)).expect("report is JSON")
    }

    const J: &str = "/home/optdir/jumpserver";

    /// Six access lines (9 events with counts) and two dropped lines (8 lost).
    fn basic_events() -> Vec<Value> {
        vec![
            ev(
                "2026-11-20T10:00:00Z",
                "open",
                &format!("{J}/keys/id_rsa"),
                "python3",
                998,
                "ok",
            ),
            with(
                ev(
                    "2026-11-21T10:00:00Z",
                    "open",
                    &format!("{J}/keys/id_rsa"),
                    "python3",
                    998,
                    "ok",
                ),
                "count",
                json!(5),
            ),
            with(
                ev(
                    "2026-11-22T10:00:00Z",
                    "lookup",
                    &format!("{J}/conf/missing.yml"),
                    "bash",
                    0,
                    "ENOENT",
                ),
                "count",
                json!(2),
            ),
            dropped("2026-11-22T11:00:00Z", 7),
            json!({"v": 1, "ts": "2026-11-22T11:00:01Z", "op": "dropped"}),
            ev(
                "2026-11-23T08:30:00Z",
                "open",
                &format!("{J}/conf/app.yml"),
                "bash",
                0,
                "EACCES",
            ),
        ]
    }

    #[test]
    fn totals_counts_and_lost_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = write(dir.path(), "audit.log", jsonl(&basic_events()).as_bytes());
        let r = json_of(&args(vec![log]));
        let t = &r["totals"];
        assert_eq!(t["events"], 9);
        assert_eq!(t["lost_events"], 8);
        assert_eq!(t["lower_bounds"], true);
        assert_eq!(t["malformed_lines"], 0);
        assert_eq!(t["files_read"], 1);
        assert_eq!(t["outside_window"], 0);
        assert_eq!(t["first_seen"], "2026-11-20T10:00:00.000000Z");
        assert_eq!(t["last_seen"], "2026-11-23T08:30:00.000000Z");
        assert_eq!(t["now"], "2026-11-27T12:00:00.000000Z");
        assert_eq!(t["files"][0]["lines"], 6);
        assert_eq!(t["files"][0]["gzip"], false);

        let g = &r["groups"];
        assert_eq!(g["by"], "path");
        assert_eq!(g["total"], 2);
        assert_eq!(g["rows"][0]["directory"], format!("{J}/keys"));
        assert_eq!(g["rows"][0]["hits"], 6);
        assert_eq!(g["rows"][0]["processes"], 1);
        assert_eq!(g["rows"][0]["paths"], 1);
        assert_eq!(g["rows"][0]["first_seen"], "2026-11-20T10:00:00.000000Z");
        assert_eq!(g["rows"][0]["last_seen"], "2026-11-21T10:00:00.000000Z");
        assert_eq!(g["rows"][1]["directory"], format!("{J}/conf"));
        assert_eq!(g["rows"][1]["hits"], 3);
        assert_eq!(g["rows"][1]["paths"], 2);

        let p = &r["processes"];
        assert_eq!(p["total"], 2);
        assert_eq!(
            p["rows"][0],
            json!({"comm": "python3", "exe": null, "uid": 998, "hits": 6,
            "paths": 1, "first_seen": "2026-11-20T10:00:00.000000Z",
            "last_seen": "2026-11-21T10:00:00.000000Z", "escaped": [], "truncated": [], "summarised": false})
        );
        assert_eq!(p["rows"][1]["comm"], "bash");
        assert_eq!(p["rows"][1]["hits"], 3);
        assert_eq!(p["rows"][1]["paths"], 2);

        assert_eq!(r["misses"]["total"], 1);
        assert_eq!(
            r["misses"]["rows"][0]["path"],
            format!("{J}/conf/missing.yml")
        );
        assert_eq!(r["misses"]["rows"][0]["hits"], 2);
        assert_eq!(
            r["misses"]["rows"][0]["processes"],
            json!([{"comm": "bash", "hits": 2, "escaped": [], "truncated": [], "summarised": false}])
        );

        assert_eq!(r["denials"]["total"], 1);
        let d = &r["denials"]["rows"][0];
        assert_eq!(d["op"], "open");
        assert_eq!(d["path"], format!("{J}/conf/app.yml"));
        assert_eq!(d["result"], "EACCES");
        assert_eq!(d["hits"], 1);

        assert_eq!(
            r["verdict"]["text"],
            format!(
                "last access 4 days ago by bash (uid 0) to {J}/conf/app.yml at \
                 2026-11-23T08:30:00Z; but 8 events were lost, so later accesses may be missing"
            )
        );
        let last = &r["verdict"]["last_access"];
        assert_eq!(last["ago_seconds"], 4 * 86_400 + 3 * 3600 + 1800);
        assert_eq!(last["op"], "open");
        assert_eq!(last["result"], "EACCES");
    }

    #[test]
    fn table_output_is_aligned_and_complete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = write(dir.path(), "audit.log", jsonl(&basic_events()).as_bytes());
        let expected = "\
WARNING: 8 audit events were lost (queue full or write errors); every figure below is a lower bound.

Totals
  events           9
  lost events      8
  files read       1
  malformed lines  0
  time span        2026-11-20T10:00:00Z to 2026-11-23T08:30:00Z (2 days)

Top legacy directories
DIRECTORY                     HITS  PROCS  USERS  PATHS  FIRST SEEN            LAST SEEN
/home/optdir/jumpserver/keys     6      1      1      1  2026-11-20T10:00:00Z  2026-11-21T10:00:00Z
/home/optdir/jumpserver/conf     3      1      1      2  2026-11-22T10:00:00Z  2026-11-23T08:30:00Z

Top processes
COMM     EXE  UID  HITS  PATHS  LAST SEEN
python3  -    998     6      1  2026-11-21T10:00:00Z
bash     -      0     3      2  2026-11-23T08:30:00Z

Misses (ENOENT): what the migration missed
PATH                                      HITS  LAST SEEN             PROCESSES
/home/optdir/jumpserver/conf/missing.yml     2  2026-11-22T10:00:00Z  bash (2)

Denied and refused (EACCES, EPERM, EROFS)
OP    PATH                                  RESULT  HITS  LAST SEEN             PROCESSES
open  /home/optdir/jumpserver/conf/app.yml  EACCES     1  2026-11-23T08:30:00Z  bash (1)

Verdict: last access 4 days ago by bash (uid 0) to /home/optdir/jumpserver/conf/app.yml at 2026-11-23T08:30:00Z; but 8 events were lost, so later accesses may be missing
";
        assert_eq!(output(&args(vec![log])), expected);
    }

    /// The same events split over plain, rotated and gzip files (one without a .gz name,
    /// one of two gzip members), given in shuffled order, report exactly like one file.
    #[test]
    fn rotated_gzip_and_plain_in_any_order_equal_one_file() {
        let mut events = Vec::new();
        for i in 0..40u32 {
            let comm = ["python3", "bash", "celery"][i as usize % 3];
            let result = ["ok", "ok", "ENOENT", "EROFS"][i as usize % 4];
            let path = format!("{J}/d{}/f{}", i % 5, i % 7);
            let ts = format!("2026-11-{:02}T{:02}:00:00Z", 10 + i % 15, i % 24);
            events.push(with(
                ev(&ts, "open", &path, comm, 1000 + i % 2, result),
                "count",
                json!(i % 3 + 1),
            ));
        }
        events.push(dropped("2026-11-15T00:00:00Z", 3));
        let all = jsonl(&events);
        let parts: Vec<String> = events.chunks(9).map(jsonl).collect();
        assert_eq!(parts.len(), 5);

        let dir = tempfile::tempdir().expect("tempdir");
        let single = write(dir.path(), "single.log", all.as_bytes());
        let mut two_members = gzip(parts[3].as_bytes());
        two_members.extend(gzip(parts[4].as_bytes()));
        let split = vec![
            write(dir.path(), "audit.log.2.gz", &gzip(parts[2].as_bytes())),
            write(dir.path(), "audit.log", parts[0].as_bytes()),
            write(dir.path(), "audit.log.3", &two_members),
            write(dir.path(), "audit.log.1", parts[1].as_bytes()),
        ];

        let mut one = json_of(&args(vec![single]));
        let mut many = json_of(&args(split));
        assert_eq!(many["totals"]["files_read"], 4);
        let gz: Vec<bool> = many["totals"]["files"]
            .as_array()
            .expect("files")
            .iter()
            .map(|f| f["gzip"] == true)
            .collect();
        assert_eq!(gz, [true, false, true, false]);
        let expected_events: u64 = (0..40u64).map(|i| i % 3 + 1).sum();
        assert_eq!(many["totals"]["events"], expected_events);
        assert_eq!(many["totals"]["lost_events"], 3);
        one["totals"]["files"] = Value::Null;
        one["totals"]["files_read"] = Value::Null;
        many["totals"]["files"] = Value::Null;
        many["totals"]["files_read"] = Value::Null;
        assert_eq!(one, many);
    }

    /// Many chunks, lines straddling chunk boundaries: one thread or several, same report.
    #[test]
    fn parallel_and_sequential_reading_agree_across_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut data = String::new();
        let n = 15_000u64;
        for i in 0..n {
            let e = ev(
                &format!("2026-11-{:02}T10:00:{:02}Z", 1 + i % 20, i % 60),
                "open",
                &format!("{J}/dir{}/file{}", i % 13, i % 101),
                ["a", "b", "c"][(i % 3) as usize],
                (i % 4) as u32,
                if i % 10 == 0 { "ENOENT" } else { "ok" },
            );
            data.push_str(&format!("{}\n", with(e, "count", json!(i % 2 + 1))));
            if i % 500 == 499 {
                data.push_str("garbage\n");
            }
        }
        assert!(data.len() > 2 * CHUNK);
        let plain = write(dir.path(), "audit.log", data.as_bytes());
        let gz = write(dir.path(), "audit.log.1", &gzip(data.as_bytes()));
        let window = Window {
            since: None,
            until: None,
        };
        let now = micros_of(now());
        let report_with = |workers| {
            let (agg, files) =
                aggregate(&[plain.clone(), gz.clone()], window, workers, 0).expect("aggregate");
            serde_json::to_value(agg.into_report(GroupBy::Path, files, 0, now)).expect("json")
        };
        let one = report_with(1);
        assert_eq!(one["totals"]["events"], 2 * (n + n / 2));
        assert_eq!(one["totals"]["malformed_lines"], 60);
        assert_eq!(one["totals"]["files"][0]["lines"], n + 30);
        assert_eq!(one["totals"]["files"][1]["lines"], n + 30);
        assert_eq!(one["groups"]["total"], 13);
        // i = 10k for k in 0..1500: 10 is invertible mod 1313, so all 13 * 101 pairs occur.
        assert_eq!(one["misses"]["total"], 1313);
        assert_eq!(report_with(2), one);
        assert_eq!(report_with(5), one);
    }

    #[test]
    fn malformed_truncated_and_overlong_lines_are_counted_per_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = ev(
            "2026-11-20T10:00:00Z",
            "open",
            &format!("{J}/a"),
            "sh",
            1,
            "ok",
        )
        .to_string();
        let mut a = String::new();
        a.push_str(&format!("{good}\n"));
        a.push_str("not json\n");
        a.push_str("{\"v\":1,\"ts\":\"2026-11-20T10:00:00Z\",\"op\":\"open\"}\n"); // no path/uid/comm/result
        a.push_str(&format!(
            "{}\n",
            with(
                serde_json::from_str(&good).expect("json"),
                "ts",
                json!("yesterday")
            )
        ));
        a.push_str(&format!(
            "{}\n",
            with(
                serde_json::from_str(&good).expect("json"),
                "uid",
                json!("root")
            )
        ));
        a.push_str("\n   \n"); // blank lines: ignored
        a.push_str(&format!("{good}\r\n"));
        a.push_str("{\"v\":1,\"ts\":\"2026-11-2"); // half-written last line
        let a = write(dir.path(), "a.log", a.as_bytes());

        let mut b = Vec::new();
        b.extend_from_slice(format!("{good}\n[1,2]\n").as_bytes());
        b.extend_from_slice(b"{\"ts\":\"\xff\xfe\"}\n"); // not UTF-8
        b.extend(std::iter::repeat_n(b'x', MAX_LINE + 10)); // overlong, ends within a chunk
        b.push(b'\n');
        b.extend_from_slice(format!("{good}\n").as_bytes());
        b.extend(std::iter::repeat_n(b'y', 2 * MAX_LINE)); // overlong, cut by the reader
        b.push(b'\n');
        b.extend_from_slice(good.as_bytes()); // complete, just no final newline
        let b = write(dir.path(), "b.log", &b);

        let r = json_of(&args(vec![a, b]));
        let files = &r["totals"]["files"];
        assert_eq!(files[0]["lines"], 7);
        assert_eq!(files[0]["malformed"], 5);
        assert_eq!(files[1]["lines"], 7);
        assert_eq!(files[1]["malformed"], 4);
        assert_eq!(files[1]["error"], Value::Null);
        assert_eq!(r["totals"]["malformed_lines"], 9);
        assert_eq!(files[1]["overlong"], 2);
        assert_eq!(r["totals"]["overlong_lines"], 2);
        assert_eq!(r["totals"]["events"], 5);
        let table = output(&args(vec![dir.path().join("b.log")]));
        assert!(
            table.contains("\n    over-long      2 (longer than 8 MiB: skipped unread)\n"),
            "{table}"
        );
    }

    #[test]
    fn truncated_gzip_keeps_what_was_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events: Vec<Value> = (0..3)
            .map(|i| {
                ev(
                    &format!("2026-11-2{i}T10:00:00Z"),
                    "open",
                    &format!("{J}/x"),
                    "sh",
                    1,
                    "ok",
                )
            })
            .collect();
        let mut data = gzip(jsonl(&events).as_bytes());
        // A second member cut off inside its header, as a crash during rotation leaves it.
        data.extend_from_slice(&gzip(b"more\n")[..6]);
        let log = write(dir.path(), "audit.log.1.gz", &data);
        let r = json_of(&args(vec![log]));
        assert_eq!(r["totals"]["events"], 3);
        assert_eq!(r["totals"]["files"][0]["lines"], 3);
        assert_eq!(r["totals"]["files"][0]["malformed"], 0);
        assert!(r["totals"]["files"][0]["error"].is_string());
        let table = output(&args(vec![dir.path().join("audit.log.1.gz")]));
        assert!(
            table.contains("audit.log.1.gz: reading stopped after 3 lines: "),
            "{table}"
        );
    }

    #[test]
    fn escaped_strings_unknown_and_future_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = ev(
            "2026-11-20T10:00:00Z",
            "open",
            &format!("{J}/caf\u{e9} \"q\"/x"),
            "sh",
            1,
            "ok",
        );
        let e = with(e, "exe", json!("/usr/bin/sh"));
        let e = with(e, "cmdline", json!("sh -c 'cat x'"));
        let e = with(e, "target", json!("/opt/jumpserver/x"));
        let e = with(e, "flags", json!("r"));
        let e = with(e, "future", json!({"nested": [1, 2, {"a": null}]}));
        let log = write(dir.path(), "audit.log", jsonl(&[e]).as_bytes());
        let r = json_of(&args(vec![log.clone()]));
        assert_eq!(r["totals"]["malformed_lines"], 0);
        assert_eq!(
            r["groups"]["rows"][0]["directory"],
            format!("{J}/caf\u{e9} \"q\"")
        );
        assert_eq!(r["processes"]["rows"][0]["exe"], "/usr/bin/sh");
        assert_eq!(r["verdict"]["last_access"]["exe"], "/usr/bin/sh");
    }

    /// The daemon logs a name that is not UTF-8 encoded (`\\` and `\xHH`) and lists the field
    /// in `escaped`; the same text as a real UTF-8 name is another name. Never merged, and
    /// every output says which is which.
    #[test]
    fn escaped_names_are_kept_apart_and_marked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let miss = |path: &str, comm: &str, escaped: &[&str]| {
            let e = ev("2026-11-20T10:00:00Z", "lookup", path, comm, 1, "ENOENT");
            if escaped.is_empty() {
                e
            } else {
                with(e, "escaped", json!(escaped))
            }
        };
        let events = vec![
            // The UTF-8 name `/l/bad\xff\xfe` (backslashes and letters).
            miss("/l/bad\\xff\\xfe", "sh", &[]),
            // The bytes 2f 6c 2f 62 61 64 ff fe: the same logged text, escaped.
            miss("/l/bad\\xff\\xfe", "sh", &["path"]),
            with(miss("/l/bad\\xff\\xfe", "sh", &["path"]), "count", json!(2)),
            miss("/l/bad\\xfe\\xff", "sh", &["path"]),
            miss("/l/bad\u{fffd}\u{fffd}", "sh", &[]),
            // A process name that is not UTF-8, and one whose text reads the same.
            miss("/l/x", "p\\xe9", &["comm", "target"]),
            miss("/l/x", "p\\xe9", &[]),
        ];
        let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
        let a = ReportArgs {
            limit: 0,
            ..args(vec![log.clone()])
        };
        let r = json_of(&a);
        assert_eq!(r["totals"]["malformed_lines"], 0);
        let misses: Vec<(String, u64, Value)> = r["misses"]["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|m| {
                (
                    m["path"].as_str().unwrap_or("").to_owned(),
                    m["hits"].as_u64().unwrap_or(0),
                    m["escaped"].clone(),
                )
            })
            .collect();
        assert_eq!(
            misses,
            [
                ("/l/bad\\xff\\xfe".to_owned(), 3, json!(["path"])),
                ("/l/x".to_owned(), 2, json!([])),
                ("/l/bad\\xfe\\xff".to_owned(), 1, json!(["path"])),
                ("/l/bad\\xff\\xfe".to_owned(), 1, json!([])),
                ("/l/bad\u{fffd}\u{fffd}".to_owned(), 1, json!([])),
            ]
        );
        let procs = &r["misses"]["rows"][1]["processes"];
        assert_eq!(procs[0]["comm"], "p\\xe9");
        assert_ne!(procs[0]["escaped"], procs[1]["escaped"]);
        assert_eq!(r["processes"]["total"], 3);
        assert_eq!(r["groups"]["total"], 1);
        assert_eq!(r["groups"]["rows"][0]["paths"], 5);
        assert_eq!(r["groups"]["rows"][0]["processes"], 3);

        let table = output(&a);
        assert!(
            table.contains("\n/l/bad\\xff\\xfe \\[not UTF-8]  "),
            "{table}"
        );
        assert!(
            table.contains("\n/l/bad\\xfe\\xff \\[not UTF-8]  "),
            "{table}"
        );
        assert!(table.contains("\n/l/bad\\\\xff\\\\xfe  "), "{table}");
        assert!(
            table.contains("p\\\\xe9 (1), p\\xe9 \\[not UTF-8] (1)"),
            "{table}"
        );
        let csv = output(&ReportArgs {
            by: GroupBy::Process,
            format: Format::Csv,
            ..a.clone()
        });
        assert!(csv.contains("\np\\xe9,,1,1,1,1,"), "{csv}");
        assert!(csv.contains(",escaped:comm\n"), "{csv}");
        assert!(csv.contains("\np\\\\xe9,,1,1,1,1,"), "{csv}");
    }

    #[test]
    fn truncated_names_are_marked_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let long = "/l/aaaa…[5000 bytes]…zzzz";
        let events = vec![
            with(
                with(
                    ev("2026-11-20T10:00:00Z", "lookup", long, "sh", 1, "ENOENT"),
                    "truncated",
                    json!(["path", "target"]),
                ),
                "count",
                json!(3),
            ),
            // A real name that merely looks like it: not truncated.
            ev("2026-11-20T10:00:01Z", "lookup", long, "sh", 1, "ENOENT"),
        ];
        let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
        let r = json_of(&args(vec![log.clone()]));
        assert_eq!(r["totals"]["truncated_events"], 3);
        assert_eq!(r["misses"]["total"], 2);
        assert_eq!(r["misses"]["rows"][0]["truncated"], json!(["path"]));
        assert_eq!(r["misses"]["rows"][1]["truncated"], json!([]));
        let table = output(&args(vec![log]));
        assert!(
            table.contains(&format!("\n{long} \\[truncated]  ")),
            "{table}"
        );
        assert!(
            table.contains(&format!("\n{long}                ")),
            "{table}"
        );
        assert!(
            table.contains("\n  truncated        3 events with a name shortened"),
            "{table}"
        );
    }

    /// `suppressed` lines: events the rate limit kept out of the log. Counted exactly, per
    /// user, in every format, and never as an access of a path.
    #[test]
    fn suppressed_events_are_counted_per_user_and_never_as_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sup = |ts: &str, uid: u32, count: u64| {
            json!({"v": 1, "ts": ts, "op": "suppressed", "uid": uid, "count": count,
                   "since": "2026-11-20T09:00:00Z"})
        };
        let events = vec![
            ev("2026-11-20T10:00:00Z", "open", "/l/a", "sh", 0, "ok"),
            sup("2026-11-20T10:00:01Z", 1000, 500),
            sup("2026-11-20T10:00:02Z", 1000, 250),
            sup("2026-11-20T10:00:03Z", 1001, 3),
            // Malformed: no count, no uid.
            json!({"v": 1, "ts": "2026-11-20T10:00:04Z", "op": "suppressed", "uid": 5}),
            json!({"v": 1, "ts": "2026-11-20T10:00:04Z", "op": "suppressed", "count": 5}),
        ];
        let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
        let by_user = ReportArgs {
            by: GroupBy::User,
            ..args(vec![log.clone()])
        };
        let r = json_of(&by_user);
        assert_eq!(r["totals"]["events"], 1);
        assert_eq!(r["totals"]["suppressed_events"], 753);
        assert_eq!(r["totals"]["malformed_lines"], 2);
        assert_eq!(r["suppressed"]["total"], 2);
        assert_eq!(
            r["suppressed"]["rows"][0],
            json!({"uid": 1000, "events": 750, "first_seen": "2026-11-20T10:00:01.000000Z",
                   "last_seen": "2026-11-20T10:00:02.000000Z"})
        );
        assert_eq!(r["suppressed"]["rows"][1]["events"], 3);
        let users: Vec<(u64, u64, u64)> = r["groups"]["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|g| {
                (
                    g["uid"].as_u64().unwrap_or(99),
                    g["hits"].as_u64().unwrap_or(99),
                    g["suppressed"].as_u64().unwrap_or(99),
                )
            })
            .collect();
        assert_eq!(users, [(0, 1, 0), (1000, 0, 750), (1001, 0, 3)]);
        assert_eq!(r["processes"]["total"], 1);
        assert_eq!(r["misses"]["total"], 0);
        assert_eq!(r["denials"]["total"], 0);
        assert!(r["verdict"]["text"]
            .as_str()
            .unwrap_or("")
            .ends_with("; 753 more events were not logged (audit rate limit), the last at 2026-11-20T10:00:03Z"));

        let table = output(&by_user);
        assert!(
            table.starts_with(
                "WARNING: 753 events were not logged because users exceeded the audit rate limit"
            ),
            "{table}"
        );
        assert!(
            table.contains("\n  suppressed events  753 (not logged"),
            "{table}"
        );
        assert!(
            table.contains("\nNot logged: over the audit rate limit (per user)\n"),
            "{table}"
        );
        assert!(
            table.contains("\n1000     750  2026-11-20T10:00:01Z  2026-11-20T10:00:02Z\n"),
            "{table}"
        );
        let csv = output(&ReportArgs {
            format: Format::Csv,
            ..by_user.clone()
        });
        assert!(csv.starts_with("uid,suppressed,hits,"), "{csv}");
        assert!(csv.contains("\n1000,750,0,0,0,0,,,\n"), "{csv}");
        // By path, nothing of them appears as a directory.
        let r = json_of(&args(vec![log]));
        assert_eq!(r["groups"]["total"], 1);
        assert_eq!(r["groups"]["rows"][0]["hits"], 1);
    }

    /// The report checks `v`: a line of a newer schema is skipped and said, not misread.
    #[test]
    fn newer_schema_versions_are_skipped_and_said() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = ev("2026-11-20T10:00:00Z", "open", "/l/a", "sh", 1, "ok");
        let mut no_v = good.clone();
        no_v.as_object_mut().map(|o| o.remove("v"));
        let events = vec![
            good.clone(),
            with(good.clone(), "v", json!(2)),
            // A newer schema that changed a field this report reads.
            with(with(good.clone(), "v", json!(3)), "uid", json!("alice")),
            with(good.clone(), "v", json!(0)),
            with(good.clone(), "v", json!("1")),
            no_v,
        ];
        let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
        let r = json_of(&args(vec![log.clone()]));
        assert_eq!(r["totals"]["events"], 2);
        assert_eq!(r["totals"]["newer_version_lines"], 2);
        assert_eq!(r["totals"]["malformed_lines"], 2);
        assert_eq!(r["totals"]["files"][0]["newer_version"], 2);
        let table = output(&args(vec![log]));
        assert!(
            table.starts_with(
                "WARNING: 2 lines of a newer audit schema than this relocfs reads (v > 1) skipped"
            ),
            "{table}"
        );
        assert!(
            table.contains("\n  newer schema     2 lines skipped\n"),
            "{table}"
        );
    }

    #[test]
    fn since_until_absolute_are_half_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events = vec![
            ev("2026-10-31T23:59:59.999999Z", "open", "/l/a", "sh", 1, "ok"),
            ev("2026-11-01T00:00:00Z", "open", "/l/a", "sh", 1, "ok"),
            with(
                ev("2026-11-15T12:00:00Z", "open", "/l/b", "sh", 1, "ok"),
                "count",
                json!(4),
            ),
            ev("2026-11-20T00:00:00Z", "open", "/l/c", "sh", 1, "ok"),
            dropped("2026-10-01T00:00:00Z", 9),
            dropped("2026-11-10T00:00:00Z", 2),
        ];
        let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
        for since in [
            "2026-11-01",
            "2026-11-01T01:00:00+01:00",
            "2026-11-01t00:00:00z",
        ] {
            let a = ReportArgs {
                since: Some(since.into()),
                until: Some("2026-11-20T00:00:00Z".into()),
                ..args(vec![log.clone()])
            };
            let r = json_of(&a);
            assert_eq!(r["totals"]["events"], 5, "{since}");
            assert_eq!(r["totals"]["outside_window"], 2, "{since}");
            assert_eq!(r["totals"]["lost_events"], 2, "{since}");
            assert_eq!(r["totals"]["since"], "2026-11-01T00:00:00.000000Z");
            assert_eq!(r["totals"]["until"], "2026-11-20T00:00:00.000000Z");
            assert_eq!(r["totals"]["first_seen"], "2026-11-01T00:00:00.000000Z");
            assert_eq!(r["totals"]["last_seen"], "2026-11-15T12:00:00.000000Z");
        }
    }

    #[test]
    fn since_until_relative_to_now() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events = vec![
            ev("2026-11-20T11:59:59Z", "open", "/l/a", "sh", 1, "ok"),
            ev("2026-11-20T12:00:00Z", "open", "/l/a", "sh", 1, "ok"),
            ev("2026-11-27T01:00:00Z", "open", "/l/b", "sh", 1, "ok"),
            ev("2026-11-27T11:30:00Z", "open", "/l/c", "sh", 1, "ok"),
        ];
        let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
        let count = |since: Option<&str>, until: Option<&str>| {
            let r = json_of(&ReportArgs {
                since: since.map(Into::into),
                until: until.map(Into::into),
                ..args(vec![log.clone()])
            });
            (r["totals"]["events"].as_u64(), r["totals"]["since"].clone())
        };
        assert_eq!(
            count(Some("7d"), None),
            (Some(3), json!("2026-11-20T12:00:00.000000Z"))
        );
        assert_eq!(count(Some("1w"), None).0, Some(3));
        assert_eq!(
            count(Some("12h"), None),
            (Some(2), json!("2026-11-27T00:00:00.000000Z"))
        );
        assert_eq!(count(Some("45m"), None).0, Some(1));
        assert_eq!(count(Some("1800s"), None).0, Some(1));
        assert_eq!(count(Some("7d"), Some("1h")).0, Some(2));
    }

    #[test]
    fn by_process_user_and_rule() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events = vec![
            with(
                with(
                    ev(
                        "2026-11-20T10:00:00Z",
                        "open",
                        "/l/app/a",
                        "python3",
                        998,
                        "ok",
                    ),
                    "exe",
                    json!("/usr/bin/python3.11"),
                ),
                "map",
                json!("/l/app"),
            ),
            with(
                with(
                    ev(
                        "2026-11-20T11:00:00Z",
                        "open",
                        "/l/app/b",
                        "python3",
                        998,
                        "ok",
                    ),
                    "exe",
                    json!("/usr/bin/python3.11"),
                ),
                "map",
                json!("/l/app"),
            ),
            with(
                with(
                    ev(
                        "2026-11-20T12:00:00Z",
                        "open",
                        "/l/app/a",
                        "python3",
                        0,
                        "ok",
                    ),
                    "exe",
                    json!("/opt/py/bin/python3"),
                ),
                "map",
                json!("/l/app"),
            ),
            with(
                ev("2026-11-20T13:00:00Z", "open", "/l/keys/k", "bash", 0, "ok"),
                "count",
                json!(3),
            ),
        ];
        let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
        let by = |by| {
            json_of(&ReportArgs {
                by,
                ..args(vec![log.clone()])
            })["groups"]
                .clone()
        };

        let g = by(GroupBy::Process);
        assert_eq!(g["by"], "process");
        assert_eq!(g["total"], 3);
        assert_eq!(
            g["rows"][0],
            json!({"key": "bash", "comm": "bash", "exe": null, "hits": 3,
            "processes": 1, "users": 1, "paths": 1,
            "first_seen": "2026-11-20T13:00:00.000000Z", "last_seen": "2026-11-20T13:00:00.000000Z",
            "escaped": [], "truncated": [], "summarised": false})
        );
        assert_eq!(g["rows"][1]["key"], "python3 (/usr/bin/python3.11)");
        assert_eq!(g["rows"][1]["hits"], 2);
        assert_eq!(g["rows"][1]["paths"], 2);
        assert_eq!(g["rows"][2]["exe"], "/opt/py/bin/python3");
        assert_eq!(g["rows"][2]["hits"], 1);

        let g = by(GroupBy::User);
        assert_eq!(g["total"], 2);
        assert_eq!(g["rows"][0]["uid"], 0);
        assert_eq!(g["rows"][0]["key"], "0");
        assert_eq!(g["rows"][0]["hits"], 4);
        assert_eq!(g["rows"][0]["processes"], 2);
        assert_eq!(g["rows"][0]["paths"], 2);
        assert_eq!(g["rows"][1]["uid"], 998);
        assert_eq!(g["rows"][1]["hits"], 2);

        let g = by(GroupBy::Rule);
        assert_eq!(g["total"], 2);
        assert_eq!(g["rows"][0]["rule"], Value::Null);
        assert_eq!(g["rows"][0]["key"], "(no rule)");
        assert_eq!(g["rows"][0]["hits"], 3);
        assert_eq!(g["rows"][1]["rule"], "/l/app");
        assert_eq!(g["rows"][1]["hits"], 3);
        assert_eq!(g["rows"][1]["users"], 2);
    }

    #[test]
    fn by_path_uses_the_parent_directory_except_for_opendir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events = vec![
            ev(
                "2026-11-20T10:00:00Z",
                "open",
                "/l/app/conf/x.yml",
                "sh",
                1,
                "ok",
            ),
            ev(
                "2026-11-20T10:00:01Z",
                "opendir",
                "/l/app/conf",
                "sh",
                1,
                "ok",
            ),
            ev(
                "2026-11-20T10:00:02Z",
                "lookup",
                "/l/app/conf",
                "sh",
                1,
                "ok",
            ),
            ev("2026-11-20T10:00:03Z", "opendir", "/l/", "sh", 1, "ok"),
            ev("2026-11-20T10:00:04Z", "lookup", "/top", "sh", 1, "ok"),
        ];
        let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
        let g = json_of(&args(vec![log]))["groups"].clone();
        let rows: Vec<(String, u64)> = g["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    r["directory"].as_str().unwrap_or("").to_owned(),
                    r["hits"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("/l/app/conf".to_owned(), 2),
                ("/".to_owned(), 1),
                ("/l".to_owned(), 1),
                ("/l/app".to_owned(), 1)
            ]
        );
    }

    #[test]
    fn json_field_names_are_stable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = write(dir.path(), "audit.log", jsonl(&basic_events()).as_bytes());
        let r = json_of(&args(vec![log]));
        let keys = |v: &Value| {
            let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
            k.sort();
            k.join(",")
        };
        assert_eq!(
            keys(&r),
            "denials,groups,misses,processes,suppressed,totals,verdict"
        );
        assert_eq!(
            keys(&r["totals"]),
            "events,files,files_read,first_seen,last_seen,lost_events,lower_bounds,\
             malformed_lines,max_memory,newer_version_lines,now,outside_window,overlong_lines,\
             since,summarised_events,suppressed_events,truncated_events,until"
        );
        assert_eq!(
            keys(&r["totals"]["files"][0]),
            "error,gzip,lines,malformed,newer_version,overlong,path"
        );
        assert_eq!(keys(&r["groups"]), "by,rows,total");
        const MARKS: &str = "escaped,";
        assert_eq!(
            keys(&r["groups"]["rows"][0]),
            format!("directory,{MARKS}first_seen,hits,key,last_seen,paths,processes,summarised,truncated,users")
        );
        assert_eq!(
            keys(&r["processes"]["rows"][0]),
            format!("comm,{MARKS}exe,first_seen,hits,last_seen,paths,summarised,truncated,uid")
        );
        assert_eq!(
            keys(&r["misses"]["rows"][0]),
            format!("{MARKS}first_seen,hits,last_seen,path,processes,summarised,truncated")
        );
        assert_eq!(
            keys(&r["misses"]["rows"][0]["processes"][0]),
            "comm,escaped,hits,summarised,truncated"
        );
        assert_eq!(
            keys(&r["denials"]["rows"][0]),
            format!(
                "{MARKS}first_seen,hits,last_seen,op,path,processes,result,summarised,truncated"
            )
        );
        assert_eq!(keys(&r["suppressed"]), "rows,total");
        assert_eq!(keys(&r["verdict"]), "last_access,text");
        assert_eq!(
            keys(&r["verdict"]["last_access"]),
            "ago_seconds,comm,escaped,exe,op,path,result,summarised,truncated,ts,uid"
        );
    }

    #[test]
    fn csv_has_a_header_and_the_grouping_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events = vec![
            with(
                ev(
                    "2026-11-20T10:00:00Z",
                    "open",
                    "/l/a,b \"c\"/f",
                    "sh",
                    1,
                    "ok",
                ),
                "count",
                json!(2),
            ),
            with(
                ev("2026-11-20T11:00:00Z", "open", "/l/d/f", "py,thon", 2, "ok"),
                "exe",
                json!("/x"),
            ),
        ];
        let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
        let csv = |by| {
            output(&ReportArgs {
                by,
                format: Format::Csv,
                ..args(vec![log.clone()])
            })
        };
        assert_eq!(
            csv(GroupBy::Path),
            "directory,hits,processes,users,paths,first_seen,last_seen,notes\n\
             \"/l/a,b \"\"c\"\"\",2,1,1,1,2026-11-20T10:00:00.000000Z,2026-11-20T10:00:00.000000Z,\n\
             /l/d,1,1,1,1,2026-11-20T11:00:00.000000Z,2026-11-20T11:00:00.000000Z,\n"
        );
        assert_eq!(
            csv(GroupBy::Process),
            "comm,exe,hits,processes,users,paths,first_seen,last_seen,notes\n\
             sh,,2,1,1,1,2026-11-20T10:00:00.000000Z,2026-11-20T10:00:00.000000Z,\n\
             \"py,thon\",/x,1,1,1,1,2026-11-20T11:00:00.000000Z,2026-11-20T11:00:00.000000Z,\n"
        );
        assert_eq!(
            csv(GroupBy::User).lines().collect::<Vec<_>>(),
            [
                "uid,suppressed,hits,processes,users,paths,first_seen,last_seen,notes",
                "1,0,2,1,1,1,2026-11-20T10:00:00.000000Z,2026-11-20T10:00:00.000000Z,",
                "2,0,1,1,1,1,2026-11-20T11:00:00.000000Z,2026-11-20T11:00:00.000000Z,",
            ]
        );
        assert_eq!(
            csv(GroupBy::Rule).lines().collect::<Vec<_>>(),
            [
                "rule,hits,processes,users,paths,first_seen,last_seen,notes",
                ",3,2,2,2,2026-11-20T10:00:00.000000Z,2026-11-20T11:00:00.000000Z,",
            ]
        );
    }

    #[test]
    fn limit_caps_rows_per_section() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events: Vec<Value> = (0..5u64)
            .map(|i| {
                let e = ev(
                    "2026-11-20T10:00:00Z",
                    "lookup",
                    &format!("/l/d{i}/gone"),
                    &format!("p{i}"),
                    1,
                    "ENOENT",
                );
                with(e, "count", json!(i + 1))
            })
            .collect();
        let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
        let r = json_of(&ReportArgs {
            limit: 2,
            ..args(vec![log.clone()])
        });
        for section in ["groups", "processes", "misses"] {
            assert_eq!(r[section]["total"], 5, "{section}");
            assert_eq!(
                r[section]["rows"].as_array().map(Vec::len),
                Some(2),
                "{section}"
            );
        }
        assert_eq!(r["misses"]["rows"][0]["path"], "/l/d4/gone");
        assert_eq!(r["misses"]["rows"][0]["hits"], 5);
        assert_eq!(r["misses"]["rows"][1]["hits"], 4);
        let table = output(&ReportArgs {
            limit: 2,
            ..args(vec![log.clone()])
        });
        assert!(
            table.contains("\nMisses (ENOENT): what the migration missed (2 of 5)\n"),
            "{table}"
        );
        let all = json_of(&ReportArgs {
            limit: 0,
            ..args(vec![log])
        });
        assert_eq!(all["misses"]["rows"].as_array().map(Vec::len), Some(5));
    }

    #[test]
    fn denials_and_misses_sum_counts_per_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events = vec![
            with(
                ev("2026-11-20T10:00:00Z", "create", "/l/new", "a", 1, "EROFS"),
                "count",
                json!(4),
            ),
            ev("2026-11-20T10:00:01Z", "create", "/l/new", "b", 1, "EROFS"),
            ev("2026-11-20T10:00:02Z", "unlink", "/l/new", "a", 1, "EROFS"),
            ev("2026-11-20T10:00:03Z", "open", "/l/secret", "c", 1, "EPERM"),
            ev(
                "2026-11-20T10:00:04Z",
                "open",
                "/l/secret",
                "c",
                1,
                "ENOTDIR",
            ),
            with(
                ev(
                    "2026-11-20T10:00:05Z",
                    "lookup",
                    "/l/gone",
                    "b",
                    1,
                    "ENOENT",
                ),
                "count",
                json!(3),
            ),
            ev("2026-11-20T10:00:06Z", "open", "/l/gone", "a", 1, "ENOENT"),
        ];
        let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
        let r = json_of(&args(vec![log]));
        assert_eq!(r["denials"]["total"], 3);
        let d = &r["denials"]["rows"];
        assert_eq!(
            (d[0]["op"].as_str(), d[0]["hits"].as_u64()),
            (Some("create"), Some(5))
        );
        assert_eq!(
            d[0]["processes"],
            json!([{"comm": "a", "hits": 4, "escaped": [], "truncated": [], "summarised": false}, {"comm": "b", "hits": 1, "escaped": [], "truncated": [], "summarised": false}])
        );
        assert_eq!(
            (d[1]["path"].as_str(), d[1]["result"].as_str()),
            (Some("/l/new"), Some("EROFS"))
        );
        assert_eq!(
            (d[1]["op"].as_str(), d[1]["hits"].as_u64()),
            (Some("unlink"), Some(1))
        );
        assert_eq!(
            (d[2]["result"].as_str(), d[2]["hits"].as_u64()),
            (Some("EPERM"), Some(1))
        );
        assert_eq!(r["misses"]["total"], 1);
        assert_eq!(r["misses"]["rows"][0]["hits"], 4);
        assert_eq!(
            r["misses"]["rows"][0]["processes"],
            json!([{"comm": "b", "hits": 3, "escaped": [], "truncated": [], "summarised": false}, {"comm": "a", "hits": 1, "escaped": [], "truncated": [], "summarised": false}])
        );
        assert_eq!(r["totals"]["events"], 12);
    }

    #[test]
    fn verdict_phrases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let verdict = |events: &[Value], since: Option<&str>, until: Option<&str>| {
            let log = write(dir.path(), "v.log", jsonl(events).as_bytes());
            let a = ReportArgs {
                since: since.map(Into::into),
                until: until.map(Into::into),
                ..args(vec![log])
            };
            json_of(&a)["verdict"]["text"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        };
        let at = |ts: &str| vec![ev(ts, "open", "/l/x", "python3", 998, "ok")];
        assert_eq!(
            verdict(&at("2026-11-24T11:59:59Z"), None, None),
            "last access 3 days ago by python3 (uid 998) to /l/x at 2026-11-24T11:59:59Z"
        );
        assert_eq!(
            verdict(&at("2026-11-26T12:00:00Z"), None, None),
            "last access 1 day ago by python3 (uid 998) to /l/x at 2026-11-26T12:00:00Z"
        );
        assert!(verdict(&at("2026-11-27T07:00:00Z"), None, None)
            .starts_with("last access 5 hours ago "));
        assert!(verdict(&at("2026-11-27T11:59:00Z"), None, None)
            .starts_with("last access 1 minute ago "));
        assert!(verdict(&at("2026-11-27T11:59:58Z"), None, None)
            .starts_with("last access 2 seconds ago "));
        assert!(verdict(&at("2026-11-27T12:10:00Z"), None, None)
            .starts_with("last access 10 minutes in the future "));
        let exe = vec![with(
            ev("2026-11-27T11:00:00Z", "open", "/l/x", "python3", 998, "ok"),
            "exe",
            json!("/usr/bin/python3"),
        )];
        assert_eq!(
            verdict(&exe, None, None),
            "last access 1 hour ago by python3 [/usr/bin/python3] (uid 998) to /l/x at 2026-11-27T11:00:00Z"
        );
        let old = at("2026-11-01T00:00:00Z");
        assert_eq!(
            verdict(&old, Some("2026-11-20"), None),
            "no access since 2026-11-20T00:00:00Z"
        );
        assert_eq!(
            verdict(&old, Some("3d"), None),
            "no access since 2026-11-24T12:00:00Z"
        );
        assert_eq!(
            verdict(&old, None, Some("2026-10-01")),
            "no access before 2026-10-01T00:00:00Z"
        );
        assert_eq!(
            verdict(&old, Some("2026-10-01"), Some("2026-10-31")),
            "no access between 2026-10-01T00:00:00Z and 2026-10-31T00:00:00Z"
        );
        assert_eq!(verdict(&[], None, None), "no access recorded in these logs");
        assert_eq!(
            verdict(&[dropped("2026-11-25T00:00:00Z", 1)], Some("7d"), None),
            "no access since 2026-11-20T12:00:00Z; but 1 event was lost, so later accesses may be missing"
        );
    }

    #[test]
    fn lost_events_sum_over_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = write(
            dir.path(),
            "a",
            jsonl(&[
                dropped("2026-11-20T00:00:00Z", 5),
                dropped("2026-11-21T00:00:00Z", 6),
            ])
            .as_bytes(),
        );
        let b = write(
            dir.path(),
            "b",
            &gzip(jsonl(&[dropped("2026-11-22T00:00:00Z", 30)]).as_bytes()),
        );
        let r = json_of(&args(vec![a.clone(), b.clone()]));
        assert_eq!(r["totals"]["lost_events"], 41);
        assert_eq!(r["totals"]["events"], 0);
        assert_eq!(r["totals"]["first_seen"], Value::Null);
        let table = output(&args(vec![a, b]));
        assert!(
            table.starts_with("WARNING: 41 audit events were lost"),
            "{table}"
        );
        assert!(table.contains("\n  lost events      41\n"), "{table}");
    }

    #[test]
    fn table_escapes_terminal_control_characters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = ev(
            "2026-11-20T10:00:00Z",
            "open",
            "/l/\u{1b}[2Jx\u{202e}y",
            "ev\u{7}il",
            1,
            "ok",
        );
        let log = write(dir.path(), "audit.log", jsonl(&[e]).as_bytes());
        let table = output(&args(vec![log.clone()]));
        assert!(
            !table.contains('\u{1b}') && !table.contains('\u{7}') && !table.contains('\u{202e}')
        );
        assert!(table.contains("ev\\u{7}il"), "{table}");
        assert!(table.contains("/l/\\u{1b}[2Jx\\u{202e}y"), "{table}");
        // JSON keeps the exact value (it escapes on its own).
        assert_eq!(
            json_of(&args(vec![log]))["processes"]["rows"][0]["comm"],
            "ev\u{7}il"
        );
    }

    /// DEL, C1 (U+009B is CSI for some terminals) and bidi marks reach no output raw, a
    /// backslash in a name is shown doubled (so a name that reads `\u{1b}` is not taken for
    /// an ESC), and CSV cells that a spreadsheet would run as a formula are neutralised.
    #[test]
    fn no_output_format_passes_controls_or_formulas() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nasty = [
            "=cmd|' /C calc'!A0",
            "+1+2",
            "-2+3",
            "@SUM(A1)",
            "\tTAB",
            "\rCR",
            "d\u{7f}e\u{9b}2Jl",
            "x\u{2067}y",
            "lit\\u{1b}",
        ];
        let events: Vec<Value> = nasty
            .iter()
            .enumerate()
            .map(|(i, comm)| {
                ev(
                    "2026-11-20T10:00:00Z",
                    "lookup",
                    &format!("/l/{comm}/{i}"),
                    comm,
                    1,
                    "ENOENT",
                )
            })
            .collect();
        let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
        let raw = |format, by| {
            let mut out = Vec::new();
            let a = ReportArgs {
                format,
                by,
                limit: 0,
                ..args(vec![log.clone()])
            };
            run(&a, &mut out).expect("report");
            String::from_utf8(out).expect("utf-8")
        };
        let bad = |c: char| c != '\n' && unsafe_char(c);
        for format in [Format::Table, Format::Csv, Format::Json] {
            for by in [GroupBy::Path, GroupBy::Process] {
                let text = raw(format, by);
                assert!(!text.contains(bad), "{format:?} {by:?}: {text:?}");
            }
        }
        let csv = raw(Format::Csv, GroupBy::Process);
        for line in csv.lines().skip(1) {
            let first = line.trim_start_matches('"');
            assert!(!first.starts_with(['=', '+', '-', '@']), "{line}");
        }
        assert!(csv.contains("\n'=cmd|' /C calc'!A0,,"), "{csv}");
        assert!(csv.contains("\n'\\u{9}TAB,,"), "{csv}");
        assert!(csv.contains("\nd\\u{7f}e\\u{9b}2Jl,,"), "{csv}");
        assert!(csv.contains("\nlit\\\\u{1b},,"), "{csv}");
        let table = raw(Format::Table, GroupBy::Process);
        assert!(table.contains("\nlit\\\\u{1b} "), "{table}");
        assert!(table.contains("\nx\\u{2067}y "), "{table}");
        // JSON: escaped, and the parsed values are exactly the logged ones.
        let json = raw(Format::Json, GroupBy::Process);
        assert!(json.contains(r#""d\u007fe\u009b2Jl""#), "{json}");
        let v: Value = serde_json::from_str(&json).expect("json");
        let comms: HashSet<&str> = v["processes"]["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .filter_map(|r| r["comm"].as_str())
            .collect();
        assert_eq!(comms, nasty.iter().copied().collect());
    }

    #[test]
    fn errors_name_the_file_or_the_option() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.log");
        let err = run(&args(vec![missing.clone()]), &mut Vec::new()).expect_err("missing file");
        assert!(
            err.starts_with(&format!("cannot read audit log {}: ", missing.display())),
            "{err}"
        );
        assert!(!err.contains('\n'));
        let err = run(&args(vec![dir.path().to_path_buf()]), &mut Vec::new()).expect_err("dir");
        assert!(err.starts_with("cannot read audit log "), "{err}");
        let log = write(dir.path(), "audit.log", b"");
        let bad = |since: &str, until: Option<&str>| {
            let a = ReportArgs {
                since: Some(since.into()),
                until: until.map(Into::into),
                ..args(vec![log.clone()])
            };
            run(&a, &mut Vec::new()).expect_err("bad window")
        };
        assert!(bad("last tuesday", None).starts_with("invalid --since 'last tuesday': expected "));
        assert!(bad("2026-02-30", None).starts_with("invalid --since"));
        assert!(bad("7x", None).starts_with("invalid --since"));
        assert_eq!(
            bad("2026-11-02", Some("2026-11-01")),
            "--since (2026-11-02T00:00:00Z) is not before --until (2026-11-01T00:00:00Z)"
        );
        assert_eq!(
            run(&args(Vec::new()), &mut Vec::new()),
            Err("no audit log given".to_owned())
        );
    }

    #[test]
    fn broken_pipe_is_not_an_error() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let log = write(dir.path(), "audit.log", jsonl(&basic_events()).as_bytes());
        assert_eq!(run(&args(vec![log]), &mut Closed), Ok(()));
    }

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00.1234569Z"), Some(123_456));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339("1969-12-31T19:00:00-05:00"), Some(0));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1_000_000));
        assert_eq!(
            parse_rfc3339("2016-12-31T23:59:60Z"),
            parse_rfc3339("2016-12-31T23:59:59Z")
        );
        assert_eq!(
            parse_rfc3339("2024-02-29 00:00:00Z"),
            Some(19_782 * 86_400 * 1_000_000)
        );
        for bad in [
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-27T24:00:00Z",
            "2026-11-27T21:56:23",
            "2026-11-27T21:56:23.Z",
            "2026-11-27T21:56:23Zx",
            "2026-11-27T21:56:23+0100",
            "2026-11-27",
            "",
            "2026-11-27T21:5é:23Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        // Round trip with the writer's formatter, across eras and the epoch.
        for micros in [
            0,
            1,
            -1,
            1_795_000_000_123_456,
            -62_135_596_800_000_000,
            253_402_300_799_999_999,
        ] {
            assert_eq!(parse_rfc3339(&fmt_ts(micros)), Some(micros), "{micros}");
        }
    }

    #[test]
    fn huge_counts_saturate_instead_of_overflowing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = ev("2026-11-20T10:00:00Z", "open", "/l/gone", "sh", 1, "ENOENT");
        let e = with(e, "count", json!(u64::MAX));
        let log = write(dir.path(), "audit.log", jsonl(&[e.clone(), e]).as_bytes());
        let r = json_of(&args(vec![log]));
        assert_eq!(r["totals"]["events"], u64::MAX);
        assert_eq!(r["misses"]["rows"][0]["hits"], u64::MAX);
        assert_eq!(r["misses"]["rows"][0]["processes"][0]["hits"], u64::MAX);
    }

    #[test]
    fn sizes_and_the_fair_level() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in ["", "M", "1.5G", "-1M", "12X", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(fmt_size(512 << 20), "512M");
        assert_eq!(fmt_size(1000), "1000");
        // Users with 1, 5 and 100 tuples, 30 allowed: each keeps up to 24 (1 + 5 + 24).
        assert_eq!(water_level(&mut [100, 1, 5], 30), 24);
        assert_eq!(water_level(&mut [100, 1, 5], 106), usize::MAX);
        assert_eq!(water_level(&mut [100, 1, 5], 2), 0);
        assert_eq!(water_level(&mut [], 2), usize::MAX);
    }

    #[test]
    fn durations_read_like_english() {
        let s = MICROS_PER_SEC;
        assert_eq!(human_duration(0), "0 seconds");
        assert_eq!(human_duration(s), "1 second");
        assert_eq!(human_duration(59 * s), "59 seconds");
        assert_eq!(human_duration(60 * s), "1 minute");
        assert_eq!(human_duration(3599 * s), "59 minutes");
        assert_eq!(human_duration(3600 * s), "1 hour");
        assert_eq!(human_duration(86_399 * s), "23 hours");
        assert_eq!(human_duration(86_400 * s), "1 day");
        assert_eq!(human_duration(400 * 86_400 * s), "400 days");
    }

    /// Fuzzing the line parser (proptest, a bounded number of cases so it runs in CI in
    /// seconds): arbitrary bytes, arbitrary JSON values, event-shaped objects with arbitrary
    /// field values, and mutations of real lines. Whatever the input: no panic, every
    /// non-blank line is accepted, malformed or newer (never lost), summarising under a tiny
    /// memory cap changes no total, every format renders without a control character.
    mod fuzz {
        use super::*;
        use proptest::collection::{hash_map, vec};
        use proptest::prelude::*;

        /// Lines of every kind the daemon writes.
        const REAL: &[&str] = &[
            r#"{"v":1,"ts":"2026-11-27T22:37:20.136344Z","op":"open","path":"/home/optdir/j/keys/id_rsa","target":"/opt/j/keys/id_rsa","map":"/","flags":"r","pid":17718,"uid":998,"gid":998,"comm":"cat","exe":"/usr/bin/cat","result":"ok"}"#,
            r#"{"v":1,"ts":"2026-11-27T22:37:21Z","op":"lookup","path":"/home/optdir/j/gone","map":"/","pid":1,"uid":0,"gid":0,"comm":"bash","result":"ENOENT","count":7}"#,
            r#"{"v":1,"ts":"2026-11-27T22:37:22Z","op":"lookup","path":"/home/optdir/j/bad\\xff\\xfe","escaped":["path","target"],"pid":1,"uid":5,"gid":5,"comm":"p\\xe9","result":"EACCES"}"#,
            r#"{"v":1,"ts":"2026-11-27T22:37:23Z","op":"open","path":"/home/optdir/j/aaaa…[9000 bytes]…zzzz","truncated":["path"],"pid":1,"uid":5,"gid":5,"comm":"sh","result":"EROFS"}"#,
            r#"{"v":1,"ts":"2026-11-27T22:37:24Z","op":"dropped","count":3}"#,
            r#"{"v":1,"ts":"2026-11-27T22:37:25Z","op":"suppressed","uid":1000,"count":500,"since":"2026-11-27T22:37:20Z"}"#,
            r#"{"v":2,"ts":"2026-11-27T22:37:26Z","op":"open","path":"/x","uid":"alice"}"#,
            r#"{"v":1,"ts":"2026-11-27T22:37:27Z","op":"rename","path":"/home/optdir/j/a","dest":"/home/optdir/j/b","pid":1,"uid":7,"gid":7,"comm":"mv","result":"ok"}"#,
        ];

        fn arb_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| json!(n)),
                any::<u64>().prop_map(|n| json!(n)),
                any::<f64>().prop_map(|f| json!(f)),
                any::<String>().prop_map(Value::String),
                prop::sample::select(vec![
                    "2026-11-27T22:37:20Z",
                    "9999-12-31T23:59:60.9999999-23:59",
                    "0000-01-01T00:00:00Z",
                    "ok",
                    "ENOENT",
                    "dropped",
                    "suppressed",
                    "path",
                    "comm"
                ])
                .prop_map(|s| json!(s)),
            ];
            let key = prop_oneof![
                prop::sample::select(vec![
                    "v",
                    "ts",
                    "op",
                    "path",
                    "map",
                    "uid",
                    "comm",
                    "exe",
                    "result",
                    "count",
                    "escaped",
                    "truncated",
                    "since"
                ])
                .prop_map(str::to_owned),
                "[a-z]{1,4}",
            ];
            leaf.prop_recursive(3, 48, 8, move |inner| {
                prop_oneof![
                    vec(inner.clone(), 0..6).prop_map(Value::Array),
                    hash_map(key.clone(), inner, 0..10)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// An object with the report's fields, each valid or not.
        fn arb_event() -> impl Strategy<Value = Value> {
            let field = |valid: Value| prop_oneof![3 => Just(valid), 1 => arb_json()];
            (
                field(json!(1)),
                field(json!("2026-11-27T22:37:20.5Z")),
                prop::sample::select(vec![
                    "open",
                    "lookup",
                    "dropped",
                    "suppressed",
                    "opendir",
                    "",
                ]),
                field(json!("/l/a/b")),
                field(json!(1000)),
                field(json!("sh")),
                field(json!("ENOENT")),
                prop_oneof![
                    Just(None),
                    any::<u64>().prop_map(Some),
                    (0u64..3).prop_map(Some)
                ],
                field(json!(["path", "comm", "exe"])),
                field(json!(["path"])),
            )
                .prop_map(
                    |(v, ts, op, path, uid, comm, result, count, escaped, truncated)| {
                        let mut e = json!({"v": v, "ts": ts, "op": op, "path": path, "uid": uid,
                                       "comm": comm, "result": result, "escaped": escaped,
                                       "truncated": truncated});
                        if let Some(c) = count {
                            e["count"] = json!(c);
                        }
                        e
                    },
                )
        }

        #[derive(Debug, Clone)]
        enum Mutation {
            Flip(usize, u8),
            Cut(usize),
            Insert(usize, Vec<u8>),
            Delete(usize, usize),
        }

        fn arb_mutated_line() -> impl Strategy<Value = Vec<u8>> {
            let mutation = prop_oneof![
                (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Flip(p, b)),
                any::<usize>().prop_map(Mutation::Cut),
                (any::<usize>(), vec(any::<u8>(), 1..8)).prop_map(|(p, b)| Mutation::Insert(p, b)),
                (any::<usize>(), 1usize..12).prop_map(|(p, n)| Mutation::Delete(p, n)),
            ];
            (prop::sample::select(REAL), vec(mutation, 0..4)).prop_map(|(line, ms)| {
                let mut b = line.as_bytes().to_vec();
                for m in ms {
                    let at = |p: usize| p % (b.len() + 1);
                    match m {
                        Mutation::Flip(p, x) if !b.is_empty() => {
                            let i = p % b.len();
                            b[i] ^= x;
                        }
                        Mutation::Flip(..) => {}
                        Mutation::Cut(p) => b.truncate(at(p)),
                        Mutation::Insert(p, x) => {
                            let i = at(p);
                            b.splice(i..i, x);
                        }
                        Mutation::Delete(p, n) => {
                            let i = at(p);
                            let j = (i + n).min(b.len());
                            b.drain(i..j);
                        }
                    }
                }
                b
            })
        }

        fn arb_line() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                vec(any::<u8>(), 0..200),
                arb_json().prop_map(|v| v.to_string().into_bytes()),
                arb_event().prop_map(|v| v.to_string().into_bytes()),
                arb_mutated_line(),
                prop::sample::select(REAL).prop_map(|l| l.as_bytes().to_vec()),
            ]
        }

        /// Aggregates `data` as one file, with `budget` bytes.
        fn aggregate_bytes(data: &[u8], budget: usize) -> (Aggregator, LineCounts) {
            let mut agg = Aggregator::new(
                Window {
                    since: None,
                    until: None,
                },
                budget,
            );
            let mut counts = LineCounts::default();
            let mut line = Vec::new();
            let _ = for_each_line(&mut &data[..], &mut line, |l| agg.line(l, &mut counts));
            (agg, counts)
        }

        fn check(lines: &[Vec<u8>]) -> Result<(), TestCaseError> {
            let data = lines.join(&b'\n');
            let blank = lines
                .iter()
                .map(|l| {
                    l.split(|&b| b == b'\n')
                        .filter(|p| !p.trim_ascii().is_empty())
                        .count() as u64
                })
                .sum::<u64>();
            let (full, counts) = aggregate_bytes(&data, usize::MAX);
            // Every non-blank line is accounted for, exactly once.
            prop_assert_eq!(counts.lines, blank);
            prop_assert_eq!(
                counts.lines,
                counts.accepted + counts.malformed + counts.newer
            );
            prop_assert_eq!(counts.overlong, 0);
            // A tiny cap summarises, but changes no total.
            let (small, small_counts) = aggregate_bytes(&data, 600);
            prop_assert_eq!(counts, small_counts);
            let totals = |a: &Aggregator| {
                (
                    a.events,
                    a.lost,
                    a.outside,
                    a.truncated,
                    a.suppressed.values().map(|s| s.hits).sum::<u64>(),
                )
            };
            prop_assert_eq!(totals(&full), totals(&small));
            let now = ts("2026-11-27T12:00:00Z");
            for (agg, budget) in [(full, usize::MAX), (small, 600)] {
                let files = vec![FileStats {
                    path: "fuzz".into(),
                    gzip: false,
                    lines: counts.lines,
                    malformed: counts.malformed,
                    overlong: counts.overlong,
                    newer_version: counts.newer,
                    error: None,
                }];
                let events = agg.events;
                let report = agg.into_report(GroupBy::User, files, 0, now);
                let proc_hits = report
                    .processes
                    .rows
                    .iter()
                    .fold(0u64, |n, r| n.saturating_add(r.hits));
                prop_assert_eq!(proc_hits, events, "budget {}", budget);
                let group_hits = report
                    .groups
                    .rows
                    .iter()
                    .fold(0u64, |n, r| n.saturating_add(r.hits));
                prop_assert_eq!(group_hits, events);
                let mut out = Vec::new();
                for write in [write_table, write_csv, write_json] {
                    out.clear();
                    prop_assert!(write(&report, &mut out).is_ok());
                    let text = std::str::from_utf8(&out);
                    prop_assert!(text.is_ok());
                    let text = text.unwrap_or_default();
                    prop_assert!(
                        !text.contains(|c| c != '\n' && unsafe_char(c)),
                        "{:?}",
                        text
                    );
                }
                prop_assert!(serde_json::from_slice::<Value>(&out).is_ok());
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn any_lines_are_counted_and_never_crash(lines in vec(arb_line(), 0..24)) {
                check(&lines)?;
            }
        }
    }
}
