//! Fuzzing the config parser (proptest): no panic, and every refusal one non-empty line.

use super::*;
use proptest::prelude::*;

const FILE: &str = "/etc/relocfs/fuzz.toml";
const EXAMPLE: &str = include_str!("../../config.example.toml");

/// What is wrong with how `text` is refused, if anything (`None` when it is accepted).
fn refusal_problem(text: &str) -> Option<String> {
    let shown = parse(text, Path::new(FILE)).err()?.to_string();
    if let Some(c) = shown.chars().find(|c| c.is_control()) {
        return Some(format!("{shown:?} holds the control character {c:?}"));
    }
    let Some(rest) = shown.strip_prefix(&format!("{FILE}:")) else {
        return Some(format!("{shown:?} does not start with the file name"));
    };
    let message = match rest.split_once(": ") {
        Some((line, message)) if line.parse::<usize>().is_ok() => {
            let line: usize = line.parse().unwrap_or(0);
            let lines = text.split('\n').count();
            if line == 0 || line > lines {
                return Some(format!("{shown:?} names line {line} of {lines}"));
            }
            message
        }
        _ => rest.strip_prefix(' ').unwrap_or(rest),
    };
    if message.trim().is_empty() {
        return Some(format!("{shown:?} has an empty message"));
    }
    None
}

fn check(text: &str) -> Result<(), TestCaseError> {
    match refusal_problem(text) {
        None => Ok(()),
        Some(problem) => Err(TestCaseError::fail(format!("input {text:?}: {problem}"))),
    }
}

/// Pieces of relocfs configs and of TOML syntax, including the troublesome ones.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "[[map]]",
            "[map]",
            "[audit]",
            "[fuse]",
            "[[",
            "]]",
            "[",
            "]",
            "{",
            "}",
            ",",
            ".",
            "=",
            " = ",
            "\n",
            "\r\n",
            "\t",
            " ",
            "#",
            "# c\n",
            "\"",
            "'",
            "\"\"\"",
            "'''",
            "\\",
            "\\u001b[2J",
            "\\u0000",
            "\\n",
            "\\u0085",
            "\u{1b}",
            "\u{7f}",
            "\u{9b}",
            "\u{202e}",
            "from",
            "to",
            "mode",
            "deny",
            "log",
            "cmdline",
            "collapse_window",
            "threads",
            "passthrough",
            "readdirplus",
            "attr_timeout",
            "entry_timeout",
            "\"/\"",
            "\"/keys\"",
            "\"/opt/app\"",
            "\"ro\"",
            "\"rw\"",
            "\"auto\"",
            "\"off\"",
            "true",
            "false",
            "0",
            "-1",
            "65",
            "1.5",
            "nan",
            "inf",
            "-inf",
            "1e400",
            "2026-11-01",
            "\"a\\nb\"",
            "\"x\\u001by\"",
            "bogus",
        ])
        .prop_map(str::to_string),
        "[ -~]{0,8}",
        any::<char>().prop_map(String::from),
    ]
}

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(token(), 0..40).prop_map(|t| t.concat())
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(prop::sample::Index),
    Delete(prop::sample::Index, usize),
    Insert(prop::sample::Index, String),
    DuplicateLine(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        (any::<prop::sample::Index>(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<prop::sample::Index>(), soup()).prop_map(|(i, s)| Mutation::Insert(i, s)),
        any::<prop::sample::Index>().prop_map(Mutation::DuplicateLine),
    ]
}

