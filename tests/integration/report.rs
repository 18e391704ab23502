//! Audit logs made by real mounts, read back by `relocfs report` and `relocfs status`: the
//! figures must be exactly what the processes did.

use std::fs;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// Three processes as three users: uid 4242 reads a key twice, uid 65534 lists a directory
/// and misses a file, root is denied twice and refused a write once.
fn make_traffic(m: &Mounted) {
    let key = m.mnt.join("keys/id_rsa");
    for _ in 0..2 {
        let out = run_as(4242, 4242, Command::new("cat").arg(&key));
        assert!(out.status.success(), "{}", stderr_str(&out));
    }
    let out = run_as(65534, 65534, Command::new("ls").arg(m.mnt.join("keys")));
    assert!(out.status.success(), "{}", stderr_str(&out));
    let out = run_as(
        65534,
        65534,
        Command::new("cat").arg(m.mnt.join("keys/old_key")),
    );
    assert!(!out.status.success());
    for _ in 0..2 {
        assert_errno(
            "stat admin",
            fs::metadata(m.mnt.join("keys/admin/x")),
            libc::EACCES,
        );
    }
    assert_errno(
        "write",
        fs::OpenOptions::new()
            .append(true)
            .open(m.mnt.join("config.yml")),
        libc::EROFS,
    );
}

/// Unmounts and waits for the daemon to exit: then every event is on disk.
pub(crate) fn unmount_and_wait(m: &Mounted) {
    let pid = m.daemon_pid();
    m.unmount_all();
    assert!(wait_until(Duration::from_secs(10), || !pid_alive(pid)));
}

fn mount_story() -> Mounted {
    let b = MountBuilder::new();
    let real = b.real();
    mkdir_p(&real.join("keys"));
    write_owned(&real.join("keys/id_rsa"), b"KEY", 0o600, 4242, 4242);
    write_file(&real.join("config.yml"), b"a: 1\n", 0o644);
    b.map("/", &real)
        .deny("/keys/admin")
        .opt("allow_other")
        .mount()
}

fn report_json(log: &std::path::Path, extra: &[&str]) -> Value {
    let out = relocfs(
        ["report", "--format", "json", "--limit", "0"]
            .iter()
            .map(std::ffi::OsStr::new)
            .chain(extra.iter().map(std::ffi::OsStr::new))
            .chain([log.as_os_str()]),
    );
    assert!(out.status.success(), "report failed: {}", stderr_str(&out));
    serde_json::from_slice(&out.stdout).expect("report JSON")
}

#[test]
fn report_counts_what_processes_did_through_a_mount() {
    skip_without_fuse!();
    let m = mount_story();
    make_traffic(&m);
    let log = m.audit.clone();
    let mnt = m.mnt.clone();
    unmount_and_wait(&m);
    let r = report_json(&log, &[]);

    // 2 opens + 1 opendir + 1 miss + 2 denials + 1 refused open; plus whatever lookups the
    // tools made that missed (counted in misses below, exactly).
    let misses = r["misses"]["rows"].as_array().unwrap();
    let miss_hits: u64 = misses.iter().map(|m| m["hits"].as_u64().unwrap()).sum();
    assert_eq!(r["totals"]["events"], 6 + miss_hits);
    assert_eq!(r["totals"]["lost_events"], 0);
    assert_eq!(r["totals"]["malformed_lines"], 0);

    let old_key = mnt.join("keys/old_key");
    let miss = misses
        .iter()
        .find(|m| m["path"] == old_key.to_str().unwrap())
        .expect("the missed key is reported");
    assert_eq!(miss["hits"], 1);
    assert_eq!(miss["processes"][0]["comm"], "cat");

    let denials = r["denials"]["rows"].as_array().unwrap();
    let admin = mnt.join("keys/admin");
    let denied = denials
        .iter()
        .find(|d| d["path"] == admin.to_str().unwrap() && d["result"] == "EACCES")
        .expect("the denial is reported");
    assert_eq!(denied["hits"], 2);
    let refused = denials
        .iter()
        .find(|d| d["result"] == "EROFS")
        .expect("the refused write is reported");
    assert_eq!(refused["op"], "open");
    assert_eq!(refused["hits"], 1);

    let procs = r["processes"]["rows"].as_array().unwrap();
    let reader = procs
        .iter()
        .find(|p| p["uid"] == 4242)
        .expect("uid 4242 is reported");
    assert_eq!(reader["comm"], "cat");
    assert_eq!(reader["hits"], 2);
    assert_eq!(reader["exe"], "/usr/bin/cat");
    let lister = procs
        .iter()
        .find(|p| p["uid"] == 65534 && p["comm"] == "ls")
        .expect("ls as nobody is reported");
    assert_eq!(lister["hits"], 1);

    let verdict = r["verdict"]["text"].as_str().unwrap();
    assert!(verdict.starts_with("last access"), "{verdict}");

    // The table for a terminal says the same.
    let out = relocfs([std::ffi::OsStr::new("report"), log.as_os_str()]);
    assert!(out.status.success());
    let text = stdout_str(&out);
    assert!(text.contains(old_key.to_str().unwrap()), "{text}");
    assert!(text.contains("Verdict: last access"), "{text}");
}

