//! Property tests of the header codec, mirroring the `header` fuzz target so
//! that a plain `cargo test` on stable exercises the same properties.

use ipc_unixsocket::{Error, HEADER_LEN, Header, MAGIC, VERSION};
use proptest::prelude::*;

/// What `decode` must return for `bytes`, from the wire-format table.
fn rules(bytes: &[u8]) -> Result<Header, Error> {
    if bytes.len() < HEADER_LEN {
        return Err(Error::ShortRecord { len: bytes.len() });
    }
    if bytes[..2] != MAGIC {
        return Err(Error::BadMagic {
            found: [bytes[0], bytes[1]],
        });
    }
    if bytes[2] != VERSION {
        return Err(Error::UnsupportedVersion { version: bytes[2] });
    }
    Ok(Header {
        fd_count: bytes[3],
        data_len: u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
    })
}

fn any_header() -> impl Strategy<Value = Header> {
    (any::<u8>(), any::<u32>()).prop_map(|(fd_count, data_len)| Header { fd_count, data_len })
}

/// Arbitrary bytes, biased towards a valid magic and version so that every
/// rule is reached often.
fn header_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(any::<u8>(), 0..24),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(mut bytes, magic, version)| {
            if magic {
                for (b, m) in bytes.iter_mut().zip(MAGIC) {
                    *b = m;
                }
            }
            if version && bytes.len() > 2 {
                bytes[2] = VERSION;
            }
            bytes
        })
}

proptest! {
    #[test]
    fn decode_follows_the_rules_and_encodes_back(bytes in header_like_bytes()) {
        let decoded = Header::decode(&bytes);
        prop_assert_eq!(decoded, rules(&bytes));
        match decoded {
            Ok(header) => prop_assert_eq!(&header.encode()[..], &bytes[..HEADER_LEN]),
            Err(error) => prop_assert!(!error.to_string().is_empty()),
        }
    }

    #[test]
    fn decode_inverts_encode(header in any_header(), tail in prop::collection::vec(any::<u8>(), 0..16)) {
        let bytes = header.encode();
        prop_assert_eq!(Header::decode(&bytes), Ok(header));
        let mut record = bytes.to_vec();
        record.extend_from_slice(&tail);
        prop_assert_eq!(Header::decode(&record), Ok(header));
    }

    #[test]
    fn every_prefix_of_a_header_is_short(header in any_header(), cut in 0..HEADER_LEN) {
        prop_assert_eq!(
            Header::decode(&header.encode()[..cut]),
            Err(Error::ShortRecord { len: cut })
        );
    }

    #[test]
    fn changing_one_byte_is_caught_by_its_field(
        header in any_header(),
        position in 0..HEADER_LEN,
        value in any::<u8>(),
    ) {
        let bytes = header.encode();
        prop_assume!(bytes[position] != value);
        let mut edited = bytes;
        edited[position] = value;
        let want = match position {
            0 | 1 => Err(Error::BadMagic { found: [edited[0], edited[1]] }),
            2 => Err(Error::UnsupportedVersion { version: value }),
            3 => Ok(Header { fd_count: value, ..header }),
            _ => {
                let mut len = header.data_len.to_le_bytes();
                len[position - 4] = value;
                Ok(Header { data_len: u32::from_le_bytes(len), ..header })
            }
        };
        prop_assert_eq!(Header::decode(&edited), want);
    }
}
