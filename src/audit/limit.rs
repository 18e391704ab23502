//! Per-user rate limit of the audit log: a token bucket of bytes per uid, decided on the
//! recording thread before anything is queued; excess events become counted summaries.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::lock;

/// At most this many uids have a bucket. A full map drops idle buckets (full and with nothing
/// owed); if none is idle, the event is counted as dropped (the `dropped` line reports it).
pub const MAX_UIDS: usize = 4096;

/// A full map is swept at most this often, so a flood of new uids costs no repeated scans.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// How much one uid may make the log write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained bytes per second per uid; 0 turns the limit off.
    pub bytes_per_sec: u64,
    /// Bytes a uid may write at once before the sustained rate applies.
    pub burst: u64,
}

/// What `check` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admit,
    /// Over the uid's rate: counted for its next `suppressed` summary.
    Suppress,
    /// No bucket can be had for a new uid: count the event as dropped.
    NoRoom,
}

/// Events suppressed for one uid since its last summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owed {
    pub uid: u32,
    pub count: u64,
    /// Time of the first suppressed event this summary covers.
    pub since: SystemTime,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    suppressed: u64,
    since: SystemTime,
}

struct State {
    buckets: HashMap<u32, Bucket>,
    last_sweep: Option<Instant>,
}

pub struct Limiter {
    rate: f64,
    burst: f64,
    state: Mutex<State>,
}

impl Limiter {
    /// `None` when the limit is off.
    pub fn new(limit: RateLimit) -> Option<Limiter> {
        (limit.bytes_per_sec > 0).then(|| Limiter {
            rate: limit.bytes_per_sec as f64,
            burst: limit.burst.max(1) as f64,
            state: Mutex::new(State {
                buckets: HashMap::new(),
                last_sweep: None,
            }),
        })
    }

    /// Charges `cost` bytes to `uid` at `now`; `ts` is the event's time (for `since`).
    pub fn check(&self, uid: u32, cost: u64, now: Instant, ts: SystemTime) -> Verdict {
        let (rate, burst) = (self.rate, self.burst);
        let mut st = lock(&self.state);
        if !st.buckets.contains_key(&uid)
            && st.buckets.len() >= MAX_UIDS
            && !st.sweep(now, rate, burst)
        {
            return Verdict::NoRoom;
        }
        let b = st.buckets.entry(uid).or_insert(Bucket {
            tokens: burst,
            at: now,
            suppressed: 0,
            since: ts,
        });
        b.refill(now, rate, burst);
        // An event dearer than the whole burst could never pass: it costs the burst.
        let cost = (cost as f64).min(burst);
        if b.tokens >= cost {
            b.tokens -= cost;
            Verdict::Admit
        } else {
            if b.suppressed == 0 {
                b.since = ts;
            }
            b.suppressed += 1;
            Verdict::Suppress
        }
    }

    /// Takes every uid's owed count (resetting it), in uid order.
    pub fn take(&self) -> Vec<Owed> {
        let mut st = lock(&self.state);
        let mut owed: Vec<Owed> = st
            .buckets
            .iter_mut()
            .filter(|(_, b)| b.suppressed > 0)
            .map(|(&uid, b)| {
                let count = std::mem::take(&mut b.suppressed);
                Owed {
                    uid,
                    count,
                    since: b.since,
                }
            })
            .collect();
        owed.sort_by_key(|o| o.uid);
        owed
    }

    /// Suppressed events not yet taken for a summary.
    pub fn owed(&self) -> u64 {
        lock(&self.state)
            .buckets
            .values()
            .map(|b| b.suppressed)
            .sum()
    }
}

impl State {
    /// Drops idle buckets; whether room was made. Rate-limited to one scan per SWEEP_EVERY.
    fn sweep(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < SWEEP_EVERY)
        {
            return false;
        }
        self.last_sweep = Some(now);
        self.buckets.retain(|_, b| {
            b.refill(now, rate, burst);
            b.suppressed > 0 || b.tokens < burst
        });
        self.buckets.len() < MAX_UIDS
    }
}

impl Bucket {
    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        // Another thread may have stamped a later instant: never move the clock back.
        if now > self.at {
            let elapsed = now.duration_since(self.at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate).min(burst);
            self.at = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u64, burst: u64) -> Limiter {
        Limiter::new(RateLimit {
            bytes_per_sec: rate,
            burst,
        })
        .unwrap()
    }

    #[test]
    fn off_when_rate_is_zero() {
        assert!(Limiter::new(RateLimit {
            bytes_per_sec: 0,
            burst: 10
        })
        .is_none());
    }

    #[test]
    fn burst_then_rate_and_exact_counts() {
        let l = limiter(1000, 5000);
        let t0 = Instant::now();
        let ts = SystemTime::now();
        // 5 events of 1000 bytes fit the burst, the 6th and 7th do not.
        let v: Vec<Verdict> = (0..7).map(|_| l.check(7, 1000, t0, ts)).collect();
        assert_eq!(&v[..5], &[Verdict::Admit; 5]);
        assert_eq!(&v[5..], &[Verdict::Suppress; 2]);
        // Another uid is not affected.
        assert_eq!(l.check(8, 1000, t0, ts), Verdict::Admit);
        // One second later one more event's worth has come back.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(l.check(7, 1000, t1, ts), Verdict::Admit);
        assert_eq!(l.check(7, 1000, t1, ts), Verdict::Suppress);
        assert_eq!(l.owed(), 3);
        let owed = l.take();
        assert_eq!(
            owed,
            [Owed {
                uid: 7,
                count: 3,
                since: ts
            }]
        );
        assert_eq!(l.owed(), 0);
        assert!(l.take().is_empty());
    }

    #[test]
    fn state_stays_bounded_and_never_loses_counts() {
        let l = limiter(1, 10);
        let t0 = Instant::now();
        let ts = SystemTime::now();
        // Every uid is over its rate at once: all buckets owe, none can be dropped.
        let mut suppressed = 0;
        let mut no_room = 0;
        for uid in 0..(MAX_UIDS as u32 * 2) {
            for _ in 0..2 {
                match l.check(uid, 10, t0, ts) {
                    Verdict::Admit => {}
                    Verdict::Suppress => suppressed += 1,
                    Verdict::NoRoom => no_room += 1,
                }
            }
        }
        assert_eq!(lock(&l.state).buckets.len(), MAX_UIDS);
        assert_eq!(suppressed, MAX_UIDS as u64);
        assert_eq!(no_room, 2 * MAX_UIDS as u64);
        let owed: u64 = l.take().iter().map(|o| o.count).sum();
        assert_eq!(owed, suppressed);
        // Once they have refilled and owe nothing, new uids get buckets again.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(l.check(u32::MAX, 10, later, ts), Verdict::Admit);
    }
}
