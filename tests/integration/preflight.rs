//! Preflight refusals: non-zero exit, exactly one `relocfs: ` line naming the
//! problem, and nothing mounted afterwards -- for `relocfs CONFIG MNT` and
//! for `relocfs check CONFIG [MNT]`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;

/// How far `relocfs check` can see the problem.
#[derive(Clone, Copy, PartialEq)]
enum Level {
    /// In the config alone: `check CONFIG` already refuses.
    Config,
    /// Only with the mountpoint: `check CONFIG MNT` refuses.
    Mountpoint,
}

/// Runs `check CONFIG [MNT]` and the real mount; all must refuse with a
/// message matching `matches` (given the one stderr line, lowercased).
#[track_caller]
fn expect_refused_by(b: MountBuilder, level: Level, needles: &[&str]) {
    expect_refused_with(b, level, needles, |_| true, "");
}

#[track_caller]
fn expect_refused_with(
    b: MountBuilder,
    level: Level,
    needles: &[&str],
    extra: impl Fn(&str) -> bool,
    extra_what: &str,
) {
    let root = b.root();
    let config = b.config_path();
    let mnt = b.mnt();
    fs::write(&config, b.config_text()).unwrap();

    let mut runs: Vec<(String, Vec<PathBuf>)> = vec![(
        "check CONFIG MOUNTPOINT".into(),
        vec!["check".into(), config.clone(), mnt.clone()],
    )];
    if level == Level::Config {
        runs.push(("check CONFIG".into(), vec!["check".into(), config.clone()]));
    }
    for (what, args) in &runs {
        let out = relocfs(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "`relocfs {what}` must exit 1 (stderr: {})",
            stderr_str(&out)
        );
        assert_refusal(&out, needles);
        let line = stderr_str(&out).to_lowercase();
        assert!(
            extra(&line),
            "`relocfs {what}`: stderr should {extra_what}: {line}"
        );
        assert!(
            mounts_below(&root).is_empty(),
            "`relocfs {what}` mounted something"
        );
    }

    let (m, out) = b.try_mount();
    let left = mounts_below(&root);
    assert!(
        left.is_empty(),
        "a refused mount left mounts behind: {left:?}"
    );
    assert_refusal(&out, needles);
    let line = stderr_str(&out).to_lowercase();
    assert!(extra(&line), "mount: stderr should {extra_what}: {line}");
    assert!(
        wait_until(SETTLE_TIMEOUT, || m.daemon_pids().is_empty()),
        "a relocfs process is still running after a refusal: {:?}",
        m.daemon_pids()
    );
}

fn with_target() -> (MountBuilder, PathBuf) {
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("f"), b"f", 0o644);
    (b, real)
}

#[test]
fn mountpoint_is_symlink() {
    skip_without_fuse!();
    let (b, real) = with_target();
    let link = b.root().join("mnt-link");
    std::os::unix::fs::symlink(b.mnt(), &link).unwrap();
    let b = b.map("/", &real).mountpoint(&link);
    expect_refused_by(b, Level::Mountpoint, &["symlink"]);
}

#[test]
fn mountpoint_missing() {
    skip_without_fuse!();
    let (b, real) = with_target();
    let missing = b.root().join("no-such-mountpoint");
    let b = b.map("/", &real).mountpoint(&missing);
    expect_refused_by(b, Level::Mountpoint, &["does not exist"]);
}

#[test]
fn target_missing() {
    skip_without_fuse!();
    let (b, _) = with_target();
    let missing = b.root().join("no-such-target");
    let b = b.map("/", &missing);
    expect_refused_by(b, Level::Mountpoint, &["does not exist", "no-such-target"]);
}

#[test]
fn target_not_a_directory() {
    skip_without_fuse!();
    let (b, real) = with_target();
    let file = real.join("f");
    let b = b.map("/", &real).map("/file", &file);
    expect_refused_by(b, Level::Mountpoint, &["not a directory"]);
}

#[test]
fn target_contains_the_mountpoint() {
    skip_without_fuse!();
    let (b, _) = with_target();
    let root = b.root();
    let b = b.map("/", &root);
    expect_refused_by(b, Level::Mountpoint, &["contains the mountpoint"]);
}

