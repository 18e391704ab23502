//! A background daemon has no terminal: its diagnostics (a refused reload, say) go to syslog.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;

/// Removes the stand-in /dev/log however the test ends.
struct FakeSyslog;

impl Drop for FakeSyslog {
    fn drop(&mut self) {
        let _ = fs::remove_file("/dev/log");
    }
}

#[test]
fn refused_reload_of_a_background_daemon_reaches_syslog() {
    skip_without_fuse!();
    if Path::new("/dev/log").exists() {
        // A real syslog daemon or journald owns it; do not take its socket away.
        eprintln!("SKIP: /dev/log belongs to this machine's syslog");
        return;
    }
    let socket = UnixDatagram::bind("/dev/log").expect("bind /dev/log");
    let _cleanup = FakeSyslog;
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    let b = MountBuilder::new();
    let real = b.real();
    let m = b.map("/", &real).mount();
    fs::write(&m.config, "[[map]]\nfrom = \"relative\"\n").unwrap();
    let pid = m.daemon_pid();
    // SAFETY: sending a signal to the daemon's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);

    let wanted = m.config.to_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.contains("reload refused") && msg.contains(&wanted) {
                // "<27>..." is LOG_DAEMON | LOG_ERR; the tag names relocfs and its pid.
                assert!(msg.starts_with("<27>"), "{msg}");
                assert!(msg.contains(&format!("relocfs[{pid}]")), "{msg}");
                return;
            }
            seen.push(msg);
        }
    }
    panic!("no 'reload refused' message in syslog; saw {seen:?}");
}
