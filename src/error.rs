//! The crate's one error type.

use core::fmt;

use rustix::io::Errno;

/// Everything that can go wrong on a [`Channel`](crate::Channel).
///
/// Errors that describe a rejected record ([`is_rejected_record`]) leave the
/// channel usable: the record has been consumed, every fd that came with it
/// has been closed, and the next call reads the next record.
///
/// [`is_rejected_record`]: Error::is_rejected_record
///
/// # Example
///
/// ```
/// use ipc_unixsocket::{Channel, Error};
///
/// let (a, _b) = Channel::<4>::pair()?;
/// let mut data = [0u8; 16];
/// let mut fds = heapless::Vec::<rustix::fd::OwnedFd, 4>::new();
/// match a.try_recv(&mut data, &mut fds) {
///     Err(Error::WouldBlock) => {} // nothing queued yet
///     other => panic!("unexpected {other:?}"),
/// }
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// A non-blocking call found no record to read, or no room to send.
    WouldBlock,
    /// A deadline passed: `recv_timeout` saw no record before it, a
    /// `connect_timeout` found the listener's backlog still full, or a
    /// typed call got no reply in time.
    TimedOut,
    /// The peer closed its end: `recv` returns this once every queued record
    /// has been read; `send` returns it on `EPIPE`, `ECONNRESET` or
    /// `ECONNREFUSED`.
    Disconnected,
    /// `send` was given more fds than the channel's `MAX_FDS`.
    SendTooManyFds {
        /// Number of fds given.
        count: usize,
        /// The channel's `MAX_FDS`.
        max: usize,
    },
    /// `send` was given more data than one record can carry: more than the
    /// header's `u32` length field, or more than the kernel accepts for one
    /// record (`EMSGSIZE`); or a [`Payload`](crate::Payload) was asked to
    /// hold more data than its record has room for.
    SendTooLarge {
        /// Number of data bytes given.
        len: usize,
    },
    /// The record is shorter than the 8-byte header (including a 0-byte
    /// record from a peer that is still connected).
    ShortRecord {
        /// Length of the record in bytes.
        len: usize,
    },
    /// The record does not start with the magic `b"IP"`.
    BadMagic {
        /// The two bytes found instead.
        found: [u8; 2],
    },
    /// The header's version is not 1.
    UnsupportedVersion {
        /// The version found.
        version: u8,
    },
    /// The header's `data_len` differs from the record's length minus 8.
    LengthMismatch {
        /// `data_len` from the header.
        declared: u32,
        /// Data bytes the record really carried.
        actual: usize,
    },
    /// The header's `fd_count` differs from the number of fds received.
    FdCountMismatch {
        /// `fd_count` from the header.
        declared: u8,
        /// Fds the kernel installed.
        received: usize,
        /// The kernel dropped further fds for lack of control-buffer space
        /// (`MSG_CTRUNC`): the record carried more than `received`.
        truncated: bool,
    },
    /// The record's data did not fit the caller's buffer (`MSG_TRUNC`).
    Truncated {
        /// The record's real data length.
        len: usize,
        /// The caller's buffer length.
        capacity: usize,
    },
    /// The record carried more fds than the receive capacity (`MSG_CTRUNC`,
    /// or extras that fit in the control buffer's alignment slack).
    TooManyFds {
        /// `fd_count` from the header.
        count: usize,
        /// The receive call's fd capacity (that of its fd vector).
        capacity: usize,
    },
    /// The kernel installed fewer fds than the header declares, although
    /// they are within the receive capacity (`MSG_CTRUNC`): the process hit
    /// its `RLIMIT_NOFILE`, or another control message (enabled with
    /// `SO_PASSCRED`, say) took the control buffer's space.
    FdsTruncated {
        /// `fd_count` from the header.
        declared: u8,
        /// Fds the kernel installed (and the crate closed).
        received: usize,
    },
    /// [`Channel::adopt`](crate::Channel::adopt) was given an fd that is not an
    /// `AF_UNIX` `SOCK_SEQPACKET` socket.
    NotSeqpacketSocket,
    /// A frame passed to a `*_frame` call is shorter than the header it
    /// must have room for ([`HEADER_LEN`](crate::HEADER_LEN) bytes).
    /// Refused before any system call: nothing was sent or consumed.
    NoHeaderRoom {
        /// Length of the frame given.
        len: usize,
    },
    /// [`Listener::bind`](crate::Listener::bind) or
    /// [`Listener::bind_abstract`](crate::Listener::bind_abstract): a live
    /// listener already has the name (a connection probe was accepted, or
    /// queued, or met a listening socket of another type); or the socket
    /// file was replaced while the listener was being set up.
    AddressInUse,
    /// [`Listener::bind`](crate::Listener::bind): something that is not a
    /// socket (a regular file, a directory, a symbolic link, ...) is at the
    /// path. It is left untouched.
    NotASocket,
    /// The socket path or abstract name does not fit in a `sockaddr_un`
    /// (108 bytes for a path, 107 for an abstract name).
    NameTooLong,
    /// Any other error from the operating system.
    Os(#[cfg_attr(feature = "defmt", defmt(Debug2Format))] Errno),
    /// Typed calls: a record without a valid call header (shorter than 8
    /// bytes, an unknown kind, or a reserved byte that is not zero). The
    /// record is consumed and its fds closed.
    #[cfg(feature = "calls")]
    BadCallHeader,
    /// Typed calls: the peer's hello named another protocol, another
    /// version of it, or the same name and version with types whose
    /// schemas differ (a build whose version was not bumped). Every call
    /// fails with this, on both sides.
    #[cfg(feature = "calls")]
    ProtocolMismatch {
        /// Whether the protocol names matched.
        same_name: bool,
        /// The version the peer speaks (0 if its hello did not decode).
        peer_version: u32,
        /// With the same name and version: which types differ.
        differs: crate::calls::Differs,
    },
    /// Typed calls: a body did not decode as the protocol's type (or had
    /// bytes left over).
    #[cfg(feature = "calls")]
    BadBody,
    /// Typed calls: a body names an enum variant the protocol's type does
    /// not have.
    #[cfg(feature = "calls")]
    UnknownVariant,
    /// Typed calls: a message names an fd slot past the fds its record
    /// carried.
    #[cfg(feature = "calls")]
    BadFdSlot {
        /// The slot named.
        slot: u8,
        /// Number of fds the record carried.
        fds: usize,
    },
    /// Typed calls: an fd slot was claimed twice.
    #[cfg(feature = "calls")]
    FdSlotClaimed {
        /// The slot named.
        slot: u8,
    },
    /// Typed calls: the responder refused the request with an error reply.
    #[cfg(feature = "calls")]
    Rejected(crate::calls::Rejection),
    /// Typed calls: a message does not fit the outgoing buffer.
    #[cfg(feature = "calls")]
    EncodeFailed,
    /// Typed calls: a blocking `call` while calls started with `start` are
    /// still in flight.
    #[cfg(feature = "calls")]
    CallsInFlight,
    /// Typed calls: `start` with the table of calls in flight full.
    #[cfg(feature = "calls")]
    TooManyCalls {
        /// The table's capacity (`CALLS`).
        max: usize,
    },
    /// Typed calls: a buffer given to a `Caller` or `Responder` is smaller
    /// than the largest record it must hold: the hello, and the protocol's
    /// bounded types (`Protocol::MAX_*`).
    #[cfg(feature = "calls")]
    BufferTooSmall {
        /// The buffer's length.
        len: usize,
        /// The bytes it needs.
        needed: usize,
    },
    /// Workers: [`take_channel`](crate::worker::take_channel) was called
    /// a second time in this process.
    #[cfg(feature = "worker")]
    ChannelTaken,
    /// Workers: [`take_channel`](crate::worker::take_channel) found no
    /// channel: the process was not started by `WorkerCommand::spawn` (no
    /// `IPC_UNIXSOCKET_WORKER` in its environment, or nothing inherited at
    /// the fd it names).
    #[cfg(feature = "worker")]
    NoInheritedChannel,
    /// Workers: the seccomp step was asked for where no filter can be
    /// built. The crate's allowlist is written for x86_64 and aarch64;
    /// seccompiler builds no filter for i686 or armv7
    /// ([`worker::SECCOMP_AVAILABLE`](crate::worker::SECCOMP_AVAILABLE) is
    /// false there). [`WorkerCommand::spawn`](crate::worker::WorkerCommand::spawn)
    /// returns it before starting anything, and
    /// [`take_channel`](crate::worker::take_channel) if the filter
    /// cannot be built.
    #[cfg(feature = "worker")]
    SeccompUnavailable,
    /// Workers: Landlock was asked for and the kernel has none (or it is
    /// disabled).
    #[cfg(feature = "worker")]
    LandlockUnavailable,
}

