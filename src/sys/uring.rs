//! A small io_uring, on the three raw system calls (`io_uring_setup`,
//! `io_uring_enter`, `io_uring_register`) and the kernel's own structures
//! (`<linux/io_uring.h>`), for the io_uring loop in `server/uring_loop.rs`.
//!
//! What it holds:
//! - the submission queue (SQ) and completion queue (CQ): rings in memory
//!   shared with the kernel (one `mmap`), and the array of submission
//!   entries (a second `mmap`). An entry is written, then published by a
//!   release store of the SQ tail; completions are read up to the CQ tail
//!   (an acquire load) and handed back by a release store of the CQ head;
//! - a ring of *provided buffers* ([`BufRing`]): buffers the kernel picks
//!   from only when data arrives for a `recv` that asked for one, so a
//!   connection that waits for input holds none.
//!
//! The pointer work is all here, each `unsafe` block next to what it
//! relies on. The loop sees only [`Uring`], whose calls are all safe: a
//! request names memory only as a provided buffer's number, and a buffer
//! outlives every request that may touch it.

use std::collections::VecDeque;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::time::Duration;

// Setup flags.
const SETUP_CQSIZE: u32 = 1 << 3;
const SETUP_R_DISABLED: u32 = 1 << 6;
const SETUP_SUBMIT_ALL: u32 = 1 << 7;
const SETUP_SINGLE_ISSUER: u32 = 1 << 12;
const SETUP_DEFER_TASKRUN: u32 = 1 << 13;
// Features the loop relies on.
const FEAT_SINGLE_MMAP: u32 = 1 << 0;
const FEAT_NODROP: u32 = 1 << 1;
const FEAT_EXT_ARG: u32 = 1 << 8;
// mmap offsets.
const OFF_SQ_RING: libc::off_t = 0;
const OFF_SQES: libc::off_t = 0x1000_0000;
// io_uring_enter flags.
const ENTER_GETEVENTS: u32 = 1 << 0;
const ENTER_EXT_ARG: u32 = 1 << 3;
// io_uring_register opcodes.
const REGISTER_ENABLE_RINGS: u32 = 12;
const REGISTER_PBUF_RING: u32 = 22;

// Opcodes.
const OP_POLL_ADD: u8 = 6;
const OP_ACCEPT: u8 = 13;
const OP_ASYNC_CANCEL: u8 = 14;
// `ioprio` of an accept: keep accepting (one completion per client).
const ACCEPT_MULTISHOT: u16 = 1 << 0;
const ASYNC_CANCEL_ALL: u32 = 1 << 0;
const ASYNC_CANCEL_FD: u32 = 1 << 1;
const OP_SEND: u8 = 26;
const OP_RECV: u8 = 27;
// `ioprio` of a recv: wait for data before trying (`IORING_RECVSEND_POLL_FIRST`).
const RECVSEND_POLL_FIRST: u16 = 1 << 0;
// Entry flags: take the buffer from the provided-buffer group `buf_group`;
// post no completion if the request succeeds.
const SQE_BUFFER_SELECT: u8 = 1 << 5;
const SQE_CQE_SKIP_SUCCESS: u8 = 1 << 6;
// Completion flag: `flags >> CQE_BUFFER_SHIFT` is the buffer used.
const CQE_F_BUFFER: u32 = 1 << 0;
// Completion flag: the (multishot) request goes on.
const CQE_F_MORE: u32 = 1 << 1;
const CQE_BUFFER_SHIFT: u32 = 16;

#[repr(C)]
#[derive(Default)]
struct SqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct CqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

/// `struct io_uring_params`.
#[repr(C)]
#[derive(Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqOffsets,
    cq_off: CqOffsets,
}

/// `struct io_uring_sqe`, with the unions the loop uses named for it.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Sqe {
    opcode: u8,
    flags: u8,
    ioprio: u16,
    fd: i32,
    off: u64,
    /// The buffer (send, recv), or the `user_data` to cancel.
    addr: u64,
    len: u32,
    /// `msg_flags` (send, recv), `poll32_events` (poll).
    op_flags: u32,
    user_data: u64,
    /// `buf_group` with [`SQE_BUFFER_SELECT`].
    buf_group: u16,
    personality: u16,
    splice_fd_in: i32,
    addr3: u64,
    pad: u64,
}

/// `struct io_uring_cqe`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cqe {
    pub(crate) user_data: u64,
    /// The call's result, or `-errno`.
    pub(crate) res: i32,
    flags: u32,
}

impl Sqe {
    /// `recv` of up to `len` bytes into a buffer the kernel picks from
    /// group 0 when data arrives ([`BufRing`]). Tried at once, it picks a
    /// buffer before it looks for data: with none left it fails with
    /// `ENOBUFS` even on a socket with nothing to read. With `poll_first`
    /// it waits for data before it tries, which costs a poll where data is
    /// often there already (a kept-open connection).
    pub(crate) fn recv_select(fd: RawFd, len: u32, user_data: u64, poll_first: bool) -> Sqe {
        Sqe {
            opcode: OP_RECV,
            flags: SQE_BUFFER_SELECT,
            ioprio: if poll_first { RECVSEND_POLL_FIRST } else { 0 },
            fd,
            len,
            buf_group: 0,
            user_data,
            ..Sqe::default()
        }
    }

    /// `send` of `buf` with `msg_flags`. The bytes must stay put until the
    /// completion arrives.
    pub(crate) fn send(fd: RawFd, buf: &[u8], msg_flags: i32, user_data: u64) -> Sqe {
        Sqe {
            opcode: OP_SEND,
            fd,
            addr: buf.as_ptr() as u64,
            len: u32::try_from(buf.len()).unwrap_or(u32::MAX),
            op_flags: msg_flags as u32,
            user_data,
            ..Sqe::default()
        }
    }

    /// A one-shot poll for `events` (`POLLIN`, `POLLOUT`, `EPOLLEXCLUSIVE`).
    pub(crate) fn poll(fd: RawFd, events: u32, user_data: u64) -> Sqe {
        Sqe { opcode: OP_POLL_ADD, fd, op_flags: events, user_data, ..Sqe::default() }
    }

