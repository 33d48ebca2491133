//! UDP server and client, on loopback (IPv4 and IPv6).

mod common;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use upcase::addr::SockAddr;
use upcase::client::{udp_request, Options, UdpReply};
use upcase::server::{Config, Mode, Server, Transport};
use upcase::sys;

const SEC: Duration = Duration::from_secs(1);
/// How long a test waits for a reply, or for the counters to move: long,
/// so that a loaded machine does not make the client send again (and the
/// server count a second datagram) or a test give up early.
const WAIT: Duration = Duration::from_secs(5);

#[test]
fn answers_over_ipv4_and_ipv6_in_both_modes() {
    for host in ["127.0.0.1", "::1"] {
        for mode in [Mode::Concurrent, Mode::Iterative] {
            let s = start(config(host, Transport::Udp, mode));
            assert_eq!(udp_request(host, s.port, b"hello udp", WAIT, 3).expect("request"), b"HELLO UDP");
            let seen = s.seen.lock().expect("lock").clone();
            assert_eq!(seen.len(), 1, "{seen:?}");
            assert!(seen[0].starts_with(if host == "::1" { "[::1]:" } else { "127.0.0.1:" }), "{seen:?}");
            assert!(eventually(WAIT, || {
                let st = s.stats();
                (st.datagrams_in, st.datagrams_out, st.datagrams_dropped) == (1, 1, 0)
            }));
        }
    }
}

#[test]
fn sizes_zero_one_and_the_ipv4_limit() {
    let s = start(config("127.0.0.1", Transport::Udp, Mode::Concurrent));
    for n in [0usize, 1, 1024, 1025, 2048, 9000, 65_507] {
        let data = pattern(n);
        let reply = udp_request("127.0.0.1", s.port, &data, WAIT, 3).expect("request");
        assert!(reply == upper(&data), "size {n}");
    }
    // One byte more than IPv4 carries: refused by the kernel, said clearly.
    let e = udp_request("127.0.0.1", s.port, &pattern(65_508), SEC, 0).expect_err("too big");
    assert_eq!(e.code(), -libc::EMSGSIZE);
}

#[test]
fn the_ipv6_limit() {
    let s = start(config("::1", Transport::Udp, Mode::Concurrent));
    let data = pattern(65_527);
    assert!(udp_request("::1", s.port, &data, WAIT, 3).expect("request") == upper(&data));
}

