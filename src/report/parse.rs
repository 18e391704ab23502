//! The line parser: one audit line (any bytes) into the aggregation, and the report's time
//! arguments (ages like `7d`; the calendar itself is in [`crate::time`]).

use super::*;
use crate::audit::schema::{self, field, Op};
use serde::de::{MapAccess, SeqAccess};

/// A string field borrowed from the line when it has no escapes (the common case), owned
/// otherwise. `Option<Cow<str>>` would always allocate: serde only borrows a bare `Cow`.
pub(super) struct Str<'a>(pub(super) Cow<'a, str>);

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

/// The fields of an audit line the report and the idle check use; everything else (gid,
/// target, flags, cmdline, future fields) is skipped by the parser. All optional here so a missing field is
/// a malformed line we count rather than a parse error. Read by the names in
/// [`schema::field`], as the writer writes them.
pub(super) struct RawEvent<'a> {
    /// Schema version; absent is read as 1 (hand-written lines), 0 is malformed.
    pub(super) v: Option<u64>,
    pub(super) ts: Option<Str<'a>>,
    pub(super) op: Option<Str<'a>>,
    pub(super) path: Option<Str<'a>>,
    pub(super) map: Option<Str<'a>>,
    pub(super) uid: Option<u32>,
    /// The calling thread, and its process (absent in lines from before it was written).
    pub(super) pid: Option<u32>,
    pub(super) tgid: Option<u32>,
    pub(super) comm: Option<Str<'a>>,
    pub(super) exe: Option<Str<'a>>,
    pub(super) result: Option<Str<'a>>,
    /// Collapsed repeats: the line stands for `count` identical events (default 1).
    pub(super) count: Option<u64>,
    /// Fields whose value was not valid UTF-8 and is encoded: `\\` for a backslash, `\xHH`
    /// for each byte that is not part of valid UTF-8.
    pub(super) escaped: Option<Vec<Str<'a>>>,
    /// Fields the daemon shortened (head, `…[N bytes]…`, tail).
    pub(super) truncated: Option<Vec<Str<'a>>>,
    /// Where and which service (absent in lines from before they were written).
    pub(super) host: Option<Str<'a>>,
    pub(super) unit: Option<Str<'a>>,
    pub(super) user_unit: Option<Str<'a>>,
    pub(super) container: Option<Str<'a>>,
}

/// The fields of [`RawEvent`], in the order a JSON array form lists them (serde's struct
/// convention, kept so what parses did not change when the derive was replaced).
const RAW_FIELDS: &[&str] = &[
    field::V,
    field::TS,
    field::OP,
    field::PATH,
    field::MAP,
    field::UID,
    field::COMM,
    field::EXE,
    field::RESULT,
    field::COUNT,
    field::ESCAPED,
    field::TRUNCATED,
];

/// Takes the value of a field seen once; a field given twice makes the line malformed.
fn once<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<Option<T>>,
    name: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

/// The next element of the array form; missing ones make the line malformed.
fn element<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(
    seq: &mut A,
    index: usize,
) -> Result<Option<T>, A::Error> {
    seq.next_element::<Option<T>>()?
        .ok_or_else(|| de::Error::invalid_length(index, &"an audit line of 12 fields"))
}

impl<'de: 'a, 'a> Deserialize<'de> for RawEvent<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawEvent<'a>, D::Error> {
        struct RawVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for RawVisitor<'a> {
            type Value = RawEvent<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an audit line")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEvent<'a>, A::Error> {
                let (mut v, mut ts, mut op, mut path, mut rule, mut uid) =
                    (None, None, None, None, None, None);
                let (mut comm, mut exe, mut result, mut count, mut escaped, mut truncated) =
                    (None, None, None, None, None, None);
                let (mut host, mut unit, mut user_unit, mut container) = (None, None, None, None);
                let (mut pid, mut tgid) = (None, None);
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    match &*key.0 {
                        field::V => once(&mut map, &mut v, field::V)?,
                        field::TS => once(&mut map, &mut ts, field::TS)?,
                        field::OP => once(&mut map, &mut op, field::OP)?,
                        field::PATH => once(&mut map, &mut path, field::PATH)?,
                        field::MAP => once(&mut map, &mut rule, field::MAP)?,
                        field::UID => once(&mut map, &mut uid, field::UID)?,
                        field::PID => once(&mut map, &mut pid, field::PID)?,
                        field::TGID => once(&mut map, &mut tgid, field::TGID)?,
                        field::COMM => once(&mut map, &mut comm, field::COMM)?,
                        field::EXE => once(&mut map, &mut exe, field::EXE)?,
                        field::RESULT => once(&mut map, &mut result, field::RESULT)?,
                        field::COUNT => once(&mut map, &mut count, field::COUNT)?,
                        field::ESCAPED => once(&mut map, &mut escaped, field::ESCAPED)?,
                        field::TRUNCATED => once(&mut map, &mut truncated, field::TRUNCATED)?,
                        field::HOST => once(&mut map, &mut host, field::HOST)?,
                        field::UNIT => once(&mut map, &mut unit, field::UNIT)?,
                        field::USER_UNIT => once(&mut map, &mut user_unit, field::USER_UNIT)?,
                        field::CONTAINER => once(&mut map, &mut container, field::CONTAINER)?,
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(RawEvent {
                    v: v.flatten(),
                    ts: ts.flatten(),
                    op: op.flatten(),
                    path: path.flatten(),
                    map: rule.flatten(),
                    uid: uid.flatten(),
                    pid: pid.flatten(),
                    tgid: tgid.flatten(),
                    comm: comm.flatten(),
                    exe: exe.flatten(),
                    result: result.flatten(),
                    count: count.flatten(),
                    escaped: escaped.flatten(),
                    truncated: truncated.flatten(),
                    host: host.flatten(),
                    unit: unit.flatten(),
                    user_unit: user_unit.flatten(),
                    container: container.flatten(),
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawEvent<'a>, A::Error> {
                Ok(RawEvent {
                    v: element(&mut seq, 0)?,
                    ts: element(&mut seq, 1)?,
                    op: element(&mut seq, 2)?,
                    path: element(&mut seq, 3)?,
                    map: element(&mut seq, 4)?,
                    uid: element(&mut seq, 5)?,
                    comm: element(&mut seq, 6)?,
                    exe: element(&mut seq, 7)?,
                    result: element(&mut seq, 8)?,
                    count: element(&mut seq, 9)?,
                    escaped: element(&mut seq, 10)?,
                    truncated: element(&mut seq, 11)?,
                    // The array form is the twelve fields above, as it always was; fields
                    // added since are read from objects only.
                    pid: None,
                    tgid: None,
                    host: None,
                    unit: None,
                    user_unit: None,
                    container: None,
                })
            }
        }
        deserializer.deserialize_struct("RawEvent", RAW_FIELDS, RawVisitor(PhantomData))
    }
}

