//! Rule lifecycles on a real mount: `warn` tells the journal (a stand-in socket) about the
//! calling process, once per process and path and never faster than its rate; a brownout
//! window refuses new lookups and opens at once (a cached entry does not outlive its start),
//! serves an exempt uid and files already open, and serves everyone again when it ends;
//! `retired` (by stage, by reload, or past `retire_after`) refuses for good. The windows are
//! short absolute ones computed here; every wait polls with a generous hang guard.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// How long any stage change may take to show before the test gives up (a hang guard).
const GUARD: Duration = Duration::from_secs(30);

/// One datagram of the journal's native protocol as fields (a repeated field keeps its last).
fn journal_fields(datagram: &[u8]) -> HashMap<String, Vec<u8>> {
    let mut fields = HashMap::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let line_end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let line = &rest[..line_end];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            let key = String::from_utf8_lossy(&line[..eq]).into_owned();
            fields.insert(key, line[eq + 1..].to_vec());
            rest = rest.get(line_end + 1..).unwrap_or_default();
        } else {
            // KEY\n, u64 little-endian length, value, \n.
            let key = String::from_utf8_lossy(line).into_owned();
            let after = &rest[line_end + 1..];
            let len = u64::from_le_bytes(after[..8].try_into().unwrap()) as usize;
            fields.insert(key, after[8..8 + len].to_vec());
            rest = after.get(8 + len + 1..).unwrap_or_default();
        }
    }
    fields
}

/// A stand-in for journald's socket, in the fixture's tempdir.
struct FakeJournal {
    socket: UnixDatagram,
    path: PathBuf,
}

/// Restores `net.unix.max_dgram_qlen` however the test ends.
struct QueueLength(String);

impl Drop for QueueLength {
    fn drop(&mut self) {
        let _ = fs::write(QLEN, &self.0);
    }
}

const QLEN: &str = "/proc/sys/net/unix/max_dgram_qlen";

impl FakeJournal {
    /// A socket whose queue holds `queue` datagrams, as journald's does (the kernel's default
    /// of 10 would drop the burst before the test reads it). The setting is read when a socket
    /// is made, so it is restored at once.
    fn bind_with_queue(dir: &Path, queue: u32) -> FakeJournal {
        let old = fs::read_to_string(QLEN).expect("read max_dgram_qlen");
        let _restore = QueueLength(old.trim().to_string());
        fs::write(QLEN, queue.to_string()).expect("raise max_dgram_qlen");
        FakeJournal::bind(dir)
    }

    fn bind(dir: &Path) -> FakeJournal {
        let path = dir.join("journal.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the stand-in journal socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        FakeJournal { socket, path }
    }

    /// Messages received until one satisfies `until` (included), or the guard expires.
    fn receive_until(
        &self,
        until: impl Fn(&HashMap<String, Vec<u8>>) -> bool,
    ) -> Vec<HashMap<String, Vec<u8>>> {
        let deadline = Instant::now() + GUARD;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let fields = journal_fields(&buf[..n]);
                let done = until(&fields);
                got.push(fields);
                if done {
                    return got;
                }
            }
        }
        let shown: Vec<_> = got
            .iter()
            .rev()
            .take(3)
            .map(|f| String::from_utf8_lossy(field(f, "MESSAGE")).into_owned())
            .collect();
        panic!(
            "the awaited journal message never came; got {} messages, the last: {shown:?}",
            got.len()
        );
    }
}

impl FakeJournal {
    /// Reads on a thread of its own, from now until nothing came for `quiet` after the
    /// first message: what the join gives back.
    fn read_in_background(
        &self,
        quiet: Duration,
    ) -> std::thread::JoinHandle<Vec<HashMap<String, Vec<u8>>>> {
        let socket = self.socket.try_clone().unwrap();
        std::thread::spawn(move || {
            let deadline = Instant::now() + GUARD * 4;
            let mut got = Vec::new();
            let mut buf = vec![0u8; 65536];
            let mut last = Instant::now();
            while Instant::now() < deadline && (got.is_empty() || last.elapsed() < quiet) {
                if let Ok(n) = socket.recv(&mut buf) {
                    got.push(journal_fields(&buf[..n]));
                    last = Instant::now();
                }
            }
            got
        })
    }
}

fn field<'a>(f: &'a HashMap<String, Vec<u8>>, key: &str) -> &'a [u8] {
    f.get(key).map_or(&[][..], Vec::as_slice)
}

