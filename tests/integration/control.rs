//! The control socket from the attacker's side: `relocfs status` never trusts a socket that a
//! daemon of the expected user did not make (root never looks in /tmp), reads with a deadline
//! and a size cap, and escapes what it prints; `relocfs reopen` (what logrotate runs) reaches
//! only the daemons and no other relocfs process; SIGUSR1 reopens without reloading.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

/// The daemon's socket name for a mountpoint (systemd-style escaping, as src/control.rs).
fn socket_name(mountpoint: &Path) -> String {
    let mut name = String::new();
    let text = mountpoint.to_str().unwrap();
    for (i, b) in text.trim_start_matches('/').bytes().enumerate() {
        match b {
            b'/' => name.push('-'),
            b'.' if i == 0 => name.push_str("\\x2e"),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => name.push(b as char),
            _ => name.push_str(&format!("\\x{b:02x}")),
        }
    }
    assert!(
        name.len() <= 80,
        "test mountpoint too long for the plain name"
    );
    format!("{name}.sock")
}

/// A socket server run by `uid` in `dir` (created by that user; dir and socket get `mode`),
/// answering every connection with `answer`. Stopped and joined on drop.
struct FakeDaemon {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn fake_daemon(
    uid: u32,
    dir: PathBuf,
    name: String,
    mode: u32,
    answer: fn(&mut UnixStream, &AtomicBool),
) -> FakeDaemon {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let flag = Arc::clone(&stop);
    let handle = spawn_as_user(uid, uid, &[], move || {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::create_dir(&dir);
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
        let listener = UnixListener::bind(dir.join(&name)).unwrap();
        fs::set_permissions(dir.join(&name), fs::Permissions::from_mode(mode)).unwrap();
        listener.set_nonblocking(true).unwrap();
        ready_tx.send(()).unwrap();
        while !flag.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    answer(&mut stream, &flag);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    ready_rx
        .recv_timeout(SETTLE_TIMEOUT)
        .expect("the fake daemon did not start");
    FakeDaemon {
        stop,
        handle: Some(handle),
    }
}

/// A status answer whose strings carry a terminal title sequence, a bell, a carriage return
/// and a right-to-left override.
const HOSTILE: &str = r#"{"mountpoint":"\u001b]0;owned\u0007\r/legacy","config":"c\u202eslif","pid":1,"uptime_secs":0,"rules":["\u001b[2J/ -> /x"],"nodes":0,"node_fds":0,"audit_log":null,"audit_written":0,"audit_dropped":0,"operations":[["op\u001b[31m","ok",1]]}"#;

fn hostile(stream: &mut UnixStream, _: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.read(&mut [0u8; 64]);
    let _ = stream.write_all(HOSTILE.as_bytes());
}

fn dribble(stream: &mut UnixStream, stop: &AtomicBool) {
    let _ = stream.write_all(b"{\"mountpoint\":\"");
    for _ in 0..120 {
        if stop.load(Ordering::SeqCst) || stream.write_all(b"x").is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn huge(stream: &mut UnixStream, stop: &AtomicBool) {
    let chunk = vec![b' '; 64 * 1024];
    // 64 MiB at most, so that an uncapped client does not take the machine's memory.
    for _ in 0..1024 {
        if stop.load(Ordering::SeqCst) || stream.write_all(&chunk).is_err() {
            return;
        }
    }
}

/// A directory writable by everyone (sticky), standing in for /tmp.
fn shared_tmp(root: &Path) -> PathBuf {
    let dir = root.join("tmp");
    mkdir_p(&dir);
    chmod(&dir, 0o1777);
    dir
}

/// `relocfs status ARGS` as `uid` with `env`, XDG_RUNTIME_DIR and TMPDIR unset unless given.
fn status_as(uid: u32, args: &[&std::ffi::OsStr], env: &[(&str, &Path)]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("status")
        .args(args)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("TMPDIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    if uid == 0 {
        run_with_timeout(&mut cmd, Duration::from_secs(30))
    } else {
        run_as(uid, uid, &mut cmd)
    }
}

fn no_raw_controls(what: &str, out: &[u8]) {
    let text = String::from_utf8_lossy(out);
    assert!(
        !out.contains(&0x1b) && !out.contains(&0x07) && !out.contains(&b'\r'),
        "{what} printed raw control characters: {text:?}"
    );
    assert!(
        !text.contains('\u{202e}'),
        "{what} printed a raw RTL override: {text:?}"
    );
}

#[test]
fn root_status_ignores_a_socket_planted_in_tmp() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    let m = b.map("/", &real).mount();
    let pid = m.daemon_pid();
    let tmp = shared_tmp(&m.root());
    // Any user can create $TMPDIR/relocfs-0: nobody does, with a socket for this mount.
    let _fake = fake_daemon(
        NOBODY,
        tmp.join("relocfs-0"),
        socket_name(&m.mnt),
        0o777,
        hostile,
    );
    let out = status_as(0, &[m.mnt.as_os_str()], &[("TMPDIR", &tmp)]);
    assert!(out.status.success(), "status: {}", stderr_str(&out));
    no_raw_controls("root's status", &out.stdout);
    assert!(
        stdout_str(&out).contains(&format!("pid            {pid}\n")),
        "root's status did not come from the real daemon {pid}:\n{}",
        stdout_str(&out)
    );
}

#[test]
fn user_status_refuses_a_socket_planted_by_another_user() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    let m = b.map("/", &real).opt("allow_other").mount();
    let tmp = shared_tmp(&m.root());
    // nobody plants the socket directory of uid KEY_UID, who has no XDG_RUNTIME_DIR.
    let _fake = fake_daemon(
        NOBODY,
        tmp.join(format!("relocfs-{KEY_UID}")),
        socket_name(&m.mnt),
        // Open to everyone, so the victim can connect.
        0o777,
        hostile,
    );
    let out = status_as(KEY_UID, &[m.mnt.as_os_str()], &[("TMPDIR", &tmp)]);
    no_raw_controls("the user's status", &out.stdout);
    no_raw_controls("the user's status (stderr)", &out.stderr);
    assert!(
        !out.status.success(),
        "uid {KEY_UID} trusted a socket planted by uid {NOBODY}:\n{}",
        stdout_str(&out)
    );
    assert_refusal(&out, &["permission denied"]);
}

/// A directory for `uid` only, standing in for its $XDG_RUNTIME_DIR.
fn runtime_dir(root: &Path, uid: u32) -> PathBuf {
    let dir = root.join(format!("xdg-{uid}"));
    mkdir_owned(&dir, uid, uid, 0o700);
    dir
}

/// A fake daemon of nobody's, answering with `answer`, on the socket its $XDG_RUNTIME_DIR
/// holds for the (unmounted) path `legacy`. Returns the fixture (keep it: it owns the
/// tempdir), `legacy`, the runtime dir and the fake daemon.
fn fake_in_runtime_dir(
    answer: fn(&mut UnixStream, &AtomicBool),
) -> (MountBuilder, PathBuf, PathBuf, FakeDaemon) {
    let b = MountBuilder::new();
    let legacy = b.root().join("legacy");
    mkdir_p(&legacy);
    let xdg = runtime_dir(&b.root(), NOBODY);
    let fake = fake_daemon(
        NOBODY,
        xdg.join("relocfs"),
        socket_name(&legacy),
        0o700,
        answer,
    );
    (b, legacy, xdg, fake)
}

#[test]
fn status_escapes_what_the_daemon_says() {
    skip_without_fuse!();
    let (_b, legacy, xdg, _fake) = fake_in_runtime_dir(hostile);
    for json in [false, true] {
        let mut args = vec![legacy.as_os_str()];
        if json {
            args.push("--json".as_ref());
        }
        let out = status_as(NOBODY, &args, &[("XDG_RUNTIME_DIR", &xdg)]);
        assert!(out.status.success(), "status: {}", stderr_str(&out));
        no_raw_controls(if json { "status --json" } else { "status" }, &out.stdout);
        assert!(
            stdout_str(&out).contains("owned"),
            "the answer was not shown at all: {}",
            stdout_str(&out)
        );
    }
}

#[test]
fn status_gives_up_on_a_daemon_that_dribbles() {
    skip_without_fuse!();
    let (_b, legacy, xdg, _fake) = fake_in_runtime_dir(dribble);
    // run_as gives up after 30 s: the client must have given up by itself before.
    let out = status_as(NOBODY, &[legacy.as_os_str()], &[("XDG_RUNTIME_DIR", &xdg)]);
    assert_refusal(&out, &["no complete answer"]);
}

#[test]
fn status_refuses_a_huge_answer() {
    skip_without_fuse!();
    let (_b, legacy, xdg, _fake) = fake_in_runtime_dir(huge);
    let out = status_as(NOBODY, &[legacy.as_os_str()], &[("XDG_RUNTIME_DIR", &xdg)]);
    assert_refusal(&out, &["larger than"]);
}

/// packaging/logrotate/relocfs, pointed at one test log and the binary under test, run by the
/// real logrotate -f: the daemon reopens its log; a short-lived relocfs command running at the
/// same time (here `report`, blocked on a FIFO) is not touched.
#[test]
fn logrotate_reopens_the_daemons_and_kills_no_other_relocfs() {
    skip_without_fuse!();
    let Some(logrotate) = find_program("logrotate") else {
        skip_or_fail("logrotate is not installed");
        return;
    };
    let m = hello_mount();
    let pid = m.daemon_pid();
    let f = m.at("hello.txt");
    let p1 = cat_and_wait_for_open(&m.audit, &f);

    let fifo = m.root().join("fifo");
    mkfifo(&fifo, 0o600).unwrap();
    let mut bystander = Command::new(BIN)
        .arg("report")
        .arg(&fifo)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Reap<'a>(&'a mut std::process::Child);
    impl Drop for Reap<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let bystander = Reap(&mut bystander);
    assert!(wait_until(SETTLE_TIMEOUT, || {
        fs::read_to_string(format!("/proc/{}/comm", bystander.0.id())).unwrap_or_default()
            == "relocfs\n"
    }));

    let packaged = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/logrotate/relocfs"
    ))
    .unwrap();
    let config = packaged
        .replace("/var/log/relocfs/*.jsonl", m.audit.to_str().unwrap())
        .replace("/usr/bin/relocfs", BIN);
    let conf = m.root().join("logrotate.conf");
    fs::write(&conf, config).unwrap();
    chmod(&conf, 0o644);
    let out = run_with_timeout(
        Command::new(logrotate)
            .arg("-s")
            .arg(m.root().join("logrotate.state"))
            .arg("-f")
            .arg(&conf),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "logrotate -f: {}{}",
        stdout_str(&out),
        stderr_str(&out)
    );
    let rotated = m.audit.with_extension("jsonl.1");
    assert!(
        read_audit(&rotated).iter().any(ev("open", &f, Some(p1))),
        "logrotate did not rotate {}",
        m.audit.display()
    );
    assert!(
        bystander.0.try_wait().unwrap().is_none(),
        "logrotate's postrotate killed a short-lived relocfs command: {:?}",
        bystander.0.try_wait()
    );
    assert_eq!(m.daemon_pids(), vec![pid]);
    let reopened = new_opens_reach(&m.audit, &f);
    assert!(
        reopened,
        "after logrotate, new events do not reach a new log"
    );
}

