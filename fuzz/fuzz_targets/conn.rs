//! The per-connection state machine of the concurrent TCP server
//! (`src/server/conn.rs`), driven by arbitrary sequences of client writes,
//! half-closes, partial reads and writes, send-buffer sizes, `EINTR`,
//! `EAGAIN`, resets and broken pipes, spurious wake-ups and the passing of
//! time. The simulator checks after every step that every byte comes back
//! upper-cased in order, that at most one buffer is held for a client that
//! does not read (back-pressure), that one wake-up reads at most its budget,
//! that the connection closes only after the client's end of stream with
//! everything answered, fails only on a fatal error, expires exactly
//! when the idle timeout and the minimum rate say, and, once it has asked
//! for the segment size (only after a full read), never reads past whole
//! segments. It panics otherwise.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    upcase::server::conn_sim::run(data);
});
