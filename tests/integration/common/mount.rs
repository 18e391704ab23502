//! The mount fixture: [`MountBuilder`] writes a config and mounts it,
//! [`Mounted`] unmounts everything below its tempdir on drop, and a watchdog
//! kills a hung daemon so that a broken daemon fails tests instead of
//! hanging them.

use std::ffi::OsString;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use super::audit::read_audit;
use super::fs::{mkdir_p, tempdir_0755};
use super::proc::{
    mount_entry, mounted, mounts_below, pids_with_arg, relocfs, stderr_str, stdout_str, wait_until,
};
use super::{BIN, SETTLE_TIMEOUT};

/// The environment variable that picks the transport of a test run's mounts.
pub const TRANSPORT_ENV: &str = "RELOCFS_TEST_TRANSPORT";

/// The transport every [`MountBuilder`] mount asks for (`-o transport=`), from
/// `RELOCFS_TEST_TRANSPORT`: "dev" when unset. Not "auto": one test turns the kernel's
/// io_uring parameter on while the rest of the run goes on, and an `auto` mount would then
/// change transport halfway through the run. The io_uring run is a child run of the whole
/// binary with `io_uring` (tests/integration/transport.rs); `auto` has its own tests.
pub fn test_transport() -> String {
    match std::env::var(TRANSPORT_ENV) {
        Ok(t) if !t.is_empty() => t,
        _ => "dev".to_string(),
    }
}

/// A test fixture older than this is considered hung: its daemon is killed.
const WATCHDOG: Duration = Duration::from_secs(90);

/// One rule of the prefix table.
#[derive(Debug, Clone)]
pub struct Rule {
    pub from: String,
    pub to: Option<PathBuf>,
    pub deny: bool,
    pub mode: Option<String>,
}

fn toml_string(s: &str) -> String {
    // A JSON string literal is a valid TOML basic string.
    serde_json::to_string(s).unwrap()
}

/// Builds a config + mountpoint in a fresh 0755 tempdir and mounts it.
///
/// Layout of the tempdir (`root`): `real/` (a convenient target), `mnt/`
/// (the default mountpoint), `relocfs.toml`, `audit.jsonl`.
pub struct MountBuilder {
    dir: tempfile::TempDir,
    rules: Vec<Rule>,
    raw: Option<String>,
    extra: String,
    opts: Vec<String>,
    opts_after: bool,
    audit: bool,
    mountpoint: PathBuf,
    /// Leave the transport to the config file (no `-o transport=`).
    config_transport: bool,
}

impl Default for MountBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl MountBuilder {
    pub fn new() -> Self {
        let dir = tempdir_0755("relocfs-test-");
        let root = dir.path().to_path_buf();
        mkdir_p(&root.join("real"));
        mkdir_p(&root.join("mnt"));
        MountBuilder {
            dir,
            rules: Vec::new(),
            raw: None,
            extra: String::new(),
            opts: Vec::new(),
            opts_after: false,
            audit: true,
            mountpoint: root.join("mnt"),
            config_transport: false,
        }
    }

