//! Reading the logs: plain or gzip, in line-aligned chunks, parsed by parallel workers.

use super::*;

/// Large reads amortise syscalls and (for gzip) decoder calls; 256 KiB is far past the
/// point of diminishing returns and still trivial memory.
pub(super) const READ_BUFFER: usize = 256 * 1024;

/// Longest line accepted. Real lines are two paths plus small fields (and maybe a command
/// line, which Linux caps at a few MiB); anything longer is garbage, and the cap keeps a file
/// without newlines from being read into memory whole.
pub(super) const MAX_LINE: usize = 8 * 1024 * 1024;

/// Lines are handed to the parsing workers in chunks of about this size: large enough that
/// the channel costs nothing per line, small enough that a few in flight are little memory.
pub(super) const CHUNK: usize = 1024 * 1024;

/// Upper bound on parsing threads; past the point where reading (or gunzip) is the limit.
pub(super) const MAX_WORKERS: usize = 8;

/// Of `--max-memory`, the share the merged aggregation may hold; the workers' partial
/// aggregations share as much again, and the sections built at the end need about as much
/// as the merged aggregation. Measured: see README ("Reports").
pub(super) const BUDGET_SHARE: u64 = 2;

/// Per-file figures, shown so an operator can tell which file had the bad lines.
#[derive(Debug, Clone, Serialize)]
pub(super) struct FileStats {
    pub(super) path: String,
    pub(super) gzip: bool,
    /// Non-blank lines read.
    pub(super) lines: u64,
    pub(super) malformed: u64,
    /// Of the malformed lines, those longer than [`MAX_LINE`] (skipped unread).
    pub(super) overlong: u64,
    /// Lines of a schema version newer than [`SCHEMA_VERSION`]: skipped, not misread.
    pub(super) newer_version: u64,
    /// Set when reading stopped early (e.g. a truncated or corrupt `.gz`); the lines before
    /// it still count.
    pub(super) error: Option<String>,
}

/// What became of the lines of one file. Invariant: `lines == accepted + malformed + newer`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct LineCounts {
    /// Non-blank lines.
    pub(super) lines: u64,
    /// Read as an access, a `dropped` or a `suppressed` line.
    pub(super) accepted: u64,
    pub(super) malformed: u64,
    /// Of the malformed, those longer than [`MAX_LINE`].
    pub(super) overlong: u64,
    /// Of a newer schema version than this report knows.
    pub(super) newer: u64,
}

impl LineCounts {
    pub(super) fn add(&mut self, other: &LineCounts) {
        self.lines += other.lines;
        self.accepted += other.accepted;
        self.malformed += other.malformed;
        self.overlong += other.overlong;
        self.newer += other.newer;
    }
}

/// A run of whole lines of one file (only a file's last chunk may end without a newline).
pub(super) struct Chunk {
    pub(super) file: usize,
    pub(super) data: Vec<u8>,
}

/// What one worker has aggregated.
pub(super) struct Partial {
    pub(super) agg: Aggregator,
    /// Indexed by file.
    pub(super) counts: Vec<LineCounts>,
    pub(super) line: Vec<u8>,
}

impl Partial {
    pub(super) fn new(window: Window, files: usize, budget: usize) -> Partial {
        Partial {
            agg: Aggregator::new(window, budget),
            counts: vec![LineCounts::default(); files],
            line: Vec::with_capacity(1024),
        }
    }

    pub(super) fn process(&mut self, chunk: &Chunk) {
        let Partial { agg, counts, line } = self;
        let Some(counts) = counts.get_mut(chunk.file) else {
            return;
        };
        // A slice is a BufRead that cannot fail.
        let _ = for_each_line(&mut &chunk.data[..], line, |l| agg.line(l, counts));
    }
}