#[test]
fn reopen_is_for_root_and_the_mounting_user_only() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    let m = b.map("/", &real).opt("allow_other").mount();
    let mut cmd = Command::new(BIN);
    cmd.arg("reopen").arg(&m.mnt).env_remove("XDG_RUNTIME_DIR");
    let out = run_as(NOBODY, NOBODY, &mut cmd);
    assert_refusal(&out, &["permission denied"]);
    let out = relocfs([Path::new("reopen"), m.mnt.as_path()]);
    assert!(out.status.success(), "root: {}", stderr_str(&out));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

/// SIGUSR1 reopens the audit log and does nothing else: the config is not reread.
#[test]
fn sigusr1_reopens_without_reloading() {
    skip_without_fuse!();
    let (b, real) = hello_tree();
    let extra = b.root().join("extra");
    write_file(&extra.join("g"), b"g\n", 0o644);
    let m = b.map("/", &real).mount();
    let pid = m.daemon_pid();
    let f = m.at("hello.txt");
    cat_and_wait_for_open(&m.audit, &f);

    let mut config = fs::read_to_string(&m.config).unwrap();
    config = format!(
        "[[map]]\nfrom = \"/extra\"\nto = {}\n\n{config}",
        serde_json::to_string(extra.to_str().unwrap()).unwrap()
    );
    fs::write(&m.config, config).unwrap();
    let rotated = m.audit.with_extension("jsonl.1");
    fs::rename(&m.audit, &rotated).unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
    let reopened = new_opens_reach(&m.audit, &f);
    assert!(reopened, "after SIGUSR1, new events do not reach a new log");
    assert!(pid_alive(pid), "SIGUSR1 killed the daemon");
    assert_errno("after SIGUSR1", fs::metadata(m.at("extra/g")), libc::ENOENT);
}

