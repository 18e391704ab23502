//! FUSE over io_uring, the unsafe part: one queue's ring, owning every buffer the kernel may
//! write into while it holds them.
//!
//! Safety model. An `Entry` (header buffer, payload buffer and the two-element iovec that names
//! them) is handed to the kernel by `Ring::register` or `Ring::commit`, which take it by value and
//! keep it in the ring's `held` table until the kernel completes that command (a CQE with the
//! entry's slot as `user_data`). Only then does `Ring::wait` give it back, and only then may the
//! rest of the program read or write its buffers: from a CQE on, the kernel holds no command for
//! that entry and does not touch its memory until the next commit (fs/fuse/dev_uring.c: the
//! entry is "in userspace"). Entries the kernel still holds when a `Ring` is dropped are leaked,
//! never freed: the kernel keeps their addresses, and freed memory could be written into.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::check;

/// `struct fuse_uring_req_header`: in/out header (128), op struct (128), `fuse_uring_ent_in_out`.
pub const HEADER_SIZE: usize = 288;
/// Where the request's `fuse_in_header` is, and where the reply's `fuse_out_header` goes.
pub const IN_OUT: std::ops::Range<usize> = 0..128;
/// The request's first argument, the per-operation struct (e.g. `fuse_open_in`).
pub const OP_IN: std::ops::Range<usize> = 128..256;
/// `fuse_uring_ent_in_out.commit_id` and `.payload_sz`.
const COMMIT_ID_AT: usize = 264;
const PAYLOAD_SZ_AT: usize = 272;

/// `enum fuse_uring_cmd` (include/uapi/linux/fuse.h).
const CMD_INVALID: u32 = 0;
const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;

/// `user_data` of the two commands that are not entries.
const PROBE: u64 = u64::MAX;
const WAKE: u64 = u64::MAX - 1;

/// One element of the iovec array a REGISTER names (`struct iovec`: a pointer and a size, both
/// pointer-sized on Linux).
#[repr(C)]
struct RawIovec {
    base: usize,
    len: usize,
}

/// One ring entry's memory. Moving an `Entry` moves only its boxes' pointers: the buffers stay
/// where the kernel was told they are.
pub struct Entry {
    slot: u32,
    header: Box<[u8; HEADER_SIZE]>,
    payload: Box<[u8]>,
    iov: Box<[RawIovec; 2]>,
}

impl Entry {
    /// `payload` bytes of payload buffer (zero pages: untouched memory costs nothing).
    pub fn new(slot: u32, payload: usize) -> Entry {
        let mut header = Box::new([0u8; HEADER_SIZE]);
        let mut payload = vec![0u8; payload].into_boxed_slice();
        let iov = Box::new([
            RawIovec {
                base: header.as_mut_ptr() as usize,
                len: HEADER_SIZE,
            },
            RawIovec {
                base: payload.as_mut_ptr() as usize,
                len: payload.len(),
            },
        ]);
        Entry {
            slot,
            header,
            payload,
            iov,
        }
    }

    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The request: (in header area, op struct area, payload bytes as the kernel sized them).
    /// A `payload_sz` beyond the buffer is cut to the buffer.
    pub fn request(&self) -> (&[u8], &[u8], &[u8]) {
        let size = self.payload_size().min(self.payload.len());
        (
            &self.header[IN_OUT],
            &self.header[OP_IN],
            &self.payload[..size],
        )
    }

    /// `fuse_uring_ent_in_out.commit_id` as the kernel wrote it.
    pub fn commit_id(&self) -> u64 {
        u64::from_ne_bytes(read_array(&self.header[..], COMMIT_ID_AT))
    }

    fn payload_size(&self) -> usize {
        u32::from_ne_bytes(read_array(&self.header[..], PAYLOAD_SZ_AT)) as usize
    }

