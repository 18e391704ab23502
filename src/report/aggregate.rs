//! The aggregation: one tuple per distinct event, within a memory budget.

use super::*;

/// Estimated heap bytes per tuple: the tuple (80), its slot in the key index, and the slack
/// of both growing by doubling.
pub(super) const TUPLE_COST: usize = 180;

/// Estimated heap bytes per interned string beside its text: the shared allocation, its
/// entry in the id map and in the names vector, with their slack.
pub(super) const STRING_COST: usize = 120;

/// FxHash (as in rustc), for maps keyed by numbers we produce ourselves (ids, or hashes that
/// are already keyed SipHash), where a fast unkeyed hash is safe. Strings from the log, which
/// users control, always go through std's randomly keyed hasher first.
#[derive(Default, Clone, Copy)]
pub(super) struct FxHasher(u64);

impl FxHasher {
    #[inline]
    pub(super) fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(u64::from(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(super) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;
pub(super) type IdSet = HashSet<u64, BuildHasherDefault<FxHasher>>;

/// Every distinct string gets one id and one allocation, made the first time it is seen.
#[derive(Default)]
pub(super) struct Interner {
    pub(super) ids: HashMap<Arc<str>, u32>,
    pub(super) names: Vec<Arc<str>>,
    /// Estimated heap bytes held, for the memory cap: [`STRING_COST`] plus the text each.
    pub(super) bytes: usize,
}

impl Interner {
    pub(super) fn id(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        // More than 4 billion distinct strings cannot fit in memory anyway; saturating keeps
        // this panic-free, and NONE is never handed out as a real id.
        let id = u32::try_from(self.names.len()).map_or(NONE - 1, |n| n.min(NONE - 1));
        let name: Arc<str> = Arc::from(s);
        self.names.push(Arc::clone(&name));
        self.ids.insert(name, id);
        self.bytes = self.bytes.saturating_add(STRING_COST + s.len());
        id
    }

    pub(super) fn get(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |s| s)
    }

    pub(super) fn opt(&self, id: u32) -> Option<&str> {
        (id != NONE).then(|| self.get(id))
    }

    pub(super) fn opt_id(&mut self, s: Option<&str>) -> u32 {
        s.map_or(NONE, |s| self.id(s))
    }
}

/// Hits and first/last time: what every row of every section carries.
#[derive(Clone, Copy)]
pub(super) struct Seen {
    pub(super) hits: u64,
    pub(super) first: i64,
    pub(super) last: i64,
}

impl Seen {
    pub(super) fn new() -> Seen {
        Seen {
            hits: 0,
            first: i64::MAX,
            last: i64::MIN,
        }
    }

    pub(super) fn add(&mut self, ts: i64, count: u64) {
        self.hits = self.hits.saturating_add(count);
        self.first = self.first.min(ts);
        self.last = self.last.max(ts);
    }

    pub(super) fn merge(&mut self, other: &Seen) {
        self.hits = self.hits.saturating_add(other.hits);
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
    }
}

/// All events with one [`EventKey`], the key stored as interned ids.
pub(super) struct Tuple {
    pub(super) op: u32,
    pub(super) path: u32,
    pub(super) map: u32,
    pub(super) uid: u32,
    pub(super) comm: u32,
    pub(super) exe: u32,
    pub(super) result: u32,
    pub(super) unit: u32,
    pub(super) user_unit: u32,
    pub(super) container: u32,
    pub(super) host: u32,
    /// [`PATH_ESCAPED`] and the others.
    pub(super) flags: u16,
    pub(super) seen: Seen,
    /// Next tuple whose key hashed to the same 64-bit value, or NONE.
    pub(super) next: u32,
}

impl Tuple {
    /// The key of this tuple, its strings from `s`.
    pub(super) fn key<'s>(&self, s: &'s Interner) -> EventKey<'s> {
        EventKey {
            op: s.get(self.op),
            path: s.get(self.path),
            map: s.opt(self.map),
            uid: self.uid,
            comm: s.get(self.comm),
            exe: s.opt(self.exe),
            result: s.get(self.result),
            unit: s.opt(self.unit),
            user_unit: s.opt(self.user_unit),
            container: s.opt(self.container),
            host: s.opt(self.host),
            flags: self.flags,
        }
    }
}

/// The largest `level` such that `sum(min(count, level)) <= allowed`: each uid keeps at most
/// `level` exact tuples. `counts` is sorted in place.
pub(super) fn water_level(counts: &mut [usize], allowed: usize) -> usize {
    counts.sort_unstable();
    let mut used = 0usize;
    let mut left = counts.len();
    for &c in counts.iter() {
        // Every uid from here on has at least `c`: can all of them keep `c`?
        let all = c.saturating_mul(left);
        if used.saturating_add(all) > allowed {
            return (allowed - used) / left.max(1);
        }
        used += c;
        left -= 1;
    }
    usize::MAX
}

