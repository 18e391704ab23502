//! Fuzzing the line parser (proptest, a bounded number of cases so it runs in CI in
//! seconds): arbitrary bytes, arbitrary JSON values, event-shaped objects with arbitrary
//! field values, and mutations of real lines. Whatever the input: no panic, every
//! non-blank line is accepted, malformed or newer (never lost), summarising under a tiny
//! memory cap changes no total, every format renders without a control character.

use super::*;
use proptest::collection::{hash_map, vec};
use proptest::prelude::*;

/// Lines of every kind the daemon writes.
const REAL: &[&str] = &[
    r#"{"v":1,"ts":"2026-11-27T22:37:20.136344Z","op":"open","path":"/home/optdir/j/keys/id_rsa","target":"/opt/j/keys/id_rsa","map":"/","flags":"r","pid":17718,"uid":998,"gid":998,"comm":"cat","exe":"/usr/bin/cat","result":"ok"}"#,
    r#"{"v":1,"ts":"2026-11-27T22:37:21Z","op":"lookup","path":"/home/optdir/j/gone","map":"/","pid":1,"uid":0,"gid":0,"comm":"bash","result":"ENOENT","count":7}"#,
    r#"{"v":1,"ts":"2026-11-27T22:37:22Z","op":"lookup","path":"/home/optdir/j/bad\\xff\\xfe","escaped":["path","target"],"pid":1,"uid":5,"gid":5,"comm":"p\\xe9","result":"EACCES"}"#,
    r#"{"v":1,"ts":"2026-11-27T22:37:23Z","op":"open","path":"/home/optdir/j/aaaa…[9000 bytes]…zzzz","truncated":["path"],"pid":1,"uid":5,"gid":5,"comm":"sh","result":"EROFS"}"#,
    r#"{"v":1,"ts":"2026-11-27T22:37:24Z","op":"dropped","count":3}"#,
    r#"{"v":1,"ts":"2026-11-27T22:37:25Z","op":"suppressed","uid":1000,"count":500,"since":"2026-11-27T22:37:20Z"}"#,
    r#"{"v":2,"ts":"2026-11-27T22:37:26Z","op":"open","path":"/x","uid":"alice"}"#,
    r#"{"v":1,"ts":"2026-11-27T22:37:27Z","op":"rename","path":"/home/optdir/j/a","dest":"/home/optdir/j/b","pid":1,"uid":7,"gid":7,"comm":"mv","result":"ok"}"#,
];

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        prop::sample::select(vec![
            "2026-11-27T22:37:20Z",
            "9999-12-31T23:59:60.9999999-23:59",
            "0000-01-01T00:00:00Z",
            "ok",
            "ENOENT",
            "dropped",
            "suppressed",
            "path",
            "comm"
        ])
        .prop_map(|s| json!(s)),
    ];
    let key = prop_oneof![
        prop::sample::select(vec![
            "v",
            "ts",
            "op",
            "path",
            "map",
            "uid",
            "comm",
            "exe",
            "result",
            "count",
            "escaped",
            "truncated",
            "since"
        ])
        .prop_map(str::to_owned),
        "[a-z]{1,4}",
    ];
    leaf.prop_recursive(3, 48, 8, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            hash_map(key.clone(), inner, 0..10)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object with the report's fields, each valid or not.
fn arb_event() -> impl Strategy<Value = Value> {
    let field = |valid: Value| prop_oneof![3 => Just(valid), 1 => arb_json()];
    (
        field(json!(1)),
        field(json!("2026-11-27T22:37:20.5Z")),
        prop::sample::select(vec![
            "open",
            "lookup",
            "dropped",
            "suppressed",
            "opendir",
            "",
        ]),
        field(json!("/l/a/b")),
        field(json!(1000)),
        field(json!("sh")),
        field(json!("ENOENT")),
        prop_oneof![
            Just(None),
            any::<u64>().prop_map(Some),
            (0u64..3).prop_map(Some)
        ],
        field(json!(["path", "comm", "exe"])),
        field(json!(["path"])),
    )
        .prop_map(
            |(v, ts, op, path, uid, comm, result, count, escaped, truncated)| {
                let mut e = json!({"v": v, "ts": ts, "op": op, "path": path, "uid": uid,
                               "comm": comm, "result": result, "escaped": escaped,
                               "truncated": truncated});
                if let Some(c) = count {
                    e["count"] = json!(c);
                }
                e
            },
        )
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn arb_mutated_line() -> impl Strategy<Value = Vec<u8>> {
    let mutation = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Flip(p, b)),
        any::<usize>().prop_map(Mutation::Cut),
        (any::<usize>(), vec(any::<u8>(), 1..8)).prop_map(|(p, b)| Mutation::Insert(p, b)),
        (any::<usize>(), 1usize..12).prop_map(|(p, n)| Mutation::Delete(p, n)),
    ];
    (prop::sample::select(REAL), vec(mutation, 0..4)).prop_map(|(line, ms)| {
        let mut b = line.as_bytes().to_vec();
        for m in ms {
            let at = |p: usize| p % (b.len() + 1);
            match m {
                Mutation::Flip(p, x) if !b.is_empty() => {
                    let i = p % b.len();
                    b[i] ^= x;
                }
                Mutation::Flip(..) => {}
                Mutation::Cut(p) => b.truncate(at(p)),
                Mutation::Insert(p, x) => {
                    let i = at(p);
                    b.splice(i..i, x);
                }
                Mutation::Delete(p, n) => {
                    let i = at(p);
                    let j = (i + n).min(b.len());
                    b.drain(i..j);
                }
            }
        }
        b
    })
}

