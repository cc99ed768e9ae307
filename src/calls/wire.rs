//! Wire format "calls v2": the 8-byte call header that opens the data of
//! every record a [`Caller`](super::Caller) or [`Responder`](super::Responder)
//! sends, and the one-byte bodies of error replies. (v2: the hello carries
//! the schema hashes of the protocol's four types after its name and
//! version, and kind 6 carries a handler's own error; a v1 hello does not
//! decode as a v2 one, so the two versions refuse each other.)
//!
//! This module is pure: bytes in, typed result out.
//!
//! | bytes | field    | value                                             |
//! |-------|----------|---------------------------------------------------|
//! | 0     | kind     | 1 hello, 2 request, 3 reply, 4 error reply, 5 event, 6 handler error |
//! | 1..4  | reserved | zero                                              |
//! | 4..8  | cookie   | `u32`, little-endian                              |

use serde::{Deserialize, Serialize};

use super::Protocol;
use crate::Error;

/// Size of the call header in bytes.
pub const CALL_HEADER_LEN: usize = 8;

/// What a record of the call layer carries. Kinds may be added
/// (`#[non_exhaustive]`).
///
/// # Example
///
/// ```
/// use ipc_unixsocket::calls::Kind;
///
/// assert_eq!(Kind::from_byte(2), Some(Kind::Request));
/// assert_eq!(Kind::from_byte(9), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Kind {
    /// The protocol's name, version and schema hashes ([`Hello`]), sent
    /// once by each end, first.
    Hello = 1,
    /// A request; cookie 0 asks for no reply (a one-way message).
    Request = 2,
    /// The reply to the request with the same cookie.
    Reply = 3,
    /// The request with the same cookie was refused; the body is one
    /// [`Rejection`] byte.
    ErrorReply = 4,
    /// A message from the responder that answers no request.
    Event = 5,
    /// The handler of the request with the same cookie failed with the
    /// protocol's own error type ([`Protocol::Error`](super::Protocol::Error)),
    /// which is the body.
    HandlerError = 6,
}

impl Kind {
    /// The kind a byte names, if any.
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::calls::Kind;
    ///
    /// assert_eq!(Kind::from_byte(Kind::Event as u8), Some(Kind::Event));
    /// ```
    #[must_use]
    pub const fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Hello),
            2 => Some(Self::Request),
            3 => Some(Self::Reply),
            4 => Some(Self::ErrorReply),
            5 => Some(Self::Event),
            6 => Some(Self::HandlerError),
            _ => None,
        }
    }
}

/// Which of a protocol's types differ between two ends whose hellos name
/// the same protocol and version: the schema hash of each type is compared
/// (field and variant names and types count, type names do not). All
/// `false` when the name or the version differ (the types are then not
/// compared).
///
/// # Example
///
/// ```
/// use ipc_unixsocket::calls::Differs;
///
/// let reply = Differs { reply: true, ..Differs::NONE };
/// assert_eq!(reply.to_string(), "reply");
/// assert_eq!(Differs { request: true, ..reply }.to_string(), "request, reply");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Differs {
    /// The request types differ.
    pub request: bool,
    /// The reply types differ.
    pub reply: bool,
    /// The event types differ.
    pub event: bool,
    /// The handler error types differ.
    pub error: bool,
}

impl Differs {
    /// No type differs.
    ///
    /// # Example
    ///
    /// See [`Differs`].
    pub const NONE: Self = Self {
        request: false,
        reply: false,
        event: false,
        error: false,
    };

    /// Compares two sets of schema hashes: request, reply, event, error.
    pub(super) fn between(ours: &[[u8; 8]; 4], theirs: &[[u8; 8]; 4]) -> Self {
        Self {
            request: ours[0] != theirs[0],
            reply: ours[1] != theirs[1],
            event: ours[2] != theirs[2],
            error: ours[3] != theirs[3],
        }
    }
}

impl core::fmt::Display for Differs {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let parts = [
            (self.request, "request"),
            (self.reply, "reply"),
            (self.event, "event"),
            (self.error, "error"),
        ];
        let mut first = true;
        for (_, name) in parts.iter().filter(|(differs, _)| *differs) {
            if !first {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
            first = false;
        }
        Ok(())
    }
}

/// The body of a hello record: the protocol's name, its version, and the
/// schema hashes of its request, reply, event and error types, in that
/// order (postcard-schema's 8-byte FNV-1a key of each type's schema, with
/// the name as the path). In postcard: the name (a varint length, then
/// UTF-8), the version (a varint), then 32 bytes.
///
/// # Example
///
/// ```
/// use ipc_unixsocket::calls::{Hello, NoError, Protocol};
///
/// struct Ping;
/// impl Protocol for Ping {
///     const NAME: &'static str = "ping";
///     const VERSION: u32 = 1;
///     type Request<'a> = ();
///     type Reply<'a> = ();
///     type Event<'a> = ();
///     type Error<'a> = NoError;
/// }
///
/// let hello = Hello::of::<Ping>();
/// let mut body = [0u8; 64];
/// let body = postcard::to_slice(&hello, &mut body).unwrap();
/// assert_eq!(&body[..6], [4, b'p', b'i', b'n', b'g', 1]);
/// assert_eq!(body.len(), 6 + 32);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Hello<'a> {
    /// The protocol's name.
    pub name: &'a str,
    /// The protocol's version.
    pub version: u32,
    /// The schema hashes of the request, reply, event and error types.
    pub schemas: [[u8; 8]; 4],
}

