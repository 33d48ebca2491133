//! The per-connection state machine of the concurrent TCP server
//! (`src/server/conn.rs`), driven by arbitrary sequences of client writes,
//! half-closes, partial reads and writes, send-buffer sizes, `EINTR`,
//! `EAGAIN`, resets and broken pipes, spurious wake-ups and the passing of
//! time. The simulator checks after every step that every byte comes back
//! upper-cased in order, that at most one buffer is held for a client that
//! does not read (back-pressure), that one wake-up reads at most its budget,
//! that the connection closes only after the client's end of stream with
//! everything answered, fails only on a fatal error, expires exactly
//! when the idle timeout and the minimum rate say, offers the first read of
//! a wake-up the whole buffer, asks for the segment size only of a client
//! that streams, and then cuts the reads that follow a full one to whole
//! segments. It panics otherwise.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    upcase::server::conn_sim::run(data);
});
