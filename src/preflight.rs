//! Everything checked before anything is mounted (and again before a reload is accepted): the
//! rule targets, the mountpoint, the audit log's place, and what an unprivileged mount needs.
//! Each refusal is one line for the operator that names the problem and the fix.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use crate::config::{Action, Config};
use crate::options::{Access, MountOptions};
use crate::rules::RuleRoot;
use crate::sys;

/// Everything the mount needs, checked and opened before anything is mounted.
pub struct Prepared {
    /// Canonical mountpoint (empty when none was given, for `relocfs check CONFIG`).
    pub mountpoint: PathBuf,
    pub roots: Vec<Option<RuleRoot>>,
}

/// What to do about a dead relocfs mount (ENOTCONN) found at the mountpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// Detach it and mount in its place (mounting).
    Replace,
    /// Only report it (`relocfs check`).
    Report,
}

/// Runs every check the mount would. Errors are one line for the operator.
pub fn preflight(
    config: &Config,
    mountpoint: Option<&Path>,
    stale: Stale,
) -> Result<Prepared, String> {
    let roots = open_roots(config)?;
    let Some(mp) = mountpoint else {
        return Ok(Prepared {
            mountpoint: PathBuf::new(),
            roots,
        });
    };
    let mountpoint = check_mountpoint(mp, stale)?;
    check_placement(config, &mountpoint)?;
    Ok(Prepared { mountpoint, roots })
}

/// Opens every rule's target as an `O_PATH` directory handle.
pub fn open_roots(config: &Config) -> Result<Vec<Option<RuleRoot>>, String> {
    let source = config.source.display();
    let mut roots = Vec::with_capacity(config.rules.len());
    for (i, rule) in config.rules.iter().enumerate() {
        let Action::Map { to, mode } = &rule.action else {
            roots.push(None);
            continue;
        };
        let n = i + 1;
        let fd = sys::open_dir_path(to).map_err(|e| {
            let why = match e.raw_os_error() {
                Some(libc::ENOENT) => "does not exist".to_string(),
                Some(libc::ENOTDIR) => "is not a directory".to_string(),
                _ => format!("cannot be opened: {e}"),
            };
            format!(
                "{source}: map #{n} (from = \"{}\"): target {} {why}",
                rule.from,
                to.display()
            )
        })?;
        let stat = sys::fstat(fd.as_fd()).map_err(|e| format!("{}: {e}", to.display()))?;
        roots.push(Some(RuleRoot {
            fd,
            to: to.clone(),
            mode: *mode,
            stat,
        }));
    }
    Ok(roots)
}

/// Targets must neither contain the mountpoint (the mount would serve itself) nor lie inside
/// it (hidden by the mount); the audit log and the metrics textfile must not lie inside it
/// either.
pub fn check_placement(config: &Config, mountpoint: &Path) -> Result<(), String> {
    let source = config.source.display();
    for (i, rule) in config.rules.iter().enumerate() {
        let Action::Map { to, .. } = &rule.action else {
            continue;
        };
        let real = to.canonicalize().unwrap_or_else(|_| to.clone());
        let n = i + 1;
        if mountpoint.starts_with(&real) {
            return Err(format!(
                "{source}: map #{n}: target {} contains the mountpoint {}: the mount would \
                 serve itself; point the rule at the real installation",
                to.display(),
                mountpoint.display()
            ));
        }
        if real.starts_with(mountpoint) {
            return Err(format!(
                "{source}: map #{n}: target {} lies inside the mountpoint {}: it would be \
                 hidden by the mount",
                to.display(),
                mountpoint.display()
            ));
        }
    }
    let files = [
        ("audit log", &config.audit.log),
        ("[metrics] textfile", &config.metrics.textfile),
    ];
    for (what, log) in files {
        let Some(log) = log else { continue };
        let parent = log.parent().unwrap_or(Path::new("/"));
        let real_parent = parent
            .canonicalize()
            .unwrap_or_else(|_| parent.to_path_buf());
        if real_parent.starts_with(mountpoint) {
            return Err(format!(
                "{source}: {what} {} lies inside the mountpoint {}",
                log.display(),
                mountpoint.display()
            ));
        }
    }
    Ok(())
}

/// How long `relocfs` waits for a relocfs mount found at the mountpoint to answer statfs
/// before it calls its daemon hung (a live daemon answers in microseconds).
const PROBE_WAIT: Duration = Duration::from_secs(3);

