//! POSIX conformance of read-write rules: pjdfstest (the Rust rewrite) run on a
//! plain real directory (the baseline) and through an rw relocfs mount of another
//! directory on the same filesystem. Every test that passes natively must pass
//! through relocfs, except the known FUSE limits in [`FUSE_LIMITS`].

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// Tests that pass natively but not through relocfs, because of FUSE itself
/// (the kernel's FUSE client), not relocfs. Each with its reason; keep the
/// README's pjdfstest section in step with this list.
const FUSE_LIMITS: &[(&str, &str)] = &[(
    // pjdfstest reads pathconf(_PC_LINK_MAX) to know how many links to
    // create; the kernel's FUSE client does not report a LINK_MAX (statfs has
    // no field for it), so the test is skipped: "filesystem limit is unknown".
    "link::link_count_max",
    "pathconf(_PC_LINK_MAX) is unknown on FUSE: pjdfstest skips the test",
)];

/// Tests that pass natively every time but through relocfs only most of the time (about 9 in 10
/// runs here, with kernel passthrough on or off): either outcome is accepted, and the README
/// lists them. open::etxtbsy opens a file for writing right after starting to execute it and
/// expects ETXTBSY; through FUSE the open sometimes succeeds. Cause not found yet (the kernel's
/// exec of a FUSE file, or relocfs): tracked as an issue of its own.
const FLAKY_THROUGH_FUSE: &[(&str, &str)] = &[(
    "open::etxtbsy",
    "open for writing of a file being executed sometimes succeeds through FUSE",
)];

const CONFIG: &str = r#"[features]
posix_fallocate = {}
utime_now = {}
utimensat = {}
rename_ctime = {}
[settings]
naptime = 0.01
allow_remount = false
[dummy_auth]
entries = [["nobody", "nogroup"], ["daemon", "daemon"]]
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Failed,
    Skipped,
    /// "failed as expected" / "PASSED UNEXPECTEDLY": not used by our config.
    Other,
}

#[derive(Debug)]
struct Run {
    results: BTreeMap<String, Outcome>,
    /// (failed, skipped, passed, total) from the summary line.
    summary: (usize, usize, usize, usize),
    /// Failure messages (the indented lines after a FAILED test).
    details: BTreeMap<String, Vec<String>>,
    elapsed: Duration,
    raw: String,
}

impl Run {
    fn count(&self, o: Outcome) -> usize {
        self.results.values().filter(|v| **v == o).count()
    }
}

/// Parses `name<spaces>ok|FAILED|skipped` lines (reasons are tab-indented
/// below) and the `Summary: F failed, S skipped, P passed, E expected failures,
/// T total` line.
fn parse(out: &str, elapsed: Duration) -> Run {
    let mut results = BTreeMap::new();
    let mut details: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut last: Option<String> = None;
    let mut summary = None;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("Summary: ") {
            let nums: Vec<usize> = rest
                .split(", ")
                .map(|part| {
                    part.split_whitespace()
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("bad summary line: {line:?}"))
                })
                .collect();
            assert_eq!(nums.len(), 5, "bad summary line: {line:?}");
            summary = Some((nums[0], nums[1], nums[2], nums[4]));
            continue;
        }
        if line.starts_with('\t') || line.starts_with(' ') {
            if let Some(name) = &last {
                details
                    .entry(name.clone())
                    .or_default()
                    .push(line.trim().to_string());
            }
            continue;
        }
        let trimmed = line.trim_end();
        let parsed = [
            (" ok", Outcome::Ok),
            (" FAILED", Outcome::Failed),
            (" skipped", Outcome::Skipped),
            (" failed as expected", Outcome::Other),
            (" PASSED UNEXPECTEDLY", Outcome::Other),
        ]
        .iter()
        .find_map(|(suffix, o)| {
            trimmed
                .strip_suffix(suffix)
                .map(|name| (name.trim().to_string(), *o))
        });
        if let Some((name, o)) = parsed {
            assert!(
                !name.is_empty() && !name.contains(' '),
                "unparsable pjdfstest line: {line:?}"
            );
            assert!(
                results.insert(name.clone(), o).is_none(),
                "test {name} reported twice"
            );
            last = Some(name);
        } else if !trimmed.is_empty() {
            last = None;
        }
    }
    let summary = summary.unwrap_or_else(|| panic!("no Summary line in pjdfstest output:\n{out}"));
    Run {
        results,
        summary,
        details,
        elapsed,
        raw: out.to_string(),
    }
}

