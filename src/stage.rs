//! Rule lifecycles: a rule serves, warns its callers, browns out at scheduled windows, or is
//! retired. The config syntax and the schedule arithmetic ("is now inside a window", "when is
//! the next edge") are pure and tested here; below them come the per-rule state the core
//! checks on each lookup and open, the journal warnings, and the thread that drops the
//! kernel's cached entries at every edge.
//!
//! Times are UTC seconds since the epoch. `daily`/`weekly` windows are written in UTC: a
//! local zone's clock jumps twice a year and a brownout must not move or double with it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::hash::BuildHasher;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::node::lock;

const DAY: i64 = 86_400;
const WEEK: i64 = 7 * DAY;
/// The longest one-off window: a longer refusal is a retirement (`stage = "retired"`).
const MAX_ONCE: i64 = 31 * DAY;

/// A rule's configured stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stage {
    #[default]
    Serve,
    Warn,
    Brownout,
    Retired,
}

impl Stage {
    pub fn parse(text: &str) -> Option<Stage> {
        match text {
            "serve" => Some(Stage::Serve),
            "warn" => Some(Stage::Warn),
            "brownout" => Some(Stage::Brownout),
            "retired" => Some(Stage::Retired),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Stage::Serve => "serve",
            Stage::Warn => "warn",
            Stage::Brownout => "brownout",
            Stage::Retired => "retired",
        }
    }
}

/// What a rule does at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Now {
    Serve,
    Warn,
    /// Inside a brownout window.
    Brownout,
    Retired,
}

impl Now {
    pub fn name(self) -> &'static str {
        match self {
            Now::Serve => "serve",
            Now::Warn => "warn",
            Now::Brownout => "brownout",
            Now::Retired => "retired",
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> Now {
        match code {
            1 => Now::Warn,
            2 => Now::Brownout,
            3 => Now::Retired,
            _ => Now::Serve,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// Seconds after 00:00 UTC.
    Daily(i64),
    /// Seconds after Monday 00:00 UTC.
    Weekly(i64),
    /// An instant.
    Once(i64),
}

/// One brownout window as configured: `daily HH:MM for DUR`, `weekly DAY HH:MM for DUR`, or
/// `RFC3339 for DUR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    repeat: Repeat,
    /// Seconds, at least 1 and shorter than the period.
    len: i64,
    text: String,
}

impl Window {
    /// The occurrence that contains `now`, or else the next one: (start, end), end excluded.
    pub fn around(&self, now: i64) -> Option<(i64, i64)> {
        let (period, offset, epoch_base) = match self.repeat {
            Repeat::Once(start) => {
                let end = start.saturating_add(self.len);
                return (now < end).then_some((start, end));
            }
            Repeat::Daily(at) => (DAY, at, 0),
            // 1970-01-01 was a Thursday: the Monday before it is day -3.
            Repeat::Weekly(at) => (WEEK, at, -3 * DAY),
        };
        let base = now - (now - epoch_base).rem_euclid(period) + offset;
        // The window is shorter than its period: of the occurrences before, at and after
        // `now`'s period, the first not yet over is the current or the next one.
        [base - period, base, base + period]
            .into_iter()
            .map(|s| (s, s + self.len))
            .find(|&(_, end)| now < end)
    }

    pub fn contains(&self, now: i64) -> bool {
        self.around(now).is_some_and(|(s, e)| s <= now && now < e)
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

/// A rule's lifecycle as configured; the default serves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lifecycle {
    pub stage: Stage,
    pub windows: Vec<Window>,
    /// From this instant the rule is retired whatever its stage.
    pub retire_after: Option<i64>,
    pub exempt_uids: Vec<u32>,
    pub exempt_units: Vec<String>,
}

impl Lifecycle {
    /// Serves now and always: the core's fast path.
    pub fn is_plain(&self) -> bool {
        self.stage == Stage::Serve && self.retire_after.is_none()
    }

    /// What the rule does at `now`. A browned-out rule warns between its windows.
    pub fn at(&self, now: i64) -> Now {
        if self.retire_after.is_some_and(|t| now >= t) {
            return Now::Retired;
        }
        match self.stage {
            Stage::Serve => Now::Serve,
            Stage::Warn => Now::Warn,
            Stage::Retired => Now::Retired,
            Stage::Brownout if self.windows.iter().any(|w| w.contains(now)) => Now::Brownout,
            Stage::Brownout => Now::Warn,
        }
    }

    /// The current or next brownout window: the earliest occurrence not yet over.
    pub fn next_window(&self, now: i64) -> Option<(i64, i64)> {
        if self.stage != Stage::Brownout || self.at(now) == Now::Retired {
            return None;
        }
        self.windows.iter().filter_map(|w| w.around(now)).min()
    }

    /// The first instant after `now` at which [`Lifecycle::at`] may change.
    pub fn next_edge(&self, now: i64) -> Option<i64> {
        if self.at(now) == Now::Retired {
            return None;
        }
        let windows = self
            .windows
            .iter()
            .filter(|_| self.stage == Stage::Brownout)
            .filter_map(|w| w.around(now))
            .map(|(s, e)| if s > now { s } else { e });
        windows.chain(self.retire_after.filter(|&t| t > now)).min()
    }
}

/// `5m`, `1h30m`, `90s`, `2d`: a positive number of seconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let fail =
        || format!("{text:?} is not a duration: write e.g. \"30s\", \"5m\", \"1h30m\", \"2d\"");
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => DAY,
            _ => return Err(fail()),
        };
        let n: i64 = digits.parse().map_err(|_| fail())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(fail)?;
    }
    if !digits.is_empty() || total <= 0 {
        return Err(fail());
    }
    Ok(total)
}

