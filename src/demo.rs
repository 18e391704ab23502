//! `relocfs demo`: the whole job on a built-in example, with nothing to configure first.
//!
//! It builds a temporary "migrated installation", mounts relocfs at a temporary legacy path
//! (by running this same binary, exactly as an operator would), performs the accesses from the
//! jumpserver story, prints the audit lines, unmounts and removes everything it made.
//!
//! Run as root in a world-writable /tmp, so nothing in it may be trusted: the demo works in a
//! fresh directory with a random name that `mkdir` must create (an existing name is never
//! reused), owned by the demo and not writable by anyone else, and creates everything inside
//! with `mkdirat`/`openat(O_CREAT | O_EXCL | O_NOFOLLOW)` relative to fds it holds; owners and
//! modes are set on those fds, never by path. TERM, INT and HUP unmount and clean up too.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::config::printable;
use crate::daemon;
use crate::exit::Exit;
use crate::sys;

const NOBODY: u32 = 65534;

const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\n(demo key, not a real secret)\n\
                   -----END OPENSSH PRIVATE KEY-----\n";

/// How many fresh random names to try before giving up (a collision means a planted name or
/// a broken random source: 128 random bits do not collide by chance).
const NAME_ATTEMPTS: usize = 8;

/// How long cleaning up waits for the unmounted daemon to exit (it flushes its audit log).
const DAEMON_EXIT: Duration = Duration::from_secs(10);

/// Whether `pid` still runs (a zombie has exited: its parent is not the demo).
fn process_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold any byte.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// What the demo has made so far, so that it can be undone however the demo ends: by itself,
/// by an error, or by a signal (the signal thread takes the lock, cleans up and exits).
#[derive(Default)]
struct Scratch {
    dir: Option<PathBuf>,
    /// Set before the mount is attempted: cleaning up checks whether it is really mounted.
    mountpoint: Option<PathBuf>,
    /// The daemon serving the mount, once it is up: it writes its audit log in `dir` until it
    /// exits (and recreates a log removed under it), so `dir` goes only after it has exited.
    daemon: Option<i32>,
}

impl Scratch {
    /// Unmounts and removes what exists; safe to call again. Leaves the directory in place
    /// while the mount cannot be removed (removing through a live mount would be wrong).
    fn clean(&mut self) -> Result<(), String> {
        if let Some(mp) = &self.mountpoint {
            if is_mounted(mp) {
                daemon::unmount(mp);
            }
            if is_mounted(mp) {
                return Err(format!(
                    "{} is still mounted: `umount -l` it, then remove {}",
                    printable(&mp.to_string_lossy()),
                    self.dir
                        .as_deref()
                        .map(|d| printable(&d.to_string_lossy()))
                        .unwrap_or_default()
                ));
            }
            self.mountpoint = None;
        }
        if let Some(pid) = self.daemon.take() {
            let deadline = Instant::now() + DAEMON_EXIT;
            while process_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if let Some(dir) = self.dir.take() {
            fs::remove_dir_all(&dir).map_err(|e| {
                format!(
                    "cannot remove the demo's directory {}: {e}",
                    printable(&dir.to_string_lossy())
                )
            })?;
        }
        Ok(())
    }
}

fn lock(scratch: &Mutex<Scratch>) -> MutexGuard<'_, Scratch> {
    scratch.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Cleans up on every way out of `run`, a panic included.
struct CleanOnDrop(Arc<Mutex<Scratch>>);

impl Drop for CleanOnDrop {
    fn drop(&mut self) {
        if let Err(e) = lock(&self.0).clean() {
            let _ = writeln!(io::stderr(), "relocfs: {e}");
        }
    }
}

/// The demo's standard output. A closed reader (`relocfs demo | head`) only stops the
/// printing: the demo still unmounts and cleans up, and ends quietly.
struct Screen {
    out: io::Stdout,
    closed: bool,
    error: Option<io::Error>,
}

impl Screen {
    fn line(&mut self, text: fmt::Arguments<'_>) {
        if self.closed {
            return;
        }
        let mut out = self.out.lock();
        if let Err(e) = out.write_fmt(text).and_then(|()| out.write_all(b"\n")) {
            self.closed = true;
            if e.kind() != ErrorKind::BrokenPipe {
                self.error = Some(e);
            }
        }
    }

