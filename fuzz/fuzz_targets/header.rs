//! The header codec, `Header::decode` and `Header::encode`.
//!
//! Raw: the input bytes go to `decode` as they are. It must not panic, must
//! give exactly the result the wire-format rules give, and a decoded header
//! must encode back to the first 8 input bytes.
//!
//! Structured: the same input, read through `arbitrary`, builds a header and a
//! change to its encoding. Encoding then decoding gives back the header, with
//! or without trailing bytes; changing one byte of the encoding gives the
//! error (or the changed field) that the byte's position calls for.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use ipc_unixsocket::{Error, HEADER_LEN, Header, MAGIC, VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    raw(input);
    let _ = structured(&mut Unstructured::new(input));
});

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

fn raw(bytes: &[u8]) {
    let decoded = Header::decode(bytes);
    assert_eq!(decoded, rules(bytes), "input {bytes:02x?}");
    match decoded {
        Ok(header) => assert_eq!(header.encode()[..], bytes[..HEADER_LEN]),
        Err(error) => assert!(!error.to_string().is_empty()),
    }
}

#[derive(Arbitrary, Debug)]
struct Edit {
    /// Byte of the encoding to replace (modulo 8).
    position: u8,
    value: u8,
}

fn structured(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let header = Header {
        fd_count: u.arbitrary()?,
        data_len: u.arbitrary()?,
    };
    let bytes = header.encode();
    assert_eq!(Header::decode(&bytes), Ok(header));

    let edit = Edit::arbitrary(u)?;
    let position = usize::from(edit.position) % HEADER_LEN;
    let mut edited = bytes;
    edited[position] = edit.value;
    let want = if edit.value == bytes[position] {
        Ok(header)
    } else {
        match position {
            0 | 1 => Err(Error::BadMagic {
                found: [edited[0], edited[1]],
            }),
            2 => Err(Error::UnsupportedVersion {
                version: edit.value,
            }),
            3 => Ok(Header {
                fd_count: edit.value,
                ..header
            }),
            _ => {
                let mut len = header.data_len.to_le_bytes();
                len[position - 4] = edit.value;
                Ok(Header {
                    data_len: u32::from_le_bytes(len),
                    ..header
                })
            }
        }
    };
    assert_eq!(Header::decode(&edited), want, "{header:?} {edit:?}");

    // Bytes after the header are ignored; any prefix shorter than it is short.
    let tail: &[u8] = u.arbitrary()?;
    let mut record = bytes.to_vec();
    record.extend_from_slice(tail);
    assert_eq!(Header::decode(&record), Ok(header));
    let cut = usize::from(u.arbitrary::<u8>()?) % HEADER_LEN;
    assert_eq!(
        Header::decode(&bytes[..cut]),
        Err(Error::ShortRecord { len: cut })
    );
    Ok(())
}
