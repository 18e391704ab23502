//! Many hosts, on an engine a fleet already runs: rsyslog (Debian's) on each "host" reads that
//! host's JSON Lines audit log with imfile and forwards it over TCP to a central rsyslog, which
//! writes one file per host; `relocfs report` over the central files gives the same figures as
//! over the hosts' own logs, and `--by host` tells the hosts apart. The two rsyslog
//! configurations are README's ("Many hosts"), paths and addresses replaced. Everything on
//! 127.0.0.1; every rsyslogd is the test's own (own config, pidfile, work directory), killed on
//! drop; no system rsyslog is touched.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::attribution::mount_on_host;
use crate::common::*;
use crate::report::unmount_and_wait;

/// Generous hang guard for shipping a few dozen lines through two rsyslogds.
const SHIP_TIMEOUT: Duration = Duration::from_secs(60);

/// The two rsyslog configurations of README's "Many hosts" section: (host side, central side).
fn readme_confs() -> (String, String) {
    let readme =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let (_, section) = readme
        .split_once("### Many hosts: shipping the audit log with rsyslog\n")
        .expect("README has no \"Many hosts\" section");
    let end = ["\n## ", "\n### "]
        .iter()
        .filter_map(|h| section.find(h))
        .min()
        .unwrap_or(section.len());
    let section = &section[..end];
    let blocks: Vec<&str> = section
        .split("\n```")
        .skip(1)
        .step_by(2)
        .filter_map(|b| b.strip_prefix('\n'))
        .collect();
    assert!(blocks.len() >= 2, "README's section has two config blocks");
    (format!("{}\n", blocks[0]), format!("{}\n", blocks[1]))
}

/// `text` with each `(from, to)` replaced; every `from` must be there (the README and the test
/// cannot drift apart silently).
fn substitute(text: &str, subs: &[(&str, &str)]) -> String {
    subs.iter().fold(text.to_owned(), |t, (from, to)| {
        assert!(
            t.contains(from),
            "README's rsyslog config lacks {from:?}:\n{t}"
        );
        t.replace(from, to)
    })
}

/// The host side, README's: the audit log `log` read by imfile, forwarded as RFC 5424 with
/// octet-counted framing to 127.0.0.1:`port`, queued while the central is away; `host` is the
/// name the central file is keyed on.
fn host_conf(work: &Path, host: &str, log: &Path, port: u16) -> String {
    substitute(
        &readme_confs().0,
        &[
            ("/var/spool/rsyslog", &work.display().to_string()),
            ("web-01", host),
            (
                "/var/log/relocfs/jumpserver.jsonl",
                &log.display().to_string(),
            ),
            ("logs.example.net", "127.0.0.1"),
            ("6514", &port.to_string()),
        ],
    )
}

/// The central side, README's: imtcp on 127.0.0.1:`port`, one file per sending host below
/// `dir`, each line exactly the message (the JSON line, no syslog header).
fn central_conf(work: &Path, dir: &Path, port: u16) -> String {
    substitute(
        &readme_confs().1,
        &[
            ("/var/spool/rsyslog", &work.display().to_string()),
            ("/var/log/relocfs-fleet", &dir.display().to_string()),
            ("192.0.2.10", "127.0.0.1"),
            ("6514", &port.to_string()),
        ],
    )
}

/// One rsyslogd of the test, in the foreground (`-n`), with its own config, pidfile and work
/// directory below `dir`; killed on drop whatever happened.
struct Rsyslogd {
    child: Child,
    stderr: PathBuf,
}

impl Rsyslogd {
    /// Checks `conf` with `rsyslogd -N1`, then starts it.
    fn start(bin: &Path, dir: &Path, name: &str, conf: impl FnOnce(&Path) -> String) -> Self {
        let work = dir.join(format!("{name}-work"));
        mkdir_p(&work);
        let conf_path = dir.join(format!("{name}.conf"));
        fs::write(&conf_path, conf(&work)).expect("rsyslog config");
        let out = run_with_timeout(
            Command::new(bin).arg("-N1").arg("-f").arg(&conf_path),
            SETTLE_TIMEOUT,
        );
        assert!(out.status.success(), "{name}: {}", stderr_str(&out));
        let stderr = dir.join(format!("{name}.stderr"));
        let err = fs::File::create(&stderr).expect("stderr file");
        let child = Command::new(bin)
            .arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(dir.join(format!("{name}.pid")))
            .stdin(Stdio::null())
            .stdout(err.try_clone().expect("stderr file"))
            .stderr(err)
            .spawn()
            .expect("spawn rsyslogd");
        Rsyslogd { child, stderr }
    }

