//! Tests of `relocfs report`, through `run` where they can be.

use super::*;
use serde_json::{json, Value};

/// The fixed "now" of every test: 2026-11-27T12:00:00Z.
fn now() -> SystemTime {
    time::from_micros(ts("2026-11-27T12:00:00Z"))
}

fn ts(s: &str) -> i64 {
    parse_rfc3339(s).expect("test timestamp")
}

fn ev(ts: &str, op: &str, path: &str, comm: &str, uid: u32, result: &str) -> Value {
    json!({"v": 1, "ts": ts, "op": op, "path": path, "pid": 4242, "uid": uid, "gid": uid,
           "comm": comm, "result": result})
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

fn dropped(ts: &str, count: u64) -> Value {
    json!({"v": 1, "ts": ts, "op": "dropped", "count": count})
}

fn jsonl(events: &[Value]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect()
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).expect("write test log");
    path
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

fn args(logs: Vec<PathBuf>) -> ReportArgs {
    ReportArgs {
        logs,
        now: Some(now()),
        // Names depend on the machine: the tests of names set this themselves.
        numeric: true,
        ..ReportArgs::default()
    }
}

fn output(args: &ReportArgs) -> String {
    let mut out = Vec::new();
    run(args, &mut out).expect("report");
    String::from_utf8(out).expect("utf-8 report")
}

fn json_of(args: &ReportArgs) -> Value {
    let args = ReportArgs {
        format: Format::Json,
        ..args.clone()
    };
    serde_json::from_str(&output(&args)).expect("report is JSON")
}

const J: &str = "/home/optdir/jumpserver";

/// Six access lines (9 events with counts) and two dropped lines (8 lost).
fn basic_events() -> Vec<Value> {
    vec![
        ev(
            "2026-11-20T10:00:00Z",
            "open",
            &format!("{J}/keys/id_rsa"),
            "python3",
            998,
            "ok",
        ),
        with(
            ev(
                "2026-11-21T10:00:00Z",
                "open",
                &format!("{J}/keys/id_rsa"),
                "python3",
                998,
                "ok",
            ),
            "count",
            json!(5),
        ),
        with(
            ev(
                "2026-11-22T10:00:00Z",
                "lookup",
                &format!("{J}/conf/missing.yml"),
                "bash",
                0,
                "ENOENT",
            ),
            "count",
            json!(2),
        ),
        dropped("2026-11-22T11:00:00Z", 7),
        json!({"v": 1, "ts": "2026-11-22T11:00:01Z", "op": "dropped"}),
        ev(
            "2026-11-23T08:30:00Z",
            "open",
            &format!("{J}/conf/app.yml"),
            "bash",
            0,
            "EACCES",
        ),
    ]
}

#[test]
fn totals_counts_and_lost_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = write(dir.path(), "audit.log", jsonl(&basic_events()).as_bytes());
    let r = json_of(&args(vec![log]));
    let t = &r["totals"];
    assert_eq!(t["events"], 9);
    assert_eq!(t["lost_events"], 8);
    assert_eq!(t["lower_bounds"], true);
    assert_eq!(t["malformed_lines"], 0);
    assert_eq!(t["files_read"], 1);
    assert_eq!(t["outside_window"], 0);
    assert_eq!(t["first_seen"], "2026-11-20T10:00:00.000000Z");
    assert_eq!(t["last_seen"], "2026-11-23T08:30:00.000000Z");
    assert_eq!(t["now"], "2026-11-27T12:00:00.000000Z");
    assert_eq!(t["files"][0]["lines"], 6);
    assert_eq!(t["files"][0]["gzip"], false);

    let g = &r["groups"];
    assert_eq!(g["by"], "path");
    assert_eq!(g["total"], 2);
    assert_eq!(g["rows"][0]["directory"], format!("{J}/keys"));
    assert_eq!(g["rows"][0]["hits"], 6);
    assert_eq!(g["rows"][0]["processes"], 1);
    assert_eq!(g["rows"][0]["paths"], 1);
    assert_eq!(g["rows"][0]["first_seen"], "2026-11-20T10:00:00.000000Z");
    assert_eq!(g["rows"][0]["last_seen"], "2026-11-21T10:00:00.000000Z");
    assert_eq!(g["rows"][1]["directory"], format!("{J}/conf"));
    assert_eq!(g["rows"][1]["hits"], 3);
    assert_eq!(g["rows"][1]["paths"], 2);

    let p = &r["processes"];
    assert_eq!(p["total"], 2);
    assert_eq!(
        p["rows"][0],
        json!({"comm": "python3", "exe": null, "uid": 998, "user": null, "unit": null,
        "user_unit": null, "container": null, "host": null, "hits": 6,
        "paths": 1, "first_seen": "2026-11-20T10:00:00.000000Z",
        "last_seen": "2026-11-21T10:00:00.000000Z", "escaped": [], "truncated": [], "summarised": false})
    );
    assert_eq!(p["rows"][1]["comm"], "bash");
    assert_eq!(p["rows"][1]["hits"], 3);
    assert_eq!(p["rows"][1]["paths"], 2);

    assert_eq!(r["misses"]["total"], 1);
    assert_eq!(
        r["misses"]["rows"][0]["path"],
        format!("{J}/conf/missing.yml")
    );
    assert_eq!(r["misses"]["rows"][0]["hits"], 2);
    assert_eq!(
        r["misses"]["rows"][0]["processes"],
        json!([{"comm": "bash", "hits": 2, "escaped": [], "truncated": [], "summarised": false}])
    );

    assert_eq!(r["denials"]["total"], 1);
    let d = &r["denials"]["rows"][0];
    assert_eq!(d["op"], "open");
    assert_eq!(d["path"], format!("{J}/conf/app.yml"));
    assert_eq!(d["result"], "EACCES");
    assert_eq!(d["hits"], 1);

    assert_eq!(
        r["verdict"]["text"],
        format!(
            "last access 4 days ago by bash (uid 0) to {J}/conf/app.yml at \
             2026-11-23T08:30:00Z; but 8 events were lost, so later accesses may be missing"
        )
    );
    let last = &r["verdict"]["last_access"];
    assert_eq!(last["ago_seconds"], 4 * 86_400 + 3 * 3600 + 1800);
    assert_eq!(last["op"], "open");
    assert_eq!(last["result"], "EACCES");
}

#[test]
fn table_output_is_aligned_and_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = write(dir.path(), "audit.log", jsonl(&basic_events()).as_bytes());
    let expected = "\
WARNING: 8 audit events were lost (queue full or write errors); every figure below is a lower bound.

Totals
  events           9
  lost events      8
  files read       1
  malformed lines  0
  time span        2026-11-20T10:00:00Z to 2026-11-23T08:30:00Z (2 days)

Top legacy directories
DIRECTORY                     HITS  PROCS  USERS  PATHS  FIRST SEEN            LAST SEEN
/home/optdir/jumpserver/keys     6      1      1      1  2026-11-20T10:00:00Z  2026-11-21T10:00:00Z
/home/optdir/jumpserver/conf     3      1      1      2  2026-11-22T10:00:00Z  2026-11-23T08:30:00Z

Top processes
COMM     EXE  UID  USER  UNIT  HITS  PATHS  LAST SEEN
python3  -    998  -     -        6      1  2026-11-21T10:00:00Z
bash     -      0  -     -        3      2  2026-11-23T08:30:00Z

Misses (ENOENT): what the migration missed
PATH                                      HITS  LAST SEEN             PROCESSES
/home/optdir/jumpserver/conf/missing.yml     2  2026-11-22T10:00:00Z  bash (2)

Denied and refused (EACCES, EPERM, EROFS)
OP    PATH                                  RESULT  HITS  LAST SEEN             PROCESSES
open  /home/optdir/jumpserver/conf/app.yml  EACCES     1  2026-11-23T08:30:00Z  bash (1)

Verdict: last access 4 days ago by bash (uid 0) to /home/optdir/jumpserver/conf/app.yml at 2026-11-23T08:30:00Z; but 8 events were lost, so later accesses may be missing
";
    assert_eq!(output(&args(vec![log])), expected);
}