fn run_pjdfstest(bin: &Path, config: &Path, path: &Path, secondary: &Path) -> Run {
    let start = Instant::now();
    let mut cmd = Command::new(bin);
    cmd.arg("-c")
        .arg(config)
        .arg("-p")
        .arg(path)
        .arg("-s")
        .arg(secondary)
        .env("NO_COLOR", "1")
        .env("CLICOLOR", "0")
        .current_dir("/");
    let out = run_with_timeout(&mut cmd, Duration::from_secs(120));
    let text = stdout_str(&out);
    let run = parse(&text, start.elapsed());
    // The summary must agree with the lines we parsed.
    let (failed, skipped, passed, total) = run.summary;
    assert_eq!(
        (
            run.count(Outcome::Failed),
            run.count(Outcome::Skipped),
            run.count(Outcome::Ok)
        ),
        (failed, skipped, passed),
        "pjdfstest on {}: per-test lines disagree with the summary\n{text}",
        path.display()
    );
    assert_eq!(
        run.results.len(),
        total,
        "pjdfstest on {}: line count",
        path.display()
    );
    // Exit status: 0 exactly when nothing failed.
    assert_eq!(
        out.status.success(),
        failed == 0,
        "pjdfstest on {} exited {:?} with {failed} failures\nstderr: {}",
        path.display(),
        out.status,
        stderr_str(&out)
    );
    run
}

