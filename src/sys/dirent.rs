//! The `getdents64` record parser, apart from the syscall so it can be tested on any bytes.

use std::ffi::{CStr, OsString};
use std::os::unix::ffi::OsStringExt;

use super::DirEntry;

/// A `getdents64` buffer that is not a sequence of well-formed records.
#[derive(Debug, PartialEq, Eq)]
pub struct MalformedDirent;

/// Size of `linux_dirent64` up to the name: u64 d_ino, i64 d_off, u16 d_reclen, u8 d_type.
const DIRENT_HEADER: usize = 19;

/// Every record of one `getdents64` buffer, `.` and `..` included, each with the offset just
/// after it (`d_off`, for `lseek`). Total: any record that does not fit the buffer, is shorter
/// than its header plus a NUL, or has an empty name, a name with `/` or no NUL inside it, makes
/// the whole buffer malformed (no entry of it is kept), never a panic. The kernel never writes
/// such a buffer; refusing it whole means a listing is never silently cut short.
pub fn parse_records(buf: &[u8]) -> Result<Vec<(DirEntry, u64)>, MalformedDirent> {
    let mut parsed = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let header = rest.get(..DIRENT_HEADER).ok_or(MalformedDirent)?;
        let ino = u64::from_ne_bytes(header[..8].try_into().map_err(|_| MalformedDirent)?);
        let off = u64::from_ne_bytes(header[8..16].try_into().map_err(|_| MalformedDirent)?);
        let reclen = usize::from(u16::from_ne_bytes([header[16], header[17]]));
        let kind = header[18];
        if reclen <= DIRENT_HEADER {
            return Err(MalformedDirent);
        }
        let record = rest.get(..reclen).ok_or(MalformedDirent)?;
        let name = CStr::from_bytes_until_nul(&record[DIRENT_HEADER..])
            .map_err(|_| MalformedDirent)?
            .to_bytes();
        if name.is_empty() || name.contains(&b'/') {
            return Err(MalformedDirent);
        }
        let name = OsString::from_vec(name.to_vec());
        parsed.push((DirEntry { name, ino, kind }, off));
        rest = &rest[reclen..];
    }
    Ok(parsed)
}