/// The on-the-fly aggregation: one [`Tuple`] per distinct event key. Real logs repeat the
/// same few thousand (process, path, result) combinations millions of times, so per event
/// this is one keyed hash of the borrowed fields, one lookup and a compare; strings are
/// copied only the first time a combination appears. The sections (groups, processes,
/// misses, denials, distinct counts) are all derived from the tuples at the end, which also
/// makes the report independent of the order the logs are read in.
pub(super) struct Aggregator {
    pub(super) window: Window,
    pub(super) strings: Interner,
    /// Keyed (random per run) so crafted paths in a log cannot force collisions.
    pub(super) hasher: std::collections::hash_map::RandomState,
    /// Key hash → first tuple of its chain.
    pub(super) heads: IdMap<u64, u32>,
    pub(super) tuples: Vec<Tuple>,
    pub(super) events: u64,
    pub(super) lost: u64,
    pub(super) outside: u64,
    /// Events the daemon did not write (its per-user rate limit), by uid.
    pub(super) suppressed: IdMap<u32, Seen>,
    /// Events with a field the daemon shortened.
    pub(super) truncated: u64,
    /// Estimated bytes this aggregation may hold before it summarises ([`Aggregator::compact`]).
    pub(super) budget: usize,
}

impl Aggregator {
    pub(super) fn new(window: Window, budget: usize) -> Aggregator {
        Aggregator {
            budget,
            window,
            strings: Interner::default(),
            hasher: std::collections::hash_map::RandomState::new(),
            heads: IdMap::default(),
            tuples: Vec::new(),
            events: 0,
            lost: 0,
            outside: 0,
            suppressed: IdMap::default(),
            truncated: 0,
        }
    }

    pub(super) fn add(&mut self, key: &EventKey<'_>, ts: i64, count: u64) {
        self.events = self.events.saturating_add(count);
        let mut seen = Seen::new();
        seen.add(ts, count);
        if self.merge_tuple(key, &seen) && self.mem() > self.budget {
            self.compact();
        }
    }

    /// Estimated heap bytes of the aggregation: strings and tuples with their index.
    pub(super) fn mem(&self) -> usize {
        self.strings
            .bytes
            .saturating_add(self.tuples.len().saturating_mul(TUPLE_COST))
    }

    /// Brings the aggregation back under half its budget by folding tuples into summarised
    /// ones, which keep op, result, uid, rule and every count and time, but no path, process
    /// name or executable. Totals stay exact; only rows lose detail.
    ///
    /// Fair between users: the users with the most distinct tuples are summarised first
    /// (each user keeps at most `level` exact tuples, the most-hit ones, `level` chosen as
    /// high as fits), so a user who floods the log with distinct misses gets their own
    /// misses summarised, not another user's one-off access. Each call at least halves the
    /// memory, so the cost is amortised over the tuples added in between.
    pub(super) fn compact(&mut self) {
        let target = self.budget / 2;
        let exact = self
            .tuples
            .iter()
            .filter(|t| t.flags & SUMMARISED == 0)
            .count();
        let per_tuple = (self.mem() / self.tuples.len().max(1)).max(1);
        let mut allowed = (target / per_tuple).min(exact);
        loop {
            let mut per_uid: IdMap<u32, usize> = IdMap::default();
            for t in self.tuples.iter().filter(|t| t.flags & SUMMARISED == 0) {
                *per_uid.entry(t.uid).or_default() += 1;
            }
            let mut counts: Vec<usize> = per_uid.into_values().collect();
            let level = water_level(&mut counts, allowed);
            self.rebuild(level);
            if self.mem() <= target {
                return;
            }
            if level == 0 {
                // Only summarised tuples are left, and they alone exceed the target (it
                // takes a vast number of users): raise the budget rather than compact again
                // at every new tuple. They are bounded by ops x results x rules x users.
                self.budget = self.budget.max(self.mem().saturating_mul(2));
                return;
            }
            allowed /= 2;
        }
    }

