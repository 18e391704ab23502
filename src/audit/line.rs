//! The lines of the log as written: an event line (escaping its byte fields, naming those
//! escaped or shortened) and the writer's `dropped` and `suppressed` records, serialised with
//! [`schema`]'s names in schema order.
//!
//! The encoder is hand-written, straight into the writer's buffer: no intermediate value or
//! string per line. It writes exactly what serde_json wrote before (the tests keep that encoder
//! and compare both on random lines): no spaces, fields in order, absent optional fields left
//! out, strings escaped as serde_json escapes them, integers in plain decimal.

use std::borrow::Cow;
use std::os::unix::ffi::OsStrExt;

use super::proc::F_HOST;
use super::schema::{self, field, RESULT_OK};
use super::{
    encode, errno_name, Queued, FIELD_NAMES, F_CMDLINE, F_COMM, F_DEST, F_DETAIL, F_EXE, F_PATH,
    F_TARGET,
};

/// A line of the log, written as one JSON object (the writer adds the newline).
pub(super) trait Line {
    fn encode(&self, out: &mut Vec<u8>);
}

/// How serde_json escapes each byte of a string: 0 for none (written as is, which includes
/// DEL, every non-ASCII character and U+2028/U+2029), `u` for `\u00XX` (lowercase hex),
/// otherwise the letter after the backslash.
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// How many bytes at the start of `b` need no escape. Eight at a time: in a word, the bytes
/// below 0x20, equal to `"` or equal to `\\` have their high bit set by the classic
/// "has a byte less than / equal to" bit tricks. Those may also flag bytes after a true hit
/// (a borrow runs upwards), never before it, so the lowest flag is the first byte to escape.
fn clean_run(b: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x;
    let mut n = 0;
    for chunk in b.chunks_exact(8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let flags = ((w.wrapping_sub(ONES * 0x20) & !w)
            | zero_byte(w ^ (ONES * u64::from(b'"')))
            | zero_byte(w ^ (ONES * u64::from(b'\\'))))
            & HIGH;
        if flags != 0 {
            return n + (flags.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + b[n..]
        .iter()
        .take_while(|&&c| ESCAPE[usize::from(c)] == 0)
        .count()
}

/// JSON values appended to a line.
trait Out {
    /// A JSON string: runs that need no escape are copied whole.
    fn str(&mut self, s: &str);
    /// A JSON number.
    fn u64(&mut self, n: u64);
    /// A JSON array of strings.
    fn list(&mut self, items: &[&str]);
}

impl Out for Vec<u8> {
    fn str(&mut self, s: &str) {
        let bytes = s.as_bytes();
        self.reserve(bytes.len() + 2);
        self.push(b'"');
        let mut rest = bytes;
        loop {
            let clean = clean_run(rest);
            self.extend_from_slice(&rest[..clean]);
            let Some((&b, after)) = rest[clean..].split_first() else {
                break;
            };
            match ESCAPE[usize::from(b)] {
                b'u' => {
                    let (hi, lo) = (HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]);
                    self.extend_from_slice(&[b'\\', b'u', b'0', b'0', hi, lo]);
                }
                e => self.extend_from_slice(&[b'\\', e]),
            }
            rest = after;
        }
        self.push(b'"');
    }

    fn u64(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.extend_from_slice(&digits[i..]);
    }

    fn list(&mut self, items: &[&str]) {
        self.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.push(b',');
            }
            self.str(item);
        }
        self.push(b']');
    }
}

/// A JSON object being written: `{"first":`, then `,"key":` before each further value, `}`.
/// Keys are [`schema::field`] names, plain ASCII that needs no escaping, written as they are.
struct Obj<'b> {
    out: &'b mut Vec<u8>,
}

