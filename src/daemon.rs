//! Preflight checks, mounting and the daemon's life: fork before any thread, report "mounted and
//! serving" to the waiting parent, serve, unmount cleanly on SIGTERM/SIGINT.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::audit::AuditLog;
use crate::config::{Action, Config};
use crate::fs::{Fs, FsOptions, RuleRoot};
use crate::fuse::{Adapter, Timeouts};
use crate::options::{Access, MountOptions};
use crate::prefix::PrefixTable;
use crate::sys;

/// How many audit events may wait for the writer before new ones are counted as dropped.
const AUDIT_QUEUE: usize = 64 * 1024;

/// Everything the mount needs, checked and opened before anything is mounted.
pub struct Prepared {
    pub mountpoint: PathBuf,
    pub roots: Vec<Option<RuleRoot>>,
}

/// Runs every check the mount would, without mounting. `mountpoint` may be absent for
/// `relocfs check CONFIG`. Errors are one line for the operator.
pub fn preflight(config: &Config, mountpoint: Option<&Path>) -> Result<Prepared, String> {
    let source = config.source.display();
    let mut roots = Vec::with_capacity(config.rules.len());
    for (i, rule) in config.rules.iter().enumerate() {
        let n = i + 1;
        let Action::Map { to, mode } = &rule.action else {
            roots.push(None);
            continue;
        };
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

    let mountpoint = match mountpoint {
        Some(mp) => check_mountpoint(mp)?,
        None => {
            return Ok(Prepared {
                mountpoint: PathBuf::new(),
                roots,
            })
        }
    };
    for (i, rule) in config.rules.iter().enumerate() {
        if let Action::Map { to, .. } = &rule.action {
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
            if real.starts_with(&mountpoint) {
                return Err(format!(
                    "{source}: map #{n}: target {} lies inside the mountpoint {}: it would be \
                     hidden by the mount",
                    to.display(),
                    mountpoint.display()
                ));
            }
        }
    }
    if let Some(log) = &config.audit.log {
        let parent = log.parent().unwrap_or(Path::new("/"));
        let real_parent = parent
            .canonicalize()
            .unwrap_or_else(|_| parent.to_path_buf());
        if real_parent.starts_with(&mountpoint) {
            return Err(format!(
                "{source}: audit log {} lies inside the mountpoint {}",
                log.display(),
                mountpoint.display()
            ));
        }
    }
    Ok(Prepared { mountpoint, roots })
}

/// The mountpoint must be a real directory: mounting on a symlink would mount on its target,
/// which on a migrated host is the real installation itself.
fn check_mountpoint(mp: &Path) -> Result<PathBuf, String> {
    let shown = mp.display();
    let st = sys::lstat(mp).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => {
            format!("mountpoint {shown} does not exist: create it with `mkdir -p {shown}`")
        }
        Some(libc::ENOTCONN) => format!(
            "mountpoint {shown} is a dead FUSE mount (transport endpoint is not connected): \
             unmount it first with `umount -l {shown}`"
        ),
        _ => format!("mountpoint {shown}: {e}"),
    })?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {}
        libc::S_IFLNK => {
            let to = std::fs::read_link(mp)
                .map(|t| format!(" (to {})", t.display()))
                .unwrap_or_default();
            return Err(format!(
                "mountpoint {shown} is a symlink{to}: relocfs replaces that symlink; remove it \
                 and create an empty directory: `rm {shown} && mkdir {shown}`"
            ));
        }
        _ => return Err(format!("mountpoint {shown} is not a directory")),
    }
    mp.canonicalize()
        .map_err(|e| format!("mountpoint {shown}: {e}"))
}