    fn finish(mut self) -> Result<(), String> {
        if !self.closed {
            if let Err(e) = self.out.flush() {
                if e.kind() != ErrorKind::BrokenPipe {
                    self.error = Some(e);
                }
            }
        }
        match self.error {
            Some(e) => Err(format!("cannot write the demo's output: {e}")),
            None => Ok(()),
        }
    }
}

macro_rules! say {
    ($screen:expr, $($arg:tt)*) => {
        $screen.line(format_args!($($arg)*))
    };
}

/// Runs the demo. With `pause`, it waits for a line on stdin while mounted, so that the mount
/// can be explored from another shell.
pub fn run(pause: bool) -> Result<(), String> {
    // Blocked before any thread starts (and unblocked again in every child we spawn, by std):
    // only the signal thread receives these.
    let signals = sys::block_signals(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP])
        .map_err(|e| format!("signal setup: {e}"))?;
    let scratch = Arc::new(Mutex::new(Scratch::default()));
    let guard = CleanOnDrop(Arc::clone(&scratch));
    {
        let scratch = Arc::clone(&scratch);
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || on_signal(&signals, &scratch))
            .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    }
    let mut screen = Screen {
        out: io::stdout(),
        closed: false,
        error: None,
    };
    let result = story(&scratch, pause, &mut screen);
    let cleaned = lock(&scratch).clean();
    drop(guard);
    result?;
    cleaned?;
    screen.finish()
}

/// Waits for TERM, INT or HUP; then undoes what the demo made (waiting for a step in
/// progress, such as the mount, to finish first) and exits with 128 + the signal.
fn on_signal(signals: &libc::sigset_t, scratch: &Mutex<Scratch>) {
    let sig = match sys::wait_signal(signals) {
        Ok(sig) => sig,
        Err(e) => {
            log::error!("waiting for signals: {e}");
            return;
        }
    };
    let outcome = match lock(scratch).clean() {
        Ok(()) => "unmounted and removed what it made".to_string(),
        Err(e) => e,
    };
    let _ = writeln!(
        io::stderr(),
        "relocfs: demo interrupted by signal {sig}: {outcome}"
    );
    Exit::Signal(sig).exit_process();
}

/// What the setup made, for the story.
struct Setup {
    mountpoint: PathBuf,
    real: PathBuf,
    config: PathBuf,
    config_text: String,
    /// The audit log, created by the demo and appended to by the daemon.
    audit: File,
}

