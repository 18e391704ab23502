//! The control channel: a Unix socket per mount, in a directory only the daemon's user can
//! enter, where `relocfs status MOUNTPOINT` reads the live state of a running mount and
//! `relocfs reopen` asks the daemon to reopen its audit log, and `relocfs reload` (or
//! `mount -o remount`) asks it to reread its configuration and say how that went.
//!
//! Protocol: the client sends one request line (`status`, `reopen` or `reload`, at most
//! `MAX_REQUEST` bytes); the daemon answers with one JSON object and closes. Neither side
//! trusts the other blindly: the daemon serves only root and its own user (SO_PEERCRED), and
//! the client connects only to a socket whose directory, file and listening process belong to
//! the user it expects, reads with a deadline and a size cap, and escapes what it prints.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::audit::AuditLog;
use crate::fs::Fs;
use crate::sys;

/// Where the sockets live: /run/relocfs for root, the user's runtime directory otherwise.
fn socket_dir() -> PathBuf {
    if sys::geteuid() == 0 {
        return PathBuf::from(ROOT_DIR);
    }
    user_socket_dir()
}

const ROOT_DIR: &str = "/run/relocfs";

/// The longest request line the daemon reads.
const MAX_REQUEST: usize = 64;

/// The largest answer a client accepts (a real status is a few KiB).
const MAX_ANSWER: usize = 1 << 20;

/// How long a client waits for the whole answer.
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

/// How long the daemon waits for a requested reload's outcome before answering without it
/// (well within the client's deadline).
const RELOAD_VERDICT_WAIT: Duration = Duration::from_secs(8);

/// The outcomes of configuration reloads, shared by the signal thread (which reloads, on
/// SIGHUP) and the control server (which asks for a reload and reports how it went).
///
/// Reloads run one at a time and SIGHUPs coalesce, so a request is answered by the first
/// reload that *starts* after it: that one reads the configuration as it is after the
/// request. `started` and `finished` count reloads; a reload in progress has
/// `started == finished + 1`.
#[derive(Default)]
pub struct Reloads {
    state: Mutex<ReloadState>,
    done: Condvar,
}

#[derive(Default)]
struct ReloadState {
    started: u64,
    finished: u64,
    last: Option<Result<String, String>>,
}

impl Reloads {
    fn lock(&self) -> std::sync::MutexGuard<'_, ReloadState> {
        // The state stays consistent whatever a panicking holder did: plain counters.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reload starts (the signal thread, before it reads the configuration).
    pub fn begin(&self) {
        self.lock().started += 1;
    }

    /// The reload that began last is over, with this outcome.
    pub fn finish(&self, outcome: &Result<String, String>) {
        let mut state = self.lock();
        state.finished = state.started;
        state.last = Some(outcome.clone());
        self.done.notify_all();
    }

    /// The number the reload answering a request made now will finish as.
    fn ticket(&self) -> u64 {
        self.lock().started + 1
    }

    /// The outcome of reload `ticket` (or of a later one: reloads coalesce), or `None` if it
    /// has not finished within `wait`.
    fn outcome(&self, ticket: u64, wait: Duration) -> Option<Result<String, String>> {
        let state = self.lock();
        let (state, _) = self
            .done
            .wait_timeout_while(state, wait, |s| s.finished < ticket)
            .unwrap_or_else(|e| e.into_inner());
        if state.finished >= ticket {
            state.last.clone()
        } else {
            None
        }
    }
}

/// An ordinary user's socket directory: `$XDG_RUNTIME_DIR/relocfs`, or `$TMPDIR/relocfs-UID`
/// without one (checked for ownership on both sides, since others can write to /tmp). Root
/// never uses this: its sockets are in /run/relocfs only.
fn user_socket_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir).join("relocfs"),
        _ => std::env::temp_dir().join(format!("relocfs-{}", sys::geteuid())),
    }
}

/// The socket of the mount at `mountpoint` (canonical), in this user's socket directory.
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    socket_dir().join(socket_name(mountpoint))
}

/// The socket's file name, escaped the way systemd escapes paths.
fn socket_name(mountpoint: &Path) -> String {
    let mut name = String::new();
    let text = mountpoint.to_string_lossy();
    for (i, b) in text.trim_start_matches('/').bytes().enumerate() {
        match b {
            b'/' => name.push('-'),
            b'.' if i == 0 => name.push_str("\\x2e"),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => name.push(b as char),
            _ => name.push_str(&format!("\\x{b:02x}")),
        }
    }
    if name.is_empty() {
        name.push('-');
    }
    // A socket path must fit in 108 bytes: long mountpoints get a hash instead.
    if name.len() > 80 {
        name = format!("{:016x}", fnv1a(text.as_bytes()));
    }
    format!("{name}.sock")
}

pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The state `relocfs status` shows.
#[derive(Debug, Serialize)]
pub struct Status {
    pub mountpoint: String,
    pub config: String,
    pub pid: u32,
    pub uptime_secs: u64,
    /// How requests reach the daemon: "io_uring" or "/dev/fuse".
    pub transport: String,
    pub rules: Vec<String>,
    pub nodes: usize,
    pub node_fds: usize,
    pub audit_log: Option<String>,
    pub audit_written: u64,
    pub audit_dropped: u64,
    /// Events over their uid's rate limit, counted in `suppressed` lines instead of logged.
    pub audit_suppressed: u64,
    /// Audited operations by op and result.
    pub operations: Vec<(String, String, u64)>,
    /// Each rule's lifecycle, in config order.
    pub stages: Vec<RuleStage>,
}

/// One rule's lifecycle as `relocfs status` shows it; instants in RFC 3339 UTC.
#[derive(Debug, Serialize)]
pub struct RuleStage {
    pub rule: String,
    /// The configured stage.
    pub stage: &'static str,
    /// What the rule does now (a brownout rule between windows warns), once the kernel's
    /// cached entries agree (the edge thread drops them just after each edge).
    pub now: &'static str,
    /// The current or next brownout window: start, end.
    pub next_window: Option<(String, String)>,
    pub retire_after: Option<String>,
    /// The latest lookup or open below the rule since the daemon started (to the second).
    pub last_access: Option<String>,
}

impl RuleStage {
    fn rows(fs: &Fs) -> Vec<RuleStage> {
        let now = crate::stage::now_secs();
        let instant = |secs: i64| {
            crate::time::format_micros(secs.saturating_mul(1_000_000)).replace(".000000Z", "Z")
        };
        fs.stage_states()
            .into_iter()
            .map(|(rule, state)| {
                let lifecycle = state.lifecycle();
                RuleStage {
                    rule,
                    stage: lifecycle.stage.name(),
                    now: state.applied().name(),
                    next_window: lifecycle
                        .next_window(now)
                        .map(|(s, e)| (instant(s), instant(e))),
                    retire_after: lifecycle.retire_after.map(instant),
                    last_access: state.last_access().map(instant),
                }
            })
            .collect()
    }
}