    /// `accept4` of every client that arrives on listener `fd`, each its
    /// own completion (the new descriptor, opened with `flags`), until it
    /// fails or is cancelled. No address is asked for.
    pub(crate) fn accept_multishot(fd: RawFd, flags: i32, user_data: u64) -> Sqe {
        Sqe { opcode: OP_ACCEPT, ioprio: ACCEPT_MULTISHOT, fd, op_flags: flags as u32, user_data, ..Sqe::default() }
    }

    /// Cancels every request on descriptor `fd`; completes only if that
    /// fails (nothing was left to cancel).
    pub(crate) fn cancel_fd(fd: RawFd, user_data: u64) -> Sqe {
        Sqe {
            opcode: OP_ASYNC_CANCEL,
            flags: SQE_CQE_SKIP_SUCCESS,
            fd,
            op_flags: ASYNC_CANCEL_FD | ASYNC_CANCEL_ALL,
            user_data,
            ..Sqe::default()
        }
    }
}

impl Cqe {
    /// The descriptor an accept completed with, owned from here on.
    ///
    /// # Safety
    ///
    /// Only for a completion of an accept request
    /// ([`Sqe::accept_multishot`]): its result is then a descriptor the
    /// kernel has just installed for this request, which nothing else
    /// owns. (Any other result would be taken for a descriptor.)
    pub(crate) unsafe fn accepted(&self) -> Option<OwnedFd> {
        // SAFETY: the caller's promise, above; a negative result is no
        // descriptor and is not taken.
        (self.res >= 0).then(|| unsafe { OwnedFd::from_raw_fd(self.res) })
    }

    /// A multishot request goes on after this completion.
    pub(crate) fn more(&self) -> bool {
        self.flags & CQE_F_MORE != 0
    }

    /// The provided buffer the request took, if it took one.
    pub(crate) fn buffer(&self) -> Option<u16> {
        (self.flags & CQE_F_BUFFER != 0).then_some((self.flags >> CQE_BUFFER_SHIFT) as u16)
    }
}

/// `struct io_uring_buf_reg`.
#[repr(C)]
struct BufReg {
    ring_addr: u64,
    ring_entries: u32,
    bgid: u16,
    flags: u16,
    resv: [u64; 3],
}

/// `struct io_uring_buf`: one entry of a provided-buffer ring.
#[repr(C)]
struct Buf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

/// `struct io_uring_getevents_arg`.
#[repr(C)]
struct GeteventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    min_wait_usec: u32,
    ts: u64,
}

/// `struct __kernel_timespec`, what `ts` points to: 64-bit fields on every
/// target (`libc::timespec` has a 32-bit `tv_sec` on some 32-bit ones).
#[repr(C)]
struct KernelTimespec {
    tv_sec: i64,
    tv_nsec: i64,
}

const _: () = assert!(std::mem::size_of::<Params>() == 120);
const _: () = assert!(std::mem::size_of::<Sqe>() == 64);
const _: () = assert!(std::mem::size_of::<Cqe>() == 16);
const _: () = assert!(std::mem::size_of::<BufReg>() == 40);
const _: () = assert!(std::mem::size_of::<Buf>() == 16);
const _: () = assert!(std::mem::size_of::<GeteventsArg>() == 24);
const _: () = assert!(std::mem::size_of::<KernelTimespec>() == 16);