fn arb_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..200),
        arb_json().prop_map(|v| v.to_string().into_bytes()),
        arb_event().prop_map(|v| v.to_string().into_bytes()),
        arb_mutated_line(),
        prop::sample::select(REAL).prop_map(|l| l.as_bytes().to_vec()),
    ]
}

/// Aggregates `data` as one file, with `budget` bytes.
fn aggregate_bytes(data: &[u8], budget: usize) -> (Aggregator, LineCounts) {
    let mut agg = Aggregator::new(
        Window {
            since: None,
            until: None,
        },
        budget,
    );
    let mut counts = LineCounts::default();
    let mut line = Vec::new();
    let _ = for_each_line(&mut &data[..], &mut line, |l| agg.line(l, &mut counts));
    (agg, counts)
}

fn check(lines: &[Vec<u8>]) -> Result<(), TestCaseError> {
    let data = lines.join(&b'\n');
    let blank = lines
        .iter()
        .map(|l| {
            l.split(|&b| b == b'\n')
                .filter(|p| !p.trim_ascii().is_empty())
                .count() as u64
        })
        .sum::<u64>();
    let (full, counts) = aggregate_bytes(&data, usize::MAX);
    // Every non-blank line is accounted for, exactly once.
    prop_assert_eq!(counts.lines, blank);
    prop_assert_eq!(
        counts.lines,
        counts.accepted + counts.malformed + counts.newer
    );
    prop_assert_eq!(counts.overlong, 0);
    // A tiny cap summarises, but changes no total.
    let (small, small_counts) = aggregate_bytes(&data, 600);
    prop_assert_eq!(counts, small_counts);
    let totals = |a: &Aggregator| {
        (
            a.events,
            a.lost,
            a.outside,
            a.truncated,
            a.suppressed.values().map(|s| s.hits).sum::<u64>(),
        )
    };
    prop_assert_eq!(totals(&full), totals(&small));
    let now = ts("2026-11-27T12:00:00Z");
    for (agg, budget) in [(full, usize::MAX), (small, 600)] {
        let files = vec![FileStats {
            path: "fuzz".into(),
            gzip: false,
            lines: counts.lines,
            malformed: counts.malformed,
            overlong: counts.overlong,
            newer_version: counts.newer,
            error: None,
        }];
        let events = agg.events;
        let report = agg.into_report(GroupBy::User, files, 0, now, false);
        let proc_hits = report
            .processes
            .rows
            .iter()
            .fold(0u64, |n, r| n.saturating_add(r.hits));
        prop_assert_eq!(proc_hits, events, "budget {}", budget);
        let group_hits = report
            .groups
            .rows
            .iter()
            .fold(0u64, |n, r| n.saturating_add(r.hits));
        prop_assert_eq!(group_hits, events);
        let mut out = Vec::new();
        for write in [write_table, write_csv, write_json] {
            out.clear();
            prop_assert!(write(&report, &mut out).is_ok());
            let text = std::str::from_utf8(&out);
            prop_assert!(text.is_ok());
            let text = text.unwrap_or_default();
            prop_assert!(
                !text.contains(|c| c != '\n' && unsafe_char(c)),
                "{:?}",
                text
            );
        }
        prop_assert!(serde_json::from_slice::<Value>(&out).is_ok());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_lines_are_counted_and_never_crash(lines in vec(arb_line(), 0..24)) {
        check(&lines)?;
    }
}

/// The line parser before the field names came from `audit::schema`: serde's derive. The
/// hand-written parser is its reference model's equal on every line (names, escaped
/// names, duplicates, nulls, wrong types, the array form).
#[derive(serde::Deserialize)]
struct Derived<'a> {
    v: Option<u64>,
    #[serde(borrow)]
    ts: Option<Str<'a>>,
    #[serde(borrow)]
    op: Option<Str<'a>>,
    #[serde(borrow)]
    path: Option<Str<'a>>,
    #[serde(borrow)]
    map: Option<Str<'a>>,
    uid: Option<u32>,
    #[serde(borrow)]
    comm: Option<Str<'a>>,
    #[serde(borrow)]
    exe: Option<Str<'a>>,
    #[serde(borrow)]
    result: Option<Str<'a>>,
    count: Option<u64>,
    #[serde(borrow)]
    escaped: Option<Vec<Str<'a>>>,
    #[serde(borrow)]
    truncated: Option<Vec<Str<'a>>>,
}

