//! The channel: one `AF_UNIX` `SOCK_SEQPACKET` socket and every system call
//! the crate makes.

use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;

use heapless::Vec;
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use rustix::io::{Errno, FdFlags, IoSlice, IoSliceMut, fcntl_setfd, retry_on_intr};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType, recvmsg, sendmsg, socketpair,
    sockopt,
};
use rustix::time::{ClockId, clock_gettime};

use crate::cmsg::CmsgBuffer;
use crate::header::{HEADER_LEN, Header, MAX_FDS_PER_MESSAGE, Record, validate};
use crate::{Credentials, Error};

/// What a successful receive delivered.
///
/// # Example
///
/// ```
/// use ipc_unixsocket::{Channel, Received};
///
/// let (a, b) = Channel::<2>::pair()?;
/// a.send(b"hello", &[])?;
/// let mut data = [0u8; 16];
/// let mut fds = heapless::Vec::<rustix::fd::OwnedFd, 2>::new();
/// let got = b.recv(&mut data, &mut fds)?;
/// assert_eq!(got, Received { data_len: 5, fd_count: 0 });
/// assert_eq!(&data[..got.data_len], b"hello");
/// # Ok::<(), ipc_unixsocket::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Received {
    /// Number of data bytes written to the start of the caller's buffer.
    pub data_len: usize,
    /// Number of fds pushed to the caller's fd vector.
    pub fd_count: usize,
}

/// One end of a message channel carrying bytes and up to `MAX_FDS` file
/// descriptors per message, in both directions.
///
/// A message is one `SOCK_SEQPACKET` record: one `sendmsg` on one side, one
/// `recvmsg` on the other. The channel owns its socket and closes it on drop.
/// It implements [`AsFd`] so that a `poll` loop can watch it.
///
/// `MAX_FDS` may be at most 253 (the kernel's `SCM_MAX_FD`); larger values
/// fail to compile.
///
/// # Example
///
/// ```
/// use ipc_unixsocket::Channel;
/// use rustix::fd::AsFd;
///
/// let (pipeline, worker) = Channel::<4>::pair()?;
/// let frame = rustix::fs::memfd_create("frame", rustix::fs::MemfdFlags::CLOEXEC)?;
/// pipeline.send(b"frame 1", &[frame.as_fd()])?;
///
/// let mut data = [0u8; 64];
/// let mut fds = heapless::Vec::<rustix::fd::OwnedFd, 4>::new();
/// let got = worker.recv(&mut data, &mut fds)?;
/// assert_eq!(&data[..got.data_len], b"frame 1");
/// assert_eq!(fds.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Channel<const MAX_FDS: usize> {
    fd: OwnedFd,
    /// Set once this channel has turned `SO_PASSCRED` on (see
    /// `peer_is_gone`): from then on every record carries credentials.
    passcred: AtomicBool,
}

impl<const MAX_FDS: usize> Channel<MAX_FDS> {
    pub(crate) fn from_fd(fd: OwnedFd) -> Self {
        const {
            assert!(
                MAX_FDS <= MAX_FDS_PER_MESSAGE,
                "MAX_FDS must be at most 253 (SCM_MAX_FD)"
            );
        }
        // rustix finds the vDSO's clock at the first clock read (with
        // `prctl(PR_GET_AUXV)` or by opening `/proc/self/auxv`). Read it
        // here, at set-up, so that a worker that installs a seccomp
        // allowlist after making its channel is not killed at its first
        // deadline wait.
        let _ = monotonic_now();
        Self {
            fd,
            passcred: AtomicBool::new(false),
        }
    }

    /// Creates two connected ends, both close-on-exec.
    ///
    /// Makes one `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)` call.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if the kernel refuses (for example `EMFILE`).
    ///
    /// # Example
    ///
    /// ```
    /// let (a, b) = ipc_unixsocket::Channel::<0>::pair()?;
    /// a.send(b"ping", &[])?;
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    #[doc(alias = "socketpair")]
    pub fn pair() -> Result<(Self, Self), Error> {
        let (a, b) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok((Self::from_fd(a), Self::from_fd(b)))
    }