/// The same events split over plain, rotated and gzip files (one without a .gz name,
/// one of two gzip members), given in shuffled order, report exactly like one file.
#[test]
fn rotated_gzip_and_plain_in_any_order_equal_one_file() {
    let mut events = Vec::new();
    for i in 0..40u32 {
        let comm = ["python3", "bash", "celery"][i as usize % 3];
        let result = ["ok", "ok", "ENOENT", "EROFS"][i as usize % 4];
        let path = format!("{J}/d{}/f{}", i % 5, i % 7);
        let ts = format!("2026-11-{:02}T{:02}:00:00Z", 10 + i % 15, i % 24);
        events.push(with(
            ev(&ts, "open", &path, comm, 1000 + i % 2, result),
            "count",
            json!(i % 3 + 1),
        ));
    }
    events.push(dropped("2026-11-15T00:00:00Z", 3));
    let all = jsonl(&events);
    let parts: Vec<String> = events.chunks(9).map(jsonl).collect();
    assert_eq!(parts.len(), 5);

    let dir = tempfile::tempdir().expect("tempdir");
    let single = write(dir.path(), "single.log", all.as_bytes());
    let mut two_members = gzip(parts[3].as_bytes());
    two_members.extend(gzip(parts[4].as_bytes()));
    let split = vec![
        write(dir.path(), "audit.log.2.gz", &gzip(parts[2].as_bytes())),
        write(dir.path(), "audit.log", parts[0].as_bytes()),
        write(dir.path(), "audit.log.3", &two_members),
        write(dir.path(), "audit.log.1", parts[1].as_bytes()),
    ];

    let mut one = json_of(&args(vec![single]));
    let mut many = json_of(&args(split));
    assert_eq!(many["totals"]["files_read"], 4);
    let gz: Vec<bool> = many["totals"]["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["gzip"] == true)
        .collect();
    assert_eq!(gz, [true, false, true, false]);
    let expected_events: u64 = (0..40u64).map(|i| i % 3 + 1).sum();
    assert_eq!(many["totals"]["events"], expected_events);
    assert_eq!(many["totals"]["lost_events"], 3);
    one["totals"]["files"] = Value::Null;
    one["totals"]["files_read"] = Value::Null;
    many["totals"]["files"] = Value::Null;
    many["totals"]["files_read"] = Value::Null;
    assert_eq!(one, many);
}

/// Many chunks, lines straddling chunk boundaries: one thread or several, same report.
#[test]
fn parallel_and_sequential_reading_agree_across_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut data = String::new();
    let n = 15_000u64;
    for i in 0..n {
        let e = ev(
            &format!("2026-11-{:02}T10:00:{:02}Z", 1 + i % 20, i % 60),
            "open",
            &format!("{J}/dir{}/file{}", i % 13, i % 101),
            ["a", "b", "c"][(i % 3) as usize],
            (i % 4) as u32,
            if i % 10 == 0 { "ENOENT" } else { "ok" },
        );
        data.push_str(&format!("{}\n", with(e, "count", json!(i % 2 + 1))));
        if i % 500 == 499 {
            data.push_str("garbage\n");
        }
    }
    assert!(data.len() > 2 * CHUNK);
    let plain = write(dir.path(), "audit.log", data.as_bytes());
    let gz = write(dir.path(), "audit.log.1", &gzip(data.as_bytes()));
    let window = Window {
        since: None,
        until: None,
    };
    let now = time::micros_since_epoch(now());
    let report_with = |workers| {
        let (agg, files) =
            aggregate(&[plain.clone(), gz.clone()], window, workers, 0).expect("aggregate");
        serde_json::to_value(agg.into_report(GroupBy::Path, files, 0, now, false)).expect("json")
    };
    let one = report_with(1);
    assert_eq!(one["totals"]["events"], 2 * (n + n / 2));
    assert_eq!(one["totals"]["malformed_lines"], 60);
    assert_eq!(one["totals"]["files"][0]["lines"], n + 30);
    assert_eq!(one["totals"]["files"][1]["lines"], n + 30);
    assert_eq!(one["groups"]["total"], 13);
    // i = 10k for k in 0..1500: 10 is invertible mod 1313, so all 13 * 101 pairs occur.
    assert_eq!(one["misses"]["total"], 1313);
    assert_eq!(report_with(2), one);
    assert_eq!(report_with(5), one);
}

#[test]
fn malformed_truncated_and_overlong_lines_are_counted_per_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = ev(
        "2026-11-20T10:00:00Z",
        "open",
        &format!("{J}/a"),
        "sh",
        1,
        "ok",
    )
    .to_string();
    let mut a = String::new();
    a.push_str(&format!("{good}\n"));
    a.push_str("not json\n");
    a.push_str("{\"v\":1,\"ts\":\"2026-11-20T10:00:00Z\",\"op\":\"open\"}\n"); // no path/uid/comm/result
    a.push_str(&format!(
        "{}\n",
        with(
            serde_json::from_str(&good).expect("json"),
            "ts",
            json!("yesterday")
        )
    ));
    a.push_str(&format!(
        "{}\n",
        with(
            serde_json::from_str(&good).expect("json"),
            "uid",
            json!("root")
        )
    ));
    a.push_str("\n   \n"); // blank lines: ignored
    a.push_str(&format!("{good}\r\n"));
    a.push_str("{\"v\":1,\"ts\":\"2026-11-2"); // half-written last line
    let a = write(dir.path(), "a.log", a.as_bytes());

    let mut b = Vec::new();
    b.extend_from_slice(format!("{good}\n[1,2]\n").as_bytes());
    b.extend_from_slice(b"{\"ts\":\"\xff\xfe\"}\n"); // not UTF-8
    b.extend(std::iter::repeat_n(b'x', MAX_LINE + 10)); // overlong, ends within a chunk
    b.push(b'\n');
    b.extend_from_slice(format!("{good}\n").as_bytes());
    b.extend(std::iter::repeat_n(b'y', 2 * MAX_LINE)); // overlong, cut by the reader
    b.push(b'\n');
    b.extend_from_slice(good.as_bytes()); // complete, just no final newline
    let b = write(dir.path(), "b.log", &b);

    let r = json_of(&args(vec![a, b]));
    let files = &r["totals"]["files"];
    assert_eq!(files[0]["lines"], 7);
    assert_eq!(files[0]["malformed"], 5);
    assert_eq!(files[1]["lines"], 7);
    assert_eq!(files[1]["malformed"], 4);
    assert_eq!(files[1]["error"], Value::Null);
    assert_eq!(r["totals"]["malformed_lines"], 9);
    assert_eq!(files[1]["overlong"], 2);
    assert_eq!(r["totals"]["overlong_lines"], 2);
    assert_eq!(r["totals"]["events"], 5);
    let table = output(&args(vec![dir.path().join("b.log")]));
    assert!(
        table.contains("\n    over-long      2 (longer than 8 MiB: skipped unread)\n"),
        "{table}"
    );
}

#[test]
fn truncated_gzip_keeps_what_was_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events: Vec<Value> = (0..3)
        .map(|i| {
            ev(
                &format!("2026-11-2{i}T10:00:00Z"),
                "open",
                &format!("{J}/x"),
                "sh",
                1,
                "ok",
            )
        })
        .collect();
    let mut data = gzip(jsonl(&events).as_bytes());
    // A second member cut off inside its header, as a crash during rotation leaves it.
    data.extend_from_slice(&gzip(b"more\n")[..6]);
    let log = write(dir.path(), "audit.log.1.gz", &data);
    let r = json_of(&args(vec![log]));
    assert_eq!(r["totals"]["events"], 3);
    assert_eq!(r["totals"]["files"][0]["lines"], 3);
    assert_eq!(r["totals"]["files"][0]["malformed"], 0);
    assert!(r["totals"]["files"][0]["error"].is_string());
    let table = output(&args(vec![dir.path().join("audit.log.1.gz")]));
    assert!(
        table.contains("audit.log.1.gz: reading stopped after 3 lines: "),
        "{table}"
    );
}