/// A daemon older than the `reopen` request answers any request with its status: `relocfs
/// reopen` then sends SIGHUP to the process the kernel names as the socket's peer (here a
/// stand-in that records the signal), which reopens such a daemon's log.
#[test]
fn reopen_falls_back_to_sighup_for_an_older_daemon() {
    skip_without_fuse!();
    let Some(python) = system_python() else {
        skip_or_fail("/usr/bin/python3 is missing");
        return;
    };
    let b = MountBuilder::new();
    let legacy = b.root().join("legacy");
    mkdir_p(&legacy);
    let xdg = runtime_dir(&b.root(), NOBODY);
    let sockdir = xdg.join("relocfs");
    let marker = xdg.join("got-sighup");
    let script = r#"
import json, os, signal, socket, sys
sockdir, name, marker = sys.argv[1], sys.argv[2], sys.argv[3]
signal.signal(signal.SIGHUP, lambda *a: open(marker, "w").close())
os.mkdir(sockdir, 0o700)
s = socket.socket(socket.AF_UNIX)
s.bind(os.path.join(sockdir, name))
s.listen(4)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(0.5)
    try:
        c.recv(64)
    except OSError:
        pass
    c.sendall(json.dumps({"pid": os.getpid(), "uptime_secs": 1, "mountpoint": "/x"}).encode())
    c.close()
"#;
    let mut cmd = Command::new(python);
    cmd.arg("-c")
        .arg(script)
        .arg(&sockdir)
        .arg(socket_name(&legacy))
        .arg(&marker);
    use std::os::unix::process::CommandExt;
    cmd.uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut old = cmd.spawn().unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut line = String::new();
    let mut out = std::io::BufReader::new(old.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let old = Kill(old);
    assert_eq!(line, "ready\n");

    let mut cmd = Command::new(BIN);
    cmd.arg("reopen").arg(&legacy).env("XDG_RUNTIME_DIR", &xdg);
    let out = run_as(NOBODY, NOBODY, &mut cmd);
    assert!(out.status.success(), "reopen: {}", stderr_str(&out));
    assert!(
        wait_until(SETTLE_TIMEOUT, || marker.exists()),
        "the older daemon got no SIGHUP"
    );
    drop(old);
}

/// `relocfs reload MOUNTPOINT` rereads the config of that daemon (no pid, no pkill pattern);
/// another user cannot ask for it.
#[test]
fn reload_request_rereads_the_config() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    let extra = b.root().join("extra");
    write_file(&extra.join("g"), b"g\n", 0o644);
    let m = b.map("/", &real).opt("allow_other").mount();
    let pid = m.daemon_pid();
    let config = fs::read_to_string(&m.config).unwrap();
    fs::write(&m.config, with_map_first(&config, "/extra", &extra)).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("reload").arg(&m.mnt).env_remove("XDG_RUNTIME_DIR");
    let out = run_as(NOBODY, NOBODY, &mut cmd);
    assert_refusal(&out, &["permission denied"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_errno(
        "after a refused reload",
        fs::metadata(m.at("extra/g")),
        libc::ENOENT,
    );

    let out = relocfs([Path::new("reload"), m.mnt.as_path()]);
    assert!(out.status.success(), "reload: {}", stderr_str(&out));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    assert!(
        wait_until(SETTLE_TIMEOUT, || fs::read(m.at("extra/g")).ok().as_deref()
            == Some(b"g\n")),
        "the rule added to the config did not appear after relocfs reload"
    );
    assert_eq!(m.daemon_pids(), vec![pid]);
}

/// `relocfs reopen --all` (logrotate's postrotate) succeeds while a daemon is exiting: such a
/// daemon accepts the connection, closes it unanswered and stops listening. Before, that made
/// the whole reopen fail whenever any daemon on the host was going away at that moment.
#[test]
fn reopen_all_passes_over_a_daemon_that_is_exiting() {
    skip_without_fuse!();
    let dir = Path::new("/run/relocfs");
    if !dir.exists() {
        fs::create_dir_all(dir).unwrap();
        chmod(dir, 0o700);
    }
    let path = dir.join(format!("relocfs-test-exiting-{}.sock", std::process::id()));
    let _ = fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    chmod(&path, 0o600);
    let exiting = std::thread::spawn(move || {
        // One connection, closed unanswered; then the listener goes, as in an exiting daemon.
        if let Ok((stream, _)) = listener.accept() {
            drop(stream);
        }
    });
    let out = relocfs(["reopen", "--all"]);
    exiting.join().unwrap();
    let _ = fs::remove_file(&path);
    assert!(
        out.status.success(),
        "reopen --all failed over an exiting daemon: {}",
        stderr_str(&out)
    );
}
