//! Metrics for dashboards and alerts without a network listener: per-rule counters that request
//! threads bump with atomics, and a thread that rewrites a Prometheus node_exporter textfile.
//!
//! The file (`[metrics] textfile`, e.g. `/var/lib/prometheus/node-exporter/relocfs.prom`) is
//! replaced every `[metrics] interval` and once more at stop, never written in place: a new
//! file is created beside it (`O_CREAT|O_EXCL|O_NOFOLLOW` below the directory's handle, so a
//! name planted there fails the create instead of redirecting it), written, synced, made 0644
//! and renamed over the old one. A reader sees the old file or the new one, never a part.
//! The directory must pass the audit log's trust rule (`audit::LogPlace`): owned by root or
//! the daemon's user, writable by nobody else unless sticky. Nothing at the file's name is
//! ever opened, so whatever an attacker leaves there is simply replaced.
//!
//! One file per mount: a lock file beside it (`.NAME.lock`, 0600, kept) is held for the
//! daemon's life, and a second mount given the same file is refused. Every series carries the
//! `mountpoint` label so files of several mounts merge cleanly.
//!
//! Labels are few and bounded: `mountpoint` (one per file), `rule` (the config's `from`s,
//! `(none)` for operations outside any rule), `result` ([`RESULTS`]), `stage` ([`STAGES`]),
//! `transport`. Never a pid, path, process name or uid: an unprivileged user must not be able
//! to grow the file or node_exporter's memory.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write as _};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::audit::{AuditLog, LogPlace};
use crate::config::Rule;
use crate::fs::Fs;
use crate::node::{lock, Node};
use crate::prefix::RuleId;
use crate::rules::Rules;
use crate::sys;
use crate::time::{self, MICROS_PER_SEC};

/// The `result` label's values: success, the refusals an operator acts on, and the rest.
pub const RESULTS: [&str; 7] = [
    "ok", "ENOENT", "EACCES", "EPERM", "EROFS", "EEXIST", "other",
];

/// The `stage` label's values (see `relocfs_rule_stage`).
pub const STAGES: [&str; 4] = ["serve", "warn", "brownout", "retired"];

/// The `rule` label of operations outside any rule (a miss among the virtual directories). A
/// rule's `from` always starts with `/`, so this never names one.
pub const NO_RULE: &str = "(none)";

/// The stage a rule is in, for `relocfs_rule_stage`: as configured, or `retired` once its
/// `retire_after` has passed. (Whether a brownout window is open right now is `relocfs
/// status`'s business; a dashboard wants the stage the operator chose.)
fn stage_of(rule: &Rule) -> &'static str {
    let life = &rule.stage;
    if life
        .retire_after
        .is_some_and(|t| crate::stage::now_secs() >= t)
    {
        return "retired";
    }
    life.stage.name()
}

fn result_index(result: &str) -> usize {
    RESULTS
        .iter()
        .position(|r| *r == result)
        .unwrap_or(RESULTS.len() - 1)
}

/// One rule's counters, shared by every generation of the rules that has it.
#[derive(Default)]
struct RuleCounters {
    by_result: [AtomicU64; RESULTS.len()],
    /// Microseconds since the epoch of the latest operation; 0: none since start.
    last_micros: AtomicI64,
}

impl RuleCounters {
    fn add(&self, result: &str, now: i64) {
        self.by_result[result_index(result)].fetch_add(1, Ordering::Relaxed);
        self.last_micros.fetch_max(now, Ordering::Relaxed);
    }
}

/// Counters by rule generation: `RuleId` indexes the rules of that generation.
type ByGeneration = Vec<(u32, Arc<[Arc<RuleCounters>]>)>;

/// How many rule generations keep a fast-path table (nodes of older ones take the lock).
const GENERATIONS: usize = 4;

/// The counters. Request threads only read-lock `generations` and add to atomics; the lock
/// `by_rule` is taken once per rule generation, and by the writer thread.
#[derive(Default)]
pub struct Metrics {
    /// Counters by the rule's `from`, across reloads: bounded by the rules configured.
    by_rule: Mutex<HashMap<String, Arc<RuleCounters>>>,
    generations: RwLock<ByGeneration>,
    no_rule: RuleCounters,
    /// The rules the file lists (the current config's), kept for the write at stop.
    listed: Mutex<Vec<Rule>>,
}

