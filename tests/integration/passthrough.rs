//! Small files are served by the daemon and large or written ones by kernel passthrough; the
//! kernel refuses to mix both for one inode, so every open of an inode must follow the first.
//! Opening a file again while it is open, the other way, must work and see the same data.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;

use crate::common::*;

fn reopen_while_open(size: usize) {
    let b = MountBuilder::new();
    let real = b.real();
    write_file(&real.join("f"), &vec![b'a'; size], 0o666);
    let m = b.map_mode("/", &real, "rw").mount();
    let path = m.mnt.join("f");

    // Read-only first (the small file is then served by the daemon), then a writer.
    let reader = fs::File::open(&path).unwrap();
    let mut writer = OpenOptions::new().write(true).open(&path).unwrap();
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
    let writer = OpenOptions::new().write(true).open(&path).unwrap();
    let reader = fs::File::open(&path).unwrap();
    writer.write_all_at(b"MORE", 3).unwrap();
    let mut buf = [0u8; 7];
    reader.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"NEWMORE", "size {size}");
    assert_eq!(&fs::read(real.join("f")).unwrap()[..7], b"NEWMORE");
}

#[test]
fn small_file_reopened_for_writing_while_open() {
    if !require_fuse() {
        return;
    }
    reopen_while_open(100);
}

#[test]
fn large_file_reopened_for_writing_while_open() {
    if !require_fuse() {
        return;
    }
    reopen_while_open(1 << 20);
}
