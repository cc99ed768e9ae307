//! Buffer sizes from a protocol's types: the largest record each end sends
//! and receives, from the `MaxSize` bounds the protocol declares.

use core::marker::PhantomData;

use postcard::experimental::max_size::MaxSize;

use super::{BODY, FdSlot, NoError, Protocol};

/// The largest encoded size of `T`, for the `MAX_*` constants of a
/// [`Protocol`] whose type has a bound (derive
/// [`MaxSize`](postcard::experimental::max_size::MaxSize) for it; slices
/// and strings have none).
///
/// # Example
///
/// ```
/// use ipc_unixsocket::calls::{FdSlot, bound};
///
/// assert_eq!(bound::<u32>(), Some(5)); // a varint
/// assert_eq!(bound::<(FdSlot, bool)>(), Some(2));
/// ```
#[must_use]
pub const fn bound<T: MaxSize>() -> Option<usize> {
    Some(T::POSTCARD_MAX_SIZE)
}

impl MaxSize for FdSlot {
    const POSTCARD_MAX_SIZE: usize = 1;
}

impl postcard_schema::Schema for FdSlot {
    const SCHEMA: &'static postcard_schema::schema::NamedType =
        &postcard_schema::schema::NamedType {
            name: "FdSlot",
            ty: <u8 as postcard_schema::Schema>::SCHEMA.ty,
        };
}

impl MaxSize for NoError {
    const POSTCARD_MAX_SIZE: usize = 0;
}

/// The sizes of the two buffers each end of protocol `P` needs: the 16
/// header bytes and the largest body it sends (`out`) or receives
/// (`inbox`), hellos included. For array lengths:
/// `[0u8; Buffers::<P>::CALLER_INBOX]`. A constant whose types include one
/// without a bound (`None` in [`Protocol`]) fails to compile where it is
/// used: such a buffer's size is the caller's choice.
///
/// [`Caller::with_arrays`](super::Caller::with_arrays) and
/// [`Responder::with_arrays`](super::Responder::with_arrays) refuse
/// smaller arrays at compile time, `new` refuses smaller slices with
/// [`Error::BufferTooSmall`](crate::Error::BufferTooSmall).
///
/// # Example
///
/// ```
/// use ipc_unixsocket::calls::{Buffers, FdSlot, MaxSize, NoError, Protocol, Schema, bound};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize, MaxSize, Schema)]
/// enum Request {
///     Configure { buffers: [FdSlot; 4] },
///     Process { frame: u32, buffer: u8 },
/// }
///
/// struct Ipa;
/// impl Protocol for Ipa {
///     const NAME: &'static str = "ipa";
///     const VERSION: u32 = 1;
///     type Request<'a> = Request;
///     type Reply<'a> = [u64; 8]; // a histogram
///     type Event<'a> = (u16, u32);
///     type Error<'a> = NoError;
///     const MAX_REQUEST: Option<usize> = bound::<Request>();
///     const MAX_REPLY: Option<usize> = bound::<[u64; 8]>();
///     const MAX_EVENT: Option<usize> = bound::<(u16, u32)>();
///     const MAX_ERROR: Option<usize> = bound::<NoError>();
/// }
///
/// // 16 header bytes and the hello ("ipa": 1 + 3, the version 5, 4 schema
/// // hashes of 8), larger than the largest request (an index, 5 + 1).
/// assert_eq!(Buffers::<Ipa>::CALLER_OUT, 16 + 41);
/// // The largest of a reply (8 u64 varints of 10), an event (3 + 5) and
/// // the hello.
/// assert_eq!(Buffers::<Ipa>::CALLER_INBOX, 16 + 80);
/// let mut inbox = [0u8; Buffers::<Ipa>::CALLER_INBOX];
/// # let _ = &mut inbox;
/// ```
///
/// A type without a bound has no such size: using the constant fails to
/// build.
///
/// ```compile_fail
/// use ipc_unixsocket::calls::{Buffers, NoError, Protocol};
///
/// struct Notes;
/// impl Protocol for Notes {
///     const NAME: &'static str = "notes";
///     const VERSION: u32 = 1;
///     type Request<'a> = &'a str; // no bound: MAX_REQUEST stays None
///     type Reply<'a> = ();
///     type Event<'a> = ();
///     type Error<'a> = NoError;
/// }
///
/// let out = [0u8; Buffers::<Notes>::CALLER_OUT];
/// ```
#[derive(Debug)]
pub struct Buffers<P>(PhantomData<fn() -> P>);

