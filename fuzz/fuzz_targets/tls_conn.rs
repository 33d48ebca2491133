//! The TLS connection state machine of the server (`src/server/tls_conn.rs`)
//! against a real rustls client, over a simulated socket
//! (`src/server/conn_sim/tls.rs`). The input decides where the records are
//! split in each direction, garbage and corrupted bytes, the client's
//! `close_notify` or a plain end of stream at any point, a client that
//! stops reading, what it sends and how much, failing calls and the
//! passing of time. The simulator checks after every step that every byte
//! the client decrypts is the upper-cased byte it sent, that the server's
//! `close_notify` comes only after the client's with everything answered,
//! that an end of stream without `close_notify` is a failure, that what
//! the server holds for a client that does not read stays bounded, and
//! that the handshake and idle timeouts are kept. It panics otherwise.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use upcase::server::conn_sim::tls::{run, Fixture, NAME};

/// A self-signed Ed25519 certificate for [`NAME`], made once.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        let params = rcgen::CertificateParams::new(vec![NAME.to_owned()]).expect("params");
        let cert = params.self_signed(&key).expect("certificate");
        Fixture::new(cert.der(), &key.serialize_der())
    })
}

fuzz_target!(|data: &[u8]| {
    run(fixture(), data);
});