#[test]
fn a_datagram_that_does_not_fit_is_dropped_and_counted_never_cut() {
    let cfg = Config { max_datagram: 100, ..config("127.0.0.1", Transport::Udp, Mode::Concurrent) };
    let s = start(cfg);
    // Send from a raw socket and look for any answer at all.
    let fd = sys::socket(libc::AF_INET, libc::SOCK_DGRAM, true).expect("socket");
    let to = SockAddr::v4([127, 0, 0, 1], s.port);
    sys::sendto(fd.as_fd(), &pattern(101), &to).expect("sendto");
    sys::sendto(fd.as_fd(), &pattern(100), &to).expect("sendto");
    // The first reply to arrive is the 100-byte one: the 101-byte datagram
    // got no answer, not a cut copy.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 70_000];
    let got = loop {
        match sys::recvfrom(fd.as_fd(), &mut buf, 0) {
            Ok((n, _)) => break n,
            Err(_) => {
                assert!(Instant::now() < deadline, "no reply at all");
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    };
    assert_eq!(got, 100);
    assert!(eventually(Duration::from_secs(2), || s.stats().datagrams_dropped == 1));
    std::thread::sleep(Duration::from_millis(100));
    assert!(sys::recvfrom(fd.as_fd(), &mut buf, 0).is_err(), "a second reply arrived");
}

#[test]
fn replies_go_to_each_sender_many_at_once() {
    let s = start(config("127.0.0.1", Transport::Udp, Mode::Concurrent));
    let port = s.port;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..100 {
                    let msg = format!("sender {t} datagram {i}");
                    let r = udp_request("127.0.0.1", port, msg.as_bytes(), WAIT, 5).expect("reply");
                    assert_eq!(r, msg.to_ascii_uppercase().as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("sender");
    }
    // The counters are added after each batch is sent: allow them a moment.
    assert!(eventually(WAIT, || s.stats().datagrams_out >= 800));
}

#[test]
fn a_client_ignores_datagrams_from_other_addresses() {
    // A "server" that is only a raw socket: it learns the client's address
    // from a first datagram, then a stranger writes to the client first.
    let (server, port) = fake_server();
    let stranger = sys::socket(libc::AF_INET, libc::SOCK_DGRAM, true).expect("socket");
    let client = std::thread::spawn(move || udp_request("127.0.0.1", port, b"who", Duration::from_secs(5), 0));
    let from = client_address(&server);
    sys::sendto(stranger.as_fd(), b"FAKE", &from).expect("stranger");
    std::thread::sleep(Duration::from_millis(50));
    sys::sendto(server.as_fd(), b"WHO", &from).expect("reply");
    assert_eq!(client.join().expect("client").expect("reply"), b"WHO");
}

/// A socket on 127.0.0.1 that plays a UDP server by hand, and its port.
fn fake_server() -> (OwnedFd, u16) {
    let server = sys::socket(libc::AF_INET, libc::SOCK_DGRAM, true).expect("socket");
    sys::bind(server.as_fd(), &SockAddr::v4([127, 0, 0, 1], 0)).expect("bind");
    let port = sys::getsockname(server.as_fd()).expect("name").port();
    (server, port)
}

/// Waits for a client's request on `server`; returns the client's address.
fn client_address(server: &OwnedFd) -> SockAddr {
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok((_, from)) = sys::recvfrom(server.as_fd(), &mut buf, 0) {
            return from;
        }
        assert!(Instant::now() < deadline, "no request");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A fake UDP server: it waits for the client's request, then sends
/// `before` (each datagram from the server's own socket, or from a
/// stranger's), then the right reply. Returns what the client got.
fn fake_udp_exchange(request: &'static [u8], before: &[(&[u8], bool)]) -> upcase::Result<UdpReply> {
    let (server, port) = fake_server();
    let stranger = sys::socket(libc::AF_INET, libc::SOCK_DGRAM, true).expect("socket");
    let client = std::thread::spawn(move || {
        Options::new().timeout(Some(WAIT)).retries(0).udp_request("127.0.0.1", port, request)
    });
    let from = client_address(&server);
    for (datagram, from_stranger) in before {
        let fd = if *from_stranger { &stranger } else { &server };
        sys::sendto(fd.as_fd(), datagram, &from).expect("wrong reply");
    }
    sys::sendto(server.as_fd(), &upcase::upper::upper(request), &from).expect("reply");
    client.join().expect("client")
}

#[test]
fn a_client_ignores_a_longer_datagram_from_the_server_address() {
    let reply = fake_udp_exchange(b"who", &[(b"WHO AND MORE", false)]).expect("reply");
    assert_eq!(reply, UdpReply { data: b"WHO".to_vec(), ignored: 1 });
}

#[test]
fn a_client_ignores_a_shorter_datagram_from_the_server_address() {
    let reply = fake_udp_exchange(b"who", &[(b"WH", false), (b"", false)]).expect("reply");
    assert_eq!(reply, UdpReply { data: b"WHO".to_vec(), ignored: 2 });
}

#[test]
fn a_client_ignores_a_datagram_that_is_not_the_request_upper_cased() {
    let reply = fake_udp_exchange(b"who", &[(b"who", false), (b"WHY", false)]).expect("reply");
    assert_eq!(reply, UdpReply { data: b"WHO".to_vec(), ignored: 2 });
}

#[test]
fn a_client_waits_through_every_kind_of_wrong_datagram() {
    let wrong: &[(&[u8], bool)] = &[(b"WHO?", false), (b"WH", false), (b"WHY", false), (b"WHO", true)];
    let reply = fake_udp_exchange(b"who", wrong).expect("reply");
    assert_eq!(reply.data, b"WHO");
    // The stranger's datagram is dropped by the kernel before the client
    // sees it (the client's socket is connected to the server), or by the
    // client itself.
    assert!((3..=4).contains(&reply.ignored), "{reply:?}");
}

#[test]
fn a_timeout_says_how_many_datagrams_were_ignored() {
    let (server, port) = fake_server();
    let client = std::thread::spawn(move || udp_request("127.0.0.1", port, b"who", Duration::from_millis(300), 0));
    let from = client_address(&server);
    sys::sendto(server.as_fd(), b"WHY", &from).expect("wrong reply");
    let e = client.join().expect("client").expect_err("no right reply");
    assert_eq!(e.code(), -libc::ETIMEDOUT);
    assert!(e.to_string().contains("1 datagram(s) that could not be the reply ignored"), "{e}");
}

#[test]
fn no_answer_is_a_bounded_timeout_with_retries() {
    // A bound socket that never answers.
    let silent = sys::socket(libc::AF_INET, libc::SOCK_DGRAM, true).expect("socket");
    sys::bind(silent.as_fd(), &SockAddr::v4([127, 0, 0, 1], 0)).expect("bind");
    let port = sys::getsockname(silent.as_fd()).expect("name").port();
    let t = Instant::now();
    let e = udp_request("127.0.0.1", port, b"hello?", Duration::from_millis(100), 2).expect_err("timeout");
    let took = t.elapsed();
    assert_eq!(e.code(), -libc::ETIMEDOUT);
    assert!(e.to_string().contains("3 attempt"), "{e}");
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "{took:?}");
    // All three attempts reached the socket.
    let mut buf = [0u8; 64];
    let mut n = 0;
    while sys::recvfrom(silent.as_fd(), &mut buf, 0).is_ok() {
        n += 1;
    }
    assert_eq!(n, 3);
}

#[test]
fn stop_is_prompt() {
    for mode in [Mode::Concurrent, Mode::Iterative] {
        let mut s = start(config("::1", Transport::Udp, mode));
        assert_eq!(udp_request("::1", s.port, b"x", WAIT, 3).expect("x"), b"X");
        assert!(s.stop() < Duration::from_secs(2));
    }
}

#[test]
fn dual_stack_udp_answers_ipv4_as_plain_ipv4() {
    let s = start(config("", Transport::Udp, Mode::Concurrent));
    assert_eq!(udp_request("127.0.0.1", s.port, b"four", WAIT, 3).expect("v4"), b"FOUR");
    assert_eq!(udp_request("::1", s.port, b"six", WAIT, 3).expect("v6"), b"SIX");
    let seen = s.seen.lock().expect("lock").clone();
    assert!(seen.iter().any(|a| a.starts_with("127.0.0.1:")), "{seen:?}");
}

#[test]
fn a_udp_port_in_use_is_refused_not_shared() {
    // The loops' sockets share their port (SO_REUSEPORT); a second server
    // must still be told the port is taken, in both modes.
    let s = start(config("127.0.0.1", Transport::Udp, Mode::Concurrent));
    for mode in [Mode::Concurrent, Mode::Iterative] {
        let e = Server::bind(Config { port: s.port, ..config("127.0.0.1", Transport::Udp, mode) })
            .err()
            .expect("port in use");
        assert_eq!(e.code(), -libc::EADDRINUSE, "{mode:?}: {e}");
    }
    assert_eq!(udp_request("127.0.0.1", s.port, b"still mine", WAIT, 3).expect("served"), b"STILL MINE");
}

#[test]
fn datagrams_from_server_ports_are_not_answered() {
    // From a port below 1024 (a server's: echo, chargen...) no reply, so
    // that one forged datagram cannot start an endless exchange.
    let s = start(config("0.0.0.0", Transport::Udp, Mode::Concurrent));
    let fd = sys::socket(libc::AF_INET, libc::SOCK_DGRAM, true).expect("socket");
    if sys::bind(fd.as_fd(), &SockAddr::v4([127, 0, 0, 1], 1019)).is_err() {
        eprintln!("cannot bind a port below 1024 here (not root): skipping that half");
    } else {
        sys::sendto(fd.as_fd(), b"loop?", &SockAddr::v4([127, 0, 0, 1], s.port)).expect("sendto");
        assert!(eventually(Duration::from_secs(2), || s.stats().datagrams_dropped == 1));
        let mut buf = [0u8; 64];
        std::thread::sleep(Duration::from_millis(100));
        assert!(sys::recvfrom(fd.as_fd(), &mut buf, 0).is_err(), "answered a server port");
    }
    // Ordinary clients are answered.
    assert_eq!(udp_request("127.0.0.1", s.port, b"fine", WAIT, 3).expect("served"), b"FINE");
}

/// Sends `msg` to `to` from a fresh, unconnected socket (so a reply from any
/// address is seen) and returns the reply and the address it came from.
fn exchange(to: &SockAddr, msg: &[u8]) -> (Vec<u8>, SockAddr) {
    let fd = sys::socket(to.family(), libc::SOCK_DGRAM, true).expect("socket");
    sys::sendto(fd.as_fd(), msg, to).expect("sendto");
    // Loopback loses nothing: one send, and a generous wait for the reply.
    let waited = sys::poll2((fd.as_raw_fd(), libc::POLLIN), None, 5000).expect("poll");
    assert_ne!(waited.0, 0, "no reply at all to {to}");
    let mut buf = [0u8; 256];
    let (n, from) = sys::recvfrom(fd.as_fd(), &mut buf, 0).expect("recvfrom");
    (buf[..n].to_vec(), from)
}

#[test]
fn a_wildcard_server_replies_from_the_address_each_request_was_sent_to() {
    // A wildcard socket would otherwise reply from the kernel's choice of
    // source (127.0.0.1), and a connected client never sees that reply.
    for host in ["0.0.0.0", "", "::"] {
        for mode in [Mode::Concurrent, Mode::Iterative] {
            let s = start(config(host, Transport::Udp, mode));
            let mut sent = 0;
            for dst in [[127, 0, 0, 2], [127, 0, 0, 3], [127, 0, 0, 1]] {
                // A few senders each, so both loops of the concurrent server
                // (SO_REUSEPORT spreads senders by address) take some.
                for n in 0..4 {
                    let to = SockAddr::v4(dst, s.port);
                    let msg = format!("to {to} #{n}");
                    let (reply, from) = exchange(&to, msg.as_bytes());
                    assert_eq!(reply, msg.to_ascii_uppercase().as_bytes(), "{host:?} {mode:?}");
                    assert_eq!(from, to, "{host:?} {mode:?}: reply from the wrong address");
                    sent += 1;
                }
            }
            // The library's own client connects its socket: it only sees a
            // reply from the address it sent to.
            for dst in ["127.0.0.2", "127.0.0.3"] {
                let r = udp_request(dst, s.port, b"connected", WAIT, 3);
                assert_eq!(r.expect("udp_request").as_slice(), b"CONNECTED", "{host:?} {mode:?} to {dst}");
                sent += 1;
            }
            assert!(eventually(WAIT, || {
                let st = s.stats();
                (st.datagrams_out, st.datagrams_dropped, st.errors) == (sent, 0, 0)
            }));
        }
    }
}

#[test]
fn a_dual_stack_server_replies_to_ipv4_mapped_senders_from_the_mapped_address() {
    // An IPv6 client sending to ::ffff:127.0.0.2 must hear back from it.
    for host in ["", "::"] {
        for mode in [Mode::Concurrent, Mode::Iterative] {
            let s = start(config(host, Transport::Udp, mode));
            for last in [2u8, 3] {
                let mut ip = [0u8; 16];
                ip[10..].copy_from_slice(&[0xFF, 0xFF, 127, 0, 0, last]);
                let to = SockAddr::v6(ip, s.port, 0);
                let (reply, from) = exchange(&to, b"mapped");
                assert_eq!(reply, b"MAPPED");
                assert_eq!(from, to, "{host:?} {mode:?}: reply from the wrong address");
            }
        }
    }
}

#[test]
fn an_ipv6_wildcard_server_replies_to_ipv6_from_the_address_sent_to() {
    // With ::1 the only IPv6 loopback address, the kernel's own pick would
    // be right too: this checks that the IPV6_PKTINFO the reply carries is
    // one the kernel accepts (a bad one fails the send: no reply at all).
    for host in ["::", ""] {
        for mode in [Mode::Concurrent, Mode::Iterative] {
            let s = start(config(host, Transport::Udp, mode));
            let to = SockAddr::v6([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], s.port, 0);
            for n in 0..4 {
                let (reply, from) = exchange(&to, format!("six {n}").as_bytes());
                assert_eq!(reply, format!("SIX {n}").as_bytes());
                assert_eq!(from, to, "{host:?} {mode:?}");
            }
            assert_eq!(udp_request("::1", s.port, b"six", WAIT, 3).expect("::1"), b"SIX");
        }
    }
}

#[test]
fn a_datagram_queued_before_run_is_answered_from_its_destination_too() {
    // Sent between bind and run: on the IPv4 socket its IP_PKTINFO then has
    // no ipi_spec_dst (the option came on after it arrived), and the
    // datagram's own destination must serve instead.
    for host in ["0.0.0.0", ""] {
        let server = Arc::new(Server::bind(config(host, Transport::Udp, Mode::Iterative)).expect("bind"));
        let to = SockAddr::v4([127, 0, 0, 2], server.port());
        let fd = sys::socket(libc::AF_INET, libc::SOCK_DGRAM, true).expect("socket");
        sys::sendto(fd.as_fd(), b"early", &to).expect("sendto");
        let s2 = Arc::clone(&server);
        let thread = std::thread::spawn(move || s2.run());
        let poll = sys::poll2((fd.as_raw_fd(), libc::POLLIN), None, 5000).expect("poll");
        assert_ne!(poll.0, 0, "{host:?}: no reply");
        let mut buf = [0u8; 64];
        let (n, from) = sys::recvfrom(fd.as_fd(), &mut buf, 0).expect("recvfrom");
        assert_eq!(&buf[..n], b"EARLY");
        assert_eq!(from, to, "{host:?}: reply from the wrong address");
        server.stop();
        thread.join().expect("join").expect("run");
    }
}

/// How many echoes in a row a server answers before it drops one
/// (`ECHOES_ALLOWED` in `src/server/loopguard.rs`).
const ECHOES_ALLOWED: u64 = 64;

/// Sends one UDP datagram to 127.0.0.1:`to_port` that claims to come from
/// `from`:`from_port`: a raw socket, with the IP and UDP headers written
/// here. `false` when this process may not open a raw socket (not root, no
/// CAP_NET_RAW): the caller then skips, as for ports below 1024. (The
/// kernel writes its own source over a `0.0.0.0` one: that one cannot be
/// forged here.)
fn forge_udp(from: [u8; 4], from_port: u16, to_port: u16, payload: &[u8]) -> bool {
    // IPPROTO_RAW: every datagram brings its own IP header (IP_HDRINCL).
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_RAW) };
    if raw < 0 {
        let e = std::io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
            eprintln!("cannot open a raw socket here (not root, no CAP_NET_RAW): skipping: {e}");
            return false;
        }
        panic!("a raw socket is needed to forge the datagram: {e}");
    }
    // SAFETY: `raw` is a descriptor socket(2) just returned, owned by no one else.
    let raw = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    let udp_len = u16::try_from(8 + payload.len()).expect("small payload");
    let ip_len = udp_len + 20;
    let mut packet = Vec::with_capacity(usize::from(ip_len));
    // The IPv4 header, every field in network byte order (big-endian):
    // version 4 and 5 words of header, no TOS, total length, id 0 and
    // checksum 0 (the kernel fills both in), no fragments, TTL 64,
    // protocol UDP, then the source and destination addresses.
    packet.extend_from_slice(&[0x45, 0]);
    packet.extend_from_slice(&ip_len.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0, 0, 64, libc::IPPROTO_UDP as u8, 0, 0]);
    packet.extend_from_slice(&from);
    packet.extend_from_slice(&[127, 0, 0, 1]);
    // The UDP header: source port, destination port, length (header
    // included), checksum 0 ("none", which IPv4 allows).
    packet.extend_from_slice(&from_port.to_be_bytes());
    packet.extend_from_slice(&to_port.to_be_bytes());
    packet.extend_from_slice(&udp_len.to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(payload);
    // The route is chosen by this address; the header above is sent as it is.
    let sent = sys::sendto(raw.as_fd(), &packet, &SockAddr::v4([127, 0, 0, 1], 0)).expect("send the forged datagram");
    assert_eq!(sent, packet.len());
    true
}