/// Only the schema version, for a line that does not parse as a known event.
pub(super) struct VersionOnly {
    pub(super) v: Option<u64>,
}

impl<'de> Deserialize<'de> for VersionOnly {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<VersionOnly, D::Error> {
        struct VersionVisitor;
        impl<'de> Visitor<'de> for VersionVisitor {
            type Value = VersionOnly;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an audit line")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<VersionOnly, A::Error> {
                let mut v = None;
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    if key.0 == field::V {
                        once(&mut map, &mut v, field::V)?;
                    } else {
                        map.next_value::<de::IgnoredAny>()?;
                    }
                }
                Ok(VersionOnly { v: v.flatten() })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<VersionOnly, A::Error> {
                Ok(VersionOnly {
                    v: seq
                        .next_element::<Option<u64>>()?
                        .ok_or_else(|| de::Error::invalid_length(0, &"a schema version"))?,
                })
            }
        }
        deserializer.deserialize_struct("VersionOnly", &[field::V], VersionVisitor)
    }
}

/// The schema version this report reads (the `v` the audit writer puts in every line).
pub(super) const SCHEMA_VERSION: u64 = schema::VERSION as u64;

// Flags of an event key: per field, whether the value is escaped (not UTF-8) or truncated.
// Two values that read the same but differ here are different names and never merged.
pub(super) const PATH_ESCAPED: u16 = 1;
pub(super) const PATH_TRUNCATED: u16 = 1 << 1;
pub(super) const COMM_ESCAPED: u16 = 1 << 2;
pub(super) const COMM_TRUNCATED: u16 = 1 << 3;
pub(super) const EXE_ESCAPED: u16 = 1 << 4;
pub(super) const EXE_TRUNCATED: u16 = 1 << 5;
pub(super) const MAP_ESCAPED: u16 = 1 << 6;
pub(super) const MAP_TRUNCATED: u16 = 1 << 7;
/// A tuple that stands for many, folded to stay within the memory cap: path, comm and exe
/// are not known (empty), op, result, uid and rule are.
pub(super) const SUMMARISED: u16 = 1 << 8;
/// The unit (or the user unit) is listed in `escaped`.
pub(super) const UNIT_ESCAPED: u16 = 1 << 9;
pub(super) const UNIT_TRUNCATED: u16 = 1 << 10;
pub(super) const HOST_ESCAPED: u16 = 1 << 11;
pub(super) const HOST_TRUNCATED: u16 = 1 << 12;

/// The flags that belong to each name of a key (a summarised key has no names at all).
pub(super) const PATH_FLAGS: u16 = PATH_ESCAPED | PATH_TRUNCATED | SUMMARISED;
pub(super) const COMM_FLAGS: u16 = COMM_ESCAPED | COMM_TRUNCATED | SUMMARISED;
pub(super) const EXE_FLAGS: u16 = EXE_ESCAPED | EXE_TRUNCATED | SUMMARISED;
pub(super) const MAP_FLAGS: u16 = MAP_ESCAPED | MAP_TRUNCATED;
pub(super) const UNIT_FLAGS: u16 = UNIT_ESCAPED | UNIT_TRUNCATED;
pub(super) const HOST_FLAGS: u16 = HOST_ESCAPED | HOST_TRUNCATED;