#[test]
fn target_is_the_mountpoint() {
    skip_without_fuse!();
    let (b, _) = with_target();
    let mnt = b.mnt();
    let b = b.map("/", &mnt);
    expect_refused_by(b, Level::Mountpoint, &["mountpoint"]);
}

#[test]
fn target_inside_the_mountpoint() {
    skip_without_fuse!();
    let (b, real) = with_target();
    let inside = b.mnt().join("sub");
    mkdir_p(&inside);
    let b = b.map("/", &real).map("/x", &inside);
    expect_refused_by(b, Level::Mountpoint, &["inside the mountpoint"]);
}

#[test]
fn relative_from_refused() {
    skip_without_fuse!();
    let (b, real) = with_target();
    let b = b.map("keys", &real);
    expect_refused_by(b, Level::Config, &["absolute"]);
}

#[test]
fn relative_to_refused() {
    skip_without_fuse!();
    let (b, _) = with_target();
    let b = b.map("/", "opt/jumpserver");
    expect_refused_by(b, Level::Config, &["absolute"]);
}

#[test]
fn non_normalised_paths_refused() {
    skip_without_fuse!();
    for from in ["/a/../b", "/keys/", "/a/./b", "//a", "/a//b", "/.."] {
        let (b, real) = with_target();
        let b = b.map("/", &real).map(from, &real);
        expect_refused_with(
            b,
            Level::Config,
            &[],
            |l| l.contains(from) || l.contains("normali"),
            &format!("name the non-normalised `from` {from:?}"),
        );
    }
    let (b, real) = with_target();
    let to = format!("{}/../real", real.display());
    let b = b.map("/", &to);
    expect_refused_with(
        b,
        Level::Config,
        &[],
        |l| l.contains("/../real") || l.contains("normali"),
        "name the non-normalised `to`",
    );
}

#[test]
fn duplicate_from_refused() {
    skip_without_fuse!();
    let (b, real) = with_target();
    let other = b.root().join("other");
    mkdir_p(&other);
    let b = b.map("/", &real).map("/keys", &real).map("/keys", &other);
    expect_refused_by(b, Level::Config, &["duplicate", "/keys"]);
}

#[test]
fn unknown_keys_refused() {
    skip_without_fuse!();
    let (b, real) = with_target();
    let b = b
        .map("/", &real)
        .extra("[[map]]\nfrom = \"/x\"\nto = \"/tmp\"\ncolour = \"red\"\n");
    expect_refused_by(b, Level::Config, &["colour"]);

    let (b, real) = with_target();
    let b = b.map("/", &real).extra("[auditing]\nlog = \"/tmp/x\"\n");
    expect_refused_by(b, Level::Config, &["auditing"]);

    let (b, real) = with_target();
    let b = b.map("/", &real).extra("[fuse]\nworkers = 2\n");
    expect_refused_by(b, Level::Config, &["workers"]);
}

#[test]
fn malformed_toml_names_file_and_line() {
    skip_without_fuse!();
    let (b, real) = with_target();
    let config = b.config_path();
    let text = format!(
        "# relocfs test config\n[[map]]\nfrom = \"/\"\nto = = {}\n",
        serde_json::to_string(real.to_str().unwrap()).unwrap()
    );
    let b = b.raw_config(&text);
    let needle = format!("{}:4", config.display());
    expect_refused_with(
        b,
        Level::Config,
        &[&needle],
        |l| {
            // "CONFIG:4" must not be the start of e.g. "CONFIG:40".
            let i = l.find(&needle.to_lowercase()).unwrap() + needle.len();
            !l[i..].starts_with(|c: char| c.is_ascii_digit())
        },
        "name line 4 exactly",
    );
}

#[test]
fn unknown_mode_refused_rw_accepted() {
    skip_without_fuse!();
    let (b, real) = with_target();
    let b = b.map_mode("/", &real, "rx");
    expect_refused_by(b, Level::Config, &["rx"]);

    // "rw" was refused while unimplemented; it is a valid mode now.
    let (b, real) = with_target();
    let b = b.map_mode("/", &real, "rw");
    fs::write(b.config_path(), b.config_text()).unwrap();
    let out = relocfs([Path::new("check"), &b.config_path(), &b.mnt()]);
    assert!(
        out.status.success(),
        "mode = \"rw\" refused: {}",
        stderr_str(&out)
    );
}