#[test]
fn escaped_strings_unknown_and_future_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = ev(
        "2026-11-20T10:00:00Z",
        "open",
        &format!("{J}/caf\u{e9} \"q\"/x"),
        "sh",
        1,
        "ok",
    );
    let e = with(e, "exe", json!("/usr/bin/sh"));
    let e = with(e, "cmdline", json!("sh -c 'cat x'"));
    let e = with(e, "target", json!("/opt/jumpserver/x"));
    let e = with(e, "flags", json!("r"));
    let e = with(e, "future", json!({"nested": [1, 2, {"a": null}]}));
    let log = write(dir.path(), "audit.log", jsonl(&[e]).as_bytes());
    let r = json_of(&args(vec![log.clone()]));
    assert_eq!(r["totals"]["malformed_lines"], 0);
    assert_eq!(
        r["groups"]["rows"][0]["directory"],
        format!("{J}/caf\u{e9} \"q\"")
    );
    assert_eq!(r["processes"]["rows"][0]["exe"], "/usr/bin/sh");
    assert_eq!(r["verdict"]["last_access"]["exe"], "/usr/bin/sh");
}

/// The daemon logs a name that is not UTF-8 encoded (`\\` and `\xHH`) and lists the field
/// in `escaped`; the same text as a real UTF-8 name is another name. Never merged, and
/// every output says which is which.
#[test]
fn escaped_names_are_kept_apart_and_marked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let miss = |path: &str, comm: &str, escaped: &[&str]| {
        let e = ev("2026-11-20T10:00:00Z", "lookup", path, comm, 1, "ENOENT");
        if escaped.is_empty() {
            e
        } else {
            with(e, "escaped", json!(escaped))
        }
    };
    let events = vec![
        // The UTF-8 name `/l/bad\xff\xfe` (backslashes and letters).
        miss("/l/bad\\xff\\xfe", "sh", &[]),
        // The bytes 2f 6c 2f 62 61 64 ff fe: the same logged text, escaped.
        miss("/l/bad\\xff\\xfe", "sh", &["path"]),
        with(miss("/l/bad\\xff\\xfe", "sh", &["path"]), "count", json!(2)),
        miss("/l/bad\\xfe\\xff", "sh", &["path"]),
        miss("/l/bad\u{fffd}\u{fffd}", "sh", &[]),
        // A process name that is not UTF-8, and one whose text reads the same.
        miss("/l/x", "p\\xe9", &["comm", "target"]),
        miss("/l/x", "p\\xe9", &[]),
    ];
    let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
    let a = ReportArgs {
        limit: 0,
        ..args(vec![log.clone()])
    };
    let r = json_of(&a);
    assert_eq!(r["totals"]["malformed_lines"], 0);
    let misses: Vec<(String, u64, Value)> = r["misses"]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|m| {
            (
                m["path"].as_str().unwrap_or("").to_owned(),
                m["hits"].as_u64().unwrap_or(0),
                m["escaped"].clone(),
            )
        })
        .collect();
    assert_eq!(
        misses,
        [
            ("/l/bad\\xff\\xfe".to_owned(), 3, json!(["path"])),
            ("/l/x".to_owned(), 2, json!([])),
            ("/l/bad\\xfe\\xff".to_owned(), 1, json!(["path"])),
            ("/l/bad\\xff\\xfe".to_owned(), 1, json!([])),
            ("/l/bad\u{fffd}\u{fffd}".to_owned(), 1, json!([])),
        ]
    );
    let procs = &r["misses"]["rows"][1]["processes"];
    assert_eq!(procs[0]["comm"], "p\\xe9");
    assert_ne!(procs[0]["escaped"], procs[1]["escaped"]);
    assert_eq!(r["processes"]["total"], 3);
    assert_eq!(r["groups"]["total"], 1);
    assert_eq!(r["groups"]["rows"][0]["paths"], 5);
    assert_eq!(r["groups"]["rows"][0]["processes"], 3);

    let table = output(&a);
    assert!(
        table.contains("\n/l/bad\\xff\\xfe \\[not UTF-8]  "),
        "{table}"
    );
    assert!(
        table.contains("\n/l/bad\\xfe\\xff \\[not UTF-8]  "),
        "{table}"
    );
    assert!(table.contains("\n/l/bad\\\\xff\\\\xfe  "), "{table}");
    assert!(
        table.contains("p\\\\xe9 (1), p\\xe9 \\[not UTF-8] (1)"),
        "{table}"
    );
    let csv = output(&ReportArgs {
        by: GroupBy::Process,
        format: Format::Csv,
        ..a.clone()
    });
    assert!(csv.contains("\np\\xe9,,1,1,1,1,"), "{csv}");
    assert!(csv.contains(",escaped:comm\n"), "{csv}");
    assert!(csv.contains("\np\\\\xe9,,1,1,1,1,"), "{csv}");
}

#[test]
fn truncated_names_are_marked_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let long = "/l/aaaa…[5000 bytes]…zzzz";
    let events = vec![
        with(
            with(
                ev("2026-11-20T10:00:00Z", "lookup", long, "sh", 1, "ENOENT"),
                "truncated",
                json!(["path", "target"]),
            ),
            "count",
            json!(3),
        ),
        // A real name that merely looks like it: not truncated.
        ev("2026-11-20T10:00:01Z", "lookup", long, "sh", 1, "ENOENT"),
    ];
    let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
    let r = json_of(&args(vec![log.clone()]));
    assert_eq!(r["totals"]["truncated_events"], 3);
    assert_eq!(r["misses"]["total"], 2);
    assert_eq!(r["misses"]["rows"][0]["truncated"], json!(["path"]));
    assert_eq!(r["misses"]["rows"][1]["truncated"], json!([]));
    let table = output(&args(vec![log]));
    assert!(
        table.contains(&format!("\n{long} \\[truncated]  ")),
        "{table}"
    );
    assert!(
        table.contains(&format!("\n{long}                ")),
        "{table}"
    );
    assert!(
        table.contains("\n  truncated        3 events with a name shortened"),
        "{table}"
    );
}

