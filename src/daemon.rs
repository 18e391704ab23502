//! Preflight checks, mounting and the daemon's life: fork before any thread, report "mounted and
//! serving" to the waiting parent, serve, unmount cleanly on SIGTERM/SIGINT.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use crate::audit::AuditLog;
use crate::config::{self, Config, Transport};
use crate::control;
use crate::exit::Exit;
use crate::fs::Fs;
use crate::fuse::Adapter;
use crate::options::MountOptions;
use crate::plan::{Fixed, MountPlan};
use crate::prefix::PrefixTable;
use crate::preflight::{self, check_unprivileged, preflight, probe_audit_log, Prepared, Stale};
use crate::sys;
use crate::uring;

/// How many audit events may wait for the writer before new ones are counted as dropped. The
/// queue's slots are allocated up front (about 200 bytes each), so this is also ~3 MiB of
/// resident memory; the writer drains far faster than FUSE requests arrive.
const AUDIT_QUEUE: usize = 16 * 1024;

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
    let prepared = preflight(&config, Some(mountpoint), Stale::Replace)?;
    check_unprivileged(&options)?;
    if let Some(log) = &config.audit.log {
        // Opened here (and closed) so a bad path is reported before forking.
        probe_audit_log(log)?;
    }
    if let Some(textfile) = &config.metrics.textfile {
        crate::metrics::probe(textfile)?;
    }
    let plan = MountPlan::new(&config, options);
    if foreground {
        return serve(plan, prepared, Readiness::foreground());
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
            let exit = match serve(plan, prepared, readiness) {
                Ok(()) => Exit::Success,
                Err(message) => {
                    if !message.is_empty() {
                        log::error!("{message}");
                    }
                    Exit::Failure
                }
            };
            exit.exit_process()
        }
    }
}

/// Mounts, reports readiness, and serves until unmounted.
fn serve(plan: MountPlan, prepared: Prepared, mut readiness: Readiness) -> Result<(), String> {
    let result = serve_inner(plan, prepared, &mut readiness);
    if let Err(message) = &result {
        if readiness.fail(message) {
            // The parent prints it; the detached child has nobody else to tell.
            return Err(String::new());
        }
    }
    result
}

