//! The relocfs config file: TOML read and validated into types that cannot hold an invalid setting.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ReadOnly,
    ReadWrite,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Map { to: PathBuf, mode: Mode },
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// "/" or "/a/b": absolute, no empty, `.` or `..` components, no trailing slash.
    pub from: String,
    pub action: Action,
    /// `stage`, `brownout`, `retire_after`, `exempt_uids`, `exempt_units` (see `stage.rs`).
    pub stage: crate::stage::Lifecycle,
}

impl Rule {
    pub fn components(&self) -> Vec<&str> {
        self.from.split('/').filter(|c| !c.is_empty()).collect()
    }
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub log: Option<PathBuf>,
    /// Log each caller's full command line (off: it can hold secrets).
    pub cmdline: bool,
    /// Identical events within this window are written once with a count (zero: off).
    pub collapse_window: Duration,
    /// Memory that events waiting for the writer may hold (`queue_bytes`).
    pub queue_bytes: u64,
    /// Per-uid rate limit in bytes (`rate_limit`, `rate_burst`; rate 0: off).
    pub rate: crate::audit::RateLimit,
    /// How long exit waits for a log that takes no writes (`shutdown_timeout`).
    pub shutdown_timeout: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            log: None,
            cmdline: false,
            collapse_window: Duration::ZERO,
            queue_bytes: crate::audit::DEFAULT_QUEUE_BYTES,
            rate: crate::audit::RateLimit {
                bytes_per_sec: crate::audit::DEFAULT_RATE_LIMIT,
                burst: crate::audit::DEFAULT_RATE_BURST,
            },
            shutdown_timeout: crate::audit::DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}

/// Ranges of the `[audit]` byte counts: the queue holds at least a few largest events, and a
/// burst admits at least one largest event.
const QUEUE_BYTES_RANGE: (i64, i64) = (1 << 20, 1 << 32);
const RATE_LIMIT_RANGE: (i64, i64) = (0, 1 << 40);
const RATE_BURST_RANGE: (i64, i64) = (1 << 16, 1 << 40);

#[derive(Debug, Clone)]
pub struct FuseConfig {
    pub threads: usize,
    /// Kernel passthrough of regular-file I/O (`passthrough = "auto"`), used where the kernel
    /// and the daemon's privileges allow it.
    pub passthrough: bool,
    /// Directory reads carry attributes (`readdirplus = true`).
    pub readdirplus: bool,
    pub attr_timeout: Duration,
    pub entry_timeout: Duration,
    /// How requests travel between the kernel and the daemon (`transport`).
    pub transport: Transport,
}

/// `[fuse] transport` (and `-o transport=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// FUSE over io_uring where the kernel offers it at INIT and rings work in this process;
    /// `/dev/fuse` otherwise.
    #[default]
    Auto,
    /// FUSE over io_uring or no mount.
    IoUring,
    /// `/dev/fuse` reads and writes only.
    Dev,
}

impl Transport {
    pub const CHOICES: &'static str = "\"auto\", \"io_uring\" or \"dev\"";

    pub fn parse(text: &str) -> Option<Transport> {
        match text {
            "auto" => Some(Transport::Auto),
            "io_uring" => Some(Transport::IoUring),
            "dev" => Some(Transport::Dev),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Auto => "auto",
            Transport::IoUring => "io_uring",
            Transport::Dev => "dev",
        }
    }
}

impl Default for FuseConfig {
    fn default() -> Self {
        FuseConfig {
            threads: DEFAULT_THREADS,
            passthrough: true,
            readdirplus: true,
            attr_timeout: DEFAULT_TIMEOUT,
            entry_timeout: DEFAULT_TIMEOUT,
            transport: Transport::Auto,
        }
    }
}

const DEFAULT_THREADS: usize = 2;
const MAX_THREADS: usize = 64;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_TIMEOUT_SECS: f64 = 3600.0;

/// `[metrics]`: the Prometheus node_exporter textfile (see `crate::metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `textfile`: absolute, normalised, ending in `.prom`; `None`: no metrics.
    pub textfile: Option<PathBuf>,
    /// `interval`: how often the file is rewritten.
    pub interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            textfile: None,
            interval: DEFAULT_METRICS_INTERVAL,
        }
    }
}