impl<'b> Obj<'b> {
    fn start(out: &'b mut Vec<u8>, first: &str) -> Obj<'b> {
        out.extend_from_slice(b"{\"");
        out.extend_from_slice(first.as_bytes());
        out.extend_from_slice(b"\":");
        Obj { out }
    }

    /// Starts the next field; its value goes into what this returns.
    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        self.out.extend_from_slice(b",\"");
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    /// An optional field: left out when there is no value.
    fn opt<T>(&mut self, key: &str, value: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
        if let Some(v) = value {
            write(self.key(key), v);
        }
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

/// `bytes` escaped for the log; sets `bit` in `escaped` when it had to be.
fn esc<'a>(bytes: &'a [u8], bit: impl Into<u16>, escaped: &mut u16) -> Cow<'a, str> {
    let (s, e) = encode::escape(bytes);
    if e {
        *escaped |= bit.into();
    }
    s
}

/// The names of the fields in `bits` (the event's u8 bits, and [`F_HOST`]), in line order.
fn field_list(bits: u16) -> Option<Vec<&'static str>> {
    (bits != 0).then(|| {
        let host = (bits & F_HOST != 0).then_some(field::HOST);
        host.into_iter()
            .chain(
                FIELD_NAMES
                    .iter()
                    .filter(|(bit, _)| bits & u16::from(*bit) != 0)
                    .map(|(_, name)| *name),
            )
            .collect()
    })
}

/// One event line, fields in schema order (see [`schema::EVENT_FIELDS`]).
pub(super) struct EventLine<'a> {
    v: u32,
    ts: &'a str,
    /// The daemon's host name, in every line so that merged logs stay attributable.
    host: Option<Cow<'a, str>>,
    op: &'a str,
    path: Cow<'a, str>,
    target: Option<Cow<'a, str>>,
    map: Option<&'a str>,
    flags: Option<&'a str>,
    dest: Option<Cow<'a, str>>,
    detail: Option<Cow<'a, str>>,
    /// The calling thread, as FUSE reports it.
    pid: u32,
    /// The process of that thread.
    tgid: Option<u32>,
    uid: u32,
    gid: u32,
    comm: Cow<'a, str>,
    exe: Option<Cow<'a, str>>,
    cmdline: Option<Cow<'a, str>>,
    /// The caller's systemd unit, the unit below `user@UID.service`, its container id.
    unit: Option<&'a str>,
    user_unit: Option<&'a str>,
    container: Option<&'a str>,
    result: &'a str,
    reason: Option<&'a str>,
    /// How many identical events this line stands for, when collapsed (more than one).
    count: Option<u64>,
    /// Fields whose bytes were not UTF-8, written escaped (see `encode`).
    escaped: Option<Vec<&'static str>>,
    /// Fields shortened to their cap (see `encode`).
    truncated: Option<Vec<&'static str>>,
}

impl<'a> EventLine<'a> {
    /// The line of a queued event that stands for `count` events, stamped `ts`.
    pub(super) fn of(q: &'a Queued, count: u64, ts: &'a str) -> EventLine<'a> {
        let ev = &q.event;
        let mut escaped = 0u16;
        let path = esc(ev.path.as_os_str().as_bytes(), F_PATH, &mut escaped);
        let target = ev
            .target
            .as_deref()
            .map(|t| esc(t.as_os_str().as_bytes(), F_TARGET, &mut escaped));
        let dest = ev
            .dest
            .as_deref()
            .map(|d| esc(d.as_os_str().as_bytes(), F_DEST, &mut escaped));
        let detail = ev
            .detail
            .as_deref()
            .map(|d| esc(d.as_bytes(), F_DETAIL, &mut escaped));
        let comm = esc(&q.proc.comm, F_COMM, &mut escaped);
        let exe = q.proc.exe.as_deref().map(|e| esc(e, F_EXE, &mut escaped));
        let cmdline = q
            .proc
            .cmdline
            .as_deref()
            .map(|c| esc(c, F_CMDLINE, &mut escaped));
        let host = q.proc.host.as_deref().map(|h| esc(h, F_HOST, &mut escaped));
        let service = &q.proc.service;
        EventLine {
            v: schema::VERSION,
            ts,
            host,
            op: ev.op,
            path,
            target,
            map: ev.map.as_deref(),
            flags: ev.flags,
            dest,
            detail,
            pid: ev.pid,
            tgid: q.proc.tgid,
            uid: ev.uid,
            gid: ev.gid,
            comm,
            exe,
            cmdline,
            unit: service.unit.as_deref(),
            user_unit: service.user_unit.as_deref(),
            container: service.container.as_deref(),
            result: match ev.result {
                Ok(()) => RESULT_OK,
                Err(errno) => errno_name(errno),
            },
            reason: ev.reason,
            count: (count > 1).then_some(count),
            escaped: field_list(escaped),
            truncated: field_list(u16::from(q.truncated | q.proc.truncated)),
        }
    }
}