    /// The tempdir (0755).
    pub fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// `root/real`, an empty 0755 directory to use as a target.
    pub fn real(&self) -> PathBuf {
        self.dir.path().join("real")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("relocfs.toml")
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    pub fn mnt(&self) -> PathBuf {
        self.mountpoint.clone()
    }

    /// `[[map]] from = FROM, to = TO`.
    pub fn map(mut self, from: &str, to: impl AsRef<Path>) -> Self {
        self.rules.push(Rule {
            from: from.into(),
            to: Some(to.as_ref().to_path_buf()),
            deny: false,
            mode: None,
        });
        self
    }

    /// `[[map]] from = FROM, to = TO, mode = MODE`.
    pub fn map_mode(mut self, from: &str, to: impl AsRef<Path>, mode: &str) -> Self {
        self.rules.push(Rule {
            from: from.into(),
            to: Some(to.as_ref().to_path_buf()),
            deny: false,
            mode: Some(mode.into()),
        });
        self
    }

    /// `[[map]] from = FROM, deny = true`.
    pub fn deny(mut self, from: &str) -> Self {
        self.rules.push(Rule {
            from: from.into(),
            to: None,
            deny: true,
            mode: None,
        });
        self
    }

    /// Use this TOML text verbatim as the whole config (no rules, no audit).
    pub fn raw_config(mut self, text: &str) -> Self {
        self.raw = Some(text.to_string());
        self
    }

    /// Extra TOML appended after the generated rules.
    pub fn extra(mut self, text: &str) -> Self {
        self.extra.push_str(text);
        self.extra.push('\n');
        self
    }

    /// Adds a `-o` mount option.
    pub fn opt(mut self, o: &str) -> Self {
        self.opts.push(o.to_string());
        self
    }

    /// No `-o transport=` from the run: the config file (or its default) decides.
    pub fn transport_from_config(mut self) -> Self {
        self.config_transport = true;
        self
    }

    /// Pass `-o ...` after the positional arguments instead of before.
    pub fn opts_after_positionals(mut self) -> Self {
        self.opts_after = true;
        self
    }

    pub fn no_audit(mut self) -> Self {
        self.audit = false;
        self
    }

    /// Mount somewhere else (the caller creates it, or not).
    pub fn mountpoint(mut self, p: impl AsRef<Path>) -> Self {
        self.mountpoint = p.as_ref().to_path_buf();
        self
    }

    pub fn config_text(&self) -> String {
        if let Some(raw) = &self.raw {
            return raw.clone();
        }
        let mut t = String::new();
        for r in &self.rules {
            t.push_str("[[map]]\n");
            t.push_str(&format!("from = {}\n", toml_string(&r.from)));
            if let Some(to) = &r.to {
                t.push_str(&format!("to = {}\n", toml_string(to.to_str().unwrap())));
            }
            if let Some(m) = &r.mode {
                t.push_str(&format!("mode = {}\n", toml_string(m)));
            }
            if r.deny {
                t.push_str("deny = true\n");
            }
            t.push('\n');
        }
        if self.audit {
            t.push_str(&format!(
                "[audit]\nlog = {}\n\n",
                toml_string(self.audit_path().to_str().unwrap())
            ));
        }
        t.push_str(&self.extra);
        t
    }

    /// Command-line arguments for a background mount. They name the transport the run
    /// tests (see [`test_transport`]) unless the test chose one itself.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut opts = self.opts.clone();
        if !self.chose_transport() {
            opts.push(format!("transport={}", test_transport()));
        }
        let o: Option<[OsString; 2]> = if opts.is_empty() {
            None
        } else {
            Some(["-o".into(), opts.join(",").into()])
        };
        if !self.opts_after {
            if let Some(o) = &o {
                a.extend(o.iter().cloned());
            }
        }
        a.push(self.config_path().into());
        a.push(self.mountpoint.clone().into());
        if self.opts_after {
            if let Some(o) = o {
                a.extend(o);
            }
        }
        a
    }

    /// Whether the test picked the transport itself (an option, or the config file).
    fn chose_transport(&self) -> bool {
        self.config_transport || self.opts.iter().any(|o| o.starts_with("transport="))
    }

    /// Writes the config and runs `relocfs` (background mode) without
    /// asserting anything. Whatever happens, the returned fixture unmounts
    /// everything below its tempdir on drop.
    pub fn try_mount(self) -> (Mounted, Output) {
        fs::write(self.config_path(), self.config_text()).expect("write config");
        let args = self.args();
        let out = relocfs(&args);
        (self.into_mounted(), out)
    }

    /// Like `try_mount`, but asserts success (exit 0, mount listed) and, in the io_uring run,
    /// that the mount serves over io_uring.
    #[track_caller]
    pub fn mount(self) -> Mounted {
        let config = self.config_text();
        let chose = self.chose_transport();
        let (m, out) = self.try_mount();
        assert!(
            out.status.success(),
            "relocfs failed to mount: {:?}\nstderr: {}\nstdout: {}\nconfig:\n{config}",
            out.status,
            stderr_str(&out),
            stdout_str(&out),
        );
        assert!(
            mounted(&m.mnt),
            "relocfs exited 0 but {} is not in /proc/self/mountinfo",
            m.mnt.display()
        );
        if !chose && test_transport() == "io_uring" {
            // `-o transport=io_uring` refuses to mount without a ring, so this cannot fail
            // quietly; the status check makes sure, and is what `relocfs status` promises.
            assert_eq!(
                m.transport().as_deref(),
                Some("io_uring"),
                "the io_uring run mounted {} without io_uring",
                m.mnt.display()
            );
        }
        m
    }

    /// The fixture without mounting (e.g. for foreground-mode tests).
    pub fn into_mounted(self) -> Mounted {
        if !self.config_path().exists() {
            fs::write(self.config_path(), self.config_text()).expect("write config");
        }
        let (tx, rx) = mpsc::channel::<()>();
        let root = self.dir.path().to_path_buf();
        std::thread::spawn(move || watchdog(root, rx));
        Mounted {
            mnt: self.mountpoint.clone(),
            config: self.config_path(),
            audit: self.audit_path(),
            dir: Some(self.dir),
            _watchdog: tx,
        }
    }
}

/// Kills the daemon(s) of a fixture that outlives `WATCHDOG`, so hung FUSE
/// requests fail (ENOTCONN) instead of blocking the test run forever.
fn watchdog(root: PathBuf, rx: mpsc::Receiver<()>) {
    if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(WATCHDOG) {
        eprintln!(
            "WATCHDOG: fixture {} alive for {WATCHDOG:?}; killing its daemon(s)",
            root.display()
        );
        for mp in mounts_below(&root) {
            for pid in pids_with_arg(&mp) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if let Some(m) = mount_entry(&mp) {
                // Abort the FUSE connection as well (needs fusectl; best effort).
                if let Some((_, minor)) = m.dev.split_once(':') {
                    let _ = fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), "1");
                }
            }
            let _ = Command::new("umount").arg("-l").arg(&mp).status();
        }
    }
}