impl Hello<'static> {
    /// The hello an end of protocol `P` sends, computed at compile time.
    ///
    /// # Example
    ///
    /// See [`Hello`].
    #[must_use]
    pub const fn of<P: Protocol>() -> Self {
        use postcard_schema::key::Key;
        Self {
            name: P::NAME,
            version: P::VERSION,
            schemas: [
                Key::for_path::<P::Request<'static>>(P::NAME).to_bytes(),
                Key::for_path::<P::Reply<'static>>(P::NAME).to_bytes(),
                Key::for_path::<P::Event<'static>>(P::NAME).to_bytes(),
                Key::for_path::<P::Error<'static>>(P::NAME).to_bytes(),
            ],
        }
    }
}

/// A decoded call header.
///
/// # Example
///
/// ```
/// use ipc_unixsocket::calls::{CallHeader, Kind};
///
/// let header = CallHeader { kind: Kind::Reply, cookie: 7 };
/// let bytes = header.encode();
/// assert_eq!(bytes, [3, 0, 0, 0, 7, 0, 0, 0]);
/// assert_eq!(CallHeader::decode(&bytes), Ok(header));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CallHeader {
    /// What the record carries.
    pub kind: Kind,
    /// Matches a reply to its request; 0 where there is nothing to match.
    pub cookie: u32,
}

impl CallHeader {
    /// Encodes the header into its 8 wire bytes.
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::calls::{CallHeader, Kind};
    ///
    /// assert_eq!(CallHeader { kind: Kind::Hello, cookie: 0 }.encode(), [1, 0, 0, 0, 0, 0, 0, 0]);
    /// ```
    #[must_use]
    pub const fn encode(&self) -> [u8; CALL_HEADER_LEN] {
        let c = self.cookie.to_le_bytes();
        [self.kind as u8, 0, 0, 0, c[0], c[1], c[2], c[3]]
    }

    /// Decodes a header from the first 8 bytes of `bytes`.
    ///
    /// # Errors
    ///
    /// [`Error::BadCallHeader`] if `bytes` is shorter than 8 bytes, the
    /// kind is unknown, or a reserved byte is not zero.
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{calls::CallHeader, Error};
    ///
    /// assert_eq!(CallHeader::decode(&[2, 0, 0]), Err(Error::BadCallHeader));
    /// assert_eq!(CallHeader::decode(&[2, 1, 0, 0, 0, 0, 0, 0]), Err(Error::BadCallHeader));
    /// ```
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let Some([kind, 0, 0, 0, c0, c1, c2, c3]) = bytes.first_chunk::<CALL_HEADER_LEN>() else {
            return Err(Error::BadCallHeader);
        };
        let kind = Kind::from_byte(*kind).ok_or(Error::BadCallHeader)?;
        Ok(Self {
            kind,
            cookie: u32::from_le_bytes([*c0, *c1, *c2, *c3]),
        })
    }
}

/// Why a responder refused a request: the one-byte body of an error reply,
/// reported to the caller as [`Error::Rejected`].
///
/// # Example
///
/// ```
/// use ipc_unixsocket::calls::Rejection;
///
/// assert_eq!(Rejection::from_byte(Rejection::BadFdSlot as u8), Rejection::BadFdSlot);
/// assert_eq!(Rejection::from_byte(200), Rejection::Other);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Rejection {
    /// The request's body did not decode as the protocol's request type.
    BadBody = 1,
    /// The body names a variant the responder does not know.
    UnknownVariant = 2,
    /// The request named an fd slot that is out of range or was claimed
    /// twice.
    BadFdSlot = 3,
    /// The two ends speak different protocols (name, version or types).
    ProtocolMismatch = 4,
    /// A record the responder does not take (not a request, or a request
    /// before the caller's hello).
    Unexpected = 5,
    /// The handler failed with one of the crate's errors (a handler's own
    /// error type travels as [`Kind::HandlerError`] instead), or its reply
    /// or error did not fit the responder's outgoing buffer.
    HandlerFailed = 6,
    /// The request did not fit the responder's inbox (only its first bytes
    /// arrived; its fds were closed).
    TooLarge = 7,
    /// A code this version of the crate does not know.
    Other = 255,
}

impl Rejection {
    /// The rejection a byte names; unknown codes are [`Rejection::Other`].
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::calls::Rejection;
    ///
    /// assert_eq!(Rejection::from_byte(1), Rejection::BadBody);
    /// ```
    #[must_use]
    pub const fn from_byte(byte: u8) -> Self {
        match byte {
            1 => Self::BadBody,
            2 => Self::UnknownVariant,
            3 => Self::BadFdSlot,
            4 => Self::ProtocolMismatch,
            5 => Self::Unexpected,
            6 => Self::HandlerFailed,
            7 => Self::TooLarge,
            _ => Self::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_nothing_else_decodes() {
        for byte in 0..=u8::MAX {
            let bytes = [byte, 0, 0, 0, 1, 2, 3, 4];
            match Kind::from_byte(byte) {
                Some(kind) => {
                    let header = CallHeader::decode(&bytes).unwrap();
                    assert_eq!(header.kind, kind);
                    assert_eq!(header.cookie, 0x0403_0201);
                    assert_eq!(header.encode(), bytes);
                }
                None => assert_eq!(CallHeader::decode(&bytes), Err(Error::BadCallHeader)),
            }
        }
    }

    #[test]
    fn reserved_bytes_must_be_zero() {
        for at in 1..4 {
            let mut bytes = [2, 0, 0, 0, 1, 0, 0, 0];
            bytes[at] = 1;
            assert_eq!(CallHeader::decode(&bytes), Err(Error::BadCallHeader));
        }
    }

    #[test]
    fn rejection_codes_round_trip() {
        for byte in 0..=u8::MAX {
            let rejection = Rejection::from_byte(byte);
            if rejection != Rejection::Other {
                assert_eq!(rejection as u8, byte);
            }
        }
    }
}