/// An `mmap`ed region, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// `mmap(2)` of `len` bytes: of `fd` at `offset` (shared with the
    /// kernel), or anonymous and private with `fd` `None` (pages cost
    /// nothing until first written).
    fn new(len: usize, fd: Option<RawFd>, offset: libc::off_t) -> io::Result<Mapping> {
        let (flags, fd) = match fd {
            Some(fd) => (libc::MAP_SHARED | libc::MAP_POPULATE, fd),
            None => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1),
        };
        // SAFETY: a new mapping at an address the kernel chooses: nothing
        // existing is touched; the result is checked before use.
        let ptr =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, fd, offset) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(ptr.cast::<u8>())
            .map(|ptr| Mapping { ptr, len })
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))
    }

    /// Gives the system back the pages of `len` bytes at `offset`: they
    /// read as zeros when next touched (`MADV_DONTNEED`; anonymous
    /// private mappings only). Fails only on a range outside the mapping.
    ///
    /// # Safety
    ///
    /// Nothing (the kernel included) may read or write the range meanwhile.
    unsafe fn discard(&self, offset: usize, len: usize) -> io::Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: the range lies within this mapping (checked above), and
        // the caller promises nothing reads or writes it meanwhile.
        let r = unsafe { libc::madvise(self.ptr.as_ptr().add(offset).cast(), len, libc::MADV_DONTNEED) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The address `offset` bytes in, as a `T` pointer. `offset +
    /// size_of::<T>()` must be within the mapping (checked by the callers'
    /// sizes, which come from the kernel's own offsets).
    fn at<T>(&self, offset: u32) -> *mut T {
        debug_assert!(offset as usize + std::mem::size_of::<T>() <= self.len);
        self.ptr.as_ptr().wrapping_add(offset as usize).cast::<T>()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One io_uring instance, used by the one thread that enabled it.
pub(crate) struct Ring {
    // Unmapped before the descriptor closes (fields drop in this order).
    _rings: Mapping,
    sqes: Mapping,
    fd: OwnedFd,
    sq_head: *const AtomicU32,
    sq_tail: *const AtomicU32,
    sq_mask: u32,
    sq_entries: u32,
    cq_head: *const AtomicU32,
    cq_tail: *const AtomicU32,
    cq_mask: u32,
    cqes: *const Cqe,
    /// Our copy of the SQ tail (we are its only writer).
    tail: u32,
    /// Requests for which the queue had no room, even after a submit (the
    /// kernel took none: short of memory): written to it in order, as room
    /// comes.
    backlog: VecDeque<Sqe>,
}

// SAFETY: the raw pointers point into mappings the Ring owns; the ring is
// made on one thread and moved to the loop thread before it is enabled, and
// from then on only that thread uses it (`&mut self` everywhere).
unsafe impl Send for Ring {}

/// Whether `io_uring_enter` waits for a completion.
#[derive(Clone, Copy)]
enum Wait {
    /// Submits and runs the completions that are due; waits for none.
    No,
    /// Also waits for one completion, up to the timeout (`None`: for ever).
    ForOne(Option<Duration>),
}

/// The longest wait for completions while requests wait in the backlog.
const BACKLOG_WAIT: Duration = Duration::from_millis(1);

/// How the loop's rings are made: one thread submits (the one that calls
/// [`Ring::enable`]), completions are run when it asks for them.
const FLAGS: u32 = SETUP_SINGLE_ISSUER | SETUP_DEFER_TASKRUN | SETUP_SUBMIT_ALL | SETUP_CQSIZE | SETUP_R_DISABLED;

impl Ring {
    /// A ring of `entries` submission and `cq_entries` completion slots
    /// (powers of two), disabled until [`Ring::enable`].
    pub(crate) fn new(entries: u32, cq_entries: u32) -> io::Result<Ring> {
        let mut p = Params { flags: FLAGS, cq_entries, ..Params::default() };
        // SAFETY: `p` is a valid io_uring_params the kernel fills in.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, entries, &mut p as *mut Params) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        // SAFETY: io_uring_setup just returned this descriptor; nobody else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let need = FEAT_SINGLE_MMAP | FEAT_NODROP | FEAT_EXT_ARG;
        if p.features & need != need {
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        let sq_len = p.sq_off.array as usize + p.sq_entries as usize * 4;
        let cq_len = p.cq_off.cqes as usize + p.cq_entries as usize * std::mem::size_of::<Cqe>();
        let rings = Mapping::new(sq_len.max(cq_len), Some(fd.as_raw_fd()), OFF_SQ_RING)?;
        let sqes = Mapping::new(p.sq_entries as usize * std::mem::size_of::<Sqe>(), Some(fd.as_raw_fd()), OFF_SQES)?;
        // The SQ array maps ring slots to entries: slot i is entry i, for good.
        let array = rings.at::<u32>(p.sq_off.array);
        for i in 0..p.sq_entries {
            // SAFETY: `array` has sq_entries u32 slots (sized above from the
            // kernel's offsets); the ring is not enabled, so the kernel does
            // not read it yet.
            unsafe { array.add(i as usize).write(i) };
        }
        // SAFETY: the offset comes from the kernel and lies within `rings`
        // (its length was computed from the offsets).
        let tail = unsafe { (*rings.at::<AtomicU32>(p.sq_off.tail)).load(Ordering::Relaxed) };
        Ok(Ring {
            sq_head: rings.at(p.sq_off.head),
            sq_tail: rings.at(p.sq_off.tail),
            sq_mask: mask_at(&rings, p.sq_off.ring_mask),
            sq_entries: p.sq_entries,
            cq_head: rings.at(p.cq_off.head),
            cq_tail: rings.at(p.cq_off.tail),
            cq_mask: mask_at(&rings, p.cq_off.ring_mask),
            cqes: rings.at(p.cq_off.cqes),
            tail,
            backlog: VecDeque::new(),
            _rings: rings,
            sqes,
            fd,
        })
    }

    /// Makes the calling thread the ring's one submitter and starts it.
    pub(crate) fn enable(&self) -> io::Result<()> {
        self.register(REGISTER_ENABLE_RINGS, std::ptr::null(), 0).map(|_| ())
    }

    fn register(&self, opcode: u32, arg: *const libc::c_void, nr: u32) -> io::Result<i64> {
        // SAFETY: `arg` points to what `opcode` expects (each caller's
        // struct), or is null where it takes none.
        let r = unsafe { libc::syscall(libc::SYS_io_uring_register, self.fd.as_raw_fd(), opcode, arg, nr) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    /// Entries written but not yet taken by the kernel.
    fn unsubmitted(&self) -> u32 {
        // SAFETY: `sq_head` points into `rings`; the kernel writes it.
        let head = unsafe { (*self.sq_head).load(Ordering::Acquire) };
        self.tail.wrapping_sub(head)
    }

    /// Queues one request; when the queue is full, what is in it is
    /// submitted first. Should the kernel take none of it, the request
    /// waits its turn in the backlog (after any already there), and is
    /// submitted by a later [`Ring::submit_and_wait`]. Fails only if the
    /// submit does (the ring is unusable).
    ///
    /// # Safety
    ///
    /// Every buffer the entry names (a send's bytes; the cancel and poll
    /// entries name none, a `recv` of provided buffers names none of its
    /// own) must stay valid, and not be written, until its completion.
    pub(crate) unsafe fn push(&mut self, sqe: Sqe) -> io::Result<()> {
        if self.backlog.is_empty() && self.unsubmitted() >= self.sq_entries {
            self.submit(Wait::No)?;
        }
        self.backlog.push_back(sqe);
        self.fill();
        Ok(())
    }

    /// Writes the backlog's requests to the queue, in order, as far as
    /// there is room.
    fn fill(&mut self) {
        while self.unsubmitted() < self.sq_entries {
            let Some(sqe) = self.backlog.pop_front() else { break };
            let slot = self.tail & self.sq_mask;
            // SAFETY: `slot` < sq_entries, the number of entries in `sqes`;
            // the kernel does not read this entry until the tail store
            // below publishes it, and has taken the one that was there
            // before (the queue is not full, checked above).
            unsafe { self.sqes.at::<Sqe>(0).add(slot as usize).write(sqe) };
            self.tail = self.tail.wrapping_add(1);
            // SAFETY: `sq_tail` points into `rings`; we are its only writer.
            unsafe { (*self.sq_tail).store(self.tail, Ordering::Release) };
        }
    }

    /// Submits what is queued (the backlog's too, as long as the kernel
    /// takes it), runs the completions that are due and waits for at least
    /// one, up to `timeout` (`None`: for ever), or at most [`BACKLOG_WAIT`]
    /// if the kernel did not take all (short of memory: it may take the
    /// rest a moment later).
    pub(crate) fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.fill();
        while !self.backlog.is_empty() {
            let before = self.unsubmitted();
            self.submit(Wait::No)?;
            if self.unsubmitted() >= before {
                break;
            }
            self.fill();
        }
        self.submit(Wait::ForOne(timeout))?;
        if self.unsubmitted() == 0 && self.backlog.is_empty() {
            return Ok(());
        }
        // The kernel took less than it was given: it then neither ran the
        // deferred work nor waited. Both are done now, submitting nothing,
        // for at most BACKLOG_WAIT (what is left is tried again then).
        let short = timeout.map_or(BACKLOG_WAIT, |t| t.min(BACKLOG_WAIT));
        self.enter_raw(0, Wait::ForOne(Some(short)))
    }

    /// Submits every queued entry (see [`Ring::enter_raw`]).
    fn submit(&mut self, wait: Wait) -> io::Result<()> {
        let to_submit = self.unsubmitted();
        #[cfg(test)]
        if to_submit > 0 && tests::REFUSE.with(|r| r.get()) {
            // As a kernel short of memory: EAGAIN, nothing taken, no
            // deferred work run, no wait.
            return Ok(());
        }
        self.enter_raw(to_submit, wait)
    }

    /// `io_uring_enter`: submits `to_submit` queued entries, runs the
    /// completions that are due, and waits as `wait` says. A timeout (`ETIME`),
    /// a signal (`EINTR`), a full completion queue (`EBUSY`) or a kernel
    /// short of memory (`EAGAIN`) is not an error: the caller looks at
    /// what completed and comes back.
    fn enter_raw(&mut self, to_submit: u32, wait: Wait) -> io::Result<()> {
        let (min, timeout) = match wait {
            Wait::No => (0, None),
            Wait::ForOne(timeout) => (1, timeout),
        };
        let ts = timeout.map(|t| KernelTimespec {
            tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        let arg = GeteventsArg {
            sigmask: 0,
            sigmask_sz: 8, // _NSIG / 8; no mask is passed
            min_wait_usec: 0,
            ts: ts.as_ref().map_or(0, |t| t as *const KernelTimespec as u64),
        };
        // GETEVENTS also when not waiting: with DEFER_TASKRUN, it is what
        // runs the completions of requests that did not finish inline.
        let flags = ENTER_GETEVENTS | ENTER_EXT_ARG;
        // SAFETY: `arg` is a valid io_uring_getevents_arg (its `ts`, if
        // any, points to `ts`, alive across the call) of the size passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                self.fd.as_raw_fd(),
                to_submit,
                min,
                flags,
                &arg as *const GeteventsArg,
                std::mem::size_of::<GeteventsArg>(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => Ok(()),
                _ => Err(e),
            };
        }
        Ok(())
    }

    /// The next completion, if one is posted.
    pub(crate) fn next_cqe(&mut self) -> Option<Cqe> {
        // SAFETY: `cq_head`/`cq_tail` point into `rings`; we are the only
        // writer of the head, the kernel of the tail.
        let (head, tail) =
            unsafe { ((*self.cq_head).load(Ordering::Relaxed), (*self.cq_tail).load(Ordering::Acquire)) };
        if head == tail {
            return None;
        }
        // SAFETY: `head & cq_mask` < cq_entries, the number of completions
        // in the ring; the acquire load of the tail made its contents
        // visible, and the kernel does not reuse the slot before the head
        // store below hands it back.
        let cqe = unsafe { self.cqes.add((head & self.cq_mask) as usize).read() };
        // SAFETY: as above.
        unsafe { (*self.cq_head).store(head.wrapping_add(1), Ordering::Release) };
        Some(cqe)
    }
}

/// A ring's mask, the `u32` the kernel put at `offset` of the mapping.
fn mask_at(rings: &Mapping, offset: u32) -> u32 {
    // SAFETY: the offset comes from the kernel and lies within `rings`.
    unsafe { rings.at::<u32>(offset).read() }
}

/// Can this process make the loop's rings? (A kernel before 6.1, or a
/// seccomp profile that refuses io_uring, as Docker's default does, cannot.)
pub(crate) fn probe() -> io::Result<()> {
    Ring::new(2, 4).map(drop)
}

/// A ring of `count` provided buffers of `size` bytes each, in group 0.
/// The kernel takes a buffer from it when a `recv` with
/// [`SQE_BUFFER_SELECT`] finds data; the completion names it, and it is
/// the loop's until [`BufRing::give_back`].
pub(crate) struct BufRing {
    ring: Mapping,
    /// Unmapped on drop, unless [`BufRing::leak`]ed.
    bufs: ManuallyDrop<Mapping>,
    size: usize,
    count: u16,
    tail: u16,
    /// The buffers the loop holds (taken from a completion, not given
    /// back): only those can be read, written or given back.
    ours: Vec<bool>,
    /// How many are not `ours` (the kernel's to pick from): asked for at
    /// each `recv` the loop queues, so kept rather than counted.
    free: usize,
    /// The buffers stay mapped for good (see [`BufRing::leak`]).
    leaked: bool,
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if !self.leaked {
            // SAFETY: dropped once, here, and not used after.
            unsafe { ManuallyDrop::drop(&mut self.bufs) };
        }
    }
}

// SAFETY: as for Ring: owned mappings, used by one thread at a time.
unsafe impl Send for BufRing {}

impl BufRing {
    /// `count` (a power of two, at most 32,768) buffers of `size` bytes.
    /// The memory is only reserved: a page costs nothing until data is
    /// received into it.
    pub(crate) fn new(count: u16, size: usize) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32_768 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let ring = Mapping::new(usize::from(count) * std::mem::size_of::<Buf>(), None, 0)?;
        let bufs = Mapping::new(usize::from(count) * size, None, 0)?;
        // Every buffer is ours until `register` hands them to the kernel.
        Ok(BufRing {
            ring,
            bufs: ManuallyDrop::new(bufs),
            size,
            count,
            tail: 0,
            ours: vec![true; usize::from(count)],
            free: 0,
            leaked: false,
        })
    }

    /// Keeps the buffers mapped when `self` is dropped: for a ring
    /// closed with requests that may still write into them. The address
    /// space is given up for the process's life rather than risk the
    /// kernel writing into memory reused since.
    pub(crate) fn leak(&mut self) {
        self.leaked = true;
    }

    /// How many buffers the kernel has to pick from.
    pub(crate) fn free(&self) -> usize {
        self.free
    }

    /// Gives the system back the pages of the buffers the kernel holds.
    ///
    /// # Safety
    ///
    /// No request may pick a buffer meanwhile: none is in flight that could
    /// (see [`Uring::discard_idle_buffers`]).
    unsafe fn discard_free(&self) {
        for (bid, ours) in self.ours.iter().enumerate() {
            if !ours {
                // SAFETY: the kernel's buffer, which no request in flight
                // can pick (the caller's promise); a range within the
                // mapping cannot fail, and if it did the pages just stay.
                let _ = unsafe { self.bufs.discard(bid * self.size, self.size) };
            }
        }
    }

    /// A completion handed buffer `bid` over: it is the loop's until
    /// [`BufRing::give_back`]. False (and nothing changes) for a buffer
    /// that is not the kernel's to hand over.
    pub(crate) fn take(&mut self, bid: u16) -> bool {
        match self.ours.get_mut(usize::from(bid)) {
            Some(o) if !*o => {
                *o = true;
                self.free -= 1;
                true
            }
            _ => false,
        }
    }

    /// Registers the ring with `ring` as group 0 and gives the kernel every
    /// buffer.
    ///
    /// # Safety
    ///
    /// The kernel writes into the buffers for any `recv` of `ring` in
    /// flight, and closing the ring ends those only some time later: `self`
    /// must be dropped only once every such `recv` has completed (or been
    /// cancelled, and the cancellation completed), or else be
    /// [`leak`](BufRing::leak)ed.
    pub(crate) unsafe fn register(&mut self, ring: &Ring) -> io::Result<()> {
        let reg = BufReg {
            ring_addr: self.ring.ptr.as_ptr() as u64,
            ring_entries: u32::from(self.count),
            bgid: 0,
            flags: 0,
            resv: [0; 3],
        };
        ring.register(REGISTER_PBUF_RING, (&reg as *const BufReg).cast(), 1)?;
        for bid in 0..self.count {
            self.give_back(bid);
        }
        Ok(())
    }

    /// The first `len` bytes of buffer `bid` (what the kernel received into
    /// it), if the buffer is the loop's ([`BufRing::take`]).
    pub(crate) fn get(&mut self, bid: u16, len: usize) -> Option<&mut [u8]> {
        if !self.ours.get(usize::from(bid)).copied().unwrap_or(false) {
            return None;
        }
        let len = len.min(self.size);
        // SAFETY: buffer `bid` (< count: `ours` has count entries) lies
        // within `bufs` (count * size bytes), `len` <= size; the kernel
        // has handed it over and does not touch it before it is given back
        // (`ours`), and `&mut self` keeps this the only view of it.
        Some(unsafe { std::slice::from_raw_parts_mut(self.bufs.ptr.as_ptr().add(usize::from(bid) * self.size), len) })
    }

    /// Gives buffer `bid` back to the kernel (if it is the loop's: never
    /// twice).
    pub(crate) fn give_back(&mut self, bid: u16) {
        match self.ours.get_mut(usize::from(bid)) {
            Some(o) if *o => *o = false,
            _ => return,
        }
        self.free += 1;
        let slot = usize::from(self.tail & (self.count - 1));
        let entry = Buf {
            addr: self.bufs.ptr.as_ptr().wrapping_add(usize::from(bid) * self.size) as u64,
            len: self.size as u32,
            bid,
            resv: 0,
        };
        // SAFETY: `slot` < count, the number of entries in `ring`. The
        // entry is free: the kernel has taken every buffer published
        // before it at this position (at most `count` are ever published
        // and not taken, and this one was ours, so it was not). Only
        // `addr`, `len` and `bid` are written: the
        // first entry's `resv` is the ring's tail, written below.
        unsafe {
            let e = self.ring.at::<Buf>(0).add(slot);
            std::ptr::addr_of_mut!((*e).addr).write(entry.addr);
            std::ptr::addr_of_mut!((*e).len).write(entry.len);
            std::ptr::addr_of_mut!((*e).bid).write(entry.bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // The tail is the u16 at byte 14 of the ring (`resv` of entry 0).
        // SAFETY: within `ring`, 2-byte aligned; the kernel only reads it.
        unsafe { (*self.ring.at::<AtomicU16>(14)).store(self.tail, Ordering::Release) };
    }
}

/// A ring and its provided buffers, for one loop thread: the safe face of
/// this module. Requests name buffers only by their number in the ring of
/// provided buffers, and the buffers outlive every request that may still
/// touch them: dropped with requests in flight, `Uring` keeps them mapped.
pub(crate) struct Uring {
    /// Closed before the buffers are let go (fields drop in order).
    ring: Ring,
    bufs: BufRing,
    /// `recv`s and `send`s submitted and not yet completed: each may still
    /// write into or read from a provided buffer.
    buffer_ops: usize,
    /// The `send`s in flight, by `user_data`, and the buffer each reads.
    sending: std::collections::HashMap<u64, u16>,
    /// By buffer: a send in flight reads it, so it can be neither written
    /// nor given back.
    in_send: Vec<bool>,
    /// The kernel handed over a buffer that was not its to hand over.
    fault: Option<io::Error>,
}

/// `user_data` bits this module keeps for itself: what the request was,
/// so that its completion can be trusted for what it holds.
const ACCEPT_BIT: u64 = 1 << 63;
const BUFFER_BIT: u64 = 1 << 62;
const OWN_BITS: u64 = ACCEPT_BIT | BUFFER_BIT;

/// One completion, with the caller's `user_data`.
#[derive(Debug)]
pub(crate) struct Completion {
    cqe: Cqe,
    /// The buffer handed over with it, taken for the loop.
    bid: Option<u16>,
}

impl Completion {
    /// The `user_data` the request was queued with.
    pub(crate) fn user_data(&self) -> u64 {
        self.cqe.user_data & !OWN_BITS
    }

    /// The call's result, or `-errno`.
    pub(crate) fn res(&self) -> i32 {
        self.cqe.res
    }

    /// A multishot request goes on after this completion.
    pub(crate) fn more(&self) -> bool {
        self.cqe.more()
    }

    /// The provided buffer the request took, if it took one: the loop's
    /// now, until [`Uring::give_back`].
    pub(crate) fn buffer(&self) -> Option<u16> {
        self.bid
    }

    /// The descriptor an accept completed with, owned from here on; `None`
    /// for a failed accept or a completion of any other request.
    pub(crate) fn accepted(self) -> Option<OwnedFd> {
        if self.cqe.user_data & ACCEPT_BIT == 0 {
            return None;
        }
        // SAFETY: only `Uring::accept_multishot` sets ACCEPT_BIT, so this
        // is an accept's completion, and its result a descriptor the
        // kernel has just installed for it. `self` is consumed: it is
        // taken once.
        unsafe { self.cqe.accepted() }
    }
}

impl Uring {
    /// A ring of `entries` submission and `cq_entries` completion slots,
    /// with `buffers` provided buffers of `size` bytes; not started.
    pub(crate) fn new(entries: u32, cq_entries: u32, buffers: u16, size: usize) -> io::Result<Uring> {
        let ring = Ring::new(entries, cq_entries)?;
        let bufs = BufRing::new(buffers, size)?;
        let in_send = vec![false; usize::from(buffers)];
        Ok(Uring { ring, bufs, buffer_ops: 0, sending: std::collections::HashMap::new(), in_send, fault: None })
    }

    /// Makes the calling thread the ring's one submitter, and gives the
    /// kernel the buffers.
    pub(crate) fn start(&mut self) -> io::Result<()> {
        self.ring.enable()?;
        // SAFETY: the buffers are dropped after the ring and only when no
        // request that may touch them is in flight (`Drop for Uring`).
        unsafe { self.bufs.register(&self.ring) }
    }

    /// Queues a request; `user_data` must not use the bits this module
    /// keeps ([`OWN_BITS`]).
    fn push(&mut self, sqe: Sqe) -> io::Result<()> {
        // SAFETY: the only memory a request names is a provided buffer (a
        // send's), which stays mapped while any such request is in flight.
        unsafe { self.ring.push(sqe) }
    }

    fn check(user_data: u64) -> io::Result<u64> {
        if user_data & OWN_BITS == 0 {
            Ok(user_data)
        } else {
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        }
    }

    /// A `recv` on `fd` into a provided buffer the kernel picks when data
    /// arrives ([`Sqe::recv_select`]).
    pub(crate) fn recv(&mut self, fd: RawFd, user_data: u64, poll_first: bool) -> io::Result<()> {
        let ud = Self::check(user_data)? | BUFFER_BIT;
        let len = u32::try_from(self.bufs.size).unwrap_or(u32::MAX);
        self.push(Sqe::recv_select(fd, len, ud, poll_first))?;
        self.buffer_ops += 1;
        Ok(())
    }

    /// A `send` on `fd` of the first `len` bytes of provided buffer `bid`,
    /// which must be the loop's, with `flags` and `MSG_DONTWAIT` (the send
    /// never waits in the kernel for room). Until it completes the buffer
    /// can be neither written ([`Uring::buffer`]) nor given back, and
    /// `user_data` names no other send.
    pub(crate) fn send(&mut self, fd: RawFd, bid: u16, len: usize, flags: i32, user_data: u64) -> io::Result<()> {
        let ud = Self::check(user_data)? | BUFFER_BIT;
        if self.sending.contains_key(&ud) || self.in_send(bid) {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        let Some(buf) = self.bufs.get(bid, len) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        let sqe = Sqe::send(fd, buf, flags | libc::MSG_DONTWAIT, ud);
        self.push(sqe)?;
        self.sending.insert(ud, bid);
        if let Some(flag) = self.in_send.get_mut(usize::from(bid)) {
            *flag = true;
        }
        self.buffer_ops += 1;
        Ok(())
    }

    /// A one-shot poll of `fd` for `events`.
    pub(crate) fn poll(&mut self, fd: RawFd, events: u32, user_data: u64) -> io::Result<()> {
        let sqe = Sqe::poll(fd, events, Self::check(user_data)?);
        self.push(sqe)
    }

    /// A multishot accept on listener `fd` ([`Sqe::accept_multishot`]);
    /// its completions give their descriptor by [`Completion::accepted`].
    pub(crate) fn accept_multishot(&mut self, fd: RawFd, flags: i32, user_data: u64) -> io::Result<()> {
        let sqe = Sqe::accept_multishot(fd, flags, Self::check(user_data)? | ACCEPT_BIT);
        self.push(sqe)
    }

    /// Cancels every request on `fd`.
    pub(crate) fn cancel_fd(&mut self, fd: RawFd, user_data: u64) -> io::Result<()> {
        let sqe = Sqe::cancel_fd(fd, Self::check(user_data)?);
        self.push(sqe)
    }

    /// Submits and waits (see [`Ring::submit_and_wait`]).
    pub(crate) fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.ring.submit_and_wait(timeout)
    }

    /// The next completion, if one is posted. A buffer it hands over is the
    /// loop's from here on ([`Completion::buffer`]); one the kernel could
    /// not hand over (the books disagree) is left out, and [`Uring::fault`]
    /// says so.
    pub(crate) fn next(&mut self) -> Option<Completion> {
        let cqe = self.ring.next_cqe()?;
        if cqe.user_data & BUFFER_BIT != 0 {
            self.buffer_ops = self.buffer_ops.saturating_sub(1);
            if let Some(bid) = self.sending.remove(&cqe.user_data) {
                if let Some(flag) = self.in_send.get_mut(usize::from(bid)) {
                    *flag = false;
                }
            }
        }
        let bid = cqe.buffer().filter(|&b| {
            let taken = self.bufs.take(b);
            if !taken {
                self.fault.get_or_insert_with(|| io::Error::other("a provided buffer was handed over twice"));
            }
            taken
        });
        Some(Completion { cqe, bid })
    }

    /// The kernel handed over a buffer it did not have: the books are
    /// wrong, and the ring is not to be trusted further.
    pub(crate) fn fault(&mut self) -> Option<io::Error> {
        self.fault.take()
    }

    /// Gives the system back the pages of the buffers the kernel holds, if
    /// no request is in flight that could pick one: the ring has one
    /// submitter, so none is picked before the next `recv` is queued.
    /// Returns whether it did.
    pub(crate) fn discard_idle_buffers(&mut self) -> bool {
        if self.busy() {
            return false;
        }
        // SAFETY: no `recv` or `send` is in flight, and this thread, the
        // ring's one submitter, queues none meanwhile.
        unsafe { self.bufs.discard_free() };
        true
    }

    /// A `recv` or `send` may still touch a provided buffer.
    pub(crate) fn busy(&self) -> bool {
        self.buffer_ops > 0
    }

    /// How many buffers the kernel has to pick from.
    pub(crate) fn free(&self) -> usize {
        self.bufs.free()
    }

    /// Is buffer `bid` read by a send in flight?
    fn in_send(&self, bid: u16) -> bool {
        self.in_send.get(usize::from(bid)).copied().unwrap_or(false)
    }

    /// The first `len` bytes of buffer `bid`, if it is the loop's and no
    /// send reads it.
    pub(crate) fn buffer(&mut self, bid: u16, len: usize) -> Option<&mut [u8]> {
        if self.in_send(bid) {
            return None;
        }
        self.bufs.get(bid, len)
    }

    /// Gives buffer `bid` back to the kernel, if it is the loop's and no
    /// send reads it.
    pub(crate) fn give_back(&mut self, bid: u16) {
        if !self.in_send(bid) {
            self.bufs.give_back(bid);
        }
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        if self.busy() {
            // The kernel ends those requests only some time after the ring
            // closes: the buffers stay mapped for the process's life.
            self.bufs.leak();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    // This thread's rings submit nothing, as a kernel short of memory
    // would (`EAGAIN`: nothing taken, no deferred work run, no wait).
    thread_local! {
        pub(super) static REFUSE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_recv_takes_a_provided_buffer_and_a_send_goes_out() {
        // `ring` is dropped first (bound last).
        let Some((mut bufs, mut ring)) = ring_with_buffers(4) else { return };
        let (a, b) = pair();
        // A recv on an empty non-blocking socket waits for data (it is not
        // failed with EAGAIN) and holds no buffer meanwhile.
        // SAFETY: a recv of provided buffers names no buffer of its own.
        unsafe { ring.push(Sqe::recv_select(a.as_raw_fd(), 4096, 7, false)) }.expect("push");
        ring.submit_and_wait(Some(Duration::from_millis(20))).expect("enter");
        assert!(ring.next_cqe().is_none(), "a recv on an empty socket completed");
        crate::sys::send(b.as_fd(), b"hello").expect("send");
        ring.submit_and_wait(Some(Duration::from_secs(2))).expect("enter");
        let cqe = ring.next_cqe().expect("the recv completed");
        assert_eq!((cqe.user_data, cqe.res), (7, 5));
        let bid = cqe.buffer().expect("a buffer was taken");
        assert!(bufs.take(bid) && !bufs.take(bid), "taken once only");
        assert_eq!(bufs.free(), 3);
        assert_eq!(bufs.get(bid, 5).expect("ours"), b"hello");
        let data = bufs.get(bid, 5).expect("ours");
        data.make_ascii_uppercase();
        // SAFETY: the buffer is ours, and is not given back before the
        // send's completion below.
        unsafe { ring.push(Sqe::send(a.as_raw_fd(), data, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT, 8)) }.expect("push");
        ring.submit_and_wait(Some(Duration::from_secs(2))).expect("enter");
        let cqe = ring.next_cqe().expect("the send completed");
        assert_eq!((cqe.user_data, cqe.res), (8, 5));
        bufs.give_back(bid);
        bufs.give_back(bid); // a second time: ignored
        assert_eq!(bufs.free(), 4);
        assert!(bufs.get(bid, 5).is_none(), "a buffer given back is not ours");
        let mut got = [0u8; 8];
        assert_eq!(crate::sys::recv(b.as_fd(), &mut got).expect("recv"), 5);
        assert_eq!(&got[..5], b"HELLO");
    }

    /// Requests for which the queue has no room, the kernel taking none,
    /// wait in the backlog and are submitted in order once it takes them.
    #[test]
    fn requests_the_kernel_does_not_take_wait_their_turn_in_order() {
        if !io_uring_here() {
            return;
        }
        let mut ring = Ring::new(2, 16).expect("ring");
        ring.enable().expect("enable");
        assert_eq!(ring.sq_entries, 2);
        let (a, _b) = pair();
        REFUSE.with(|r| r.set(true));
        for k in 1..=5 {
            // SAFETY: a poll names no buffer.
            unsafe { ring.push(Sqe::poll(a.as_raw_fd(), libc::POLLOUT as u32, k)) }.expect("push");
        }
        assert_eq!(ring.backlog.len(), 3);
        // The kernel takes nothing, and so neither waits nor runs deferred
        // work on that call: the ring waits by itself, a short while.
        for _ in 0..3 {
            let t = std::time::Instant::now();
            ring.submit_and_wait(Some(Duration::from_secs(2))).expect("enter");
            let took = t.elapsed();
            assert!(took >= Duration::from_micros(900), "waited only {took:?}: a loop would spin");
            assert!(took < Duration::from_secs(1), "waited {took:?} with requests in the backlog");
        }
        assert!(ring.next_cqe().is_none(), "completed while the kernel took nothing");
        REFUSE.with(|r| r.set(false));
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while got.len() < 5 && std::time::Instant::now() < deadline {
            ring.submit_and_wait(Some(Duration::from_millis(100))).expect("enter");
            while let Some(cqe) = ring.next_cqe() {
                got.push(cqe.user_data);
            }
        }
        assert_eq!(got, [1, 2, 3, 4, 5]);
        assert!(ring.backlog.is_empty());
    }

    /// Whether this machine allows io_uring (the tests that need it are
    /// skipped, with the reason printed, where it does not).
    pub(crate) fn io_uring_here() -> bool {
        match probe() {
            Ok(()) => true,
            Err(e) => {
                eprintln!("io_uring unavailable here ({e}): skipped");
                false
            }
        }
    }

    /// An enabled ring with `count` buffers of 4 KiB registered, or `None`
    /// where io_uring is refused. Bind the pair in this order, `(bufs,
    /// ring)`: the ring is then dropped first.
    fn ring_with_buffers(count: u16) -> Option<(BufRing, Ring)> {
        if !io_uring_here() {
            return None;
        }
        let mut bufs = BufRing::new(count, 4096).expect("bufs");
        let ring = Ring::new(8, 16).expect("ring");
        ring.enable().expect("enable");
        // SAFETY: nothing is submitted on `ring` before it is returned,
        // and the callers drop it before `bufs`.
        unsafe { bufs.register(&ring) }.expect("register");
        Some((bufs, ring))
    }

    /// A connected pair of non-blocking stream sockets.
    pub(crate) fn pair() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        let r =
            unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0, fds.as_mut_ptr()) };
        assert_eq!(r, 0, "socketpair");
        // SAFETY: socketpair just returned them.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    /// A `Uring` counts the requests that may touch its buffers until
    /// their completions are read: dropped while one is in flight, it
    /// keeps the buffers mapped (`Drop for Uring`).
    #[test]
    fn a_uring_knows_when_a_request_may_touch_its_buffers() {
        if !io_uring_here() {
            return;
        }
        let mut uring = Uring::new(8, 16, 1, 4096).expect("uring");
        uring.start().expect("start");
        let (a, b) = pair();
        uring.recv(a.as_raw_fd(), 1, false).expect("recv");
        uring.submit_and_wait(Some(Duration::ZERO)).expect("enter");
        assert!(uring.next().is_none(), "the recv waits for data");
        assert!(uring.busy());
        crate::sys::send(b.as_fd(), b"hi").expect("send");
        uring.submit_and_wait(Some(Duration::from_secs(2))).expect("enter");
        let done = uring.next().expect("the recv completed");
        assert_eq!((done.user_data(), done.res()), (1, 2));
        assert!(!uring.busy());
        let bid = done.buffer().expect("a buffer, the loop's now");
        assert_eq!(uring.buffer(bid, 2).expect("ours"), b"hi");
        // A send names the buffer by number; while it is in flight the
        // buffer can be neither written nor given back.
        uring.send(b.as_raw_fd(), bid, 2, 0, 2).expect("send");
        assert!(uring.busy());
        assert!(uring.buffer(bid, 2).is_none(), "a buffer a send reads, handed out for writing");
        uring.give_back(bid);
        assert_eq!(uring.free(), 0, "a buffer a send reads, given back");
        assert!(uring.send(b.as_raw_fd(), bid, 2, 0, 9).is_err(), "two sends from one buffer");
        uring.submit_and_wait(Some(Duration::from_secs(2))).expect("enter");
        let done = uring.next().expect("the send completed");
        assert_eq!((done.user_data(), done.res()), (2, 2));
        assert!(!uring.busy());
        assert!(done.accepted().is_none(), "a send's completion gave a descriptor");
        // One not the loop's is refused, and so are the bits of
        // `user_data` the module keeps.
        uring.give_back(bid);
        assert!(uring.send(b.as_raw_fd(), bid, 2, 0, 3).is_err(), "a send from the kernel's buffer");
        assert!(uring.poll(a.as_raw_fd(), libc::POLLOUT as u32, 1 << 63).is_err());
        // A recv left in flight at the drop: the buffers stay mapped.
        uring.recv(a.as_raw_fd(), 4, false).expect("recv");
        uring.submit_and_wait(Some(Duration::ZERO)).expect("enter");
        assert!(uring.busy());
    }

    /// With every buffer taken, a `recv` that waits for data first (as
    /// the loop queues one then) neither completes nor is refused while
    /// there is nothing to read: a connection with nothing to say does not
    /// join those that wait for a buffer.
    #[test]
    fn with_every_buffer_taken_a_recv_with_nothing_to_read_waits() {
        // `ring` is dropped first (bound last).
        let Some((mut bufs, mut ring)) = ring_with_buffers(1) else { return };
        let ((a1, b1), (a2, b2)) = (pair(), pair());
        let complete = |ring: &mut Ring, sqe: Sqe, wait: Duration| {
            // SAFETY: a recv of provided buffers names no buffer of its own.
            unsafe { ring.push(sqe) }.expect("push");
            ring.submit_and_wait(Some(wait)).expect("enter");
            ring.next_cqe()
        };
        // The only buffer is taken (and kept) by a recv on the first pair.
        crate::sys::send(b1.as_fd(), b"x").expect("send");
        let cqe = complete(&mut ring, Sqe::recv_select(a1.as_raw_fd(), 4096, 1, false), Duration::from_secs(2))
            .expect("the first recv completed");
        assert_eq!((cqe.user_data, cqe.res), (1, 1));
        let bid = cqe.buffer().expect("a buffer");
        assert!(bufs.take(bid));
        assert_eq!(bufs.free(), 0);
        // Nothing to read on the second pair: no completion, no ENOBUFS.
        let cqe = complete(&mut ring, Sqe::recv_select(a2.as_raw_fd(), 4096, 2, true), Duration::from_millis(50));
        assert!(cqe.is_none(), "a recv with nothing to read completed: {cqe:?}");
        // Data comes while no buffer is left: ENOBUFS, and the data stays.
        crate::sys::send(b2.as_fd(), b"yz").expect("send");
        ring.submit_and_wait(Some(Duration::from_secs(2))).expect("enter");
        let cqe = ring.next_cqe().expect("the second recv completed");
        assert_eq!((cqe.user_data, cqe.res, cqe.buffer()), (2, -libc::ENOBUFS, None));
        // Once the buffer is back, the same recv gets the data.
        bufs.give_back(bid);
        let cqe = complete(&mut ring, Sqe::recv_select(a2.as_raw_fd(), 4096, 3, false), Duration::from_secs(2))
            .expect("the third recv completed");
        assert_eq!((cqe.user_data, cqe.res), (3, 2));
        let bid = cqe.buffer().expect("a buffer");
        assert!(bufs.take(bid));
        assert_eq!(bufs.get(bid, 2).expect("ours"), b"yz");
    }
}