/// `suppressed` lines: events the rate limit kept out of the log. Counted exactly, per
/// user, in every format, and never as an access of a path.
#[test]
fn suppressed_events_are_counted_per_user_and_never_as_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sup = |ts: &str, uid: u32, count: u64| {
        json!({"v": 1, "ts": ts, "op": "suppressed", "uid": uid, "count": count,
               "since": "2026-11-20T09:00:00Z"})
    };
    let events = vec![
        ev("2026-11-20T10:00:00Z", "open", "/l/a", "sh", 0, "ok"),
        sup("2026-11-20T10:00:01Z", 1000, 500),
        sup("2026-11-20T10:00:02Z", 1000, 250),
        sup("2026-11-20T10:00:03Z", 1001, 3),
        // Malformed: no count, no uid.
        json!({"v": 1, "ts": "2026-11-20T10:00:04Z", "op": "suppressed", "uid": 5}),
        json!({"v": 1, "ts": "2026-11-20T10:00:04Z", "op": "suppressed", "count": 5}),
    ];
    let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
    let by_user = ReportArgs {
        by: GroupBy::User,
        ..args(vec![log.clone()])
    };
    let r = json_of(&by_user);
    assert_eq!(r["totals"]["events"], 1);
    assert_eq!(r["totals"]["suppressed_events"], 753);
    assert_eq!(r["totals"]["malformed_lines"], 2);
    assert_eq!(r["suppressed"]["total"], 2);
    assert_eq!(
        r["suppressed"]["rows"][0],
        json!({"uid": 1000, "user": null, "events": 750,
               "first_seen": "2026-11-20T10:00:01.000000Z",
               "last_seen": "2026-11-20T10:00:02.000000Z"})
    );
    assert_eq!(r["suppressed"]["rows"][1]["events"], 3);
    let users: Vec<(u64, u64, u64)> = r["groups"]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|g| {
            (
                g["uid"].as_u64().unwrap_or(99),
                g["hits"].as_u64().unwrap_or(99),
                g["suppressed"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    assert_eq!(users, [(0, 1, 0), (1000, 0, 750), (1001, 0, 3)]);
    assert_eq!(r["processes"]["total"], 1);
    assert_eq!(r["misses"]["total"], 0);
    assert_eq!(r["denials"]["total"], 0);
    assert!(r["verdict"]["text"].as_str().unwrap_or("").ends_with(
        "; 753 more events were not logged (audit rate limit), the last at 2026-11-20T10:00:03Z"
    ));

    let table = output(&by_user);
    assert!(
        table.starts_with(
            "WARNING: 753 events were not logged because users exceeded the audit rate limit"
        ),
        "{table}"
    );
    assert!(
        table.contains("\n  suppressed events  753 (not logged"),
        "{table}"
    );
    assert!(
        table.contains("\nNot logged: over the audit rate limit (per user)\n"),
        "{table}"
    );
    assert!(
        table.contains("\n1000  -        750  2026-11-20T10:00:01Z  2026-11-20T10:00:02Z\n"),
        "{table}"
    );
    let csv = output(&ReportArgs {
        format: Format::Csv,
        ..by_user.clone()
    });
    assert!(csv.starts_with("uid,user,suppressed,hits,"), "{csv}");
    assert!(csv.contains("\n1000,,750,0,0,0,0,,,\n"), "{csv}");
    // By path, nothing of them appears as a directory.
    let r = json_of(&args(vec![log]));
    assert_eq!(r["groups"]["total"], 1);
    assert_eq!(r["groups"]["rows"][0]["hits"], 1);
}

/// The report checks `v`: a line of a newer schema is skipped and said, not misread.
#[test]
fn newer_schema_versions_are_skipped_and_said() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = ev("2026-11-20T10:00:00Z", "open", "/l/a", "sh", 1, "ok");
    let mut no_v = good.clone();
    no_v.as_object_mut().map(|o| o.remove("v"));
    let events = vec![
        good.clone(),
        with(good.clone(), "v", json!(2)),
        // A newer schema that changed a field this report reads.
        with(with(good.clone(), "v", json!(3)), "uid", json!("alice")),
        with(good.clone(), "v", json!(0)),
        with(good.clone(), "v", json!("1")),
        no_v,
    ];
    let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
    let r = json_of(&args(vec![log.clone()]));
    assert_eq!(r["totals"]["events"], 2);
    assert_eq!(r["totals"]["newer_version_lines"], 2);
    assert_eq!(r["totals"]["malformed_lines"], 2);
    assert_eq!(r["totals"]["files"][0]["newer_version"], 2);
    let table = output(&args(vec![log]));
    assert!(
        table.starts_with(
            "WARNING: 2 lines of a newer audit schema than this relocfs reads (v > 1) skipped"
        ),
        "{table}"
    );
    assert!(
        table.contains("\n  newer schema     2 lines skipped\n"),
        "{table}"
    );
}

#[test]
fn since_until_absolute_are_half_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = vec![
        ev("2026-10-31T23:59:59.999999Z", "open", "/l/a", "sh", 1, "ok"),
        ev("2026-11-01T00:00:00Z", "open", "/l/a", "sh", 1, "ok"),
        with(
            ev("2026-11-15T12:00:00Z", "open", "/l/b", "sh", 1, "ok"),
            "count",
            json!(4),
        ),
        ev("2026-11-20T00:00:00Z", "open", "/l/c", "sh", 1, "ok"),
        dropped("2026-10-01T00:00:00Z", 9),
        dropped("2026-11-10T00:00:00Z", 2),
    ];
    let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
    for since in [
        "2026-11-01",
        "2026-11-01T01:00:00+01:00",
        "2026-11-01t00:00:00z",
    ] {
        let a = ReportArgs {
            since: Some(since.into()),
            until: Some("2026-11-20T00:00:00Z".into()),
            ..args(vec![log.clone()])
        };
        let r = json_of(&a);
        assert_eq!(r["totals"]["events"], 5, "{since}");
        assert_eq!(r["totals"]["outside_window"], 2, "{since}");
        assert_eq!(r["totals"]["lost_events"], 2, "{since}");
        assert_eq!(r["totals"]["since"], "2026-11-01T00:00:00.000000Z");
        assert_eq!(r["totals"]["until"], "2026-11-20T00:00:00.000000Z");
        assert_eq!(r["totals"]["first_seen"], "2026-11-01T00:00:00.000000Z");
        assert_eq!(r["totals"]["last_seen"], "2026-11-15T12:00:00.000000Z");
    }
}

#[test]
fn since_until_relative_to_now() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = vec![
        ev("2026-11-20T11:59:59Z", "open", "/l/a", "sh", 1, "ok"),
        ev("2026-11-20T12:00:00Z", "open", "/l/a", "sh", 1, "ok"),
        ev("2026-11-27T01:00:00Z", "open", "/l/b", "sh", 1, "ok"),
        ev("2026-11-27T11:30:00Z", "open", "/l/c", "sh", 1, "ok"),
    ];
    let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
    let count = |since: Option<&str>, until: Option<&str>| {
        let r = json_of(&ReportArgs {
            since: since.map(Into::into),
            until: until.map(Into::into),
            ..args(vec![log.clone()])
        });
        (r["totals"]["events"].as_u64(), r["totals"]["since"].clone())
    };
    assert_eq!(
        count(Some("7d"), None),
        (Some(3), json!("2026-11-20T12:00:00.000000Z"))
    );
    assert_eq!(count(Some("1w"), None).0, Some(3));
    assert_eq!(
        count(Some("12h"), None),
        (Some(2), json!("2026-11-27T00:00:00.000000Z"))
    );
    assert_eq!(count(Some("45m"), None).0, Some(1));
    assert_eq!(count(Some("1800s"), None).0, Some(1));
    assert_eq!(count(Some("7d"), Some("1h")).0, Some(2));
}

#[test]
fn by_process_user_and_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = vec![
        with(
            with(
                ev(
                    "2026-11-20T10:00:00Z",
                    "open",
                    "/l/app/a",
                    "python3",
                    998,
                    "ok",
                ),
                "exe",
                json!("/usr/bin/python3.11"),
            ),
            "map",
            json!("/l/app"),
        ),
        with(
            with(
                ev(
                    "2026-11-20T11:00:00Z",
                    "open",
                    "/l/app/b",
                    "python3",
                    998,
                    "ok",
                ),
                "exe",
                json!("/usr/bin/python3.11"),
            ),
            "map",
            json!("/l/app"),
        ),
        with(
            with(
                ev(
                    "2026-11-20T12:00:00Z",
                    "open",
                    "/l/app/a",
                    "python3",
                    0,
                    "ok",
                ),
                "exe",
                json!("/opt/py/bin/python3"),
            ),
            "map",
            json!("/l/app"),
        ),
        with(
            ev("2026-11-20T13:00:00Z", "open", "/l/keys/k", "bash", 0, "ok"),
            "count",
            json!(3),
        ),
    ];
    let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
    let by = |by| {
        json_of(&ReportArgs {
            by,
            ..args(vec![log.clone()])
        })["groups"]
            .clone()
    };

    let g = by(GroupBy::Process);
    assert_eq!(g["by"], "process");
    assert_eq!(g["total"], 3);
    assert_eq!(
        g["rows"][0],
        json!({"key": "bash", "comm": "bash", "exe": null, "hits": 3,
        "processes": 1, "users": 1, "paths": 1,
        "first_seen": "2026-11-20T13:00:00.000000Z", "last_seen": "2026-11-20T13:00:00.000000Z",
        "escaped": [], "truncated": [], "summarised": false})
    );
    assert_eq!(g["rows"][1]["key"], "python3 (/usr/bin/python3.11)");
    assert_eq!(g["rows"][1]["hits"], 2);
    assert_eq!(g["rows"][1]["paths"], 2);
    assert_eq!(g["rows"][2]["exe"], "/opt/py/bin/python3");
    assert_eq!(g["rows"][2]["hits"], 1);

    let g = by(GroupBy::User);
    assert_eq!(g["total"], 2);
    assert_eq!(g["rows"][0]["uid"], 0);
    assert_eq!(g["rows"][0]["key"], "0");
    assert_eq!(g["rows"][0]["hits"], 4);
    assert_eq!(g["rows"][0]["processes"], 2);
    assert_eq!(g["rows"][0]["paths"], 2);
    assert_eq!(g["rows"][1]["uid"], 998);
    assert_eq!(g["rows"][1]["hits"], 2);

    let g = by(GroupBy::Rule);
    assert_eq!(g["total"], 2);
    assert_eq!(g["rows"][0]["rule"], Value::Null);
    assert_eq!(g["rows"][0]["key"], "(no rule)");
    assert_eq!(g["rows"][0]["hits"], 3);
    assert_eq!(g["rows"][1]["rule"], "/l/app");
    assert_eq!(g["rows"][1]["hits"], 3);
    assert_eq!(g["rows"][1]["users"], 2);
}