    /// Creates a channel and returns its local end together with the remote
    /// end as an [`OwnedFd`] to hand to another process.
    ///
    /// The remote fd is close-on-exec, like every fd this crate creates. To
    /// pass it across `exec`, leave the flag alone in this process (another
    /// thread spawning a process meanwhile would inherit the fd) and place
    /// the fd in the child only: a `pre_exec` hook that `dup2`s it to the
    /// number the child expects (`dup2` leaves the copy without the flag).
    /// Drop the parent's copy once the child runs; the child adopts it with
    /// [`Channel::adopt`]. The README's "Getting started" shows both sides;
    /// with the `worker` feature, `worker::WorkerCommand` does the placing
    /// and the worker takes its end with `worker::take_channel`.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if the kernel refuses to create the sockets.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use std::os::unix::process::CommandExt;
    /// use ipc_unixsocket::Channel;
    /// use rustix::fd::AsRawFd;
    ///
    /// let (local, remote) = Channel::<8>::create()?;
    /// let remote_fd = remote.as_raw_fd();
    /// let mut worker = std::process::Command::new("/usr/libexec/ipa-worker");
    /// // SAFETY: runs in the child between fork and exec, and calls only
    /// // async-signal-safe functions.
    /// unsafe {
    ///     worker.pre_exec(move || {
    ///         // At fd 3 without close-on-exec, in the child only (if the end
    ///         // is fd 3 already, clear its flag instead).
    ///         let placed = if remote_fd == 3 {
    ///             libc::fcntl(3, libc::F_SETFD, 0)
    ///         } else {
    ///             libc::dup2(remote_fd, 3)
    ///         };
    ///         if placed == -1 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
    ///     });
    /// }
    /// let child = worker.spawn()?;
    /// drop(remote); // the child holds its own copy now
    /// # drop((local, child));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create() -> Result<(Self, OwnedFd), Error> {
        let (local, remote) = Self::pair()?;
        Ok((local, remote.fd))
    }

    /// Adopts an fd (inherited across `exec`, or received in a message) as
    /// a channel end, after checking that it is an `AF_UNIX`
    /// `SOCK_SEQPACKET` socket.
    ///
    /// Reads `SO_DOMAIN` and `SO_TYPE` with `getsockopt`, then sets
    /// `FD_CLOEXEC` so the channel does not leak into processes this one
    /// spawns. The fd is closed if it is refused. It binds no address (that
    /// is [`Listener::bind`](crate::Listener::bind)); `TryFrom<OwnedFd>`
    /// does the same.
    ///
    /// # Errors
    ///
    /// [`Error::NotSeqpacketSocket`] for anything else: a pipe, a regular
    /// file, a `SOCK_STREAM` or `SOCK_DGRAM` socket, a socket of another
    /// family. [`Error::Os`] if a `getsockopt` or `fcntl` call fails for
    /// another reason.
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Channel, Error};
    ///
    /// let (_local, remote) = Channel::<1>::create()?;
    /// let worker = Channel::<1>::adopt(remote)?;
    ///
    /// let (reader, _writer) = rustix::pipe::pipe()?;
    /// assert_eq!(Channel::<1>::adopt(reader).unwrap_err(), Error::NotSeqpacketSocket);
    /// # drop(worker);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "from_raw_fd")]
    pub fn adopt(fd: OwnedFd) -> Result<Self, Error> {
        let checked =
            sockopt::socket_domain(&fd).and_then(|domain| {
                Ok(domain == AddressFamily::UNIX
                    && sockopt::socket_type(&fd)? == SocketType::SEQPACKET)
            });
        match checked {
            Ok(true) => {}
            Ok(false) | Err(Errno::NOTSOCK) => {
                warn!(
                    "adopt: fd {=i32} is not an AF_UNIX SOCK_SEQPACKET socket; closed it",
                    fd.as_raw_fd()
                );
                return Err(Error::NotSeqpacketSocket);
            }
            Err(errno) => {
                warn!(
                    "adopt: getsockopt on fd {=i32} failed with errno {=i32}; closed it",
                    fd.as_raw_fd(),
                    errno.raw_os_error()
                );
                return Err(errno.into());
            }
        }
        fcntl_setfd(&fd, FdFlags::CLOEXEC)?;
        Ok(Self::from_fd(fd))
    }

    /// Sends one message: `data` and `fds` in one record, blocking while the
    /// socket buffer is full.
    ///
    /// Makes one `sendmsg` with `MSG_NOSIGNAL` (retried on `EINTR`), so a
    /// dead peer is an error and never raises `SIGPIPE`. The fds stay owned
    /// by the caller; the peer receives duplicates.
    ///
    /// # Errors
    ///
    /// - [`Error::SendTooManyFds`] if `fds` holds more than `MAX_FDS`, and
    ///   [`Error::SendTooLarge`] if `data` exceeds `u32::MAX`, both before
    ///   any system call; `SendTooLarge` also when the kernel answers
    ///   `EMSGSIZE` (the record exceeds the socket's send buffer).
    /// - [`Error::Disconnected`] on `EPIPE`, `ECONNRESET` or `ECONNREFUSED`.
    /// - [`Error::WouldBlock`] if the socket was put in non-blocking mode.
    /// - [`Error::Os`] for anything else.
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Channel, Error};
    ///
    /// let (a, b) = Channel::<1>::pair()?;
    /// drop(b);
    /// assert_eq!(a.send(b"anyone?", &[]), Err(Error::Disconnected));
    /// # Ok::<(), Error>(())
    /// ```
    #[doc(alias = "sendmsg")]
    #[doc(alias = "SCM_RIGHTS")]
    pub fn send(&self, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), Error> {
        self.send_with(data, fds, SendFlags::NOSIGNAL)
    }

    /// Like [`send`](Self::send), but returns [`Error::WouldBlock`] instead
    /// of waiting when the socket buffer is full (`MSG_DONTWAIT`).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), plus [`Error::WouldBlock`].
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Channel, Error};
    ///
    /// let (a, _b) = Channel::<0>::pair()?;
    /// let sent = loop {
    ///     match a.try_send(&[0; 1024], &[]) {
    ///         Ok(()) => continue,
    ///         Err(Error::WouldBlock) => break true,
    ///         Err(e) => return Err(e),
    ///     }
    /// };
    /// assert!(sent);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn try_send(&self, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), Error> {
        self.send_with(data, fds, SendFlags::NOSIGNAL | SendFlags::DONTWAIT)
    }

    /// Sends one message whose data is `frame[HEADER_LEN..]`: the header is
    /// written into `frame[..HEADER_LEN]` and the whole frame goes out as
    /// one iovec segment, which the kernel copies on its single-segment
    /// path. Blocks while the socket buffer is full.
    ///
    /// The record on the wire is the same as from [`send`](Self::send); a
    /// peer cannot tell the two apart.
    ///
    /// # Errors
    ///
    /// [`Error::NoHeaderRoom`] if `frame` is shorter than [`HEADER_LEN`]
    /// (before any system call); otherwise as [`send`](Self::send).
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Channel, HEADER_LEN};
    ///
    /// let (a, b) = Channel::<1>::pair()?;
    /// let mut frame = [0u8; HEADER_LEN + 5];
    /// frame[HEADER_LEN..].copy_from_slice(b"hello");
    /// a.send_frame(&mut frame, &[])?;
    ///
    /// let mut data = [0u8; 16];
    /// let got = b.recv(&mut data, &mut heapless::Vec::<_, 1>::new())?;
    /// assert_eq!(&data[..got.data_len], b"hello");
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn send_frame(&self, frame: &mut [u8], fds: &[BorrowedFd<'_>]) -> Result<(), Error> {
        self.send_frame_with(frame, fds, SendFlags::NOSIGNAL)
    }

    /// Like [`send_frame`](Self::send_frame), but returns
    /// [`Error::WouldBlock`] instead of waiting when the socket buffer is
    /// full (`MSG_DONTWAIT`).
    ///
    /// # Errors
    ///
    /// As [`send_frame`](Self::send_frame), plus [`Error::WouldBlock`].
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Channel, Error, HEADER_LEN};
    ///
    /// let (a, _b) = Channel::<0>::pair()?;
    /// let mut frame = [0u8; HEADER_LEN + 1024];
    /// while a.try_send_frame(&mut frame, &[]) != Err(Error::WouldBlock) {}
    /// # Ok::<(), Error>(())
    /// ```
    pub fn try_send_frame(&self, frame: &mut [u8], fds: &[BorrowedFd<'_>]) -> Result<(), Error> {
        self.send_frame_with(frame, fds, SendFlags::NOSIGNAL | SendFlags::DONTWAIT)
    }

    fn send_frame_with(
        &self,
        frame: &mut [u8],
        fds: &[BorrowedFd<'_>],
        flags: SendFlags,
    ) -> Result<(), Error> {
        let len = frame.len();
        let Some((head, data)) = frame.split_first_chunk_mut::<HEADER_LEN>() else {
            return Err(Error::NoHeaderRoom { len });
        };
        *head = self.header_for(data, fds)?.encode();
        self.send_iov(&[IoSlice::new(frame)], len - HEADER_LEN, fds, flags)
    }

    fn send_with(
        &self,
        data: &[u8],
        fds: &[BorrowedFd<'_>],
        flags: SendFlags,
    ) -> Result<(), Error> {
        let header = self.header_for(data, fds)?.encode();
        let iov = [IoSlice::new(&header), IoSlice::new(data)];
        self.send_iov(&iov, data.len(), fds, flags)
    }

    /// The header of a message, or the error that refuses it before any
    /// system call.
    fn header_for(&self, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<Header, Error> {
        let too_many = Error::SendTooManyFds {
            count: fds.len(),
            max: MAX_FDS,
        };
        if fds.len() > MAX_FDS {
            return Err(too_many);
        }
        let fd_count = u8::try_from(fds.len()).map_err(|_| too_many)?;
        let data_len =
            u32::try_from(data.len()).map_err(|_| Error::SendTooLarge { len: data.len() })?;
        Ok(Header { fd_count, data_len })
    }

    fn send_iov(
        &self,
        iov: &[IoSlice<'_>],
        data_len: usize,
        fds: &[BorrowedFd<'_>],
        flags: SendFlags,
    ) -> Result<(), Error> {
        let mut space = CmsgBuffer::<MAX_FDS>::new();
        let mut control = SendAncillaryBuffer::default();
        if !fds.is_empty() {
            control = SendAncillaryBuffer::new(space.as_bytes());
            if !control.push(SendAncillaryMessage::ScmRights(fds)) {
                return Err(Error::SendTooManyFds {
                    count: fds.len(),
                    max: MAX_FDS,
                });
            }
        }
        match retry_on_intr(|| sendmsg(&self.fd, iov, &mut control, flags)) {
            Ok(_) => {
                trace!(
                    "sent {=usize} data bytes, {=usize} fds",
                    data_len,
                    fds.len()
                );
                Ok(())
            }
            Err(Errno::AGAIN) => Err(Error::WouldBlock),
            Err(Errno::PIPE | Errno::CONNRESET | Errno::CONNREFUSED) => {
                debug!("send: peer disconnected");
                Err(Error::Disconnected)
            }
            Err(Errno::MSGSIZE) => Err(Error::SendTooLarge { len: data_len }),
            Err(errno) => Err(errno.into()),
        }
    }

    /// Receives one message, blocking until a record arrives.
    ///
    /// The data is written to the start of `data`; `fds` is cleared (closing
    /// whatever it held) and then receives the message's fds, in order, each
    /// close-on-exec. The capacity of `fds` is this call's fd capacity: it
    /// may be anything up to `MAX_FDS` (checked at compile time), and the
    /// control buffer on the stack is sized for it, so a caller that accepts
    /// no fds passes a `heapless::Vec<OwnedFd, 0>`, pays no stack for fds
    /// and gets [`Error::TooManyFds`] for a record that carries any.
    ///
    /// Every fd the crate closes (what `fds` held, and the fds of a rejected
    /// record) is closed without waiting where the kernel allows: a socket
    /// is set to `SO_LINGER {on, 0}` first, so a TCP socket with unsent data
    /// is aborted rather than lingering. Take fds out of the vector to close
    /// them yourself.
    ///
    /// Makes one `recvmsg` with `MSG_TRUNC | MSG_CMSG_CLOEXEC` (retried on
    /// `EINTR`) into two iovec segments (the header, then `data`); no heap.
    /// [`recv_frame`](Self::recv_frame) receives into one segment.
    ///
    /// # Errors
    ///
    /// - A rejected record (see [`Error::is_rejected_record`]), checked in
    ///   this order: [`Error::ShortRecord`], [`Error::BadMagic`],
    ///   [`Error::UnsupportedVersion`], [`Error::LengthMismatch`],
    ///   [`Error::FdCountMismatch`], [`Error::Truncated`],
    ///   [`Error::TooManyFds`], [`Error::FdsTruncated`]. The record is
    ///   consumed, every fd that came with it is closed, `fds` is left
    ///   empty, and the channel stays usable.
    /// - [`Error::Disconnected`] once the peer has closed and every queued
    ///   record has been read.
    /// - [`Error::WouldBlock`] if the socket was put in non-blocking mode.
    /// - [`Error::Os`] for anything else.
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Channel, Error};
    /// use rustix::fd::OwnedFd;
    ///
    /// let (a, b) = Channel::<2>::pair()?;
    /// a.send(b"last words", &[])?;
    /// drop(a);
    /// let mut data = [0u8; 32];
    /// let mut fds = heapless::Vec::<OwnedFd, 2>::new();
    /// assert_eq!(b.recv(&mut data, &mut fds)?.data_len, 10);
    /// assert_eq!(b.recv(&mut data, &mut fds), Err(Error::Disconnected));
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// A vector with more room than the channel's `MAX_FDS` does not
    /// compile:
    ///
    /// ```compile_fail
    /// let (_a, b) = ipc_unixsocket::Channel::<1>::pair()?;
    /// let mut fds = heapless::Vec::<rustix::fd::OwnedFd, 2>::new();
    /// b.recv(&mut [0u8; 8], &mut fds)?;
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    #[doc(alias = "recvmsg")]
    pub fn recv<const CAP: usize>(
        &self,
        data: &mut [u8],
        fds: &mut Vec<OwnedFd, CAP>,
    ) -> Result<Received, Error> {
        self.recv_split(data, fds, RecvFlags::empty())
    }

    /// Like [`recv`](Self::recv), but returns [`Error::WouldBlock`] at once
    /// when no record is queued (`MSG_DONTWAIT`; the socket's own mode is
    /// not changed).
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), plus [`Error::WouldBlock`].
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Channel, Error};
    /// use rustix::fd::OwnedFd;
    ///
    /// let (a, b) = Channel::<0>::pair()?;
    /// let mut data = [0u8; 8];
    /// let mut fds = heapless::Vec::<OwnedFd, 0>::new();
    /// assert_eq!(b.try_recv(&mut data, &mut fds), Err(Error::WouldBlock));
    /// a.send(b"now", &[])?;
    /// assert_eq!(b.try_recv(&mut data, &mut fds)?.data_len, 3);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn try_recv<const CAP: usize>(
        &self,
        data: &mut [u8],
        fds: &mut Vec<OwnedFd, CAP>,
    ) -> Result<Received, Error> {
        self.recv_split(data, fds, RecvFlags::DONTWAIT)
    }

    /// Like [`recv`](Self::recv), but waits at most `timeout`.
    ///
    /// Alternates non-blocking `recvmsg` with `poll(POLLIN)` on the socket.
    /// A signal that interrupts the wait does not extend it: the deadline
    /// is fixed on entry against `CLOCK_MONOTONIC`.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), plus [`Error::TimedOut`] when the deadline
    /// passes with no record.
    ///
    /// # Example
    ///
    /// ```
    /// use core::time::Duration;
    /// use ipc_unixsocket::{Channel, Error};
    /// use rustix::fd::OwnedFd;
    ///
    /// let (_a, b) = Channel::<0>::pair()?;
    /// let mut data = [0u8; 8];
    /// let mut fds = heapless::Vec::<OwnedFd, 0>::new();
    /// let waited = b.recv_timeout(&mut data, &mut fds, Duration::from_millis(5));
    /// assert_eq!(waited, Err(Error::TimedOut));
    /// # Ok::<(), Error>(())
    /// ```
    #[doc(alias = "poll")]
    pub fn recv_timeout<const CAP: usize>(
        &self,
        data: &mut [u8],
        fds: &mut Vec<OwnedFd, CAP>,
        timeout: Duration,
    ) -> Result<Received, Error> {
        self.wait_for(timeout, || self.try_recv(data, fds))
    }

    /// Receives one message into one iovec segment: the record (header and
    /// data) is written to the start of `frame`, so the data is
    /// `frame[HEADER_LEN..][..data_len]`. Otherwise exactly as
    /// [`recv`](Self::recv): the same checks, fds and errors; a record with
    /// more than `frame.len() - HEADER_LEN` data bytes is
    /// [`Error::Truncated`].
    ///
    /// # Errors
    ///
    /// [`Error::NoHeaderRoom`] if `frame` is shorter than [`HEADER_LEN`]
    /// (before any system call; nothing is consumed); otherwise as
    /// [`recv`](Self::recv).
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Channel, HEADER_LEN};
    /// use rustix::fd::OwnedFd;
    ///
    /// let (a, b) = Channel::<1>::pair()?;
    /// a.send(b"stats", &[])?;
    /// let mut frame = [0u8; HEADER_LEN + 64];
    /// let mut fds = heapless::Vec::<OwnedFd, 1>::new();
    /// let got = b.recv_frame(&mut frame, &mut fds)?;
    /// assert_eq!(&frame[HEADER_LEN..][..got.data_len], b"stats");
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn recv_frame<const CAP: usize>(
        &self,
        frame: &mut [u8],
        fds: &mut Vec<OwnedFd, CAP>,
    ) -> Result<Received, Error> {
        self.recv_one_segment(frame, fds, RecvFlags::empty(), true)
    }

    /// [`recv_frame`](Self::recv_frame) for a receiver that has set a
    /// receive timeout (`SO_RCVTIMEO`) and counts down to a deadline of its
    /// own: the timeout's expiry and a signal are both
    /// [`Error::WouldBlock`], never retried here, so that the receiver
    /// recomputes the time left (a retry would wait the whole timeout
    /// again, past the deadline).
    #[cfg(feature = "calls")]
    pub(crate) fn recv_frame_timed<const CAP: usize>(
        &self,
        frame: &mut [u8],
        fds: &mut Vec<OwnedFd, CAP>,
    ) -> Result<Received, Error> {
        self.recv_one_segment(frame, fds, RecvFlags::empty(), false)
    }

    /// Like [`recv_frame`](Self::recv_frame), but returns
    /// [`Error::WouldBlock`] at once when no record is queued.
    ///
    /// # Errors
    ///
    /// As [`recv_frame`](Self::recv_frame), plus [`Error::WouldBlock`].
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Channel, Error, HEADER_LEN};
    /// use rustix::fd::OwnedFd;
    ///
    /// let (_a, b) = Channel::<0>::pair()?;
    /// let mut frame = [0u8; HEADER_LEN + 8];
    /// let mut fds = heapless::Vec::<OwnedFd, 0>::new();
    /// assert_eq!(b.try_recv_frame(&mut frame, &mut fds), Err(Error::WouldBlock));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn try_recv_frame<const CAP: usize>(
        &self,
        frame: &mut [u8],
        fds: &mut Vec<OwnedFd, CAP>,
    ) -> Result<Received, Error> {
        self.recv_one_segment(frame, fds, RecvFlags::DONTWAIT, true)
    }

    /// Like [`recv_frame`](Self::recv_frame), but waits at most `timeout`,
    /// as [`recv_timeout`](Self::recv_timeout) does.
    ///
    /// # Errors
    ///
    /// As [`recv_frame`](Self::recv_frame), plus [`Error::TimedOut`].
    ///
    /// # Example
    ///
    /// ```
    /// use core::time::Duration;
    /// use ipc_unixsocket::{Channel, Error, HEADER_LEN};
    /// use rustix::fd::OwnedFd;
    ///
    /// let (_a, b) = Channel::<0>::pair()?;
    /// let mut frame = [0u8; HEADER_LEN + 8];
    /// let mut fds = heapless::Vec::<OwnedFd, 0>::new();
    /// let waited = b.recv_frame_timeout(&mut frame, &mut fds, Duration::from_millis(5));
    /// assert_eq!(waited, Err(Error::TimedOut));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn recv_frame_timeout<const CAP: usize>(
        &self,
        frame: &mut [u8],
        fds: &mut Vec<OwnedFd, CAP>,
        timeout: Duration,
    ) -> Result<Received, Error> {
        self.wait_for(timeout, || self.try_recv_frame(frame, fds))
    }

    /// Calls `try_recv` until it returns something other than
    /// [`Error::WouldBlock`], waiting with `poll` in between, until the
    /// deadline fixed on entry.
    fn wait_for(
        &self,
        timeout: Duration,
        mut try_recv: impl FnMut() -> Result<Received, Error>,
    ) -> Result<Received, Error> {
        let deadline = monotonic_now().checked_add(timeout);
        loop {
            match try_recv() {
                Err(Error::WouldBlock) => {}
                done => return done,
            }
            wait_ready(&self.fd, PollFlags::IN, deadline)?;
        }
    }

    /// Returns the pid, uid and gid of the process that created the peer
    /// socket, as recorded by the kernel when the sockets were connected.
    ///
    /// Reads `SO_PEERCRED` with `getsockopt`.
    ///
    /// For the two ends of [`pair`](Self::pair) or [`create`](Self::create)
    /// the kernel records the process that called `socketpair`, so a
    /// pipeline that created the channel sees its own credentials. To learn
    /// who a spawned worker really is, let the worker create a channel and
    /// send one end back over the first one: the end the pipeline receives
    /// names the worker (`examples/camera_ipa.rs` does this).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if `getsockopt` fails.
    ///
    /// # Example
    ///
    /// ```
    /// let (a, _b) = ipc_unixsocket::Channel::<0>::pair()?;
    /// let peer = a.peer_credentials()?;
    /// assert_eq!(peer.uid, rustix::process::getuid());
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    #[doc(alias = "SO_PEERCRED")]
    pub fn peer_credentials(&self) -> Result<Credentials, Error> {
        crate::credentials::peer_credentials(&self.fd)
    }

    fn recv_split<const CAP: usize>(
        &self,
        data: &mut [u8],
        fds: &mut Vec<OwnedFd, CAP>,
        flags: RecvFlags,
    ) -> Result<Received, Error> {
        let data_capacity = data.len();
        let mut head = [0u8; HEADER_LEN];
        let mut iov = [IoSliceMut::new(&mut head), IoSliceMut::new(data)];
        let got = self.recv_iov(&mut iov, fds, flags, true)?;
        check(&head, got, data_capacity, fds)
    }

    fn recv_one_segment<const CAP: usize>(
        &self,
        frame: &mut [u8],
        fds: &mut Vec<OwnedFd, CAP>,
        flags: RecvFlags,
        retry_interrupted: bool,
    ) -> Result<Received, Error> {
        let Some(data_capacity) = frame.len().checked_sub(HEADER_LEN) else {
            return Err(Error::NoHeaderRoom { len: frame.len() });
        };
        let got = self.recv_iov(&mut [IoSliceMut::new(frame)], fds, flags, retry_interrupted)?;
        check(&frame[..HEADER_LEN], got, data_capacity, fds)
    }

    /// One `recvmsg` into `iov`, whose first `HEADER_LEN` bytes are the
    /// header's room, with a control buffer sized for `CAP` fds: every fd
    /// that arrives is owned at once, those past `CAP` are discarded, and
    /// end-of-file is told from an empty record. A signal is retried, or
    /// with `retry_interrupted` false reported as [`Error::WouldBlock`].
    fn recv_iov<const CAP: usize>(
        &self,
        iov: &mut [IoSliceMut<'_>],
        fds: &mut Vec<OwnedFd, CAP>,
        flags: RecvFlags,
        retry_interrupted: bool,
    ) -> Result<RawRecord, Error> {
        const {
            assert!(
                CAP <= MAX_FDS,
                "the fd vector holds more fds than the channel carries"
            );
        }
        discard_all(fds);
        let mut space = CmsgBuffer::<CAP>::new();
        let mut space = space.zeroed();
        let mut control = RecvAncillaryBuffer::new(space.as_bytes());
        let flags = flags | RecvFlags::TRUNC | RecvFlags::CMSG_CLOEXEC;
        let mut reset_seen = false;
        // Read before the receive: if the option was on already, the kernel
        // attached credentials to whatever record this receive takes.
        let exact = self.passcred.load(Ordering::Acquire);
        let msg = loop {
            match recvmsg(&self.fd, iov, &mut control, flags) {
                Ok(msg) => break msg,
                Err(Errno::INTR) if retry_interrupted => {}
                Err(Errno::INTR) => return Err(Error::WouldBlock),
                // A peer that died with records of ours unread leaves a
                // one-shot ECONNRESET on this socket; reading it clears it.
                // Records the peer queued before dying still come first.
                Err(Errno::CONNRESET) if !reset_seen => reset_seen = true,
                Err(Errno::CONNRESET) => {
                    debug!("recv: peer disconnected (connection reset)");
                    return Err(Error::Disconnected);
                }
                Err(Errno::AGAIN) => return Err(Error::WouldBlock),
                Err(errno) => return Err(errno.into()),
            }
        };

        // The kernel wrote `msg` into `space`; the fds are taken from there
        // with the crate's own walk, so rustix's decoder (which the
        // buffer's drop would run) never sees the messages.
        core::mem::forget(control);
        // Take ownership of every fd at once; those past the capacity (the
        // alignment slack) are counted and discarded here.
        let mut fds_received = 0;
        let control_messages = space.take_fds(|fd| {
            fds_received += 1;
            if let Err(extra) = fds.push(fd) {
                discard(extra);
            }
        });
        let fds_truncated = msg.flags.contains(ReturnFlags::CTRUNC);
        // End-of-file reads as a 0-byte record; a record that came with any
        // control message (fds, credentials, a pidfd) is a record. With
        // `SO_PASSCRED` on before the receive, nothing else reads so.
        if msg.bytes == 0
            && control_messages == 0
            && !fds_truncated
            && (exact || self.peer_is_gone())
        {
            debug!("recv: peer disconnected");
            return Err(Error::Disconnected);
        }
        Ok(RawRecord {
            len: msg.bytes,
            fds_received,
            fds_truncated,
        })
    }

    /// Tells end-of-file from a 0-byte record without fds, which `recvmsg`
    /// reports the same way on `SOCK_SEQPACKET`, after such a read.
    ///
    /// The channel turns `SO_PASSCRED` on, for good: from then on the
    /// kernel attaches credentials to every record (the control buffer of
    /// every receive has room for them, so a receive on another thread
    /// loses nothing), and end-of-file has none. A peek with no control
    /// buffer then shows any queued record as `MSG_CTRUNC` (or by its
    /// length), an empty queue with the peer alive as `EAGAIN`, and
    /// end-of-file as 0 bytes and nothing else, which a `poll` for the
    /// hang-up confirms (end-of-file comes only after one; the check also
    /// keeps an emulator that drops `MSG_CTRUNC`, such as qemu-user, from
    /// reading a live peer's empty record as a hang-up). So only the first
    /// empty record, if it is the last one before the hang-up, reads as
    /// end-of-file; every later one carries credentials. The channel
    /// remembers that the option is on: a later 0-byte read without
    /// control messages is end-of-file at once, with no peek and no `poll`
    /// (so turning the option off yourself makes an empty record read as a
    /// hang-up).
    ///
    /// Where `setsockopt` is refused (a seccomp filter that allows the
    /// receive but not socket options), the peek alone cannot tell an empty
    /// record without fds from end-of-file, and the `poll` decides (if it
    /// too is refused, a hang-up is assumed). Then an empty record without
    /// fds queued right before a hang-up reads as end-of-file, and a record
    /// after it would come after `Disconnected`.
    fn peer_is_gone(&self) -> bool {
        if sockopt::set_socket_passcred(&self.fd, true).is_ok() {
            self.passcred.store(true, Ordering::Release);
        }
        let mut no_control = RecvAncillaryBuffer::new(&mut []);
        let peek = RecvFlags::PEEK | RecvFlags::DONTWAIT | RecvFlags::TRUNC;
        let next = loop {
            match recvmsg(&self.fd, &mut [], &mut no_control, peek) {
                // The peer may die (leaving a one-shot ECONNRESET) between
                // the 0-byte read and this peek: its death is what we are
                // asking about, so read on.
                Err(Errno::INTR | Errno::CONNRESET) => {}
                result => break result,
            }
        };
        match next {
            Ok(next) if next.bytes == 0 && !next.flags.contains(ReturnFlags::CTRUNC) => {
                let mut watch = [PollFd::new(&self.fd, PollFlags::RDHUP)];
                match retry_on_intr(|| poll(&mut watch, Some(&Timespec::default()))) {
                    Ok(_) => watch[0]
                        .revents()
                        .intersects(PollFlags::HUP | PollFlags::RDHUP),
                    Err(_) => true,
                }
            }
            // A record is queued, or none and the peer is alive: the 0
            // bytes were a record.
            _ => false,
        }
    }
}