fn story(scratch: &Mutex<Scratch>, pause: bool, screen: &mut Screen) -> Result<(), String> {
    let as_root = sys::geteuid() == 0;
    let setup = build(&mut lock(scratch), as_root)?;
    let mp = &setup.mountpoint;
    let show_path = |p: &Path| printable(&p.to_string_lossy());
    say!(
        screen,
        "An application moved from {} to {}.",
        show_path(mp),
        show_path(&setup.real)
    );
    say!(
        screen,
        "Its database still says key_path = {}/keys/role_key/key-d92",
        show_path(mp)
    );
    say!(screen, "\nConfiguration ({}):", show_path(&setup.config));
    for line in setup.config_text.lines() {
        say!(screen, "    {}", printable(line));
    }

    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let options: &[&str] = if as_root { &["-o", "allow_other"] } else { &[] };
    say!(
        screen,
        "\n$ relocfs {} {} {}",
        show_path(&setup.config),
        show_path(mp),
        options.join(" ")
    );
    {
        // Held while mounting: a signal now waits until the mount is up, then unmounts it.
        let mut scratch = lock(scratch);
        scratch.mountpoint = Some(mp.clone());
        let out = Command::new(&exe)
            .arg(&setup.config)
            .arg(mp)
            .args(options)
            .stdin(Stdio::null())
            // Its own process group: Ctrl-C reaches the demo, which cleans up, and not the
            // mount command halfway through.
            .process_group(0)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "the demo could not mount: {}",
                err.trim().trim_start_matches("relocfs: ")
            ));
        }
        scratch.daemon = crate::control::daemon_pid(mp).ok();
    }

    // As root, the demo plays the story fully: the key belongs to the application's own
    // unprivileged user (nobody here), mode 0600, and that user reads it through the mount.
    let key = mp.join("keys/role_key/key-d92/id_rsa");
    let mut cat = Command::new("cat");
    cat.arg(&key).stdin(Stdio::null());
    if as_root {
        cat.uid(NOBODY).gid(NOBODY);
        say!(
            screen,
            "\nThe application, running as user nobody, reads its key at the legacy path:"
        );
    } else {
        say!(
            screen,
            "\nThe application reads its key at the legacy path:"
        );
    }
    show(
        screen,
        &key,
        cat.output()
            .map_err(|e| format!("cannot run cat: {e}"))
            .and_then(|out| {
                if out.status.success() {
                    Ok(first_line(&String::from_utf8_lossy(&out.stdout)))
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
                }
            })
            .map_err(io::Error::other),
    );
    say!(
        screen,
        "\nWhat the rules refuse, and what the migration missed:"
    );
    let admin = mp.join("keys/admin/master.key");
    show(
        screen,
        &admin,
        fs::read_to_string(&admin).map(|s| first_line(&s)),
    );
    let missing = mp.join("keys/role_key/key-0ld/id_rsa");
    show(
        screen,
        &missing,
        fs::read_to_string(&missing).map(|s| first_line(&s)),
    );
    let cfg = mp.join("config.yml");
    show(
        screen,
        &cfg,
        fs::OpenOptions::new()
            .append(true)
            .open(&cfg)
            .map(|_| "opened for writing".to_string()),
    );
    let listing = fs::read_dir(mp.join("keys"))
        .map(|entries| {
            let mut names: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|e| printable(&e.file_name().to_string_lossy()))
                .collect();
            names.sort();
            names.join(" ")
        })
        .map_err(|e| format!("listing: {e}"))?;
    say!(screen, "  ls {}/keys: {listing}", show_path(mp));

    if pause {
        say!(
            screen,
            "\nThe demo stays mounted at {}: look around from another shell, then press Enter \
             here to unmount and clean up.",
            show_path(mp)
        );
        let _ = io::stdout().flush();
        // EOF or an error ends the pause as Enter does.
        let _ = io::stdin().read_line(&mut String::new());
    }

    say!(screen, "\n$ umount {}", show_path(mp));
    lock(scratch).clean_mount()?;
    let audit_path = setup.config.with_file_name("audit.jsonl");
    let lines =
        wait_for_audit(&setup.audit, 5).map_err(|e| format!("{e}: {}", show_path(&audit_path)))?;
    say!(
        screen,
        "\nThe audit log ({}), one JSON object per access:",
        show_path(&audit_path)
    );
    for line in lines {
        say!(screen, "{}", printable(&line));
    }
    say!(
        screen,
        "\nFrom such a log the operator sees who still uses the legacy path, fixes them, and \
         retires the bridge."
    );
    Ok(())
}

impl Scratch {
    /// Unmounts (the daemon then flushes its log and exits), keeping the directory.
    fn clean_mount(&mut self) -> Result<(), String> {
        let dir = self.dir.take();
        let result = self.clean();
        self.dir = dir;
        result
    }
}

/// Makes the demo's private directory and everything in it.
fn build(scratch: &mut Scratch, as_root: bool) -> Result<Setup, String> {
    let parent = check_trusted(&std::env::temp_dir(), as_root)?;
    // As root the real tree must stay traversable for nobody, whose reads of the key the
    // daemon makes with nobody's own fsuid (and the kernel checks every directory on the way
    // to the mount): search without listing, and nobody else can create or replace anything.
    let mode = if as_root { 0o711 } else { 0o700 };
    let (dir, top) = private_dir(&parent, mode)?;
    scratch.dir = Some(dir.clone());
    let fail = |what: &str, e: io::Error| {
        format!(
            "demo setup: {what} in {}: {e}",
            printable(&dir.to_string_lossy())
        )
    };
    let mkdir = |at: &OwnedFd, name: &str| make_dir(at, name, 0o755).map_err(|e| fail(name, e));
    let file = |at: &OwnedFd, name: &str, text: &str, mode: u32| {
        new_file(at, name, text, mode).map_err(|e| fail(name, e))
    };

    let real_fd = mkdir(&mkdir(&top, "opt")?, "jumpserver")?;
    let keys = mkdir(&real_fd, "keys")?;
    let key_dir = mkdir(&mkdir(&keys, "role_key")?, "key-d92")?;
    let key = file(&key_dir, "id_rsa", KEY, 0o600)?;
    if as_root {
        // On the fd of the file just created: nothing a path could be swapped for.
        std::os::unix::fs::fchown(&key, Some(NOBODY), Some(NOBODY))
            .map_err(|e| fail("id_rsa", e))?;
    }
    file(&mkdir(&keys, "admin")?, "master.key", "secret\n", 0o600)?;
    file(&real_fd, "config.yml", "SECRET_KEY: demo\n", 0o644)?;
    mkdir(&mkdir(&mkdir(&top, "home")?, "optdir")?, "jumpserver")?;
    let audit = file(&top, "audit.jsonl", "", 0o600)?;

    let real = dir.join("opt/jumpserver");
    let audit_path = dir.join("audit.jsonl");
    let config_text = format!(
        "[[map]]\nfrom = \"/\"\nto = {}\n\n[[map]]\nfrom = \"/keys/admin\"\ndeny = true\n\n\
         [audit]\nlog = {}\n",
        toml_string(&real)?,
        toml_string(&audit_path)?
    );
    file(&top, "jumpserver.toml", &config_text, 0o600)?;
    Ok(Setup {
        mountpoint: dir.join("home/optdir/jumpserver"),
        real,
        config: dir.join("jumpserver.toml"),
        config_text,
        audit,
    })
}