#[test]
fn by_path_uses_the_parent_directory_except_for_opendir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = vec![
        ev(
            "2026-11-20T10:00:00Z",
            "open",
            "/l/app/conf/x.yml",
            "sh",
            1,
            "ok",
        ),
        ev(
            "2026-11-20T10:00:01Z",
            "opendir",
            "/l/app/conf",
            "sh",
            1,
            "ok",
        ),
        ev(
            "2026-11-20T10:00:02Z",
            "lookup",
            "/l/app/conf",
            "sh",
            1,
            "ok",
        ),
        ev("2026-11-20T10:00:03Z", "opendir", "/l/", "sh", 1, "ok"),
        ev("2026-11-20T10:00:04Z", "lookup", "/top", "sh", 1, "ok"),
    ];
    let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
    let g = json_of(&args(vec![log]))["groups"].clone();
    let rows: Vec<(String, u64)> = g["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["directory"].as_str().unwrap_or("").to_owned(),
                r["hits"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("/l/app/conf".to_owned(), 2),
            ("/".to_owned(), 1),
            ("/l".to_owned(), 1),
            ("/l/app".to_owned(), 1)
        ]
    );
}

#[test]
fn json_field_names_are_stable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = write(dir.path(), "audit.log", jsonl(&basic_events()).as_bytes());
    let r = json_of(&args(vec![log]));
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k.join(",")
    };
    assert_eq!(
        keys(&r),
        "denials,groups,misses,processes,suppressed,totals,verdict"
    );
    assert_eq!(
        keys(&r["totals"]),
        "events,files,files_read,first_seen,hosts,last_seen,lost_events,lower_bounds,\
         malformed_lines,max_memory,newer_version_lines,now,outside_window,overlong_lines,\
         since,summarised_events,suppressed_events,truncated_events,until"
    );
    assert_eq!(
        keys(&r["totals"]["files"][0]),
        "error,gzip,lines,malformed,newer_version,overlong,path"
    );
    assert_eq!(keys(&r["groups"]), "by,rows,total");
    const MARKS: &str = "escaped,";
    assert_eq!(
        keys(&r["groups"]["rows"][0]),
        format!("directory,{MARKS}first_seen,hits,key,last_seen,paths,processes,summarised,truncated,users")
    );
    assert_eq!(
        keys(&r["processes"]["rows"][0]),
        format!("comm,container,{MARKS}exe,first_seen,hits,host,last_seen,paths,summarised,truncated,uid,unit,user,user_unit")
    );
    assert_eq!(
        keys(&r["misses"]["rows"][0]),
        format!("{MARKS}first_seen,hits,hosts,last_seen,path,processes,summarised,truncated")
    );
    assert_eq!(
        keys(&r["misses"]["rows"][0]["processes"][0]),
        "comm,escaped,hits,summarised,truncated"
    );
    assert_eq!(
        keys(&r["denials"]["rows"][0]),
        format!(
            "{MARKS}first_seen,hits,hosts,last_seen,op,path,processes,result,summarised,truncated"
        )
    );
    assert_eq!(keys(&r["suppressed"]), "rows,total");
    assert_eq!(keys(&r["verdict"]), "last_access,text");
    assert_eq!(
        keys(&r["verdict"]["last_access"]),
        "ago_seconds,comm,container,escaped,exe,host,op,path,result,summarised,truncated,ts,uid,\
         unit,user,user_unit"
    );
}

#[test]
fn csv_has_a_header_and_the_grouping_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = vec![
        with(
            ev(
                "2026-11-20T10:00:00Z",
                "open",
                "/l/a,b \"c\"/f",
                "sh",
                1,
                "ok",
            ),
            "count",
            json!(2),
        ),
        with(
            ev("2026-11-20T11:00:00Z", "open", "/l/d/f", "py,thon", 2, "ok"),
            "exe",
            json!("/x"),
        ),
    ];
    let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
    let csv = |by| {
        output(&ReportArgs {
            by,
            format: Format::Csv,
            ..args(vec![log.clone()])
        })
    };
    assert_eq!(
        csv(GroupBy::Path),
        "directory,hits,processes,users,paths,first_seen,last_seen,notes\n\
         \"/l/a,b \"\"c\"\"\",2,1,1,1,2026-11-20T10:00:00.000000Z,2026-11-20T10:00:00.000000Z,\n\
         /l/d,1,1,1,1,2026-11-20T11:00:00.000000Z,2026-11-20T11:00:00.000000Z,\n"
    );
    assert_eq!(
        csv(GroupBy::Process),
        "comm,exe,hits,processes,users,paths,first_seen,last_seen,notes\n\
         sh,,2,1,1,1,2026-11-20T10:00:00.000000Z,2026-11-20T10:00:00.000000Z,\n\
         \"py,thon\",/x,1,1,1,1,2026-11-20T11:00:00.000000Z,2026-11-20T11:00:00.000000Z,\n"
    );
    assert_eq!(
        csv(GroupBy::User).lines().collect::<Vec<_>>(),
        [
            "uid,user,suppressed,hits,processes,users,paths,first_seen,last_seen,notes",
            "1,,0,2,1,1,1,2026-11-20T10:00:00.000000Z,2026-11-20T10:00:00.000000Z,",
            "2,,0,1,1,1,1,2026-11-20T11:00:00.000000Z,2026-11-20T11:00:00.000000Z,",
        ]
    );
    assert_eq!(
        csv(GroupBy::Rule).lines().collect::<Vec<_>>(),
        [
            "rule,hits,processes,users,paths,first_seen,last_seen,notes",
            ",3,2,2,2,2026-11-20T10:00:00.000000Z,2026-11-20T11:00:00.000000Z,",
        ]
    );
}

#[test]
fn limit_caps_rows_per_section() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events: Vec<Value> = (0..5u64)
        .map(|i| {
            let e = ev(
                "2026-11-20T10:00:00Z",
                "lookup",
                &format!("/l/d{i}/gone"),
                &format!("p{i}"),
                1,
                "ENOENT",
            );
            with(e, "count", json!(i + 1))
        })
        .collect();
    let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
    let r = json_of(&ReportArgs {
        limit: 2,
        ..args(vec![log.clone()])
    });
    for section in ["groups", "processes", "misses"] {
        assert_eq!(r[section]["total"], 5, "{section}");
        assert_eq!(
            r[section]["rows"].as_array().map(Vec::len),
            Some(2),
            "{section}"
        );
    }
    assert_eq!(r["misses"]["rows"][0]["path"], "/l/d4/gone");
    assert_eq!(r["misses"]["rows"][0]["hits"], 5);
    assert_eq!(r["misses"]["rows"][1]["hits"], 4);
    let table = output(&ReportArgs {
        limit: 2,
        ..args(vec![log.clone()])
    });
    assert!(
        table.contains("\nMisses (ENOENT): what the migration missed (2 of 5)\n"),
        "{table}"
    );
    let all = json_of(&ReportArgs {
        limit: 0,
        ..args(vec![log])
    });
    assert_eq!(all["misses"]["rows"].as_array().map(Vec::len), Some(5));
}