/// Closes an fd the caller will not get, without waiting for it: a socket
/// whose `SO_LINGER` is on with a non-zero time (a TCP socket with unsent
/// data would block `close` for that time) is first set to `SO_LINGER {on,
/// 0}`, so closing it aborts the connection (RST) instead. Nothing else is
/// changed: socket options belong to the open file description, which the
/// sender still holds, and its own later close must behave as it expects.
/// A non-socket, or a socket without a linger time, is closed as it is.
pub(crate) fn discard(fd: OwnedFd) {
    if let Ok(Some(linger)) = sockopt::socket_linger(&fd)
        && !linger.is_zero()
    {
        let _ = sockopt::set_socket_linger(&fd, Some(Duration::ZERO));
    }
    drop(fd);
}

/// What one `recvmsg` delivered, before the record is validated.
struct RawRecord {
    len: usize,
    fds_received: usize,
    fds_truncated: bool,
}

/// Validates a received record whose first bytes (up to `HEADER_LEN`) are
/// in `head`; a rejected record's fds are discarded.
fn check<const CAP: usize>(
    head: &[u8],
    got: RawRecord,
    data_capacity: usize,
    fds: &mut Vec<OwnedFd, CAP>,
) -> Result<Received, Error> {
    let record = Record {
        head: &head[..got.len.min(HEADER_LEN)],
        len: got.len,
        data_capacity,
        fds_received: got.fds_received,
        fd_capacity: CAP,
        fds_truncated: got.fds_truncated,
    };
    match validate(&record) {
        Ok(header) => {
            let received = Received {
                data_len: got.len - HEADER_LEN,
                fd_count: usize::from(header.fd_count),
            };
            trace!("received {}", received);
            Ok(received)
        }
        Err(error) => {
            discard_all(fds);
            warn!(
                "rejected record of {=usize} bytes: {}; closed {=usize} fds",
                got.len, error, got.fds_received
            );
            Err(error)
        }
    }
}

