//! Writes through the mount are made with the opener's credentials, without capabilities the
//! opener lacks: a user gets no more of ext4's root-reserved blocks than at the real path,
//! whether the daemon serves the writes or the kernel passes them through. (Quotas: the kernel
//! here is built without CONFIG_QUOTA, so ext4 with `-O quota` does not mount.)

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// A small ext4 image loop-mounted in a tempdir; unmounted on drop whatever happens.
struct Ext4 {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl Ext4 {
    /// `mkfs.ext4 SIZE_MIB ARGS...` and a loop mount with `opts`; `None` if the tools or the
    /// kernel refuse (the reason printed). Nothing is ever written to an unmounted `path()`.
    fn new(size_mib: u32, mkfs: &[&str], opts: &str) -> Option<Ext4> {
        let dir = tempdir_0755("relocfs-ext4-");
        let img = dir.path().join("img");
        let f = fs::File::create(&img).unwrap();
        f.set_len(u64::from(size_mib) << 20).unwrap();
        drop(f);
        let mk = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096"])
            .args(mkfs)
            .arg(&img)
            .output()
            .ok()?;
        if !mk.status.success() {
            eprintln!("mkfs.ext4 {mkfs:?}: {}", stderr_str(&mk));
            return None;
        }
        let mp = dir.path().join("fs");
        mkdir_p(&mp);
        let mut fs = Ext4 {
            dir,
            mounted: false,
        };
        let out = Command::new("mount")
            .args(["-o", &format!("loop,{opts}")])
            .arg(&img)
            .arg(&mp)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!("mount -o loop,{opts}: {}", stderr_str(&out));
            return None;
        }
        fs.mounted = true;
        chmod(&mp, 0o755);
        Some(fs)
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("fs")
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(self.path()).status();
            if mounted(&self.path()) {
                let _ = Command::new("umount").arg("-l").arg(self.path()).status();
            }
        }
    }
}

/// Writes zeros to `file` as `uid` until the filesystem says no; returns the bytes written.
fn fill(uid: u32, file: &Path) -> u64 {
    let out = run_as(
        uid,
        uid,
        &mut sh(
            "out=$(dd if=/dev/zero of=\"$1\" bs=64k 2>&1); echo \"$out\" >&2; \
             echo \"$out\" | grep -q 'No space left'; r=$?; stat -c %s \"$1\"; exit $r",
            &[file],
        ),
    );
    assert!(
        out.status.success(),
        "the write to {file:?} did not end in ENOSPC: {}{}",
        stdout_str(&out),
        stderr_str(&out)
    );
    stdout_str(&out).trim().parse().unwrap()
}

fn sync(dir: &Path) {
    let _ = Command::new("sync").arg("-f").arg(dir).status();
}

const SLACK: u64 = 1 << 20;

/// A 64 MiB ext4 with half its blocks reserved for root, its directory `u` owned by uid
/// 4242, and how many bytes that user can write there natively (the file removed again).
fn reserved_ext4() -> (Ext4, PathBuf, u64) {
    let ext4 = Ext4::new(64, &["-m", "50"], "rw").expect("an ext4 image with reserved blocks");
    let target = ext4.path();
    let home = target.join("u");
    mkdir_owned(&home, KEY_UID, KEY_GID, 0o755);
    let native = fill(KEY_UID, &home.join("native"));
    fs::remove_file(home.join("native")).unwrap();
    sync(&target);
    (ext4, home, native)
}

#[test]
fn users_get_no_reserved_blocks_through_the_mount() {
    skip_without_fuse!();
    let (ext4, home, native) = reserved_ext4();
    let target = ext4.path();
    let mut report = vec![format!("natively {native} bytes")];
    for (how, extra) in [
        ("passthrough", ""),
        ("daemon-served", "[fuse]\npassthrough = \"off\"\n"),
    ] {
        let m = MountBuilder::new()
            .opt("allow_other")
            .extra(extra)
            .map_mode("/", &target, "rw")
            .mount();
        let via_mount = fill(KEY_UID, &m.at("u/big"));
        report.push(format!("{how}: {via_mount} bytes"));
        // Root's reserve is still there while the user's file is.
        let root = Command::new("dd")
            .args(["if=/dev/zero", "bs=1M", "count=4"])
            .arg(format!("of={}", target.join("root").display()))
            .output()
            .unwrap();
        fs::remove_file(home.join("big")).unwrap();
        let _ = fs::remove_file(target.join("root"));
        sync(&target);
        drop(m);
        assert!(
            via_mount <= native + SLACK,
            "{how}: uid {KEY_UID} wrote {via_mount} bytes through the mount, {native} natively"
        );
        assert!(
            root.status.success(),
            "{how}: root's own write after the user's failed: {}",
            stderr_str(&root)
        );
    }
    eprintln!(
        "reserved blocks (ext4 64 MiB, -m 50): {}",
        report.join(", ")
    );
}

/// One backing file per inode: a user's open of a file that root holds open for writing
/// (passthrough, with root's credentials) must not write with root's rights.
#[test]
fn a_users_writes_never_share_roots_backing_file() {
    skip_without_fuse!();
    let (ext4, home, native) = reserved_ext4();
    let target = ext4.path();
    write_owned(&home.join("shared"), b"", 0o666, KEY_UID, KEY_GID);
    let m = MountBuilder::new()
        .opt("allow_other")
        .map_mode("/", &target, "rw")
        .mount();
    let roots = fs::OpenOptions::new()
        .write(true)
        .open(m.at("u/shared"))
        .unwrap();
    let via_mount = fill(KEY_UID, &m.at("u/shared"));
    drop(roots);
    eprintln!("with root holding the file open for writing: {via_mount} bytes ({native} natively)");
    assert!(
        via_mount <= native + SLACK,
        "uid {KEY_UID} wrote {via_mount} bytes into a file root holds open, {native} natively"
    );
    // The user's writes went to the file (served by the daemon beside root's passthrough).
    assert_eq!(fs::metadata(home.join("shared")).unwrap().len(), via_mount);
}