#[test]
fn collapsed_events_are_counted_by_the_report() {
    skip_without_fuse!();
    let b = MountBuilder::new().extra("collapse_window = 30\n");
    // `extra` lands after the [audit] section, so the key belongs to it.
    let real = b.real();
    write_file(&real.join("polled"), b"x", 0o644);
    let m = b.map("/", &real).mount();
    // One process opening the same file 50 times: one line with count 50.
    let script = format!(
        "import os\nfor _ in range(50):\n    os.close(os.open({:?}, os.O_RDONLY))\n",
        m.mnt.join("polled").to_str().unwrap()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_str(&out));
    let log = m.audit.clone();
    unmount_and_wait(&m);
    let lines = read_audit(&log);
    let opens: Vec<&Value> = lines.iter().filter(|l| l["op"] == "open").collect();
    assert_eq!(opens.len(), 1, "{opens:?}");
    assert_eq!(opens[0]["count"], 50);
    let r = report_json(&log, &[]);
    let procs = r["processes"]["rows"].as_array().unwrap();
    let python = procs.iter().find(|p| p["comm"] == "python3").unwrap();
    assert_eq!(python["hits"], 50);
}

#[test]
fn status_shows_the_live_state_to_root_only() {
    skip_without_fuse!();
    let m = mount_story();
    make_traffic(&m);
    let out = relocfs([
        std::ffi::OsStr::new("status"),
        std::ffi::OsStr::new("--json"),
        m.mnt.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", stderr_str(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["mountpoint"], m.mnt.to_str().unwrap());
    assert_eq!(s["rules"][1], "/keys/admin denied");
    let count = |op: &str, result: &str| {
        s["operations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row[0] == op && row[1] == result)
            .map_or(0, |row| row[2].as_u64().unwrap())
    };
    assert_eq!(count("open", "ok"), 2);
    assert_eq!(count("open", "EROFS"), 1);
    assert_eq!(count("lookup", "EACCES"), 2);
    assert!(s["nodes"].as_u64().unwrap() >= 3);
    assert!(wait_until(Duration::from_secs(5), || {
        let out = relocfs([
            std::ffi::OsStr::new("status"),
            std::ffi::OsStr::new("--json"),
            m.mnt.as_os_str(),
        ]);
        let s: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        s["audit_written"].as_u64().unwrap_or(0) >= 6
    }));

    let out = run_as(65534, 65534, Command::new(BIN).arg("status").arg(&m.mnt));
    assert!(!out.status.success());
    assert!(
        stderr_str(&out).contains("permission denied"),
        "{}",
        stderr_str(&out)
    );
}

/// Runs `relocfs report ARGS... LOG` and returns its stdout, which must be UTF-8.
fn report_text(log: &std::path::Path, args: &[&str]) -> String {
    let out = relocfs(
        std::iter::once(std::ffi::OsStr::new("report"))
            .chain(args.iter().map(std::ffi::OsStr::new))
            .chain([log.as_os_str()]),
    );
    assert!(out.status.success(), "report failed: {}", stderr_str(&out));
    assert!(out.stderr.is_empty(), "{}", stderr_str(&out));
    String::from_utf8(out.stdout).expect("the report is UTF-8")
}

/// Any user names its process what it likes (prctl(PR_SET_NAME)); the report must not hand
/// that name to a spreadsheet as a formula, nor to a terminal as a control sequence. Three
/// real threads, named with prctl, read a file and miss another through a real mount.
#[test]
fn report_neutralises_hostile_process_names() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("data"), b"x", 0o644);
    let m = b.map("/", &real).mount();
    // The kernel keeps 15 bytes of a name: the formula arrives as `=cmd|' /C calc'`.
    let names: [&[u8]; 3] = [
        b"=cmd|' /C calc'!A0",
        b"\x1b[2Jwipe",
        "\u{9b}31mred".as_bytes(),
    ];
    let comms: Vec<String> = names
        .iter()
        .map(|n| String::from_utf8(n[..n.len().min(15)].to_vec()).unwrap())
        .collect();
    for name in names {
        let mnt = m.mnt.clone();
        let mut cname = name.to_vec();
        cname.push(0);
        std::thread::spawn(move || {
            // SAFETY: PR_SET_NAME reads a NUL-terminated string (the kernel takes 15 bytes).
            let rc = unsafe { libc::prctl(libc::PR_SET_NAME, cname.as_ptr()) };
            assert_eq!(rc, 0, "prctl");
            assert_eq!(fs::read(mnt.join("data")).unwrap(), b"x");
            assert!(fs::metadata(mnt.join("missing")).is_err());
        })
        .join()
        .unwrap();
    }
    let log = m.audit.clone();
    unmount_and_wait(&m);
    let logged: Vec<String> = read_audit(&log)
        .iter()
        .filter(|l| l["op"] == "open")
        .filter_map(|l| l["comm"].as_str().map(str::to_owned))
        .collect();
    for comm in &comms {
        assert!(logged.contains(comm), "{comm:?} not in {logged:?}");
    }

    let unsafe_char =
        |c: char| c != '\n' && (c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c));
    for by in ["path", "process"] {
        for format in ["table", "csv", "json"] {
            let text = report_text(&log, &["--by", by, "--format", format, "--limit", "0"]);
            assert!(!text.contains(unsafe_char), "{by} {format}: {text:?}");
        }
    }
    let table = report_text(&log, &["--by", "process"]);
    assert!(table.contains("\\u{1b}[2Jwipe"), "{table}");
    assert!(table.contains("\\u{9b}31mred"), "{table}");

    let csv = report_text(
        &log,
        &["--by", "process", "--format", "csv", "--limit", "0"],
    );
    for line in csv.lines() {
        for cell in line.split(',') {
            let cell = cell.trim_start_matches('"');
            assert!(!cell.starts_with(['=', '+', '-', '@']), "{line}");
        }
    }
    assert!(csv.contains("\n'=cmd|' /C calc',/"), "{csv}");
    assert!(csv.contains("\n\\u{1b}[2Jwipe,/"), "{csv}");

    // JSON escapes, and what a script parses is exactly the name.
    let json = report_text(
        &log,
        &["--by", "process", "--format", "json", "--limit", "0"],
    );
    assert!(json.contains(r#""\u009b31mred""#), "{json}");
    let r: Value = serde_json::from_str(&json).unwrap();
    let reported: Vec<&str> = r["processes"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["comm"].as_str())
        .collect();
    for comm in &comms {
        assert!(
            reported.contains(&comm.as_str()),
            "{comm:?} not in {reported:?}"
        );
    }
}

/// `relocfs report ... | head`: once the reader has closed the pipe, the report stops
/// quietly (exit 0, nothing on stderr), as coreutils do. The output (about 1 MB) is far more
/// than a pipe holds, so the report is still writing when the pipe closes.
#[test]
fn report_into_a_pipe_closed_early_stops_quietly() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let mut data = Vec::new();
    for i in 0..8000 {
        writeln!(
            data,
            r#"{{"v":1,"ts":"2026-11-27T10:00:00Z","op":"lookup","path":"/l/dir{}/missing-{i}","pid":1,"uid":1000,"gid":1000,"comm":"c{}","result":"ENOENT"}}"#,
            i % 50,
            i % 300
        )
        .unwrap();
    }
    fs::write(&log, &data).unwrap();
    for format in ["table", "csv", "json"] {
        let mut child = Command::new(BIN)
            .args([
                "report", "--limit", "0", "--by", "process", "--format", format,
            ])
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        reader.read_line(&mut first).unwrap();
        assert!(!first.is_empty());
        drop(reader); // `head -1` exits: the pipe's read end is closed
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "{format}: {status:?}: {stderr}");
        assert_eq!(stderr, "", "{format}");
    }
}