fn parse_hhmm(text: &str) -> Result<i64, String> {
    let fail = || format!("{text:?} is not a time of day: write HH:MM (UTC), e.g. \"12:00\"");
    let (h, m) = text.split_once(':').ok_or_else(fail)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(fail());
    }
    let h: i64 = h.parse().map_err(|_| fail())?;
    let m: i64 = m.parse().map_err(|_| fail())?;
    if !(0..24).contains(&h) || !(0..60).contains(&m) {
        return Err(fail());
    }
    Ok(h * 3600 + m * 60)
}

fn parse_weekday(text: &str) -> Result<i64, String> {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    DAYS.iter()
        .position(|d| d.eq_ignore_ascii_case(text))
        .map(|i| i as i64)
        .ok_or_else(|| format!("{text:?} is not a day of the week: write Mon, Tue, ... Sun"))
}

/// An instant: `YYYY-MM-DD` (00:00 UTC that day) or RFC 3339 with `Z` or an offset, whose
/// seconds may be left out (`2027-01-10T09:00Z`).
pub fn parse_instant(text: &str) -> Result<i64, String> {
    if text.len() == 10 {
        return crate::time::parse_date(text)
            .map(|days| days * DAY)
            .map_err(|_| format!("{text:?} is not a date: write YYYY-MM-DD (00:00 UTC)"));
    }
    let with_seconds = match text.get(..16).zip(text.get(16..)) {
        Some((minutes, zone)) if zone.starts_with(['Z', 'z', '+', '-']) => {
            format!("{minutes}:00{zone}")
        }
        _ => text.to_string(),
    };
    crate::time::parse_rfc3339(&with_seconds)
        .map(|micros| micros.div_euclid(1_000_000))
        .map_err(|e| format!("{text:?}: {e}: write YYYY-MM-DD or e.g. \"2027-01-10T09:00:00Z\""))
}