const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(15);
/// `[metrics] interval` bounds: node_exporter reads the file at each scrape (often 15-60 s);
/// more than once a second gains nothing, and an hour is already staler than any dashboard.
const METRICS_INTERVAL_SECS: (u64, u64) = (1, 3600);

#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub rules: Vec<Rule>,
    pub audit: AuditConfig,
    pub fuse: FuseConfig,
    pub stages: StagesConfig,
    pub metrics: MetricsConfig,
}

/// `[stages]`: where rule-lifecycle warnings go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StagesConfig {
    /// `journal_socket`: the journal's native socket (default
    /// /run/systemd/journal/socket); for tests and containers.
    pub journal_socket: Option<PathBuf>,
}

/// A refusal of the config file, shown to the operator as one line.
#[derive(Debug)]
pub struct ConfigError {
    file: PathBuf,
    line: Option<usize>,
    message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = printable(&self.file.to_string_lossy());
        match self.line {
            Some(line) => write!(f, "{file}:{line}: {}", self.message),
            None => write!(f, "{file}: {}", self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        message: format!("cannot read: {e}"),
    })?;
    parse(&text, path)
}

pub fn parse(text: &str, source: &Path) -> Result<Config, ConfigError> {
    let file = File { text, source };
    let raw: RawConfig = toml::from_str(text)
        .map_err(|e| file.error(e.span(), toml_message(text, e.message(), e.span())))?;

    if raw.map.is_empty() {
        return Err(file.error(None, "no [[map]] rules: add at least one".to_string()));
    }
    let mut rules = Vec::with_capacity(raw.map.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, map) in raw.map.iter().enumerate() {
        let number = index + 1;
        let rule = file.rule(number, map)?;
        if let Some(first) = seen.get(&rule.from) {
            let span = map.get_ref().from.as_ref().map(Spanned::span);
            return Err(file.error(
                span,
                format!(
                    "map #{number} (from = {:?}) is a duplicate: it repeats the `from` of map #{first}: remove or merge one of them",
                    rule.from
                ),
            ));
        }
        seen.insert(rule.from.clone(), number);
        rules.push(rule);
    }

    Ok(Config {
        source: source.to_path_buf(),
        rules,
        audit: file.audit(raw.audit)?,
        fuse: file.fuse(raw.fuse)?,
        stages: file.stages(raw.stages)?,
        metrics: file.metrics(raw.metrics)?,
    })
}

