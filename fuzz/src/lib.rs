//! What the fuzz targets share: a reader for their inputs, independent
//! reference versions of what the library computes (the address layout the
//! kernel documents, the transform byte by byte), buffers with guard bytes,
//! and a descriptor count.
//!
//! The references are written from the ABI, not from `upcase`'s code, so a
//! target that compares the two checks the library against the layout
//! rather than against itself.

use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr};

use upcase::addr::IpPort;

/// Reads a fuzz input front to back; past the end every read gives zeros
/// (an empty slice for bytes), so any input is a valid one.
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data, pos: 0 }
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = end;
        &self.data[start..end]
    }

    /// One byte, 0 past the end.
    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    /// Little-endian, zero-padded past the end.
    pub fn u16(&mut self) -> u16 {
        let mut b = [0u8; 2];
        let got = self.bytes(2);
        b[..got.len()].copy_from_slice(got);
        u16::from_le_bytes(b)
    }

    /// Little-endian, zero-padded past the end.
    pub fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        let got = self.bytes(4);
        b[..got.len()].copy_from_slice(got);
        u32::from_le_bytes(b)
    }

    /// Little-endian, zero-padded past the end.
    pub fn i32(&mut self) -> i32 {
        self.u32() as i32
    }

    /// A length byte, then that many bytes.
    pub fn blob(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8());
        self.bytes(n)
    }
}

/// The byte at `i` of `data`, 0 past its end.
pub fn byte(data: &[u8], i: usize) -> u8 {
    data.get(i).copied().unwrap_or(0)
}

/// Linux's `sockaddr_in`: family (2 bytes, host order), port (2, network
/// order), address (4, network order), 8 bytes of zero: 16 bytes.
pub const SIN_LEN: usize = 16;
/// Linux's `sockaddr_in6`: family (2), port (2, network order), flow info
/// (4), address (16, network order), scope id (4, host order): 28 bytes.
pub const SIN6_LEN: usize = 28;
/// `sockaddr_storage`: room for any family.
pub const STORAGE_LEN: usize = 128;

const _: () = assert!(size_of::<libc::sockaddr_in>() == SIN_LEN);
const _: () = assert!(size_of::<libc::sockaddr_in6>() == SIN6_LEN);
const _: () = assert!(size_of::<libc::sockaddr_storage>() == STORAGE_LEN);

/// Decodes the meaningful bytes of a socket address from the layout alone:
/// `None` unless the family is IPv4 or IPv6 and the bytes cover the whole
/// structure of that family.
pub fn decode(bytes: &[u8]) -> Option<IpPort> {
    if bytes.len() < 2 {
        return None;
    }
    let family = libc::c_int::from(u16::from_ne_bytes([bytes[0], bytes[1]]));
    let port = u16::from_be_bytes([byte(bytes, 2), byte(bytes, 3)]);
    if family == libc::AF_INET && bytes.len() >= SIN_LEN {
        let ip: [u8; 4] = bytes[4..8].try_into().expect("4 bytes");
        Some(IpPort::V4(ip, port))
    } else if family == libc::AF_INET6 && bytes.len() >= SIN6_LEN {
        let ip: [u8; 16] = bytes[8..24].try_into().expect("16 bytes");
        let scope = u32::from_ne_bytes(bytes[24..28].try_into().expect("4 bytes"));
        Some(IpPort::V6(ip, port, scope))
    } else {
        None
    }
}

/// The layout's bytes for an address, as [`decode`] reads them.
pub fn encode(ip: IpPort) -> Vec<u8> {
    match ip {
        IpPort::V4(a, p) => {
            let mut b = vec![0u8; SIN_LEN];
            b[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&p.to_be_bytes());
            b[4..8].copy_from_slice(&a);
            b
        }
        IpPort::V6(a, p, s) => {
            let mut b = vec![0u8; SIN6_LEN];
            b[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&p.to_be_bytes());
            b[8..24].copy_from_slice(&a);
            b[24..28].copy_from_slice(&s.to_ne_bytes());
            b
        }
    }
}

/// `::ffff:a.b.c.d`, by the standard library's rule.
pub fn is_mapped(ip: &[u8; 16]) -> bool {
    Ipv6Addr::from(*ip).to_ipv4_mapped().is_some()
}

/// The host part as a person reads it: IPv4-mapped IPv6 shown as IPv4, a
/// non-zero scope as `%scope`.
pub fn host_text(ip: IpPort) -> String {
    match ip {
        IpPort::V4(a, _) => Ipv4Addr::from(a).to_string(),
        IpPort::V6(a, _, _) if is_mapped(&a) => Ipv4Addr::new(a[12], a[13], a[14], a[15]).to_string(),
        IpPort::V6(a, _, 0) => Ipv6Addr::from(a).to_string(),
        IpPort::V6(a, _, s) => format!("{}%{s}", Ipv6Addr::from(a)),
    }
}

