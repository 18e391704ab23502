//! Set-id bits through an rw rule: setgid directories are honoured, a user
//! cannot mint a setuid-root binary, and a write by a non-owner clears the
//! set-id bits exactly as at the real path.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use crate::common::*;

#[test]
fn setgid_directory_gives_new_files_and_dirs_its_group() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    mkdir_owned(&real.join("shared"), 0, 4343, 0o2777);
    let m = b.map_mode("/", &real, "rw").opt("allow_other").mount();
    let (f, d) = (m.at("shared/file"), m.at("shared/sub"));
    let out = run_as(
        KEY_UID,
        KEY_GID,
        &mut sh("umask 022 && echo x > \"$1\" && mkdir \"$2\"", &[&f, &d]),
    );
    assert!(out.status.success(), "{}", stderr_str(&out));
    assert_eq!(
        mode_owner(&real.join("shared/file")),
        (0o644, KEY_UID, 4343),
        "file: the directory's group, not the creator's"
    );
    assert_eq!(
        mode_owner(&real.join("shared/sub")),
        (0o2755, KEY_UID, 4343),
        "subdirectory: the directory's group and the setgid bit"
    );
    assert_eq!(
        mode_owner(&m.at("shared/sub")),
        (0o2755, KEY_UID, 4343),
        "through the mount"
    );
}

#[test]
fn a_user_cannot_make_a_setuid_root_binary() {
    skip_without_fuse!();
    let (m, real) = rw_root_with_home(&["suid"]);
    let id_bin = ["/usr/bin/id", "/bin/id"]
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("id(1)");
    let bin = m.at("home4242/myid");
    let out = run_as(
        KEY_UID,
        KEY_GID,
        &mut sh(
            "cp \"$1\" \"$2\" && chmod 4755 \"$2\"",
            &[std::path::Path::new(id_bin), &bin],
        ),
    );
    assert!(out.status.success(), "{}", stderr_str(&out));
    let real_bin = real.join("home4242/myid");
    assert_eq!(
        mode_owner(&real_bin),
        (0o4755, KEY_UID, KEY_GID),
        "setuid, but owned by the user"
    );

    let out = run_as(KEY_UID, KEY_GID, Command::new("chown").arg("0").arg(&bin));
    assert!(!out.status.success(), "chown to root succeeded");
    assert!(
        stderr_str(&out).contains("Operation not permitted"),
        "{}",
        stderr_str(&out)
    );
    let out = run_as(KEY_UID, KEY_GID, Command::new("chgrp").arg("0").arg(&bin));
    assert!(!out.status.success(), "chgrp to root succeeded");
    assert_eq!(
        mode_owner(&real_bin),
        (0o4755, KEY_UID, KEY_GID),
        "unchanged"
    );

    // Run by someone else from the suid mount: it runs as its owner, 4242.
    let out = run_as(NOBODY, NOBODY, Command::new(&bin).arg("-u"));
    assert!(out.status.success(), "{}", stderr_str(&out));
    assert_eq!(
        stdout_str(&out).trim(),
        KEY_UID.to_string(),
        "effective uid"
    );
    let out = run_as(NOBODY, NOBODY, Command::new(&bin).arg("-ru"));
    assert_eq!(stdout_str(&out).trim(), NOBODY.to_string(), "real uid");
}

#[test]
fn write_by_a_non_owner_clears_set_id_bits_like_natively() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let real = b.real();
    let native = b.root().join("native");
    let m = b.map_mode("/", &real, "rw").opt("allow_other").mount();
    // (name, mode, mode natively after the write, mode through relocfs)
    let cases: &[(&str, u32, u32, u32)] = &[
        ("suid", 0o4777, 0o0777, 0o0777),
        ("sgid-gx", 0o2777, 0o0777, 0o0777),
        ("both", 0o6777, 0o0777, 0o0777),
        // Setgid without group exec, written by a user outside the file's
        // group: Linux (>= 6.0) clears it natively. The write (passthrough)
        // runs with the writer's own credentials, so the real filesystem
        // clears it as natively.
        ("sgid-nogx", 0o2767, 0o0767, 0o0767),
    ];
    let mut problems = Vec::new();
    for (name, mode, want_native, want_relocfs) in cases {
        for dir in [&native, &real] {
            write_file(&dir.join(name), b"0123456789", *mode);
            chown(&dir.join(name), 0, 0);
            chmod(&dir.join(name), *mode);
        }
        let script = "printf AB | dd of=\"$1\" bs=2 seek=1 conv=notrunc 2>/dev/null";
        let n = run_as(NOBODY, NOBODY, &mut sh(script, &[&native.join(name)]));
        assert!(n.status.success(), "native write: {}", stderr_str(&n));
        let r = run_as(NOBODY, NOBODY, &mut sh(script, &[&m.at(name)]));
        assert!(
            r.status.success(),
            "write through the mount: {}",
            stderr_str(&r)
        );
        let natively = mode_owner(&native.join(name));
        let got = mode_owner(&real.join(name));
        if natively != (*want_native, 0, 0) {
            problems.push(format!(
                "{name} ({mode:04o}): natively {:04o} after the write, expected {want_native:04o}",
                natively.0
            ));
        }
        if got != (*want_relocfs, 0, 0) {
            problems.push(format!(
                "{name} ({mode:04o}): {:04o} after a write through relocfs, expected \
                 {want_relocfs:04o} (natively {:04o})",
                got.0, natively.0
            ));
        }
        assert_eq!(fs::read(real.join(name)).unwrap(), b"01AB456789");
        assert_eq!(
            fs::metadata(m.at(name)).unwrap().mode() & 0o7777,
            got.0,
            "{name}: the mount shows the real mode"
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