/// One brownout entry.
pub fn parse_window(text: &str) -> Result<Window, String> {
    let usage = "write \"daily HH:MM for DUR\", \"weekly Mon HH:MM for DUR\" or \
                 \"2027-01-10T09:00:00Z for DUR\" (times in UTC)";
    let words: Vec<&str> = text.split_whitespace().collect();
    let (repeat, len) = match words.as_slice() {
        ["daily", at, "for", len] => (Repeat::Daily(parse_hhmm(at)?), parse_duration(len)?),
        ["weekly", day, at, "for", len] => (
            Repeat::Weekly(parse_weekday(day)? * DAY + parse_hhmm(at)?),
            parse_duration(len)?,
        ),
        [at, "for", len] => (Repeat::Once(parse_instant(at)?), parse_duration(len)?),
        _ => return Err(format!("{text:?} is not a brownout window: {usage}")),
    };
    let (max, what) = match repeat {
        Repeat::Daily(_) => (DAY - 1, "a daily window must be shorter than a day"),
        Repeat::Weekly(_) => (WEEK - 1, "a weekly window must be shorter than a week"),
        Repeat::Once(_) => (MAX_ONCE, "a one-off window lasts at most 31d"),
    };
    if len > max {
        return Err(format!(
            "{text:?}: {what} (for good, use stage = \"retired\")"
        ));
    }
    Ok(Window {
        repeat,
        len,
        text: words.join(" "),
    })
}

/// A unit name in `exempt_units`: `NAME.service` or `NAME.scope`.
pub fn check_unit(text: &str) -> Result<(), String> {
    let ok = (text.ends_with(".service") || text.ends_with(".scope"))
        && text.len() <= 256
        && !text.starts_with('.')
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.@\\".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{text:?} is not a unit name: write e.g. \"jumpserver.service\" or \"docker-ID.scope\""
        ))
    }
}

// The running state, shared by every generation of the rules.

/// One rule's state as the core sees it, shared by every generation of the rules that has a
/// rule with this `from` (so a node found before a reload follows the new stage too).
#[derive(Debug)]
pub struct RuleState {
    lifecycle: RwLock<Arc<Lifecycle>>,
    /// The lifecycle serves now and always: no lock, nothing else to check.
    plain: AtomicBool,
    /// Seconds since the epoch of the latest lookup or open; 0: none yet.
    last_access: AtomicI64,
    /// What the edge thread last made the kernel's cache agree with (a `Now` code).
    applied: AtomicU8,
}

impl RuleState {
    /// Notes an access at `now`: one load, and a store at most once a second.
    pub fn touch(&self, now: i64) {
        if self.last_access.load(Ordering::Relaxed) != now {
            self.last_access.store(now, Ordering::Relaxed);
        }
    }

    pub fn is_plain(&self) -> bool {
        self.plain.load(Ordering::Relaxed)
    }