#[test]
fn denials_and_misses_sum_counts_per_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = vec![
        with(
            ev("2026-11-20T10:00:00Z", "create", "/l/new", "a", 1, "EROFS"),
            "count",
            json!(4),
        ),
        ev("2026-11-20T10:00:01Z", "create", "/l/new", "b", 1, "EROFS"),
        ev("2026-11-20T10:00:02Z", "unlink", "/l/new", "a", 1, "EROFS"),
        ev("2026-11-20T10:00:03Z", "open", "/l/secret", "c", 1, "EPERM"),
        ev(
            "2026-11-20T10:00:04Z",
            "open",
            "/l/secret",
            "c",
            1,
            "ENOTDIR",
        ),
        with(
            ev(
                "2026-11-20T10:00:05Z",
                "lookup",
                "/l/gone",
                "b",
                1,
                "ENOENT",
            ),
            "count",
            json!(3),
        ),
        ev("2026-11-20T10:00:06Z", "open", "/l/gone", "a", 1, "ENOENT"),
    ];
    let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
    let r = json_of(&args(vec![log]));
    assert_eq!(r["denials"]["total"], 3);
    let d = &r["denials"]["rows"];
    assert_eq!(
        (d[0]["op"].as_str(), d[0]["hits"].as_u64()),
        (Some("create"), Some(5))
    );
    assert_eq!(
        d[0]["processes"],
        json!([{"comm": "a", "hits": 4, "escaped": [], "truncated": [], "summarised": false}, {"comm": "b", "hits": 1, "escaped": [], "truncated": [], "summarised": false}])
    );
    assert_eq!(
        (d[1]["path"].as_str(), d[1]["result"].as_str()),
        (Some("/l/new"), Some("EROFS"))
    );
    assert_eq!(
        (d[1]["op"].as_str(), d[1]["hits"].as_u64()),
        (Some("unlink"), Some(1))
    );
    assert_eq!(
        (d[2]["result"].as_str(), d[2]["hits"].as_u64()),
        (Some("EPERM"), Some(1))
    );
    assert_eq!(r["misses"]["total"], 1);
    assert_eq!(r["misses"]["rows"][0]["hits"], 4);
    assert_eq!(
        r["misses"]["rows"][0]["processes"],
        json!([{"comm": "b", "hits": 3, "escaped": [], "truncated": [], "summarised": false}, {"comm": "a", "hits": 1, "escaped": [], "truncated": [], "summarised": false}])
    );
    assert_eq!(r["totals"]["events"], 12);
}

#[test]
fn verdict_phrases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let verdict = |events: &[Value], since: Option<&str>, until: Option<&str>| {
        let log = write(dir.path(), "v.log", jsonl(events).as_bytes());
        let a = ReportArgs {
            since: since.map(Into::into),
            until: until.map(Into::into),
            ..args(vec![log])
        };
        json_of(&a)["verdict"]["text"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let at = |ts: &str| vec![ev(ts, "open", "/l/x", "python3", 998, "ok")];
    assert_eq!(
        verdict(&at("2026-11-24T11:59:59Z"), None, None),
        "last access 3 days ago by python3 (uid 998) to /l/x at 2026-11-24T11:59:59Z"
    );
    assert_eq!(
        verdict(&at("2026-11-26T12:00:00Z"), None, None),
        "last access 1 day ago by python3 (uid 998) to /l/x at 2026-11-26T12:00:00Z"
    );
    assert!(
        verdict(&at("2026-11-27T07:00:00Z"), None, None).starts_with("last access 5 hours ago ")
    );
    assert!(
        verdict(&at("2026-11-27T11:59:00Z"), None, None).starts_with("last access 1 minute ago ")
    );
    assert!(
        verdict(&at("2026-11-27T11:59:58Z"), None, None).starts_with("last access 2 seconds ago ")
    );
    assert!(verdict(&at("2026-11-27T12:10:00Z"), None, None)
        .starts_with("last access 10 minutes in the future "));
    let exe = vec![with(
        ev("2026-11-27T11:00:00Z", "open", "/l/x", "python3", 998, "ok"),
        "exe",
        json!("/usr/bin/python3"),
    )];
    assert_eq!(
        verdict(&exe, None, None),
        "last access 1 hour ago by python3 [/usr/bin/python3] (uid 998) to /l/x at 2026-11-27T11:00:00Z"
    );
    let old = at("2026-11-01T00:00:00Z");
    assert_eq!(
        verdict(&old, Some("2026-11-20"), None),
        "no access since 2026-11-20T00:00:00Z"
    );
    assert_eq!(
        verdict(&old, Some("3d"), None),
        "no access since 2026-11-24T12:00:00Z"
    );
    assert_eq!(
        verdict(&old, None, Some("2026-10-01")),
        "no access before 2026-10-01T00:00:00Z"
    );
    assert_eq!(
        verdict(&old, Some("2026-10-01"), Some("2026-10-31")),
        "no access between 2026-10-01T00:00:00Z and 2026-10-31T00:00:00Z"
    );
    assert_eq!(verdict(&[], None, None), "no access recorded in these logs");
    assert_eq!(
        verdict(&[dropped("2026-11-25T00:00:00Z", 1)], Some("7d"), None),
        "no access since 2026-11-20T12:00:00Z; but 1 event was lost, so later accesses may be missing"
    );
}

#[test]
fn lost_events_sum_over_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = write(
        dir.path(),
        "a",
        jsonl(&[
            dropped("2026-11-20T00:00:00Z", 5),
            dropped("2026-11-21T00:00:00Z", 6),
        ])
        .as_bytes(),
    );
    let b = write(
        dir.path(),
        "b",
        &gzip(jsonl(&[dropped("2026-11-22T00:00:00Z", 30)]).as_bytes()),
    );
    let r = json_of(&args(vec![a.clone(), b.clone()]));
    assert_eq!(r["totals"]["lost_events"], 41);
    assert_eq!(r["totals"]["events"], 0);
    assert_eq!(r["totals"]["first_seen"], Value::Null);
    let table = output(&args(vec![a, b]));
    assert!(
        table.starts_with("WARNING: 41 audit events were lost"),
        "{table}"
    );
    assert!(table.contains("\n  lost events      41\n"), "{table}");
}

#[test]
fn table_escapes_terminal_control_characters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = ev(
        "2026-11-20T10:00:00Z",
        "open",
        "/l/\u{1b}[2Jx\u{202e}y",
        "ev\u{7}il",
        1,
        "ok",
    );
    let log = write(dir.path(), "audit.log", jsonl(&[e]).as_bytes());
    let table = output(&args(vec![log.clone()]));
    assert!(!table.contains('\u{1b}') && !table.contains('\u{7}') && !table.contains('\u{202e}'));
    assert!(table.contains("ev\\u{7}il"), "{table}");
    assert!(table.contains("/l/\\u{1b}[2Jx\\u{202e}y"), "{table}");
    // JSON keeps the exact value (it escapes on its own).
    assert_eq!(
        json_of(&args(vec![log]))["processes"]["rows"][0]["comm"],
        "ev\u{7}il"
    );
}

/// DEL, C1 (U+009B is CSI for some terminals) and bidi marks reach no output raw, a
/// backslash in a name is shown doubled (so a name that reads `\u{1b}` is not taken for
/// an ESC), and CSV cells that a spreadsheet would run as a formula are neutralised.
#[test]
fn no_output_format_passes_controls_or_formulas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nasty = [
        "=cmd|' /C calc'!A0",
        "+1+2",
        "-2+3",
        "@SUM(A1)",
        "\tTAB",
        "\rCR",
        "d\u{7f}e\u{9b}2Jl",
        "x\u{2067}y",
        "lit\\u{1b}",
    ];
    let events: Vec<Value> = nasty
        .iter()
        .enumerate()
        .map(|(i, comm)| {
            ev(
                "2026-11-20T10:00:00Z",
                "lookup",
                &format!("/l/{comm}/{i}"),
                comm,
                1,
                "ENOENT",
            )
        })
        .collect();
    let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
    let raw = |format, by| {
        let mut out = Vec::new();
        let a = ReportArgs {
            format,
            by,
            limit: 0,
            ..args(vec![log.clone()])
        };
        run(&a, &mut out).expect("report");
        String::from_utf8(out).expect("utf-8")
    };
    let bad = |c: char| c != '\n' && unsafe_char(c);
    for format in [Format::Table, Format::Csv, Format::Json] {
        for by in [GroupBy::Path, GroupBy::Process] {
            let text = raw(format, by);
            assert!(!text.contains(bad), "{format:?} {by:?}: {text:?}");
        }
    }
    let csv = raw(Format::Csv, GroupBy::Process);
    for line in csv.lines().skip(1) {
        let first = line.trim_start_matches('"');
        assert!(!first.starts_with(['=', '+', '-', '@']), "{line}");
    }
    assert!(csv.contains("\n'=cmd|' /C calc'!A0,,"), "{csv}");
    assert!(csv.contains("\n'\\u{9}TAB,,"), "{csv}");
    assert!(csv.contains("\nd\\u{7f}e\\u{9b}2Jl,,"), "{csv}");
    assert!(csv.contains("\nlit\\\\u{1b},,"), "{csv}");
    let table = raw(Format::Table, GroupBy::Process);
    assert!(table.contains("\nlit\\\\u{1b} "), "{table}");
    assert!(table.contains("\nx\\u{2067}y "), "{table}");
    // JSON: escaped, and the parsed values are exactly the logged ones.
    let json = raw(Format::Json, GroupBy::Process);
    assert!(json.contains(r#""d\u007fe\u009b2Jl""#), "{json}");
    let v: Value = serde_json::from_str(&json).expect("json");
    let comms: HashSet<&str> = v["processes"]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["comm"].as_str())
        .collect();
    assert_eq!(comms, nasty.iter().copied().collect());
}