#[test]
fn audit_log_inside_mountpoint_refused() {
    skip_without_fuse!();
    let (b, real) = with_target();
    let log = b.mnt().join("audit.jsonl");
    let b = b.map("/", &real).no_audit().extra(&format!(
        "[audit]\nlog = {}\n",
        serde_json::to_string(log.to_str().unwrap()).unwrap()
    ));
    expect_refused_by(b, Level::Mountpoint, &["audit"]);
}

#[test]
fn rule_without_target_or_deny_refused() {
    skip_without_fuse!();
    let (b, real) = with_target();
    let b = b.map("/", &real).extra("[[map]]\nfrom = \"/nowhere\"\n");
    expect_refused_by(b, Level::Config, &[]);
}

#[test]
fn unknown_mount_option_refused() {
    skip_without_fuse!();
    let (b, real) = with_target();
    let root = b.root();
    let b = b.map("/", &real).opt("allow_other").opt("frobnicate");
    let (_m, out) = b.try_mount();
    assert_refusal(&out, &["frobnicate"]);
    assert!(
        mounts_below(&root).is_empty(),
        "a refused mount left mounts behind"
    );
}

#[test]
fn missing_config_file_refused() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let root = b.root();
    let missing = root.join("missing.toml");
    let out = relocfs([Path::new("check"), &missing]);
    assert_eq!(out.status.code(), Some(1), "check of a missing config");
    assert_refusal(&out, &["missing.toml"]);
    let out = relocfs([missing.as_path(), b.mnt().as_path()]);
    assert_refusal(&out, &["missing.toml"]);
    assert!(mounts_below(&root).is_empty());
}

#[test]
fn check_accepts_valid_config_without_mounting() {
    skip_without_fuse!();
    let (b, real) = with_target();
    let root = b.root();
    let keys = root.join("keys");
    mkdir_p(&keys);
    let b = b
        .map("/", &real)
        .map("/keys", &keys)
        .deny("/keys/admin")
        .extra("[fuse]\nthreads = 2\nattr_timeout = 1.0\nentry_timeout = 0.5\n");
    let config = b.config_path();
    fs::write(&config, b.config_text()).unwrap();
    let mnt = b.mnt();

    for args in [
        vec![PathBuf::from("check"), config.clone()],
        vec![PathBuf::from("check"), config.clone(), mnt.clone()],
    ] {
        let out = relocfs(&args);
        assert!(
            out.status.success(),
            "relocfs {args:?} refused a valid config: {}",
            stderr_str(&out)
        );
        assert!(
            !stdout_str(&out).trim().is_empty(),
            "relocfs {args:?} printed nothing on stdout"
        );
        assert!(!mounted(&mnt), "`relocfs check` mounted");
    }
    let m = b.into_mounted();
    assert!(m.daemon_pids().is_empty(), "`relocfs check` left a process");
    // ... and the same config really mounts.
    let out = m.remount();
    assert!(out.status.success(), "{}", stderr_str(&out));
    assert!(mounted(&m.mnt));
}

#[test]
fn unopenable_audit_log_refused() {
    skip_without_fuse!();
    // An audited mount that cannot audit must not serve.
    let (b, real) = with_target();
    let not_dir = b.root().join("plain-file");
    write_file(&not_dir, b"", 0o644);
    let log = not_dir.join("audit.jsonl");
    let b = b.map("/", &real).no_audit().extra(&format!(
        "[audit]\nlog = {}\n",
        serde_json::to_string(log.to_str().unwrap()).unwrap()
    ));
    let root = b.root();
    let (m, out) = b.try_mount();
    assert_refusal(&out, &["audit.jsonl"]);
    assert!(
        mounts_below(&root).is_empty(),
        "a refused mount left mounts behind"
    );
    assert!(wait_until(SETTLE_TIMEOUT, || m.daemon_pids().is_empty()));
}
