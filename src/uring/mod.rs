//! FUSE over io_uring: one queue per possible CPU, each with its own ring and a thread pinned to
//! that CPU; requests that may block go to a small worker pool so that they never hold up the
//! other requests of their CPU.
//!
//! Division of labour (see the README's "Transports"): fuser keeps mounting, INIT and the
//! `/dev/fuse` loop, which also carries what the kernel never puts on a ring (FORGET,
//! BATCH_FORGET, INTERRUPT, notifications). This module only moves bytes: a `Handler` (the wire
//! codec over the same core as the fuser adapter) decodes, serves and encodes each request.
//!
//! Kernel facts this relies on (fs/fuse/dev_uring.c, 6.14+):
//! - The kernel picks a request's queue by the CPU its caller runs on, and uses the ring only
//!   once every possible CPU's queue has an entry; until then, after an INIT reply that asked
//!   for FUSE_OVER_IO_URING, new requests wait.
//! - Any command before the INIT reply is processed answers EAGAIN; an invalid command answers
//!   EINVAL after it, which `Ring::probe` uses to know when registering can start.
//! - A failed REGISTER turns io_uring off for the connection and releases the waiting callers to
//!   `/dev/fuse`. The registration order below makes that a clean fallback: every queue but the
//!   first registers; only if all succeeded does the first queue register (its first entry
//!   makes the ring ready). If any failed, the first queue registers nothing, the ring never
//!   becomes ready, and the other queues drop their rings (cancelling their entries).
//! - At unmount or abort the kernel completes every entry it holds with an error (-ENOTCONN),
//!   and answers later commits with one too: a queue thread ends once all its entries are back.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::sys::uring::{self as ring, Entry, Event, Ring};

mod glue;
pub use glue::handler;

/// Entries per queue. Each holds a payload buffer of max_write (1 MiB, touched only as far as
/// requests use it). A request that waits at a worker keeps its entry, so this is also how many
/// slow requests one CPU can have in flight before its fast ones queue in the kernel.
pub const DEPTH: u32 = 16;
/// Worker threads for requests that may block, shared by all queues.
const WORKERS: usize = 4;
/// A generous guard on the INIT handshake (the kernel answers in microseconds).
const INIT_GUARD: Duration = Duration::from_secs(30);

/// The kernel's switch: INIT offers FUSE_OVER_IO_URING only when it reads Y.
pub const ENABLE_PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

/// `Some(on)` from the parameter; `None` where the kernel has no FUSE io_uring at all.
pub fn kernel_enabled() -> Option<bool> {
    let text = std::fs::read_to_string(ENABLE_PARAM).ok()?;
    Some(matches!(text.trim(), "Y" | "y" | "1"))
}

/// What the fuser adapter's INIT and the daemon tell each other: whether to ask for
/// FUSE_OVER_IO_URING (rings are set up), and what INIT settled.
#[derive(Default)]
pub struct Handshake {
    want: std::sync::atomic::AtomicBool,
    settled: Mutex<Option<Negotiated>>,
}

/// What INIT settled about the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The kernel offered FUSE_OVER_IO_URING (only with enable_uring on).
    pub offered: bool,
    /// The reply asked for it: the kernel now waits for every queue to register.
    pub asked: bool,
    /// Payload buffer size the kernel requires of each entry.
    pub payload: usize,
}