/// The `stages` lines of the text status, read by name from the JSON answer.
fn render_stages(v: &serde_json::Value) -> String {
    let Some(rows) = v["stages"].as_array() else {
        // A daemon older than rule lifecycles.
        return String::new();
    };
    let mut out = String::from("stages\n");
    for row in rows {
        let s = |k: &str| printable(row[k].as_str().unwrap_or("?"));
        let mut line = format!("  {}  {}, now {}", s("rule"), s("stage"), s("now"));
        if let Some([start, end]) = row["next_window"].as_array().map(Vec::as_slice) {
            line.push_str(&format!(
                "; next window {} to {}",
                printable(start.as_str().unwrap_or("?")),
                printable(end.as_str().unwrap_or("?"))
            ));
        }
        if row["retire_after"].is_string() {
            line.push_str(&format!("; retired from {}", s("retire_after")));
        }
        match row["last_access"].as_str() {
            Some(t) => line.push_str(&format!("; last access {}", printable(t))),
            None => line.push_str("; no access since start"),
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

impl Status {
    /// Plain text for a terminal.
    pub fn render(&self) -> String {
        let mut out = format!(
            "mountpoint     {}\nconfig         {}\npid            {}\nuptime         {}s\n\
             transport      {}\n\
             nodes          {} ({} with an open fd)\naudit log      {}\n\
             audit events   {} written, {} dropped, {} suppressed\nrules\n",
            self.mountpoint,
            self.config,
            self.pid,
            self.uptime_secs,
            self.transport,
            self.nodes,
            self.node_fds,
            self.audit_log.as_deref().unwrap_or("(none)"),
            self.audit_written,
            self.audit_dropped,
            self.audit_suppressed,
        );
        for rule in &self.rules {
            out.push_str(&format!("  {rule}\n"));
        }
        out.push_str("operations (audited)\n");
        for (op, result, n) in &self.operations {
            out.push_str(&format!("  {op:<12} {result:<10} {n}\n"));
        }
        let value = serde_json::json!({ "stages": self.stages });
        out.push_str(&render_stages(&value));
        out
    }
}

/// What the server needs to answer.
pub struct Source {
    pub fs: Weak<Fs>,
    pub audit: Weak<AuditLog>,
    pub mountpoint: PathBuf,
    pub config: PathBuf,
    pub audit_log: Option<PathBuf>,
    pub started: Instant,
    /// Where the signal thread reports each reload's outcome.
    pub reloads: Arc<Reloads>,
    /// The transport in use (see `Status::transport`).
    pub transport: String,
}

impl Source {
    fn status(&self) -> Option<Status> {
        let fs = self.fs.upgrade()?;
        let audit = self.audit.upgrade();
        Some(Status {
            mountpoint: self.mountpoint.display().to_string(),
            config: self.config.display().to_string(),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            transport: self.transport.clone(),
            rules: fs.describe_rules(),
            nodes: fs.node_count(),
            node_fds: fs.node_fds(),
            audit_log: self.audit_log.as_ref().map(|p| p.display().to_string()),
            audit_written: audit.as_ref().map_or(0, |a| a.written()),
            audit_dropped: audit.as_ref().map_or(0, |a| a.dropped()),
            audit_suppressed: audit.as_ref().map_or(0, |a| a.suppressed()),
            operations: fs.operation_counts(),
            stages: RuleStage::rows(&fs),
        })
    }

    /// Answers one request; `None` once the filesystem is gone (the daemon is exiting).
    fn answer(&self, request: &str) -> Option<Vec<u8>> {
        let body = match request {
            "reopen" => {
                let audit = self.audit.upgrade()?;
                audit.reopen();
                log::info!("reopening the audit log (relocfs reopen)");
                serde_json::json!({
                    "reopened": true,
                    "pid": std::process::id(),
                    "mountpoint": self.mountpoint.display().to_string(),
                })
            }
            "reload" => {
                // The signal thread owns the configuration: it reloads on SIGHUP, logs the
                // outcome (journal or syslog) as for `systemctl reload`, and reports it here.
                self.fs.upgrade()?;
                let ticket = self.reloads.ticket();
                sys::kill(std::process::id() as i32, libc::SIGHUP).ok()?;
                let (reloaded, detail) = match self.reloads.outcome(ticket, RELOAD_VERDICT_WAIT) {
                    Some(Ok(summary)) => (Some(true), summary),
                    Some(Err(e)) => (Some(false), e),
                    None => (None, String::new()),
                };
                serde_json::json!({
                    "reloading": true,
                    "reloaded": reloaded,
                    "detail": detail,
                    "pid": std::process::id(),
                    "mountpoint": self.mountpoint.display().to_string(),
                })
            }
            // An empty request is an older client, which only ever asked for the status.
            "status" | "" => serde_json::to_value(self.status()?).ok()?,
            _ => serde_json::json!({ "error": "unknown request" }),
        };
        serde_json::to_vec(&body).ok()
    }
}

/// The listening socket; removed when dropped, if the path still names it.
pub struct Server {
    path: PathBuf,
    /// (st_dev, st_ino) of the socket this daemon bound: a daemon that outlives its mount
    /// (lazily detached, open files still served) must not remove the socket of the newer
    /// daemon serving the same mountpoint.
    id: (u64, u64),
}

impl Drop for Server {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(md) if (md.dev(), md.ino()) == self.id => {
                let _ = std::fs::remove_file(&self.path);
            }
            _ => {}
        }
    }
}

/// Creates (or checks) the socket directory without following a symlink: it must be a real
/// directory owned by this user; anything else was planted and is refused. Mode 0700.
fn prepare_dir(dir: &Path) -> std::io::Result<()> {
    let euid = sys::geteuid();
    if euid != 0 {
        if let Some(parent) = dir.parent() {
            // $XDG_RUNTIME_DIR exists; /tmp too. Nothing else is created on the way.
            if !parent.is_dir() {
                return Err(std::io::Error::other(format!(
                    "{} does not exist",
                    parent.display()
                )));
            }
        }
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "{}: {e} (a symlink or not a directory: refused)",
                    dir.display()
                ),
            )
        })?;
    let md = handle.metadata()?;
    if md.uid() != euid {
        return Err(std::io::Error::other(format!(
            "{} belongs to uid {}, not to this daemon's uid {euid}: refused (remove it)",
            dir.display(),
            md.uid()
        )));
    }
    // Only the daemon's user (root, or the mounting user) may connect.
    handle.set_permissions(std::fs::Permissions::from_mode(0o700))
}