/// The `escaped`/`truncated` flags of a field name the report uses; 0 for the others.
pub(super) fn field_flag(name: &str, escaped: bool) -> u16 {
    let (e, t) = match name {
        field::PATH => (PATH_ESCAPED, PATH_TRUNCATED),
        field::COMM => (COMM_ESCAPED, COMM_TRUNCATED),
        field::EXE => (EXE_ESCAPED, EXE_TRUNCATED),
        field::MAP => (MAP_ESCAPED, MAP_TRUNCATED),
        field::UNIT | field::USER_UNIT => (UNIT_ESCAPED, UNIT_TRUNCATED),
        field::HOST => (HOST_ESCAPED, HOST_TRUNCATED),
        _ => return 0,
    };
    if escaped {
        e
    } else {
        t
    }
}

/// What a line turned out to be, when it is not malformed.
pub(super) enum Outcome {
    Accepted,
    /// A schema version newer than [`SCHEMA_VERSION`]: skipped and counted.
    Newer,
}

/// What makes two events "the same" for every section of the report; borrowed from the line.
#[derive(Hash)]
pub(super) struct EventKey<'a> {
    pub(super) op: &'a str,
    pub(super) path: &'a str,
    pub(super) map: Option<&'a str>,
    pub(super) uid: u32,
    pub(super) comm: &'a str,
    pub(super) exe: Option<&'a str>,
    pub(super) result: &'a str,
    /// The caller's unit, the user's unit below it, its container; the logging host.
    pub(super) unit: Option<&'a str>,
    pub(super) user_unit: Option<&'a str>,
    pub(super) container: Option<&'a str>,
    pub(super) host: Option<&'a str>,
    /// [`PATH_ESCAPED`] and the others.
    pub(super) flags: u16,
}

/// The time window of `--since`/`--until`, in microseconds since the epoch, half-open.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub(super) since: Option<i64>,
    pub(super) until: Option<i64>,
}

impl Window {
    pub(super) fn new(
        since: Option<&str>,
        until: Option<&str>,
        now: i64,
    ) -> Result<Window, String> {
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

    pub(super) fn contains(&self, ts: i64) -> bool {
        self.since.is_none_or(|s| ts >= s) && self.until.is_none_or(|u| ts < u)
    }
}

impl Aggregator {
    pub(super) fn line(&mut self, line: Option<&[u8]>, stats: &mut LineCounts) {
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
    pub(super) fn event(&mut self, line: &[u8]) -> Option<Outcome> {
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
        if op.0 == Op::Dropped.as_str() {
            if self.window.contains(ts) {
                self.lost = self.lost.saturating_add(count);
            }
            return Some(Outcome::Accepted);
        }
        if op.0 == Op::Suppressed.as_str() {
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
        if raw.unit.is_none() && raw.user_unit.is_none() {
            flags &= !UNIT_FLAGS;
        }
        if raw.host.is_none() {
            flags &= !HOST_FLAGS;
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
            unit: raw.unit.as_ref().map(|u| &*u.0),
            user_unit: raw.user_unit.as_ref().map(|u| &*u.0),
            container: raw.container.as_ref().map(|c| &*c.0),
            host: raw.host.as_ref().map(|h| &*h.0),
            flags,
        };
        self.add(&key, ts, count);
        Some(Outcome::Accepted)
    }
}

/// Full precision, for JSON: "2026-11-27T21:56:23.416335Z".
pub(super) fn fmt_ts(micros: i64) -> String {
    time::format_micros(micros)
}

/// To the second, for people: "2026-11-27T21:56:23Z".
pub(super) fn fmt_ts_short(micros: i64) -> String {
    short(&fmt_ts(micros))
}

/// Drops the fraction of an RFC 3339 UTC timestamp (what [`fmt_ts`] produces).
pub(super) fn short(ts: &str) -> String {
    match ts.find('.') {
        Some(dot) if ts.ends_with('Z') => format!("{}Z", &ts[..dot]),
        _ => ts.to_owned(),
    }
}

/// A size as `--max-memory` takes it: "512M", "3G", "1000".
pub(super) fn fmt_size(n: u64) -> String {
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
pub(super) fn parse_when(s: &str, now: i64, what: &str) -> Result<i64, String> {
    let s = s.trim();
    parse_rfc3339(s)
        .or_else(|| {
            time::parse_date(s)
                .ok()
                .map(|days| days * SECS_PER_DAY * MICROS_PER_SEC)
        })
        .or_else(|| parse_relative(s).map(|ago| now.saturating_sub(ago)))
        .ok_or_else(|| {
            format!(
                "invalid {what} '{s}': expected an RFC 3339 timestamp (2026-11-01T08:00:00Z), \
                 a date (2026-11-01) or an age (30m, 12h, 7d, 2w)"
            )
        })
}

/// "12h" → microseconds. Units: s, m, h, d, w.
pub(crate) fn parse_relative(s: &str) -> Option<i64> {
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

/// RFC 3339 (see [`time::parse_rfc3339`]) → microseconds since the epoch.
pub(super) fn parse_rfc3339(s: &str) -> Option<i64> {
    time::parse_rfc3339(s).ok()
}
