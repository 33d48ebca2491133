//! Descriptor-leak checks. They count `/proc/self/fd`, so they run in a
//! test binary of their own, one after another in a single test.

mod common;

use std::time::Duration;

use common::*;
use upcase::client::tcp_request;
use upcase::server::{Mode, Transport};

#[test]
fn no_descriptor_leaks() {
    stop_with_clients_connected_and_data_in_flight_is_prompt_and_leaks_nothing();
    start_and_stop_a_hundred_times_leaks_no_descriptor();
    udp_start_and_stop_leaks_no_descriptor();
    failed_requests_leak_no_descriptor();
}

fn udp_start_and_stop_leaks_no_descriptor() {
    let before = open_fds();
    for i in 0..50 {
        let mode = if i % 2 == 0 { Mode::Concurrent } else { Mode::Iterative };
        let mut s = start(config("127.0.0.1", Transport::Udp, mode));
        if i % 10 == 0 {
            let r = upcase::client::udp_request("127.0.0.1", s.port, b"x", Duration::from_secs(1), 3).expect("x");
            assert_eq!(r, b"X");
        }
        s.stop();
    }
    assert_eq!(open_fds(), before);
}

fn failed_requests_leak_no_descriptor() {
    let before = open_fds();
    let port =
        upcase::server::Server::bind(config("127.0.0.1", Transport::Tcp, Mode::Concurrent)).expect("bind").port();
    for _ in 0..20 {
        assert!(tcp_request("127.0.0.1", port, b"x", T).is_err());
        assert!(tcp_request("localhost", port, b"x", T).is_err());
        assert!(tcp_request("no-such-host.invalid", port, b"x", T).is_err());
        assert!(upcase::client::Connection::connect("::1", port, T).is_err());
        assert!(upcase::client::udp_request("127.0.0.1", port, b"x", Duration::from_millis(50), 0).is_err());
    }
    assert_eq!(open_fds(), before);
}

fn stop_with_clients_connected_and_data_in_flight_is_prompt_and_leaks_nothing() {
    let before = open_fds();
    for mode in [Mode::Concurrent, Mode::Iterative] {
        let mut s = start(config("127.0.0.1", Transport::Tcp, mode));
        let clients: Vec<_> = (0..20).map(|_| raw_connect("127.0.0.1", s.port)).collect();
        for c in &clients {
            send_some(c, &pattern(200_000));
        }
        std::thread::sleep(Duration::from_millis(100));
        let took = s.stop();
        assert!(took < Duration::from_secs(2), "{mode:?} stop took {took:?}");
        // Clients still in the backlog (iterative mode) go when the
        // listening socket is closed, with the server.
        drop(s);
        for c in &clients {
            assert!(closed_within(c, Duration::from_secs(2)), "{mode:?}: client left open");
        }
        drop(clients);
    }
    assert_eq!(open_fds(), before, "descriptors leaked");
}

fn start_and_stop_a_hundred_times_leaks_no_descriptor() {
    let before = open_fds();
    for i in 0..100 {
        let mode = if i % 2 == 0 { Mode::Concurrent } else { Mode::Iterative };
        let mut s = start(config("127.0.0.1", Transport::Tcp, mode));
        if i % 10 == 0 {
            assert_eq!(tcp_request("127.0.0.1", s.port, b"x", T).expect("x"), b"X");
        }
        s.stop();
    }
    assert_eq!(open_fds(), before);
}