/// What mounting without root privileges needs, checked up front so the error says which.
fn check_unprivileged(options: &MountOptions) -> Result<(), String> {
    if sys::geteuid() == 0 {
        return Ok(());
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

/// The channel over which a detached daemon tells the waiting parent how mounting went.
pub struct Readiness {
    pipe: Option<File>,
    /// A detached daemon drops its terminal once mounted.
    detached: bool,
}

impl Readiness {
    pub fn foreground() -> Readiness {
        Readiness {
            pipe: None,
            detached: false,
        }
    }

    /// The mount is live and the kernel's first requests will be served.
    fn ready(&mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            // If the parent is gone nobody is waiting: nothing to do about it.
            let _ = pipe.write_all(&[0]);
        }
    }

    /// Sends the one-line error to the parent (or returns it, in the foreground).
    fn fail(&mut self, message: &str) -> bool {
        match self.pipe.take() {
            Some(mut pipe) => {
                let _ = pipe.write_all(message.as_bytes());
                true
            }
            None => false,
        }
    }
}

/// Mounts and serves until unmounted. Daemonises first unless `foreground`: the parent returns
/// only once the child reports the mount live, or prints the child's error.
pub fn run(
    config: Config,
    mountpoint: &Path,
    options: MountOptions,
    foreground: bool,
) -> Result<(), String> {
    let prepared = preflight(&config, Some(mountpoint))?;
    check_unprivileged(&options)?;
    if let Some(log) = &config.audit.log {
        // Opened here (and closed) so a bad path is reported before forking.
        probe_audit_log(log)?;
    }
    if foreground {
        return serve(config, prepared, options, Readiness::foreground());
    }
    let (mut read_end, write_end) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
    match sys::fork().map_err(|e| format!("fork: {e}"))? {
        sys::Forked::Parent => {
            drop(write_end);
            let mut report = Vec::new();
            let _ = read_end.read_to_end(&mut report);
            match report.first() {
                Some(0) => Ok(()),
                Some(_) => Err(String::from_utf8_lossy(&report).trim().to_string()),
                None => Err("the daemon exited before the mount was ready".into()),
            }
        }
        sys::Forked::Child => {
            drop(read_end);
            sys::setsid();
            let readiness = Readiness {
                pipe: Some(write_end),
                detached: true,
            };
            // The parent has printed the error already when it came before readiness.
            let code = match serve(config, prepared, options, readiness) {
                Ok(()) => 0,
                Err(message) => {
                    if !message.is_empty() {
                        log::error!("{message}");
                    }
                    1
                }
            };
            std::process::exit(code)
        }
    }
}

fn probe_audit_log(log: &Path) -> Result<(), String> {
    if let Some(parent) = log.parent() {
        if !parent.exists() {
            std::fs::create_dir_all(parent).map_err(|e| {
                format!(
                    "cannot create audit log directory {}: {e}",
                    parent.display()
                )
            })?;
        }
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .map(drop)
        .map_err(|e| format!("cannot open audit log {}: {e}", log.display()))
}

/// Mounts, reports readiness, and serves until unmounted.
fn serve(
    config: Config,
    prepared: Prepared,
    options: MountOptions,
    mut readiness: Readiness,
) -> Result<(), String> {
    let result = serve_inner(config, prepared, options, &mut readiness);
    if let Err(message) = &result {
        if readiness.fail(message) {
            // The parent prints it; the detached child has nobody else to tell.
            return Err(String::new());
        }
    }
    result
}

fn serve_inner(
    config: Config,
    prepared: Prepared,
    options: MountOptions,
    readiness: &mut Readiness,
) -> Result<(), String> {
    if let Err(e) = sys::raise_nofile_limit() {
        log::warn!("cannot raise the open-file limit: {e}");
    }
    sys::ignore_sigpipe();
    // Blocked before any thread starts, so every thread inherits the mask and only the
    // signal thread sees these.
    let signals = sys::block_signals(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP])
        .map_err(|e| format!("signal setup: {e}"))?;

    let audit = match &config.audit.log {
        Some(path) => AuditLog::open(path, AUDIT_QUEUE)
            .map_err(|e| format!("cannot open audit log {}: {e}", path.display()))?,
        None => AuditLog::disabled(),
    };
    let mountpoint = prepared.mountpoint.clone();
    let table = PrefixTable::new(&config.rules);
    let fs_options = FsOptions {
        allow_devices: options.allows_devices(),
    };
    let fs = Fs::new(mountpoint.clone(), table, prepared.roots, audit, fs_options)
        .map_err(|e| format!("cannot set up the filesystem: {e}"))?;
    let adapter = Adapter::new(
        fs,
        Timeouts {
            attr: config.fuse.attr_timeout,
            entry: config.fuse.entry_timeout,
        },
    );

    let mut fuser_config = fuser::Config::default();
    fuser_config.mount_options = options.to_fuser(&config.source.to_string_lossy());
    fuser_config.acl = options.session_acl();
    fuser_config.n_threads = Some(config.fuse.threads);
    fuser_config.clone_fd = true;
    let session = fuser::Session::new(adapter, &mountpoint, &fuser_config)
        .map_err(|e| format!("cannot mount {}: {}", mountpoint.display(), mount_error(&e)))?;

    let signal_mountpoint = mountpoint.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || handle_signals(&signals, &signal_mountpoint))
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;

    log::info!("serving {}", mountpoint.display());
    readiness.ready();
    if readiness.detached {
        // Nobody reads the terminal of a daemon; diagnostics need -f (or the journal).
        let _ = sys::detach_stdio();
    }
    session
        .run()
        .map_err(|e| format!("{}: session ended: {e}", mountpoint.display()))?;
    log::info!("unmounted {}", mountpoint.display());
    Ok(())
}

fn mount_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            format!("{e} (mounting needs root or fusermount3)")
        }
        Some(libc::ENODEV) | Some(libc::ENOENT) if !Path::new("/dev/fuse").exists() => {
            "/dev/fuse is missing: load the fuse module (`modprobe fuse`)".into()
        }
        _ => e.to_string(),
    }
}

/// TERM and INT unmount; the session then ends by itself once the kernel lets go. A busy
/// mountpoint is detached lazily: no new access enters, open files are served to the end.
fn handle_signals(signals: &libc::sigset_t, mountpoint: &Path) {
    loop {
        match sys::wait_signal(signals) {
            Ok(libc::SIGHUP) => log::warn!("SIGHUP: configuration reload is not implemented yet"),
            Ok(sig) => {
                log::info!("signal {sig}: unmounting {}", mountpoint.display());
                unmount(mountpoint);
                return;
            }
            Err(e) => {
                log::error!("waiting for signals: {e}");
                return;
            }
        }
    }
}

/// Unmounts as root directly, as an ordinary user through fusermount3.
pub fn unmount(mountpoint: &Path) {
    if sys::geteuid() != 0 {
        let status = Command::new("fusermount3")
            .args([OsStr::new("-u"), OsStr::new("-z"), OsStr::new("--")])
            .arg(mountpoint)
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            log::error!("fusermount3 -u {} failed", mountpoint.display());
        }
        return;
    }
    match sys::umount(mountpoint, 0) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            log::warn!("{} is busy: detaching it lazily", mountpoint.display());
            if let Err(e) = sys::umount(mountpoint, libc::MNT_DETACH) {
                log::error!("lazy unmount of {} failed: {e}", mountpoint.display());
            }
        }
        Err(e) => log::error!("unmount of {} failed: {e}", mountpoint.display()),
    }
}