    /// What it printed (for failure messages).
    fn output(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, and waits for it to exit.
    fn stop(&mut self) {
        // SAFETY: kill has no memory effects; the pid is our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let (exited, _) = wait_exit(&mut self.child, SETTLE_TIMEOUT);
        assert!(exited, "rsyslogd did not stop: {}", self.output());
    }
}

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn line_count(p: &Path) -> usize {
    fs::read(p).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

fn report(logs: &[&Path], extra: &[&str]) -> Value {
    let mut args: Vec<&std::ffi::OsStr> = ["report", "--format", "json", "--limit", "0"]
        .iter()
        .chain(extra)
        .map(std::ffi::OsStr::new)
        .collect();
    args.extend(logs.iter().map(|l| l.as_os_str()));
    let out = relocfs(args);
    assert!(out.status.success(), "report: {}", stderr_str(&out));
    serde_json::from_slice(&out.stdout).expect("report JSON")
}

/// The report without what names the files read, nor what depends on when it ran (`now`, the
/// age of the last access and the verdict's text, which says it).
fn comparable(mut r: Value) -> Value {
    if let Some(files) = r["totals"]["files"].as_array_mut() {
        for f in files {
            f["path"] = Value::Null;
        }
    }
    r["totals"]["now"] = Value::Null;
    r["verdict"]["last_access"]["ago_seconds"] = Value::Null;
    r["verdict"]["text"] = Value::Null;
    r
}

/// Two real mounts on two "hosts", their logs shipped by real rsyslog to a central one.
#[test]
fn rsyslog_ships_two_hosts_logs_to_a_central_with_the_same_report() {
    skip_without_fuse!();
    let Some(bin) = find_program("rsyslogd").or_else(|| {
        let p = PathBuf::from("/usr/sbin/rsyslogd");
        p.exists().then_some(p)
    }) else {
        skip_or_fail("rsyslogd is not installed");
        return;
    };

    // Host a: this machine's name. A long path (250-byte names; control characters, which JSON
    // writes as six bytes each, and non-ASCII UTF-8) whose events are longer than rsyslog's
    // default 8 KiB message size.
    let ba = MountBuilder::new();
    let real_a = ba.real();
    write_file(&real_a.join("etc/app.conf"), b"conf\n", 0o644);
    let long: PathBuf = (0..15)
        .map(|i| match i {
            0 => "\u{1}".repeat(250),
            1 => "é".repeat(125),
            _ => format!("{i}{}", "d".repeat(248)),
        })
        .collect();
    write_file(&real_a.join(&long).join("f"), b"deep\n", 0o644);
    let a = ba.map("/", &real_a).opt("allow_other").mount();
    let host_a = fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let host_a = host_a.trim_end().to_owned();
    // Host b: a daemon in a UTS namespace of its own.
    let host_b = "relocfs-test-fleet-b";
    let bb = MountBuilder::new();
    let real_b = bb.real();
    write_file(&real_b.join("etc/app.conf"), b"conf\n", 0o644);
    let b = mount_on_host(bb.map("/", &real_b).opt("allow_other"), host_b);
    assert_ne!(host_a, host_b);

    let conf_a = a.at("etc/app.conf");
    let deep = a.at(&long.join("f").to_string_lossy());
    let out = run_with_timeout(
        sh(
            "cat \"$1\" \"$1\" \"$1\" \"$2\" \"$2\"; cat \"$3\"",
            &[&conf_a, &deep, &a.at("nope")],
        )
        .stdout(Stdio::null()),
        SETTLE_TIMEOUT,
    );
    assert!(!out.status.success(), "the miss fails");
    let out = run_as(
        NOBODY,
        NOBODY,
        Command::new("cat").arg(b.at("etc/app.conf")),
    );
    assert!(out.status.success(), "{}", stderr_str(&out));
    let out = run_as(NOBODY, NOBODY, Command::new("cat").arg(b.at("etc/missing")));
    assert!(!out.status.success(), "the miss fails");
    // Unmounted: every event is on disk and the logs no longer grow.
    unmount_and_wait(&a);
    unmount_and_wait(&b);
    let longest = fs::read_to_string(&a.audit)
        .expect("log a")
        .lines()
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(longest > 8192, "a line above 8 KiB: {longest}");

    // The central rsyslog first, then the two hosts'.
    let dir = tempfile::tempdir().expect("tempdir");
    let central_dir = dir.path().join("central");
    let port = free_port();
    let mut central = Rsyslogd::start(&bin, dir.path(), "central", |w| {
        central_conf(w, &central_dir, port)
    });
    assert!(
        wait_until(SHIP_TIMEOUT, || TcpStream::connect(("127.0.0.1", port))
            .is_ok()),
        "central rsyslogd does not listen: {}",
        central.output()
    );
    let mut ship_a = Rsyslogd::start(&bin, dir.path(), "host-a", |w| {
        host_conf(w, &host_a, &a.audit, port)
    });
    let mut ship_b = Rsyslogd::start(&bin, dir.path(), "host-b", |w| {
        host_conf(w, host_b, &b.audit, port)
    });
    let got_a = central_dir.join(format!("{host_a}.log"));
    let got_b = central_dir.join(format!("{host_b}.log"));
    let complete = wait_until(SHIP_TIMEOUT, || {
        line_count(&got_a) >= line_count(&a.audit) && line_count(&got_b) >= line_count(&b.audit)
    });
    assert!(
        complete,
        "central files incomplete: {} of {} and {} of {} lines\ncentral: {}\nhost a: {}\nhost b: {}",
        line_count(&got_a),
        line_count(&a.audit),
        line_count(&got_b),
        line_count(&b.audit),
        central.output(),
        ship_a.output(),
        ship_b.output()
    );
    ship_a.stop();
    ship_b.stop();
    central.stop();
    let mut files: Vec<String> = fs::read_dir(&central_dir)
        .expect("central dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut want = vec![format!("{host_a}.log"), format!("{host_b}.log")];
    want.sort();
    assert_eq!(files, want, "one file per host");

    // The same figures from the central files as from the hosts' own logs.
    let own = report(&[&a.audit, &b.audit], &[]);
    let central_r = report(&[&got_a, &got_b], &[]);
    assert_eq!(comparable(central_r), comparable(own.clone()));
    assert_eq!(own["totals"]["hosts"], 2, "{own}");
    assert_eq!(own["totals"]["malformed_lines"], 0, "{own}");
    assert_eq!(own["totals"]["overlong_lines"], 0, "{own}");
    assert_eq!(own["misses"]["total"], 2, "{own}");
    // Each line arrived exactly as written: no syslog header, no leading space, no escaping.
    for (got, log) in [(&got_a, &a.audit), (&got_b, &b.audit)] {
        assert!(
            fs::read(got).expect("central") == fs::read(log).expect("own"),
            "{} differs from {}",
            got.display(),
            log.display()
        );
    }

    // And the hosts told apart: each host's hits are its own log's events.
    let by_host = report(&[&got_a, &got_b], &["--by", "host"]);
    let hits = |host: &str| {
        by_host["groups"]["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|g| g["host"] == host)
            .and_then(|g| g["hits"].as_u64())
    };
    let events = |log: &Path| {
        read_audit(log)
            .iter()
            .map(|e| n(e, "count").unwrap_or(1))
            .sum::<u64>()
    };
    assert_eq!(hits(&host_a), Some(events(&a.audit)), "{by_host}");
    assert_eq!(hits(host_b), Some(events(&b.audit)), "{by_host}");
    for (log, host) in [(&got_a, host_a.as_str()), (&got_b, host_b)] {
        assert!(
            read_audit(log).iter().all(|e| s(e, "host") == Some(host)),
            "{} holds only {host}'s events",
            log.display()
        );
    }
}