/// Reads every log and aggregates it, in parallel when more than one core is available: the
/// calling thread reads (and decompresses) line-aligned chunks, workers parse them into
/// their own aggregators, merged at the end. Parsing JSON is the bulk of the work; the
/// aggregation is commutative, so the split changes nothing in the result.
pub(super) fn aggregate(
    logs: &[PathBuf],
    window: Window,
    workers: usize,
    max_memory: u64,
) -> Result<(Aggregator, Vec<FileStats>), String> {
    let workers = workers.clamp(1, MAX_WORKERS);
    let nfiles = logs.len();
    let share = |n: u64| {
        if max_memory == 0 {
            usize::MAX
        } else {
            usize::try_from(max_memory / BUDGET_SHARE / n).unwrap_or(usize::MAX)
        }
    };
    let (total_budget, worker_budget) = (share(1), share(workers as u64));
    // Bounded: the reader waits rather than buffering a whole file ahead of the workers.
    let (tx, rx) = mpsc::sync_channel::<Chunk>(workers * 2);
    let rx = Mutex::new(rx);
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        if workers > 1 {
            for n in 0..workers {
                let rx = &rx;
                let spawned = std::thread::Builder::new()
                    .name(format!("relocfs-report-{n}"))
                    .spawn_scoped(scope, move || {
                        let mut partial = Partial::new(window, nfiles, worker_budget);
                        loop {
                            // Holding the lock while waiting is fine: whoever holds it gets
                            // the next chunk, the others would only wait on the channel.
                            let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                            match next {
                                Ok(chunk) => partial.process(&chunk),
                                Err(_) => return partial,
                            }
                        }
                    });
                match spawned {
                    Ok(handle) => handles.push(handle),
                    // Fewer workers (or none: then the reader parses too) still works.
                    Err(_) => break,
                }
            }
        }

        let mut inline = Partial::new(window, nfiles, total_budget);
        let mut files = Vec::with_capacity(nfiles);
        let mut failed = None;
        {
            let mut sink = |chunk: Chunk| {
                if handles.is_empty() {
                    inline.process(&chunk);
                } else if let Err(mpsc::SendError(chunk)) = tx.send(chunk) {
                    // Every worker is gone (only a panic can do that): finish here.
                    inline.process(&chunk);
                }
            };
            for (index, path) in logs.iter().enumerate() {
                match read_chunks(path, index, &mut sink) {
                    Ok(stats) => files.push(stats),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        drop(tx);
        let mut partials = vec![inline];
        for handle in handles {
            match handle.join() {
                Ok(partial) => partials.push(partial),
                Err(_) => return Err("internal error: a report worker failed".to_owned()),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let mut partials = partials.into_iter();
        let Some(mut total) = partials.next() else {
            return Err("internal error: no report worker".to_owned());
        };
        for partial in partials {
            total.agg.absorb(&partial.agg);
            for (sum, c) in total.counts.iter_mut().zip(&partial.counts) {
                sum.add(c);
            }
        }
        for (stats, c) in files.iter_mut().zip(&total.counts) {
            stats.lines += c.lines;
            stats.malformed += c.malformed;
            stats.overlong += c.overlong;
            stats.newer_version += c.newer;
        }
        Ok((total.agg, files))
    })
}

/// Reads one log into line-aligned chunks passed to `sink`. An error only if the file
/// cannot be opened or read at all; a read error later (a truncated `.gz`) ends the file
/// and is recorded in its stats, keeping what was read before.
pub(super) fn read_chunks(
    path: &Path,
    index: usize,
    sink: &mut dyn FnMut(Chunk),
) -> Result<FileStats, String> {
    let cannot = |e: io::Error| format!("cannot read audit log {}: {e}", path.display());
    let file = File::open(path).map_err(cannot)?;
    let mut raw = BufReader::with_capacity(READ_BUFFER, file);
    // Rotation tools name compressed files inconsistently (or not at all), so trust the
    // content. This first read is also what fails for a directory: a file we cannot read at
    // all is an error, not an empty log.
    let gzip = raw.fill_buf().map_err(cannot)?.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn BufRead> = if gzip {
        // Multi-member: `cat a.gz b.gz` and some compressors produce several gzip members.
        Box::new(BufReader::with_capacity(
            READ_BUFFER,
            flate2::bufread::MultiGzDecoder::new(raw),
        ))
    } else {
        Box::new(raw)
    };
    let mut stats = FileStats {
        path: path.display().to_string(),
        gzip,
        lines: 0,
        malformed: 0,
        overlong: 0,
        newer_version: 0,
        error: None,
    };
    loop {
        let mut data = Vec::with_capacity(CHUNK + 4096);
        let read = <&mut dyn BufRead as Read>::take(&mut *reader, CHUNK as u64)
            .read_to_end(&mut data)
            .and_then(|n| {
                if n < CHUNK {
                    return Ok(true);
                }
                // Complete the last line so every chunk holds whole lines.
                let start = data.len();
                let n = <&mut dyn BufRead as Read>::take(&mut *reader, MAX_LINE as u64 + 1)
                    .read_until(b'\n', &mut data)?;
                if n > MAX_LINE && data.last() != Some(&b'\n') {
                    // Overlong: cut it off here and drop the rest of it unread.
                    let line_start = data
                        .get(..start)
                        .and_then(|head| head.iter().rposition(|&b| b == b'\n'))
                        .map_or(0, |i| i + 1);
                    data.truncate(line_start);
                    stats.lines += 1;
                    stats.malformed += 1;
                    stats.overlong += 1;
                    return skip_line(&mut *reader);
                }
                Ok(n == 0)
            });
        let eof = match read {
            Ok(eof) => eof,
            Err(e) => {
                // What was read before the error still counts; a half line at its end is
                // counted as malformed like any truncated line.
                stats.error = Some(e.to_string());
                true
            }
        };
        if !data.is_empty() {
            sink(Chunk { file: index, data });
        }
        if eof {
            return Ok(stats);
        }
    }
}

/// Discards input up to and including the next newline; `Ok(true)` at end of file.
pub(super) fn skip_line(reader: &mut dyn BufRead) -> io::Result<bool> {
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(true);
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(false);
            }
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

/// Calls `f` with each line (without its newline), or `None` for a line longer than
/// [`MAX_LINE`], which is skipped without being held in memory. `line` is the reused buffer.
pub(super) fn for_each_line(
    reader: &mut dyn BufRead,
    line: &mut Vec<u8>,
    mut f: impl FnMut(Option<&[u8]>),
) -> io::Result<()> {
    let cap = MAX_LINE as u64 + 1;
    loop {
        line.clear();
        // read_until uses std's word-at-a-time memchr: twice as fast as a byte loop here.
        if <&mut dyn BufRead as Read>::take(&mut *reader, cap).read_until(b'\n', line)? == 0 {
            return Ok(());
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            f(Some(line));
        } else if line.len() <= MAX_LINE {
            // End of file without a newline: a half-written line, or merely unterminated;
            // the parser decides which.
            f(Some(line));
        } else {
            // Overlong: drop the rest of it, a bounded chunk at a time.
            loop {
                line.clear();
                let n =
                    <&mut dyn BufRead as Read>::take(&mut *reader, cap).read_until(b'\n', line)?;
                if n == 0 || line.last() == Some(&b'\n') {
                    break;
                }
            }
            f(None);
        }
    }
}