impl Error {
    /// Returns `true` when the error rejects one malformed or oversized
    /// record: the record is gone, its fds are closed, and the channel is
    /// ready for the next one.
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::Error;
    ///
    /// assert!(Error::BadMagic { found: *b"XX" }.is_rejected_record());
    /// assert!(!Error::Disconnected.is_rejected_record());
    /// ```
    #[must_use]
    pub const fn is_rejected_record(&self) -> bool {
        matches!(
            self,
            Self::ShortRecord { .. }
                | Self::BadMagic { .. }
                | Self::UnsupportedVersion { .. }
                | Self::LengthMismatch { .. }
                | Self::FdCountMismatch { .. }
                | Self::Truncated { .. }
                | Self::TooManyFds { .. }
                | Self::FdsTruncated { .. }
        ) || self.is_bad_call_header()
    }

    /// A record without a valid call header is a rejected record too.
    const fn is_bad_call_header(&self) -> bool {
        #[cfg(feature = "calls")]
        if let Self::BadCallHeader = self {
            return true;
        }
        false
    }
}

impl From<Errno> for Error {
    fn from(errno: Errno) -> Self {
        Self::Os(errno)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WouldBlock => f.write_str("operation would block"),
            Self::TimedOut => f.write_str("timed out: the deadline passed"),
            Self::Disconnected => f.write_str("peer disconnected"),
            Self::SendTooManyFds { count, max } => {
                write!(
                    f,
                    "cannot send {count} fds: the channel carries at most {max}"
                )
            }
            Self::SendTooLarge { len } => {
                write!(f, "cannot send {len} data bytes in one record")
            }
            Self::ShortRecord { len } => {
                write!(f, "record of {len} bytes is shorter than the 8-byte header")
            }
            Self::BadMagic { found } => {
                write!(f, "bad magic {:#04x} {:#04x}", found[0], found[1])
            }
            Self::UnsupportedVersion { version } => {
                write!(f, "unsupported wire-format version {version}")
            }
            Self::LengthMismatch { declared, actual } => write!(
                f,
                "header declares {declared} data bytes but the record carries {actual}"
            ),
            Self::FdCountMismatch {
                declared,
                received,
                truncated: false,
            } => write!(
                f,
                "header declares {declared} fds but {received} were received"
            ),
            Self::FdCountMismatch {
                declared,
                received,
                truncated: true,
            } => write!(
                f,
                "header declares {declared} fds but the record carried more than {received}"
            ),
            Self::Truncated { len, capacity } => write!(
                f,
                "record of {len} data bytes does not fit the {capacity}-byte buffer"
            ),
            Self::TooManyFds { count, capacity } => write!(
                f,
                "record carries {count} fds, more than the receive capacity of {capacity}"
            ),
            Self::FdsTruncated { declared, received } => write!(
                f,
                "the kernel installed only {received} of the {declared} fds declared \
                 (fd limit reached, or the control buffer held other messages)"
            ),
            Self::NotSeqpacketSocket => f.write_str("fd is not an AF_UNIX SOCK_SEQPACKET socket"),
            Self::NoHeaderRoom { len } => {
                write!(f, "frame of {len} bytes has no room for the 8-byte header")
            }
            Self::AddressInUse => f.write_str("a live listener already has this socket name"),
            Self::NotASocket => f.write_str("the path exists and is not a socket; left it alone"),
            Self::NameTooLong => f.write_str("socket name too long for sockaddr_un"),
            Self::Os(errno) => write!(f, "os error: {errno}"),
            #[cfg(feature = "calls")]
            Self::BadCallHeader => f.write_str("record without a valid call header"),
            #[cfg(feature = "calls")]
            Self::ProtocolMismatch {
                same_name,
                peer_version,
                differs,
            } => {
                if *differs != crate::calls::Differs::NONE {
                    write!(
                        f,
                        "the peer's {differs} type differs under the same protocol name and                          version {peer_version} (bump the version)"
                    )
                } else if *same_name {
                    write!(f, "the peer speaks version {peer_version} of the protocol")
                } else {
                    f.write_str("the peer speaks another protocol")
                }
            }
            #[cfg(feature = "calls")]
            Self::BadBody => f.write_str("message body does not decode"),
            #[cfg(feature = "calls")]
            Self::UnknownVariant => f.write_str("message names an unknown variant"),
            #[cfg(feature = "calls")]
            Self::BadFdSlot { slot, fds } => write!(
                f,
                "fd slot {slot} is out of range: the record carried {fds} fds"
            ),
            #[cfg(feature = "calls")]
            Self::FdSlotClaimed { slot } => write!(f, "fd slot {slot} was already claimed"),
            #[cfg(feature = "calls")]
            Self::Rejected(rejection) => write!(f, "the responder refused the call: {rejection:?}"),
            #[cfg(feature = "calls")]
            Self::EncodeFailed => f.write_str("message does not fit the outgoing buffer"),
            #[cfg(feature = "calls")]
            Self::CallsInFlight => {
                f.write_str("a blocking call while started calls are still in flight")
            }
            #[cfg(feature = "calls")]
            Self::TooManyCalls { max } => write!(f, "{max} calls are in flight already"),
            #[cfg(feature = "calls")]
            Self::BufferTooSmall { len, needed } => write!(
                f,
                "a {len}-byte buffer is too small for the protocol's largest record ({needed} bytes)"
            ),
            #[cfg(feature = "worker")]
            Self::ChannelTaken => f.write_str("the worker's channel was taken already"),
            #[cfg(feature = "worker")]
            Self::NoInheritedChannel => {
                f.write_str("no channel was inherited: not started by WorkerCommand::spawn")
            }
            #[cfg(feature = "worker")]
            Self::SeccompUnavailable => {
                f.write_str("the seccomp filter cannot be built for this architecture")
            }
            #[cfg(feature = "worker")]
            Self::LandlockUnavailable => f.write_str("the kernel has no Landlock"),
        }
    }
}