#[test]
fn errors_name_the_file_or_the_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.log");
    let err = run(&args(vec![missing.clone()]), &mut Vec::new()).expect_err("missing file");
    assert!(
        err.starts_with(&format!("cannot read audit log {}: ", missing.display())),
        "{err}"
    );
    assert!(!err.contains('\n'));
    let err = run(&args(vec![dir.path().to_path_buf()]), &mut Vec::new()).expect_err("dir");
    assert!(err.starts_with("cannot read audit log "), "{err}");
    let log = write(dir.path(), "audit.log", b"");
    let bad = |since: &str, until: Option<&str>| {
        let a = ReportArgs {
            since: Some(since.into()),
            until: until.map(Into::into),
            ..args(vec![log.clone()])
        };
        run(&a, &mut Vec::new()).expect_err("bad window")
    };
    assert!(bad("last tuesday", None).starts_with("invalid --since 'last tuesday': expected "));
    assert!(bad("2026-02-30", None).starts_with("invalid --since"));
    assert!(bad("7x", None).starts_with("invalid --since"));
    assert_eq!(
        bad("2026-11-02", Some("2026-11-01")),
        "--since (2026-11-02T00:00:00Z) is not before --until (2026-11-01T00:00:00Z)"
    );
    assert_eq!(
        run(&args(Vec::new()), &mut Vec::new()),
        Err("no audit log given".to_owned())
    );
}

#[test]
fn broken_pipe_is_not_an_error() {
    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let log = write(dir.path(), "audit.log", jsonl(&basic_events()).as_bytes());
    assert_eq!(run(&args(vec![log]), &mut Closed), Ok(()));
}

#[test]
fn rfc3339_parsing() {
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Some(1_500_000));
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00.1234569Z"), Some(123_456));
    assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
    assert_eq!(parse_rfc3339("1969-12-31T19:00:00-05:00"), Some(0));
    assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1_000_000));
    assert_eq!(
        parse_rfc3339("2016-12-31T23:59:60Z"),
        parse_rfc3339("2016-12-31T23:59:59Z")
    );
    assert_eq!(
        parse_rfc3339("2024-02-29 00:00:00Z"),
        Some(19_782 * 86_400 * 1_000_000)
    );
    for bad in [
        "2023-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-11-27T24:00:00Z",
        "2026-11-27T21:56:23",
        "2026-11-27T21:56:23.Z",
        "2026-11-27T21:56:23Zx",
        "2026-11-27T21:56:23+0100",
        "2026-11-27",
        "",
        "2026-11-27T21:5é:23Z",
    ] {
        assert_eq!(parse_rfc3339(bad), None, "{bad}");
    }
    // Round trip with the writer's formatter, across eras and the epoch.
    for micros in [
        0,
        1,
        -1,
        1_795_000_000_123_456,
        -62_135_596_800_000_000,
        253_402_300_799_999_999,
    ] {
        assert_eq!(parse_rfc3339(&fmt_ts(micros)), Some(micros), "{micros}");
    }
}

#[test]
fn huge_counts_saturate_instead_of_overflowing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = ev("2026-11-20T10:00:00Z", "open", "/l/gone", "sh", 1, "ENOENT");
    let e = with(e, "count", json!(u64::MAX));
    let log = write(dir.path(), "audit.log", jsonl(&[e.clone(), e]).as_bytes());
    let r = json_of(&args(vec![log]));
    assert_eq!(r["totals"]["events"], u64::MAX);
    assert_eq!(r["misses"]["rows"][0]["hits"], u64::MAX);
    assert_eq!(r["misses"]["rows"][0]["processes"][0]["hits"], u64::MAX);
}

#[test]
fn sizes_and_the_fair_level() {
    assert_eq!(parse_size("512M"), Ok(512 << 20));
    assert_eq!(parse_size("2g"), Ok(2 << 30));
    assert_eq!(parse_size("64KiB"), Ok(64 << 10));
    assert_eq!(parse_size("1000"), Ok(1000));
    assert_eq!(parse_size("0"), Ok(0));
    for bad in ["", "M", "1.5G", "-1M", "12X", "99999999999T"] {
        assert!(parse_size(bad).is_err(), "{bad}");
    }
    assert_eq!(fmt_size(512 << 20), "512M");
    assert_eq!(fmt_size(1000), "1000");
    // Users with 1, 5 and 100 tuples, 30 allowed: each keeps up to 24 (1 + 5 + 24).
    assert_eq!(water_level(&mut [100, 1, 5], 30), 24);
    assert_eq!(water_level(&mut [100, 1, 5], 106), usize::MAX);
    assert_eq!(water_level(&mut [100, 1, 5], 2), 0);
    assert_eq!(water_level(&mut [], 2), usize::MAX);
}

#[test]
fn durations_read_like_english() {
    let s = MICROS_PER_SEC;
    assert_eq!(human_duration(0), "0 seconds");
    assert_eq!(human_duration(s), "1 second");
    assert_eq!(human_duration(59 * s), "59 seconds");
    assert_eq!(human_duration(60 * s), "1 minute");
    assert_eq!(human_duration(3599 * s), "59 minutes");
    assert_eq!(human_duration(3600 * s), "1 hour");
    assert_eq!(human_duration(86_399 * s), "23 hours");
    assert_eq!(human_duration(86_400 * s), "1 day");
    assert_eq!(human_duration(400 * 86_400 * s), "400 days");
}

mod fuzz;

/// Lines of two hosts and several services, and one old line with none of the new fields.
fn service_events() -> Vec<Value> {
    let id = "ab".repeat(32);
    vec![
        json!({"v": 1, "ts": "2026-11-20T10:00:00Z", "host": "web-01", "op": "open",
               "path": "/l/keys/a", "pid": 11, "tgid": 10, "uid": 998, "gid": 998,
               "comm": "python3", "unit": "jumpserver.service", "result": "ok", "count": 4}),
        json!({"v": 1, "ts": "2026-11-20T10:00:01Z", "host": "web-02", "op": "open",
               "path": "/l/keys/a", "pid": 21, "tgid": 21, "uid": 998, "gid": 998,
               "comm": "python3", "unit": "jumpserver.service", "result": "ok"}),
        json!({"v": 1, "ts": "2026-11-20T10:00:02Z", "host": "web-01", "op": "lookup",
               "path": "/l/x", "pid": 31, "tgid": 31, "uid": 1000, "gid": 1000,
               "comm": "bash", "unit": "user@1000.service", "user_unit": "app.slice",
               "result": "ENOENT"}),
        json!({"v": 1, "ts": "2026-11-20T10:00:03Z", "host": "web-01", "op": "lookup",
               "path": "/l/y", "pid": 32, "tgid": 32, "uid": 1000, "gid": 1000,
               "comm": "bash", "unit": "user@1000.service", "user_unit": "foo.service",
               "result": "ENOENT", "count": 2}),
        json!({"v": 1, "ts": "2026-11-20T10:00:04Z", "host": "web-02", "op": "open",
               "path": "/l/keys/b", "pid": 41, "tgid": 41, "uid": 0, "gid": 0,
               "comm": "nginx", "unit": format!("docker-{id}.scope"), "container": id,
               "result": "ok"}),
        // From a relocfs that wrote none of them.
        json!({"v": 1, "ts": "2026-11-20T10:00:05Z", "op": "open", "path": "/l/keys/c",
               "pid": 51, "uid": 0, "gid": 0, "comm": "cron", "result": "ok"}),
    ]
}