/// Starts two servers, forges one datagram per payload to A as if from B,
/// and checks that the loops start and then stop, each cut by one drop.
fn loops_between_two_servers_are_cut(payloads: &[&[u8]]) {
    // Each forged datagram makes A answer B, B answer A (the reply is
    // already upper case, so it upper-cases to itself), and so on, until
    // one of them has seen its own replies come back too often and drops
    // one.
    let cfg = || Config { threads: 1, ..config("127.0.0.1", Transport::Udp, Mode::Concurrent) };
    let a = start(cfg());
    let b = start(cfg());
    for p in payloads {
        if !forge_udp([127, 0, 0, 1], b.port, a.port, p) {
            return;
        }
    }
    let out = || (a.stats().datagrams_out, b.stats().datagrams_out);
    // The loops start: each server answers the other at least once (so
    // without the rule this test fails: they would never stop).
    assert!(eventually(Duration::from_secs(2), || {
        let (x, y) = out();
        x >= 1 && y >= 1
    }));
    // Then they stop: the counts stay still for half a second (within 20 s,
    // ample on a loaded machine; without the rule they never do), with
    // about twice the echoes allowed per loop.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = out();
    let mut still_since = Instant::now();
    while Instant::now() < deadline && still_since.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(20));
        let now = out();
        if now != last {
            last = now;
            still_since = Instant::now();
        }
    }
    let loops = payloads.len() as u64;
    assert!(still_since.elapsed() >= Duration::from_millis(500), "still exchanging after 20 s: {last:?} replies");
    // A stall of the machine can look like stillness before the last loop
    // is cut: wait for every cut (each is one dropped datagram).
    let dropped = || a.stats().datagrams_dropped + b.stats().datagrams_dropped;
    assert!(eventually(Duration::from_secs(20), || dropped() >= loops), "{} of {loops} loops cut", dropped());
    let (x, y) = out();
    assert!(x + y <= loops * 2 * (ECHOES_ALLOWED + 4), "{x} + {y} replies before the loops were cut");
    assert_eq!(dropped(), loops, "one datagram dropped ends one loop");
}

