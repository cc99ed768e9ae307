//! Wire format v1: the 8-byte record header and the rules a received record
//! must satisfy.
//!
//! This module is pure: bytes in, typed result out. It makes no system call,
//! holds no file descriptor and contains no `unsafe`, so it can be fuzzed and
//! property-tested on its own.
//!
//! | bytes | field      | value                                  |
//! |-------|------------|----------------------------------------|
//! | 0..2  | magic      | `b"IP"` (`0x49 0x50`)                  |
//! | 2     | version    | `1`                                    |
//! | 3     | `fd_count` | number of fds in the `SCM_RIGHTS` message |
//! | 4..8  | `data_len` | `u32`, little-endian                   |

use crate::Error;

/// The two magic bytes that open every record: `b"IP"`.
pub const MAGIC: [u8; 2] = *b"IP";

/// The wire-format version this crate speaks.
pub const VERSION: u8 = 1;

/// Size of the header in bytes.
pub const HEADER_LEN: usize = 8;

/// The most file descriptors Linux passes in one message (`SCM_MAX_FD`).
pub const MAX_FDS_PER_MESSAGE: usize = 253;

/// A decoded record header.
///
/// # Example
///
/// ```
/// use ipc_unixsocket::Header;
///
/// let header = Header { fd_count: 2, data_len: 300 };
/// let bytes = header.encode();
/// assert_eq!(bytes, [b'I', b'P', 1, 2, 0x2c, 0x01, 0, 0]);
/// assert_eq!(Header::decode(&bytes), Ok(header));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Header {
    /// Number of file descriptors that travel with the record.
    pub fd_count: u8,
    /// Number of data bytes that follow the header.
    pub data_len: u32,
}

impl Header {
    /// Encodes the header into its 8 wire bytes.
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::Header;
    ///
    /// let bytes = Header { fd_count: 0, data_len: 0 }.encode();
    /// assert_eq!(bytes, *b"IP\x01\x00\x00\x00\x00\x00");
    /// ```
    #[must_use]
    pub const fn encode(&self) -> [u8; HEADER_LEN] {
        let len = self.data_len.to_le_bytes();
        [
            MAGIC[0],
            MAGIC[1],
            VERSION,
            self.fd_count,
            len[0],
            len[1],
            len[2],
            len[3],
        ]
    }

    /// Decodes a header from the first 8 bytes of `bytes`.
    ///
    /// Bytes after the eighth are ignored: whether the rest of the record
    /// matches `data_len` is checked by the receiver.
    ///
    /// # Errors
    ///
    /// In this order: [`Error::ShortRecord`] if `bytes` holds fewer than 8
    /// bytes, [`Error::BadMagic`], [`Error::UnsupportedVersion`].
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Error, Header};
    ///
    /// assert_eq!(Header::decode(b"IP\x01"), Err(Error::ShortRecord { len: 3 }));
    /// assert_eq!(
    ///     Header::decode(b"XX\x01\x00\x00\x00\x00\x00"),
    ///     Err(Error::BadMagic { found: *b"XX" })
    /// );
    /// ```
    #[inline]
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let Some(bytes) = bytes.first_chunk::<HEADER_LEN>() else {
            return Err(Error::ShortRecord { len: bytes.len() });
        };
        let [m0, m1, version, fd_count, l0, l1, l2, l3] = *bytes;
        if [m0, m1] != MAGIC {
            return Err(Error::BadMagic { found: [m0, m1] });
        }
        if version != VERSION {
            return Err(Error::UnsupportedVersion { version });
        }
        Ok(Self {
            fd_count,
            data_len: u32::from_le_bytes([l0, l1, l2, l3]),
        })
    }
}

/// What the kernel reported about one received record, before validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    /// The first bytes of the record (at most [`HEADER_LEN`]).
    pub head: &'a [u8],
    /// The real length of the record, header included (`MSG_TRUNC` semantics).
    pub len: usize,
    /// Data bytes the caller's buffer can hold.
    pub data_capacity: usize,
    /// File descriptors the kernel installed for this record.
    pub fds_received: usize,
    /// The receiver's fd capacity.
    pub fd_capacity: usize,
    /// The kernel dropped fds for lack of control-buffer space (`MSG_CTRUNC`).
    pub fds_truncated: bool,
}