impl Metrics {
    /// Counts one audited operation on `node` (and `name` below it) with this result name
    /// (`ok` or an errno name).
    pub fn count(&self, node: &Node, name: Option<&OsStr>, result: &str) {
        let now = time::micros_since_epoch(SystemTime::now());
        let Some(rule) = rule_of(node, name) else {
            self.no_rule.add(result, now);
            return;
        };
        let rules = &node.rules;
        {
            let generations = self.generations.read().unwrap_or_else(|p| p.into_inner());
            if let Some((_, table)) = generations.iter().find(|(g, _)| *g == rules.generation) {
                if let Some(c) = table.get(rule.0 as usize) {
                    c.add(result, now);
                    return;
                }
            }
        }
        let table = self.table_of(rules);
        if let Some(c) = table.get(rule.0 as usize) {
            c.add(result, now);
        }
    }

    /// The counters of every rule of `rules`, indexed by `RuleId`, made once per generation.
    fn table_of(&self, rules: &Rules) -> Arc<[Arc<RuleCounters>]> {
        let table: Arc<[Arc<RuleCounters>]> = {
            let mut by_rule = lock(&self.by_rule);
            rules
                .table
                .rules()
                .iter()
                .map(|r| Arc::clone(by_rule.entry(r.from.clone()).or_default()))
                .collect()
        };
        let mut generations = self.generations.write().unwrap_or_else(|p| p.into_inner());
        if !generations.iter().any(|(g, _)| *g == rules.generation) {
            if generations.len() >= GENERATIONS {
                generations.remove(0);
            }
            generations.push((rules.generation, Arc::clone(&table)));
        }
        table
    }

    /// Sets the rules the file lists (with their stage), even those never used.
    pub fn list_rules(&self, rules: Vec<Rule>) {
        {
            let mut by_rule = lock(&self.by_rule);
            for r in &rules {
                by_rule.entry(r.from.clone()).or_default();
            }
        }
        *lock(&self.listed) = rules;
    }