/// Appends the entries of one `getdents64` buffer, `.` and `..` excluded; malformed as for
/// [`parse_records`].
pub fn parse_dirents(buf: &[u8], entries: &mut Vec<DirEntry>) -> Result<(), MalformedDirent> {
    let parsed = parse_records(buf)?;
    entries.extend(
        parsed
            .into_iter()
            .map(|(entry, _)| entry)
            .filter(|e| e.name != "." && e.name != ".."),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One record as the kernel lays it out: header, name, NUL, padding to 8 bytes.
    fn record(ino: u64, kind: u8, name: &[u8]) -> Vec<u8> {
        let reclen = (DIRENT_HEADER + name.len() + 1).next_multiple_of(8);
        let mut r = Vec::with_capacity(reclen);
        r.extend_from_slice(&ino.to_ne_bytes());
        r.extend_from_slice(&0i64.to_ne_bytes());
        r.extend_from_slice(&(reclen as u16).to_ne_bytes());
        r.push(kind);
        r.extend_from_slice(name);
        r.resize(reclen, 0);
        r
    }

    /// Records keep their `d_off` (the resume offset the listing streams by) and the dot
    /// entries, which only `parse_dirents` leaves out.
    #[test]
    fn records_keep_their_offsets_and_the_dot_entries() {
        let with_off = |ino: u64, off: u64, name: &[u8]| {
            let mut r = record(ino, 4, name);
            r[8..16].copy_from_slice(&off.to_ne_bytes());
            r
        };
        let buf = [
            with_off(1, 10, b"."),
            with_off(2, 20, b".."),
            with_off(3, 30, b"a"),
        ]
        .concat();
        let parsed: Vec<(Vec<u8>, u64)> = parse_records(&buf)
            .unwrap()
            .into_iter()
            .map(|(e, off)| (e.name.into_vec(), off))
            .collect();
        assert_eq!(
            parsed,
            vec![
                (b".".to_vec(), 10),
                (b"..".to_vec(), 20),
                (b"a".to_vec(), 30)
            ]
        );
        assert_eq!(names(&buf).unwrap(), vec![(b"a".to_vec(), 3, 4)]);
    }

    fn names(buf: &[u8]) -> Result<Vec<(Vec<u8>, u64, u8)>, MalformedDirent> {
        let mut entries = Vec::new();
        parse_dirents(buf, &mut entries)?;
        Ok(entries
            .into_iter()
            .map(|e| (e.name.into_vec(), e.ino, e.kind))
            .collect())
    }

    fn with_reclen(mut r: Vec<u8>, reclen: u16) -> Vec<u8> {
        r[16..18].copy_from_slice(&reclen.to_ne_bytes());
        r
    }

    #[test]
    fn well_formed_records_are_parsed() {
        let mut buf = record(1, libc::DT_DIR, b".");
        buf.extend(record(2, libc::DT_DIR, b".."));
        buf.extend(record(42, libc::DT_REG, b"file"));
        buf.extend(record(43, libc::DT_LNK, &[0xff, b'x']));
        assert_eq!(
            names(&buf).unwrap(),
            vec![
                (b"file".to_vec(), 42, libc::DT_REG),
                (vec![0xff, b'x'], 43, libc::DT_LNK)
            ]
        );
        assert_eq!(names(&[]).unwrap(), vec![]);
    }

    /// Every reclen from 0 to the header size (1..=18 used to panic on a slice) and one past
    /// the buffer are refused; so are a name without NUL, an empty name, a name with '/' and
    /// a truncated trailing header.
    #[test]
    fn malformed_records_are_refused() {
        let good = record(7, libc::DT_REG, b"name");
        for reclen in 0..=DIRENT_HEADER as u16 {
            let mut buf = good.clone();
            buf.extend(with_reclen(good.clone(), reclen));
            assert_eq!(names(&buf), Err(MalformedDirent), "reclen {reclen}");
        }
        let too_long = good.len() as u16 + 1;
        assert_eq!(
            names(&with_reclen(good.clone(), too_long)),
            Err(MalformedDirent)
        );
        // Exactly header + name, no room for the NUL.
        let mut no_nul = good[..DIRENT_HEADER].to_vec();
        no_nul.extend_from_slice(b"name");
        let no_nul = with_reclen(no_nul, DIRENT_HEADER as u16 + 4);
        assert_eq!(names(&no_nul), Err(MalformedDirent));
        assert_eq!(names(&record(7, 0, b"")), Err(MalformedDirent));
        assert_eq!(names(&record(7, 0, b"a/b")), Err(MalformedDirent));
        let mut trailing = good.clone();
        trailing.extend_from_slice(&good[..DIRENT_HEADER - 1]);
        assert_eq!(names(&trailing), Err(MalformedDirent));
    }

    proptest! {
        /// Arbitrary bytes never panic, and a refused buffer adds no entries.
        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut entries = Vec::new();
            if parse_dirents(&buf, &mut entries).is_err() {
                prop_assert!(entries.is_empty());
            }
        }

        /// Arbitrary bytes after a valid record never panic either (a record boundary inside
        /// the buffer, then garbage).
        #[test]
        fn garbage_after_a_record_never_panics(
            tail in proptest::collection::vec(any::<u8>(), 0..128),
            reclen in any::<u16>(),
        ) {
            let mut buf = record(1, libc::DT_REG, b"a");
            let mut bad = record(2, libc::DT_REG, b"b");
            bad[16..18].copy_from_slice(&reclen.to_ne_bytes());
            buf.extend(bad);
            buf.extend(tail);
            let _ = names(&buf);
        }

        /// Any list of valid names round-trips.
        #[test]
        fn valid_records_round_trip(
            list in proptest::collection::vec(
                (any::<u64>(), any::<u8>(), proptest::collection::vec(1u8..=255, 1..40)),
                0..20,
            )
        ) {
            let list: Vec<_> = list
                .into_iter()
                .map(|(ino, kind, name)| {
                    let name: Vec<u8> = name.into_iter().filter(|&b| b != b'/').collect();
                    (ino, kind, if name.is_empty() { b"n".to_vec() } else { name })
                })
                .filter(|(_, _, n)| n != b"." && n != b"..")
                .collect();
            let buf: Vec<u8> = list.iter().flat_map(|(i, k, n)| record(*i, *k, n)).collect();
            let want: Vec<_> = list.into_iter().map(|(i, k, n)| (n, i, k)).collect();
            prop_assert_eq!(names(&buf).unwrap(), want);
        }
    }
}