/// `a.b.c.d:port` or `[v6]:port`, IPv4-mapped shown as IPv4.
pub fn addr_text(ip: IpPort) -> String {
    match ip {
        IpPort::V4(_, p) => format!("{}:{p}", host_text(ip)),
        IpPort::V6(a, p, _) if is_mapped(&a) => format!("{}:{p}", host_text(ip)),
        IpPort::V6(_, p, _) => format!("[{}]:{p}", host_text(ip)),
    }
}

/// The transform, one byte at a time: `a`-`z` become `A`-`Z`.
pub fn upper_ref(src: &[u8]) -> Vec<u8> {
    src.iter().map(|&b| if b.is_ascii_lowercase() { b - (b'a' - b'A') } else { b }).collect()
}

/// What guard bytes and untouched buffers are filled with.
pub const PATTERN: u8 = 0xA5;
/// Guard bytes after every buffer handed to the library.
pub const GUARD: usize = 32;

/// A `T` followed by guard bytes, all filled with [`PATTERN`] before use,
/// aligned for `T`: the library may write the `T`, and nothing after it.
#[repr(C)]
pub struct Guarded<T> {
    value: MaybeUninit<T>,
    guard: [u8; GUARD],
}

impl<T> Guarded<T> {
    /// A boxed one, every byte [`PATTERN`].
    pub fn new() -> Box<Guarded<T>> {
        let mut b: Box<Guarded<T>> = Box::new(Guarded { value: MaybeUninit::uninit(), guard: [PATTERN; GUARD] });
        // SAFETY: `value` is `size_of::<T>()` writable bytes of our own box.
        unsafe { std::ptr::write_bytes(b.value.as_mut_ptr().cast::<u8>(), PATTERN, size_of::<T>()) };
        b
    }

    /// The pointer to hand to the library.
    pub fn as_mut_ptr(&mut self) -> *mut T {
        self.value.as_mut_ptr()
    }

    /// The bytes of the value.
    pub fn value_bytes(&self) -> &[u8] {
        // SAFETY: every byte was initialised by `new` (and possibly
        // overwritten by the library, with initialised bytes).
        unsafe { std::slice::from_raw_parts(self.value.as_ptr().cast::<u8>(), size_of::<T>()) }
    }

    /// True when the library did not write the value at all.
    pub fn untouched(&self) -> bool {
        self.value_bytes().iter().all(|&b| b == PATTERN)
    }

    /// Panics unless every guard byte is as it was.
    pub fn check_guard(&self, what: &str) {
        assert!(self.guard.iter().all(|&b| b == PATTERN), "{what}: wrote past the end of its output");
    }

    /// The value, once the library reported that it wrote it.
    ///
    /// # Safety
    /// The library must have written a whole, valid `T`.
    pub unsafe fn read(&self) -> T {
        // SAFETY: the caller promises a whole valid T was written.
        unsafe { self.value.as_ptr().read() }
    }
}

/// A byte buffer of a stated capacity followed by guard bytes, on the heap
/// in one allocation of exactly `cap + GUARD` bytes.
pub struct GuardedBytes {
    buf: Vec<u8>,
    cap: usize,
}

impl GuardedBytes {
    /// `cap` bytes of [`PATTERN`] (then the guard).
    pub fn new(cap: usize) -> GuardedBytes {
        GuardedBytes { buf: vec![PATTERN; cap + GUARD], cap }
    }

    /// `content`, then the guard; the capacity is its length.
    pub fn with(content: &[u8]) -> GuardedBytes {
        let mut buf = Vec::with_capacity(content.len() + GUARD);
        buf.extend_from_slice(content);
        buf.resize(content.len() + GUARD, PATTERN);
        GuardedBytes { buf, cap: content.len() }
    }

    /// The stated capacity.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The pointer to hand to the library.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.buf.as_mut_ptr()
    }

    /// The bytes within the capacity.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.cap]
    }

    /// Panics unless every guard byte is as it was.
    pub fn check_guard(&self, what: &str) {
        assert!(self.buf[self.cap..].iter().all(|&b| b == PATTERN), "{what}: wrote past the capacity it was given");
    }
}

/// The number of open descriptors of this process (`/proc/self/fd`, less
/// the one that reads it).
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count().saturating_sub(1)).unwrap_or(0)
}

/// Counts descriptors every `every` calls and panics if the count ever
/// exceeds the first one by more than `slack`: a leak of one descriptor
/// per input shows up within a few thousand inputs.
pub struct FdWatch {
    calls: u64,
    every: u64,
    slack: usize,
    baseline: Option<usize>,
}

impl FdWatch {
    /// A watch that looks every `every` calls.
    pub const fn new(every: u64, slack: usize) -> FdWatch {
        FdWatch { calls: 0, every, slack, baseline: None }
    }

    /// Call once per input.
    pub fn tick(&mut self) {
        self.calls += 1;
        if !self.calls.is_multiple_of(self.every) {
            return;
        }
        let now = fd_count();
        let base = *self.baseline.get_or_insert(now);
        assert!(
            now <= base + self.slack,
            "descriptor leak: {now} open after {} inputs, {base} after the first {}",
            self.calls,
            self.every
        );
    }
}