impl<P: Protocol> Buffers<P> {
    /// The caller's outgoing buffer: its hello and the largest request.
    ///
    /// # Example
    ///
    /// See [`Buffers`].
    pub const CALLER_OUT: usize = bounded(caller_out::<P>());
    /// The caller's incoming buffer: the peer's hello and the largest
    /// reply, handler error or event.
    ///
    /// # Example
    ///
    /// See [`Buffers`].
    pub const CALLER_INBOX: usize = bounded(caller_inbox::<P>());
    /// The responder's outgoing buffer: its hello and the largest reply,
    /// handler error or event (and a one-byte error reply).
    ///
    /// # Example
    ///
    /// See [`Buffers`].
    pub const RESPONDER_OUT: usize = bounded(caller_inbox::<P>());
    /// The responder's incoming buffer: the peer's hello and the largest
    /// request.
    ///
    /// # Example
    ///
    /// See [`Buffers`].
    pub const RESPONDER_INBOX: usize = bounded(caller_out::<P>());
}

/// The size of a bounded buffer; a compile-time error where it is used for
/// an unbounded one.
const fn bounded(size: Needed) -> usize {
    match size {
        Needed::Exactly(n) => n,
        Needed::AtLeast(_) => panic!(
            "a type of this protocol has no bound (its MAX_* constant is None): choose this buffer's size"
        ),
    }
}

/// What a buffer needs: an exact size when every type it carries is
/// bounded, else at least the room for the hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Needed {
    Exactly(usize),
    AtLeast(usize),
}

impl Needed {
    /// The least a buffer must hold.
    pub(super) const fn min(self) -> usize {
        match self {
            Self::Exactly(n) | Self::AtLeast(n) => n,
        }
    }
}

/// The room a hello of `P` takes: postcard `(name, version, hashes)`, the
/// version counted at its largest (a peer of another version still fits).
const fn hello<P: Protocol>() -> usize {
    let name = P::NAME.len();
    BODY + varint_len(name) + name + 5 + 4 * 8
}

/// Bytes of `n` as a postcard varint.
const fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// The room for the hello and records with bodies up to `bodies`.
const fn needed(hello: usize, bodies: &[Option<usize>]) -> Needed {
    let mut largest = hello;
    let mut bounded = true;
    let mut at = 0;
    while at < bodies.len() {
        match bodies[at] {
            Some(body) if BODY + body > largest => largest = BODY + body,
            Some(_) => {}
            None => bounded = false,
        }
        at += 1;
    }
    if bounded {
        Needed::Exactly(largest)
    } else {
        Needed::AtLeast(largest)
    }
}

/// The caller's outgoing buffer (and the responder's incoming one).
pub(super) const fn caller_out<P: Protocol>() -> Needed {
    needed(hello::<P>(), &[P::MAX_REQUEST])
}

/// The caller's incoming buffer (and the responder's outgoing one, which
/// also holds one-byte error replies: less than any hello).
pub(super) const fn caller_inbox<P: Protocol>() -> Needed {
    needed(hello::<P>(), &[P::MAX_REPLY, P::MAX_ERROR, P::MAX_EVENT])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths() {
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(127), 1);
        assert_eq!(varint_len(128), 2);
        assert_eq!(varint_len(16_383), 2);
        assert_eq!(varint_len(16_384), 3);
    }

    #[test]
    fn an_unbounded_type_leaves_only_the_hello_as_a_minimum() {
        assert_eq!(needed(20, &[Some(10), None]), Needed::AtLeast(26));
        assert_eq!(needed(20, &[Some(10), Some(1)]), Needed::Exactly(26));
        assert_eq!(needed(30, &[Some(10)]), Needed::Exactly(30));
    }
}