fn toml_str(p: &Path) -> String {
    serde_json::to_string(p.to_str().unwrap()).unwrap()
}

/// `relocfs status --json`'s row for `rule`.
fn stage_row(m: &Mounted, rule: &str) -> Value {
    let out = relocfs([
        std::ffi::OsStr::new("status"),
        std::ffi::OsStr::new("--json"),
        m.mnt.as_os_str(),
    ]);
    assert!(out.status.success(), "status: {}", stderr_str(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["stages"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["rule"] == rule).cloned())
        .unwrap_or_else(|| panic!("no stage row for {rule} in {v}"))
}

/// Waits until the daemon says the rule on `rule` is now `now` (and the kernel's cache agrees).
fn wait_for_now(m: &Mounted, rule: &str, now: &str) {
    assert!(
        wait_until(GUARD, || stage_row(m, rule)["now"] == now),
        "rule {rule} never became {now}: {}",
        stage_row(m, rule)
    );
}

fn reload(m: &Mounted, config: &str) {
    fs::write(&m.config, config).unwrap();
    let out = relocfs([std::ffi::OsStr::new("reload"), m.mnt.as_os_str()]);
    assert!(out.status.success(), "reload: {}", stderr_str(&out));
}

fn instant(secs: i64) -> String {
    relocfs::time::format_micros(secs * 1_000_000)
}

#[test]
fn warn_tells_the_journal_about_the_caller_once_per_process_and_path() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    fs::write(real.join("f"), b"data").unwrap();
    fs::write(real.join("marker"), b"m").unwrap();
    let journal = FakeJournal::bind(&b.root());
    let config = format!(
        "[[map]]\nfrom = \"/\"\nto = {}\nstage = \"warn\"\n[stages]\njournal_socket = {}\n",
        toml_str(&real),
        toml_str(&journal.path)
    );
    let m = b.raw_config(&config).mount();
    let f = m.at("f");

    // One process (a shell and its builtins) looks the path up and opens it three times:
    // one warning.
    let (pid, out) = run_as_pid(
        0,
        0,
        &mut sh(
            "exec 3<\"$1\"; exec 4<\"$1\"; read -r x <\"$1\" || true",
            &[&f],
        ),
    );
    assert!(out.status.success(), "{}", stderr_str(&out));
    // A marker from another process: datagrams from the daemon arrive in order.
    let (marker_pid, _) = run_as_pid(0, 0, Command::new("cat").arg(m.at("marker")));
    let got =
        journal.receive_until(|f| field(f, "OBJECT_PID") == marker_pid.to_string().as_bytes());
    let mine: Vec<_> = got
        .iter()
        .filter(|m| field(m, "OBJECT_PID") == pid.to_string().as_bytes())
        .filter(|m| field(m, "RELOCFS_LEGACY_PATH") == f.to_str().unwrap().as_bytes())
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "one warning per process and path, of {} messages",
        got.len()
    );
    let w = mine[0];
    assert_eq!(field(w, "PRIORITY"), b"4");
    assert_eq!(field(w, "SYSLOG_IDENTIFIER"), b"relocfs");
    assert_eq!(
        field(w, "MESSAGE_ID"),
        relocfs::stage::MESSAGE_ID.as_bytes()
    );
    assert_eq!(field(w, "RELOCFS_RULE"), b"/");
    assert_eq!(
        field(w, "RELOCFS_REAL_PATH"),
        real.join("f").to_str().unwrap().as_bytes()
    );
    assert!(String::from_utf8_lossy(field(w, "MESSAGE")).contains(&pid.to_string()));
    // Served as usual.
    assert_eq!(fs::read(&f).unwrap(), b"data");
}