/// A mounted relocfs (or an attempt at one). Drop unmounts every mount
/// below the tempdir and waits until they are gone from mountinfo.
pub struct Mounted {
    pub mnt: PathBuf,
    pub config: PathBuf,
    pub audit: PathBuf,
    dir: Option<tempfile::TempDir>,
    _watchdog: mpsc::Sender<()>,
}

/// `config` with a rule `from` -> `to` put first: what the reload tests write to a mounted
/// config to see a new rule served.
pub fn with_map_first(config: &str, from: &str, to: &Path) -> String {
    format!(
        "[[map]]\nfrom = {}\nto = {}\n\n{config}",
        toml_string(from),
        toml_string(to.to_str().expect("a UTF-8 path"))
    )
}

impl Mounted {
    pub fn root(&self) -> PathBuf {
        self.dir.as_ref().unwrap().path().to_path_buf()
    }

    pub fn real(&self) -> PathBuf {
        self.root().join("real")
    }

    /// The legacy path `mnt/inner` (`inner` relative, may be "").
    pub fn at(&self, inner: &str) -> PathBuf {
        if inner.is_empty() {
            self.mnt.clone()
        } else {
            self.mnt.join(inner.trim_start_matches('/'))
        }
    }

    /// Runs `relocfs CONFIG MOUNTPOINT` again (background mode), asserting nothing.
    pub fn remount(&self) -> Output {
        relocfs([self.config.as_path(), self.mnt.as_path()])
    }

    /// `relocfs -f CONFIG MOUNTPOINT` under a stand-in for systemd: `NOTIFY_SOCKET` is a
    /// datagram socket in the tempdir (reads time out after `SETTLE_TIMEOUT`), stdio null.
    pub fn spawn_under_systemd(&self) -> (UnixDatagram, Child) {
        let sock_path = self.root().join("notify.sock");
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(SETTLE_TIMEOUT)).unwrap();
        let child = Command::new(BIN)
            .arg("-f")
            .arg(&self.config)
            .arg(&self.mnt)
            .env("NOTIFY_SOCKET", &sock_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        (sock, child)
    }

    /// The transport `relocfs status` reports ("io_uring" or "/dev/fuse").
    pub fn transport(&self) -> Option<String> {
        let out = relocfs([OsString::from("status"), self.mnt.clone().into()]);
        stdout_str(&out).lines().find_map(|l| {
            l.strip_prefix("transport")
                .map(|rest| rest.trim().to_string())
        })
    }

    /// Live daemon pids for this mountpoint (like `pgrep -f MOUNTPOINT`).
    pub fn daemon_pids(&self) -> Vec<i32> {
        pids_with_arg(&self.mnt)
    }

    /// The single daemon pid; panics if there is not exactly one.
    #[track_caller]
    pub fn daemon_pid(&self) -> i32 {
        let pids = self.daemon_pids();
        assert_eq!(
            pids.len(),
            1,
            "expected exactly one relocfs process with argument {}, found {pids:?}",
            self.mnt.display()
        );
        pids[0]
    }

    pub fn audit_lines(&self) -> Vec<Value> {
        read_audit(&self.audit)
    }

    /// Unmounts (umount, falling back to umount -l) and waits until gone.
    pub fn unmount_all(&self) {
        let Some(dir) = self.dir.as_ref() else { return };
        let root = dir.path();
        for mp in mounts_below(root) {
            let ok = Command::new("umount")
                .arg(&mp)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&mp)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            if !wait_until(SETTLE_TIMEOUT, || !mounted(&mp)) {
                eprintln!("WARNING: {} still mounted after umount", mp.display());
            }
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.unmount_all();
        let Some(dir) = self.dir.take() else { return };
        if !mounts_below(dir.path()).is_empty() {
            // Never recurse into a live mount while deleting the tempdir.
            eprintln!("WARNING: leaking {} (mounts remain)", dir.path().display());
            let _ = dir.keep();
        }
    }
}

/// Asserts the shape of a refusal: non-zero exit, stderr is exactly one line
/// starting with `relocfs: `, containing every needle (case-insensitive).
#[track_caller]
pub fn assert_refusal(out: &Output, needles: &[&str]) {
    let err = stderr_str(out);
    assert!(
        !out.status.success(),
        "expected a refusal containing {needles:?}, but it succeeded\nstderr: {err}\nstdout: {}",
        stdout_str(out)
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stderr must be exactly one line, got {}: {err:?}",
        lines.len()
    );
    assert!(
        lines[0].starts_with("relocfs: "),
        "stderr must start with `relocfs: `: {err:?}"
    );
    let lower = lines[0].to_lowercase();
    for n in needles {
        assert!(
            lower.contains(&n.to_lowercase()),
            "stderr should mention {n:?}: {err:?}"
        );
    }
}