impl Handshake {
    /// Set before INIT is read: whether INIT should ask for the ring.
    pub fn want(&self, on: bool) {
        self.want.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn wanted(&self) -> bool {
        self.want.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Called by INIT once it has decided.
    pub fn settle(&self, negotiated: Negotiated) {
        if let Ok(mut s) = self.settled.lock() {
            *s = Some(negotiated);
        }
    }

    /// What INIT settled (fuser answers INIT inside `Session::new`, so this is known once
    /// the session exists).
    pub fn settled(&self) -> Option<Negotiated> {
        *self.settled.lock().ok()?
    }
}

/// The payload buffer size the kernel checks at REGISTER (`fuse_uring_create`): at least
/// 8 KiB (FUSE_MIN_READ_BUFFER), max_write, and max_pages pages.
pub fn payload_size(max_write: u32, max_pages: u32, page: usize) -> usize {
    (8192usize)
        .max(max_write as usize)
        .max(max_pages as usize * page)
}

/// Serves one request from the bytes the kernel put in a ring entry.
pub trait Handler: Send + Sync + 'static {
    /// `in_header`: the `fuse_in_header` area (128 bytes); `op`: the per-operation struct
    /// area (128 bytes); `payload`: the rest of the request's arguments. Writes the reply's
    /// arguments into `out` and returns their size, or a positive errno. Never panics on bad
    /// bytes.
    fn serve(
        &self,
        in_header: &[u8],
        op: &[u8],
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, i32>;
    /// Whether this request may wait on the disk (or anything else slow), from its header and
    /// op struct: it then runs on a worker, not on its queue's thread.
    fn may_block(&self, in_header: &[u8], op: &[u8]) -> bool;
}

/// The CPUs the kernel counts queues for: `/sys/devices/system/cpu/possible` ("0-3,5,7-8").
pub fn possible_cpus() -> Result<Vec<usize>, String> {
    let path = "/sys/devices/system/cpu/possible";
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    parse_cpu_list(text.trim()).ok_or_else(|| format!("{path}: cannot parse {:?}", text.trim()))
}

fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.split(',') {
        let (lo, hi): (usize, usize) = match part.split_once('-') {
            Some((lo, hi)) => (lo.parse().ok()?, hi.parse().ok()?),
            None => {
                let n = part.parse().ok()?;
                (n, n)
            }
        };
        if lo > hi || hi > 65_535 {
            return None;
        }
        cpus.extend(lo..=hi);
    }
    Some(cpus)
}

/// What a queue thread is told after setup.
enum Go {
    Register {
        dev: Arc<OwnedFd>,
        handler: Arc<dyn Handler>,
        workers: Workers,
        payload: usize,
        /// The last queue to register: its first entry makes the ring ready, so from then
        /// on it serves with whatever entries the kernel took.
        last: bool,
        done: Sender<(u16, Result<(), String>)>,
    },
    /// Registration failed elsewhere: switch the connection back to /dev/fuse, then end.
    Release(Arc<OwnedFd>, Sender<(u16, Result<(), String>)>),
    Stop,
}

/// What reaches a queue thread while it serves.
enum Msg {
    /// A worker finished this entry's request: commit it.
    Done(Entry),
    /// Abandon the ring (registration failed elsewhere).
    Stop,
}

struct Queue {
    qid: u16,
    go: Sender<Go>,
    inbox: Sender<Msg>,
    wake: Arc<OwnedFd>,
}

/// Rings set up and their threads pinned, nothing registered yet.
pub struct Prepared {
    queues: Vec<Queue>,
    exited: Arc<Exited>,
}

impl Prepared {
    /// The fds these rings hold for the daemon's life: a ring and an eventfd per queue, and
    /// the `/dev/fuse` dup they and the wire share.
    pub fn fds(&self) -> usize {
        2 * self.queues.len() + 1
    }
}

/// Counts queue threads that have ended.
#[derive(Default)]
struct Exited {
    count: Mutex<usize>,
    cond: Condvar,
}

impl Exited {
    fn one(&self) {
        if let Ok(mut n) = self.count.lock() {
            *n += 1;
        }
        self.cond.notify_all();
    }
}

/// Serving rings.
pub struct Running {
    queues: usize,
    exited: Arc<Exited>,
    workers: Workers,
}

/// Sets up one ring per possible CPU, each on a thread pinned to its CPU, before the mount
/// (INIT asks for io_uring only when this worked). Fails, with nothing left running, if any
/// ring cannot be set up (io_uring disabled by `kernel.io_uring_disabled`, or not allowed to
/// this process).
pub fn prepare() -> Result<Prepared, String> {
    let cpus = possible_cpus()?;
    let exited = Arc::new(Exited::default());
    let (setup_tx, setup_rx) = mpsc::channel();
    let mut queues = Vec::new();
    let mut failure = None;
    for (qid, &cpu) in cpus.iter().enumerate() {
        let Ok(qid) = u16::try_from(qid) else {
            failure = Some("more possible CPUs than FUSE queues".to_string());
            break;
        };
        match spawn_queue(qid, cpu, setup_tx.clone(), Arc::clone(&exited)) {
            Ok(queue) => queues.push(queue),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(setup_tx);
    for _ in 0..queues.len() {
        match setup_rx.recv() {
            Ok((_, Ok(()))) => {}
            Ok((qid, Err(e))) => {
                failure.get_or_insert(format!("io_uring queue {qid}: {e}"));
            }
            Err(_) => {
                failure.get_or_insert("a ring thread ended during setup".into());
            }
        }
    }
    let prepared = Prepared { queues, exited };
    match failure {
        None => Ok(prepared),
        Some(e) => {
            prepared.abandon();
            Err(e)
        }
    }
}

fn spawn_queue(
    qid: u16,
    cpu: usize,
    setup: Sender<(u16, Result<(), String>)>,
    exited: Arc<Exited>,
) -> Result<Queue, String> {
    let wake = Arc::new(ring::eventfd().map_err(|e| format!("eventfd: {e}"))?);
    let (go_tx, go_rx) = mpsc::channel();
    let (inbox_tx, inbox_rx) = mpsc::channel();
    let thread_wake = Arc::clone(&wake);
    let thread_inbox = inbox_tx.clone();
    std::thread::Builder::new()
        .name(format!("ring{qid}"))
        .spawn(move || {
            queue_thread(
                QueueThread {
                    qid,
                    cpu,
                    wake: thread_wake,
                    inbox_tx: thread_inbox,
                    inbox: inbox_rx,
                },
                setup,
                go_rx,
            );
            exited.one();
        })
        .map_err(|e| format!("cannot start ring thread {qid}: {e}"))?;
    Ok(Queue {
        qid,
        go: go_tx,
        inbox: inbox_tx,
        wake,
    })
}

impl Prepared {
    /// Nothing will be registered (INIT did not negotiate io_uring): the threads end.
    pub fn abandon(self) {
        for q in &self.queues {
            let _ = q.go.send(Go::Stop);
        }
    }

    /// Registers every queue's entries (see the module comment for the order) and starts
    /// serving. `payload` is each entry's payload buffer size (at least what the kernel
    /// computed from max_write and max_pages). On error nothing serves on the ring and the
    /// kernel has turned io_uring off for the connection, so callers go to `/dev/fuse`; the
    /// message says which queue failed and how.
    pub fn start(
        self,
        dev: Arc<OwnedFd>,
        handler: Arc<dyn Handler>,
        payload: usize,
    ) -> Result<Running, String> {
        let (done_tx, done_rx) = mpsc::channel();
        let mut first_went = false;
        let result = self.register_all(&dev, handler, payload, &done_tx, &done_rx, &mut first_went);
        match result {
            Ok(workers) => Ok(Running {
                queues: self.queues.len(),
                exited: Arc::clone(&self.exited),
                workers,
            }),
            Err(e) => {
                // A queue that failed has switched the connection back to /dev/fuse itself
                // (see `queue_thread`). If the first queue never registered, it does so now
                // (twice is harmless); then the queues that registered drop their rings.
                if !first_went {
                    if let Some(first) = self.queues.first() {
                        if first
                            .go
                            .send(Go::Release(Arc::clone(&dev), done_tx.clone()))
                            .is_ok()
                        {
                            match done_rx.recv_timeout(INIT_GUARD) {
                                Ok((_, Ok(()))) => {}
                                Ok((_, Err(why))) => log::error!(
                                    "cannot switch the connection back to /dev/fuse: {why}"
                                ),
                                Err(_) => log::error!(
                                    "cannot switch the connection back to /dev/fuse: no answer"
                                ),
                            }
                        }
                    }
                }
                for q in &self.queues {
                    let _ = q.go.send(Go::Stop);
                    let _ = q.inbox.send(Msg::Stop);
                    let _ = ring::eventfd_signal(q.wake.as_fd());
                }
                Err(e)
            }
        }
    }

    fn register_all(
        &self,
        dev: &Arc<OwnedFd>,
        handler: Arc<dyn Handler>,
        payload: usize,
        done_tx: &Sender<(u16, Result<(), String>)>,
        done_rx: &Receiver<(u16, Result<(), String>)>,
        first_went: &mut bool,
    ) -> Result<Workers, String> {
        // Every answer comes within the guard (a queue thread answers each Go, or ends, and
        // `done_tx` here keeps the channel open, so a plain recv could wait forever).
        let answer = || match done_rx.recv_timeout(INIT_GUARD) {
            Ok(answer) => Ok(answer),
            Err(_) => Err("a ring thread did not answer while registering".to_string()),
        };
        let workers = Workers::start(Arc::clone(&handler))?;
        let go = |q: &Queue, last: bool| {
            q.go.send(Go::Register {
                dev: Arc::clone(dev),
                handler: Arc::clone(&handler),
                workers: workers.clone(),
                payload,
                last,
                done: done_tx.clone(),
            })
            .map_err(|_| format!("ring thread {} is gone", q.qid))
        };
        let mut result = Ok(());
        let (first, rest) = match self.queues.split_first() {
            Some(split) => split,
            None => return Err("no CPUs to make queues for".into()),
        };
        let mut sent = 0;
        for q in rest {
            match go(q, false) {
                Ok(()) => sent += 1,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        for _ in 0..sent {
            match answer() {
                Ok((_, Ok(()))) => {}
                Ok((qid, Err(e))) => {
                    if result.is_ok() {
                        result = Err(format!("io_uring queue {qid}: {e}"));
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            result = go(first, true).and_then(|()| {
                *first_went = true;
                let (_, r) = answer()?;
                r.map_err(|e| format!("io_uring queue {}: {e}", first.qid))
            });
        }
        match result {
            Ok(()) => Ok(workers),
            Err(e) => {
                workers.stop(Instant::now() + INIT_GUARD);
                Err(e)
            }
        }
    }
}

impl Running {
    /// Waits (up to `guard`) for every queue thread to end: after unmount the kernel hands all
    /// entries back at once. Returns whether they all ended.
    pub fn join(self, guard: Duration) -> bool {
        let deadline = Instant::now() + guard;
        let Ok(mut n) = self.exited.count.lock() else {
            return false;
        };
        while *n < self.queues {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.exited.cond.wait_timeout(n, left) {
                Ok((guard, _)) => n = guard,
                Err(_) => return false,
            }
        }
        self.workers.stop(deadline);
        true
    }
}

struct QueueThread {
    qid: u16,
    cpu: usize,
    wake: Arc<OwnedFd>,
    inbox_tx: Sender<Msg>,
    inbox: Receiver<Msg>,
}

fn queue_thread(q: QueueThread, setup: Sender<(u16, Result<(), String>)>, go: Receiver<Go>) {
    if let Err(e) = ring::pin_to_cpu(q.cpu) {
        // Requests still reach the right queue; only locality is lost.
        log::warn!("ring thread {}: cannot pin to CPU {}: {e}", q.qid, q.cpu);
    }
    let mut r = match Ring::new(q.qid, DEPTH) {
        Ok(r) => r,
        Err(e) => {
            let _ = setup.send((q.qid, Err(format!("io_uring_setup: {e}"))));
            return;
        }
    };
    let _ = setup.send((q.qid, Ok(())));
    drop(setup);
    let (dev, handler, workers, payload, last, done) = match go.recv() {
        Ok(Go::Register {
            dev,
            handler,
            workers,
            payload,
            last,
            done,
        }) => (dev, handler, workers, payload, last, done),
        Ok(Go::Release(dev, done)) => {
            r.connect(dev);
            let _ = done.send((q.qid, release(&mut r)));
            return;
        }
        Ok(Go::Stop) | Err(_) => return,
    };
    r.connect(dev);
    match register(&mut r, &q, payload, last) {
        Ok(first) => {
            let _ = done.send((q.qid, Ok(())));
            serve(r, q, handler, workers, first);
        }
        Err(e) => {
            // Whatever failed, the kernel must not keep callers waiting for a ring that will
            // never be ready: switch the connection back to /dev/fuse before answering.
            if let Err(why) = release(&mut r) {
                log::error!("ring {}: cannot switch back to /dev/fuse: {why}", q.qid);
            }
            let _ = done.send((q.qid, Err(e)));
        }
    }
    // Not registered: dropping the ring cancels whatever the kernel took (and leaks it).
}

/// Waits until the kernel accepts commands (INIT processed).
fn ready(r: &mut Ring) -> Result<(), String> {
    let deadline = Instant::now() + INIT_GUARD;
    loop {
        match r.probe().map_err(|e| format!("io_uring_enter: {e}"))? {
            0 => return Ok(()),
            e if e == -libc::EAGAIN && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            e => return Err(format!("the kernel refused: {}", errno_text(-e))),
        }
    }
}

fn release(r: &mut Ring) -> Result<(), String> {
    ready(r)?;
    match r.release().map_err(|e| format!("io_uring_enter: {e}"))? {
        e if e == -libc::EINVAL => Ok(()),
        e => Err(format!("unexpected answer: {}", errno_text(-e))),
    }
}

/// Waits until the kernel accepts commands (INIT processed), then registers `DEPTH` entries.
/// Returns what already completed: requests, if this registration made the ring ready.
fn register(
    r: &mut Ring,
    q: &QueueThread,
    payload: usize,
    last: bool,
) -> Result<Vec<Event>, String> {
    ready(r)?;
    r.watch(Arc::clone(&q.wake))
        .map_err(|e| format!("io_uring: {e}"))?;
    let payload = test_payload_override(q.qid).unwrap_or(payload);
    for slot in 0..DEPTH {
        r.register(Entry::new(slot, payload))
            .map_err(|e| format!("io_uring_enter: {e}"))?;
    }
    // A REGISTER the kernel refused completed inline, before submission returned.
    let mut events = Vec::new();
    r.poll(&mut events)
        .map_err(|e| format!("io_uring_enter: {e}"))?;
    let mut refused = None;
    events.retain(|ev| match ev {
        Event::Entry { res, .. } if *res < 0 => {
            refused = Some(*res);
            false
        }
        _ => true,
    });
    match refused {
        None => Ok(events),
        Some(res) if last && r.in_kernel() > 0 => {
            log::warn!(
                "ring {}: the kernel refused some entries ({}); serving with {}",
                q.qid,
                errno_text(-res),
                r.in_kernel()
            );
            Ok(events)
        }
        Some(res) => Err(format!("REGISTER refused: {}", errno_text(-res))),
    }
}

/// Debug builds only: `RELOCFS_TEST_URING_SHORT_PAYLOAD=QID` registers queue QID's entries
/// with a payload buffer smaller than the kernel requires, so that the kernel refuses them
/// (EINVAL): how the tests make registration fail for real. Release builds ignore it.
fn test_payload_override(qid: u16) -> Option<usize> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let wanted: u16 = std::env::var("RELOCFS_TEST_URING_SHORT_PAYLOAD")
        .ok()?
        .parse()
        .ok()?;
    (wanted == qid).then_some(4096)
}

fn errno_text(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

/// The serving loop of one queue.
fn serve(
    mut r: Ring,
    q: QueueThread,
    handler: Arc<dyn Handler>,
    workers: Workers,
    mut events: Vec<Event>,
) {
    let mut at_workers = 0usize;
    let mut stopping = false;
    let mut scratch = Vec::new();
    loop {
        if stopping && r.in_kernel() == 0 && at_workers == 0 {
            return;
        }
        if events.is_empty() {
            if let Err(e) = r.wait(&mut events) {
                log::error!("ring {}: io_uring_enter: {e}; the queue stops", q.qid);
                return;
            }
        }
        for ev in std::mem::take(&mut events) {
            match ev {
                Event::Entry { entry, res: 0 } => {
                    // Served even while stopping: the commit then comes back with -ENOTCONN.
                    let blocks = {
                        let (h, op, _) = entry.request();
                        handler.may_block(h, op)
                    };
                    if blocks {
                        at_workers += 1;
                        workers.submit(Job {
                            entry,
                            back: q.inbox_tx.clone(),
                            wake: Arc::clone(&q.wake),
                        });
                    } else {
                        let entry = answer(&*handler, entry, &mut scratch);
                        commit(&mut r, q.qid, entry);
                    }
                }
                Event::Entry { res, .. } => {
                    // The connection went (-ENOTCONN at unmount or abort): this entry is back
                    // for good, and the others follow. Any other refusal loses this one entry
                    // (the queue serves on with the rest).
                    if res == -libc::ENOTCONN || res == -libc::ECONNABORTED {
                        stopping = true;
                    } else {
                        log::warn!("ring {}: command failed: {}", q.qid, errno_text(-res));
                    }
                }
                Event::Woken => {
                    while let Ok(msg) = q.inbox.try_recv() {
                        match msg {
                            Msg::Done(entry) => {
                                at_workers = at_workers.saturating_sub(1);
                                commit(&mut r, q.qid, entry);
                            }
                            Msg::Stop => {
                                // Registration failed on another queue: drop the ring now; the
                                // kernel cancels (and this module leaks) what it holds.
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

fn commit(r: &mut Ring, qid: u16, entry: Entry) {
    let id = entry.commit_id();
    if let Err(e) = r.commit(entry, id) {
        log::error!("ring {qid}: cannot commit: {e}");
    }
}

/// The `unique` of the request in an entry (`fuse_in_header` bytes 8..16).
fn unique_of(entry: &Entry) -> u64 {
    let (h, _, _) = entry.request();
    h.get(8..16)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_ne_bytes)
        .unwrap_or(0)
}

/// Serves the request in `entry` and writes the reply into it. The request's payload is copied
/// out first: the reply's arguments go into the same buffer.
fn answer(handler: &dyn Handler, mut entry: Entry, scratch: &mut Vec<u8>) -> Entry {
    let unique = unique_of(&entry);
    let mut head = [0u8; 256];
    {
        let (h, op, payload) = entry.request();
        head[..128].copy_from_slice(h);
        head[128..].copy_from_slice(op);
        scratch.clear();
        scratch.extend_from_slice(payload);
    }
    let (h, op) = head.split_at(128);
    match handler.serve(h, op, scratch, entry.payload_mut()) {
        Ok(n) => entry.set_reply(unique, 0, n),
        Err(errno) => entry.set_reply(unique, -errno.abs().max(1), 0),
    }
    // Keep the scratch from holding a large write's buffer for good.
    if scratch.capacity() > 64 * 1024 {
        *scratch = Vec::new();
    }
    entry
}

/// One request handed to a worker.
struct Job {
    entry: Entry,
    back: Sender<Msg>,
    wake: Arc<OwnedFd>,
}

/// The worker pool for requests that may block. Workers take jobs from one shared queue;
/// each finished entry goes back to its queue thread, which commits it (a ring is
/// single-issuer).
#[derive(Clone)]
struct Workers {
    jobs: Arc<(Mutex<WorkQueue>, Condvar)>,
    threads: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
}

#[derive(Default)]
struct WorkQueue {
    jobs: VecDeque<Job>,
    stop: bool,
}

impl Workers {
    fn start(handler: Arc<dyn Handler>) -> Result<Workers, String> {
        let workers = Workers {
            jobs: Arc::default(),
            threads: Arc::default(),
        };
        for n in 0..WORKERS {
            let jobs = Arc::clone(&workers.jobs);
            let handler = Arc::clone(&handler);
            let spawned = std::thread::Builder::new()
                .name(format!("ring-worker{n}"))
                .spawn(move || worker(&jobs, &*handler));
            match spawned {
                Ok(t) => {
                    if let Ok(mut threads) = workers.threads.lock() {
                        threads.push(t);
                    }
                }
                Err(e) => {
                    workers.stop(Instant::now() + INIT_GUARD);
                    return Err(format!("cannot start ring worker: {e}"));
                }
            }
        }
        Ok(workers)
    }

    fn submit(&self, job: Job) {
        let (lock, cond) = &*self.jobs;
        match lock.lock() {
            Ok(mut q) => q.jobs.push_back(job),
            Err(_) => {
                // Cannot happen: workers hold the lock only to pop, and `answer` runs outside.
                log::error!("ring worker queue poisoned: a request is lost");
                return;
            }
        }
        cond.notify_one();
    }

    /// Ends the workers once the jobs queued are done, and waits for them (until `deadline`):
    /// each holds the handler, and through it the filesystem and its audit log.
    fn stop(&self, deadline: Instant) {
        let (lock, cond) = &*self.jobs;
        if let Ok(mut q) = lock.lock() {
            q.stop = true;
        }
        cond.notify_all();
        let threads = match self.threads.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(_) => return,
        };
        for t in threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

fn worker(jobs: &(Mutex<WorkQueue>, Condvar), handler: &dyn Handler) {
    let (lock, cond) = jobs;
    let mut scratch = Vec::new();
    loop {
        let job = {
            let Ok(mut q) = lock.lock() else { return };
            loop {
                if let Some(job) = q.jobs.pop_front() {
                    break job;
                }
                if q.stop {
                    return;
                }
                q = match cond.wait(q) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
        };
        let Job { entry, back, wake } = job;
        let entry = answer(handler, entry, &mut scratch);
        if back.send(Msg::Done(entry)).is_ok() {
            let _ = ring::eventfd_signal(wake.as_fd());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_sizes() {
        assert_eq!(payload_size(1 << 20, 256, 4096), 1 << 20);
        assert_eq!(payload_size(4096, 1, 4096), 8192);
        assert_eq!(payload_size(4096, 300, 4096), 300 * 4096);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("0-2,5,7-8"), Some(vec![0, 1, 2, 5, 7, 8]));
        assert_eq!(parse_cpu_list("2-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("0-99999999"), None);
    }
}