/// An attacker who makes thousands of distinct paths cannot make the daemon flood the journal:
/// at most the burst plus the rate per elapsed second get through; the rest are counted.
#[test]
fn warn_is_rate_limited_whatever_the_number_of_paths() {
    skip_without_fuse!();
    let b = MountBuilder::new().opt("allow_other");
    let real = b.real();
    let journal = FakeJournal::bind_with_queue(&b.root(), 4096);
    let config = format!(
        "[[map]]\nfrom = \"/\"\nto = {}\nstage = \"warn\"\n[stages]\njournal_socket = {}\n",
        toml_str(&real),
        toml_str(&journal.path)
    );
    let m = b.no_audit().raw_config(&config).mount();
    let reader = journal.read_in_background(Duration::from_secs(3));
    let started = Instant::now();
    let out = run_as(
        NOBODY,
        NOBODY,
        &mut sh(
            "i=0; while [ $i -lt 2000 ]; do [ -e \"$1/n$i\" ]; i=$((i+1)); done",
            &[&m.mnt],
        ),
    );
    assert!(out.status.success(), "{}", stderr_str(&out));
    // Everything sent has arrived once nothing came for a while (a wait, not an assertion).
    let got = reader.join().unwrap();
    let elapsed = started.elapsed().as_secs() as usize + 1;
    // 200 at once, then 20 a second (see stage.rs); 2000 paths were used.
    assert!(
        got.len() <= 200 + 20 * elapsed,
        "{} warnings in about {elapsed}s",
        got.len()
    );
    assert!(got.len() >= 200, "the burst was sent: {}", got.len());
    // And the daemon still serves.
    assert!(m.mnt.is_dir());
}

/// The config of the brownout test: a rule on /app, browned out in `window`, uid KEY_UID and
/// the unit `unit` exempt, names and attributes cached by the kernel for 300 s.
fn brownout_config(real: &Path, window: &str, unit: &str) -> String {
    format!(
        "[[map]]\nfrom = \"/app\"\nto = {}\nstage = \"brownout\"\nbrownout = [{}]\n\
         exempt_uids = [{KEY_UID}]\nexempt_units = [{unit:?}]\n\n[audit]\nlog = {{AUDIT}}\n\n\
         [fuse]\nentry_timeout = 300\nattr_timeout = 300\n",
        toml_str(real),
        serde_json::to_string(window).unwrap()
    )
}

/// A transient systemd-style scope: a cgroup made under the cgroup2 mount, removed on drop
/// (once the processes moved into it have exited).
struct Scope {
    dir: PathBuf,
    name: String,
}

impl Scope {
    fn new() -> Option<Scope> {
        let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
        let root = info.lines().find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split(' ').next() == Some("cgroup2")).then(|| left.split(' ').nth(4))?
        })?;
        let name = format!("relocfs-stage-test-{}.scope", std::process::id());
        let dir = Path::new(root).join(&name);
        fs::create_dir(&dir).ok()?;
        Some(Scope { dir, name })
    }

    /// `sh -c SCRIPT` run as root inside the scope.
    fn run(&self, script: &str, args: &[&Path]) -> std::process::Output {
        let procs = self.dir.join("cgroup.procs");
        let script = format!("echo $$ > {} && {script}", toml_str(&procs));
        run_as(0, 0, &mut sh(&script, args))
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        // Empty once its last process is reaped; a moment at most.
        wait_until(SETTLE_TIMEOUT, || fs::remove_dir(&self.dir).is_ok());
    }
}