    /// The payload buffer, for the reply's arguments.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.payload
    }

    /// Writes the reply header: `fuse_out_header { len, error, unique }` and `payload_sz`.
    pub fn set_reply(&mut self, unique: u64, error: i32, payload: usize) {
        let payload = payload.min(self.payload.len());
        let len = (16 + payload) as u32;
        self.header[0..4].copy_from_slice(&len.to_ne_bytes());
        self.header[4..8].copy_from_slice(&error.to_ne_bytes());
        self.header[8..16].copy_from_slice(&unique.to_ne_bytes());
        self.header[PAYLOAD_SZ_AT..PAYLOAD_SZ_AT + 4]
            .copy_from_slice(&(payload as u32).to_ne_bytes());
    }
}

/// Offset of `len` in `struct io_uring_sqe` (opcode, flags, ioprio, fd, off, addr, len).
const SQE_LEN_AT: usize = 24;

/// Sets an SQE's `len`, which the crate's `UringCmd80` does not expose.
fn with_len(sqe: squeue::Entry128, len: u32) -> squeue::Entry128 {
    // SAFETY: `Entry128` is `#[repr(C)]` over the kernel's 64-byte `io_uring_sqe` followed by
    // 64 command bytes: 128 bytes of plain integers, for which every bit pattern is valid
    // (transmute checks the sizes are equal), and it owns nothing (no Drop).
    let mut bytes: [u8; 128] = unsafe { std::mem::transmute(sqe) };
    bytes[SQE_LEN_AT..SQE_LEN_AT + 4].copy_from_slice(&len.to_ne_bytes());
    // SAFETY: as above, the other way.
    unsafe { std::mem::transmute(bytes) }
}

fn read_array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = bytes.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

/// What a wait brought back.
pub enum Event {
    /// The kernel is done with a command on this entry: `res` 0 means it carries a request; a
    /// negative errno means the command failed (or the connection went: -ENOTCONN at teardown).
    Entry { entry: Entry, res: i32 },
    /// The wake-up eventfd fired (other threads have something for this queue).
    Woken,
}

/// One queue's ring on a `/dev/fuse` connection.
pub struct Ring {
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    /// The `/dev/fuse` fd FUSE commands go to (set once the mount exists).
    dev: Option<Arc<OwnedFd>>,
    qid: u16,
    /// Entries the kernel holds, by slot.
    held: Vec<Option<Entry>>,
    in_kernel: usize,
    /// Eventfd and its 8-byte read buffer (the buffer is the kernel's while `wake_armed`).
    wake: Option<(Arc<OwnedFd>, Box<[u8; 8]>)>,
    wake_armed: bool,
    probe_done: Option<i32>,
}

impl Ring {
    /// Sets up a ring (SQE128, as FUSE commands need) with room for `depth` entries and the
    /// wake-up read. Call it on the thread that will use the ring: it is single-issuer.
    pub fn new(qid: u16, depth: u32) -> io::Result<Ring> {
        let size = (depth + 2).next_power_of_two();
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(size)?;
        let mut held = Vec::new();
        held.resize_with(depth as usize, || None);
        Ok(Ring {
            ring,
            dev: None,
            qid,
            held,
            in_kernel: 0,
            wake: None,
            wake_armed: false,
            probe_done: None,
        })
    }

    /// The connection's `/dev/fuse` fd, which every FUSE command names.
    pub fn connect(&mut self, dev: Arc<OwnedFd>) {
        self.dev = Some(dev);
    }

    /// How many entries the kernel holds.
    pub fn in_kernel(&self) -> usize {
        self.in_kernel
    }

    fn cmd(&self, cmd_op: u32, commit_id: u64, addr: Option<u64>) -> squeue::Entry128 {
        self.cmd_for(self.qid, cmd_op, commit_id, addr)
    }