/// The shipped example with the mutations applied in order (by characters, so the text
/// stays valid UTF-8 as a config file read by `load` must be).
fn mutate(mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = EXAMPLE.chars().collect();
    for m in mutations {
        let at = |i: &prop::sample::Index| i.index(chars.len() + 1);
        match m {
            Mutation::Truncate(i) => chars.truncate(at(i)),
            Mutation::Delete(i, n) => {
                let start = at(i);
                let end = (start + n).min(chars.len());
                chars.drain(start..end);
            }
            Mutation::Insert(i, s) => {
                let start = at(i);
                chars.splice(start..start, s.chars());
            }
            Mutation::DuplicateLine(i) => {
                let text: String = chars.iter().collect();
                let lines: Vec<&str> = text.split_inclusive('\n').collect();
                let pick = i.index(lines.len().max(1));
                let mut out = String::new();
                for (n, line) in lines.iter().enumerate() {
                    out.push_str(line);
                    if n == pick {
                        out.push_str(line);
                    }
                }
                chars = out.chars().collect();
            }
        }
    }
    chars.into_iter().collect()
}

proptest! {
    // Bounded so that the whole target runs in a few seconds of a debug build.
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_is_refused_in_one_line(text in any::<String>()) {
        check(&text)?;
    }

    #[test]
    fn config_like_text_is_refused_in_one_line(text in soup()) {
        check(&text)?;
    }

    #[test]
    fn mutated_example_is_refused_in_one_line(mutations in prop::collection::vec(mutation(), 1..4)) {
        check(&mutate(&mutations))?;
    }

    #[test]
    fn example_cut_anywhere_is_refused_in_one_line(cut in any::<prop::sample::Index>()) {
        let chars: Vec<char> = EXAMPLE.chars().collect();
        let text: String = chars[..cut.index(chars.len() + 1)].iter().collect();
        check(&text)?;
    }
}

// Inputs the fuzz target found (or that the bug reports named), kept by name.

/// `to = ` as the file's last bytes: the TOML library's message was empty, and relocfs
/// printed `FILE:3: ` and nothing more.
#[test]
fn regression_value_cut_off_at_end_of_file() {
    let text = "[[map]]\nfrom = \"/\"\nto = ";
    assert_eq!(refusal_problem(text), None);
    let shown = parse(text, Path::new(FILE)).unwrap_err().to_string();
    assert_eq!(
        shown,
        format!(
            "{FILE}:3: the file ends too early: the last key, value or table header is incomplete"
        )
    );
}

/// Found by the fuzz target: other inputs where the TOML library's message is empty: a
/// key without a value, a lone carriage return, a control character in a comment.
#[test]
fn regression_empty_library_messages() {
    let cases = [
        ("a=", 1, "the file ends too early"),
        ("\r", 1, r"invalid character \r"),
        ("#\0", 1, r"invalid character \u{0}"),
        ("[[map]]\n# \x1b[2J\n", 2, r"invalid character \u{1b}"),
    ];
    for (text, line, fact) in cases {
        assert_eq!(refusal_problem(text), None, "{text:?}");
        let shown = parse(text, Path::new(FILE)).unwrap_err().to_string();
        assert!(
            shown.starts_with(&format!("{FILE}:{line}: {fact}")),
            "{text:?}: {shown}"
        );
    }
    // CR LF line ends are TOML and stay accepted.
    let crlf = EXAMPLE.replace('\n', "\r\n");
    assert!(parse(&crlf, Path::new(FILE)).is_ok());
}

/// A quoted key holding a newline and ESC: the message was cut at the newline (and would
/// have put ESC on the terminal).
#[test]
fn regression_key_with_newline_and_escape() {
    let text = "[[map]]\n\"bad\\u001b[2J\\nkey\" = 1\n";
    assert_eq!(refusal_problem(text), None);
    let shown = parse(text, Path::new(FILE)).unwrap_err().to_string();
    assert!(
        shown.contains(r"unknown field `bad\u{1b}[2J\nkey`"),
        "{shown}"
    );
}

/// The TOML library's syntax errors come as two lines ("what", "expected ..."): kept whole.
#[test]
fn regression_syntax_error_keeps_what_was_expected() {
    let shown = parse("[[map]\nfrom = \"/\"\n", Path::new(FILE))
        .unwrap_err()
        .to_string();
    assert_eq!(
        shown,
        format!("{FILE}:1: invalid table header: expected `.`, `]]`")
    );
}