#[test]
fn a_brownout_window_refuses_new_accesses_at_once_and_serves_again_after() {
    skip_without_fuse!();
    let b = MountBuilder::new().opt("allow_other");
    let app = b.real().join("app");
    mkdir_p(&app);
    write_file(&app.join("f"), b"0123456789", 0o644);
    write_file(&app.join("g"), b"g", 0o644);
    let audit = b.audit_path();
    let scope = Scope::new();
    if scope.is_none() && on_ci() {
        panic!("cannot make a cgroup under the cgroup2 mount");
    }
    let unit = scope
        .as_ref()
        .map_or("none.scope".to_string(), |s| s.name.clone());
    let config =
        |window: &str| brownout_config(&app, window, &unit).replace("{AUDIT}", &toml_str(&audit));
    let m = b.raw_config(&config("2099-01-01T00:00:00Z for 1h")).mount();
    let f = m.at("app/f");

    // A window a few seconds ahead, set by a reload; tried again if this machine is so slow
    // that it started before the caches below were filled.
    let (held, start) = (0..5)
        .find_map(|_| {
            let start = now_unix() + 4;
            let window = format!("{} for 4s", instant(start));
            reload(&m, &config(&window));
            assert!(wait_until(GUARD, || stage_row(&m, "/app")["next_window"]
                [0]
            .as_str()
            .is_some_and(|s| s.starts_with(&instant(start)[..19]))));
            // Cached by the kernel for 300 s; a file held open across the window.
            fs::metadata(&f).ok()?;
            let held = fs::File::open(&f).ok()?;
            (now_unix() < start).then_some((held, start))
        })
        .expect("never got ahead of the window");

    wait_for_now(&m, "/app", "brownout");
    assert!(now_unix() >= start);
    // The cached positive entry did not survive the start of the window.
    assert_errno("stat inside the window", fs::metadata(&f), libc::ENOENT);
    assert_errno(
        "open inside the window",
        fs::File::open(m.at("app/g")),
        libc::ENOENT,
    );
    assert_errno(
        "listing inside the window",
        fs::read_dir(m.at("app")),
        libc::ENOENT,
    );
    let out = run_as(NOBODY, NOBODY, Command::new("cat").arg(&f));
    assert!(!out.status.success(), "nobody was served in the window");
    // An exempt uid is served; the file open before the window keeps reading.
    let out = run_as(KEY_UID, KEY_GID, Command::new("cat").arg(&f));
    assert!(
        out.status.success(),
        "exempt uid refused: {}",
        stderr_str(&out)
    );
    assert_eq!(out.stdout, b"0123456789");
    // A process of the exempt unit is served (nobody, in no unit, was refused above).
    if let Some(scope) = &scope {
        let out = scope.run("exec cat \"$1\"", &[&f]);
        assert!(
            out.status.success(),
            "exempt unit refused: {}",
            stderr_str(&out)
        );
        assert_eq!(out.stdout, b"0123456789");
    }
    let mut buf = [0u8; 4];
    held.read_exact_at(&mut buf, 2).unwrap();
    assert_eq!(&buf, b"2345");
    // Every refusal is audited with its reason (the walk stops at the rule's root).
    let refused = wait_for_audit(
        &m.audit,
        |v| s(v, "path") == m.at("app").to_str() && s(v, "reason") == Some("brownout"),
        AUDIT_TIMEOUT,
    );
    assert_eq!(s(&refused, "result"), Some("ENOENT"), "{refused}");

    // The window ends: served again, for everyone.
    wait_for_now(&m, "/app", "warn");
    assert_eq!(fs::read(&f).unwrap(), b"0123456789");
    let mut text = String::new();
    fs::File::open(m.at("app/g"))
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "g");
    let out = run_as(NOBODY, NOBODY, Command::new("cat").arg(&f));
    assert!(out.status.success(), "{}", stderr_str(&out));
    let mut buf = [0u8; 2];
    held.read_exact_at(&mut buf, 8).unwrap();
    assert_eq!(&buf, b"89");
    let row = stage_row(&m, "/app");
    assert!(row["last_access"].is_string(), "{row}");
}

#[test]
fn a_rule_is_retired_after_its_date_and_by_a_reload() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let old = b.real().join("old");
    let new = b.real().join("new");
    mkdir_p(&old);
    mkdir_p(&new);
    fs::write(old.join("f"), b"old").unwrap();
    fs::write(new.join("f"), b"new").unwrap();
    let audit = b.audit_path();
    let config = |new_stage: &str| {
        format!(
            "[[map]]\nfrom = \"/old\"\nto = {}\nstage = \"warn\"\nretire_after = \"2020-01-01\"\n\n\
             [[map]]\nfrom = \"/new\"\nto = {}\nstage = {new_stage:?}\n\n[audit]\nlog = {}\n\n\
             [fuse]\nentry_timeout = 300\nattr_timeout = 300\n",
            toml_str(&old),
            toml_str(&new),
            toml_str(&audit)
        )
    };
    let m = b.raw_config(&config("serve")).mount();
    // Past its retire_after date: ENOENT, audited "retired"; status says so.
    assert_errno(
        "stat of a retired rule",
        fs::metadata(m.at("old/f")),
        libc::ENOENT,
    );
    let refused = wait_for_audit(
        &m.audit,
        |v| s(v, "reason") == Some("retired"),
        AUDIT_TIMEOUT,
    );
    assert_eq!(s(&refused, "result"), Some("ENOENT"), "{refused}");
    let row = stage_row(&m, "/old");
    assert_eq!(row["now"], "retired", "{row}");
    assert_eq!(row["retire_after"], "2020-01-01T00:00:00Z", "{row}");

    // Served and cached for 300 s, then retired by a reload: refused at once.
    assert_eq!(fs::read(m.at("new/f")).unwrap(), b"new");
    reload(&m, &config("retired"));
    wait_for_now(&m, "/new", "retired");
    assert_errno(
        "stat after the reload",
        fs::metadata(m.at("new/f")),
        libc::ENOENT,
    );
    // And back.
    reload(&m, &config("serve"));
    wait_for_now(&m, "/new", "serve");
    assert_eq!(fs::read(m.at("new/f")).unwrap(), b"new");
}
