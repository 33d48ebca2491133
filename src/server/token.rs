//! Tokens: the `u64` the kernel hands back with each epoll event or
//! io_uring completion, to say what it is about.
//!
//! A token names a slot of a loop's connection table, or one of the loop's
//! own descriptors. The encoding lives here alone; the loops only make
//! tokens and match on what they decode to.

/// What an epoll event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    /// The listening socket.
    Listener,
    /// The waker: the server is stopping.
    Waker,
    /// The connection in slot `index`, as of its `generation`: a slot is
    /// reused, so an event for a connection closed earlier in the same
    /// batch is told apart from one for the slot's next connection.
    Conn { index: u32, generation: u32 },
}

const LISTENER: u64 = u64::MAX;
const WAKER: u64 = u64::MAX - 1;

impl Token {
    /// The token as epoll keeps it, in `epoll_event.u64`.
    pub(crate) fn to_u64(self) -> u64 {
        match self {
            Token::Listener => LISTENER,
            Token::Waker => WAKER,
            Token::Conn { index, generation } => (u64::from(generation) << 32) | u64::from(index),
        }
    }

    /// A token from `epoll_event.u64`.
    pub(crate) fn from_u64(raw: u64) -> Token {
        match raw {
            LISTENER => Token::Listener,
            WAKER => Token::Waker,
            _ => Token::Conn { index: raw as u32, generation: (raw >> 32) as u32 },
        }
    }
}

/// What an io_uring request is for.
#[cfg(feature = "io-uring")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// A connection's `recv` into a provided buffer.
    Recv = 1,
    /// A connection's reply, from a provided buffer.
    Send = 2,
    /// A connection waits for room to write a held-back reply.
    Writable = 3,
    /// A connection that has sent nothing yet waits for its first bytes.
    Readable = 4,
    /// The multishot accept on the listening socket.
    Listener = 5,
    /// The poll of the waker.
    Waker = 6,
    /// A cancellation of another request.
    Cancel = 7,
}

/// What an io_uring completion is about: the request's kind and the
/// connection slot it concerns (0 for the loop's own requests). Kept in
/// `user_data`: the kind in the top byte, the slot in the low 32 bits.
#[cfg(feature = "io-uring")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tag {
    pub(crate) kind: Kind,
    pub(crate) index: u32,
}

// The kind sits in the top byte of `user_data`, below the two bits that
// `sys::uring` keeps for itself.
#[cfg(feature = "io-uring")]
const _: () = {
    let mut i = 0;
    while i < Tag::KINDS.len() {
        assert!((Tag::KINDS[i] as u8) < 64);
        i += 1;
    }
};

#[cfg(feature = "io-uring")]
impl Tag {
    const KINDS: [Kind; 7] =
        [Kind::Recv, Kind::Send, Kind::Writable, Kind::Readable, Kind::Listener, Kind::Waker, Kind::Cancel];

    /// A tag for slot `index`.
    pub(crate) fn new(kind: Kind, index: usize) -> Tag {
        Tag { kind, index: index as u32 }
    }

    /// The tag as `user_data`.
    pub(crate) fn to_u64(self) -> u64 {
        (u64::from(self.kind as u8) << 56) | u64::from(self.index)
    }

    /// A tag from `user_data`; `None` for a value no request of ours has.
    pub(crate) fn from_u64(raw: u64) -> Option<Tag> {
        let kind = (raw >> 56) as u8;
        let kind = Tag::KINDS.into_iter().find(|k| *k as u8 == kind)?;
        Some(Tag { kind, index: raw as u32 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoll_tokens_round_trip() {
        for t in [
            Token::Listener,
            Token::Waker,
            Token::Conn { index: 0, generation: 0 },
            Token::Conn { index: 7, generation: 1 },
            Token::Conn { index: u32::MAX - 2, generation: u32::MAX - 1 },
        ] {
            assert_eq!(Token::from_u64(t.to_u64()), t);
        }
        assert_ne!(Token::Conn { index: 3, generation: 1 }.to_u64(), Token::Conn { index: 3, generation: 2 }.to_u64());
    }

    #[cfg(feature = "io-uring")]
    #[test]
    fn completion_tags_round_trip() {
        for kind in Tag::KINDS {
            for index in [0usize, 1, 4095, u32::MAX as usize] {
                assert_eq!(Tag::from_u64(Tag::new(kind, index).to_u64()), Some(Tag::new(kind, index)));
            }
        }
        assert_eq!(Tag::from_u64(0), None);
        assert_eq!(Tag::from_u64(200 << 56), None);
    }
}