impl Line for EventLine<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut o = Obj::start(out, field::V);
        o.out.u64(self.v.into());
        o.key(field::TS).str(self.ts);
        o.opt(field::HOST, self.host.as_deref(), Out::str);
        o.key(field::OP).str(self.op);
        o.key(field::PATH).str(&self.path);
        o.opt(field::TARGET, self.target.as_deref(), Out::str);
        o.opt(field::MAP, self.map, Out::str);
        o.opt(field::FLAGS, self.flags, Out::str);
        o.opt(field::DEST, self.dest.as_deref(), Out::str);
        o.opt(field::DETAIL, self.detail.as_deref(), Out::str);
        o.key(field::PID).u64(self.pid.into());
        o.opt(field::TGID, self.tgid.map(u64::from), Out::u64);
        o.key(field::UID).u64(self.uid.into());
        o.key(field::GID).u64(self.gid.into());
        o.key(field::COMM).str(&self.comm);
        o.opt(field::EXE, self.exe.as_deref(), Out::str);
        o.opt(field::CMDLINE, self.cmdline.as_deref(), Out::str);
        o.opt(field::UNIT, self.unit, Out::str);
        o.opt(field::USER_UNIT, self.user_unit, Out::str);
        o.opt(field::CONTAINER, self.container, Out::str);
        o.key(field::RESULT).str(self.result);
        o.opt(field::REASON, self.reason, Out::str);
        o.opt(field::COUNT, self.count, Out::u64);
        o.opt(field::ESCAPED, self.escaped.as_deref(), Out::list);
        o.opt(field::TRUNCATED, self.truncated.as_deref(), Out::list);
        o.end();
    }
}

/// The host name for a `dropped` or `suppressed` line, which has no `escaped` list: left out
/// in the (theoretical) case it is not UTF-8.
fn record_host() -> Option<String> {
    super::proc::host().and_then(|h| std::str::from_utf8(&h).ok().map(str::to_owned))
}

/// The explicit record of events that could not be written.
pub(super) struct DroppedLine<'a> {
    pub(super) v: u32,
    pub(super) ts: &'a str,
    pub(super) op: &'a str,
    pub(super) count: u64,
}

impl Line for DroppedLine<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut o = Obj::start(out, field::V);
        o.out.u64(self.v.into());
        o.key(field::TS).str(self.ts);
        o.opt(field::HOST, record_host().as_deref(), Out::str);
        o.key(field::OP).str(self.op);
        o.key(field::COUNT).u64(self.count);
        o.end();
    }
}

/// The record of one uid's events over its rate since `since`.
pub(super) struct SuppressedLine<'a> {
    pub(super) v: u32,
    pub(super) ts: &'a str,
    pub(super) op: &'a str,
    pub(super) uid: u32,
    pub(super) count: u64,
    pub(super) since: &'a str,
}