/// The mountpoint must be a real directory: mounting on a symlink would mount on its target,
/// which on a migrated host is the real installation itself. A dead relocfs mount there (the
/// daemon was killed) is replaced; any other mount is left alone and refused.
fn check_mountpoint(mp: &Path, stale: Stale) -> Result<PathBuf, String> {
    let shown = mp.display();
    // A dead mount stacked on another dead one is replaced too, one at a time.
    for _ in 0..8 {
        // Before anything stats the path: stat(2) of a hung daemon's root would hang too.
        if check_existing_mount(mp, stale)? == Existing::Replaced {
            continue;
        }
        let st = match sys::lstat(mp) {
            Err(e) if is_dead_connection(&e) => {
                replace_dead(mp, stale, None)?;
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                return Err(format!(
                    "mountpoint {shown} does not exist: create it with `mkdir -p {shown}`"
                ))
            }
            Err(e) => return Err(format!("mountpoint {shown}: {e}")),
            Ok(st) => st,
        };
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {}
            libc::S_IFLNK => {
                let to = std::fs::read_link(mp)
                    .map(|t| format!(" (to {})", t.display()))
                    .unwrap_or_default();
                return Err(format!(
                    "mountpoint {shown} is a symlink{to}: relocfs replaces that symlink; remove \
                     it and create an empty directory: `rm {shown} && mkdir {shown}`"
                ));
            }
            _ => return Err(format!("mountpoint {shown} is not a directory")),
        }
        let canonical = mp
            .canonicalize()
            .map_err(|e| format!("mountpoint {shown}: {e}"))?;
        if canonical != mp && check_existing_mount(&canonical, stale)? == Existing::Replaced {
            continue;
        }
        return Ok(canonical);
    }
    Err(format!(
        "mountpoint {shown}: dead mounts keep reappearing there; detach them with `umount -l {shown}`"
    ))
}

#[derive(Debug, PartialEq, Eq)]
enum Existing {
    Nothing,
    Replaced,
}

/// Looks at the mount exactly at `path` (from mountinfo, touching nothing below it). None:
/// fine. A dead relocfs mount: replaced. Anything else, a live or a hung relocfs included:
/// refused.
fn check_existing_mount(path: &Path, stale: Stale) -> Result<Existing, String> {
    let shown = path.display();
    let Some(mount) = mount_at(path) else {
        return Ok(Existing::Nothing);
    };
    if mount.fstype == "fuse.relocfs" {
        // The kernel answers stat(2) of a dead mount's root from its attribute cache for
        // attr_timeout seconds after the daemon died; statfs always goes to the daemon.
        match probe_statfs(path, PROBE_WAIT) {
            Some(Err(e)) if is_dead_connection(&e) => {
                replace_dead(path, stale, Some(mount.dev))?;
                return Ok(Existing::Replaced);
            }
            None => {
                return Err(format!(
                    "{shown} is a relocfs mount whose daemon does not answer (no statfs reply \
                     in {} s): stop that daemon, or detach the mount with `umount -l {shown}`",
                    PROBE_WAIT.as_secs()
                ))
            }
            Some(_) => {}
        }
    }
    Err(format!(
        "{shown} is already a mount point ({}): unmount it first (`umount {shown}`)",
        mount.fstype
    ))
}

/// The errors of a FUSE connection whose daemon is gone: ENOTCONN for new requests,
/// ECONNABORTED for those in flight when it went.
fn is_dead_connection(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)
    )
}

/// Detaches the dead mount at `mp` if it is relocfs's own; refuses anything else. `dead` is the
/// device of the mount found dead: if the topmost mount there is another one by now (a relocfs
/// started at the same moment mounted over it), nothing is detached and the caller looks again.
fn replace_dead(mp: &Path, stale: Stale, dead: Option<(u32, u32)>) -> Result<(), String> {
    let shown = mp.display();
    let now = mount_at(mp);
    if let (Some(want), Some(m)) = (dead, &now) {
        if m.dev != want {
            return Ok(());
        }
    }
    let fstype = now.map_or_else(|| "unknown".into(), |m| m.fstype);
    if fstype != "fuse.relocfs" {
        return Err(format!(
            "mountpoint {shown} is a dead FUSE mount of another filesystem ({fstype}): \
             relocfs replaces only its own; unmount it with `umount -l {shown}`"
        ));
    }
    if stale == Stale::Report {
        return Err(format!(
            "mountpoint {shown} is a dead relocfs mount (its daemon died): mounting relocfs \
             there again replaces it"
        ));
    }
    log::warn!("{shown}: replacing a dead relocfs mount");
    sys::umount(mp, libc::MNT_DETACH)
        .map_err(|e| format!("cannot detach the dead relocfs mount at {shown}: {e}"))
}

