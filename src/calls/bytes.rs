//! A borrowed byte string for protocol types, on postcard's fast path.

use core::fmt;
use core::ops::Deref;

use postcard_schema::Schema;
use postcard_schema::schema::NamedType;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes in a request, reply, event or error, borrowed from the buffer
/// they arrive in: use it where a field would be a `&[u8]`.
///
/// On the wire it is exactly a `&[u8]` (postcard: a varint length, then
/// the bytes), and its schema is the same, so a field can change from one
/// to the other without a version bump. What differs is the encoder's
/// work: serde writes a `&[u8]` as a sequence, one serializer call per
/// byte, and `Bytes` as one byte string (`serialize_bytes`, a single
/// copy), so the cost of a `&[u8]` grows with its length. No heap either
/// way.
///
/// # Example
///
/// ```
/// use ipc_unixsocket::calls::Bytes;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// struct Metadata<'a> {
///     frame: u32,
///     #[serde(borrow)]
///     exif: Bytes<'a>,
/// }
///
/// let sent = Metadata { frame: 7, exif: Bytes(b"Exif\0\0") };
/// let mut buffer = [0u8; 16];
/// let body = postcard::to_slice(&sent, &mut buffer).unwrap();
/// assert_eq!(body, [7, 6, b'E', b'x', b'i', b'f', 0, 0]); // as a &[u8]
/// let received: Metadata<'_> = postcard::from_bytes(body).unwrap();
/// assert_eq!(&*received.exif, b"Exif\0\0"); // borrowed from `buffer`
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes<'a>(pub &'a [u8]);

impl Deref for Bytes<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.0
    }
}

impl<'a> From<&'a [u8]> for Bytes<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Bytes<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <&'de [u8]>::deserialize(deserializer).map(Bytes)
    }
}

impl Schema for Bytes<'_> {
    const SCHEMA: &'static NamedType = <[u8] as Schema>::SCHEMA;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_hashes_as_a_byte_slice() {
        let data: &[u8] = &[1, 2, 3, 200];
        let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
        let plain = postcard::to_slice(&data, &mut a).unwrap();
        let wrapped = postcard::to_slice(&Bytes(data), &mut b).unwrap();
        assert_eq!(plain, wrapped);
        let key = postcard_schema::key::Key::for_path::<&[u8]>("p");
        assert_eq!(key, postcard_schema::key::Key::for_path::<Bytes<'_>>("p"));
        assert_eq!(
            postcard::from_bytes::<Bytes<'_>>(wrapped).unwrap(),
            Bytes(data)
        );
    }
}