fn user_exists(user: &str, group: &str) -> bool {
    let ok = |db: &str, name: &str| {
        Command::new("getent")
            .args([db, name])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    ok("passwd", user) && ok("group", group)
}

/// What is wrong with one relocfs run against the native baseline: tests that pass natively
/// but not through relocfs (beyond the known limits), tests that fail through relocfs, stale
/// allow-list entries, and a pass count that is not native minus the limits.
fn problems_against_native(label: &str, n: &Run, r: &Run) -> Vec<String> {
    let limits: BTreeMap<&str, &str> = FUSE_LIMITS.iter().copied().collect();
    let flaky: BTreeMap<&str, &str> = FLAKY_THROUGH_FUSE.iter().copied().collect();
    let mut problems = Vec::new();
    if n.results.keys().ne(r.results.keys()) {
        problems.push(format!("{label}: not the same test list as the native run"));
        return problems;
    }
    let why = |name: &str| {
        r.details
            .get(name)
            .map(|d| d.join(" | "))
            .unwrap_or_default()
    };
    for (name, native_outcome) in &n.results {
        let through = r.results[name];
        if *native_outcome != Outcome::Ok || through == Outcome::Ok {
            continue;
        }
        if limits.contains_key(name.as_str()) || flaky.contains_key(name.as_str()) {
            continue;
        }
        problems.push(format!(
            "{label}: {name}: ok natively, {through:?} through relocfs: {}",
            why(name)
        ));
    }
    // Nothing may fail through relocfs, whatever the baseline says.
    for (name, o) in &r.results {
        if *o == Outcome::Failed
            && n.results[name] != Outcome::Ok
            && !flaky.contains_key(name.as_str())
        {
            problems.push(format!(
                "{label}: {name}: FAILED through relocfs (and not ok natively either): {}",
                why(name)
            ));
        }
    }
    // An allow-listed limit that no longer shows is stale: remove it (and its README line).
    for (name, reason) in FUSE_LIMITS {
        match (n.results.get(*name), r.results.get(*name)) {
            (Some(Outcome::Ok), Some(Outcome::Ok)) => problems.push(format!(
                "{label}: {name} is allow-listed as a FUSE limit ({reason}) but now passes: \
                 remove it"
            )),
            (Some(Outcome::Ok), Some(_)) => {}
            (a, b) => problems.push(format!(
                "{label}: {name} is allow-listed but ran {a:?} natively / {b:?} through relocfs"
            )),
        }
    }
    let flaky_missed = FLAKY_THROUGH_FUSE
        .iter()
        .filter(|(name, _)| r.results.get(*name) != Some(&Outcome::Ok))
        .count();
    let want = n.count(Outcome::Ok) - FUSE_LIMITS.len() - flaky_missed;
    if problems.is_empty() && r.count(Outcome::Ok) != want {
        problems.push(format!(
            "{label}: {} passed, expected {want} (native minus the FUSE limits and flaky misses)",
            r.count(Outcome::Ok)
        ));
    }
    problems
}

/// pjdfstest natively, through an rw rule mounted `dev,suid`, and through one mounted with the
/// defaults (`nodev,nosuid`). `nodev` stops the opening of device nodes, not their creation:
/// root may mknod a device on a nodev filesystem natively, and so through relocfs.
#[test]
fn pjdfstest_passes_through_rw_rule_as_natively() {
    skip_without_fuse!();
    let Some(bin) = find_program("pjdfstest") else {
        skip_or_fail("pjdfstest is not installed (`cargo install pjdfstest --locked`)");
        return;
    };
    for (u, g) in [("nobody", "nogroup"), ("daemon", "daemon")] {
        if !user_exists(u, g) {
            skip_or_fail(&format!("pjdfstest needs user {u} and group {g}"));
            return;
        }
    }

    // All trees on the same filesystem (the tempdirs'); secondary fs on tmpfs.
    let b = MountBuilder::new();
    let native = b.root().join("native");
    mkdir_p(&native);
    let config = b.root().join("pjdfstest.toml");
    fs::write(&config, CONFIG).unwrap();
    let shm = tempfile::Builder::new()
        .prefix("relocfs-pjd-")
        .tempdir_in("/dev/shm")
        .expect("tempdir in /dev/shm");
    let secondary = |name: &str| {
        let p = shm.path().join(name);
        mkdir_p(&p);
        p
    };
    let (sec_native, sec_dev, sec_nodev) =
        (secondary("native"), secondary("dev"), secondary("nodev"));
    let real = b.real();
    let same_fs_as_native = |real: &Path| {
        assert_eq!(
            statvfs(&native).unwrap().f_fsid,
            statvfs(real).unwrap().f_fsid,
            "baseline and target must share a filesystem"
        )
    };
    same_fs_as_native(&real);
    let dev = b
        .map_mode("/", &real, "rw")
        .opt("allow_other,dev,suid")
        .no_audit()
        .mount();
    let b2 = MountBuilder::new();
    let real2 = b2.real();
    same_fs_as_native(&real2);
    let nodev = b2
        .map_mode("/", &real2, "rw")
        .opt("allow_other")
        .no_audit()
        .mount();
    let opts = mount_entry(&nodev.mnt).expect("nodev mount listed").options;
    assert!(
        opts.iter().any(|o| o == "nodev"),
        "the default mount is nodev: {opts:?}"
    );

    // The runs are independent: run them side by side.
    let (n, d, nd) = std::thread::scope(|s| {
        let n = s.spawn(|| run_pjdfstest(&bin, &config, &native, &sec_native));
        let d = s.spawn(|| run_pjdfstest(&bin, &config, &dev.mnt, &sec_dev));
        let nd = s.spawn(|| run_pjdfstest(&bin, &config, &nodev.mnt, &sec_nodev));
        (n.join().unwrap(), d.join().unwrap(), nd.join().unwrap())
    });

    let line = |what: &str, run: &Run| {
        format!(
            "pjdfstest {what}: {} passed, {} skipped, {} failed of {} ({:.1} s)",
            run.summary.2,
            run.summary.1,
            run.summary.0,
            run.summary.3,
            run.elapsed.as_secs_f64()
        )
    };
    let lines = format!(
        "{}\n{}\n{}",
        line("native        ", &n),
        line("relocfs dev   ", &d),
        line("relocfs nodev ", &nd)
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("{lines}\n").as_bytes());

    // The baseline itself must be sane, or the comparison proves nothing.
    assert!(
        n.count(Outcome::Ok) >= 300,
        "native baseline passed only {} tests:\n{}",
        n.count(Outcome::Ok),
        n.raw
    );
    let mut problems = problems_against_native("dev,suid mount", &n, &d);
    problems.extend(problems_against_native("default (nodev) mount", &n, &nd));
    assert!(
        problems.is_empty(),
        "{lines}\n{} problems:\n{}\n\nrelocfs dev run:\n{}\n\nrelocfs nodev run:\n{}",
        problems.len(),
        problems.join("\n"),
        d.raw,
        nd.raw
    );
    drop((dev, nodev));
}

/// The parser itself (no FUSE needed): every outcome, reasons, the summary.
#[test]
fn pjdfstest_output_is_parsed_exactly() {
    let out = "chmod::a                                                               ok\n\
link::link_count_max                                                     skipped\n\
\tCannot get value for LINK_MAX: filesystem limit is unknown\n\
rename::b                                                                FAILED\n\
\tassertion failed: ctime changed\n\
utimensat::y2038                                             failed as expected\n\
\n\
Summary: 1 failed, 1 skipped, 1 passed, 1 expected failures, 4 total\n";
    let run = parse(out, Duration::ZERO);
    assert_eq!(run.summary, (1, 1, 1, 4));
    assert_eq!(run.results["chmod::a"], Outcome::Ok);
    assert_eq!(run.results["link::link_count_max"], Outcome::Skipped);
    assert_eq!(run.results["rename::b"], Outcome::Failed);
    assert_eq!(run.results["utimensat::y2038"], Outcome::Other);
    assert_eq!(
        run.details["rename::b"],
        ["assertion failed: ctime changed"]
    );
    assert_eq!(run.results.len(), 4);
}