// The file as written, before validation; spans let refusals point at a line.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    map: Vec<Spanned<RawMap>>,
    audit: Option<RawAudit>,
    fuse: Option<RawFuse>,
    stages: Option<RawStages>,
    metrics: Option<RawMetrics>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStages {
    journal_socket: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    textfile: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMap {
    from: Option<Spanned<String>>,
    to: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    deny: Option<Spanned<bool>>,
    stage: Option<Spanned<String>>,
    brownout: Option<Spanned<Vec<Spanned<String>>>>,
    retire_after: Option<Spanned<String>>,
    // Signed so that a negative uid gets our message rather than serde's.
    exempt_uids: Option<Spanned<Vec<Spanned<i64>>>>,
    exempt_units: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    log: Option<Spanned<String>>,
    cmdline: Option<bool>,
    collapse_window: Option<Spanned<f64>>,
    // Signed so that a negative count gets our message rather than serde's.
    queue_bytes: Option<Spanned<i64>>,
    rate_limit: Option<Spanned<i64>>,
    rate_burst: Option<Spanned<i64>>,
    shutdown_timeout: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFuse {
    // Signed so that a negative count gets our message rather than serde's.
    threads: Option<Spanned<i64>>,
    passthrough: Option<Spanned<String>>,
    readdirplus: Option<bool>,
    attr_timeout: Option<Spanned<f64>>,
    entry_timeout: Option<Spanned<f64>>,
    transport: Option<Spanned<String>>,
}

/// The text being validated, for turning spans into line numbers in refusals.
struct File<'a> {
    text: &'a str,
    source: &'a Path,
}

impl File<'_> {
    fn error(&self, span: Option<Range<usize>>, message: String) -> ConfigError {
        // Every refusal says something, on one line, whatever the file held.
        let message = match printable(message.trim()) {
            m if m.is_empty() => "invalid configuration".to_string(),
            m => m,
        };
        ConfigError {
            file: self.source.to_path_buf(),
            line: span.map(|s| line_of(self.text, s.start)),
            message,
        }
    }

    fn rule(&self, number: usize, raw: &Spanned<RawMap>) -> Result<Rule, ConfigError> {
        let header = Some(raw.span());
        let map = raw.get_ref();
        let label = match &map.from {
            Some(from) => format!("map #{number} (from = {:?})", from.get_ref()),
            None => format!("map #{number}"),
        };
        let fail =
            |span: Range<usize>, why: String| self.error(Some(span), format!("{label}: {why}"));

        let Some(from) = &map.from else {
            return Err(self.error(
                header,
                format!("{label}: missing `from`: add the legacy path to redirect, e.g. from = \"/keys\""),
            ));
        };
        check_path("from", from.get_ref()).map_err(|why| fail(from.span(), why))?;

        let deny = map.deny.as_ref().is_some_and(|d| *d.get_ref());
        let action = if deny {
            let extra = [("to", &map.to), ("mode", &map.mode)]
                .into_iter()
                .find_map(|(key, value)| value.as_ref().map(|v| (key, v.span())));
            if let Some((key, span)) = extra {
                return Err(fail(
                    span,
                    format!("a deny rule takes no `to`/`mode`: remove `{key}` or set deny = false"),
                ));
            }
            Action::Deny
        } else {
            let Some(to) = &map.to else {
                return Err(self.error(
                    header,
                    format!("{label}: missing `to`: add the real directory, e.g. to = \"/opt/app\", or set deny = true"),
                ));
            };
            check_path("to", to.get_ref()).map_err(|why| fail(to.span(), why))?;
            let mode = match &map.mode {
                None => Mode::ReadOnly,
                Some(mode) => match mode.get_ref().as_str() {
                    "ro" => Mode::ReadOnly,
                    "rw" => Mode::ReadWrite,
                    other => {
                        return Err(fail(
                            mode.span(),
                            format!("mode = {other:?} is not a mode: write \"ro\" or \"rw\""),
                        ))
                    }
                },
            };
            Action::Map {
                to: PathBuf::from(to.get_ref()),
                mode,
            }
        };
        let stage = self.lifecycle(map, deny, &fail)?;
        Ok(Rule {
            from: from.get_ref().clone(),
            action,
            stage,
        })
    }

    /// A rule's lifecycle keys, each bad entry refused on its own line.
    fn lifecycle(
        &self,
        map: &RawMap,
        deny: bool,
        fail: &dyn Fn(Range<usize>, String) -> ConfigError,
    ) -> Result<crate::stage::Lifecycle, ConfigError> {
        use crate::stage::{self, Lifecycle, Stage};
        let mut lifecycle = Lifecycle::default();
        if deny {
            let keys = [
                ("stage", map.stage.as_ref().map(Spanned::span)),
                ("brownout", map.brownout.as_ref().map(Spanned::span)),
                ("retire_after", map.retire_after.as_ref().map(Spanned::span)),
                ("exempt_uids", map.exempt_uids.as_ref().map(Spanned::span)),
                ("exempt_units", map.exempt_units.as_ref().map(Spanned::span)),
            ];
            if let Some((key, Some(span))) = keys.into_iter().find(|(_, s)| s.is_some()) {
                return Err(fail(
                    span,
                    format!(
                        "a deny rule has no lifecycle: remove `{key}` (deny is already the end)"
                    ),
                ));
            }
            return Ok(lifecycle);
        }
        if let Some(raw) = &map.stage {
            lifecycle.stage = Stage::parse(raw.get_ref()).ok_or_else(|| {
                fail(
                    raw.span(),
                    format!(
                        "stage = {:?} is not a stage: write \"serve\", \"warn\", \"brownout\" or \"retired\"",
                        raw.get_ref()
                    ),
                )
            })?;
        }
        if let Some(raw) = &map.retire_after {
            let t = stage::parse_instant(raw.get_ref())
                .map_err(|why| fail(raw.span(), format!("retire_after = {why}")))?;
            lifecycle.retire_after = Some(t);
        }
        let brownout_only = |key: &str, span: Range<usize>| {
            fail(
                span,
                format!(
                    "`{key}` applies to brownout windows: set stage = \"brownout\" or remove it"
                ),
            )
        };
        if let Some(raw) = &map.brownout {
            if lifecycle.stage != Stage::Brownout {
                return Err(brownout_only("brownout", raw.span()));
            }
            for entry in raw.get_ref() {
                let window = stage::parse_window(entry.get_ref())
                    .map_err(|why| fail(entry.span(), format!("brownout entry {why}")))?;
                lifecycle.windows.push(window);
            }
        }
        if lifecycle.stage == Stage::Brownout && lifecycle.windows.is_empty() {
            let span = map.stage.as_ref().map(Spanned::span).unwrap_or_default();
            return Err(fail(
                span,
                "stage = \"brownout\" needs windows: add e.g. brownout = [\"daily 12:00 for 5m\"]"
                    .to_string(),
            ));
        }
        if let Some(raw) = &map.exempt_uids {
            if lifecycle.stage != Stage::Brownout {
                return Err(brownout_only("exempt_uids", raw.span()));
            }
            for uid in raw.get_ref() {
                let n = *uid.get_ref();
                let n = u32::try_from(n).ok().filter(|&n| n != u32::MAX).ok_or_else(|| {
                    fail(uid.span(), format!("exempt_uids entry {n} is not a uid: write a number from 0 to 4294967294"))
                })?;
                lifecycle.exempt_uids.push(n);
            }
        }
        if let Some(raw) = &map.exempt_units {
            if lifecycle.stage != Stage::Brownout {
                return Err(brownout_only("exempt_units", raw.span()));
            }
            for unit in raw.get_ref() {
                stage::check_unit(unit.get_ref())
                    .map_err(|why| fail(unit.span(), format!("exempt_units entry {why}")))?;
                lifecycle.exempt_units.push(unit.get_ref().clone());
            }
        }
        Ok(lifecycle)
    }

    fn stages(&self, raw: Option<RawStages>) -> Result<StagesConfig, ConfigError> {
        let Some(raw) = raw else {
            return Ok(StagesConfig::default());
        };
        let journal_socket = match raw.journal_socket {
            Some(path) => {
                check_path("journal_socket", path.get_ref())
                    .map_err(|why| self.error(Some(path.span()), format!("[stages] {why}")))?;
                Some(PathBuf::from(path.into_inner()))
            }
            None => None,
        };
        Ok(StagesConfig { journal_socket })
    }

    fn audit(&self, raw: Option<RawAudit>) -> Result<AuditConfig, ConfigError> {
        let Some(raw) = raw else {
            return Ok(AuditConfig::default());
        };
        let log = match raw.log {
            Some(log) => {
                check_path("log", log.get_ref())
                    .map_err(|why| self.error(Some(log.span()), format!("[audit] {why}")))?;
                Some(PathBuf::from(log.into_inner()))
            }
            None => None,
        };
        let collapse_window = match raw.collapse_window {
            None => Duration::ZERO,
            Some(w) => self.seconds("[audit] collapse_window", w)?,
        };
        let defaults = AuditConfig::default();
        let bytes = |key: &str, raw: Option<Spanned<i64>>, (lo, hi): (i64, i64), default: u64| {
            let Some(raw) = raw else { return Ok(default) };
            let n = *raw.get_ref();
            if (lo..=hi).contains(&n) {
                // In range, so not negative.
                Ok(n.unsigned_abs())
            } else {
                Err(self.error(
                    Some(raw.span()),
                    format!("[audit] {key} = {n} is out of range: write a number of bytes from {lo} to {hi}"),
                ))
            }
        };
        let queue_bytes = bytes(
            "queue_bytes",
            raw.queue_bytes,
            QUEUE_BYTES_RANGE,
            defaults.queue_bytes,
        )?;
        let rate = crate::audit::RateLimit {
            bytes_per_sec: bytes(
                "rate_limit",
                raw.rate_limit,
                RATE_LIMIT_RANGE,
                defaults.rate.bytes_per_sec,
            )?,
            burst: bytes(
                "rate_burst",
                raw.rate_burst,
                RATE_BURST_RANGE,
                defaults.rate.burst,
            )?,
        };
        let shutdown_timeout = match raw.shutdown_timeout {
            None => defaults.shutdown_timeout,
            Some(t) => self.seconds("[audit] shutdown_timeout", t)?,
        };
        Ok(AuditConfig {
            log,
            cmdline: raw.cmdline.unwrap_or(false),
            collapse_window,
            queue_bytes,
            rate,
            shutdown_timeout,
        })
    }

    fn fuse(&self, raw: Option<RawFuse>) -> Result<FuseConfig, ConfigError> {
        let Some(raw) = raw else {
            return Ok(FuseConfig::default());
        };
        let threads = match raw.threads {
            None => DEFAULT_THREADS,
            Some(t) => usize::try_from(*t.get_ref())
                .ok()
                .filter(|n| (1..=MAX_THREADS).contains(n))
                .ok_or_else(|| {
                    self.error(
                        Some(t.span()),
                        format!(
                            "[fuse] threads = {} is out of range: write a number from 1 to {MAX_THREADS}",
                            t.get_ref()
                        ),
                    )
                })?,
        };
        let passthrough = match raw.passthrough {
            None => true,
            Some(p) => match p.get_ref().as_str() {
                "auto" => true,
                "off" => false,
                other => {
                    return Err(self.error(
                        Some(p.span()),
                        format!(
                        "[fuse] passthrough = {other:?} is not valid: write \"auto\" or \"off\""
                    ),
                    ))
                }
            },
        };
        let transport = match raw.transport {
            None => Transport::Auto,
            Some(t) => Transport::parse(t.get_ref()).ok_or_else(|| {
                self.error(
                    Some(t.span()),
                    format!(
                        "[fuse] transport = {:?} is not valid: write {}",
                        t.get_ref(),
                        Transport::CHOICES
                    ),
                )
            })?,
        };
        Ok(FuseConfig {
            threads,
            passthrough,
            transport,
            readdirplus: raw.readdirplus.unwrap_or(true),
            attr_timeout: self.timeout("attr_timeout", raw.attr_timeout)?,
            entry_timeout: self.timeout("entry_timeout", raw.entry_timeout)?,
        })
    }

    fn metrics(&self, raw: Option<RawMetrics>) -> Result<MetricsConfig, ConfigError> {
        let Some(raw) = raw else {
            return Ok(MetricsConfig::default());
        };
        let textfile = match raw.textfile {
            Some(t) => {
                let fail = |why: String| self.error(Some(t.span()), format!("[metrics] {why}"));
                check_path("textfile", t.get_ref()).map_err(fail)?;
                // node_exporter's textfile collector reads `*.prom` only: any other name
                // would be written and never read.
                if !t.get_ref().ends_with(".prom") || t.get_ref().ends_with("/.prom") {
                    return Err(fail(format!(
                        "textfile = {:?} does not end in .prom, the only files node_exporter \
                         reads: name it e.g. relocfs.prom",
                        t.get_ref()
                    )));
                }
                Some(PathBuf::from(t.into_inner()))
            }
            None => None,
        };
        let interval = match raw.interval {
            None => DEFAULT_METRICS_INTERVAL,
            Some(i) => {
                let (lo, hi) = METRICS_INTERVAL_SECS;
                crate::report::parse_relative(i.get_ref().trim())
                    .map(|micros| micros / 1_000_000)
                    .and_then(|secs| u64::try_from(secs).ok())
                    .filter(|secs| (lo..=hi).contains(secs))
                    .map(Duration::from_secs)
                    .ok_or_else(|| {
                        self.error(
                            Some(i.span()),
                            format!(
                                "[metrics] interval = {:?} is not valid: write a duration from \
                                 {lo}s to {}m, e.g. \"15s\" (units s, m, h)",
                                i.get_ref(),
                                hi / 60
                            ),
                        )
                    })?
            }
        };
        Ok(MetricsConfig { textfile, interval })
    }

    fn timeout(&self, key: &str, raw: Option<Spanned<f64>>) -> Result<Duration, ConfigError> {
        match raw {
            None => Ok(DEFAULT_TIMEOUT),
            Some(raw) => self.seconds(&format!("[fuse] {key}"), raw),
        }
    }

    /// A number of seconds from 0 to MAX_TIMEOUT_SECS.
    fn seconds(&self, key: &str, raw: Spanned<f64>) -> Result<Duration, ConfigError> {
        let secs = *raw.get_ref();
        // TOML admits nan and inf, and Duration cannot hold them.
        let in_range = secs.is_finite() && (0.0..=MAX_TIMEOUT_SECS).contains(&secs);
        in_range
            .then(|| Duration::try_from_secs_f64(secs).ok())
            .flatten()
            .ok_or_else(|| {
                self.error(
                    Some(raw.span()),
                    format!("{key} = {secs} is out of range: write seconds from 0 to {MAX_TIMEOUT_SECS}"),
                )
            })
    }
}

