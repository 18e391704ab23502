//! `[metrics] textfile`: the node_exporter file of a real mount parses as the Prometheus text
//! exposition format (a strict parser below), its counters are what the processes did, it is
//! replaced atomically, and its directory is held to the audit log's trust rule.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

// ---------------------------------------------------------------------------
// A strict parser of the text exposition format (version 0.0.4)
// ---------------------------------------------------------------------------

/// One sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

/// `{a="x",b="y"}` (after the name) → labels and the rest of the line.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let Some(mut rest) = s.strip_prefix('{') else {
        return Ok((labels, s));
    };
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, '\n') => return Err("newline in label value".into()),
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("expected , or } after a label".into());
        }
    }
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if s.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) => {
            s.parse().map_err(|_| format!("bad value {s:?}"))
        }
        _ => Err(format!("bad value {s:?}")),
    }
}

/// Parses a whole file strictly: UTF-8, ends with a newline, one HELP and one TYPE per family
/// before its samples, samples of a family together, counters named `_total` and never
/// negative, no series twice, no timestamps (a textfile must not carry them).
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    if !text.ends_with('\n') {
        return Err("does not end with a newline".into());
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series = HashSet::new();
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            return Err(at("empty line".into()));
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, arg) = (parts.next(), parts.next(), parts.next());
            let (Some(kw @ ("HELP" | "TYPE")), Some(name), Some(arg)) = (kw, name, arg) else {
                continue; // an ordinary comment
            };
            if !is_metric_name(name) {
                return Err(at("bad metric name".into()));
            }
            if finished.contains(name) {
                return Err(at("family declared again".into()));
            }
            if current.as_deref() != Some(name) {
                if let Some(c) = current.take() {
                    finished.insert(c);
                }
                current = Some(name.to_string());
            }
            if kw == "HELP" {
                if !helps.insert(name.to_string()) || arg.is_empty() {
                    return Err(at("HELP twice or empty".into()));
                }
            } else {
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg) {
                    return Err(at("bad TYPE".into()));
                }
                if types.insert(name.to_string(), arg.to_string()).is_some() {
                    return Err(at("TYPE twice".into()));
                }
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at("bad metric name".into()));
        }
        let (labels, rest) = parse_labels(&line[name_end..]).map_err(at)?;
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?;
        if rest.contains(' ') {
            return Err(at("a timestamp or trailing text".into()));
        }
        let value = parse_value(rest).map_err(at)?;
        if current.as_deref() != Some(name) {
            return Err(at("sample outside its family (no TYPE just before)".into()));
        }
        match types.get(name).map(String::as_str) {
            Some("counter") => {
                if !name.ends_with("_total") || value < 0.0 {
                    return Err(at("counter not _total or negative".into()));
                }
            }
            Some(_) => {}
            None => return Err(at("sample before its TYPE".into())),
        }
        if !series.insert(format!("{name}{labels:?}")) {
            return Err(at("series twice".into()));
        }
        samples.push((name.to_string(), labels, value));
    }
    Ok(samples)
}

#[test]
fn the_strict_parser_rejects_what_node_exporter_would() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\\\"\\n\\\\\"} 3\n";
    let samples = parse_exposition(good).unwrap();
    assert_eq!(samples[0].1["x"], "1\"\n\\");
    for bad in [
        "# TYPE a_total counter\na_total 1", // no final newline
        "a_total 1\n",                       // no TYPE
        "# TYPE a_total counter\na_total 1 1700000000\n", // timestamp
        "# TYPE a_total counter\na_total{x=\"1} 1\n", // unterminated
        "# TYPE a_total counter\na_total{x=\"\\t\"} 1\n", // bad escape
        "# TYPE a_total counter\na_total 1\na_total 2\n", // series twice
        "# TYPE a counter\na 1\n",           // counter not _total
        "# TYPE a_total counter\na_total -1\n", // negative counter
        "# TYPE a_total counter\na_total{x=\"1\",x=\"2\"} 1\n",
        "# TYPE a_total counter\na_total 1\n# TYPE b gauge\nb 1\na_total{y=\"\"} 1\n",
        "# TYPE a_total counter\na_total 1x\n",
        "# TYPE a_total counter\n\na_total 1\n",
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted: {bad:?}");
    }
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.2)
}

/// A mount with two rules and the textfile in `dir` (rewritten every second).
fn builder_with_textfile(dir: &Path) -> (MountBuilder, PathBuf) {
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("keys/id_rsa"), b"KEY", 0o644);
    write_file(&real.join("static/app.css"), b"css", 0o644);
    let textfile = dir.join("relocfs.prom");
    let b = b
        .map("/keys", real.join("keys"))
        .map("/static", real.join("static"))
        .extra(&format!(
            "[metrics]\ntextfile = \"{}\"\ninterval = \"1s\"",
            textfile.display()
        ));
    (b, textfile)
}