/// Applies the wire-format rules to a received record, in the documented
/// order, and returns the header of a valid record.
#[inline]
pub(crate) fn validate(record: &Record<'_>) -> Result<Header, Error> {
    if record.len < HEADER_LEN {
        return Err(Error::ShortRecord { len: record.len });
    }
    let header = Header::decode(record.head)?;
    let data_len = record.len - HEADER_LEN;
    if usize::try_from(header.data_len) != Ok(data_len) {
        return Err(Error::LengthMismatch {
            declared: header.data_len,
            actual: data_len,
        });
    }
    let declared = usize::from(header.fd_count);
    // Without MSG_CTRUNC the kernel delivered every fd (some may sit in the
    // control buffer's alignment slack, past the capacity), so the count is
    // exact. With it, more were sent than received: a mismatch is certain
    // when the header declares no more than were received.
    let mismatch = if record.fds_truncated {
        declared <= record.fds_received
    } else {
        declared != record.fds_received
    };
    if mismatch {
        return Err(Error::FdCountMismatch {
            declared: header.fd_count,
            received: record.fds_received,
            truncated: record.fds_truncated,
        });
    }
    if data_len > record.data_capacity {
        return Err(Error::Truncated {
            len: data_len,
            capacity: record.data_capacity,
        });
    }
    if declared > record.fd_capacity {
        // Past the mismatch check, the header is consistent with the fds
        // that arrived, so it is the honest count, and it is too many.
        return Err(Error::TooManyFds {
            count: declared,
            capacity: record.fd_capacity,
        });
    }
    if record.fds_truncated {
        return Err(Error::FdsTruncated {
            declared: header.fd_count,
            received: record.fds_received,
        });
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn head(fd_count: u8, data_len: u32) -> [u8; HEADER_LEN] {
        Header { fd_count, data_len }.encode()
    }

    fn record(head: &[u8], len: usize) -> Record<'_> {
        Record {
            head,
            len,
            data_capacity: 16,
            fds_received: 0,
            fd_capacity: 2,
            fds_truncated: false,
        }
    }

    const EMPTY: [u8; 8] = head(0, 0);

    #[test]
    fn encodes_magic_version_and_little_endian_length() {
        let bytes = head(7, 0x0102_0304);
        assert_eq!(bytes, [0x49, 0x50, 1, 7, 4, 3, 2, 1]);
    }

    #[test]
    fn decode_inverts_encode_at_the_extremes() {
        for fd_count in [0, 1, 253, 255] {
            for data_len in [0, 1, 4096, u32::MAX] {
                let header = Header { fd_count, data_len };
                assert_eq!(Header::decode(&header.encode()), Ok(header));
            }
        }
    }

    #[test]
    fn rejects_short_header() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Header::decode(&EMPTY[..len]),
                Err(Error::ShortRecord { len })
            );
        }
    }

    #[test]
    fn rejects_bad_magic() {
        let mut bytes = EMPTY;
        bytes[1] = b'Q';
        assert_eq!(
            Header::decode(&bytes),
            Err(Error::BadMagic { found: *b"IQ" })
        );
    }

    #[test]
    fn rejects_other_versions() {
        let mut bytes = EMPTY;
        for version in [0, 2, 255] {
            bytes[2] = version;
            assert_eq!(
                Header::decode(&bytes),
                Err(Error::UnsupportedVersion { version })
            );
        }
    }

    #[test]
    fn checks_magic_before_version() {
        assert_eq!(
            Header::decode(b"ab\x09\x00\x00\x00\x00\x00"),
            Err(Error::BadMagic { found: *b"ab" })
        );
    }

    #[test]
    fn accepts_empty_message() {
        assert_eq!(
            validate(&record(&EMPTY, 8)),
            Ok(Header {
                fd_count: 0,
                data_len: 0
            })
        );
    }

    #[test]
    fn rejects_length_mismatch() {
        let head = head(0, 5);
        assert_eq!(
            validate(&record(&head, 12)),
            Err(Error::LengthMismatch {
                declared: 5,
                actual: 4
            })
        );
    }

    #[test]
    fn rejects_fd_count_mismatch() {
        let head = head(2, 0);
        let mut r = record(&head, 8);
        r.fds_received = 1;
        assert_eq!(
            validate(&r),
            Err(Error::FdCountMismatch {
                declared: 2,
                received: 1,
                truncated: false
            })
        );
    }

    #[test]
    fn rejects_truncated_data_with_real_length() {
        let head = head(0, 17);
        assert_eq!(
            validate(&record(&head, 25)),
            Err(Error::Truncated {
                len: 17,
                capacity: 16
            })
        );
    }

    /// Validates a record of `head` and `len` bytes that brought
    /// `received` fds to a receiver with capacity 2.
    fn with_fds(
        head: &[u8],
        len: usize,
        received: usize,
        truncated: bool,
    ) -> Result<Header, Error> {
        validate(&Record {
            fds_received: received,
            fds_truncated: truncated,
            ..record(head, len)
        })
    }

    #[test]
    fn rejects_fds_over_capacity() {
        let too_many = Err(Error::TooManyFds {
            count: 3,
            capacity: 2,
        });
        // MSG_CTRUNC after the two that fit.
        assert_eq!(with_fds(&head(3, 0), 8, 2, true), too_many);
        // Alignment slack: the kernel delivered all three without MSG_CTRUNC.
        assert_eq!(with_fds(&head(3, 0), 8, 3, false), too_many);
    }

    #[test]
    fn fd_mismatch_is_certain_when_header_understates_a_truncated_set() {
        // MSG_CTRUNC after 2 fds: more than 2 were sent, the header says 1.
        let mismatch = |declared| {
            Err(Error::FdCountMismatch {
                declared,
                received: 2,
                truncated: true,
            })
        };
        assert_eq!(with_fds(&head(1, 0), 8, 2, true), mismatch(1));
        // ... or says exactly 2.
        assert_eq!(with_fds(&head(2, 0), 8, 2, true), mismatch(2));
    }

    #[test]
    fn slack_fds_are_an_exact_count_checked_before_truncation() {
        // No MSG_CTRUNC: all 3 fds arrived (one in the slack), so a header
        // declaring 4 is certainly wrong, and that is reported before the
        // oversized data.
        assert_eq!(
            with_fds(&head(4, 100), 108, 3, false),
            Err(Error::FdCountMismatch {
                declared: 4,
                received: 3,
                truncated: false
            })
        );
    }

    #[test]
    fn fds_dropped_within_capacity_are_fds_truncated() {
        // RLIMIT_NOFILE reached: 1 of the 2 declared fds was installed.
        assert_eq!(
            with_fds(&head(2, 0), 8, 1, true),
            Err(Error::FdsTruncated {
                declared: 2,
                received: 1
            })
        );
    }

    #[test]
    fn header_rules_come_before_truncation() {
        let mut r = record(b"XX\x01\x00\xff\x00\x00\x00", 300);
        r.fds_truncated = true;
        assert_eq!(validate(&r), Err(Error::BadMagic { found: *b"XX" }));
    }
}