#[derive(serde::Deserialize)]
struct DerivedVersion {
    v: Option<u64>,
}

type Seen = (
    Option<u64>,
    Vec<Option<String>>,
    Option<u32>,
    Option<u64>,
    Vec<Option<Vec<String>>>,
);

fn seen_of(
    v: Option<u64>,
    strs: [&Option<Str>; 7],
    uid: Option<u32>,
    count: Option<u64>,
    lists: [&Option<Vec<Str>>; 2],
) -> Seen {
    let s = |x: &Option<Str>| x.as_ref().map(|x| x.0.to_string());
    let l = |x: &Option<Vec<Str>>| {
        x.as_ref()
            .map(|x| x.iter().map(|x| x.0.to_string()).collect())
    };
    (
        v,
        strs.into_iter().map(s).collect(),
        uid,
        count,
        lists.into_iter().map(l).collect(),
    )
}

fn parse_both(line: &str) -> (Option<Seen>, Option<Seen>, Option<u64>, Option<u64>) {
    let new = serde_json::from_str::<RawEvent>(line).ok().map(|r| {
        seen_of(
            r.v,
            [&r.ts, &r.op, &r.path, &r.map, &r.comm, &r.exe, &r.result],
            r.uid,
            r.count,
            [&r.escaped, &r.truncated],
        )
    });
    let old = serde_json::from_str::<Derived>(line).ok().map(|r| {
        seen_of(
            r.v,
            [&r.ts, &r.op, &r.path, &r.map, &r.comm, &r.exe, &r.result],
            r.uid,
            r.count,
            [&r.escaped, &r.truncated],
        )
    });
    let new_v = serde_json::from_str::<VersionOnly>(line)
        .ok()
        .and_then(|r| r.v);
    let old_v = serde_json::from_str::<DerivedVersion>(line)
        .ok()
        .and_then(|r| r.v);
    (new, old, new_v, old_v)
}

#[test]
fn parser_reads_edge_cases_like_the_derive() {
    for line in [
        r#"{"v":1,"v":2}"#,
        r#"{"v":null,"v":2}"#,
        r#"{"ts":"a","ts":"b"}"#,
        r#"{"\u0070ath":"/x","op":"open"}"#,
        r#"{"path":null,"uid":5,"other":[1,{"a":2}]}"#,
        r#"{"uid":-1}"#,
        r#"{"uid":"5"}"#,
        r#"[1,"2026-11-27T22:37:24Z","open","/p",null,5,"sh",null,"ok",3,null,["path"]]"#,
        r#"[1,"2026-11-27T22:37:24Z","open"]"#,
        r#"[1,"t","o","p",null,5,"sh",null,"ok",3,null,null,"extra"]"#,
        "[5]",
        "[]",
        "{}",
        "null",
        "5",
    ]
    .iter()
    .chain(REAL)
    {
        let (new, old, new_v, old_v) = parse_both(line);
        assert_eq!(new, old, "{line}");
        assert_eq!(new_v, old_v, "{line}");
    }
    // The array form of all twelve fields still reads (serde's struct convention).
    let (new, _, _, _) = parse_both(
        r#"[1,"2026-11-27T22:37:24Z","open","/p",null,5,"sh",null,"ok",3,null,["path"]]"#,
    );
    assert!(new.is_some());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn parser_reads_any_line_like_the_derive(line in arb_line()) {
        let Ok(line) = std::str::from_utf8(&line) else { return Ok(()) };
        let (new, old, new_v, old_v) = parse_both(line);
        prop_assert_eq!(new, old, "{}", line);
        prop_assert_eq!(new_v, old_v, "{}", line);
    }
}