/// Binds the socket of `source.mountpoint` and answers each connection from a thread of its
/// own. A stale socket of a dead daemon is replaced.
pub fn serve(source: Source) -> std::io::Result<Server> {
    let path = socket_path(&source.mountpoint);
    if let Some(dir) = path.parent() {
        prepare_dir(dir)?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let md = std::fs::symlink_metadata(&path)?;
    let id = (md.dev(), md.ino());
    let euid = sys::geteuid();
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                // The directory is 0700 already; the peer's credentials say it again.
                match sys::peer_cred(stream.as_fd()) {
                    Ok((_, uid, _)) if uid == 0 || uid == euid => {}
                    _ => continue,
                }
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
                let request = read_request(&mut stream);
                let Some(body) = source.answer(request.trim()) else {
                    return;
                };
                let _ = stream.write_all(&body);
            }
        })?;
    Ok(Server { path, id })
}

/// The request line: what arrives before a newline, EOF, the size limit or the timeout.
fn read_request(stream: &mut UnixStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while buf.len() < MAX_REQUEST {
        match stream.read(&mut byte) {
            Ok(1) if byte[0] != b'\n' => buf.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Connects to `path` only if it is what a daemon of `uid` would have made: a socket owned by
/// `uid`, in a real directory (not a symlink) owned by `uid` that nobody else can write to,
/// with a listener running as `uid`.
fn connect_trusted(path: &Path, uid: u32) -> Result<UnixStream, Refused> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let dmd = std::fs::symlink_metadata(dir).map_err(Refused::Io)?;
    if !dmd.file_type().is_dir() || dmd.uid() != uid || dmd.mode() & 0o022 != 0 {
        return Err(Refused::Untrusted(format!(
            "{} is not a directory of uid {uid} that only it can write to",
            dir.display()
        )));
    }
    let smd = std::fs::symlink_metadata(path).map_err(Refused::Io)?;
    use std::os::unix::fs::FileTypeExt;
    if !smd.file_type().is_socket() || smd.uid() != uid {
        return Err(Refused::Untrusted(format!(
            "{} is not a socket of uid {uid}",
            path.display()
        )));
    }
    let stream = UnixStream::connect(path).map_err(Refused::Io)?;
    match sys::peer_cred(stream.as_fd()) {
        Ok((_, peer, _)) if peer == uid => Ok(stream),
        Ok((_, peer, _)) => Err(Refused::Untrusted(format!(
            "{} is served by uid {peer}, not uid {uid}",
            path.display()
        ))),
        Err(e) => Err(Refused::Io(e)),
    }
}

/// Why a candidate socket was not used.
enum Refused {
    Io(std::io::Error),
    Untrusted(String),
}

/// The sockets that may serve `mountpoint` for this user, each with the uid it must belong
/// to: root looks only in /run/relocfs; an ordinary user in its own directory first (a mount
/// it made), then in /run/relocfs (so that it learns root's status is not for it).
fn candidates(mountpoint: &Path) -> Vec<(PathBuf, u32)> {
    let name = socket_name(mountpoint);
    let euid = sys::geteuid();
    let root = (Path::new(ROOT_DIR).join(&name), 0);
    if euid == 0 {
        vec![root]
    } else {
        vec![(user_socket_dir().join(&name), euid), root]
    }
}

/// Sends `request` to the daemon serving `mountpoint` and returns its JSON answer, with the
/// pid of the process that answered (from SO_PEERCRED).
fn ask(mountpoint: &Path, request: &str) -> Result<(serde_json::Value, i32), String> {
    let shown = printable(&mountpoint.display().to_string());
    let canonical = mountpoint
        .canonicalize()
        .map_err(|e| format!("{shown}: {e}"))?;
    let mut problems = Vec::new();
    let mut denied = None;
    for (path, uid) in candidates(&canonical) {
        match connect_trusted(&path, uid) {
            Ok(stream) => return exchange(stream, request, &shown),
            Err(Refused::Io(e)) if e.raw_os_error() == Some(libc::EACCES) => {
                denied = Some(path);
            }
            Err(Refused::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(Refused::Io(e)) => problems.push(format!("{}: {e}", path.display())),
            Err(Refused::Untrusted(why)) => problems.push(format!("refused {why}")),
        }
    }
    if let Some(path) = denied {
        return Err(format!(
            "{}: permission denied: only root or the user who mounted {shown} can ask its daemon",
            path.display()
        ));
    }
    let why = if problems.is_empty() {
        "no control socket".to_string()
    } else {
        printable(&problems.join("; "))
    };
    Err(format!("no relocfs daemon is serving {shown} ({why})"))
}

fn exchange(
    mut stream: UnixStream,
    request: &str,
    shown: &str,
) -> Result<(serde_json::Value, i32), String> {
    let pid = sys::peer_cred(stream.as_fd()).map_or(0, |(pid, _, _)| pid);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(|e| format!("asking the daemon of {shown}: {e}"))?;
    let body = read_answer(&mut stream, ANSWER_DEADLINE, MAX_ANSWER)
        .map_err(|e| format!("reading the answer of the daemon of {shown}: {e}"))?;
    if body.is_empty() {
        return Err(format!("the relocfs daemon of {shown} is shutting down"));
    }
    let value = serde_json::from_slice(&body)
        .map_err(|e| format!("the daemon of {shown} answered something that is not JSON: {e}"))?;
    Ok((value, pid))
}

/// Reads until EOF, giving up after `deadline` in total (however slowly the bytes come) or
/// once more than `cap` bytes arrived.
fn read_answer(
    stream: &mut UnixStream,
    deadline: Duration,
    cap: usize,
) -> std::io::Result<Vec<u8>> {
    let end = Instant::now() + deadline;
    let mut body = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no complete answer within {} s", deadline.as_secs()),
            ));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(body),
            Ok(n) => {
                if body.len() + n > cap {
                    return Err(std::io::Error::other(format!(
                        "the answer is larger than {} KiB",
                        cap / 1024
                    )));
                }
                body.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Marks and overrides that reorder text on a terminal.
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Text from the daemon (or whoever answered) made safe for a terminal: control characters
/// (ESC, CR, C1 ...) and bidirectional overrides are written as `\u{..}` escapes.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || is_bidi(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// `relocfs status MOUNTPOINT`: asks the daemon serving it.
pub fn query(mountpoint: &Path, json: bool) -> Result<String, String> {
    let (status, _) = ask(mountpoint, "status")?;
    if json {
        // Re-serialised: whatever the answer held, control characters come out escaped; so do
        // bidirectional overrides (they can only be inside strings, where `\uXXXX` is valid).
        let mut out = String::new();
        for c in status.to_string().chars() {
            if is_bidi(c) {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            } else {
                out.push(c);
            }
        }
        out.push('\n');
        return Ok(out);
    }
    Ok(render_value(&status))
}

/// The pid of the daemon serving `mountpoint`: the control socket's peer, as the kernel gives it
/// (SO_PEERCRED), never a pid read from an answer.
pub fn daemon_pid(mountpoint: &Path) -> Result<i32, String> {
    ask(mountpoint, "status").map(|(_, pid)| pid)
}

/// `relocfs reopen [--all | MOUNTPOINT...]`: asks each daemon to reopen its audit log (what
/// logrotate runs). Returns the problems met; daemons that answered are not reported.
pub fn reopen(mountpoints: &[PathBuf], all: bool) -> Result<(), String> {
    let mut problems = Vec::new();
    if all {
        for socket in sockets_in(&socket_dir()) {
            // A socket left by a killed daemon refuses connections: nothing to reopen there.
            if let Err(e) = reopen_at(&socket) {
                problems.push(e);
            }
        }
    }
    for mp in mountpoints {
        if let Err(e) = ask(mp, "reopen").and_then(|(answer, pid)| confirm(answer, pid, "reopened"))
        {
            problems.push(e);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Every socket in this user's socket directory (none when it does not exist).
fn sockets_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .collect();
    out.sort();
    out
}

fn reopen_at(socket: &Path) -> Result<(), String> {
    let shown = printable(&socket.display().to_string());
    match connect_trusted(socket, sys::geteuid()) {
        Ok(stream) => exchange(stream, "reopen", &shown)
            .and_then(|(a, pid)| confirm(a, pid, "reopened"))
            .or_else(|e| {
                // A daemon that is exiting accepts the connection and then closes it unanswered
                // (its filesystem is gone); its socket refuses connections a moment later.
                // Nothing to reopen there.
                for _ in 0..5 {
                    match connect_trusted(socket, sys::geteuid()) {
                        Err(Refused::Io(gone)) if daemon_gone(&gone) => return Ok(()),
                        _ => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
                Err(e)
            }),
        Err(Refused::Io(e)) if daemon_gone(&e) => Ok(()),
        Err(Refused::Io(e)) => Err(format!("{shown}: {e}")),
        Err(Refused::Untrusted(why)) => Err(printable(&format!("refused {why}"))),
    }
}

/// A socket that refuses connections, or is gone, belongs to a daemon that has exited.
fn daemon_gone(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED) | Some(libc::ENOENT)
    )
}

/// The daemon said it did (`key`: `reopened`, `reloading`). A daemon older than these requests
/// answers with its status instead: it is sent SIGHUP (which reopens its log and rereads its
/// config), at the pid the kernel gave for the socket's peer, never a pid read from the answer.
fn confirm(answer: serde_json::Value, pid: i32, key: &str) -> Result<(), String> {
    if answer[key].as_bool() == Some(true) {
        return Ok(());
    }
    if answer.get("uptime_secs").is_some() && pid > 0 {
        return sys::kill(pid, libc::SIGHUP).map_err(|e| format!("SIGHUP to pid {pid}: {e}"));
    }
    Err(printable(&format!("unexpected answer: {answer}")))
}

/// `relocfs reload MOUNTPOINT...`: asks each daemon to reread its configuration (as SIGHUP
/// does, without finding its pid) and reports each one's verdict: a refused reload (the old
/// rules stay) is an error with the daemon's reason.
pub fn reload(mountpoints: &[PathBuf]) -> Result<(), String> {
    let problems: Vec<String> = mountpoints
        .iter()
        .filter_map(|mp| reload_one(mp).err())
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn reload_one(mountpoint: &Path) -> Result<(), String> {
    let (answer, pid) = ask(mountpoint, "reload")?;
    reload_verdict(&answer, &printable(&mountpoint.display().to_string()))?;
    confirm(answer, pid, "reloading")
}

/// The daemon's verdict on a reload. A daemon older than verdicts sends none (nor the key):
/// accepted as before, it logs the outcome.
fn reload_verdict(answer: &serde_json::Value, shown: &str) -> Result<(), String> {
    let detail = printable(answer["detail"].as_str().unwrap_or("?"));
    match answer.get("reloaded") {
        None => Ok(()),
        Some(serde_json::Value::Bool(true)) => Ok(()),
        Some(serde_json::Value::Bool(false)) => Err(format!(
            "{shown}: reload refused, the old rules stay: {detail}"
        )),
        Some(_) => Err(format!(
            "{shown}: the daemon did not finish reloading within {} s; its log will say how \
             it went",
            RELOAD_VERDICT_WAIT.as_secs()
        )),
    }
}

/// What `mount -o remount` asks of a running mount (mount(8) hands it to mount.fuse3, which
/// runs `relocfs CONFIG MOUNTPOINT -o remount,...`).
pub struct Remount<'a> {
    /// The configuration named by the fstab line or the command.
    pub config: &'a Path,
    pub mountpoint: &'a Path,
    /// The mount flags the options ask for explicitly: (name, wanted set).
    pub flags: Vec<(&'static str, bool)>,
}

/// `relocfs CONFIG MOUNTPOINT -o remount,...`: never mounts. Asks the daemon serving
/// MOUNTPOINT (only root or the mount's owner may, as for `relocfs reload`) to reread its
/// configuration and returns its verdict. Refused before asking: a CONFIG other than the
/// daemon's (a remount rereads the running configuration, it cannot switch files), and a flag
/// the running mount does not have (ro, nosuid, nodev, noexec and their opposites are fixed
/// for the mount's life: silently keeping the old one would mislead).
pub fn remount(request: &Remount<'_>) -> Result<(), String> {
    let shown = printable(&request.mountpoint.display().to_string());
    let (status, _) = ask(request.mountpoint, "status")?;
    let running = PathBuf::from(status["config"].as_str().unwrap_or_default());
    if !same_file(&running, request.config) {
        return Err(format!(
            "{shown} is served with {}, not {}: a remount rereads the running configuration \
             and cannot switch files (unmount and mount again to use another)",
            printable(&running.display().to_string()),
            printable(&request.config.display().to_string()),
        ));
    }
    let now = mount_flags(request.mountpoint).map_err(|e| format!("{shown}: statvfs: {e}"))?;
    for &(name, wanted) in &request.flags {
        if let Some(&(_, has)) = now.iter().find(|(n, _)| *n == name) {
            if has != wanted {
                let (asked, kept) = if wanted {
                    (name.to_string(), opposite_flag(name))
                } else {
                    (opposite_flag(name), name.to_string())
                };
                return Err(format!(
                    "{shown}: a remount cannot change the running mount's '{kept}' to \
                     '{asked}' (unmount and mount again for that); nothing reloaded"
                ));
            }
        }
    }
    reload_one(request.mountpoint)
}

/// The two paths name the same file: equal as given, or the same inode.
fn same_file(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => false,
    }
}

/// The remountable flags as the kernel holds them for the mount at `mountpoint`.
fn mount_flags(mountpoint: &Path) -> std::io::Result<Vec<(&'static str, bool)>> {
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(mountpoint)?;
    let st = sys::fstatvfs(dir.as_fd())?;
    let has = |bit: libc::c_ulong| st.f_flag & bit != 0;
    Ok(vec![
        ("ro", has(libc::ST_RDONLY)),
        ("nosuid", has(libc::ST_NOSUID)),
        ("nodev", has(libc::ST_NODEV)),
        ("noexec", has(libc::ST_NOEXEC)),
    ])
}

fn opposite_flag(name: &str) -> String {
    match name {
        "ro" => "rw".to_string(),
        other => other.trim_start_matches("no").to_string(),
    }
}

/// Renders the JSON answer as text (the client may be older or newer than the daemon, so it
/// reads fields by name rather than into the exact struct).
fn render_value(v: &serde_json::Value) -> String {
    let s = |k: &str| {
        printable(
            &v[k]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v[k].to_string()),
        )
    };
    let mut out = format!(
        "mountpoint     {}\nconfig         {}\npid            {}\nuptime         {}s\n\
         transport      {}\n\
         nodes          {} ({} with an open fd)\naudit log      {}\n\
         audit events   {} written, {} dropped{}\nrules\n",
        s("mountpoint"),
        s("config"),
        s("pid"),
        s("uptime_secs"),
        // A daemon older than the field does not send it.
        printable(v["transport"].as_str().unwrap_or("/dev/fuse")),
        s("nodes"),
        s("node_fds"),
        printable(v["audit_log"].as_str().unwrap_or("(none)")),
        s("audit_written"),
        s("audit_dropped"),
        // A daemon older than the count does not send it.
        if v.get("audit_suppressed").is_some() {
            format!(", {} suppressed", s("audit_suppressed"))
        } else {
            String::new()
        },
    );
    for rule in v["rules"].as_array().into_iter().flatten() {
        out.push_str(&format!("  {}\n", printable(rule.as_str().unwrap_or("?"))));
    }
    out.push_str("operations (audited)\n");
    for row in v["operations"].as_array().into_iter().flatten() {
        let op = printable(row[0].as_str().unwrap_or("?"));
        let result = printable(row[1].as_str().unwrap_or("?"));
        out.push_str(&format!("  {op:<12} {result:<10} {}\n", row[2]));
    }
    out.push_str(&render_stages(v));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names_escape_like_systemd() {
        let name = |p: &str| socket_name(Path::new(p));
        assert_eq!(
            name("/home/optdir/jumpserver"),
            "home-optdir-jumpserver.sock"
        );
        assert_eq!(name("/srv/a-b c"), "srv-a\\x2db\\x20c.sock");
        assert_eq!(name("/"), "-.sock");
        assert_ne!(name("/a/b"), name("/a-b"));
        let long = format!("/{}", "x".repeat(200));
        assert!(name(&long).len() < 30);
    }

    #[test]
    fn socket_dir_planted_by_another_user_or_as_symlink_is_refused() {
        if sys::geteuid() != 0 {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        // Created and owned by this user: accepted, made 0700.
        let mine = tmp.path().join("mine");
        std::fs::create_dir(&mine).unwrap();
        std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o777)).unwrap();
        prepare_dir(&mine).unwrap();
        let mode = std::fs::metadata(&mine).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // Planted by another uid: refused, left as it was.
        let planted = tmp.path().join("planted");
        std::fs::create_dir(&planted).unwrap();
        std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
        let e = prepare_dir(&planted).unwrap_err();
        assert!(e.to_string().contains("belongs to uid 65534"), "{e}");
        // A symlink to a directory of ours: not followed.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&mine, &link).unwrap();
        let e = prepare_dir(&link).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
    }

    /// A request is answered by the first reload that starts after it, never by one that was
    /// already reading the old file; no reload in time: no verdict.
    #[test]
    fn reload_verdict_comes_from_a_reload_started_after_the_request() {
        let reloads = Reloads::default();
        let short = Duration::from_millis(20);
        reloads.begin();
        let ticket = reloads.ticket();
        reloads.finish(&Err("stale".into()));
        assert_eq!(reloads.outcome(ticket, short), None);
        reloads.begin();
        reloads.finish(&Ok("2 rules".into()));
        assert_eq!(reloads.outcome(ticket, short), Some(Ok("2 rules".into())));
        let ticket = reloads.ticket();
        assert_eq!(reloads.outcome(ticket, short), None);
    }

    #[test]
    fn reload_verdicts_read_from_answers() {
        let refused =
            serde_json::json!({"reloading": true, "reloaded": false, "detail": "x:1: bad\u{1b}"});
        let e = reload_verdict(&refused, "/mp").unwrap_err();
        assert_eq!(
            e,
            "/mp: reload refused, the old rules stay: x:1: bad\\u{1b}"
        );
        let late = serde_json::json!({"reloading": true, "reloaded": null});
        assert!(reload_verdict(&late, "/mp")
            .unwrap_err()
            .contains("did not finish"));
        // An older daemon: no verdict at all, accepted as before.
        assert!(reload_verdict(&serde_json::json!({"reloading": true}), "/mp").is_ok());
        let ok = serde_json::json!({"reloading": true, "reloaded": true, "detail": "1 rules"});
        assert!(reload_verdict(&ok, "/mp").is_ok());
    }

    #[test]
    fn printable_escapes_controls_and_bidi() {
        assert_eq!(
            printable("a\u{1b}[2Jb\r\u{202e}c"),
            "a\\u{1b}[2Jb\\u{d}\\u{202e}c"
        );
        assert_eq!(printable("/home/ünïcode ok"), "/home/ünïcode ok");
    }

    #[test]
    fn status_renders_every_field() {
        let status = Status {
            mountpoint: "/legacy".into(),
            config: "/etc/relocfs/x.toml".into(),
            pid: 42,
            uptime_secs: 7,
            transport: "io_uring".into(),
            rules: vec!["/ -> /opt/app (ro)".into()],
            nodes: 3,
            node_fds: 2,
            audit_log: None,
            audit_written: 10,
            audit_dropped: 1,
            audit_suppressed: 5,
            operations: vec![("open".into(), "ok".into(), 9)],
            stages: vec![
                RuleStage {
                    rule: "/keys".into(),
                    stage: "brownout",
                    now: "warn",
                    next_window: Some((
                        "2027-01-10T09:00:00Z".into(),
                        "2027-01-10T10:00:00Z".into(),
                    )),
                    retire_after: Some("2027-02-01T00:00:00Z".into()),
                    last_access: None,
                },
                RuleStage {
                    rule: "/".into(),
                    stage: "serve",
                    now: "serve",
                    next_window: None,
                    retire_after: None,
                    last_access: Some("2026-12-01T18:00:00Z".into()),
                },
            ],
        };
        let value = serde_json::to_value(&status).unwrap();
        assert_eq!(render_value(&value), status.render());
        assert!(status.render().contains("open         ok         9"));
        assert!(status.render().contains(
            "stages\n  /keys  brownout, now warn; next window 2027-01-10T09:00:00Z to \
             2027-01-10T10:00:00Z; retired from 2027-02-01T00:00:00Z; no access since start\n  \
             /  serve, now serve; last access 2026-12-01T18:00:00Z\n"
        ));
        assert!(status.render().contains("\ntransport      io_uring\n"));
        assert!(status
            .render()
            .contains("audit events   10 written, 1 dropped, 5 suppressed\n"));
    }

    /// An older daemon's answer has no suppressed count: the line shows none, not "null".
    #[test]
    fn status_from_an_older_daemon_has_no_suppressed_count() {
        let value = serde_json::json!({"audit_written": 3, "audit_dropped": 0});
        assert!(render_value(&value).contains("audit events   3 written, 0 dropped\n"));
    }
}