/// Refuses all but one spelling of each absolute path, so that two rules
/// name the same place exactly when their strings are equal.
fn check_path(key: &str, raw: &str) -> Result<(), String> {
    if raw.is_empty() {
        return Err(format!("{key} is empty: write an absolute path"));
    }
    if raw.contains('\0') {
        return Err(format!("{key} = {raw:?} contains a NUL byte: remove it"));
    }
    // `..` has no lexical normal form we could trust to mean what the operator meant.
    if raw.split('/').any(|c| c == "..") {
        return Err(format!(
            "{key} = {raw:?} contains `..`: write the path without it"
        ));
    }
    // A relative path has no normal form: we cannot tell what it was meant to be relative to.
    if !raw.starts_with('/') {
        return Err(format!(
            "{key} = {raw:?} is not absolute: write the full path, starting with \"/\""
        ));
    }
    let normal = normalise(raw);
    if raw != normal {
        return Err(format!(
            "{key} = {raw:?} is not normalised (no `//`, `.` or trailing `/`): write {normal:?}"
        ));
    }
    Ok(())
}

fn normalise(raw: &str) -> String {
    let parts: Vec<&str> = raw
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// The TOML library's refusal as one line. Its syntax errors are "what\nexpected ..." (made
/// "what: expected ..."); its message is empty when the file ends inside a key, value or
/// header (`to = ` as the last line), so that case gets a message of its own. Keys and values
/// quoted in the message are escaped by `File::error`.
fn toml_message(text: &str, message: &str, span: Option<Range<usize>>) -> String {
    let message = message.trim().replace("\nexpected ", ": expected ");
    if !message.is_empty() {
        return message;
    }
    let rest = span.and_then(|s| text.get(s.start..)).unwrap_or("");
    match rest.chars().next() {
        Some(c) if c.is_control() && c != '\t' && c != '\n' && rest != "\r\n" => format!(
            "invalid character {}: TOML allows no control character but tab, and newline \
             (LF or CR LF) at the end of a line",
            printable(&c.to_string())
        ),
        _ if rest.trim().is_empty() => {
            "the file ends too early: the last key, value or table header is incomplete".to_string()
        }
        _ => "invalid TOML syntax".to_string(),
    }
}

/// `text` made safe for a terminal and one line: every control character (C0 such as newline
/// and ESC, DEL, C1) and the Unicode bidirectional controls are written as escapes (`\n`,
/// `\t`, `\r`, `\u{1b}`). A TOML string or a path can hold any of them.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || is_bidi_control(c) => {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

/// The characters that reorder text on screen (embeddings, overrides, isolates, marks).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{61c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod transport_tests {
    use super::*;

    const MAP: &str = "[[map]]\nfrom = \"/\"\nto = \"/\"\n";

    #[test]
    fn transport_key() {
        let p = |t: &str| parse(&format!("{MAP}{t}"), Path::new("/etc/x.toml"));
        assert_eq!(p("").unwrap().fuse.transport, Transport::Auto);
        assert_eq!(p("[fuse]\n").unwrap().fuse.transport, Transport::Auto);
        for (text, want) in [
            ("auto", Transport::Auto),
            ("io_uring", Transport::IoUring),
            ("dev", Transport::Dev),
        ] {
            let c = p(&format!("[fuse]\ntransport = \"{text}\"\n")).unwrap();
            assert_eq!(c.fuse.transport, want);
            assert_eq!(want.as_str(), text);
        }
        let e = p("[fuse]\ntransport = \"uring\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":5: [fuse] transport = \"uring\" is not valid") && e.contains("\"dev\""),
            "{e}"
        );
    }
}
