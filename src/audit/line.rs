//! The lines of the log as written: an event line (escaping its byte fields, naming those
//! escaped or shortened) and the writer's `dropped` and `suppressed` records, serialised with
//! [`schema`]'s names in schema order.

use std::borrow::Cow;
use std::os::unix::ffi::OsStrExt;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::proc::F_HOST;
use super::schema::{self, field, RESULT_OK};
use super::{
    encode, errno_name, Queued, FIELD_NAMES, F_CMDLINE, F_COMM, F_DEST, F_DETAIL, F_EXE, F_PATH,
    F_TARGET,
};

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

/// The record of one uid's events over its rate since `since`.
pub(super) struct SuppressedLine<'a> {
    pub(super) v: u32,
    pub(super) ts: &'a str,
    pub(super) op: &'a str,
    pub(super) uid: u32,
    pub(super) count: u64,
    pub(super) since: &'a str,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::schema::Op;

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
            serde_json::to_string(&dropped).unwrap(),
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
            serde_json::to_string(&suppressed).unwrap(),
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