fn toml_string(path: &Path) -> Result<String, String> {
    let text = path.to_str().ok_or_else(|| {
        format!(
            "the temporary directory {} is not UTF-8: set TMPDIR to another one",
            printable(&path.to_string_lossy())
        )
    })?;
    Ok(toml::Value::String(text.to_string()).to_string())
}

/// Refuses a temporary directory where another user could replace the demo's directory by
/// path after it is made: every ancestor must belong to root or to us, and be writable by
/// nobody else unless sticky (as /tmp is: there only the owner may rename or remove). As root
/// every ancestor must also let others pass through, for nobody to reach the mount. Returns
/// the directory with its symlinks resolved (checked, and then named, that way).
fn check_trusted(parent: &Path, as_root: bool) -> Result<PathBuf, String> {
    let euid = sys::geteuid();
    let resolved = fs::canonicalize(parent).map_err(|e| {
        format!(
            "temporary directory {}: {e}",
            printable(&parent.to_string_lossy())
        )
    })?;
    for dir in resolved.ancestors() {
        let shown = printable(&dir.to_string_lossy());
        let st = sys::lstat(dir).map_err(|e| format!("temporary directory {shown}: {e}"))?;
        if st.st_uid != 0 && st.st_uid != euid {
            return Err(format!(
                "{shown} belongs to uid {}: the demo needs a temporary directory only root \
                 or you control (set TMPDIR)",
                st.st_uid
            ));
        }
        if st.st_mode & 0o022 != 0 && st.st_mode & libc::S_ISVTX == 0 {
            return Err(format!(
                "{shown} is writable by others and not sticky: the demo needs a temporary \
                 directory where nobody else can replace its entries (set TMPDIR)"
            ));
        }
        if as_root && st.st_mode & 0o001 == 0 {
            return Err(format!(
                "{shown} is closed to other users: the demo's user nobody must pass through it \
                 to reach the mount (set TMPDIR to a directory such as /tmp)"
            ));
        }
    }
    Ok(resolved)
}

/// Creates a new directory with a random name below `parent`: `mkdir` fails on any existing
/// name (a directory, file or symlink someone made first), and then a new name is drawn.
fn private_dir(parent: &Path, mode: u32) -> Result<(PathBuf, OwnedFd), String> {
    let shown = printable(&parent.to_string_lossy());
    let parent_fd =
        sys::open_dir_path(parent).map_err(|e| format!("temporary directory {shown}: {e}"))?;
    for _ in 0..NAME_ATTEMPTS {
        let name = format!("relocfs-demo-{}", random_hex()?);
        match sys::mkdir_child(parent_fd.as_fd(), name.as_ref(), 0o700) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create a directory in {shown}: {e}")),
        }
        let fd = open_made_dir(&parent_fd, &name, mode)
            .map_err(|e| format!("demo directory {shown}/{name}: {e}"))?;
        return Ok((parent.join(&name), fd));
    }
    Err(format!(
        "{NAME_ATTEMPTS} random names in {shown} were all taken: something is creating them"
    ))
}

/// 128 bits from the kernel's random source, in hex.
fn random_hex() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A new directory below `at`, as an fd; fails if the name exists.
fn make_dir(at: &OwnedFd, name: &str, mode: u32) -> io::Result<OwnedFd> {
    sys::mkdir_child(at.as_fd(), name.as_ref(), mode)?;
    open_made_dir(at, name, mode)
}

