//! Byte order, made visible: the slides' first "hidden part".
//!
//! The network sends multi-byte integers most significant byte first
//! ("big-endian", network order). An x86 or ARM host keeps them least
//! significant byte first ("little-endian", host order). So a port or an
//! IPv4 address must be rearranged on its way into a `sockaddr_in` and on
//! its way out. Python hides this; C calls `htons()`. These are ours, with
//! nothing hidden: each writes the bytes in network order and reads them
//! back as a host integer, which swaps them on a little-endian host and
//! leaves them alone on a big-endian one.

/// Host to network order, 16 bits (a port number).
///
/// ```
/// // Port 12000 is 0x2EE0: on the wire, the byte 0x2E goes first.
/// let wire = upcase::endian::hton16(12000);
/// assert_eq!(wire.to_ne_bytes(), [0x2E, 0xE0]);
/// ```
#[inline]
pub const fn hton16(host: u16) -> u16 {
    // Bytes of `host` written most significant first, then stored as they are.
    u16::from_ne_bytes([(host >> 8) as u8, host as u8])
}

/// Network to host order, 16 bits. The same rearrangement undoes itself.
#[inline]
pub const fn ntoh16(net: u16) -> u16 {
    // The first byte in memory is the most significant one.
    let b = net.to_ne_bytes();
    ((b[0] as u16) << 8) | b[1] as u16
}

/// Host to network order, 32 bits (an IPv4 address as a number).
///
/// ```
/// // 127.0.0.1 is 0x7F000001: on the wire 7F 00 00 01.
/// let wire = upcase::endian::hton32(0x7F00_0001);
/// assert_eq!(wire.to_ne_bytes(), [0x7F, 0x00, 0x00, 0x01]);
/// ```
#[inline]
pub const fn hton32(host: u32) -> u32 {
    // Most significant byte first in memory.
    u32::from_ne_bytes([(host >> 24) as u8, (host >> 16) as u8, (host >> 8) as u8, host as u8])
}

/// Network to host order, 32 bits.
#[inline]
pub const fn ntoh32(net: u32) -> u32 {
    // Memory holds the most significant byte first: rebuild the value.
    let b = net.to_ne_bytes();
    ((b[0] as u32) << 24) | ((b[1] as u32) << 16) | ((b[2] as u32) << 8) | b[3] as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_12000_goes_out_as_2e_e0() {
        assert_eq!(hton16(12000).to_ne_bytes(), [0x2E, 0xE0]);
        assert_eq!(ntoh16(u16::from_ne_bytes([0x2E, 0xE0])), 12000);
    }

    #[test]
    fn loopback_goes_out_as_7f_00_00_01() {
        assert_eq!(hton32(0x7F00_0001).to_ne_bytes(), [0x7F, 0, 0, 1]);
        assert_eq!(ntoh32(u32::from_ne_bytes([0x7F, 0, 0, 1])), 0x7F00_0001);
    }

    #[test]
    fn agrees_with_the_standard_conversions_and_round_trips() {
        for v in [0u16, 1, 0x00FF, 0xFF00, 0x1234, 12000, u16::MAX] {
            assert_eq!(hton16(v), v.to_be());
            assert_eq!(ntoh16(hton16(v)), v);
        }
        for v in [0u32, 1, 0x7F00_0001, 0x1234_5678, 0xDEAD_BEEF, u32::MAX] {
            assert_eq!(hton32(v), v.to_be());
            assert_eq!(ntoh32(hton32(v)), v);
        }
    }
}
