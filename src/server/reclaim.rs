//! Giving the heap back after a burst. A connection whose client does not
//! read holds a reply of up to one chunk; when many such connections leave
//! together, the allocator keeps their memory for reuse, and with several
//! loop threads it keeps it in one arena per thread, out of reach of the
//! others. A loop that has let go of held replies asks the allocator to
//! return what is free to the system: when enough have gone, at a sweep,
//! or when its last connection has closed.
//!
//! This must never run per request: asking costs a walk of the heap.

use crate::sys;

/// Held replies let go of before the loop asks at once, sweep or not.
const EVERY: usize = 64;

/// A loop's count of held replies let go of since it last gave memory back.
#[derive(Default)]
pub(crate) struct Reclaim {
    released: usize,
}

impl Reclaim {
    /// A connection that held a reply has closed.
    pub(crate) fn released(&mut self) {
        self.released += 1;
    }

    /// At the end of a wake-up. `quiet` (asked only when something was
    /// let go of): the loop swept, or has no connection left. Returns
    /// whether the heap was given back.
    pub(crate) fn after_wakeup(&mut self, quiet: impl FnOnce() -> bool) -> bool {
        if self.released >= EVERY || (self.released > 0 && quiet()) {
            sys::trim_heap();
            self.released = 0;
            return true;
        }
        false
    }
}