#[test]
fn one_forged_datagram_does_not_start_an_endless_loop_between_two_servers() {
    loops_between_two_servers_are_cut(&[b"ping-pong"]);
}

#[test]
fn loops_side_by_side_through_the_same_two_servers_are_all_cut() {
    // Two forged datagrams, two payloads: the loops interleave, so no
    // datagram repeats the reply sent just before it.
    loops_between_two_servers_are_cut(&[b"first loop", b"SECOND LOOP"]);
}

/// Sends `msg` on `fd` to `to` and waits up to `wait` for the reply.
fn ask(fd: &std::os::fd::OwnedFd, to: &SockAddr, msg: &[u8], wait: Duration) -> Option<Vec<u8>> {
    sys::sendto(fd.as_fd(), msg, to).expect("sendto");
    let ms = wait.as_millis() as i32;
    let ready = sys::poll2((fd.as_raw_fd(), libc::POLLIN), None, ms).expect("poll");
    if ready.0 == 0 {
        return None;
    }
    let mut buf = [0u8; 256];
    let (n, _) = sys::recvfrom(fd.as_fd(), &mut buf, 0).expect("recvfrom");
    Some(buf[..n].to_vec())
}

#[test]
fn clients_from_one_port_are_all_answered() {
    // One socket, so one source port throughout: a thousand different
    // payloads (upper case already, so each is checked as a possible
    // echo), then one lower-case payload a thousand times.
    let s = start(Config { threads: 1, ..config("127.0.0.1", Transport::Udp, Mode::Concurrent) });
    let to = SockAddr::v4([127, 0, 0, 1], s.port);
    let fd = sys::socket(libc::AF_INET, libc::SOCK_DGRAM, false).expect("socket");
    for i in 0..1000 {
        let msg = format!("REQUEST {i:04}");
        assert_eq!(ask(&fd, &to, msg.as_bytes(), 5 * SEC).as_deref(), Some(msg.as_bytes()), "{msg}");
    }
    for i in 0..1000 {
        assert_eq!(ask(&fd, &to, b"hello again", 5 * SEC).as_deref(), Some(&b"HELLO AGAIN"[..]), "#{i}");
    }
    assert!(eventually(WAIT, || s.stats().datagrams_out == 2000));
    assert_eq!(s.stats().datagrams_dropped, 0);
}