    pub fn lifecycle(&self) -> Arc<Lifecycle> {
        Arc::clone(&self.lifecycle.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn last_access(&self) -> Option<i64> {
        Some(self.last_access.load(Ordering::Relaxed)).filter(|&t| t != 0)
    }

    /// What the kernel's cache was last made to agree with.
    pub fn applied(&self) -> Now {
        Now::from_code(self.applied.load(Ordering::Relaxed))
    }

    /// A new lifecycle answers requests at once; `applied` follows once the edge thread has
    /// dropped the cached entries (a reload drops them too, see `daemon.rs`).
    fn set(&self, lifecycle: &Lifecycle) {
        *self.lifecycle.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(lifecycle.clone());
        self.plain.store(lifecycle.is_plain(), Ordering::Relaxed);
    }
}

/// Rule states by `from`. A process serves one mount, so one map; it holds an entry per
/// distinct `from` the config ever had (root's file, not a caller's input).
static REGISTRY: Mutex<BTreeMap<String, Arc<RuleState>>> = Mutex::new(BTreeMap::new());

/// The state of the rule on `from`, now with `lifecycle` (a new generation of the rules).
pub fn state_for(from: &str, lifecycle: &Lifecycle) -> Arc<RuleState> {
    let mut registry = lock(&REGISTRY);
    let mut created = false;
    let state = registry.entry(from.to_string()).or_insert_with(|| {
        created = true;
        Arc::new(RuleState {
            lifecycle: RwLock::new(Arc::new(Lifecycle::default())),
            plain: AtomicBool::new(true),
            last_access: AtomicI64::new(0),
            applied: AtomicU8::new(Now::Serve.code()),
        })
    });
    state.set(lifecycle);
    if created {
        // At start the kernel has cached nothing: nothing to drop, no change to tell.
        state
            .applied
            .store(lifecycle.at(now_secs()).code(), Ordering::Relaxed);
    }
    Arc::clone(state)
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The answer to one access of a rule that is not plain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Serve,
    Warn,
    Brownout,
    Retired,
}

/// Decides one access by `uid` (process `pid`, as FUSE gives it) at `now`. Exemptions apply to
/// brownout windows only; an exempt caller is still warned.
pub fn decide(lifecycle: &Lifecycle, now: i64, uid: u32, pid: u32) -> Verdict {
    match lifecycle.at(now) {
        Now::Serve => Verdict::Serve,
        Now::Warn => Verdict::Warn,
        Now::Retired => Verdict::Retired,
        Now::Brownout => {
            let exempt = lifecycle.exempt_uids.contains(&uid)
                || (!lifecycle.exempt_units.is_empty()
                    && unit_of(pid).is_some_and(|u| lifecycle.exempt_units.contains(&u)));
            if exempt {
                Verdict::Warn
            } else {
                Verdict::Brownout
            }
        }
    }
}

/// The systemd unit a process runs in, as the audit log names it (`audit/proc.rs`): the
/// outermost unit of its cgroup path (`/system.slice/jumpserver.service` gives
/// `jumpserver.service`; a user session gives `user@UID.service`). The outermost, because
/// below a user's manager the user names the cgroups: a user cannot make
/// `system.slice/NAME.service`, but can make `user@1000.service/app.slice/NAME.service`.
pub fn unit_of(pid: u32) -> Option<String> {
    crate::audit::unit_of(pid)
}

#[cfg(test)]
fn unit_in_cgroup(text: &str) -> Option<String> {
    crate::audit::parse_cgroup(text.as_bytes()).unit
}

// Warnings to the journal.

/// The journal's `MESSAGE_ID` of every warning: `journalctl MESSAGE_ID=...` finds them all.
pub const MESSAGE_ID: &str = "e0c9dbe0f3fd4fd3895875d819e5f604";
/// Where journald listens, unless `[stages] journal_socket` says otherwise.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// A (process, path) is warned once per this many seconds.
const WARN_WINDOW: i64 = 3600;
/// The (process, path) pairs remembered within a window: 8 bytes each.
const MAX_SEEN: usize = 16 * 1024;
/// Warnings sent per second, and the burst allowed.
const WARN_RATE: i64 = 20;
const WARN_BURST: i64 = 200;

/// What one warning says.
pub struct Warning<'a> {
    /// The calling thread, as FUSE gives it.
    pub pid: u32,
    pub legacy: &'a Path,
    pub real: Option<&'a Path>,
    pub rule: &'a str,
}

struct Warner {
    socket: Option<PathBuf>,
    sender: Option<UnixDatagram>,
    hasher: Option<std::collections::hash_map::RandomState>,
    /// Keys are already hashed (with a random seed), so the set hashes them plainly.
    seen: HashSet<u64, std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>>,
    window: i64,
    tokens: i64,
    refilled: i64,
    /// First accesses not warned in this window (cache full, over the rate, send failed).
    suppressed: u64,
}

static WARNER: Mutex<Warner> = Mutex::new(Warner {
    socket: None,
    sender: None,
    hasher: None,
    seen: HashSet::with_hasher(std::hash::BuildHasherDefault::new()),
    window: 0,
    tokens: WARN_BURST,
    refilled: 0,
    suppressed: 0,
});

/// `[stages] journal_socket`: where warnings go (the journal's own socket by default).
pub fn set_journal_socket(path: Option<PathBuf>) {
    let mut w = lock(&WARNER);
    w.socket = path;
    w.sender = None;
}

/// Sends `warning` unless this (process, path) was warned in the current window, the memory
/// for remembering pairs is full, or warnings are over their rate. Never blocks: a journal
/// that does not keep up loses warnings (counted, and told in the next window's first).
pub fn warn(warning: &Warning<'_>) {
    let now = now_secs();
    let mut w = lock(&WARNER);
    if now - w.window >= WARN_WINDOW {
        let suppressed = std::mem::take(&mut w.suppressed);
        w.window = now;
        w.seen = HashSet::default();
        if suppressed > 0 {
            let text = format!(
                "relocfs: {suppressed} first accesses of retiring legacy paths were not \
                 reported in the last hour (over the rate or the memory for them)"
            );
            w.send(&[("MESSAGE", text.as_bytes())], &text);
        }
    }
    let hasher = w.hasher.get_or_insert_with(Default::default).clone();
    let key = hasher.hash_one((warning.pid, warning.legacy.as_os_str().as_bytes()));
    if w.seen.contains(&key) {
        return;
    }
    if w.seen.len() >= MAX_SEEN {
        w.suppressed += 1;
        return;
    }
    let elapsed = now - w.refilled;
    if elapsed > 0 {
        w.tokens = (w.tokens + elapsed.saturating_mul(WARN_RATE)).min(WARN_BURST);
        w.refilled = now;
    }
    if w.tokens == 0 {
        w.suppressed += 1;
        return;
    }
    w.tokens -= 1;
    w.seen.insert(key);
    let pid = tgid_of(warning.pid).unwrap_or(warning.pid);
    let legacy = warning.legacy.as_os_str();
    let real = warning.real.map_or(OsStr::new(""), Path::as_os_str);
    let text = format!(
        "relocfs: process {pid} used the legacy path {} (rule {}{}); it is being retired",
        crate::config::printable(&legacy.to_string_lossy()),
        crate::config::printable(warning.rule),
        match warning.real {
            Some(r) => format!(
                ", now at {}",
                crate::config::printable(&r.to_string_lossy())
            ),
            None => String::new(),
        }
    );
    let pid = pid.to_string();
    let fields: [(&str, &[u8]); 6] = [
        ("MESSAGE", text.as_bytes()),
        ("OBJECT_PID", pid.as_bytes()),
        ("RELOCFS_LEGACY_PATH", legacy.as_bytes()),
        ("RELOCFS_REAL_PATH", real.as_bytes()),
        ("RELOCFS_RULE", warning.rule.as_bytes()),
        ("SYSLOG_IDENTIFIER", b"relocfs"),
    ];
    if !w.send(&fields, &text) {
        w.suppressed += 1;
    }
}

impl Warner {
    /// One datagram in the journal's native protocol, or (no journal) a syslog line.
    fn send(&mut self, fields: &[(&str, &[u8])], text: &str) -> bool {
        let datagram = journal_datagram(fields);
        let socket = self
            .socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(JOURNAL_SOCKET));
        if self.sender.is_none() {
            self.sender = UnixDatagram::unbound()
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .ok();
        }
        let Some(sender) = &self.sender else {
            return false;
        };
        match sender.send_to(&datagram, &socket) {
            Ok(_) => true,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ECONNREFUSED)) => {
                crate::sys::syslog(libc::LOG_DAEMON | libc::LOG_WARNING, text);
                true
            }
            Err(_) => false,
        }
    }
}