    /// The textfile's content.
    pub fn render(&self, s: &Snapshot) -> String {
        let mp = label(&s.mountpoint);
        let mut out = String::with_capacity(4096);
        let mut rules: Vec<(String, Arc<RuleCounters>)> = lock(&self.by_rule)
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        rules.sort_by(|a, b| a.0.cmp(&b.0));
        let listed = lock(&self.listed).clone();

        head(
            &mut out,
            "relocfs_accesses_total",
            "counter",
            "Audited operations through the legacy path since the daemon started, by rule and result.",
        );
        let all = rules
            .iter()
            .map(|(r, c)| (label(r), &**c))
            .chain([(label(NO_RULE), &self.no_rule)]);
        for (rule, c) in all.clone() {
            for (i, result) in RESULTS.iter().enumerate() {
                let n = c.by_result[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "relocfs_accesses_total{{mountpoint=\"{mp}\",rule=\"{rule}\",result=\"{result}\"}} {n}"
                );
            }
        }
        head(
            &mut out,
            "relocfs_rule_last_access_seconds",
            "gauge",
            "Unix time of the latest operation on the rule since the daemon started (absent: none).",
        );
        for (rule, c) in all {
            let micros = c.last_micros.load(Ordering::Relaxed);
            if micros > 0 {
                let _ = writeln!(
                    out,
                    "relocfs_rule_last_access_seconds{{mountpoint=\"{mp}\",rule=\"{rule}\"}} {}.{:06}",
                    micros / MICROS_PER_SEC,
                    micros % MICROS_PER_SEC
                );
            }
        }
        head(
            &mut out,
            "relocfs_rule_stage",
            "gauge",
            "The stage of each configured rule: 1 for its stage, 0 for the others.",
        );
        for r in &listed {
            let stage = stage_of(r);
            for s in STAGES {
                let _ = writeln!(
                    out,
                    "relocfs_rule_stage{{mountpoint=\"{mp}\",rule=\"{}\",stage=\"{s}\"}} {}",
                    label(&r.from),
                    u8::from(s == stage)
                );
            }
        }
        for (name, help, n) in [
            (
                "relocfs_audit_written_total",
                "Audit events written to the log.",
                s.written,
            ),
            (
                "relocfs_audit_dropped_total",
                "Audit events lost because the writer's queue was full.",
                s.dropped,
            ),
            (
                "relocfs_audit_suppressed_total",
                "Audit events not logged by the per-user rate limit.",
                s.suppressed,
            ),
        ] {
            head(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name}{{mountpoint=\"{mp}\"}} {n}");
        }
        head(
            &mut out,
            "relocfs_start_time_seconds",
            "gauge",
            "Unix time the daemon started serving.",
        );
        let _ = writeln!(
            out,
            "relocfs_start_time_seconds{{mountpoint=\"{mp}\"}} {}",
            s.started_secs
        );
        head(
            &mut out,
            "relocfs_info",
            "gauge",
            "The daemon's version and request transport.",
        );
        let _ = writeln!(
            out,
            "relocfs_info{{mountpoint=\"{mp}\",transport=\"{}\",version=\"{}\"}} 1",
            label(s.transport),
            label(env!("CARGO_PKG_VERSION"))
        );
        out
    }
}

/// What the file says beside the counters, gathered at each write.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub mountpoint: String,
    pub written: u64,
    pub dropped: u64,
    pub suppressed: u64,
    pub started_secs: i64,
    pub transport: &'static str,
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value as the text format wants it: `\`, `"` and newline escaped.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The rule an operation on `node` (and `name` below it) falls under, as the audit log names
/// it (`fs::Fs::describe`): a deeper rule at `name` first, else the node's own.
fn rule_of(node: &Node, name: Option<&OsStr>) -> Option<RuleId> {
    let table = &node.rules.table;
    if let (Some(t), Some(name)) = (node.trie, name) {
        if let Some(rule) = table.child(t, name).and_then(|c| table.rule_at(c)) {
            return Some(rule);
        }
    }
    node.rule()
}

/// The checked place of the textfile, with this mount's lock on it.
pub struct Textfile {
    place: LogPlace,
    /// Held for the daemon's life (see the module comment); `None` where it could not be
    /// taken safely.
    _lock: Option<std::fs::File>,
}

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

impl Textfile {
    /// Checks the place (see the module comment) and takes the mount's lock. The error is
    /// the reason only; callers name the file.
    pub fn open(path: &Path) -> io::Result<Textfile> {
        let place = LogPlace::resolve_replaced(path)?;
        let Some((dir, _)) = place.dir()? else {
            return Err(other(
                "its directory does not exist: create it (node_exporter's \
                 --collector.textfile.directory), owned by root, mode 0755"
                    .into(),
            ));
        };
        let mut name = OsString::from(".");
        name.push(place.name());
        name.push(".lock");
        let lock = lock_file(dir.as_fd(), &name)?;
        if let Some(file) = &lock {
            if !sys::try_lock_exclusive(file)? {
                return Err(other(format!(
                    "is written by another relocfs mount (it holds {}): give each mount a \
                     textfile of its own, e.g. relocfs-NAME.prom",
                    name.to_string_lossy()
                )));
            }
        }
        Ok(Textfile { place, _lock: lock })
    }

    /// Replaces the file with `content` (see the module comment).
    pub fn write(&self, content: &[u8]) -> io::Result<()> {
        self.write_with(content, &mut || temp_name(self.place.name()))
    }