#[test]
fn a_client_that_sends_our_replies_back_loses_one_in_65() {
    // The price of the rule: the same upper-case datagram, again and again,
    // each right after its answer, looks like a loop. One in
    // ECHOES_ALLOWED + 1 goes unanswered (a retry gets through).
    let s = start(Config { threads: 1, ..config("127.0.0.1", Transport::Udp, Mode::Concurrent) });
    let to = SockAddr::v4([127, 0, 0, 1], s.port);
    let fd = sys::socket(libc::AF_INET, libc::SOCK_DGRAM, false).expect("socket");
    // Each request is answered or counted as dropped; which one is read
    // from the reply or the counter, not from a timeout, so a slow machine
    // does not turn a late answer into a loss.
    let mut lost = 0;
    // The longest pause between two requests: one past the rule's window
    // (a stalled machine) starts the count of echoes again.
    let mut longest = Duration::ZERO;
    let mut previous: Option<Instant> = None;
    for i in 0..200 {
        let dropped = s.stats().datagrams_dropped;
        sys::sendto(fd.as_fd(), b"PING", &to).expect("sendto");
        let t = Instant::now();
        if let Some(p) = previous.replace(t) {
            longest = longest.max(t - p);
        }
        loop {
            assert!(t.elapsed() < Duration::from_secs(10), "request {i}: neither answered nor dropped");
            if sys::poll2((fd.as_raw_fd(), libc::POLLIN), None, 10).expect("poll").0 != 0 {
                let mut buf = [0u8; 16];
                let (n, _) = sys::recvfrom(fd.as_fd(), &mut buf, 0).expect("recvfrom");
                assert_eq!(&buf[..n], b"PING");
                break;
            }
            if s.stats().datagrams_dropped > dropped {
                lost += 1;
                break;
            }
        }
    }
    // The first is no echo; then 64 echoes are answered and one dropped,
    // and so on: numbers 66, 131 and 196 go unanswered.
    assert_eq!(s.stats().datagrams_dropped, lost);
    // The server sees a gap of at most two of ours (a request it was slow
    // to take shows as our wait for its reply), so below half the window
    // the count is exact.
    if longest < Duration::from_millis(450) {
        assert_eq!(lost, 3, "longest pause between requests {longest:?}");
    } else {
        assert!((1..=3).contains(&lost), "{lost} lost, longest pause between requests {longest:?}");
    }
}