/// Opens the directory just made (never following a symlink), checks it is ours, and sets
/// its mode exactly (mkdir's mode is reduced by the umask).
fn open_made_dir(at: &OwnedFd, name: &str, mode: u32) -> io::Result<OwnedFd> {
    let fd = sys::open_child(at.as_fd(), name.as_ref())?;
    let st = sys::fstat(fd.as_fd())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR || st.st_uid != sys::geteuid() {
        return Err(io::Error::other(format!(
            "{name} is not the directory just made"
        )));
    }
    sys::chmod(fd.as_fd(), mode)?;
    Ok(fd)
}

/// A new regular file below `at` holding `text`, with exactly `mode`; fails if the name
/// exists, and never opens through a symlink.
fn new_file(at: &OwnedFd, name: &str, text: &str, mode: u32) -> io::Result<File> {
    let mut file = sys::create_child(
        at.as_fd(),
        std::ffi::OsStr::from_bytes(name.as_bytes()),
        libc::O_RDWR | libc::O_EXCL,
        mode,
    )?;
    file.write_all(text.as_bytes())?;
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(file)
}

/// Is something mounted at `mp` (a different device than its parent, or a dead FUSE mount)?
fn is_mounted(mp: &Path) -> bool {
    let Some(parent) = mp.parent() else {
        return false;
    };
    match (sys::lstat(mp), sys::lstat(parent)) {
        (Ok(m), Ok(p)) => m.st_dev != p.st_dev,
        (Err(e), _) => e.raw_os_error() == Some(libc::ENOTCONN),
        _ => false,
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

fn show(screen: &mut Screen, path: &Path, result: io::Result<String>) {
    let shown = printable(&path.to_string_lossy());
    match result {
        Ok(text) => say!(screen, "  {shown}: {}", printable(&text)),
        Err(e) => {
            let name = match e.kind() {
                ErrorKind::PermissionDenied => "EACCES",
                ErrorKind::NotFound => "ENOENT",
                _ if e.raw_os_error() == Some(libc::EROFS) => "EROFS",
                _ => "error",
            };
            say!(screen, "  {shown}: {name} ({})", printable(&e.to_string()));
        }
    }
}

/// The daemon writes the log from its own thread and flushes at unmount: wait for it.
fn wait_for_audit(mut log: &File, at_least: usize) -> Result<Vec<String>, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut text = String::new();
        log.rewind()
            .and_then(|()| log.read_to_string(&mut text))
            .map_err(|e| format!("cannot read the audit log: {e}"))?;
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= at_least || Instant::now() > deadline {
            return if lines.is_empty() {
                Err("no audit lines appeared".to_string())
            } else {
                Ok(lines)
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_directories_others_can_change_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let set = |mode: u32| fs::set_permissions(dir.path(), fs::Permissions::from_mode(mode));
        set(0o777).unwrap();
        let e = check_trusted(dir.path(), false).unwrap_err();
        assert!(e.contains("writable by others and not sticky"), "{e}");
        set(0o1777).unwrap();
        assert!(check_trusted(dir.path(), false).is_ok());
        set(0o700).unwrap();
        assert!(check_trusted(dir.path(), false).is_ok());
        let e = check_trusted(dir.path(), true).unwrap_err();
        assert!(e.contains("closed to other users"), "{e}");
        set(0o755).unwrap();
        let resolved = check_trusted(dir.path(), true).unwrap();
        assert_eq!(resolved, fs::canonicalize(dir.path()).unwrap());
    }

    #[test]
    fn private_dirs_are_new_random_and_exact_in_mode() {
        let dir = tempfile::tempdir().unwrap();
        let (a, fd) = private_dir(dir.path(), 0o711).unwrap();
        let (b, _) = private_dir(dir.path(), 0o700).unwrap();
        assert_ne!(a, b);
        let st = sys::fstat(fd.as_fd()).unwrap();
        assert_eq!(st.st_mode & 0o7777, 0o711);
        // Nothing below may exist already: a planted name is refused, never reused.
        std::os::unix::fs::symlink("/etc", a.join("opt")).unwrap();
        let e = make_dir(&fd, "opt", 0o755).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        fs::write(a.join("audit.jsonl"), "").unwrap();
        let e = new_file(&fd, "audit.jsonl", "x", 0o600).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    }
}