fn serve_inner(
    plan: MountPlan,
    prepared: Prepared,
    readiness: &mut Readiness,
) -> Result<(), String> {
    if let Err(e) = sys::raise_nofile_limit() {
        log::warn!("cannot raise the open-file limit: {e}");
    }
    sys::ignore_sigpipe();
    // Before any thread starts: see `single_malloc_arena` (daemon RSS after a forgotten walk).
    sys::single_malloc_arena();
    // Blocked before any thread starts, so every thread inherits the mask and only the
    // signal thread sees these.
    let signals = sys::block_signals(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1])
        .map_err(|e| format!("signal setup: {e}"))?;

    let fixed = &plan.fixed;
    let audit = Arc::new(match &fixed.audit_log {
        Some(path) => AuditLog::open_with(path, AUDIT_QUEUE, fixed.audit)
            .map_err(|e| format!("cannot open audit log {}: {e}", path.display()))?,
        None => AuditLog::disabled(),
    });
    // Checked and locked before mounting: a second mount given the same file is refused.
    let textfile = match &fixed.metrics.textfile {
        Some(path) => Some(
            crate::metrics::Textfile::open(path)
                .map_err(|e| format!("[metrics] textfile {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let mountpoint = prepared.mountpoint.clone();
    let table = PrefixTable::new(&plan.rules);
    // The rings are set up (and their threads pinned) before mounting, because fuser reads
    // and answers INIT inside `Session::new`: INIT asks for io_uring only when rings exist.
    let handshake = Arc::new(uring::Handshake::default());
    let ring_setup = if ring_wanted(fixed.transport)? {
        match (uring::prepare(), fixed.transport) {
            (Ok(p), _) => Some(p),
            (Err(e), Transport::IoUring) => {
                return Err(format!("transport io_uring: cannot set up rings: {e}"))
            }
            (Err(e), _) => {
                log::warn!("io_uring unavailable ({e}): serving over /dev/fuse");
                None
            }
        }
    } else {
        None
    };
    let fs = Fs::new(
        mountpoint.clone(),
        table,
        prepared.roots,
        Arc::clone(&audit),
        fixed.fs_options(ring_setup.as_ref().map_or(0, uring::Prepared::fds)),
    )
    .map(Arc::new)
    .map_err(|e| format!("cannot set up the filesystem: {e}"))?;
    handshake.want(ring_setup.is_some());
    let adapter = Adapter::new(Arc::clone(&fs), fixed.tuning).with_ring(Arc::clone(&handshake));
    let session = fuser::Session::new(adapter, &mountpoint, &fixed.fuser_config())
        .map_err(|e| format!("cannot mount {}: {}", mountpoint.display(), mount_error(&e)))?;
    // This mount's FUSE connection, by the device number the kernel gave its superblock. The
    // path alone does not name it: once it is detached lazily, a newer relocfs can mount on
    // the same path, and every unmount this daemon makes checks that the mount there is
    // still this one.
    let Some(conn) = preflight::mount_at(&mountpoint)
        .filter(|m| m.fstype == "fuse.relocfs")
        .map(|m| m.dev)
    else {
        // Dropping the session unmounts the mount it made a moment ago.
        return Err(format!(
            "mounted {}, but cannot find the mount in /proc/self/mountinfo",
            mountpoint.display()
        ));
    };
    // INIT is done: register the rings (a refusal drops the session, which unmounts).
    let rings = start_rings(fixed, ring_setup, &handshake, &fs, session.as_fd())?;
    let notifier = session.notifier();
    let session =
        run_session(session).map_err(|e| format!("cannot start the FUSE session: {e}"))?;
    // Rule lifecycles: warnings' destination, and the kernel's cache dropped at window edges.
    crate::stage::set_journal_socket(plan.stages.journal_socket.clone());
    crate::stage::watch_edges(Arc::downgrade(&fs), notifier.clone())
        .map_err(|e| format!("cannot start the stage thread: {e}"))?;
    let transport = if rings.is_some() {
        "io_uring"
    } else {
        "/dev/fuse"
    };

    let reloads = Arc::new(control::Reloads::default());
    // Held until the session ends; the socket goes with it.
    let _control = control::serve(control::Source {
        fs: Arc::downgrade(&fs),
        audit: Arc::downgrade(&audit),
        mountpoint: mountpoint.clone(),
        config: fixed.source.clone(),
        audit_log: fixed.audit_log.clone(),
        started: std::time::Instant::now(),
        reloads: Arc::clone(&reloads),
        transport: transport.to_string(),
    })
    .map_err(|e| log::warn!("no control socket (relocfs status will not answer): {e}"))
    .ok();

    let metrics = match textfile {
        Some(file) => {
            let counters = Arc::new(crate::metrics::Metrics::default());
            fs.set_metrics(Arc::clone(&counters));
            let source = crate::metrics::Source {
                fs: Arc::downgrade(&fs),
                audit: Arc::downgrade(&audit),
                mountpoint: mountpoint.clone(),
                // The config's spelling: "io_uring" or "dev".
                transport: if rings.is_some() { "io_uring" } else { "dev" },
                started: std::time::SystemTime::now(),
            };
            // Mounted already: serve without metrics rather than stop.
            crate::metrics::start(file, fixed.metrics.interval, counters, source)
                .map_err(|e| log::warn!("cannot start the metrics thread: {e}"))
                .ok()
        }
        None => None,
    };

    // The signal thread holds only weak references: when the session ends, the filesystem
    // and its audit log are dropped (and flushed) by the session itself.
    let asked_to_stop = Arc::new(AtomicBool::new(false));
    let control = Control {
        fs: Arc::downgrade(&fs),
        audit: Arc::downgrade(&audit),
        notifier,
        plan,
        mountpoint: mountpoint.clone(),
        conn,
        asked_to_stop: Arc::clone(&asked_to_stop),
        reloads,
    };
    drop(fs);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || control.handle_signals(&signals))
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;

    readiness.ready();
    notify_systemd("READY=1");
    if readiness.detached {
        // Nobody reads the terminal of a daemon (and a successful mount prints nothing);
        // diagnostics go to syslog from here on.
        let _ = sys::detach_stdio();
        crate::logging::to_syslog();
    }
    // After the switch to syslog: a successful background mount prints nothing.
    log::info!("serving {} over {transport}", mountpoint.display());
    let result = match session.join() {
        Ok(result) => result,
        Err(_) => Err(io::Error::other("the FUSE session thread panicked")),
    };
    if let Some(rings) = rings {
        // The kernel hands every entry back at unmount; a queue that does not end is not
        // waited for (the process exits anyway).
        if !rings.join(RING_EXIT_GUARD) {
            log::warn!("io_uring queues did not all end after the unmount");
        }
    }
    // The final counts (the rings' workers are done), written before the audit log (which
    // the writer reads) goes.
    if let Some(writer) = metrics {
        writer.stop();
    }
    // Every event recorded before the unmount is on disk before the process exits.
    match Arc::try_unwrap(audit) {
        Ok(audit) => audit.shutdown(),
        Err(_) => log::warn!("audit log still in use at exit; it is flushed when dropped"),
    }
    result.map_err(|e| format!("{}: session ended: {e}", mountpoint.display()))?;
    if asked_to_stop.load(Ordering::SeqCst) {
        log::info!("unmounted {}", mountpoint.display());
        return Ok(());
    }
    ended_from_outside(&mountpoint, conn)
}

/// How long the exit waits for the ring threads after the unmount.
const RING_EXIT_GUARD: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether to set up rings for `transport`, from the kernel's `enable_uring` parameter (INIT
/// offers io_uring only when it is on). `io_uring` without it refuses to mount.
fn ring_wanted(transport: Transport) -> Result<bool, String> {
    let enabled = uring::kernel_enabled();
    match transport {
        Transport::Dev => Ok(false),
        Transport::Auto => Ok(enabled == Some(true)),
        Transport::IoUring => match enabled {
            Some(true) => Ok(true),
            Some(false) => Err(format!(
                "transport io_uring: the kernel has FUSE over io_uring switched off \
                 ({} is N): write 1 to it, or use transport=auto",
                uring::ENABLE_PARAM
            )),
            None => Err(format!(
                "transport io_uring: this kernel has no FUSE over io_uring ({} is missing)",
                uring::ENABLE_PARAM
            )),
        },
    }
}

/// After INIT: registers the rings when INIT negotiated io_uring. `None` means /dev/fuse
/// serves everything; an error (only for `transport = "io_uring"`) refuses the mount.
fn start_rings(
    fixed: &Fixed,
    prepared: Option<uring::Prepared>,
    handshake: &uring::Handshake,
    fs: &Arc<Fs>,
    dev: std::os::fd::BorrowedFd<'_>,
) -> Result<Option<uring::Running>, String> {
    let strict = fixed.transport == Transport::IoUring;
    let Some(prepared) = prepared else {
        return Ok(None);
    };
    let Some(negotiated) = handshake.settled() else {
        prepared.abandon();
        return Err("INIT did not reach the filesystem: cannot serve".into());
    };
    if !negotiated.asked {
        prepared.abandon();
        if strict {
            return Err(format!(
                "transport io_uring: the kernel did not offer FUSE over io_uring at INIT \
                 (is {} Y?)",
                uring::ENABLE_PARAM
            ));
        }
        return Ok(None);
    }
    // One fd for every ring and the wire's backing-file ioctls (the fd budget is small).
    let own = dev
        .try_clone_to_owned()
        .map(Arc::new)
        .map_err(|e| format!("cannot duplicate the /dev/fuse fd: {e}"))?;
    let handler = uring::handler(
        Arc::clone(fs),
        fixed.tuning,
        Arc::clone(&own),
        fixed.mount.access,
    );
    match prepared.start(own, handler, negotiated.payload) {
        Ok(running) => Ok(Some(running)),
        Err(e) if strict => Err(format!("transport io_uring: {e}")),
        Err(e) => {
            log::warn!("{e}: serving over /dev/fuse");
            Ok(None)
        }
    }
}

/// Runs the session's request loops on threads of their own and returns the handle to join.
///
/// fuser's `Mount` unmounts on drop by path (`umount2(path)`, or `fusermount3 -u path`), and
/// the session drops it when its loops end — by then the path may carry a newer relocfs
/// mount, which it would tear down. So the `BackgroundSession` holding the `Mount` is never
/// dropped: its join handle is taken out and the rest is forgotten (one fd and a few bytes,
/// until the process exits). This daemon unmounts only through `unmount_own`.
fn run_session(
    session: fuser::Session<Adapter>,
) -> io::Result<std::thread::JoinHandle<io::Result<()>>> {
    let placeholder = std::thread::Builder::new().spawn(|| Ok(()))?;
    let mut background = session.spawn()?;
    let handle = std::mem::replace(&mut background.guard, placeholder);
    std::mem::forget(background);
    Ok(handle)
}

/// The session ended without a SIGTERM/SIGINT: someone else unmounted the mount (`umount`,
/// `umount -l`, or a newer relocfs found it detached and mounted in its place).
///
/// From the command line or fstab, `umount MOUNTPOINT` is the documented way to stop a mount:
/// exit 0. Under systemd (NOTIFY_SOCKET), the service is stopped with SIGTERM, so an unmount
/// from outside is a failure: exit 1, so that `Restart=on-failure` mounts it again (and, when
/// another relocfs now serves the path, the restart is refused and the unit shows as failed
/// instead of quietly inactive).
fn ended_from_outside(mountpoint: &Path, conn: (u32, u32)) -> Result<(), String> {
    let shown = mountpoint.display();
    let now = match preflight::mount_at(mountpoint) {
        Some(m) if m.dev != conn => format!(
            "; {} now carries another mount ({} {}:{})",
            shown, m.fstype, m.dev.0, m.dev.1
        ),
        _ => String::new(),
    };
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        return Err(format!(
            "{shown} was unmounted from outside, not by `systemctl stop`{now}: exiting with \
             failure"
        ));
    }
    log::info!("unmounted {shown} (from outside){now}");
    Ok(())
}

/// What the signal thread needs to unmount and reload.
struct Control {
    fs: Weak<Fs>,
    audit: Weak<AuditLog>,
    notifier: fuser::Notifier,
    /// The running mount's plan: its rules follow reloads, its fixed part never changes.
    plan: MountPlan,
    mountpoint: PathBuf,
    /// This mount's FUSE connection (see `unmount_own`).
    conn: (u32, u32),
    /// Set before the signal thread unmounts: the session's end is then a clean stop.
    asked_to_stop: Arc<AtomicBool>,
    /// Each reload's outcome, for the control socket's `reload` request.
    reloads: Arc<control::Reloads>,
}

impl Control {
    /// TERM and INT unmount (the session then ends by itself once the kernel lets go); HUP
    /// reloads the configuration (and reopens the audit log, as it always did: a logrotate
    /// stanza written for that keeps working); USR1 only reopens the audit log.
    fn handle_signals(mut self, signals: &libc::sigset_t) {
        loop {
            match sys::wait_signal(signals) {
                Ok(libc::SIGUSR1) => {
                    if let Some(audit) = self.audit.upgrade() {
                        log::info!("SIGUSR1: reopening the audit log");
                        audit.reopen();
                    }
                }
                Ok(libc::SIGHUP) => {
                    notify_systemd("RELOADING=1");
                    if let Some(audit) = self.audit.upgrade() {
                        audit.reopen();
                    }
                    self.reloads.begin();
                    let outcome = self.reload();
                    match &outcome {
                        Ok(summary) => {
                            log::info!("reloaded {}: {summary}", self.plan.fixed.source.display())
                        }
                        Err(e) => log::error!("reload refused, keeping the old rules: {e}"),
                    }
                    self.reloads.finish(&outcome);
                    notify_systemd("READY=1");
                }
                Ok(sig) => {
                    log::info!("signal {sig}: unmounting {}", self.mountpoint.display());
                    notify_systemd("STOPPING=1");
                    self.asked_to_stop.store(true, Ordering::SeqCst);
                    unmount_own(&self.mountpoint, self.conn);
                    return;
                }
                Err(e) => {
                    log::error!("waiting for signals: {e}");
                    return;
                }
            }
        }
    }

    /// Validates the new configuration completely before anything changes; on any error the
    /// old rules stay. New rules apply to new lookups at once: the kernel's cached entries
    /// below the root are dropped. Every other setting that changed is named in one line and
    /// keeps its running value until the next mount.
    fn reload(&mut self) -> Result<String, String> {
        let new = config::load(&self.plan.fixed.source).map_err(|e| e.to_string())?;
        let roots = preflight::open_roots(&new)?;
        preflight::check_placement(&new, &self.mountpoint)?;
        let new_plan = MountPlan::new(&new, self.plan.fixed.mount.clone());
        let changed = self.plan.fixed.changed_keys(&new_plan.fixed);
        if !changed.is_empty() {
            log::warn!(
                "changed settings take effect at the next mount: {}",
                changed.join(", ")
            );
        }
        let fs = self.fs.upgrade().ok_or("the filesystem is shutting down")?;
        let names = fs
            .reload(PrefixTable::new(&new_plan.rules), roots)
            .map_err(|e| format!("cannot list the root: {e}"))?;
        drop(fs);
        for name in &names {
            match self
                .notifier
                .inval_entry(fuser::INodeNo(crate::node::ROOT_ID), name)
            {
                Ok(()) => {}
                // Not in the kernel's cache: nothing to drop.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => log::warn!("cannot drop cached entry {name:?}: {e}"),
            }
        }
        let _ = self
            .notifier
            .inval_inode(fuser::INodeNo(crate::node::ROOT_ID), 0, 0);
        crate::stage::set_journal_socket(new_plan.stages.journal_socket.clone());
        let summary = format!("{} rules", new_plan.rules.len());
        self.plan.rules = new_plan.rules;
        Ok(summary)
    }
}

/// Tells systemd (Type=notify) about the daemon's state, when started by it.
fn notify_systemd(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = sys::notify_socket(&socket, state) {
        log::warn!("cannot notify systemd ({state}): {e}");
    }
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

/// Unmounts `mountpoint` only if the topmost mount there is still the connection `conn`
/// (its device number in mountinfo): after a lazy detach the path may carry a newer relocfs
/// mount, which is not this daemon's to remove.
pub fn unmount_own(mountpoint: &Path, conn: (u32, u32)) {
    let shown = mountpoint.display();
    match preflight::mount_at(mountpoint) {
        Some(m) if m.dev == conn => unmount(mountpoint),
        Some(m) => log::warn!(
            "{shown} now carries another mount ({} {}:{}), not this daemon's ({}:{}): left alone",
            m.fstype,
            m.dev.0,
            m.dev.1,
            conn.0,
            conn.1
        ),
        None => {
            log::info!("{shown} is already unmounted (detached); serving open files until closed")
        }
    }
}

/// Unmounts whatever is at `mountpoint`: as root directly, as an ordinary user through
/// fusermount3. The daemon itself uses `unmount_own`.
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
