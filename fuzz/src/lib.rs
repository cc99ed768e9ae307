//! Helpers shared by the fuzz targets: fd accounting, fd identity, a fixed
//! set of files to pass around, raw records that bypass the crate's sender,
//! and the `recv` target's oracle.
//!
//! The oracle is written from the wire-format rules and from what the sender
//! knows (the bytes it wrote and the number of fds it attached), not from the
//! crate's own validation code.

use std::mem::MaybeUninit;
use std::sync::OnceLock;

use ipc_unixsocket::{Error, HEADER_LEN, MAGIC, VERSION};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{Mode, OFlags, fstat};
use rustix::io::{FdFlags, IoSlice, fcntl_getfd};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};

/// Most fds the targets attach to one raw record.
pub const MAX_RAW_FDS: usize = 12;

/// Number of fds this process has open, read from `/proc/self/fd` (the
/// directory handle used for reading excluded).
#[must_use]
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
        - 1
}

/// `(st_dev, st_ino)`: two fds with the same identity name the same file.
#[must_use]
pub fn identity(fd: impl AsFd) -> (u64, u64) {
    let stat = fstat(fd).expect("fstat");
    (stat.st_dev, stat.st_ino)
}

/// Whether `fd` has `FD_CLOEXEC` set.
#[must_use]
pub fn is_cloexec(fd: impl AsFd) -> bool {
    fcntl_getfd(fd)
        .expect("fcntl(F_GETFD)")
        .contains(FdFlags::CLOEXEC)
}

/// Files created once per process and passed around by the targets:
/// `/dev/null` and [`MAX_RAW_FDS`] memfds, each a distinct inode, so that
/// the identity of a received fd tells which one (and in what position) was
/// sent.
#[derive(Debug)]
pub struct Fixtures {
    /// `/dev/null`, read-write.
    pub devnull: OwnedFd,
    /// Distinct memfds.
    pub memfds: Vec<OwnedFd>,
}

impl Fixtures {
    /// The process-wide fixtures, created on first use (before any fd
    /// baseline is taken, so they never count as a leak).
    pub fn get() -> &'static Self {
        static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
        FIXTURES.get_or_init(|| {
            let devnull =
                rustix::fs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
                    .expect("open /dev/null");
            let memfds = (0..MAX_RAW_FDS)
                .map(|_| {
                    rustix::fs::memfd_create("ipc-fuzz", rustix::fs::MemfdFlags::CLOEXEC)
                        .expect("memfd_create")
                })
                .collect();
            Self { devnull, memfds }
        })
    }

    /// Fd number `i` of a raw record: `memfds[i]` when `all_memfds`, else
    /// `/dev/null` at even positions and `memfds[i]` at odd ones.
    #[must_use]
    pub fn pick(&self, i: usize, all_memfds: bool) -> BorrowedFd<'_> {
        if all_memfds || i % 2 == 1 {
            self.memfds[i % self.memfds.len()].as_fd()
        } else {
            self.devnull.as_fd()
        }
    }
}

/// Sends `bytes` as one record with `fds` in one `SCM_RIGHTS` message,
/// bypassing the crate's sender.
///
/// # Panics
///
/// If `fds` holds more than [`MAX_RAW_FDS`], or `sendmsg` fails or sends a
/// partial record.
pub fn send_raw(socket: impl AsFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    assert!(fds.len() <= MAX_RAW_FDS);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_RAW_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    }
    let sent = sendmsg(
        socket,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
    )
    .expect("raw sendmsg");
    assert_eq!(sent, bytes.len(), "partial record");
}

/// How many fds the kernel installs at most for a receiver with capacity
/// `capacity`: its control buffer is `CMSG_SPACE(12) + CMSG_SPACE(capacity
/// * 4)` bytes (room for credentials, then for the fds, padded to the next
/// `cmsghdr` boundary). Once the receiver has `SO_PASSCRED` on
/// (`credentials`), every record's credentials take their room first;
/// until then the kernel may fill it with fds too.
#[must_use]
pub const fn fd_slots(capacity: usize, credentials: bool) -> usize {
    /// `CMSG_SPACE(len)`.
    const fn space(len: usize) -> usize {
        let align = align_of::<usize>();
        let header = (size_of::<usize>() + 2 * size_of::<i32>()).next_multiple_of(align);
        header + len.next_multiple_of(align)
    }
    let header = space(0);
    let credentials_room = space(3 * size_of::<i32>());
    let rights = space(capacity * size_of::<i32>());
    let room = if credentials {
        rights
    } else {
        credentials_room + rights
    };
    (room - header) / size_of::<i32>()
}

/// Whether a receiver turns `SO_PASSCRED` on for good when it receives
/// this record: a 0-byte record without fds reads like end-of-file, and
/// telling the two apart turns the option on.
#[must_use]
pub const fn turns_on_credentials(bytes: &[u8], fds_sent: usize) -> bool {
    bytes.is_empty() && fds_sent == 0
}

/// What a receiver with `fd_capacity` fds and a `data_capacity`-byte buffer
/// (with `SO_PASSCRED` on when `credentials`) must report for a record of
/// `bytes` sent with `fds_sent` fds: the message's data length and fd
/// count, or the rejection.
///
/// The rules, in order: shorter than the header; bad magic; other version;
/// `data_len` differs from the record's data; the header's `fd_count`
/// certainly differs from the fds sent; data larger than the buffer; more
/// fds than the capacity.
///
/// When the kernel drops fds for lack of control-buffer space
/// (`MSG_CTRUNC`), the receiver only knows that more than it got were sent,
/// so the mismatch is certain when the header declares no more than it got;
/// a header that declares more is reported as too many fds.
///
/// # Errors
///
/// The rejection the receiver must report.
pub fn expected_outcome(
    bytes: &[u8],
    fds_sent: usize,
    fd_capacity: usize,
    data_capacity: usize,
    credentials: bool,
) -> Result<(usize, usize), Error> {
    let Some(head) = bytes.first_chunk::<HEADER_LEN>() else {
        return Err(Error::ShortRecord { len: bytes.len() });
    };
    let [m0, m1, version, fd_count, l0, l1, l2, l3] = *head;
    if [m0, m1] != MAGIC {
        return Err(Error::BadMagic { found: [m0, m1] });
    }
    if version != VERSION {
        return Err(Error::UnsupportedVersion { version });
    }
    let declared_len = u32::from_le_bytes([l0, l1, l2, l3]);
    let actual = bytes.len() - HEADER_LEN;
    if u64::from(declared_len) != actual as u64 {
        return Err(Error::LengthMismatch {
            declared: declared_len,
            actual,
        });
    }
    let declared = usize::from(fd_count);
    let slots = fd_slots(fd_capacity, credentials);
    let installed = fds_sent.min(slots);
    let dropped = fds_sent > slots;
    let certain_mismatch = if dropped {
        declared <= installed
    } else {
        declared != fds_sent
    };
    if certain_mismatch {
        return Err(Error::FdCountMismatch {
            declared: fd_count,
            received: installed,
            truncated: dropped,
        });
    }
    if actual > data_capacity {
        return Err(Error::Truncated {
            len: actual,
            capacity: data_capacity,
        });
    }
    if fds_sent > fd_capacity {
        return Err(Error::TooManyFds {
            count: declared,
            capacity: fd_capacity,
        });
    }
    Ok((actual, fds_sent))
}