#[test]
fn by_unit_and_by_host_with_old_lines_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = write(dir.path(), "audit.log", jsonl(&service_events()).as_bytes());
    let by = |by: GroupBy| {
        json_of(&ReportArgs {
            by,
            ..args(vec![log.clone()])
        })
    };
    let r = by(GroupBy::Unit);
    assert_eq!(r["totals"]["events"], 10);
    assert_eq!(r["totals"]["malformed_lines"], 0);
    assert_eq!(r["totals"]["hosts"], 2);
    let g = &r["groups"];
    assert_eq!(g["by"], "unit");
    let rows: Vec<(String, u64)> = g["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap_or("?").to_owned(),
                r["hits"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let short = "ab".repeat(6);
    assert_eq!(
        rows,
        [
            ("jumpserver.service".to_owned(), 5),
            ("user@1000.service/foo.service".to_owned(), 2),
            ("(no unit)".to_owned(), 1),
            (format!("docker-{short}….scope"), 1),
            ("user@1000.service/app.slice".to_owned(), 1),
        ]
    );
    assert_eq!(g["rows"][0]["unit"], "jumpserver.service");
    assert_eq!(g["rows"][0]["user_unit"], Value::Null);
    assert_eq!(g["rows"][0]["users"], 1);
    assert_eq!(g["rows"][1]["user_unit"], "foo.service");
    assert_eq!(g["rows"][2]["unit"], Value::Null);
    assert_eq!(g["rows"][3]["container"], "ab".repeat(32));

    let r = by(GroupBy::Host);
    let hosts: Vec<(&str, u64)> = r["groups"]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap_or("?"),
                r["hits"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(hosts, [("web-01", 7), ("web-02", 2), ("(no host)", 1)]);
    assert_eq!(r["groups"]["rows"][0]["host"], "web-01");
    // The process section tells the hosts and the units apart.
    let procs = r["processes"]["rows"].as_array().expect("rows");
    let python: Vec<(&str, u64)> = procs
        .iter()
        .filter(|p| p["comm"] == "python3")
        .map(|p| {
            (
                p["host"].as_str().unwrap_or("?"),
                p["hits"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(python, [("web-01", 4), ("web-02", 1)]);
    assert!(procs
        .iter()
        .all(|p| p["comm"] != "python3" || p["unit"] == "jumpserver.service"));
    assert_eq!(
        r["verdict"]["text"],
        "last access 7 days ago by cron (uid 0) to /l/keys/c at 2026-11-20T10:00:05Z"
    );

    // The table: a UNIT column, and a HOST column because there are two hosts.
    let table = output(&ReportArgs {
        by: GroupBy::Unit,
        ..args(vec![log.clone()])
    });
    assert!(
        table.contains("\nTop services (systemd unit, container)\nUNIT "),
        "{table}"
    );
    let row = |start: &str, has: &[&str]| {
        table
            .lines()
            .any(|l| l.starts_with(start) && has.iter().all(|h| l.contains(h)))
    };
    assert!(
        row(
            &format!("docker-{short}….scope "),
            &[&format!("  {short}  ")]
        ),
        "{table}"
    );
    assert!(
        row("COMM  ", &["  EXE  ", "  UID  USER  UNIT  ", "  HOST  "]),
        "{table}"
    );
    assert!(
        row(
            "python3  ",
            &["  998  -  ", "  jumpserver.service  ", "  web-01  "]
        ),
        "{table}"
    );
    assert!(
        row("nginx  ", &[&format!("  docker-{short}….scope  ")]),
        "{table}"
    );
    // Misses say on which hosts, in JSON always, in the table with more than one host.
    assert!(row("PATH  ", &["  PROCESSES  HOSTS"]), "{table}");
    assert!(row("/l/y  ", &["  bash (2) ", "  web-01 (2)"]), "{table}");
    let r = by(GroupBy::Path);
    assert_eq!(
        r["misses"]["rows"][0]["hosts"],
        json!([{"host": "web-01", "hits": 2, "escaped": [], "truncated": [], "summarised": false}])
    );
    // CSV of each.
    let csv = |by: GroupBy| {
        output(&ReportArgs {
            by,
            format: Format::Csv,
            ..args(vec![log.clone()])
        })
    };
    let units = csv(GroupBy::Unit);
    assert!(
        units.starts_with("unit,user_unit,container,hits,processes,users,paths,"),
        "{units}"
    );
    assert!(
        units.contains("\nuser@1000.service,foo.service,,2,1,1,1,"),
        "{units}"
    );
    assert!(units.contains("\n,,,1,1,1,1,"), "{units}");
    let hosts = csv(GroupBy::Host);
    assert!(hosts.starts_with("host,hits,"), "{hosts}");
    assert!(hosts.contains("\nweb-01,7,"), "{hosts}");

    // One host: no HOST column; the verdict names the unit.
    let one: Vec<Value> = service_events()
        .into_iter()
        .filter(|e| e["host"] == "web-01")
        .collect();
    let log1 = write(dir.path(), "one.log", jsonl(&one).as_bytes());
    let table = output(&args(vec![log1]));
    assert!(!table.contains("HOST"), "{table}");
    assert!(
        table.contains("by bash (uid 1000) in user@1000.service/foo.service to /l/y"),
        "{table}"
    );
}

/// Wherever a uid is shown, the name this machine's user database gives it, uid kept; uid
/// 0 is root everywhere, 4294967294 nobody's.
#[test]
fn uids_are_named_from_the_user_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = [
        json!({"v": 1, "ts": "2026-11-20T10:00:00Z", "op": "open", "path": "/l/a",
               "pid": 1, "uid": 0, "gid": 0, "comm": "sh", "result": "ok"}),
        json!({"v": 1, "ts": "2026-11-20T10:00:01Z", "op": "open", "path": "/l/b",
               "pid": 2, "uid": 4_294_967_294u32, "gid": 0, "comm": "sh", "result": "ok"}),
        json!({"v": 1, "ts": "2026-11-20T10:00:02Z", "op": "suppressed", "uid": 0,
               "count": 3, "since": "2026-11-20T10:00:00Z"}),
    ];
    let log = write(dir.path(), "audit.log", jsonl(&events).as_bytes());
    let named = ReportArgs {
        by: GroupBy::User,
        numeric: false,
        ..args(vec![log])
    };
    let r = json_of(&named);
    let rows = r["groups"]["rows"].as_array().expect("rows");
    let root = rows.iter().find(|g| g["uid"] == 0).expect("uid 0");
    assert_eq!(
        (&root["user"], &root["key"]),
        (&json!("root"), &json!("0 (root)"))
    );
    let unknown = rows
        .iter()
        .find(|g| g["uid"] == 4_294_967_294u32)
        .expect("uid");
    assert_eq!(unknown["user"], Value::Null);
    assert_eq!(unknown["key"], "4294967294");
    let procs = r["processes"]["rows"].as_array().expect("rows");
    assert!(procs.iter().any(|p| p["uid"] == 0 && p["user"] == "root"));
    assert_eq!(r["suppressed"]["rows"][0]["user"], "root");
    assert_eq!(r["verdict"]["last_access"]["user"], Value::Null);
    let table = output(&named);
    assert!(table.contains("\n         0  root  "), "{table}");
    assert!(table.contains("(uid 4294967294)"), "{table}");
    let csv = output(&ReportArgs {
        format: Format::Csv,
        ..named.clone()
    });
    assert!(csv.contains("\n0,root,3,1,"), "{csv}");
    // --numeric: no lookups at all.
    let r = json_of(&ReportArgs {
        numeric: true,
        ..named
    });
    assert!(r["groups"]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .all(|g| g["user"].is_null()));
}
