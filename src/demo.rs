//! `relocfs demo`: the whole job on a built-in example, with nothing to configure first.
//!
//! It builds a temporary "migrated installation", mounts relocfs at a temporary legacy path
//! (by running this same binary, exactly as an operator would), performs the accesses from the
//! jumpserver story, prints the audit lines, unmounts and removes everything it made.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::daemon;

const NOBODY: u32 = 65534;

const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\n(demo key, not a real secret)\n\
                   -----END OPENSSH PRIVATE KEY-----\n";

/// Removes the demo's directory however the demo ends.
struct Scratch {
    dir: PathBuf,
    mountpoint: PathBuf,
    mounted: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.mounted {
            daemon::unmount(&self.mountpoint);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub fn run() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("relocfs-demo-{}", std::process::id()));
    let mut scratch = Scratch {
        mountpoint: dir.join("home/optdir/jumpserver"),
        dir: dir.clone(),
        mounted: false,
    };
    let real = dir.join("opt/jumpserver");
    let key_dir = real.join("keys/role_key/key-d92");
    let io = |e: std::io::Error| format!("demo setup in {}: {e}", dir.display());
    fs::create_dir_all(&key_dir).map_err(io)?;
    fs::create_dir_all(real.join("keys/admin")).map_err(io)?;
    fs::create_dir_all(&scratch.mountpoint).map_err(io)?;
    fs::write(key_dir.join("id_rsa"), KEY).map_err(io)?;
    fs::write(real.join("keys/admin/master.key"), "secret\n").map_err(io)?;
    fs::write(real.join("config.yml"), "SECRET_KEY: demo\n").map_err(io)?;
    let audit = dir.join("audit.jsonl");
    let config = dir.join("jumpserver.toml");
    fs::write(
        &config,
        format!(
            "[[map]]\nfrom = \"/\"\nto = \"{}\"\n\n[[map]]\nfrom = \"/keys/admin\"\ndeny = true\n\n\
             [audit]\nlog = \"{}\"\n",
            real.display(),
            audit.display()
        ),
    )
    .map_err(io)?;

    let mp = &scratch.mountpoint;
    println!(
        "An application moved from {} to {}.",
        mp.display(),
        real.display()
    );
    println!(
        "Its database still says key_path = {}/keys/role_key/key-d92",
        mp.display()
    );
    println!("\nConfiguration ({}):", config.display());
    for line in fs::read_to_string(&config).map_err(io)?.lines() {
        println!("    {line}");
    }

    // As root, the demo plays the story fully: the key belongs to the application's own
    // unprivileged user (nobody here), mode 0600, and that user reads it through the mount.
    let as_root = crate::sys::geteuid() == 0;
    if as_root {
        std::os::unix::fs::chown(key_dir.join("id_rsa"), Some(NOBODY), Some(NOBODY)).map_err(io)?;
        fs::set_permissions(key_dir.join("id_rsa"), fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }

    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let options: &[&str] = if as_root { &["-o", "allow_other"] } else { &[] };
    println!(
        "\n$ relocfs {} {} {}",
        config.display(),
        mp.display(),
        options.join(" ")
    );
    let out = Command::new(&exe)
        .arg(&config)
        .arg(mp)
        .args(options)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "the demo could not mount: {}",
            err.trim().trim_start_matches("relocfs: ")
        ));
    }
    scratch.mounted = true;

    let key = mp.join("keys/role_key/key-d92/id_rsa");
    let mut cat = Command::new("cat");
    cat.arg(&key);
    if as_root {
        cat.uid(NOBODY).gid(NOBODY);
        println!("\nThe application, running as user nobody, reads its key at the legacy path:");
    } else {
        println!("\nThe application reads its key at the legacy path:");
    }
    show(
        &key,
        cat.output()
            .map_err(|e| format!("cannot run cat: {e}"))
            .and_then(|out| {
                if out.status.success() {
                    Ok(first_line(&String::from_utf8_lossy(&out.stdout)))
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
                }
            })
            .map_err(std::io::Error::other),
    );
    println!("\nWhat the rules refuse, and what the migration missed:");
    let admin = mp.join("keys/admin/master.key");
    show(&admin, fs::read_to_string(&admin).map(|s| first_line(&s)));
    let missing = mp.join("keys/role_key/key-0ld/id_rsa");
    show(
        &missing,
        fs::read_to_string(&missing).map(|s| first_line(&s)),
    );
    let cfg = mp.join("config.yml");
    show(
        &cfg,
        fs::OpenOptions::new()
            .append(true)
            .open(&cfg)
            .map(|_| "opened for writing".to_string()),
    );
    let listing = fs::read_dir(mp.join("keys"))
        .map(|entries| {
            let mut names: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names.join(" ")
        })
        .map_err(|e| format!("listing: {e}"))?;
    println!("  ls {}/keys: {listing}", mp.display());

    println!("\n$ umount {}", mp.display());
    daemon::unmount(mp);
    scratch.mounted = false;
    let lines = wait_for_audit(&audit, 5)?;
    println!(
        "\nThe audit log ({}), one JSON object per access:",
        audit.display()
    );
    for line in lines {
        println!("{line}");
    }
    println!(
        "\nFrom such a log the operator sees who still uses the legacy path, fixes them, and \
         retires the bridge."
    );
    Ok(())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

fn show(path: &Path, result: std::io::Result<String>) {
    match result {
        Ok(text) => println!("  {}: {text}", path.display()),
        Err(e) => {
            let name = match e.kind() {
                ErrorKind::PermissionDenied => "EACCES",
                ErrorKind::NotFound => "ENOENT",
                _ if e.raw_os_error() == Some(libc::EROFS) => "EROFS",
                _ => "error",
            };
            println!("  {}: {name} ({e})", path.display());
        }
    }
}

/// The daemon writes the log from its own thread and flushes at unmount: wait for it.
fn wait_for_audit(path: &Path, at_least: usize) -> Result<Vec<String>, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= at_least || Instant::now() > deadline {
            return if lines.is_empty() {
                Err(format!("no audit lines appeared in {}", path.display()))
            } else {
                Ok(lines)
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