/// statfs of `path` from a short-lived thread, waiting at most `wait`: `None` when it did not
/// answer. The thread is joined whenever it answered, so the process is single-threaded again
/// before it forks; when it hangs, the caller refuses and exits without forking.
fn probe_statfs(path: &Path, wait: Duration) -> Option<std::io::Result<()>> {
    let (tx, rx) = mpsc::channel();
    let owned = path.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("statfs-probe".into())
        .spawn(move || {
            let _ = tx.send(sys::statfs(&owned));
        });
    let Ok(handle) = spawned else {
        return Some(sys::statfs(path));
    };
    let answer = rx.recv_timeout(wait).ok()?;
    let _ = handle.join();
    Some(answer)
}

/// One mount of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// The superblock's device (major, minor): for FUSE, the connection itself.
    pub dev: (u32, u32),
    pub fstype: String,
}

/// The filesystem type of the topmost mount exactly at `path`, from /proc/self/mountinfo.
pub fn mount_type(path: &Path) -> Option<String> {
    mount_at(path).map(|m| m.fstype)
}

/// The topmost mount exactly at `path`, from /proc/self/mountinfo.
pub fn mount_at(path: &Path) -> Option<MountInfo> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let wanted = path.as_os_str().to_string_lossy();
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let mountpoint = unescape_mountinfo(fields.get(4)?);
        if mountpoint != wanted {
            return None;
        }
        let (major, minor) = fields.get(2)?.split_once(':')?;
        let dash = fields.iter().position(|f| *f == "-")?;
        Some(MountInfo {
            dev: (major.parse().ok()?, minor.parse().ok()?),
            fstype: fields.get(dash + 1)?.to_string(),
        })
    })
}

/// mountinfo writes space, tab, newline and backslash as `\040`-style octal escapes.
pub fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            let octal = digits.iter().all(|d| (b'0'..=b'7').contains(d));
            let value = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok());
            if let (true, Some(v)) = (octal, value) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What mounting without root privileges needs, checked up front so the error says which.
pub fn check_unprivileged(options: &MountOptions) -> Result<(), String> {
    if sys::geteuid() == 0 {
        return Ok(());
    }
    // fuser opens /dev/fuse itself before it falls back to fusermount3, so an ordinary user
    // needs it readable and writable (mode 0666 is the usual default).
    if let Err(e) = sys::access(Path::new("/dev/fuse"), libc::R_OK | libc::W_OK) {
        return Err(format!(
            "cannot mount as uid {}: /dev/fuse is not usable by this user ({e}); mount as root, \
             or give /dev/fuse mode 0666 (the usual default)",
            sys::geteuid()
        ));
    }
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join("fusermount3").exists()))
        .unwrap_or(false);
    if !found {
        return Err(
            "cannot mount: not running as root and fusermount3 is not installed (install the \
             fuse3 package, or run as root)"
                .into(),
        );
    }
    if options.access != Access::Owner {
        let conf = std::fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
        let allowed = conf
            .lines()
            .any(|l| l.split('#').next().unwrap_or("").trim() == "user_allow_other");
        if !allowed {
            return Err(
                "cannot mount with allow_other/allow_root as an ordinary user: add \
                 `user_allow_other` to /etc/fuse.conf, or run as root"
                    .into(),
            );
        }
    }
    Ok(())
}

/// Checks the audit log's place before anything is mounted, creating nothing: no final
/// symlink, a regular file (a FIFO would block the daemon), in a directory no other user can
/// write (see `audit::LogPlace`). The mount then creates what is missing with the same checks.
pub fn probe_audit_log(log: &Path) -> Result<(), String> {
    crate::audit::LogPlace::resolve(log)
        .map(drop)
        .map_err(|e| format!("audit log {}: {e}", log.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo(r"/mnt/tab\011x\134"), "/mnt/tab\tx\\");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn root_mount_type_is_found() {
        // "/" is always a mount point.
        assert!(mount_type(Path::new("/")).is_some());
        assert!(mount_type(Path::new("/definitely/not/a/mount")).is_none());
    }
}
