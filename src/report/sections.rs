//! The report document: its sections built from the tuples, and the verdict.

use super::*;
use crate::audit::schema::Op;

impl Aggregator {
    /// Builds the sections from the tuples: rows sorted by hits (ties by name, so output is
    /// deterministic), owned strings made for the top `limit` rows only.
    pub(super) fn into_report(
        self,
        by: GroupBy,
        files: Vec<FileStats>,
        limit: usize,
        now: i64,
        user_names: bool,
    ) -> Report {
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
            /// Hits per logging host (none: lines without a host).
            hosts: IdMap<(u32, u16), u64>,
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
        let opendir = strings.id(Op::Opendir.as_str());
        // Directory of each path and its flags, once per distinct (path, flags, opendir?).
        let mut dirs: IdMap<(u32, u16, bool), (u32, u16)> = IdMap::default();

        let mut span: Option<Seen> = None;
        let mut groups: IdMap<(u32, u32, u32, u16), GroupAgg> = IdMap::default();
        let mut procs: IdMap<ProcKey, ProcAgg> = IdMap::default();
        let mut hosts = IdSet::default();
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
                    (dir, NONE, NONE, dir_flags)
                }
                GroupBy::Process => (t.comm, t.exe, NONE, proc_flags),
                GroupBy::User => (t.uid, NONE, NONE, 0),
                GroupBy::Rule => (t.map, NONE, NONE, t.flags & MAP_FLAGS),
                GroupBy::Unit => (t.unit, t.user_unit, t.container, t.flags & UNIT_FLAGS),
                GroupBy::Host => (t.host, NONE, NONE, t.flags & HOST_FLAGS),
            };
            if t.host != NONE {
                hosts.insert(member(t.host, t.flags & HOST_FLAGS));
            }
            let group = groups.entry(key).or_default();
            merge(&mut group.seen, &t.seen);
            group.comms.insert(member(t.comm, proc_flags));
            group.uids.insert(u64::from(t.uid));
            group.paths.insert(member(t.path, path_flags));
            group.summarised |= t.flags & SUMMARISED != 0;

            let proc_key = ProcKey {
                comm: t.comm,
                exe: t.exe,
                uid: t.uid,
                unit: t.unit,
                user_unit: t.user_unit,
                container: t.container,
                host: t.host,
                flags: t.flags & (COMM_FLAGS | EXE_FLAGS | UNIT_FLAGS | HOST_FLAGS),
            };
            let proc = procs.entry(proc_key).or_default();
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
                let hits = hit.hosts.entry((t.host, t.flags & HOST_FLAGS)).or_default();
                *hits = hits.saturating_add(t.seen.hits);
            }

            if last.is_none_or(|l| access_order(&strings, t, l) == Ordering::Greater) {
                last = Some(t);
            }
        }
        if by == GroupBy::User {
            // A user whose every event was suppressed is still a user of the legacy path.
            for (&uid, seen) in &suppressed {
                groups.entry((uid, NONE, NONE, 0)).or_default().suppressed = seen.hits;
            }
        }

        let s = &strings;
        let owned = |id: u32| s.get(id).to_owned();
        let opt_owned = |id: u32| s.opt(id).map(str::to_owned);
        let users = Users::new(user_names);

        let mut groups: Vec<_> = groups.into_iter().collect();
        let group_name = |key: &(u32, u32, u32, u16)| match by {
            GroupBy::User => (None, key.0, None, None, key.3),
            GroupBy::Path | GroupBy::Process | GroupBy::Rule | GroupBy::Unit | GroupBy::Host => {
                (s.opt(key.0), 0, s.opt(key.1), s.opt(key.2), key.3)
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
        let group_row = |((k0, k1, k2, flags), g): ((u32, u32, u32, u16), GroupAgg)| {
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
                        user: users.name(k0),
                        suppressed: g.suppressed,
                    },
                    &[],
                ),
                GroupBy::Unit => (
                    GroupId::Unit {
                        unit: opt_owned(k0),
                        user_unit: opt_owned(k1),
                        container: opt_owned(k2),
                    },
                    &[("unit", UNIT_ESCAPED, UNIT_TRUNCATED)],
                ),
                GroupBy::Host => (
                    GroupId::Host {
                        host: opt_owned(k0),
                    },
                    &[("host", HOST_ESCAPED, HOST_TRUNCATED)],
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
        procs.sort_by(|(ka, a), (kb, b)| {
            hits_of(b.seen.as_ref())
                .cmp(&hits_of(a.seen.as_ref()))
                .then_with(|| s.get(ka.comm).cmp(s.get(kb.comm)))
                .then_with(|| s.opt(ka.exe).cmp(&s.opt(kb.exe)))
                .then_with(|| ka.uid.cmp(&kb.uid))
                .then_with(|| s.opt(ka.unit).cmp(&s.opt(kb.unit)))
                .then_with(|| s.opt(ka.user_unit).cmp(&s.opt(kb.user_unit)))
                .then_with(|| s.opt(ka.container).cmp(&s.opt(kb.container)))
                .then_with(|| s.opt(ka.host).cmp(&s.opt(kb.host)))
                .then_with(|| ka.flags.cmp(&kb.flags))
        });
        let procs_total = procs.len();
        let proc_rows = limited(procs, limit)
            .map(|(k, p)| {
                let (first_seen, last_seen) = seen_times(p.seen.as_ref());
                ProcessRow {
                    comm: owned(k.comm),
                    exe: opt_owned(k.exe),
                    uid: k.uid,
                    user: users.name(k.uid),
                    unit: opt_owned(k.unit),
                    user_unit: opt_owned(k.user_unit),
                    container: opt_owned(k.container),
                    host: opt_owned(k.host),
                    hits: hits_of(p.seen.as_ref()),
                    paths: p.paths.len(),
                    first_seen,
                    last_seen,
                    marks: Marks::of(k.flags, PROC_FIELDS),
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
                    hosts: host_hits(s, &m.hosts),
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
                    hosts: host_hits(s, &d.hosts),
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
                user: users.name(uid),
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
            user: users.name(l.uid),
            unit: opt_owned(l.unit),
            user_unit: opt_owned(l.user_unit),
            container: opt_owned(l.container),
            host: opt_owned(l.host),
            marks: Marks::of(
                l.flags,
                &[
                    ("path", PATH_ESCAPED, PATH_TRUNCATED),
                    ("comm", COMM_ESCAPED, COMM_TRUNCATED),
                    ("exe", EXE_ESCAPED, EXE_TRUNCATED),
                    ("unit", UNIT_ESCAPED, UNIT_TRUNCATED),
                    ("host", HOST_ESCAPED, HOST_TRUNCATED),
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
            hosts.len(),
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
                hosts: hosts.len(),
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
pub(super) fn access_order(s: &Interner, a: &Tuple, b: &Tuple) -> Ordering {
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
        .then_with(|| s.opt(a.unit).cmp(&s.opt(b.unit)))
        .then_with(|| s.opt(a.user_unit).cmp(&s.opt(b.user_unit)))
        .then_with(|| s.opt(a.container).cmp(&s.opt(b.container)))
        .then_with(|| s.opt(a.host).cmp(&s.opt(b.host)))
        .then_with(|| a.flags.cmp(&b.flags))
}

pub(super) fn hits_of(seen: Option<&Seen>) -> u64 {
    seen.map_or(0, |s| s.hits)
}

pub(super) fn seen_times(seen: Option<&Seen>) -> (String, String) {
    match seen {
        Some(s) => (fmt_ts(s.first), fmt_ts(s.last)),
        None => (String::new(), String::new()),
    }
}

/// `limit` 0 means all rows.
pub(super) fn limited<T>(rows: Vec<T>, limit: usize) -> impl Iterator<Item = T> {
    let n = if limit == 0 { rows.len() } else { limit };
    rows.into_iter().take(n)
}

pub(super) fn proc_hits(strings: &Interner, comms: &IdMap<(u32, u16), u64>) -> Vec<ProcHits> {
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

/// The hosts of a miss or a denial, most hits first (`host` null: lines without one).
pub(super) fn host_hits(strings: &Interner, hosts: &IdMap<(u32, u16), u64>) -> Vec<HostHits> {
    let mut rows: Vec<HostHits> = hosts
        .iter()
        .map(|(&(host, flags), &hits)| HostHits {
            host: strings.opt(host).map(str::to_owned),
            hits,
            marks: Marks::of(flags, &[("host", HOST_ESCAPED, HOST_TRUNCATED)]),
        })
        .collect();
    rows.sort_by(|a, b| {
        b.hits
            .cmp(&a.hits)
            .then_with(|| a.host.cmp(&b.host))
            .then_with(|| a.marks.escaped.cmp(&b.marks.escaped))
    });
    rows
}

/// The directory an event counts against: the parent of `path`, except for opendir, where
/// the directory itself is what was used.
pub(super) fn directory_of(path: &str, opendir: bool) -> &str {
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

#[derive(Serialize)]
pub(super) struct Report {
    pub(super) totals: Totals,
    pub(super) groups: Groups,
    pub(super) processes: Section<ProcessRow>,
    pub(super) misses: Section<MissRow>,
    pub(super) denials: Section<DenialRow>,
    pub(super) suppressed: Section<SuppressedRow>,
    pub(super) verdict: Verdict,
}

/// A name of a row and what the report knows about it: given in JSON as
/// `escaped`/`truncated` (the names of the fields concerned) and `summarised`.
#[derive(Serialize, Default, Debug, Clone, PartialEq, Eq)]
pub(super) struct Marks {
    /// Fields whose value is not UTF-8 and shown encoded (`\\`, `\xHH`).
    pub(super) escaped: Vec<&'static str>,
    /// Fields the daemon shortened (`…[N bytes]…` in the middle).
    pub(super) truncated: Vec<&'static str>,
    /// The row holds events folded to stay within `--max-memory`: its names are unknown
    /// (empty) where the row is keyed by them, and its distinct counts are lower bounds.
    pub(super) summarised: bool,
}

/// A field of a row: its name in the output, and its escaped and truncated flags.
pub(super) type Field = (&'static str, u16, u16);
pub(super) const PATH_FIELD: &[Field] = &[("path", PATH_ESCAPED, PATH_TRUNCATED)];
pub(super) const PROC_FIELDS: &[Field] = &[
    ("comm", COMM_ESCAPED, COMM_TRUNCATED),
    ("exe", EXE_ESCAPED, EXE_TRUNCATED),
    ("unit", UNIT_ESCAPED, UNIT_TRUNCATED),
    ("host", HOST_ESCAPED, HOST_TRUNCATED),
];

/// What makes a row of the process section: the process and where it ran.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct ProcKey {
    pub(super) comm: u32,
    pub(super) exe: u32,
    pub(super) uid: u32,
    pub(super) unit: u32,
    pub(super) user_unit: u32,
    pub(super) container: u32,
    pub(super) host: u32,
    pub(super) flags: u16,
}

/// Login names from this machine's user database (NSS), looked up once per uid and only for
/// the rows shown. The log keeps only the uid: on logs from another host the names are this
/// host's, which is why the uid is always shown beside them.
pub(super) struct Users {
    /// `false`: no lookups (`--numeric`).
    enabled: bool,
    names: std::cell::RefCell<HashMap<u32, Option<String>>>,
}

impl Users {
    pub(super) fn new(enabled: bool) -> Users {
        Users {
            enabled,
            names: std::cell::RefCell::default(),
        }
    }

    pub(super) fn name(&self, uid: u32) -> Option<String> {
        if !self.enabled {
            return None;
        }
        self.names
            .borrow_mut()
            .entry(uid)
            .or_insert_with(|| {
                crate::sys::user_name(uid).map(|n| String::from_utf8_lossy(&n).into_owned())
            })
            .clone()
    }
}

/// A process's service as one label: `unit`, `unit/user_unit`, and the container's short id
/// (12 digits, as `docker ps` shows it): `docker-0123456789ab….scope` where the unit holds
/// the id, `container 0123456789ab` after the unit otherwise; `None` when there is none.
pub(super) fn service_label(
    unit: Option<&str>,
    user_unit: Option<&str>,
    container: Option<&str>,
) -> Option<String> {
    let short = container.map(|c| c.get(..12).unwrap_or(c));
    let mut in_unit = false;
    let mut shorten = |u: &str| match (container, short) {
        (Some(c), Some(s)) if c.len() > s.len() && u.contains(c) => {
            in_unit = true;
            u.replacen(c, &format!("{s}…"), 1)
        }
        _ => u.to_owned(),
    };
    let mut label = unit.map(&mut shorten).unwrap_or_default();
    if let Some(u) = user_unit {
        label.push('/');
        label.push_str(&shorten(u));
    }
    if let Some(s) = short.filter(|_| !in_unit) {
        if !label.is_empty() {
            label.push(' ');
        }
        label.push_str("container ");
        label.push_str(s);
    }
    (!label.is_empty()).then_some(label)
}

impl Marks {
    pub(super) fn of(flags: u16, fields: &[Field]) -> Marks {
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

    pub(super) fn escaped(&self, field: &str) -> bool {
        self.escaped.contains(&field)
    }

    pub(super) fn truncated(&self, field: &str) -> bool {
        self.truncated.contains(&field)
    }
}

#[derive(Serialize)]
pub(super) struct Totals {
    pub(super) events: u64,
    pub(super) lost_events: u64,
    pub(super) lower_bounds: bool,
    /// Not written by the daemon (per-user rate limit); not part of `events`.
    pub(super) suppressed_events: u64,
    /// Events with a field the daemon shortened.
    pub(super) truncated_events: u64,
    pub(super) malformed_lines: u64,
    /// Of the malformed lines, those longer than MAX_LINE.
    pub(super) overlong_lines: u64,
    /// Lines of a newer schema version: skipped.
    pub(super) newer_version_lines: u64,
    /// Events held in summarised rows (folded to stay within `max_memory`).
    pub(super) summarised_events: u64,
    /// The `--max-memory` cap in bytes; 0: none.
    pub(super) max_memory: u64,
    pub(super) files_read: usize,
    /// Distinct `host` values among the events (0: logs without host names).
    pub(super) hosts: usize,
    pub(super) outside_window: u64,
    pub(super) first_seen: Option<String>,
    pub(super) last_seen: Option<String>,
    pub(super) since: Option<String>,
    pub(super) until: Option<String>,
    pub(super) now: String,
    pub(super) files: Vec<FileStats>,
}

#[derive(Serialize)]
pub(super) struct Groups {
    pub(super) by: &'static str,
    pub(super) total: usize,
    pub(super) rows: Vec<GroupRow>,
    /// The biggest row holding summarised events when none is within the limit (CSV only).
    #[serde(skip)]
    pub(super) extra_summarised: Option<GroupRow>,
}

#[derive(Serialize)]
pub(super) struct Section<T> {
    pub(super) total: usize,
    pub(super) rows: Vec<T>,
}

#[derive(Serialize)]
pub(super) struct GroupRow {
    pub(super) key: String,
    #[serde(flatten)]
    pub(super) id: GroupId,
    pub(super) hits: u64,
    pub(super) processes: usize,
    pub(super) users: usize,
    pub(super) paths: usize,
    pub(super) first_seen: String,
    pub(super) last_seen: String,
    #[serde(flatten)]
    pub(super) marks: Marks,
}

/// The typed identity of a group, flattened into its row.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum GroupId {
    Directory {
        directory: String,
    },
    Process {
        comm: String,
        exe: Option<String>,
    },
    User {
        uid: u32,
        /// The login name of `uid` on the machine running the report.
        user: Option<String>,
        suppressed: u64,
    },
    Rule {
        rule: Option<String>,
    },
    Unit {
        unit: Option<String>,
        user_unit: Option<String>,
        container: Option<String>,
    },
    Host {
        host: Option<String>,
    },
}

impl GroupId {
    /// One human-readable string for the group, the `key` field.
    pub(super) fn key(&self, marks: &Marks) -> String {
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
            GroupId::User {
                uid, user: Some(u), ..
            } => format!("{uid} ({u})"),
            GroupId::User { uid, .. } => uid.to_string(),
            GroupId::Rule { rule } => rule.clone().unwrap_or_else(|| "(no rule)".into()),
            GroupId::Unit {
                unit,
                user_unit,
                container,
            } => service_label(unit.as_deref(), user_unit.as_deref(), container.as_deref())
                .unwrap_or_else(|| "(no unit)".into()),
            GroupId::Host { host } => host.clone().unwrap_or_else(|| "(no host)".into()),
        }
    }
}

#[derive(Serialize)]
pub(super) struct ProcessRow {
    pub(super) comm: String,
    pub(super) exe: Option<String>,
    pub(super) uid: u32,
    pub(super) user: Option<String>,
    pub(super) unit: Option<String>,
    pub(super) user_unit: Option<String>,
    pub(super) container: Option<String>,
    pub(super) host: Option<String>,
    pub(super) hits: u64,
    pub(super) paths: usize,
    pub(super) first_seen: String,
    pub(super) last_seen: String,
    #[serde(flatten)]
    pub(super) marks: Marks,
}

#[derive(Serialize)]
pub(super) struct ProcHits {
    pub(super) comm: String,
    pub(super) hits: u64,
    #[serde(flatten)]
    pub(super) marks: Marks,
}

#[derive(Serialize)]
pub(super) struct HostHits {
    pub(super) host: Option<String>,
    pub(super) hits: u64,
    #[serde(flatten)]
    pub(super) marks: Marks,
}

#[derive(Serialize)]
pub(super) struct MissRow {
    pub(super) path: String,
    pub(super) hits: u64,
    pub(super) processes: Vec<ProcHits>,
    pub(super) hosts: Vec<HostHits>,
    pub(super) first_seen: String,
    pub(super) last_seen: String,
    #[serde(flatten)]
    pub(super) marks: Marks,
}

#[derive(Serialize)]
pub(super) struct DenialRow {
    pub(super) op: String,
    pub(super) path: String,
    pub(super) result: String,
    pub(super) hits: u64,
    pub(super) processes: Vec<ProcHits>,
    pub(super) hosts: Vec<HostHits>,
    pub(super) first_seen: String,
    pub(super) last_seen: String,
    #[serde(flatten)]
    pub(super) marks: Marks,
}

/// Events of one user that the daemon did not write (its rate limit), only counted.
#[derive(Serialize)]
pub(super) struct SuppressedRow {
    pub(super) uid: u32,
    pub(super) user: Option<String>,
    pub(super) events: u64,
    pub(super) first_seen: String,
    pub(super) last_seen: String,
}

#[derive(Serialize)]
pub(super) struct Verdict {
    pub(super) text: String,
    pub(super) last_access: Option<LastAccessRow>,
}

#[derive(Serialize)]
pub(super) struct LastAccessRow {
    pub(super) ts: String,
    pub(super) ago_seconds: i64,
    pub(super) op: String,
    pub(super) path: String,
    pub(super) result: String,
    pub(super) comm: String,
    pub(super) exe: Option<String>,
    pub(super) uid: u32,
    pub(super) user: Option<String>,
    pub(super) unit: Option<String>,
    pub(super) user_unit: Option<String>,
    pub(super) container: Option<String>,
    pub(super) host: Option<String>,
    #[serde(flatten)]
    pub(super) marks: Marks,
}

/// The one line an operator deciding whether to unmount needs. `suppressed`: how many
/// events the rate limit kept out of the log, and the time of the last such line.
pub(super) fn verdict_text(
    last_ts: Option<i64>,
    last: Option<&LastAccessRow>,
    window: Window,
    lost: u64,
    suppressed: (u64, Option<i64>),
    now: i64,
    hosts: usize,
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
            let user = l
                .user
                .as_deref()
                .map(|u| format!(" {}", name(u)))
                .unwrap_or_default();
            let unit = service_label(
                l.unit.as_deref(),
                l.user_unit.as_deref(),
                l.container.as_deref(),
            )
            .map(|u| format!(" in {}", shown(&u, &l.marks, "unit")))
            .unwrap_or_default();
            let host = l
                .host
                .as_deref()
                .filter(|_| hosts > 1)
                .map(|h| format!(" on {}", shown(h, &l.marks, "host")))
                .unwrap_or_default();
            format!(
                "last access {when} by {}{exe} (uid {}{user}){unit}{host} to {} at {}",
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

pub(super) fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// "45 seconds", "1 minute", "5 hours", "3 days": the largest unit that is at least 1,
/// rounded down (so "2 days" means at least two full days).
pub(super) fn human_duration(micros: i64) -> String {
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