impl Line for SuppressedLine<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut o = Obj::start(out, field::V);
        o.out.u64(self.v.into());
        o.key(field::TS).str(self.ts);
        o.opt(field::HOST, record_host().as_deref(), Out::str);
        o.key(field::OP).str(self.op);
        o.key(field::UID).u64(self.uid.into());
        o.key(field::COUNT).u64(self.count);
        o.key(field::SINCE).str(self.since);
        o.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::schema::Op;
    use serde::ser::{SerializeMap, Serializer};
    use serde::Serialize;

    /// The encoder before [`Line`]: serde_json, through these `Serialize` impls. The
    /// hand-written one must produce exactly its bytes.
    /// Writes `key` only when there is a value.
    fn entry_some<M: SerializeMap, T: Serialize>(
        m: &mut M,
        key: &'static str,
        value: &Option<T>,
    ) -> Result<(), M::Error> {
        match value {
            Some(v) => m.serialize_entry(key, v),
            None => Ok(()),
        }
    }

    impl Serialize for EventLine<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(None)?;
            m.serialize_entry(field::V, &self.v)?;
            m.serialize_entry(field::TS, self.ts)?;
            entry_some(&mut m, field::HOST, &self.host)?;
            m.serialize_entry(field::OP, self.op)?;
            m.serialize_entry(field::PATH, &self.path)?;
            entry_some(&mut m, field::TARGET, &self.target)?;
            entry_some(&mut m, field::MAP, &self.map)?;
            entry_some(&mut m, field::FLAGS, &self.flags)?;
            entry_some(&mut m, field::DEST, &self.dest)?;
            entry_some(&mut m, field::DETAIL, &self.detail)?;
            m.serialize_entry(field::PID, &self.pid)?;
            entry_some(&mut m, field::TGID, &self.tgid)?;
            m.serialize_entry(field::UID, &self.uid)?;
            m.serialize_entry(field::GID, &self.gid)?;
            m.serialize_entry(field::COMM, &self.comm)?;
            entry_some(&mut m, field::EXE, &self.exe)?;
            entry_some(&mut m, field::CMDLINE, &self.cmdline)?;
            entry_some(&mut m, field::UNIT, &self.unit)?;
            entry_some(&mut m, field::USER_UNIT, &self.user_unit)?;
            entry_some(&mut m, field::CONTAINER, &self.container)?;
            m.serialize_entry(field::RESULT, self.result)?;
            entry_some(&mut m, field::REASON, &self.reason)?;
            entry_some(&mut m, field::COUNT, &self.count)?;
            entry_some(&mut m, field::ESCAPED, &self.escaped)?;
            entry_some(&mut m, field::TRUNCATED, &self.truncated)?;
            m.end()
        }
    }

    impl Serialize for DroppedLine<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(None)?;
            m.serialize_entry(field::V, &self.v)?;
            m.serialize_entry(field::TS, self.ts)?;
            entry_some(&mut m, field::HOST, &record_host())?;
            m.serialize_entry(field::OP, self.op)?;
            m.serialize_entry(field::COUNT, &self.count)?;
            m.end()
        }
    }

    impl Serialize for SuppressedLine<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(None)?;
            m.serialize_entry(field::V, &self.v)?;
            m.serialize_entry(field::TS, self.ts)?;
            entry_some(&mut m, field::HOST, &record_host())?;
            m.serialize_entry(field::OP, self.op)?;
            m.serialize_entry(field::UID, &self.uid)?;
            m.serialize_entry(field::COUNT, &self.count)?;
            m.serialize_entry(field::SINCE, self.since)?;
            m.end()
        }
    }

    /// The line format before the names came from `schema`: serde's derive, with `reason`
    /// after `result`. The hand-written serialisers must produce the same bytes.
    #[derive(Serialize)]
    struct Derived<'a> {
        v: u32,
        ts: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<&'a str>,
        op: &'a str,
        path: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        target: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        map: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        flags: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        dest: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<&'a str>,
        pid: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        tgid: Option<u32>,
        uid: u32,
        gid: u32,
        comm: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        exe: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cmdline: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        unit: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        user_unit: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        container: Option<&'a str>,
        result: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        escaped: Option<Vec<&'static str>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        truncated: Option<Vec<&'static str>>,
    }

    #[derive(Serialize)]
    struct DerivedDropped<'a> {
        v: u32,
        ts: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<&'a str>,
        op: &'a str,
        count: u64,
    }

    #[derive(Serialize)]
    struct DerivedSuppressed<'a> {
        v: u32,
        ts: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<&'a str>,
        op: &'a str,
        uid: u32,
        count: u64,
        since: &'a str,
    }

    /// A line as the writer encodes it.
    fn encoded(line: &impl Line) -> String {
        let mut out = Vec::new();
        line.encode(&mut out);
        String::from_utf8(out).expect("lines are UTF-8")
    }

    /// Every combination of the optional fields, with values that need JSON escaping.
    #[test]
    fn lines_are_byte_identical_to_the_derived_format() {
        const OPTIONAL: u32 = 16;
        for mask in 0..(1u32 << OPTIONAL) {
            let on = |bit: u32| mask & (1 << bit) != 0;
            let some = |bit: u32, s: &'static str| on(bit).then_some(s);
            let lists = |bit: u32| on(bit).then(|| vec![field::PATH, field::COMM]);
            let new = EventLine {
                v: schema::VERSION,
                ts: "2026-11-27T21:49:09.123456Z",
                host: some(11, "web-01").map(Cow::Borrowed),
                op: "rename",
                path: Cow::Borrowed("/opt/legacy/a \"q\" \\ \u{1}"),
                target: some(0, "/srv/new/a").map(Cow::Borrowed),
                map: some(1, "/opt/legacy"),
                flags: some(2, "rw"),
                dest: some(3, "/opt/legacy/b\n").map(Cow::Borrowed),
                detail: some(4, "mode=0644").map(Cow::Borrowed),
                pid: 4242,
                tgid: on(12).then_some(4240),
                uid: 1000,
                gid: 100,
                comm: Cow::Borrowed("p\\xe9"),
                exe: some(5, "/usr/bin/mv").map(Cow::Borrowed),
                cmdline: some(6, "mv a b").map(Cow::Borrowed),
                unit: some(13, "user@1000.service"),
                user_unit: some(14, "app-x.scope"),
                container: some(15, "0123456789ab"),
                result: "EACCES",
                reason: some(7, "denied by rule"),
                count: on(8).then_some(7),
                escaped: lists(9),
                truncated: lists(10),
            };
            let old = Derived {
                v: 1,
                ts: new.ts,
                host: new.host.as_deref(),
                op: new.op,
                path: &new.path,
                target: new.target.as_deref(),
                map: new.map,
                flags: new.flags,
                dest: new.dest.as_deref(),
                detail: new.detail.as_deref(),
                pid: new.pid,
                tgid: new.tgid,
                uid: new.uid,
                gid: new.gid,
                comm: &new.comm,
                exe: new.exe.as_deref(),
                cmdline: new.cmdline.as_deref(),
                unit: new.unit,
                user_unit: new.user_unit,
                container: new.container,
                result: new.result,
                reason: new.reason,
                count: new.count,
                escaped: new.escaped.clone(),
                truncated: new.truncated.clone(),
            };
            assert_eq!(
                serde_json::to_string(&new).unwrap(),
                serde_json::to_string(&old).unwrap(),
                "mask {mask:#b}"
            );
            assert_eq!(encoded(&new), serde_json::to_string(&old).unwrap());
        }
        let ts = "2026-11-27T21:49:09.123456Z";
        let host = record_host();
        let dropped = DroppedLine {
            v: 1,
            ts,
            op: Op::Dropped.as_str(),
            count: 3,
        };
        assert_eq!(
            encoded(&dropped),
            serde_json::to_string(&DerivedDropped {
                v: 1,
                ts,
                host: host.as_deref(),
                op: "dropped",
                count: 3
            })
            .unwrap()
        );
        let suppressed = SuppressedLine {
            v: 1,
            ts,
            op: Op::Suppressed.as_str(),
            uid: 1000,
            count: 500,
            since: "2026-11-27T21:49:08.000000Z",
        };
        assert_eq!(
            encoded(&suppressed),
            serde_json::to_string(&DerivedSuppressed {
                v: 1,
                ts,
                host: host.as_deref(),
                op: "suppressed",
                uid: 1000,
                count: 500,
                since: "2026-11-27T21:49:08.000000Z",
            })
            .unwrap()
        );
        // And one written out, as the report's tests and the README show it.
        let host = host.map(|h| format!(r#""host":{},"#, serde_json::json!(h)));
        assert_eq!(
            serde_json::to_string(&dropped).unwrap(),
            format!(
                r#"{{"v":1,"ts":"2026-11-27T21:49:09.123456Z",{}"op":"dropped","count":3}}"#,
                host.unwrap_or_default()
            )
        );
    }
}

/// The hand-written encoder against serde_json's on random lines, and what each costs.
#[cfg(test)]
mod random {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::{Instant, SystemTime};

    use proptest::prelude::*;
    use proptest::sample::select;

    use super::*;
    use crate::audit::encode::{shorten, CMDLINE_CAP, COMM_CAP, PATH_CAP};
    use crate::audit::proc::{ProcInfo, Service};
    use crate::audit::schema::Op;
    use crate::audit::{bound_event, Event, Queued};

    /// Pieces that strings are made of: plain text, every byte JSON or the `escaped` rule
    /// treats specially, valid characters of every width (U+2028 too), and any byte at all.
    fn piece() -> BoxedStrategy<Vec<u8>> {
        const SPECIAL: [&[u8]; 16] = [
            b"\"",
            b"\\",
            b"\\x",
            b"\n",
            b"\r",
            b"\t",
            b"\x08",
            b"\x0c",
            b"\x00",
            b"\x1f",
            b"\x7f",
            b"\xff",
            b"\xc3",
            b"\xe2\x82",
            b"\xed\xa0\x80",
            b"/",
        ];
        prop_oneof![
            4 => "[a-zA-Z0-9/._ -]{1,12}".prop_map(String::into_bytes),
            2 => select(&SPECIAL[..]).prop_map(<[u8]>::to_vec),
            1 => select(&["é", "€", "😀", "\u{2028}", "\u{2029}", "\u{fffd}", "…"][..])
                .prop_map(|s| s.as_bytes().to_vec()),
            1 => any::<char>().prop_map(|c| c.to_string().into_bytes()),
            1 => any::<u8>().prop_map(|b| vec![b]),
        ]
        .boxed()
    }

    /// A field's bytes: usually short, sometimes far past every cap.
    fn bytes() -> BoxedStrategy<Vec<u8>> {
        prop_oneof![
            9 => prop::collection::vec(piece(), 0..24).prop_map(|p| p.concat()),
            1 => (prop::collection::vec(piece(), 1..6), 200..800usize)
                .prop_map(|(p, n)| p.concat().repeat(n)),
        ]
        .boxed()
    }

    /// Text fields (valid UTF-8 by type, control characters and quotes included).
    fn text() -> BoxedStrategy<String> {
        bytes()
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned())
            .boxed()
    }

    fn opt<T: std::fmt::Debug + 'static>(s: BoxedStrategy<T>) -> BoxedStrategy<Option<T>> {
        proptest::option::of(s).boxed()
    }

    fn path(b: Vec<u8>) -> PathBuf {
        PathBuf::from(OsString::from_vec(b))
    }

    const FLAGS: [&str; 4] = ["r", "w", "rw", "odd \"flags\"\n"];
    const REASONS: [&str; 3] = ["denied by rule", "read-only rule", "tab\there"];

    fn ops() -> impl Strategy<Value = &'static str> {
        select(&Op::ALL[..]).prop_map(Op::as_str)
    }

    fn count() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0u64), Just(1), 2..10u64, any::<u64>()]
    }

    /// A line as the writer encodes it.
    fn encoded(line: &impl Line) -> Vec<u8> {
        let mut out = Vec::new();
        line.encode(&mut out);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Random events (every field present or absent, random bytes in each string field,
        /// values past their caps shortened or not, every op, every result) give the same
        /// bytes through the hand-written encoder as through serde_json.
        #[test]
        fn random_lines_encode_as_serde_json_did(
            paths in (bytes(), opt(bytes()), opt(text()), opt(bytes()), opt(bytes())),
            proc_bytes in (bytes(), opt(bytes()), opt(bytes()), opt(bytes())),
            service in (opt(text()), opt(text()), opt(text()), text()),
            ids in (any::<u32>(), any::<u32>(), any::<u32>(), opt(any::<u32>().boxed())),
            rest in (
                count(),
                prop_oneof![Just(Ok(())), any::<i32>().prop_map(Err)],
                any::<u8>(),
                any::<u8>(),
                any::<bool>(),
            ),
            statics in (ops(), opt(select(&FLAGS[..]).boxed()), opt(select(&REASONS[..]).boxed())),
        ) {
            let (p, target, map, dest, detail) = paths;
            let (mut comm, mut exe, mut cmdline, host) = proc_bytes;
            let (unit, user_unit, container, ts) = service;
            let (pid, uid, gid, tgid) = ids;
            let (count, result, ev_truncated, proc_truncated, bound) = rest;
            let (op, flags, reason) = statics;
            let mut event = Event {
                op,
                path: path(p),
                target: target.map(path),
                map,
                flags,
                dest: dest.map(path),
                detail: detail.map(OsString::from_vec),
                pid,
                uid,
                gid,
                result,
                reason,
            };
            let mut truncated = ev_truncated;
            if bound {
                // As the filesystem side and the process cache cap them.
                truncated = bound_event(&mut event);
                let cap = |v: &mut Vec<u8>, c: usize| {
                    if let Some(s) = shorten(v, c) {
                        *v = s;
                    }
                };
                cap(&mut comm, COMM_CAP);
                exe.iter_mut().for_each(|e| cap(e, PATH_CAP));
                cmdline.iter_mut().for_each(|c| cap(c, CMDLINE_CAP));
            }
            let q = Queued {
                ts: SystemTime::now(),
                event,
                proc: Arc::new(ProcInfo {
                    comm,
                    exe,
                    cmdline,
                    tgid,
                    service: Service { unit, user_unit, container },
                    host: host.map(Arc::from),
                    truncated: proc_truncated,
                }),
                cost: 0,
                truncated,
            };
            let line = EventLine::of(&q, count, &ts);
            let new = encoded(&line);
            let old = serde_json::to_vec(&line).unwrap();
            prop_assert!(new == old, "\nnew {}\nold {}", String::from_utf8_lossy(&new),
                String::from_utf8_lossy(&old));
        }

        /// The word-at-a-time scan stops where a byte-by-byte one does, on bytes dense in
        /// neighbours of the special ones (a borrow must not hide or invent a hit).
        #[test]
        fn clean_run_stops_at_the_first_byte_to_escape(
            b in prop::collection::vec(
                prop_oneof![
                    any::<u8>(),
                    select(&[0x00, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x5b, 0x5c, 0x5d, 0x7f,
                        0x80, 0x9f, 0xa0, 0xdc, 0xff, b'a'][..]),
                    Just(b'a'),
                ],
                0..40,
            ),
        ) {
            let naive = b.iter().take_while(|&&c| ESCAPE[usize::from(c)] == 0).count();
            prop_assert_eq!(clean_run(&b), naive);
        }

        /// The same for `dropped` and `suppressed` lines.
        #[test]
        fn random_records_encode_as_serde_json_did(
            ts in text(),
            since in text(),
            op in ops(),
            uid in any::<u32>(),
            count in count(),
        ) {
            let dropped = DroppedLine { v: schema::VERSION, ts: &ts, op, count };
            prop_assert_eq!(encoded(&dropped), serde_json::to_vec(&dropped).unwrap());
            let suppressed = SuppressedLine {
                v: schema::VERSION,
                ts: &ts,
                op,
                uid,
                count,
                since: &since,
            };
            prop_assert_eq!(encoded(&suppressed), serde_json::to_vec(&suppressed).unwrap());
        }
    }

    /// Nanoseconds per line, serde_json against the hand-written encoder, on a typical open
    /// line and on one full of escapes. Run with
    /// `cargo test --release --lib audit::line -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn encode_ns_per_line() {
        const N: u32 = 300_000;
        let typical = |path: &[u8], comm: &[u8]| Queued {
            ts: SystemTime::now(),
            event: Event {
                op: Op::Open.as_str(),
                path: PathBuf::from(OsString::from_vec(path.to_vec())),
                target: Some(PathBuf::from("/srv/new/app/data/files/f0001234")),
                map: Some("/opt/legacy/app".to_owned()),
                flags: Some("r"),
                dest: None,
                detail: None,
                pid: 123_456,
                uid: 1000,
                gid: 1000,
                result: Ok(()),
                reason: None,
            },
            proc: Arc::new(ProcInfo {
                comm: comm.to_vec(),
                exe: Some(b"/usr/bin/python3.12".to_vec()),
                cmdline: None,
                tgid: Some(123_450),
                service: Service {
                    unit: Some("user@1000.service".to_owned()),
                    user_unit: Some("app-gnome-terminal-4242.scope".to_owned()),
                    container: None,
                },
                host: Some(Arc::from(&b"build-host-01"[..])),
                truncated: 0,
            }),
            cost: 0,
            truncated: 0,
        };
        let cases = [
            (
                "typical",
                typical(b"/opt/legacy/app/data/files/f0001234", b"python3"),
            ),
            (
                "escapes",
                typical(
                    b"/opt/legacy/a \"q\"\t\\ b\xff\x01/\x7f\xe2\x80\xa8 end",
                    b"w\nx",
                ),
            ),
        ];
        let ts = "2026-12-01T19:00:00.123456Z";
        for (name, q) in &cases {
            let mut out = Vec::with_capacity(1 << 20);
            let mut time = |encode: &dyn Fn(&EventLine, &mut Vec<u8>)| {
                let start = Instant::now();
                for _ in 0..N {
                    let line = EventLine::of(q, 1, ts);
                    encode(&line, &mut out);
                    out.push(b'\n');
                    if out.len() > 64 * 1024 {
                        out.clear();
                    }
                }
                start.elapsed().as_nanos() as f64 / f64::from(N)
            };
            let old = time(&|l, out| serde_json::to_writer(out, l).unwrap());
            let new = time(&|l, out| l.encode(out));
            let of = time(&|l, _| {
                std::hint::black_box(l);
            });
            let len = encoded(&EventLine::of(q, 1, ts)).len();
            println!(
                "{name} ({len} bytes): serde_json {old:.0} ns/line, hand-written {new:.0} ns/line, of which {of:.0} ns building the EventLine"
            );
        }
    }
}