    /// Keeps, per uid, the `level` most-hit exact tuples and folds the others.
    pub(super) fn rebuild(&mut self, level: usize) {
        let old_tuples = std::mem::take(&mut self.tuples);
        let old_strings = std::mem::take(&mut self.strings);
        self.heads = IdMap::default();
        // Which tuples stay exact: per uid, by hits, then the most recent, then first seen.
        let mut order: Vec<usize> = (0..old_tuples.len())
            .filter(|&i| old_tuples.get(i).is_some_and(|t| t.flags & SUMMARISED == 0))
            .collect();
        let hits = |i: usize| {
            old_tuples
                .get(i)
                .map_or((0, 0, 0), |t| (t.uid, t.seen.hits, t.seen.last))
        };
        order.sort_unstable_by(|&a, &b| {
            let ((ua, ha, la), (ub, hb, lb)) = (hits(a), hits(b));
            ua.cmp(&ub)
                .then(hb.cmp(&ha))
                .then(lb.cmp(&la))
                .then(a.cmp(&b))
        });
        let mut keep = vec![false; old_tuples.len()];
        let mut run: Option<(u32, usize)> = None;
        for &i in &order {
            let uid = hits(i).0;
            let n = match run {
                Some((u, n)) if u == uid => n + 1,
                _ => 1,
            };
            run = Some((uid, n));
            if n <= level {
                if let Some(k) = keep.get_mut(i) {
                    *k = true;
                }
            }
        }
        drop(order);
        let s = &old_strings;
        for (i, t) in old_tuples.iter().enumerate() {
            let summarise = t.flags & SUMMARISED == 0 && !keep.get(i).copied().unwrap_or(false);
            let key = if summarise {
                EventKey {
                    op: s.get(t.op),
                    path: "",
                    map: s.opt(t.map),
                    uid: t.uid,
                    comm: "",
                    exe: None,
                    result: s.get(t.result),
                    // The unit and the host are few and not the caller's to choose; the
                    // user's unit and a rootless container are, so they go with the names.
                    unit: s.opt(t.unit),
                    user_unit: None,
                    container: None,
                    host: s.opt(t.host),
                    flags: SUMMARISED | (t.flags & (MAP_FLAGS | UNIT_FLAGS | HOST_FLAGS)),
                }
            } else {
                t.key(s)
            };
            self.merge_tuple(&key, &t.seen);
        }
        self.tuples.shrink_to_fit();
    }

    /// Adds `seen` to the tuple of `key`, creating it the first time the key appears;
    /// `true` if it was created.
    pub(super) fn merge_tuple(&mut self, key: &EventKey<'_>, seen: &Seen) -> bool {
        let hash = self.hasher.hash_one(key);
        let head = self.heads.get(&hash).copied().unwrap_or(NONE);
        let mut at = head;
        while let Some(tuple) = self.tuples.get(at as usize) {
            if self.matches(tuple, key) {
                if let Some(tuple) = self.tuples.get_mut(at as usize) {
                    tuple.seen.merge(seen);
                }
                return false;
            }
            at = tuple.next;
        }
        // A new combination (or, astronomically rarely, a 64-bit hash collision: chained).
        let Some(index) = u32::try_from(self.tuples.len()).ok().filter(|&i| i != NONE) else {
            // 4 billion distinct combinations would not fit in memory long before this.
            return false;
        };
        let s = &mut self.strings;
        let tuple = Tuple {
            op: s.id(key.op),
            path: s.id(key.path),
            map: s.opt_id(key.map),
            uid: key.uid,
            comm: s.id(key.comm),
            exe: s.opt_id(key.exe),
            result: s.id(key.result),
            unit: s.opt_id(key.unit),
            user_unit: s.opt_id(key.user_unit),
            container: s.opt_id(key.container),
            host: s.opt_id(key.host),
            flags: key.flags,
            seen: *seen,
            next: head,
        };
        self.tuples.push(tuple);
        self.heads.insert(hash, index);
        true
    }

    /// Adds another worker's aggregation to this one.
    pub(super) fn absorb(&mut self, other: &Aggregator) {
        self.events = self.events.saturating_add(other.events);
        self.lost = self.lost.saturating_add(other.lost);
        self.outside = self.outside.saturating_add(other.outside);
        self.truncated = self.truncated.saturating_add(other.truncated);
        for (&uid, seen) in &other.suppressed {
            self.suppressed
                .entry(uid)
                .or_insert_with(Seen::new)
                .merge(seen);
        }
        let s = &other.strings;
        for t in &other.tuples {
            if self.merge_tuple(&t.key(s), &t.seen) && self.mem() > self.budget {
                self.compact();
            }
        }
    }

    pub(super) fn matches(&self, t: &Tuple, key: &EventKey<'_>) -> bool {
        let s = &self.strings;
        t.uid == key.uid
            && t.flags == key.flags
            && s.get(t.path) == key.path
            && s.get(t.comm) == key.comm
            && s.get(t.op) == key.op
            && s.get(t.result) == key.result
            && s.opt(t.exe) == key.exe
            && s.opt(t.map) == key.map
            && s.opt(t.unit) == key.unit
            && s.opt(t.user_unit) == key.user_unit
            && s.opt(t.container) == key.container
            && s.opt(t.host) == key.host
    }
}