/// [`discard`]s every fd in `fds`, leaving it empty.
pub(crate) fn discard_all<const N: usize>(fds: &mut Vec<OwnedFd, N>) {
    while let Some(fd) = fds.pop() {
        discard(fd);
    }
}

impl<const MAX_FDS: usize> AsFd for Channel<MAX_FDS> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl<const MAX_FDS: usize> AsRawFd for Channel<MAX_FDS> {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The crate's one deadline wait, for the channel and the call layer:
/// `poll`s `fd` for `flags` with the time left until `deadline`
/// (`CLOCK_MONOTONIC`; `None` for no limit). `Ok` when the fd may be ready
/// (or a signal interrupted the wait: the caller tries its operation again,
/// which calls this again with the time then left, so a signal neither
/// extends nor ends the wait); [`Error::TimedOut`] once the deadline has
/// passed.
pub(crate) fn wait_ready(
    fd: impl AsFd,
    flags: PollFlags,
    deadline: Option<Duration>,
) -> Result<(), Error> {
    let timeout = match deadline.map(|deadline| deadline.checked_sub(monotonic_now())) {
        None => None,
        Some(Some(left)) if !left.is_zero() => Some(timespec(left)),
        Some(_) => return Err(Error::TimedOut),
    };
    let mut watch = [PollFd::new(&fd, flags)];
    match poll(&mut watch, timeout.as_ref()) {
        Ok(0) => Err(Error::TimedOut),
        Ok(_) | Err(Errno::INTR) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}

pub(crate) fn monotonic_now() -> Duration {
    let now = clock_gettime(ClockId::Monotonic);
    // CLOCK_MONOTONIC is never negative.
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(now.tv_nsec).unwrap_or(0);
    Duration::new(secs, nanos)
}

pub(crate) fn timespec(duration: Duration) -> Timespec {
    Timespec {
        tv_sec: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: duration.subsec_nanos().into(),
    }
}

impl<const MAX_FDS: usize> Channel<MAX_FDS> {
    /// The former name of [`Channel::adopt`], which it calls.
    ///
    /// Renamed because it binds no address: [`Listener::bind`](crate::Listener::bind)
    /// does.
    ///
    /// # Errors
    ///
    /// Those of [`Channel::adopt`].
    ///
    /// # Example
    ///
    /// ```
    /// # #![allow(deprecated)]
    /// let (_local, remote) = ipc_unixsocket::Channel::<1>::create()?;
    /// let worker = ipc_unixsocket::Channel::<1>::bind(remote)?; // now `adopt`
    /// # drop(worker);
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    #[deprecated(since = "0.1.0", note = "renamed to `Channel::adopt`")]
    pub fn bind(fd: OwnedFd) -> Result<Self, Error> {
        Self::adopt(fd)
    }
}

/// [`Channel::adopt`]: checks that the fd is an `AF_UNIX` `SOCK_SEQPACKET`
/// socket (closing it if not) and sets `FD_CLOEXEC` on it.
///
/// # Example
///
/// ```
/// use ipc_unixsocket::{Channel, Error};
///
/// let (_local, remote) = Channel::<1>::create()?;
/// let worker = Channel::<1>::try_from(remote)?;
///
/// let (reader, _writer) = rustix::pipe::pipe()?;
/// assert_eq!(Channel::<1>::try_from(reader).unwrap_err(), Error::NotSeqpacketSocket);
/// # drop(worker);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<const MAX_FDS: usize> TryFrom<OwnedFd> for Channel<MAX_FDS> {
    type Error = Error;

    fn try_from(fd: OwnedFd) -> Result<Self, Error> {
        Self::adopt(fd)
    }
}

/// Gives up the channel and returns its socket, still open (and still
/// close-on-exec).
///
/// # Example
///
/// ```
/// use ipc_unixsocket::Channel;
/// use rustix::fd::OwnedFd;
///
/// let (a, b) = Channel::<0>::pair()?;
/// let socket = OwnedFd::from(a);
/// let a = Channel::<0>::adopt(socket)?; // and back
/// a.send(b"still connected", &[])?;
/// # drop(b);
/// # Ok::<(), ipc_unixsocket::Error>(())
/// ```
impl<const MAX_FDS: usize> From<Channel<MAX_FDS>> for OwnedFd {
    fn from(channel: Channel<MAX_FDS>) -> Self {
        channel.fd
    }
}
