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
}

impl Default for FuseConfig {
    fn default() -> Self {
        FuseConfig {
            threads: DEFAULT_THREADS,
            passthrough: true,
            readdirplus: true,
            attr_timeout: DEFAULT_TIMEOUT,
            entry_timeout: DEFAULT_TIMEOUT,
        }
    }
}

const DEFAULT_THREADS: usize = 2;
const MAX_THREADS: usize = 64;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_TIMEOUT_SECS: f64 = 3600.0;

#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub rules: Vec<Rule>,
    pub audit: AuditConfig,
    pub fuse: FuseConfig,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMap {
    from: Option<Spanned<String>>,
    to: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    deny: Option<Spanned<bool>>,
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
        Ok(Rule {
            from: from.get_ref().clone(),
            action,
        })
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
        Ok(FuseConfig {
            threads,
            passthrough,
            readdirplus: raw.readdirplus.unwrap_or(true),
            attr_timeout: self.timeout("attr_timeout", raw.attr_timeout)?,
            entry_timeout: self.timeout("entry_timeout", raw.entry_timeout)?,
        })
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
mod tests {
    use super::*;

    const FILE: &str = "/etc/relocfs/test.toml";

    fn parse_ok(text: &str) -> Config {
        match parse(text, Path::new(FILE)) {
            Ok(config) => config,
            Err(e) => panic!("expected {text:?} to parse, got: {e}"),
        }
    }

    fn parse_err(text: &str) -> String {
        match parse(text, Path::new(FILE)) {
            Ok(config) => panic!("expected {text:?} to be refused, got {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// The shipped example documents every key: it must parse, with its stated defaults.
    #[test]
    fn shipped_example_parses_with_documented_values() {
        let config = parse_ok(include_str!("../config.example.toml"));
        assert_eq!(config.rules.len(), 3);
        assert_eq!(config.rules[2].action, Action::Deny);
        let defaults = FuseConfig::default();
        assert_eq!(config.fuse.threads, defaults.threads);
        assert_eq!(config.fuse.attr_timeout, defaults.attr_timeout);
        assert_eq!(config.fuse.entry_timeout, defaults.entry_timeout);
        assert_eq!(config.fuse.passthrough, defaults.passthrough);
        assert_eq!(config.fuse.readdirplus, defaults.readdirplus);
        assert!(!config.audit.cmdline);
        assert_eq!(config.audit.collapse_window, Duration::ZERO);
    }

    #[test]
    fn audit_limits_parse_with_defaults_and_ranges() {
        let map = "[[map]]\nfrom = \"/\"\nto = \"/opt\"\n";
        let config = parse_ok(map);
        assert_eq!(config.audit.queue_bytes, crate::audit::DEFAULT_QUEUE_BYTES);
        assert_eq!(
            config.audit.rate.bytes_per_sec,
            crate::audit::DEFAULT_RATE_LIMIT
        );
        assert_eq!(config.audit.rate.burst, crate::audit::DEFAULT_RATE_BURST);
        assert_eq!(
            config.audit.shutdown_timeout,
            crate::audit::DEFAULT_SHUTDOWN_TIMEOUT
        );
        let config = parse_ok(&format!(
            "{map}[audit]\nqueue_bytes = 1048576\nrate_limit = 0\nrate_burst = 65536\nshutdown_timeout = 0.5\n"
        ));
        assert_eq!(config.audit.queue_bytes, 1 << 20);
        assert_eq!(config.audit.rate.bytes_per_sec, 0);
        assert_eq!(config.audit.rate.burst, 1 << 16);
        assert_eq!(config.audit.shutdown_timeout, Duration::from_millis(500));
        for (key, bad) in [
            ("queue_bytes", "1000"),
            ("rate_limit", "-1"),
            ("rate_burst", "100"),
            ("shutdown_timeout", "-1.0"),
        ] {
            let err = parse_err(&format!("{map}[audit]\n{key} = {bad}\n"));
            assert!(err.contains(&format!("[audit] {key}")), "{err}");
            assert!(err.contains("out of range"), "{err}");
        }
    }

    #[test]
    fn audit_options_parse() {
        let config = parse_ok(
            "[[map]]\nfrom = \"/\"\nto = \"/opt\"\n[audit]\ncmdline = true\ncollapse_window = 2.5\n",
        );
        assert!(config.audit.cmdline);
        assert_eq!(config.audit.collapse_window, Duration::from_millis(2500));
        assert_eq!(config.audit.log, None);
    }

    const EXAMPLE: &str = r#"
[[map]]
from = "/"                    # path below the mount root; "/" is the root itself
to   = "/opt/jumpserver"      # absolute real directory
mode = "ro"                   # "ro" (default) or "rw"

[[map]]
from = "/keys"
to   = "/srv/jumpserver-keys"

[[map]]
from = "/keys/admin"
deny = true                   # every access refused with EACCES

[audit]
log = "/var/log/relocfs/jumpserver.jsonl"   # optional; no audit log when absent

[fuse]
threads = 2
attr_timeout = 1.0
entry_timeout = 1.0
"#;

    #[test]
    fn example_file_parses() {
        let config = parse_ok(EXAMPLE);
        assert_eq!(config.source, PathBuf::from(FILE));
        assert_eq!(
            config.rules,
            vec![
                Rule {
                    from: "/".into(),
                    action: Action::Map {
                        to: "/opt/jumpserver".into(),
                        mode: Mode::ReadOnly
                    },
                },
                Rule {
                    from: "/keys".into(),
                    action: Action::Map {
                        to: "/srv/jumpserver-keys".into(),
                        mode: Mode::ReadOnly
                    },
                },
                Rule {
                    from: "/keys/admin".into(),
                    action: Action::Deny,
                },
            ]
        );
        assert_eq!(
            config.audit.log,
            Some(PathBuf::from("/var/log/relocfs/jumpserver.jsonl"))
        );
        assert_eq!(config.fuse.threads, 2);
        assert_eq!(config.fuse.attr_timeout, Duration::from_secs(1));
        assert_eq!(config.fuse.entry_timeout, Duration::from_secs(1));
    }

    #[test]
    fn defaults_apply() {
        let config = parse_ok("[[map]]\nfrom = \"/\"\nto = \"/opt/app\"\n");
        assert_eq!(
            config.rules[0].action,
            Action::Map {
                to: "/opt/app".into(),
                mode: Mode::ReadOnly
            }
        );
        assert_eq!(config.audit.log, None);
        assert_eq!(config.fuse.threads, 2);
        assert_eq!(config.fuse.attr_timeout, Duration::from_secs(1));
        assert_eq!(config.fuse.entry_timeout, Duration::from_secs(1));

        // An empty [fuse] table also means the defaults.
        let config = parse_ok("[[map]]\nfrom = \"/\"\nto = \"/\"\n[fuse]\n[audit]\n");
        assert_eq!(config.fuse.threads, 2);
        assert_eq!(config.fuse.attr_timeout, Duration::from_secs(1));
        assert_eq!(config.audit.log, None);
    }

    #[test]
    fn accepted_variants() {
        let config = parse_ok(
            "[[map]]\nfrom = \"/a\"\nto = \"/\"\nmode = \"rw\"\ndeny = false\n\
             [fuse]\nthreads = 64\npassthrough = \"off\"\nreaddirplus = false\nattr_timeout = 0\nentry_timeout = 3600\n",
        );
        assert_eq!(
            config.rules[0].action,
            Action::Map {
                to: "/".into(),
                mode: Mode::ReadWrite
            }
        );
        assert_eq!(config.fuse.threads, 64);
        assert!(!config.fuse.passthrough);
        assert!(!config.fuse.readdirplus);
        assert_eq!(config.fuse.attr_timeout, Duration::ZERO);
        assert_eq!(config.fuse.entry_timeout, Duration::from_secs(3600));

        let config = parse_ok(
            "[[map]]\nfrom = \"/a\"\ndeny = true\n[fuse]\nthreads = 1\nattr_timeout = 0.25\n",
        );
        assert_eq!(config.rules[0].action, Action::Deny);
        assert_eq!(config.fuse.threads, 1);
        assert!(config.fuse.passthrough);
        assert_eq!(config.fuse.attr_timeout, Duration::from_millis(250));
    }

    #[test]
    fn components_split_the_path() {
        let rule = |from: &str| Rule {
            from: from.into(),
            action: Action::Deny,
        };
        assert_eq!(rule("/").components(), Vec::<&str>::new());
        assert_eq!(rule("/a").components(), vec!["a"]);
        assert_eq!(rule("/a/b").components(), vec!["a", "b"]);
    }

    #[test]
    fn refusals() {
        const MAP: &str = "[[map]]\nfrom = \"/\"\nto = \"/opt/app\"\n";
        // (what, file text, line of the error, facts the message must state)
        let cases: Vec<(&str, String, Option<usize>, &[&str])> = vec![
            ("malformed toml", "[[map]\nfrom = \"/\"\n".into(), Some(1), &["invalid table header"]),
            ("unterminated string", format!("{MAP}[audit]\nlog = \"/x\n"), Some(5), &["invalid"]),
            ("unknown top-level key", format!("bogus = 1\n{MAP}"), Some(1), &["unknown field `bogus`"]),
            // TOML puts a key after [[map]] into that map, and so does this check.
            ("unknown key after map", format!("{MAP}bogus = 1\n"), Some(4), &["unknown field `bogus`"]),
            ("unknown top-level table", format!("{MAP}[other]\n"), Some(4), &["unknown field `other`"]),
            ("unknown map key", "[[map]]\nfrom = \"/\"\ntoo = \"/x\"\n".into(), Some(3), &["unknown field `too`"]),
            ("unknown audit key", format!("{MAP}[audit]\npath = \"/x\"\n"), Some(5), &["unknown field `path`"]),
            ("unknown fuse key", format!("{MAP}[fuse]\nthread = 2\n"), Some(5), &["unknown field `thread`"]),
            ("wrong type", "[[map]]\nfrom = 5\n".into(), Some(2), &["invalid type: integer `5`"]),
            ("empty file", "".into(), None, &["no [[map]] rules: add at least one"]),
            ("no map", "[fuse]\nthreads = 2\n".into(), None, &["no [[map]] rules: add at least one"]),
            ("missing from", format!("{MAP}\n[[map]]\nto = \"/x\"\n"), Some(5), &["map #2:", "missing `from`"]),
            ("empty from", "[[map]]\nfrom = \"\"\nto = \"/x\"\n".into(), Some(2), &["map #1 (from = \"\")", "from is empty"]),
            ("relative from", "[[map]]\nfrom = \"keys\"\nto = \"/x\"\n".into(), Some(2), &["map #1 (from = \"keys\")", "not absolute", "starting with \"/\""]),
            ("trailing slash", format!("{MAP}[[map]]\nfrom = \"/keys/\"\nto = \"/x\"\n"), Some(5), &["map #2 (from = \"/keys/\")", "not normalised", "write \"/keys\""]),
            ("double slash", "[[map]]\nfrom = \"/a//b\"\nto = \"/x\"\n".into(), Some(2), &["not normalised", "write \"/a/b\""]),
            ("dot component", "[[map]]\nfrom = \"/a/./b\"\nto = \"/x\"\n".into(), Some(2), &["not normalised", "write \"/a/b\""]),
            ("dot-dot component", "[[map]]\nfrom = \"/a/../b\"\nto = \"/x\"\n".into(), Some(2), &["map #1", "contains `..`"]),
            ("NUL in from", "[[map]]\nfrom = \"/a\\u0000b\"\nto = \"/x\"\n".into(), Some(2), &["map #1", "NUL byte"]),
            ("missing to", "[[map]]\nfrom = \"/keys\"\n".into(), Some(1), &["map #1 (from = \"/keys\")", "missing `to`", "deny = true"]),
            ("relative to", "[[map]]\nfrom = \"/\"\nto = \"opt/app\"\n".into(), Some(3), &["map #1 (from = \"/\")", "to = \"opt/app\" is not absolute"]),
            ("unnormalised to", "[[map]]\nfrom = \"/\"\nto = \"/opt/app/\"\n".into(), Some(3), &["to = \"/opt/app/\"", "write \"/opt/app\""]),
            ("dot-dot to", "[[map]]\nfrom = \"/\"\nto = \"/opt/../app\"\n".into(), Some(3), &["to = ", "`..`"]),
            ("deny with to", "[[map]]\nfrom = \"/k\"\ndeny = true\nto = \"/x\"\n".into(), Some(4), &["map #1 (from = \"/k\")", "a deny rule takes no `to`/`mode`", "remove `to`"]),
            ("deny with mode", "[[map]]\nfrom = \"/k\"\nmode = \"ro\"\ndeny = true\n".into(), Some(3), &["a deny rule takes no `to`/`mode`", "remove `mode`"]),
            ("bad mode", "[[map]]\nfrom = \"/\"\nto = \"/x\"\nmode = \"wr\"\n".into(), Some(4), &["map #1 (from = \"/\")", "mode = \"wr\"", "\"ro\" or \"rw\""]),
            ("duplicate from", format!("{MAP}[[map]]\nfrom = \"/k\"\ndeny = true\n[[map]]\nfrom = \"/\"\nto = \"/y\"\n"), Some(8), &["map #3 (from = \"/\")", "map #1", "remove or merge"]),
            ("relative audit log", format!("{MAP}[audit]\nlog = \"audit.jsonl\"\n"), Some(5), &["[audit] log = \"audit.jsonl\" is not absolute"]),
            ("unnormalised audit log", format!("{MAP}[audit]\nlog = \"/var//log/a\"\n"), Some(5), &["[audit] log", "write \"/var/log/a\""]),
            ("zero threads", format!("{MAP}[fuse]\nthreads = 0\n"), Some(5), &["[fuse] threads = 0 is out of range", "1 to 64"]),
            ("negative collapse", format!("{MAP}[audit]\ncollapse_window = -1.0\n"), Some(5), &["[audit] collapse_window = -1 is out of range", "0 to 3600"]),
            ("bad passthrough", format!("{MAP}[fuse]\npassthrough = \"on\"\n"), Some(5), &["[fuse] passthrough = \"on\" is not valid", "\"auto\" or \"off\""]),
            ("too many threads", format!("{MAP}[fuse]\nthreads = 65\n"), Some(5), &["threads = 65", "1 to 64"]),
            ("negative threads", format!("{MAP}[fuse]\nthreads = -1\n"), Some(5), &["threads = -1", "1 to 64"]),
            ("negative attr_timeout", format!("{MAP}[fuse]\nattr_timeout = -0.5\n"), Some(5), &["[fuse] attr_timeout = -0.5 is out of range", "0 to 3600"]),
            ("nan attr_timeout", format!("{MAP}[fuse]\nattr_timeout = nan\n"), Some(5), &["attr_timeout = NaN", "0 to 3600"]),
            ("infinite entry_timeout", format!("{MAP}[fuse]\nentry_timeout = inf\n"), Some(5), &["entry_timeout = inf", "0 to 3600"]),
            ("huge entry_timeout", format!("{MAP}[fuse]\n\nentry_timeout = 3600.5\n"), Some(6), &["entry_timeout = 3600.5", "0 to 3600"]),
        ];
        for (what, text, line, facts) in cases {
            let message = parse_err(&text);
            let prefix = match line {
                Some(line) => format!("{FILE}:{line}: "),
                None => format!("{FILE}: "),
            };
            assert!(
                message.starts_with(&prefix),
                "{what}: {message:?} should start with {prefix:?}"
            );
            assert!(
                !message.contains('\n'),
                "{what}: {message:?} should be one line"
            );
            for fact in facts {
                assert!(
                    message.contains(fact),
                    "{what}: {message:?} should contain {fact:?}"
                );
            }
        }
    }

    #[test]
    fn load_reads_then_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relocfs.toml");
        std::fs::write(&path, EXAMPLE).unwrap();
        let config = load(&path).unwrap();
        assert_eq!(config.source, path);
        assert_eq!(config.rules.len(), 3);

        let missing = dir.path().join("missing.toml");
        let message = load(&missing).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{}: cannot read: ", missing.display())),
            "{message:?}"
        );
    }
}

/// The parser against arbitrary and mutated files: it never panics, and every refusal is one
/// non-empty, escaped line that names the file, and the line where one is known.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const FILE: &str = "/etc/relocfs/fuzz.toml";
    const EXAMPLE: &str = include_str!("../config.example.toml");

    /// What is wrong with how `text` is refused, if anything (`None` when it is accepted).
    fn refusal_problem(text: &str) -> Option<String> {
        let shown = parse(text, Path::new(FILE)).err()?.to_string();
        if let Some(c) = shown.chars().find(|c| c.is_control()) {
            return Some(format!("{shown:?} holds the control character {c:?}"));
        }
        let Some(rest) = shown.strip_prefix(&format!("{FILE}:")) else {
            return Some(format!("{shown:?} does not start with the file name"));
        };
        let message = match rest.split_once(": ") {
            Some((line, message)) if line.parse::<usize>().is_ok() => {
                let line: usize = line.parse().unwrap_or(0);
                let lines = text.split('\n').count();
                if line == 0 || line > lines {
                    return Some(format!("{shown:?} names line {line} of {lines}"));
                }
                message
            }
            _ => rest.strip_prefix(' ').unwrap_or(rest),
        };
        if message.trim().is_empty() {
            return Some(format!("{shown:?} has an empty message"));
        }
        None
    }

    fn check(text: &str) -> Result<(), TestCaseError> {
        match refusal_problem(text) {
            None => Ok(()),
            Some(problem) => Err(TestCaseError::fail(format!("input {text:?}: {problem}"))),
        }
    }

    /// Pieces of relocfs configs and of TOML syntax, including the troublesome ones.
    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "[[map]]",
                "[map]",
                "[audit]",
                "[fuse]",
                "[[",
                "]]",
                "[",
                "]",
                "{",
                "}",
                ",",
                ".",
                "=",
                " = ",
                "\n",
                "\r\n",
                "\t",
                " ",
                "#",
                "# c\n",
                "\"",
                "'",
                "\"\"\"",
                "'''",
                "\\",
                "\\u001b[2J",
                "\\u0000",
                "\\n",
                "\\u0085",
                "\u{1b}",
                "\u{7f}",
                "\u{9b}",
                "\u{202e}",
                "from",
                "to",
                "mode",
                "deny",
                "log",
                "cmdline",
                "collapse_window",
                "threads",
                "passthrough",
                "readdirplus",
                "attr_timeout",
                "entry_timeout",
                "\"/\"",
                "\"/keys\"",
                "\"/opt/app\"",
                "\"ro\"",
                "\"rw\"",
                "\"auto\"",
                "\"off\"",
                "true",
                "false",
                "0",
                "-1",
                "65",
                "1.5",
                "nan",
                "inf",
                "-inf",
                "1e400",
                "2026-11-01",
                "\"a\\nb\"",
                "\"x\\u001by\"",
                "bogus",
            ])
            .prop_map(str::to_string),
            "[ -~]{0,8}",
            any::<char>().prop_map(String::from),
        ]
    }

    fn soup() -> impl Strategy<Value = String> {
        prop::collection::vec(token(), 0..40).prop_map(|t| t.concat())
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Truncate(prop::sample::Index),
        Delete(prop::sample::Index, usize),
        Insert(prop::sample::Index, String),
        DuplicateLine(prop::sample::Index),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            any::<prop::sample::Index>().prop_map(Mutation::Truncate),
            (any::<prop::sample::Index>(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
            (any::<prop::sample::Index>(), soup()).prop_map(|(i, s)| Mutation::Insert(i, s)),
            any::<prop::sample::Index>().prop_map(Mutation::DuplicateLine),
        ]
    }

    /// The shipped example with the mutations applied in order (by characters, so the text
    /// stays valid UTF-8 as a config file read by `load` must be).
    fn mutate(mutations: &[Mutation]) -> String {
        let mut chars: Vec<char> = EXAMPLE.chars().collect();
        for m in mutations {
            let at = |i: &prop::sample::Index| i.index(chars.len() + 1);
            match m {
                Mutation::Truncate(i) => chars.truncate(at(i)),
                Mutation::Delete(i, n) => {
                    let start = at(i);
                    let end = (start + n).min(chars.len());
                    chars.drain(start..end);
                }
                Mutation::Insert(i, s) => {
                    let start = at(i);
                    chars.splice(start..start, s.chars());
                }
                Mutation::DuplicateLine(i) => {
                    let text: String = chars.iter().collect();
                    let lines: Vec<&str> = text.split_inclusive('\n').collect();
                    let pick = i.index(lines.len().max(1));
                    let mut out = String::new();
                    for (n, line) in lines.iter().enumerate() {
                        out.push_str(line);
                        if n == pick {
                            out.push_str(line);
                        }
                    }
                    chars = out.chars().collect();
                }
            }
        }
        chars.into_iter().collect()
    }

    proptest! {
        // Bounded so that the whole target runs in a few seconds of a debug build.
        #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_text_is_refused_in_one_line(text in any::<String>()) {
            check(&text)?;
        }

        #[test]
        fn config_like_text_is_refused_in_one_line(text in soup()) {
            check(&text)?;
        }

        #[test]
        fn mutated_example_is_refused_in_one_line(mutations in prop::collection::vec(mutation(), 1..4)) {
            check(&mutate(&mutations))?;
        }

        #[test]
        fn example_cut_anywhere_is_refused_in_one_line(cut in any::<prop::sample::Index>()) {
            let chars: Vec<char> = EXAMPLE.chars().collect();
            let text: String = chars[..cut.index(chars.len() + 1)].iter().collect();
            check(&text)?;
        }
    }

    // Inputs the fuzz target found (or that the bug reports named), kept by name.

    /// `to = ` as the file's last bytes: the TOML library's message was empty, and relocfs
    /// printed `FILE:3: ` and nothing more.
    #[test]
    fn regression_value_cut_off_at_end_of_file() {
        let text = "[[map]]\nfrom = \"/\"\nto = ";
        assert_eq!(refusal_problem(text), None);
        let shown = parse(text, Path::new(FILE)).unwrap_err().to_string();
        assert_eq!(
            shown,
            format!("{FILE}:3: the file ends too early: the last key, value or table header is incomplete")
        );
    }

    /// Found by the fuzz target: other inputs where the TOML library's message is empty: a
    /// key without a value, a lone carriage return, a control character in a comment.
    #[test]
    fn regression_empty_library_messages() {
        let cases = [
            ("a=", 1, "the file ends too early"),
            ("\r", 1, r"invalid character \r"),
            ("#\0", 1, r"invalid character \u{0}"),
            ("[[map]]\n# \x1b[2J\n", 2, r"invalid character \u{1b}"),
        ];
        for (text, line, fact) in cases {
            assert_eq!(refusal_problem(text), None, "{text:?}");
            let shown = parse(text, Path::new(FILE)).unwrap_err().to_string();
            assert!(
                shown.starts_with(&format!("{FILE}:{line}: {fact}")),
                "{text:?}: {shown}"
            );
        }
        // CR LF line ends are TOML and stay accepted.
        let crlf = EXAMPLE.replace('\n', "\r\n");
        assert!(parse(&crlf, Path::new(FILE)).is_ok());
    }

    /// A quoted key holding a newline and ESC: the message was cut at the newline (and would
    /// have put ESC on the terminal).
    #[test]
    fn regression_key_with_newline_and_escape() {
        let text = "[[map]]\n\"bad\\u001b[2J\\nkey\" = 1\n";
        assert_eq!(refusal_problem(text), None);
        let shown = parse(text, Path::new(FILE)).unwrap_err().to_string();
        assert!(
            shown.contains(r"unknown field `bad\u{1b}[2J\nkey`"),
            "{shown}"
        );
    }

    /// The TOML library's syntax errors come as two lines ("what", "expected ..."): kept whole.
    #[test]
    fn regression_syntax_error_keeps_what_was_expected() {
        let shown = parse("[[map]\nfrom = \"/\"\n", Path::new(FILE))
            .unwrap_err()
            .to_string();
        assert_eq!(
            shown,
            format!("{FILE}:1: invalid table header: expected `.`, `]]`")
        );
    }
}