    fn cmd_for(
        &self,
        qid: u16,
        cmd_op: u32,
        commit_id: u64,
        addr: Option<u64>,
    ) -> squeue::Entry128 {
        // struct fuse_uring_cmd_req { u64 flags; u64 commit_id; u16 qid; u8 padding[6] }.
        let mut cmd = [0u8; 80];
        cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
        cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
        // Before `connect`, -1: the kernel answers EBADF.
        let fd = self.dev.as_ref().map_or(-1, |d| d.as_raw_fd());
        let mut op = opcode::UringCmd80::new(types::Fd(fd), cmd_op).cmd(cmd);
        match addr {
            Some(addr) => {
                op = op.addr(Some(addr));
                // The kernel wants the iovec count in `len` (two: headers and payload).
                with_len(op.build(), 2)
            }
            None => op.build(),
        }
    }

    fn push(&mut self, sqe: &squeue::Entry128) -> io::Result<()> {
        loop {
            // SAFETY: every buffer an SQE of this module names is owned by `self` (an entry in
            // `held`, the wake buffer) or is empty (the probe), and stays allocated until its
            // CQE has been reaped, or forever (Drop leaks what the kernel still holds).
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                return Ok(());
            }
            // Full: hand what is queued to the kernel first.
            self.ring.submit()?;
        }
    }

    fn hold(&mut self, entry: Entry) -> io::Result<u64> {
        let slot = entry.slot as usize;
        match self.held.get_mut(slot) {
            Some(place @ None) => {
                *place = Some(entry);
                self.in_kernel += 1;
                Ok(slot as u64)
            }
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    /// Asks the kernel whether the connection is ready for REGISTER: 0 when it is (the kernel
    /// answers an invalid command with EINVAL once INIT is done), else the negative errno
    /// (-EAGAIN before the INIT reply was processed, -EOPNOTSUPP with enable_uring off,
    /// -ENOTCONN/-ECONNABORTED when the connection is gone).
    pub fn probe(&mut self) -> io::Result<i32> {
        let sqe = self.cmd(CMD_INVALID, 0, None).user_data(PROBE);
        Ok(match self.once(sqe)? {
            r if r == -libc::EINVAL => 0,
            r => r.min(-1),
        })
    }

    /// Turns io_uring off for the connection and releases callers waiting for the ring to
    /// `/dev/fuse`: a REGISTER for a queue that cannot exist, which the kernel refuses
    /// (EINVAL) and answers by switching the connection back (fs/fuse/dev_uring.c,
    /// `fuse_uring_cmd`). Returns the kernel's answer (a negative errno).
    pub fn release(&mut self) -> io::Result<i32> {
        let sqe = self
            .cmd_for(u16::MAX, CMD_REGISTER, 0, None)
            .user_data(PROBE);
        self.once(sqe)
    }

    /// Submits one non-entry command and waits for its completion.
    fn once(&mut self, sqe: squeue::Entry128) -> io::Result<i32> {
        self.push(&sqe)?;
        self.probe_done = None;
        let mut events = Vec::new();
        while self.probe_done.is_none() {
            self.wait(&mut events)?;
            if !events.is_empty() {
                // Nothing is registered yet, so nothing else can complete.
                return Err(io::Error::other("unexpected completion while probing"));
            }
        }
        Ok(self.probe_done.take().unwrap_or(-libc::EIO))
    }

    /// Gives an entry to the kernel (FUSE_IO_URING_CMD_REGISTER) and submits at once. A failure
    /// the kernel reports inline comes back from the next `wait`/`poll` as an `Event::Entry`
    /// with a negative `res`.
    pub fn register(&mut self, entry: Entry) -> io::Result<()> {
        let addr = entry.iov.as_ptr() as u64;
        let slot = self.hold(entry)?;
        let sqe = self.cmd(CMD_REGISTER, 0, Some(addr)).user_data(slot);
        self.push(&sqe)?;
        self.ring.submit()?;
        Ok(())
    }

    /// Commits the reply in `entry` and fetches the next request into it
    /// (FUSE_IO_URING_CMD_COMMIT_AND_FETCH). Queued; the next `wait` submits it.
    pub fn commit(&mut self, entry: Entry, commit_id: u64) -> io::Result<()> {
        let slot = self.hold(entry)?;
        let sqe = self
            .cmd(CMD_COMMIT_AND_FETCH, commit_id, None)
            .user_data(slot);
        self.push(&sqe)
    }

    /// Keeps a read of `fd` (an eventfd) pending, so that writing to it wakes `wait`.
    pub fn watch(&mut self, fd: Arc<OwnedFd>) -> io::Result<()> {
        self.wake = Some((fd, Box::new([0u8; 8])));
        self.arm_wake()
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        let Some((fd, buf)) = self.wake.as_mut() else {
            return Ok(());
        };
        let sqe: squeue::Entry128 =
            opcode::Read::new(types::Fd(fd.as_raw_fd()), buf.as_mut_ptr(), 8)
                .build()
                .user_data(WAKE)
                .into();
        self.wake_armed = true;
        self.push(&sqe)
    }

    /// Submits what is queued, waits for at least one completion, and appends what completed.
    pub fn wait(&mut self, events: &mut Vec<Event>) -> io::Result<()> {
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // The CQ is full: reap first.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => break,
                Err(e) => return Err(e),
            }
        }
        self.reap(events)
    }

    /// Submits what is queued and appends what completed, without waiting.
    pub fn poll(&mut self, events: &mut Vec<Event>) -> io::Result<()> {
        self.ring.submit()?;
        self.reap(events)
    }

    fn reap(&mut self, events: &mut Vec<Event>) -> io::Result<()> {
        let done: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        let mut rearm = false;
        for (data, res) in done {
            match data {
                PROBE => self.probe_done = Some(res),
                WAKE => {
                    self.wake_armed = false;
                    events.push(Event::Woken);
                    // A failed read (the eventfd cannot fail short of a bug) is not re-armed,
                    // or it would spin.
                    rearm = res > 0;
                }
                slot => {
                    if let Some(entry) = self.held.get_mut(slot as usize).and_then(Option::take) {
                        self.in_kernel -= 1;
                        events.push(Event::Entry { entry, res });
                    }
                }
            }
        }
        if rearm {
            self.arm_wake()?;
        }
        Ok(())
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // The kernel may still hold these addresses: never free them (see the module comment).
        for entry in self.held.drain(..).flatten() {
            std::mem::forget(entry);
        }
        if self.wake_armed {
            if let Some((_fd, buf)) = self.wake.take() {
                std::mem::forget(buf);
            }
        }
    }
}