    /// [`Textfile::write`] with the temporary names from `names` (tests choose them).
    fn write_with(&self, content: &[u8], names: &mut dyn FnMut() -> OsString) -> io::Result<()> {
        let Some((dir, _)) = self.place.dir()? else {
            return Err(other("its directory is gone".into()));
        };
        let dir = dir.as_fd();
        for _ in 0..8 {
            let tmp = names();
            let mut file = match sys::create_child(dir, &tmp, libc::O_WRONLY | libc::O_EXCL, 0o600)
            {
                // Taken (planted, or a leftover): another random name.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                Err(e) => return Err(e),
                Ok(file) => file,
            };
            let written = file
                .write_all(content)
                .and_then(|()| file.set_permissions(std::fs::Permissions::from_mode(0o644)))
                .and_then(|()| file.sync_data())
                .and_then(|()| sys::rename_child(dir, &tmp, dir, self.place.name(), 0));
            if written.is_err() {
                // Ours (O_EXCL) and, in a sticky directory, nobody else's to remove.
                let _ = sys::unlink_child(dir, &tmp, 0);
            }
            return written;
        }
        Err(other(
            "every temporary name tried was taken: someone keeps creating them".into(),
        ))
    }
}

/// `.NAME.RANDOM.tmp`: hidden, and not `*.prom`, so node_exporter never reads it half-written.
fn temp_name(name: &OsStr) -> OsString {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_i64(time::micros_since_epoch(SystemTime::now()));
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{:016x}.tmp", h.finish()));
    tmp
}

/// Opens (or creates, 0600) the lock file: never through a symlink, never a FIFO or device
/// (an `O_PATH` look first), and only a file of the daemon's user. `None` when the name holds
/// something else (only someone who can write the directory, then sticky, can put it there):
/// the mount goes on without the lock rather than be stopped by them.
fn lock_file(dir: std::os::fd::BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<std::fs::File>> {
    for _ in 0..4 {
        match sys::create_child(dir, name, libc::O_RDONLY | libc::O_EXCL, 0o600) {
            Ok(file) => return Ok(Some(file)),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
        let fd = match sys::open_child(dir, name) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        let st = sys::fstat(fd.as_fd())?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_uid != sys::geteuid() {
            log::warn!(
                "[metrics] {} is not a file of uid {}: not locking the textfile (two mounts \
                 given the same textfile are not detected)",
                name.to_string_lossy(),
                sys::geteuid()
            );
            return Ok(None);
        }
        return sys::reopen(fd.as_fd(), libc::O_RDONLY).map(Some);
    }
    Err(other(format!(
        "{} keeps changing while being opened",
        name.to_string_lossy()
    )))
}

/// `relocfs check` and the mount, before forking: the textfile's place passes the checks
/// (nothing is created or locked).
pub fn probe(path: &Path) -> Result<(), String> {
    let fail = |e: io::Error| format!("[metrics] textfile {}: {e}", path.display());
    let place = LogPlace::resolve_replaced(path).map_err(fail)?;
    match place.dir().map_err(fail)? {
        Some(_) => Ok(()),
        None => Err(format!(
            "[metrics] textfile {}: its directory does not exist: create it (node_exporter's \
             --collector.textfile.directory), owned by root, mode 0755",
            path.display()
        )),
    }
}

/// Where the writer thread reads what the file says beside the counters.
pub struct Source {
    pub fs: Weak<Fs>,
    pub audit: Weak<AuditLog>,
    pub mountpoint: PathBuf,
    pub transport: &'static str,
    pub started: SystemTime,
}

/// The writer thread; [`Writer::stop`] writes the file a last time and joins it.
pub struct Writer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the thread that rewrites `file` now and every `interval`.
pub fn start(
    file: Textfile,
    interval: Duration,
    metrics: Arc<Metrics>,
    source: Source,
) -> io::Result<Writer> {
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let flag = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let mut last_error: Option<String> = None;
            loop {
                let stopping = *lock(&flag.0);
                write_once(&file, &metrics, &source, &mut last_error);
                if stopping {
                    return;
                }
                let guard = lock(&flag.0);
                // Woken early by `stop`; a spurious wake-up only writes sooner.
                let (guard, _) = flag
                    .1
                    .wait_timeout_while(guard, interval, |stop| !*stop)
                    .unwrap_or_else(|p| p.into_inner());
                drop(guard);
            }
        })?;
    Ok(Writer {
        stop,
        thread: Some(thread),
    })
}

fn write_once(
    file: &Textfile,
    metrics: &Metrics,
    source: &Source,
    last_error: &mut Option<String>,
) {
    if let Some(fs) = source.fs.upgrade() {
        metrics.list_rules(fs.rules());
    }
    let (written, dropped, suppressed) = source
        .audit
        .upgrade()
        .map_or((0, 0, 0), |a| (a.written(), a.dropped(), a.suppressed()));
    let snapshot = Snapshot {
        mountpoint: source.mountpoint.to_string_lossy().into_owned(),
        written,
        dropped,
        suppressed,
        started_secs: time::micros_since_epoch(source.started) / MICROS_PER_SEC,
        transport: source.transport,
    };
    match file.write(metrics.render(&snapshot).as_bytes()) {
        Ok(()) => {
            if last_error.take().is_some() {
                log::info!("[metrics] writing {} again", file.place.path.display());
            }
        }
        Err(e) => {
            // Told once per distinct error, not every interval.
            let e = e.to_string();
            if last_error.as_deref() != Some(e.as_str()) {
                log::warn!("[metrics] cannot write {}: {e}", file.place.path.display());
                *last_error = Some(e);
            }
        }
    }
}

impl Writer {
    /// Writes the file a last time (the final counts) and ends the thread.
    pub fn stop(mut self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::warn!("[metrics] the writer thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Result<crate::config::MetricsConfig, String> {
        let text = format!("[[map]]\nfrom = \"/\"\nto = \"/opt\"\n{text}");
        crate::config::parse(&text, Path::new("/etc/relocfs/x.toml"))
            .map(|c| c.metrics)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn metrics_config_is_validated() {
        let c = config("").unwrap();
        assert_eq!((c.textfile, c.interval), (None, Duration::from_secs(15)));
        let c =
            config("[metrics]\ntextfile = \"/var/lib/n/relocfs.prom\"\ninterval = \"2m\"").unwrap();
        assert_eq!(c.textfile, Some(PathBuf::from("/var/lib/n/relocfs.prom")));
        assert_eq!(c.interval, Duration::from_secs(120));
        for (bad, why) in [
            ("textfile = \"relocfs.prom\"", "not absolute"),
            ("textfile = \"/var/lib//x.prom\"", "not normalised"),
            ("textfile = \"/var/lib/x.txt\"", "does not end in .prom"),
            ("textfile = \"/var/lib/.prom\"", "does not end in .prom"),
            ("interval = \"0s\"", "interval"),
            ("interval = \"2h\"", "interval"),
            ("interval = \"15\"", "interval"),
            ("interval = 15", "invalid type"),
            ("port = 9100", "unknown field"),
        ] {
            let e = config(&format!("[metrics]\n{bad}")).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.starts_with("/etc/relocfs/x.toml:"), "{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn the_stage_series_names_the_configured_stage_or_retired_once_past_its_date() {
        use crate::stage::{Lifecycle, Stage};
        let rule = |stage, retire_after| Rule {
            from: "/keys".into(),
            action: crate::config::Action::Deny,
            stage: Lifecycle {
                stage,
                retire_after,
                ..Lifecycle::default()
            },
        };
        let now = crate::stage::now_secs();
        assert_eq!(stage_of(&rule(Stage::Serve, None)), "serve");
        assert_eq!(stage_of(&rule(Stage::Warn, None)), "warn");
        assert_eq!(
            stage_of(&rule(Stage::Brownout, Some(now + 3600))),
            "brownout"
        );
        assert_eq!(stage_of(&rule(Stage::Warn, Some(now - 1))), "retired");
        assert_eq!(stage_of(&rule(Stage::Retired, None)), "retired");
    }

    /// What one count costs a request thread, alone and with a second thread counting on
    /// the same rule (the contended case).
    #[test]
    #[ignore = "a measurement: cargo test --release --lib metrics::tests::count_cost -- --ignored --nocapture"]
    fn count_cost() {
        use crate::node::{Kind, Link, NodeTable};
        use crate::prefix::PrefixTable;
        let rule = Rule {
            from: "/keys".into(),
            action: crate::config::Action::Deny,
            stage: Default::default(),
        };
        let rules = Arc::new(Rules::new(0, PrefixTable::new(&[rule]), vec![None]));
        let nodes = NodeTable::new(16);
        let fd = sys::open_dir_path(Path::new("/")).unwrap();
        let kind = Kind::Real {
            rule: RuleId(0),
            fd: nodes.slot(fd),
            dev: 0,
            ino: 0,
            format: libc::S_IFREG,
        };
        let link = Link {
            parent: None,
            name: "x".into(),
        };
        let node = Node::new(2, kind, rules, None, link);
        let metrics = Metrics::default();
        const N: u32 = 5_000_000;
        for threads in [1u32, 2] {
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        for _ in 0..N {
                            metrics.count(&node, None, "ok");
                        }
                    });
                }
            });
            let per = start.elapsed() / N;
            println!("{threads} thread(s): {per:?} per count (wall time per thread)");
        }
        let total = metrics.by_rule.lock().unwrap()["/keys"].by_result[0].load(Ordering::Relaxed);
        assert_eq!(total, u64::from(N) * 3);
    }

    /// Whoever can write a sticky directory can plant names there, including the temporary
    /// name the daemon is about to use: a symlink to, or a hard link of, a file of root's.
    /// Neither is opened; the next name is used and the victim is untouched.
    #[test]
    fn planted_temporary_names_are_never_written_through() {
        if sys::geteuid() != 0 {
            eprintln!("skipped: needs root (a root-owned directory under /tmp)");
            return;
        }
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("shared");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let victim = base.path().join("victim");
        std::fs::write(&victim, b"precious\n").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(".t.prom.1.tmp")).unwrap();
        std::fs::hard_link(&victim, dir.join(".t.prom.2.tmp")).unwrap();
        let file = Textfile::open(&dir.join("t.prom")).unwrap();
        let mut n = 0;
        file.write_with(b"x_total 1\n", &mut || {
            n += 1;
            OsString::from(format!(".t.prom.{n}.tmp"))
        })
        .unwrap();
        assert_eq!(n, 3, "the two planted names are passed over");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
        assert_eq!(std::fs::read(dir.join("t.prom")).unwrap(), b"x_total 1\n");
        assert!(std::fs::symlink_metadata(dir.join(".t.prom.1.tmp"))
            .unwrap()
            .file_type()
            .is_symlink());
        // Every name taken: a one-line error, nothing written.
        let err = file
            .write_with(b"x_total 2\n", &mut || OsString::from(".t.prom.2.tmp"))
            .unwrap_err();
        assert!(err.to_string().contains("every temporary name"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label(r#"/a"b\c"#), r#"/a\"b\\c"#);
        assert_eq!(label("/a\nb"), "/a\\nb");
    }

    #[test]
    fn results_are_bounded() {
        assert_eq!(RESULTS[result_index("ok")], "ok");
        assert_eq!(RESULTS[result_index("ENOENT")], "ENOENT");
        assert_eq!(RESULTS[result_index("EXDEV")], "other");
        assert_eq!(RESULTS[result_index("")], "other");
    }

    #[test]
    fn render_lists_every_family_once_with_help_and_type() {
        let m = Metrics::default();
        m.list_rules(vec![Rule {
            from: "/keys".into(),
            action: crate::config::Action::Deny,
            stage: Default::default(),
        }]);
        let text = m.render(&Snapshot {
            mountpoint: "/mnt/\"x\"".into(),
            written: 3,
            dropped: 1,
            suppressed: 2,
            started_secs: 10,
            transport: "dev",
        });
        for family in [
            "relocfs_accesses_total",
            "relocfs_rule_last_access_seconds",
            "relocfs_rule_stage",
            "relocfs_audit_dropped_total",
            "relocfs_info",
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {family} ")).count(),
                1,
                "{family}\n{text}"
            );
        }
        assert!(text.contains(
            "relocfs_rule_stage{mountpoint=\"/mnt/\\\"x\\\"\",rule=\"/keys\",stage=\"serve\"} 1"
        ));
        assert!(text.contains("relocfs_audit_dropped_total{mountpoint=\"/mnt/\\\"x\\\"\"} 1"));
        // Never used since start: no last-access sample.
        assert!(
            !text.contains("relocfs_rule_last_access_seconds{"),
            "{text}"
        );
        assert!(text.ends_with('\n'));
    }
}
