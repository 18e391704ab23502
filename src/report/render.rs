//! Writing the report: table, CSV and JSON, with every name from the log made safe.

use super::*;

pub(super) fn write_json(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, SafeJson::default());
    report.serialize(&mut ser)?;
    out.write_all(b"\n")
}

/// serde_json's pretty output, except that DEL, C1 controls and bidi marks are written as
/// `\u` escapes too (serde_json escapes only C0 and `"`/`\`), so `relocfs report --format json`
/// on a terminal never sends it a control sequence. The parsed values are unchanged.
#[derive(Default)]
pub(super) struct SafeJson(serde_json::ser::PrettyFormatter<'static>);

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
pub(super) fn write_csv(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let key_head: &[&str] = match report.groups.by {
        "process" => &["comm", "exe"],
        "user" => &["uid", "user", "suppressed"],
        "rule" => &["rule"],
        "unit" => &["unit", "user_unit", "container"],
        "host" => &["host"],
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
            GroupId::User {
                uid,
                user,
                suppressed,
            } => vec![
                uid.to_string(),
                csv_cell(user.as_deref().unwrap_or(""), false),
                suppressed.to_string(),
            ],
            GroupId::Rule { rule } => {
                vec![csv_cell(rule.as_deref().unwrap_or(""), m.escaped("rule"))]
            }
            GroupId::Unit {
                unit,
                user_unit,
                container,
            } => [unit, user_unit, container]
                .into_iter()
                .map(|v| csv_cell(v.as_deref().unwrap_or(""), m.escaped("unit")))
                .collect(),
            GroupId::Host { host } => {
                vec![csv_cell(host.as_deref().unwrap_or(""), m.escaped("host"))]
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
pub(super) fn csv_rows(groups: &Groups) -> impl Iterator<Item = &GroupRow> {
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
pub(super) fn csv_cell(s: &str, escaped: bool) -> String {
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
pub(super) fn shown(text: &str, marks: &Marks, field: &str) -> String {
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

pub(super) fn write_table(r: &Report, out: &mut dyn Write) -> io::Result<()> {
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
        "user" => (
            "Top users",
            &[("UID", true), ("USER", false), ("SUPPRESSED", true)],
        ),
        "rule" => ("Top rules", &[("RULE", false)]),
        "unit" => (
            "Top services (systemd unit, container)",
            &[("UNIT", false), ("CONTAINER", false)],
        ),
        "host" => ("Top hosts", &[("HOST", false)]),
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
            GroupId::User {
                uid,
                user,
                suppressed,
            } => vec![uid.to_string(), user_cell(user), suppressed.to_string()],
            GroupId::Rule { rule } => {
                vec![rule
                    .as_deref()
                    .map_or("(no rule)".into(), |r| shown(r, m, "rule"))]
            }
            GroupId::Unit {
                unit,
                user_unit,
                container,
            } => vec![
                service_label(unit.as_deref(), user_unit.as_deref(), container.as_deref())
                    .filter(|_| unit.is_some() || user_unit.is_some())
                    .map_or("(no unit)".into(), |u| shown(&u, m, "unit")),
                container
                    .as_deref()
                    .map_or("-".into(), |c| name(c.get(..12).unwrap_or(c))),
            ],
            GroupId::Host { host } => {
                vec![host
                    .as_deref()
                    .map_or("(no host)".into(), |h| shown(h, m, "host"))]
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
    // A host column only where it tells rows apart: logs of more than one host.
    let many_hosts = t.hosts > 1;
    let mut cols = vec![
        ("COMM", false),
        ("EXE", false),
        ("UID", true),
        ("USER", false),
        ("UNIT", false),
    ];
    if many_hosts {
        cols.push(("HOST", false));
    }
    cols.extend([("HITS", true), ("PATHS", true), ("LAST SEEN", false)]);
    let mut table = Table::new(&cols);
    for row in &p.rows {
        let m = &row.marks;
        let mut cells = vec![
            shown(&row.comm, m, "comm"),
            row.exe
                .as_deref()
                .map_or_else(|| "-".into(), |e| shown(e, m, "exe")),
            row.uid.to_string(),
            user_cell(&row.user),
        ];
        cells.push(
            service_label(
                row.unit.as_deref(),
                row.user_unit.as_deref(),
                row.container.as_deref(),
            )
            .map_or_else(|| "-".into(), |u| shown(&u, m, "unit")),
        );
        if many_hosts {
            cells.push(
                row.host
                    .as_deref()
                    .map_or_else(|| "-".into(), |h| shown(h, m, "host")),
            );
        }
        cells.extend([
            row.hits.to_string(),
            row.paths.to_string(),
            short(&row.last_seen),
        ]);
        table.row(cells);
    }
    table.write(out, "")?;

    let m = &r.misses;
    heading(
        out,
        "Misses (ENOENT): what the migration missed",
        m.rows.len(),
        m.total,
    )?;
    let mut cols = vec![
        ("PATH", false),
        ("HITS", true),
        ("LAST SEEN", false),
        ("PROCESSES", false),
    ];
    if many_hosts {
        cols.push(("HOSTS", false));
    }
    let mut table = Table::new(&cols);
    for row in &m.rows {
        let mut cells = vec![
            shown(&row.path, &row.marks, "path"),
            row.hits.to_string(),
            short(&row.last_seen),
            proc_list(&row.processes),
        ];
        if many_hosts {
            cells.push(host_list(&row.hosts));
        }
        table.row(cells);
    }
    table.write(out, "")?;

    let d = &r.denials;
    heading(
        out,
        "Denied and refused (EACCES, EPERM, EROFS)",
        d.rows.len(),
        d.total,
    )?;
    let mut cols = vec![
        ("OP", false),
        ("PATH", false),
        ("RESULT", false),
        ("HITS", true),
        ("LAST SEEN", false),
        ("PROCESSES", false),
    ];
    if many_hosts {
        cols.push(("HOSTS", false));
    }
    let mut table = Table::new(&cols);
    for row in &d.rows {
        let mut cells = vec![
            name(&row.op),
            shown(&row.path, &row.marks, "path"),
            name(&row.result),
            row.hits.to_string(),
            short(&row.last_seen),
            proc_list(&row.processes),
        ];
        if many_hosts {
            cells.push(host_list(&row.hosts));
        }
        table.row(cells);
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
            ("USER", false),
            ("EVENTS", true),
            ("FIRST SEEN", false),
            ("LAST SEEN", false),
        ]);
        for row in &s.rows {
            table.row(vec![
                row.uid.to_string(),
                user_cell(&row.user),
                row.events.to_string(),
                short(&row.first_seen),
                short(&row.last_seen),
            ]);
        }
        table.write(out, "")?;
    }

    writeln!(out, "\nVerdict: {}", clean(&r.verdict.text))
}

/// A login name for the table: made safe like every name, `-` when the uid has none here.
pub(super) fn user_cell(user: &Option<String>) -> String {
    user.as_deref().map_or_else(|| "-".into(), name)
}

pub(super) fn heading(
    out: &mut dyn Write,
    title: &str,
    shown: usize,
    total: usize,
) -> io::Result<()> {
    if shown < total {
        writeln!(out, "\n{title} ({shown} of {total})")
    } else {
        writeln!(out, "\n{title}")
    }
}

/// "web-01 (12), web-02 (1)" — the three busiest hosts, then how many more.
pub(super) fn host_list(hosts: &[HostHits]) -> String {
    const SHOWN: usize = 3;
    let mut s: Vec<String> = hosts
        .iter()
        .take(SHOWN)
        .map(|h| {
            let host = h
                .host
                .as_deref()
                .map_or_else(|| "-".into(), |n| shown(n, &h.marks, "host"));
            format!("{host} ({})", h.hits)
        })
        .collect();
    if hosts.len() > SHOWN {
        s.push(format!("+{} more", hosts.len() - SHOWN));
    }
    s.join(", ")
}

/// "python3 (12), bash (1)" — the three busiest, then how many more.
pub(super) fn proc_list(procs: &[ProcHits]) -> String {
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
pub(super) fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Escapes control and bidi-override characters in text that is not a name from the log
/// (file names given on the command line, error messages): the table goes to a terminal,
/// where such characters could move the cursor, recolour the screen or reorder a line.
pub(super) fn clean(s: &str) -> String {
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
pub(super) fn name(s: &str) -> String {
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
pub(super) fn escaped_name(s: &str) -> String {
    clean(s)
}

/// Minimal aligned text table: columns separated by two spaces, numbers right-aligned.
pub(super) struct Table {
    pub(super) head: Vec<&'static str>,
    pub(super) right: Vec<bool>,
    pub(super) rows: Vec<Vec<String>>,
}

impl Table {
    pub(super) fn new(cols: &[(&'static str, bool)]) -> Table {
        Table {
            head: cols.iter().map(|c| c.0).collect(),
            right: cols.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    pub(super) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(super) fn write(&self, out: &mut dyn Write, indent: &str) -> io::Result<()> {
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