#[test]
fn multicast_and_broadcast_sources_are_not_answered() {
    // A forged source the reply would go to: a multicast group (every
    // host on the link is in 224.0.0.1) or the broadcast address. The
    // catcher listens on the forged port on every local address, where a
    // reply to the group comes back to this host.
    let catcher = sys::socket(libc::AF_INET, libc::SOCK_DGRAM, true).expect("socket");
    sys::bind(catcher.as_fd(), &SockAddr::v4([0; 4], 0)).expect("bind");
    let port = sys::getsockname(catcher.as_fd()).expect("name").port();
    // IPv4, and IPv4 as `::ffff:a.b.c.d` on a dual-stack server.
    for host in ["127.0.0.1", "::"] {
        let s = start(config(host, Transport::Udp, Mode::Concurrent));
        let sources = [[224, 0, 0, 1], [239, 1, 2, 3], [255, 255, 255, 255]];
        for from in sources {
            if !forge_udp(from, port, s.port, b"who is there?") {
                return;
            }
        }
        let n = sources.len() as u64;
        assert!(
            eventually(WAIT, || {
                let st = s.stats();
                st.datagrams_in == n && st.datagrams_dropped == n
            }),
            "{host}: {:?}",
            s.stats()
        );
        let mut buf = [0u8; 64];
        let poll = sys::poll2((catcher.as_raw_fd(), libc::POLLIN), None, 200).expect("poll");
        assert_eq!(poll.0, 0, "{host}: a reply came: {:?}", sys::recvfrom(catcher.as_fd(), &mut buf, 0));
        assert_eq!(s.stats().datagrams_out, 0, "{host}");
        assert!(s.seen.lock().expect("lock").is_empty(), "{host}: a forged source was told to the application");
        // An ordinary client still is.
        assert_eq!(udp_request("127.0.0.1", s.port, b"fine", WAIT, 3).expect("served"), b"FINE");
    }
}
