//! The counters: [`Stats`], the snapshot a user reads, and the live
//! per-loop [`Counters`] it is summed from.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// TCP connections accepted and served.
    pub connections_accepted: u64,
    /// TCP connections open now.
    pub connections_active: u64,
    /// TCP connections closed at once because `max_connections` was reached.
    pub connections_rejected: u64,
    /// Bytes received (TCP and UDP payload).
    pub bytes_in: u64,
    /// Bytes sent back.
    pub bytes_out: u64,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams answered.
    pub datagrams_out: u64,
    /// Datagrams not answered: too large; from a multicast, broadcast or
    /// unspecified address, or from port 0, a port below 1024 or our own
    /// port; an echo cut by the reply-loop rule; or a reply the kernel
    /// could not send.
    pub datagrams_dropped: u64,
    /// Failures: resets, send errors, accept errors.
    pub errors: u64,
    /// TCP connections closed by the idle timeout, or for moving too slowly
    /// (`min_rate`).
    pub idle_timeouts: u64,
}

/// The live counters of one loop thread: atomics, updated by that thread
/// alone and summed by `stats`. Most are plain tallies, with relaxed
/// ordering. The ones that record a connection's end (`rejected`, `idle`,
/// `errors` for a failed connection) are counted by [`Shared::ended`].
/// One cache line pair each, so two loops never write to the same line.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Counters {
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub dgrams_in: AtomicU64,
    pub dgrams_out: AtomicU64,
    pub dgrams_dropped: AtomicU64,
    pub errors: AtomicU64,
    pub idle: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// How a TCP connection ended, for the counters.
#[derive(Clone, Copy)]
pub(crate) enum End {
    /// Closed by the client, or at stop.
    Done,
    /// Failed: a reset, a send error.
    Failed,
    /// Past its deadline: the idle timeout or the minimum rate.
    Idle,
    /// Over `max_connections`: closed at once.
    Rejected,
}
