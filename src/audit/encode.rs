//! How names and process data become audit strings: lossless escaping of bytes that are not
//! UTF-8, and head-and-tail shortening of values past their cap.
//!
//! The rules (the schema promises them; `relocfs report` undoes the escaping):
//! - A value that is valid UTF-8 is written as is and not listed in `escaped`.
//! - Otherwise each `\` becomes `\\`, each byte that is not part of a valid UTF-8 sequence
//!   becomes `\xHH` (two lowercase hex digits), everything else stays, and the field's name is
//!   listed in `escaped`. So `bad\xff\xfe`, `bad\xfe\xff` and `bad\u{fffd}\u{fffd}` stay three
//!   different strings.
//! - A value longer than its cap (counted in raw bytes, before escaping) keeps its head and its
//!   tail, cut on UTF-8 character boundaries, with `…[N bytes]…` between them, N being the raw
//!   bytes left out; the result is at most the cap, and the field is listed in `truncated`.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Cap of paths (`path`, `target`, `dest`, `exe`) and of the rule's `map`: PATH_MAX, so every
/// path that one system call can name is kept whole.
pub const PATH_CAP: usize = 4096;
/// Cap of `cmdline`.
pub const CMDLINE_CAP: usize = 4096;
/// Cap of `detail` (a setattr summary or an xattr name: short in practice).
pub const DETAIL_CAP: usize = 1024;
/// Cap of `comm` (the kernel keeps 15 bytes; this only guards against surprises).
pub const COMM_CAP: usize = 64;

/// Room kept for the marker: "…[" + up to 20 digits + " bytes]…".
const MARKER_ROOM: usize = 3 + 1 + 20 + 7 + 3;