/// The native journal protocol: `KEY=value\n` for simple fields; a value that may hold a
/// newline (a path, a message quoting one) as `KEY\n`, its length (u64 little-endian), the
/// bytes and `\n`.
fn journal_datagram(fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(format!("MESSAGE_ID={MESSAGE_ID}\nPRIORITY=4\n").as_bytes());
    for (key, value) in fields {
        out.extend_from_slice(key.as_bytes());
        if value.contains(&b'\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            out.push(b'=');
        }
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// The process (thread group) of thread `tid`.
fn tgid_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

// The edge thread.

/// What the edge thread needs from the filesystem.
pub trait Edges: Send + Sync {
    /// The current rules' states, by `from`.
    fn stage_states(&self) -> Vec<(String, Arc<RuleState>)>;
    /// The names directly below the mount's root whose cached entries cover the rule on
    /// `from` (its first component; every name in the root for a rule on "/").
    fn names_covering(&self, from: &str) -> Vec<std::ffi::OsString>;
}

/// Starts the thread that, at every window edge and retirement date, drops the kernel's
/// cached entries of the rules whose answer changes, so a change takes effect at once (and
/// back). It runs outside every request handler (see FUSE-NOTES) and ends with the mount.
pub fn watch_edges<E: Edges + 'static>(
    fs: Weak<E>,
    notifier: fuser::Notifier,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("stages".into())
        .spawn(move || {
            while let Some(fs) = fs.upgrade() {
                let next = apply_edges(&*fs, &notifier);
                drop(fs);
                // At most a second, so a reload's new windows are seen without a wake-up call.
                let wait = next
                    .and_then(|t| t.duration_since(SystemTime::now()).ok())
                    .map_or(Duration::from_secs(1), |d| d.min(Duration::from_secs(1)));
                std::thread::sleep(wait + Duration::from_millis(1));
            }
        })
}

/// One pass: brings every rule's applied state to what it is now, dropping cached entries of
/// those that changed. Returns the next edge.
fn apply_edges(fs: &dyn Edges, notifier: &fuser::Notifier) -> Option<SystemTime> {
    let now = now_secs();
    let mut next: Option<i64> = None;
    let mut changed = Vec::new();
    for (from, state) in fs.stage_states() {
        let lifecycle = state.lifecycle();
        let at = lifecycle.at(now);
        if state.applied() != at {
            changed.push((from, state, at));
        }
        if let Some(edge) = lifecycle.next_edge(now) {
            next = Some(next.map_or(edge, |n| n.min(edge)));
        }
    }
    for (from, state, at) in changed {
        // Requests are answered by the lifecycle itself; `applied` says the kernel's cache
        // agrees, so it is set once the entries are dropped.
        let names: HashMap<_, _> = fs
            .names_covering(&from)
            .into_iter()
            .map(|n| (n, ()))
            .collect();
        for name in names.keys() {
            match notifier.inval_entry(fuser::INodeNo(crate::node::ROOT_ID), name) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => log::warn!("cannot drop cached entry {name:?}: {e}"),
            }
        }
        let _ = notifier.inval_inode(fuser::INodeNo(crate::node::ROOT_ID), 0, 0);
        state.applied.store(at.code(), Ordering::Relaxed);
        log::info!("rule {from}: now {}", at.name());
    }
    next.and_then(|t| UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(t).ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        parse_instant(text).unwrap()
    }

    #[test]
    fn windows_parse_and_bad_ones_say_why() {
        let w = parse_window("daily 12:00 for 5m").unwrap();
        assert_eq!((w.repeat, w.len), (Repeat::Daily(12 * 3600), 300));
        let w = parse_window("weekly Tue 09:30 for 1h30m").unwrap();
        assert_eq!(w.repeat, Repeat::Weekly(DAY + 9 * 3600 + 30 * 60));
        let w = parse_window("2027-01-10T09:00:00Z for 1h").unwrap();
        assert_eq!(w.repeat, Repeat::Once(at("2027-01-10T09:00:00Z")));
        // Seconds may be left out.
        let w = parse_window("2027-01-10T09:00Z for 1h").unwrap();
        assert_eq!(w.repeat, Repeat::Once(at("2027-01-10T09:00:00Z")));
        // An offset is honoured.
        let w = parse_window("2027-01-10T10:00:00+01:00 for 1h").unwrap();
        assert_eq!(w.repeat, Repeat::Once(at("2027-01-10T09:00:00Z")));
        for bad in [
            "daily 12:00",
            "daily 25:00 for 5m",
            "daily 12:00 for 0m",
            "daily 12:00 for 5x",
            "daily 12:00 for 24h",
            "weekly Someday 12:00 for 1h",
            "2027-13-10T09:00:00Z for 1h",
            "2027-01-10T09:00:00Z for 40d",
            "now for 1h",
            "",
        ] {
            let e = parse_window(bad).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
            assert!(e.contains("write") || e.contains("use"), "{bad}: {e}");
        }
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn daily_and_weekly_windows_have_edges_at_the_right_instants() {
        let w = parse_window("daily 23:50 for 20m").unwrap();
        let day = at("2027-01-10");
        // Crossing midnight: inside just after 00:00, the window opened the day before.
        assert!(w.contains(day + 5 * 60));
        assert_eq!(w.around(day + 5 * 60), Some((day - 600, day + 600)));
        assert!(!w.contains(day + 600));
        assert_eq!(
            w.around(day + 600),
            Some((day + DAY - 600, day + DAY + 600))
        );
        // 2027-01-11 is a Monday.
        let w = parse_window("weekly Mon 00:00 for 1h").unwrap();
        let monday = at("2027-01-11");
        assert!(w.contains(monday));
        assert!(!w.contains(monday - 1));
        assert_eq!(w.around(monday - 1), Some((monday, monday + 3600)));
        assert_eq!(
            w.around(monday + 3600),
            Some((monday + WEEK, monday + WEEK + 3600))
        );
    }

    #[test]
    fn a_lifecycle_brownouts_inside_windows_warns_between_and_retires_on_its_date() {
        let start = at("2027-01-10T09:00:00Z");
        let lc = Lifecycle {
            stage: Stage::Brownout,
            windows: vec![parse_window("2027-01-10T09:00:00Z for 1h").unwrap()],
            retire_after: Some(at("2027-02-01")),
            ..Lifecycle::default()
        };
        assert!(!lc.is_plain());
        assert_eq!(lc.at(start - 1), Now::Warn);
        assert_eq!(lc.at(start), Now::Brownout);
        assert_eq!(lc.at(start + 3600), Now::Warn);
        assert_eq!(lc.next_edge(start - 10), Some(start));
        assert_eq!(lc.next_edge(start), Some(start + 3600));
        assert_eq!(lc.next_edge(start + 3600), Some(at("2027-02-01")));
        assert_eq!(lc.next_window(start - 10), Some((start, start + 3600)));
        assert_eq!(lc.next_window(start + 3600), None);
        assert_eq!(lc.at(at("2027-02-01")), Now::Retired);
        assert_eq!(lc.next_edge(at("2027-02-01")), None);
        assert!(Lifecycle::default().is_plain());
        assert_eq!(Lifecycle::default().next_edge(start), None);
    }

    #[test]
    fn exemptions_serve_in_a_window_and_nothing_else() {
        let lc = Lifecycle {
            stage: Stage::Brownout,
            windows: vec![parse_window("daily 00:00 for 23h59m").unwrap()],
            exempt_uids: vec![998],
            ..Lifecycle::default()
        };
        let now = at("2027-01-10T12:00:00Z");
        assert_eq!(decide(&lc, now, 998, 1), Verdict::Warn);
        assert_eq!(decide(&lc, now, 1000, 1), Verdict::Brownout);
        let retired = Lifecycle {
            stage: Stage::Retired,
            exempt_uids: vec![998],
            ..Lifecycle::default()
        };
        assert_eq!(decide(&retired, now, 998, 1), Verdict::Retired);
    }

    #[test]
    fn the_unit_is_the_outermost_one_so_a_user_cannot_name_a_system_unit() {
        let unit = |path: &str| unit_in_cgroup(&format!("0::{path}\n"));
        assert_eq!(
            unit("/system.slice/jumpserver.service").as_deref(),
            Some("jumpserver.service")
        );
        assert_eq!(
            unit("/user.slice/user-1000.slice/user@1000.service/app.slice/jumpserver.service")
                .as_deref(),
            Some("user@1000.service")
        );
        assert_eq!(unit("/"), None);
        assert_eq!(
            unit_in_cgroup("9:name=systemd:/system.slice/x.service\n0::/\n").as_deref(),
            Some("x.service")
        );
        assert_eq!(unit_in_cgroup("9:name=systemd:/\n0::/\n"), None);
        assert!(check_unit("jumpserver.service").is_ok());
        assert!(check_unit("docker-0123abc.scope").is_ok());
        assert!(check_unit("jumpserver").is_err());
        assert!(check_unit("a/b.service").is_err());
    }

    #[test]
    fn journal_fields_with_newlines_are_length_prefixed() {
        let d = journal_datagram(&[("RELOCFS_LEGACY_PATH", b"/a\nb"), ("X", b"y")]);
        let mut want =
            format!("MESSAGE_ID={MESSAGE_ID}\nPRIORITY=4\nRELOCFS_LEGACY_PATH\n").into_bytes();
        want.extend_from_slice(&4u64.to_le_bytes());
        want.extend_from_slice(b"/a\nb\nX=y\n");
        assert_eq!(d, want);
    }

    #[test]
    fn the_state_follows_a_new_lifecycle_and_keeps_its_last_access() {
        let from = "/stage-unit-test";
        let s = state_for(from, &Lifecycle::default());
        assert!(s.is_plain());
        s.touch(1234);
        let retired = Lifecycle {
            stage: Stage::Retired,
            ..Lifecycle::default()
        };
        let t = state_for(from, &retired);
        assert!(Arc::ptr_eq(&s, &t));
        assert!(!s.is_plain());
        assert_eq!(s.lifecycle().stage, Stage::Retired);
        assert_eq!(s.last_access(), Some(1234));
    }

    fn config(rule_keys: &str) -> Result<crate::config::Config, String> {
        let text = format!("[[map]]\nfrom = \"/keys\"\nto = \"/srv/keys\"\n{rule_keys}");
        crate::config::parse(&text, Path::new("/etc/relocfs/x.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_config_keys_build_a_lifecycle() {
        let c = config(
            "stage = \"brownout\"\nbrownout = [\"daily 12:00 for 5m\", \"weekly Fri 09:00 for 1h\"]\n\
             retire_after = \"2027-02-01\"\nexempt_uids = [998]\nexempt_units = [\"backup.service\"]\n\
             [stages]\njournal_socket = \"/run/test/journal\"\n",
        )
        .unwrap();
        let lc = &c.rules[0].stage;
        assert_eq!(lc.stage, Stage::Brownout);
        assert_eq!(lc.windows.len(), 2);
        assert_eq!(lc.windows[1].text(), "weekly Fri 09:00 for 1h");
        assert_eq!(lc.retire_after, Some(at("2027-02-01")));
        assert_eq!(lc.exempt_uids, vec![998]);
        assert_eq!(lc.exempt_units, vec!["backup.service".to_string()]);
        assert_eq!(
            c.stages.journal_socket.as_deref(),
            Some(Path::new("/run/test/journal"))
        );
        assert!(config("").unwrap().rules[0].stage.is_plain());
    }

    /// Every refusal is one line naming the file, the line, the rule and the bad entry.
    #[test]
    fn bad_lifecycle_keys_are_refused_naming_the_rule_and_the_entry() {
        for (keys, wanted) in [
            ("stage = \"paused\"\n", "stage = \"paused\" is not a stage"),
            ("stage = \"brownout\"\n", "needs windows"),
            (
                "stage = \"brownout\"\nbrownout = [\"daily 12:00 for 5m\", \"daily 25:00 for 5m\"]\n",
                "brownout entry \"25:00\" is not a time of day",
            ),
            ("stage = \"warn\"\nbrownout = [\"daily 12:00 for 5m\"]\n", "set stage = \"brownout\""),
            ("exempt_uids = [1]\n", "`exempt_uids` applies to brownout windows"),
            (
                "stage = \"brownout\"\nbrownout = [\"daily 12:00 for 5m\"]\nexempt_uids = [-1]\n",
                "exempt_uids entry -1 is not a uid",
            ),
            (
                "stage = \"brownout\"\nbrownout = [\"daily 12:00 for 5m\"]\nexempt_units = [\"sshd\"]\n",
                "exempt_units entry \"sshd\" is not a unit name",
            ),
            ("retire_after = \"2027-02-30\"\n", "retire_after = \"2027-02-30\" is not a date"),
        ] {
            let e = config(keys).unwrap_err();
            assert!(e.starts_with("/etc/relocfs/x.toml:"), "{e}");
            assert!(e.contains("map #1 (from = \"/keys\")"), "{e}");
            assert!(e.contains(wanted), "{keys}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let deny = crate::config::parse(
            "[[map]]\nfrom = \"/k\"\ndeny = true\nstage = \"warn\"\n",
            Path::new("/x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            deny.contains("a deny rule has no lifecycle: remove `stage`"),
            "{deny}"
        );
    }
}
