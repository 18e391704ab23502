//! The motivating story, end to end: a relocated JumpServer installation
//! reached at its legacy path by the key-owning service account.

use std::process::Command;

use crate::common::*;

#[test]
fn legacy_key_path_is_served_from_relocated_install_and_audited() {
    skip_without_fuse!();
    let b = MountBuilder::new();
    let tmp = b.root();
    let install = tmp.join("opt/jumpserver");
    let key_dir = install.join("keys/role_key/key-d92");
    let key = key_dir.join("id_rsa");
    let secret =
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nstory-key-d92\n-----END OPENSSH PRIVATE KEY-----\n";
    write_owned(&key, secret, 0o600, KEY_UID, KEY_GID);
    let legacy = tmp.join("home/optdir/jumpserver");
    mkdir_p(&legacy);

    let m = b
        .map("/", &install)
        .opt("allow_other")
        .mountpoint(&legacy)
        .mount();
    let legacy_key = m.at("keys/role_key/key-d92/id_rsa");

    // The service account reads its key at the old path.
    let (pid, out) = run_as_pid(KEY_UID, KEY_GID, Command::new("cat").arg(&legacy_key));
    assert!(
        out.status.success(),
        "uid {KEY_UID} could not read {}: {}",
        legacy_key.display(),
        stderr_str(&out)
    );
    assert_eq!(
        out.stdout, secret,
        "content read through the legacy path differs"
    );

    // Somebody else cannot.
    let other = run_as(NOBODY, NOBODY, Command::new("cat").arg(&legacy_key));
    assert!(
        !other.status.success(),
        "uid {NOBODY} read a 0600 key of uid {KEY_UID}"
    );
    assert!(
        stderr_str(&other).contains("Permission denied"),
        "expected EACCES for uid {NOBODY}: {}",
        stderr_str(&other)
    );

    // And the access is on record, with the full legacy path and the real one.
    let e = wait_for_audit(&m.audit, ev("open", &legacy_key, Some(pid)), AUDIT_TIMEOUT);
    assert_eq!(n(&e, "uid"), Some(u64::from(KEY_UID)), "{e}");
    assert_eq!(n(&e, "gid"), Some(u64::from(KEY_GID)), "{e}");
    assert_eq!(s(&e, "comm"), Some("cat"), "{e}");
    assert_eq!(s(&e, "flags"), Some("r"), "{e}");
    assert_eq!(s(&e, "result"), Some("ok"), "{e}");
    assert_eq!(s(&e, "target"), key.to_str(), "{e}");
    assert_eq!(s(&e, "map"), Some("/"), "{e}");
    let problems = audit_common_problems(&e);
    assert!(problems.is_empty(), "{problems:?} in {e}");
}