/// `bytes` as a JSON-ready string and whether it had to be escaped (it was not UTF-8).
pub fn escape(bytes: &[u8]) -> (Cow<'_, str>, bool) {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return (Cow::Borrowed(s), false);
    }
    let mut out = String::with_capacity(bytes.len() + bytes.len() / 2);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for chunk in bytes.utf8_chunks() {
        // Valid text is copied in runs, a backslash doubled between them.
        for (i, run) in chunk.valid().split('\\').enumerate() {
            if i > 0 {
                out.push_str("\\\\");
            }
            out.push_str(run);
        }
        for &b in chunk.invalid() {
            out.push_str("\\x");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    (Cow::Owned(out), true)
}

/// `bytes` shortened to at most `cap` bytes by the head-and-tail rule, or `None` if it fits.
pub fn shorten(bytes: &[u8], cap: usize) -> Option<Vec<u8>> {
    shorten_with_gap(bytes, cap, 0)
}

/// `shorten` of a value of which only the first and last parts were kept, `hidden` bytes
/// between them never read (`bytes` is head then tail, the gap lying beyond both cuts:
/// callers keep at least `cap` bytes of each end).
pub fn shorten_with_gap(bytes: &[u8], cap: usize, hidden: usize) -> Option<Vec<u8>> {
    if bytes.len() + hidden <= cap {
        return None;
    }
    let keep = cap.saturating_sub(MARKER_ROOM).min(bytes.len());
    let mut head = keep / 2;
    let mut tail = bytes.len() - (keep - keep / 2);
    // Never split a valid multi-byte character: the head ends before it, the tail starts
    // after it.
    if let Some((start, _)) = inside_char(bytes, head) {
        head = start;
    }
    if let Some((_, end)) = inside_char(bytes, tail) {
        tail = end;
    }
    let left_out = tail - head + hidden;
    let mut out = Vec::with_capacity(cap);
    out.extend_from_slice(&bytes[..head]);
    // The marker starts with a lead byte and ends a complete character, so it never joins
    // with the bytes around it into another character: escaping sees head and tail unchanged.
    let _ = write!(VecWriter(&mut out), "…[{left_out} bytes]…");
    out.extend_from_slice(&bytes[tail..]);
    Some(out)
}

/// `shorten` for text that is valid UTF-8 (it stays valid: cuts fall on char boundaries).
pub fn shorten_str(s: &str, cap: usize) -> Option<String> {
    shorten(s.as_bytes(), cap).map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// If position `p` lies strictly inside a valid UTF-8 sequence, that sequence's (start, end).
fn inside_char(bytes: &[u8], p: usize) -> Option<(usize, usize)> {
    if p == 0 || p >= bytes.len() || bytes[p] & 0xC0 != 0x80 {
        return None;
    }
    for start in p.saturating_sub(3)..p {
        let len = match bytes[start] {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => continue,
        };
        let end = start + len;
        if end > p && end <= bytes.len() && std::str::from_utf8(&bytes[start..end]).is_ok() {
            return Some((start, end));
        }
    }
    None
}

/// `fmt::Write` into a byte vector.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reader's side of the rule, to prove it is lossless.
    fn unescape(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\' && b.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
            } else if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
                let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 4;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    /// `escape` as it was first written, a character at a time: the run-copying one must
    /// give the same strings.
    fn escape_by_char(bytes: &[u8]) -> (Cow<'_, str>, bool) {
        if let Ok(s) = std::str::from_utf8(bytes) {
            return (Cow::Borrowed(s), false);
        }
        let mut out = String::new();
        for chunk in bytes.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c == '\\' {
                    out.push_str("\\\\");
                } else {
                    out.push(c);
                }
            }
            for b in chunk.invalid() {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
        (Cow::Owned(out), true)
    }

    /// What the random values of the next test are made of.
    const PARTS: [&[u8]; 13] = [
        b"\\",
        b"a",
        b"/x",
        b"\xff",
        b"\x80",
        b"\xc3",
        b"\xc3\xa9",
        b"\xe2\x82",
        b"\xe2\x82\xac",
        b"\xf0\x9f\x98\x80",
        b"\xed\xa0\x80",
        b"\x00",
        b"\"",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// Random bytes, dense in backslashes, invalid bytes and multi-byte characters.
        #[test]
        fn escape_matches_the_char_at_a_time_rule(
            parts in proptest::collection::vec(
                proptest::sample::select(&PARTS[..]),
                0..40,
            ),
        ) {
            let bytes = parts.concat();
            proptest::prop_assert_eq!(escape(&bytes), escape_by_char(&bytes));
        }
    }

    #[test]
    fn distinct_bad_names_stay_distinct() {
        let a = escape(b"bad\xff\xfe");
        let b = escape(b"bad\xfe\xff");
        let c = escape("bad\u{fffd}\u{fffd}".as_bytes());
        assert_eq!(a, (Cow::Owned(r"bad\xff\xfe".into()), true));
        assert_eq!(b, (Cow::Owned(r"bad\xfe\xff".into()), true));
        assert_eq!(c, (Cow::Borrowed("bad\u{fffd}\u{fffd}"), false));
        // A valid name that looks like an escape is written unchanged and not marked...
        assert_eq!(escape(br"bad\xff").0, r"bad\xff");
        assert!(!escape(br"bad\xff").1);
        // ...and once escaped (another byte is invalid), its backslash is doubled.
        assert_eq!(escape(b"bad\\xff\x80").0, r"bad\\xff\x80");
    }

    #[test]
    fn escaping_round_trips() {
        let samples: [&[u8]; 6] = [
            b"\xff",
            b"a\\b\xc3",
            b"\xe2\x82",       // a truncated 3-byte sequence
            "é€😀".as_bytes(), // valid multi-byte
            b"\xed\xa0\x80",   // a surrogate: invalid
            b"x\xf0\x9f\x98\x80\xf0\x9f",
        ];
        for s in samples {
            let (e, escaped) = escape(s);
            if escaped {
                assert_eq!(unescape(&e), s, "{e}");
            } else {
                assert_eq!(e.as_bytes(), s);
            }
        }
    }

    #[test]
    fn shorten_keeps_head_and_tail_and_counts() {
        let long: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        assert!(shorten(&long[..PATH_CAP], PATH_CAP).is_none());
        let s = shorten(&long, PATH_CAP).unwrap();
        assert!(s.len() <= PATH_CAP, "{}", s.len());
        let text = String::from_utf8(s.clone()).unwrap();
        let open = text.find("…[").unwrap();
        let close = text.find(" bytes]…").unwrap();
        let n: usize = text[open + "…[".len()..close].parse().unwrap();
        let tail = &s[close + " bytes]…".len()..];
        assert_eq!(&long[..open], &s[..open]);
        assert_eq!(&long[long.len() - tail.len()..], tail);
        assert_eq!(open + n + tail.len(), long.len());
    }

    #[test]
    fn shorten_never_splits_a_character() {
        // 4-byte characters only: any cut inside one would leave invalid bytes.
        let long = "😀".repeat(3000);
        for cap in [100, 101, 102, 103, 4096] {
            let s = shorten(long.as_bytes(), cap).unwrap();
            assert!(s.len() <= cap);
            let text = String::from_utf8(s).expect("cut inside a character");
            assert!(text.starts_with('😀') && text.ends_with('😀'));
        }
        // Invalid bytes around the cuts are kept as bytes and escape the same way.
        let mut mixed = vec![0xffu8; 5000];
        mixed.extend_from_slice("é".repeat(3000).as_bytes());
        let s = shorten(&mixed, 4096).unwrap();
        let (e, escaped) = escape(&s);
        assert!(escaped);
        assert!(e.starts_with(r"\xff\xff") && e.ends_with("éé"), "{e}");
        assert!(e.contains(" bytes]…"));
    }
}
