//! The control channel: a Unix socket per mount, in a directory only the daemon's user can
//! enter, where `relocfs status MOUNTPOINT` reads the live state of a running mount.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Weak;
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

fn user_socket_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) => PathBuf::from(dir).join("relocfs"),
        None => std::env::temp_dir().join(format!("relocfs-{}", sys::geteuid())),
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

fn fnv1a(data: &[u8]) -> u64 {
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
    pub rules: Vec<String>,
    pub nodes: usize,
    pub node_fds: usize,
    pub audit_log: Option<String>,
    pub audit_written: u64,
    pub audit_dropped: u64,
    /// Audited operations by op and result.
    pub operations: Vec<(String, String, u64)>,
}

impl Status {
    /// Plain text for a terminal.
    pub fn render(&self) -> String {
        let mut out = format!(
            "mountpoint     {}\nconfig         {}\npid            {}\nuptime         {}s\n\
             nodes          {} ({} with an open fd)\naudit log      {}\n\
             audit events   {} written, {} dropped\nrules\n",
            self.mountpoint,
            self.config,
            self.pid,
            self.uptime_secs,
            self.nodes,
            self.node_fds,
            self.audit_log.as_deref().unwrap_or("(none)"),
            self.audit_written,
            self.audit_dropped,
        );
        for rule in &self.rules {
            out.push_str(&format!("  {rule}\n"));
        }
        out.push_str("operations (audited)\n");
        for (op, result, n) in &self.operations {
            out.push_str(&format!("  {op:<12} {result:<10} {n}\n"));
        }
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
            rules: fs.describe_rules(),
            nodes: fs.node_count(),
            node_fds: fs.node_fds(),
            audit_log: self.audit_log.as_ref().map(|p| p.display().to_string()),
            audit_written: audit.as_ref().map_or(0, |a| a.written()),
            audit_dropped: audit.as_ref().map_or(0, |a| a.dropped()),
            operations: fs.operation_counts(),
        })
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

/// Binds the socket of `source.mountpoint` and answers each connection with the status as
/// JSON, from a thread of its own. A stale socket of a dead daemon is replaced.
pub fn serve(source: Source) -> std::io::Result<Server> {
    let path = socket_path(&source.mountpoint);
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        // Only the daemon's user (root, or the mounting user) may connect.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let md = std::fs::symlink_metadata(&path)?;
    let id = (md.dev(), md.ino());
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
                let Some(status) = source.status() else {
                    return;
                };
                match serde_json::to_vec(&status) {
                    Ok(body) => {
                        let _ = stream.write_all(&body);
                    }
                    Err(e) => log::error!("status: {e}"),
                }
            }
        })?;
    Ok(Server { path, id })
}

/// `relocfs status MOUNTPOINT`: asks the daemon serving it.
pub fn query(mountpoint: &Path, json: bool) -> Result<String, String> {
    let shown = mountpoint.display();
    let canonical = mountpoint
        .canonicalize()
        .map_err(|e| format!("{shown}: {e}"))?;
    // A mount made by root answers in /run/relocfs, one made by this user in its own
    // directory; try both, so a user asking about root's mount learns it is not allowed.
    let name = socket_name(&canonical);
    let candidates = [
        user_socket_dir().join(&name),
        Path::new(ROOT_DIR).join(&name),
    ];
    let mut last = None;
    let mut stream = None;
    for path in &candidates {
        match UnixStream::connect(path) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some((path, e)),
        }
    }
    let mut stream = match (stream, last) {
        (Some(s), _) => s,
        (None, Some((path, e))) => {
            let denied = candidates.iter().find(|p| {
                matches!(UnixStream::connect(p), Err(e) if e.raw_os_error() == Some(libc::EACCES))
            });
            return Err(match denied {
                Some(p) => format!(
                    "{}: permission denied: only root or the user who mounted {shown} can read its status",
                    p.display()
                ),
                None => format!(
                    "no relocfs daemon is serving {shown} (no control socket at {}: {e})",
                    path.display()
                ),
            });
        }
        (None, None) => return Err(format!("no relocfs daemon is serving {shown}")),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut body = Vec::new();
    stream
        .read_to_end(&mut body)
        .map_err(|e| format!("reading the status of {shown}: {e}"))?;
    if body.is_empty() {
        return Err(format!("the relocfs daemon of {shown} is shutting down"));
    }
    if json {
        return Ok(format!("{}\n", String::from_utf8_lossy(&body)));
    }
    let status: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("status of {shown}: {e}"))?;
    Ok(render_value(&status))
}

/// Renders the JSON answer as text (the client may be older or newer than the daemon, so it
/// reads fields by name rather than into the exact struct).
fn render_value(v: &serde_json::Value) -> String {
    let s = |k: &str| {
        v[k].as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v[k].to_string())
    };
    let mut out = format!(
        "mountpoint     {}\nconfig         {}\npid            {}\nuptime         {}s\n\
         nodes          {} ({} with an open fd)\naudit log      {}\n\
         audit events   {} written, {} dropped\nrules\n",
        s("mountpoint"),
        s("config"),
        s("pid"),
        s("uptime_secs"),
        s("nodes"),
        s("node_fds"),
        v["audit_log"].as_str().unwrap_or("(none)"),
        s("audit_written"),
        s("audit_dropped"),
    );
    for rule in v["rules"].as_array().into_iter().flatten() {
        out.push_str(&format!("  {}\n", rule.as_str().unwrap_or("?")));
    }
    out.push_str("operations (audited)\n");
    for row in v["operations"].as_array().into_iter().flatten() {
        let op = row[0].as_str().unwrap_or("?");
        let result = row[1].as_str().unwrap_or("?");
        out.push_str(&format!("  {op:<12} {result:<10} {}\n", row[2]));
    }
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
    fn status_renders_every_field() {
        let status = Status {
            mountpoint: "/legacy".into(),
            config: "/etc/relocfs/x.toml".into(),
            pid: 42,
            uptime_secs: 7,
            rules: vec!["/ -> /opt/app (ro)".into()],
            nodes: 3,
            node_fds: 2,
            audit_log: None,
            audit_written: 10,
            audit_dropped: 1,
            operations: vec![("open".into(), "ok".into(), 9)],
        };
        let value = serde_json::to_value(&status).unwrap();
        assert_eq!(render_value(&value), status.render());
        assert!(status.render().contains("open         ok         9"));
    }
}