/// An eventfd, for waking a ring's thread from other threads.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes two ints and returns a new fd or -1.
    let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter (wakes the ring reading it).
pub fn eventfd_signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one = 1u64.to_ne_bytes();
    // SAFETY: `one` is 8 readable bytes for the call; the fd is live.
    let n = unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    super::check_size(n).map(drop)
}

/// The memory page size (4096 where sysconf cannot tell).
pub fn page_size() -> usize {
    // SAFETY: sysconf takes an int and touches no memory.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET writes inside it (it ignores
    // numbers past the set's size), and sched_setaffinity reads `size_of` bytes of it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        check(libc::sched_setaffinity(
            0,
            std::mem::size_of::<libc::cpu_set_t>(),
            &set,
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_header_layout() {
        let mut e = Entry::new(3, 8192);
        e.set_reply(0x1122, -2, 100);
        let h = &e.header;
        assert_eq!(u32::from_ne_bytes(read_array(&h[..], 0)), 116);
        assert_eq!(i32::from_ne_bytes(read_array(&h[..], 4)), -2);
        assert_eq!(u64::from_ne_bytes(read_array(&h[..], 8)), 0x1122);
        assert_eq!(e.payload_size(), 100);
        // A size past the buffer is cut to it, in the reply and in a request.
        e.set_reply(1, 0, 1 << 30);
        assert_eq!(e.payload_size(), 8192);
        assert_eq!(e.request().2.len(), 8192);
        assert_eq!(e.iov[0].len, HEADER_SIZE);
        assert_eq!(e.iov[1].len, 8192);
        assert_eq!(
            std::mem::size_of::<RawIovec>(),
            std::mem::size_of::<libc::iovec>()
        );
    }
}