/// The report's memory is driven by users: each distinct event costs memory. A user who
/// floods the log with distinct misses (any user can, in seconds) gets their rows
/// summarised past `--max-memory`; every total stays exact, another user's one-off accesses
/// stay exact, and every format says the rows were summarised.
#[test]
fn report_memory_cap_summarises_the_flooding_user_and_keeps_totals_exact() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let mut data = Vec::new();
    let flood = 30_000u64;
    let others = flood / 10_000;
    for i in 0..flood {
        writeln!(
            data,
            r#"{{"v":1,"ts":"2026-11-27T10:00:{:02}.{:06}Z","op":"lookup","path":"/l/cache/entry-{i:09}.json","pid":7,"uid":1000,"gid":1000,"comm":"flood","result":"ENOENT"}}"#,
            i / 1_000_000 % 60,
            i % 1_000_000
        )
        .unwrap();
        if i % 10_000 == 5000 {
            // Another user's rare accesses, among the flood.
            writeln!(
                data,
                r#"{{"v":1,"ts":"2026-11-27T10:00:00Z","op":"open","path":"/l/app/settings-{i}.py","pid":8,"uid":998,"gid":998,"comm":"python3","result":"ENOENT"}}"#
            )
            .unwrap();
        }
    }
    writeln!(data, r#"{{"v":1,"ts":"2026-11-27T10:00:02Z","op":"suppressed","uid":1000,"count":777,"since":"2026-11-27T10:00:01Z"}}"#).unwrap();
    fs::write(&log, &data).unwrap();

    let capped = |format: &str, by: &str| {
        report_text(
            &log,
            &[
                "--max-memory",
                "1M",
                "--limit",
                "0",
                "--format",
                format,
                "--by",
                by,
                "--numeric",
            ],
        )
    };
    let r: Value = serde_json::from_str(&capped("json", "path")).unwrap();
    let t = &r["totals"];
    assert_eq!(t["events"], flood + others);
    assert_eq!(t["suppressed_events"], 777);
    assert_eq!(t["max_memory"], 1 << 20);
    let summarised = t["summarised_events"].as_u64().unwrap();
    assert!(
        summarised > flood / 2 && summarised <= flood,
        "{summarised}"
    );
    // Every miss is counted exactly once, in an exact row or a summarised one.
    let misses = r["misses"]["rows"].as_array().unwrap();
    let hits: u64 = misses.iter().map(|m| m["hits"].as_u64().unwrap()).sum();
    assert_eq!(hits, flood + others);
    let summary: Vec<&Value> = misses.iter().filter(|m| m["summarised"] == true).collect();
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0]["hits"], summarised);
    assert_eq!(summary[0]["path"], "");
    // The other user's one-off misses are all still there, exactly.
    let theirs: Vec<&Value> = misses
        .iter()
        .filter(|m| m["path"].as_str().unwrap().starts_with("/l/app/"))
        .collect();
    assert_eq!(theirs.len() as u64, others);
    assert!(theirs
        .iter()
        .all(|m| m["hits"] == 1 && m["summarised"] == false));
    let procs = r["processes"]["rows"].as_array().unwrap();
    let proc_hits: u64 = procs.iter().map(|p| p["hits"].as_u64().unwrap()).sum();
    assert_eq!(proc_hits, flood + others);

    // By user: exact per user, the flooder's row marked.
    let r: Value = serde_json::from_str(&capped("json", "user")).unwrap();
    let users = r["groups"]["rows"].as_array().unwrap();
    assert_eq!(users[0]["uid"], 1000);
    assert_eq!(users[0]["hits"], flood);
    assert_eq!(users[0]["suppressed"], 777);
    assert_eq!(users[0]["summarised"], true);
    assert_eq!(users[1]["uid"], 998);
    assert_eq!(users[1]["hits"], others);
    assert_eq!(users[1]["summarised"], false);

    let table = capped("table", "path");
    assert!(
        // How many exactly depends on how the lines were split among the parsing threads.
        table.contains(" events were summarised to stay within --max-memory 1M: "),
        "{table}"
    );
    assert!(table.contains("\n\\[summarised]  "), "{table}");
    let csv = capped("csv", "user");
    assert!(csv.contains(&format!("\n1000,,777,{flood},")), "{csv}");
    assert!(
        csv.lines().nth(1).unwrap().ends_with(",summarised"),
        "{csv}"
    );
    // Even with --limit 1 and a summarised row outside it, CSV says so.
    let csv = report_text(
        &log,
        &[
            "--max-memory",
            "1M",
            "--limit",
            "1",
            "--format",
            "csv",
            "--by",
            "process",
        ],
    );
    assert!(csv.contains(",summarised\n"), "{csv}");

    // Without the cap the same log is reported in full detail: the same totals.
    let r: Value = serde_json::from_str(&report_text(
        &log,
        &["--max-memory", "0", "--format", "json"],
    ))
    .unwrap();
    assert_eq!(r["totals"]["events"], flood + others);
    assert_eq!(r["totals"]["summarised_events"], 0);
    assert_eq!(r["misses"]["total"], flood + others);
}