impl core::error::Error for Error {}

#[cfg(feature = "std")]
extern crate std;

/// For code that speaks `std::io::Error` (the `?` of a function returning
/// `std::io::Result`), with the `std` feature.
///
/// The kinds: `WouldBlock` and `TimedOut` are the same kinds;
/// `Disconnected` is [`BrokenPipe`](std::io::ErrorKind::BrokenPipe),
/// what std reports for writing to a socket whose peer is gone (the crate
/// does not tell an orderly close from a crash, so it never claims a
/// reset with `ConnectionReset`); `Os(errno)` is that errno
/// (`from_raw_os_error`); `AddressInUse` is `AddrInUse` and `NameTooLong`
/// `InvalidFilename`; arguments refused before any system call
/// (`SendTooManyFds`, `SendTooLarge`, `NoHeaderRoom`, `NotASocket`,
/// `NotSeqpacketSocket`, `EncodeFailed`) are `InvalidInput`; rejected
/// records and messages that do not decode are `InvalidData`; anything
/// else is `Other`. Every kind but `WouldBlock` and `TimedOut` carries the
/// crate's [`Error`] (its `Display` text, and `downcast` gives it back).
///
/// # Example
///
/// ```
/// use ipc_unixsocket::{Channel, Error};
/// use std::io::ErrorKind;
///
/// fn ping(channel: &Channel<0>) -> std::io::Result<()> {
///     channel.send(b"ping", &[])?;
///     Ok(())
/// }
///
/// let (a, b) = Channel::<0>::pair()?;
/// drop(b);
/// let error = ping(&a).unwrap_err();
/// assert_eq!(error.kind(), ErrorKind::BrokenPipe);
/// assert_eq!(error.to_string(), "peer disconnected");
/// assert_eq!(error.downcast::<Error>().ok(), Some(Error::Disconnected));
/// # Ok::<(), Error>(())
/// ```
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
impl From<Error> for std::io::Error {
    fn from(error: Error) -> Self {
        use std::io::ErrorKind;
        let kind = match error {
            Error::Os(errno) => return Self::from_raw_os_error(errno.raw_os_error()),
            Error::WouldBlock => return ErrorKind::WouldBlock.into(),
            Error::TimedOut => return ErrorKind::TimedOut.into(),
            Error::Disconnected => ErrorKind::BrokenPipe,
            Error::AddressInUse => ErrorKind::AddrInUse,
            Error::NameTooLong => ErrorKind::InvalidFilename,
            Error::SendTooManyFds { .. }
            | Error::SendTooLarge { .. }
            | Error::NoHeaderRoom { .. }
            | Error::NotASocket
            | Error::NotSeqpacketSocket => ErrorKind::InvalidInput,
            #[cfg(feature = "calls")]
            Error::EncodeFailed => ErrorKind::InvalidInput,
            #[cfg(feature = "calls")]
            Error::ProtocolMismatch { .. }
            | Error::BadBody
            | Error::UnknownVariant
            | Error::BadFdSlot { .. }
            | Error::FdSlotClaimed { .. } => ErrorKind::InvalidData,
            error if error.is_rejected_record() => ErrorKind::InvalidData,
            _ => ErrorKind::Other,
        };
        Self::new(kind, error)
    }
}