/// Events of the audit log under `rule` with this result, collapsed repeats counted.
fn audited(m: &Mounted, rule: &str, result: &str) -> u64 {
    m.audit_lines()
        .iter()
        .filter(|e| s(e, "map") == Some(rule) && s(e, "result") == Some(result))
        .map(|e| n(e, "count").unwrap_or(1))
        .sum()
}

fn read_samples(textfile: &Path) -> Vec<Sample> {
    let text = fs::read_to_string(textfile).expect("read the textfile");
    parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn stop(m: &Mounted) {
    let pid = m.daemon_pid();
    m.unmount_all();
    assert!(wait_until(SETTLE_TIMEOUT, || !pid_alive(pid)));
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn metrics_file_parses_and_counts_what_processes_did() {
    skip_without_fuse!();
    let dir = tempdir_0755("relocfs-prom-");
    let (b, textfile) = builder_with_textfile(dir.path());
    let m = b.mount();
    const OPENS: u64 = 5;
    for _ in 0..OPENS {
        cat_and_wait_for_open(&m.audit, &m.mnt.join("keys/id_rsa"));
    }
    let missing = run_as(0, 0, Command::new("cat").arg(m.mnt.join("keys/nope")));
    assert!(!missing.status.success());
    wait_for_audit(
        &m.audit,
        |e| s(e, "result") == Some("ENOENT"),
        AUDIT_TIMEOUT,
    );
    let opens = m
        .audit_lines()
        .iter()
        .filter(|e| s(e, "op") == Some("open") && s(e, "map") == Some("/keys"))
        .count() as u64;
    assert_eq!(opens, OPENS);
    let (ok, enoent) = (audited(&m, "/keys", "ok"), audited(&m, "/keys", "ENOENT"));
    assert!(ok >= OPENS && enoent >= 1, "ok {ok}, ENOENT {enoent}");
    let mp = m.mnt.to_str().unwrap().to_string();
    let keys_ok = [
        ("mountpoint", mp.as_str()),
        ("rule", "/keys"),
        ("result", "ok"),
    ];

    // The file catches up within a few intervals, and then says exactly what the log says.
    assert!(
        wait_until(Duration::from_secs(10), || {
            textfile.exists()
                && value(&read_samples(&textfile), "relocfs_accesses_total", &keys_ok)
                    == Some(ok as f64)
        }),
        "{}",
        fs::read_to_string(&textfile).unwrap_or_default()
    );
    let samples = read_samples(&textfile);
    let keys_enoent = [("rule", "/keys"), ("result", "ENOENT")];
    assert_eq!(
        value(&samples, "relocfs_accesses_total", &keys_enoent),
        Some(enoent as f64)
    );
    // The unused rule is listed with zeros, its stage, and no last access.
    let static_ok = [("rule", "/static"), ("result", "ok")];
    assert_eq!(
        value(&samples, "relocfs_accesses_total", &static_ok),
        Some(0.0)
    );
    let serve = [("rule", "/static"), ("stage", "serve")];
    assert_eq!(value(&samples, "relocfs_rule_stage", &serve), Some(1.0));
    let warn = [("rule", "/static"), ("stage", "warn")];
    assert_eq!(value(&samples, "relocfs_rule_stage", &warn), Some(0.0));
    assert_eq!(
        value(
            &samples,
            "relocfs_rule_last_access_seconds",
            &[("rule", "/static")]
        ),
        None
    );
    let last = value(
        &samples,
        "relocfs_rule_last_access_seconds",
        &[("rule", "/keys")],
    )
    .expect("last access of /keys");
    assert!((last - now_unix() as f64).abs() < 3600.0, "{last}");
    assert_eq!(
        value(&samples, "relocfs_audit_dropped_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        // The transport this run's mounts ask for ("dev", or "io_uring" in the io_uring run).
        value(
            &samples,
            "relocfs_info",
            &[("transport", test_transport().as_str())]
        ),
        Some(1.0)
    );
    // Labels stay bounded: nothing names a pid, path, process or uid.
    for (_, labels, _) in &samples {
        for k in labels.keys() {
            assert!(
                [
                    "mountpoint",
                    "rule",
                    "result",
                    "stage",
                    "transport",
                    "version"
                ]
                .contains(&k.as_str()),
                "label {k}"
            );
        }
    }

    // Written once more at stop, with the final counts, and nothing left behind.
    stop(&m);
    let samples = read_samples(&textfile);
    assert_eq!(
        value(&samples, "relocfs_accesses_total", &keys_ok),
        Some(audited(&m, "/keys", "ok") as f64)
    );
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [".relocfs.prom.lock", "relocfs.prom"]);
    let meta = fs::symlink_metadata(&textfile).unwrap();
    assert_eq!(
        meta.mode() & 0o7777,
        0o644,
        "node_exporter must be able to read it"
    );
}

#[test]
fn metrics_file_is_replaced_atomically() {
    skip_without_fuse!();
    let dir = tempdir_0755("relocfs-prom-");
    let (b, textfile) = builder_with_textfile(dir.path());
    let m = b.mount();
    assert!(wait_until(SETTLE_TIMEOUT, || textfile.exists()));

    // A reader loop: every read is a whole, valid file; each rewrite is a new inode.
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (done, textfile) = (Arc::clone(&done), textfile.clone());
        std::thread::spawn(move || {
            let (mut inodes, mut reads) = (HashSet::new(), 0u64);
            while !done.load(Ordering::Relaxed) {
                let Ok(file) = fs::File::open(&textfile) else {
                    panic!("the textfile vanished between rewrites");
                };
                inodes.insert(file.metadata().unwrap().ino());
                let text = std::io::read_to_string(file).unwrap();
                if let Err(e) = parse_exposition(&text) {
                    panic!("a partial or invalid file was seen: {e}\n{text}");
                }
                assert!(text.contains("\nrelocfs_info{"), "{text}");
                reads += 1;
            }
            (inodes, reads)
        })
    };
    // Traffic meanwhile, so the contents change too; at least three rewrites. A rewrite is
    // told by inode and modification time together: the filesystem may give a new file the
    // inode number the one before last had.
    let version = |meta: fs::Metadata| (meta.ino(), meta.mtime(), meta.mtime_nsec());
    let start = version(fs::metadata(&textfile).unwrap());
    let mut seen = HashSet::from([start]);
    assert!(wait_until(Duration::from_secs(20), || {
        let _ = fs::read(m.mnt.join("keys/id_rsa"));
        if let Ok(meta) = fs::metadata(&textfile) {
            seen.insert(version(meta));
        }
        std::thread::sleep(Duration::from_millis(100));
        seen.len() >= 4
    }));
    done.store(true, Ordering::Relaxed);
    let (inodes, reads) = reader.join().expect("reader saw a partial file");
    assert!(
        reads > 0 && inodes.len() >= 2,
        "{reads} reads, {} inodes",
        inodes.len()
    );
    stop(&m);
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn metrics_refuse_unsafe_directories_with_one_line() {
    skip_without_fuse!();
    let base = tempdir_0755("relocfs-prom-");
    for (name, uid, mode, needle) in [
        ("world", 0, 0o777, "can be written by other users"),
        ("group", 0, 0o775, "can be written by other users"),
        ("theirs", NOBODY, 0o755, "belongs to uid 65534"),
    ] {
        let dir = base.path().join(name);
        mkdir_owned(&dir, uid, uid, mode);
        let (b, textfile) = builder_with_textfile(&dir);
        let config = b.config_path();
        let (m, out) = b.try_mount();
        assert_refusal(&out, &["[metrics] textfile", needle]);
        assert!(!mounted(&m.mnt), "{name}: mounted anyway");
        assert!(!textfile.exists(), "{name}: written anyway");
        let out = relocfs(["check".as_ref(), config.as_os_str()]);
        assert_refusal(&out, &["[metrics] textfile", needle]);
    }
    // A missing directory is not created (node_exporter must be able to read it).
    let (b, _) = builder_with_textfile(&base.path().join("missing"));
    let (m, out) = b.try_mount();
    assert_refusal(&out, &["[metrics] textfile", "does not exist"]);
    assert!(!mounted(&m.mnt));
    // Nor may the file lie inside the mountpoint, where the daemon would write through itself.
    let other = MountBuilder::new();
    let mnt = other.mnt();
    let (b, _) = builder_with_textfile(&mnt);
    let b = b.mountpoint(&mnt);
    let (m, out) = b.try_mount();
    assert_refusal(&out, &["[metrics] textfile", "lies inside the mountpoint"]);
    assert!(!mounted(&m.mnt));
    drop(other);
}

#[test]
fn two_mounts_cannot_share_one_textfile() {
    skip_without_fuse!();
    let dir = tempdir_0755("relocfs-prom-");
    let (b, _) = builder_with_textfile(dir.path());
    let first = b.mount();
    let (b, _) = builder_with_textfile(dir.path());
    let (second, out) = b.try_mount();
    assert_refusal(&out, &["written by another relocfs mount"]);
    assert!(!mounted(&second.mnt));
    assert!(mounted(&first.mnt));
}

/// A sticky directory others can write (as /tmp): uid 65534 plants symlinks at the textfile's
/// name and at the lock's, pointing at a root-owned file. The daemon (root) must replace the
/// planted names, never write through them.
#[test]
fn an_attacker_in_the_directory_cannot_make_root_write_elsewhere() {
    skip_without_fuse!();
    let base = tempdir_0755("relocfs-prom-");
    let dir = base.path().join("shared");
    mkdir_owned(&dir, 0, 0, 0o1777);
    let victim = base.path().join("victim");
    write_file(&victim, b"precious\n", 0o644);
    for name in ["relocfs.prom", ".relocfs.prom.lock"] {
        let out = run_as(
            NOBODY,
            NOBODY,
            Command::new("ln")
                .arg("-s")
                .arg(&victim)
                .arg(dir.join(name)),
        );
        assert!(out.status.success(), "{}", stderr_str(&out));
    }
    // Guessable temporary names too (the real ones are random).
    for i in 0..16 {
        let _ = run_as(
            NOBODY,
            NOBODY,
            Command::new("ln")
                .arg("-s")
                .arg(&victim)
                .arg(dir.join(format!(".relocfs.prom.{i:016x}.tmp"))),
        );
    }
    let (b, textfile) = builder_with_textfile(&dir);
    let m = b.mount();
    let _ = fs::read(m.mnt.join("keys/id_rsa"));
    assert!(wait_until(Duration::from_secs(10), || {
        fs::symlink_metadata(&textfile).is_ok_and(|t| t.file_type().is_file())
    }));
    stop(&m);
    assert_eq!(fs::read(&victim).unwrap(), b"precious\n");
    let meta = fs::symlink_metadata(&textfile).unwrap();
    assert!(meta.file_type().is_file() && meta.uid() == 0, "{meta:?}");
    parse_exposition(&fs::read_to_string(&textfile).unwrap()).unwrap();
    // The planted lock is left alone (not followed, not replaced).
    assert!(fs::symlink_metadata(dir.join(".relocfs.prom.lock"))
        .unwrap()
        .file_type()
        .is_symlink());
}

/// A reload brings new rules into the file at once, and a rule kept across the reload keeps
/// one counter: its uses before and after add up (nodes of both rule generations count).
#[test]
fn metrics_follow_a_reload_without_resetting_counters() {
    skip_without_fuse!();
    let dir = tempdir_0755("relocfs-prom-");
    let (b, textfile) = builder_with_textfile(dir.path());
    let extra = b.root().join("extra");
    write_file(&extra.join("g"), b"g\n", 0o644);
    let m = b.mount();
    // Held open across the reload: a directory node of the old rule generation.
    let held = fs::File::open(m.mnt.join("keys")).unwrap();
    cat_and_wait_for_open(&m.audit, &m.mnt.join("keys/id_rsa"));
    let config = fs::read_to_string(&m.config).unwrap();
    fs::write(&m.config, with_map_first(&config, "/extra", &extra)).unwrap();
    let out = relocfs([Path::new("reload"), m.mnt.as_path()]);
    assert!(out.status.success(), "reload: {}", stderr_str(&out));
    assert!(wait_until(SETTLE_TIMEOUT, || fs::read(m.at("extra/g")).is_ok()));
    cat_and_wait_for_open(&m.audit, &m.mnt.join("keys/id_rsa"));
    // An open below the old generation's node counts under the same rule.
    let name = std::ffi::CString::new("id_rsa").unwrap();
    use std::os::fd::AsRawFd;
    let fd = unsafe { libc::openat(held.as_raw_fd(), name.as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0, "openat below the held directory");
    unsafe { libc::close(fd) };
    let opens = || {
        m.audit_lines()
            .iter()
            .filter(|e| s(e, "op") == Some("open") && s(e, "map") == Some("/keys"))
            .count()
    };
    assert!(wait_until(AUDIT_TIMEOUT, || opens() == 3), "{}", opens());
    drop(held);

    let stage = [("rule", "/extra"), ("stage", "serve")];
    let keys_ok = [("rule", "/keys"), ("result", "ok")];
    let extra_ok = [("rule", "/extra"), ("result", "ok")];
    let expected = || {
        (
            Some(audited(&m, "/keys", "ok") as f64),
            Some(audited(&m, "/extra", "ok") as f64),
        )
    };
    assert!(
        wait_until(Duration::from_secs(10), || {
            let samples = read_samples(&textfile);
            value(&samples, "relocfs_rule_stage", &stage) == Some(1.0)
                && (
                    value(&samples, "relocfs_accesses_total", &keys_ok),
                    value(&samples, "relocfs_accesses_total", &extra_ok),
                ) == expected()
        }),
        "{}\n{:?}",
        fs::read_to_string(&textfile).unwrap_or_default(),
        expected()
    );
    assert!(audited(&m, "/keys", "ok") >= 3 && audited(&m, "/extra", "ok") >= 1);
}
