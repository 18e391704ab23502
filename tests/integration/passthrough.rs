//! Small files are served by the daemon and large or written ones by kernel passthrough; the
//! kernel refuses to mix both for one inode, so every open of an inode must follow the first.
//! Opening a file again while it is open, the other way, must work and see the same data.
//! And passthrough must really happen: a large file's data never passes through the daemon
//! (its own read/write byte counters, /proc/PID/io, tell).

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use crate::common::*;

fn reopen_while_open(size: usize) {
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("f"), &vec![b'a'; size], 0o666);
    let m = b.map_mode("/", &real, "rw").opt("allow_other").mount();
    let path = m.mnt.join("f");
    // As an ordinary user, whose large and written files are passed through (root's never are).
    spawn_as_user(USER, USER, &[], move || reopen_as_user(size, &path, &real))
        .join()
        .expect("the user's opens");
}

fn reopen_as_user(size: usize, path: &std::path::Path, real: &std::path::Path) {
    // Read-only first (the small file is then served by the daemon), then a writer.
    let reader = fs::File::open(path).unwrap();
    let mut writer = OpenOptions::new().write(true).open(path).unwrap();
    writer.write_all(b"NEW").unwrap();
    writer.sync_all().unwrap();
    let mut buf = [0u8; 3];
    reader.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(
        &buf, b"NEW",
        "size {size}: the reader sees the writer's data"
    );
    drop((reader, writer));

    // Writer first (passthrough), then a reader.
    let writer = OpenOptions::new().write(true).open(path).unwrap();
    let reader = fs::File::open(path).unwrap();
    writer.write_all_at(b"MORE", 3).unwrap();
    let mut buf = [0u8; 7];
    reader.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"NEWMORE", "size {size}");
    assert_eq!(&fs::read(real.join("f")).unwrap()[..7], b"NEWMORE");
}

#[test]
fn small_file_reopened_for_writing_while_open() {
    skip_without_fuse!();
    reopen_while_open(100);
}

#[test]
fn large_file_reopened_for_writing_while_open() {
    skip_without_fuse!();
    reopen_while_open(1 << 20);
}

/// Bytes the daemon process moved through read and write syscalls (all threads): rchar +
/// wchar of /proc/PID/io. Serving a read costs the daemon the pread of the data and the
/// reply that carries it; serving a write, the request that carries it and the pwrite.
pub(crate) fn daemon_io_bytes(pid: i32) -> u64 {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/PID/io of the daemon");
    ["rchar:", "wchar:"]
        .iter()
        .map(|key| {
            io.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/io:\n{io}"))
        })
        .sum()
}

/// Kernel FUSE passthrough exists from Linux 6.9 on.
pub(crate) fn kernel_has_passthrough() -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let (major, minor) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    (major, minor) >= (6, 9)
}

const LARGE: usize = 8 << 20;

/// The ordinary user whose opens are passed through.
const USER: u32 = 4242;

/// Reads a fresh large file whole through the mount and overwrites it whole, through a new
/// open each; returns the bytes the daemon moved meanwhile.
fn daemon_bytes_for_large_io(extra_config: &str) -> u64 {
    let b = MountBuilder::new();
    let real = b.real();
    let data = pattern(LARGE, 7);
    write_file(&real.join("big"), &data, 0o666);
    let m = b
        .map_mode("/", &real, "rw")
        .opt("allow_other")
        .extra(extra_config)
        .mount();
    let pid = m.daemon_pid();
    let path = m.at("big");
    let before = daemon_io_bytes(pid);

    // As an ordinary user: root's opens are never passed through (a backing file keeps the
    // rights of the task that registered it, and every opener of the inode shares it).
    let new = pattern(LARGE, 8);
    let written = new.clone();
    spawn_as_user(USER, USER, &[], move || {
        let mut read = Vec::with_capacity(LARGE);
        fs::File::open(&path)
            .unwrap()
            .read_to_end(&mut read)
            .unwrap();
        assert!(read == data, "read back through the mount");
        let mut w = OpenOptions::new().write(true).open(&path).unwrap();
        w.write_all(&written).unwrap();
        w.sync_all().unwrap();
    })
    .join()
    .expect("the user's reads and writes");

    let moved = daemon_io_bytes(pid) - before;
    assert!(
        fs::read(real.join("big")).unwrap() == new,
        "the real file holds the write"
    );
    moved
}

/// With passthrough (the default), reading and writing 8 MiB each costs the daemon next to
/// nothing (the open, the audit line, the fsync); with `passthrough = "off"` the same moves at
/// least 2 x 16 MiB through it, which shows the probe sees daemon-served data.
#[test]
fn large_file_data_never_passes_through_the_daemon() {
    skip_without_fuse!();
    if !kernel_has_passthrough() {
        eprintln!("SKIP: the kernel has no FUSE passthrough (Linux < 6.9)");
        return;
    }
    let served = daemon_bytes_for_large_io("[fuse]\npassthrough = \"off\"\n");
    assert!(
        served >= 4 * LARGE as u64,
        "passthrough off: the daemon moved only {served} bytes for 2 x {LARGE}"
    );
    let through = daemon_bytes_for_large_io("");
    eprintln!("daemon bytes for 2 x {LARGE}: passthrough off {served}, on {through}");
    assert!(
        through < (LARGE / 8) as u64,
        "with passthrough the daemon still moved {through} bytes for 2 x {LARGE} of file data \
         (with passthrough off: {served}): reads or writes reach the daemon"
    );
}
