//! Multi-process SQLite in WAL mode through an rw rule: concurrent writers in
//! short transactions and a polling reader share the database (its -wal file
//! and its mmap'ed -shm index) through the mount; nothing is lost, duplicated
//! or corrupted, seen through the mount and directly at the real path.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const WRITERS: usize = 4;
const INSERTS: usize = 250;

const SETUP: &str = r#"
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
assert mode == "wal", mode
# No uniqueness constraint on purpose: a duplicate must be detectable, not prevented.
con.execute("CREATE TABLE t (writer INTEGER NOT NULL, seq INTEGER NOT NULL, payload TEXT NOT NULL)")
con.close()
print("setup ok")
"#;

/// argv: db writer inserts. One short IMMEDIATE transaction per row.
const WRITER: &str = r#"
import sqlite3, sys, os
db, w, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
con = sqlite3.connect(db, timeout=60, isolation_level=None)
con.execute("PRAGMA busy_timeout=60000")
mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
assert mode == "wal", mode
for seq in range(m):
    con.execute("BEGIN IMMEDIATE")
    con.execute("INSERT INTO t (writer, seq, payload) VALUES (?, ?, ?)",
                (w, seq, "w%d-s%d-%s" % (w, seq, "x" * (seq % 97))))
    con.execute("COMMIT")
con.close()
print("writer %d ok" % w)
"#;

/// argv: db expected. Polls the count until it reaches `expected`; the count
/// must never go down and never exceed it.
const READER: &str = r#"
import sqlite3, sys, time
db, want = sys.argv[1], int(sys.argv[2])
con = sqlite3.connect(db, timeout=60, isolation_level=None)
con.execute("PRAGMA busy_timeout=60000")
last, polls, distinct = 0, 0, set()
deadline = time.time() + 90
while True:
    n = con.execute("SELECT count(*) FROM t").fetchone()[0]
    polls += 1
    if n < last:
        print("count went down: %d -> %d" % (last, n)); sys.exit(2)
    if n > want:
        print("count above expected: %d" % n); sys.exit(3)
    distinct.add(n)
    last = n
    if n == want:
        break
    if time.time() > deadline:
        print("timed out at %d" % n); sys.exit(4)
    time.sleep(0.002)
con.close()
print("reader ok polls=%d distinct=%d" % (polls, len(distinct)))
"#;

/// argv: db writers inserts. Prints one JSON line with what it found.
const CHECK: &str = r#"
import sqlite3, sys, json
db, n, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
con = sqlite3.connect(db, isolation_level=None)
r = {
  "journal_mode": con.execute("PRAGMA journal_mode").fetchone()[0],
  "integrity": [row[0] for row in con.execute("PRAGMA integrity_check")],
  "count": con.execute("SELECT count(*) FROM t").fetchone()[0],
  "distinct": con.execute("SELECT count(*) FROM (SELECT DISTINCT writer, seq FROM t)").fetchone()[0],
  "dups": con.execute("SELECT count(*) FROM (SELECT writer, seq FROM t GROUP BY writer, seq HAVING count(*) <> 1)").fetchone()[0],
  "bad_payload": con.execute("SELECT count(*) FROM t WHERE payload <> printf('w%d-s%d-', writer, seq) || substr(replace(hex(zeroblob(seq % 97)), '00', 'x'), 1, seq % 97)").fetchone()[0],
  "out_of_range": con.execute("SELECT count(*) FROM t WHERE writer < 0 OR writer >= ? OR seq < 0 OR seq >= ?", (n, m)).fetchone()[0],
}
con.close()
print(json.dumps(r))
"#;

fn python_cmd(py: &Path, script: &str, args: &[String]) -> Command {
    let mut c = Command::new(py);
    c.arg("-c").arg(script).args(args).current_dir("/");
    c
}

fn spawn(mut c: Command) -> Child {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3")
}

fn check(py: &Path, db: &Path) -> serde_json::Value {
    let out = run_with_timeout(
        &mut python_cmd(
            py,
            CHECK,
            &[
                db.to_str().unwrap().into(),
                WRITERS.to_string(),
                INSERTS.to_string(),
            ],
        ),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "check of {}: {}",
        db.display(),
        stderr_str(&out)
    );
    serde_json::from_str(stdout_str(&out).trim()).unwrap()
}

#[test]
fn sqlite_wal_with_concurrent_writers_and_reader() {
    skip_without_fuse!();
    let Some(py) = system_python() else {
        skip_or_fail("/usr/bin/python3 with the sqlite3 module is needed");
        return;
    };
    let b = MountBuilder::new();
    let real = b.real();
    mkdir_p(&real.join("db"));
    let m = b.map_mode("/", &real, "rw").no_audit().mount();
    let db = m.at("db/test.sqlite");
    let dbs = db.to_str().unwrap().to_string();
    let start = Instant::now();

    let out = run_with_timeout(
        &mut python_cmd(&py, SETUP, std::slice::from_ref(&dbs)),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "setup: {}", stderr_str(&out));

    let total = WRITERS * INSERTS;
    let reader = spawn(python_cmd(&py, READER, &[dbs.clone(), total.to_string()]));
    let writers: Vec<Child> = (0..WRITERS)
        .map(|w| {
            spawn(python_cmd(
                &py,
                WRITER,
                &[dbs.clone(), w.to_string(), INSERTS.to_string()],
            ))
        })
        .collect();
    let mut failures = Vec::new();
    let mut reader_says = String::new();
    for (i, child) in writers
        .into_iter()
        .chain(std::iter::once(reader))
        .enumerate()
    {
        let out = child.wait_with_output().unwrap();
        let who = if i < WRITERS {
            format!("writer {i}")
        } else {
            "reader".to_string()
        };
        if !out.status.success() {
            failures.push(format!(
                "{who}: {:?}\nstdout: {}\nstderr: {}",
                out.status,
                stdout_str(&out),
                stderr_str(&out)
            ));
        } else if i == WRITERS {
            reader_says = stdout_str(&out).trim().to_string();
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let elapsed = start.elapsed();

    let want = serde_json::json!({
        "journal_mode": "wal",
        "integrity": ["ok"],
        "count": total,
        "distinct": total,
        "dups": 0,
        "bad_payload": 0,
        "out_of_range": 0,
    });
    let via_mount = check(&py, &db);
    assert_eq!(via_mount, want, "database as seen through the mount");

    // All connections are closed: the last one checkpointed and removed the
    // -wal and -shm files, at the real path too.
    let real_db = real.join("db/test.sqlite");
    assert_eq!(
        dir_names(&real.join("db")),
        vec!["test.sqlite".to_string()],
        "real db directory after the last connection closed"
    );
    assert_eq!(
        fs::read(&real_db).unwrap(),
        fs::read(&db).unwrap(),
        "the db file reads the same through the mount and at the real path"
    );
    // Directly at the real path, with nothing mounted any more.
    m.unmount_all();
    assert!(!mounted(&m.mnt));
    let direct = check(&py, &real_db);
    assert_eq!(direct, want, "database read directly at the real path");
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "sqlite: {WRITERS} writers x {INSERTS} inserts through relocfs in {:.1} s; {reader_says}\n",
            elapsed.as_secs_f64()
        )
        .as_bytes(),
    );
}
