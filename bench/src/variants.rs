//! The message transports under test, each behind the same small [`End`]
//! trait so that one generic loop (monomorphised per transport, no dynamic
//! dispatch per message) drives them all.
//!
//! Every end owns `MAX_FDS` memfds made once at construction and re-sends
//! the first `nfds` of them with every message. Every fd an end receives is
//! closed before or at its next receive, so each variant pays one `close`
//! per received fd.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;

use ipc_unixsocket::{Channel, Error as ChannelError};
use rustix::event::{PollFd, PollFlags, poll};
use rustix::fs::MemfdFlags;
use rustix::io::{Errno, IoSlice, IoSliceMut};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};

/// Most fds any cell sends; every fd-capable receiver is sized for this.
pub const MAX_FDS: usize = 4;
/// Largest message body any cell sends; every receive buffer has this size.
pub const MAX_DATA: usize = 65536;

/// Room in front of the data in every buffer the harness passes: the
/// 8-byte header, for the variants that send and receive it in one segment.
pub const HEADROOM: usize = ipc_unixsocket::HEADER_LEN;

/// The memfds an end re-sends with every message.
pub struct Memfds {
    fds: [OwnedFd; MAX_FDS],
}

impl Memfds {
    pub fn new() -> io::Result<Self> {
        let make = || -> io::Result<OwnedFd> {
            let fd = rustix::fs::memfd_create("ipc-bench", MemfdFlags::CLOEXEC)?;
            rustix::fs::ftruncate(&fd, 4096)?;
            Ok(fd)
        };
        Ok(Self {
            fds: [make()?, make()?, make()?, make()?],
        })
    }

    pub fn borrowed(&self) -> [BorrowedFd<'_>; MAX_FDS] {
        std::array::from_fn(|i| self.fds[i].as_fd())
    }

    pub fn into_fds(self) -> [OwnedFd; MAX_FDS] {
        self.fds
    }

    pub fn raw(&self) -> [RawFd; MAX_FDS] {
        std::array::from_fn(|i| self.fds[i].as_raw_fd())
    }
}

/// One end of a transport.
pub trait End: Sized + Send + 'static {
    /// Whether the two ends are a `SOCK_DGRAM` pair (else `SOCK_SEQPACKET`).
    const DGRAM: bool;
    /// Adopts one end of a socket pair of the right type.
    fn from_fd(fd: OwnedFd) -> io::Result<Self>;
    /// Sends `frame[HEADROOM..]` and the first `nfds` of this end's memfds
    /// as one message. `frame[..HEADROOM]` is room a variant may use for its
    /// header (only `crate-frame` does).
    fn send(&mut self, frame: &mut [u8], nfds: usize) -> io::Result<()>;
    /// Receives one message into `frame[HEADROOM..]` (a variant may use the
    /// room in front); returns (data bytes, fds received).
    fn recv(&mut self, frame: &mut [u8]) -> io::Result<(usize, usize)>;
}

fn channel_error(error: ChannelError) -> io::Error {
    match error {
        ChannelError::Os(errno) => errno.into(),
        other => io::Error::other(other),
    }
}

/// Blocks in `poll(POLLIN)` until `fd` is readable: the firmware main loop.
fn wait_readable(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut watch = [PollFd::new(&fd, PollFlags::IN)];
    loop {
        match poll(&mut watch, None) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
}

// ---------------------------------------------------------------------------
// (1) and (2): this crate.

/// `ipc_unixsocket::Channel`; `POLL = false` uses blocking `recv`,
/// `POLL = true` uses `poll(POLLIN)` then `try_recv`.
pub struct Crate<const POLL: bool> {
    channel: Channel<MAX_FDS>,
    memfds: Memfds,
    fds: heapless::Vec<OwnedFd, MAX_FDS>,
}

impl<const POLL: bool> End for Crate<POLL> {
    const DGRAM: bool = false;

    fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        Ok(Self {
            channel: Channel::adopt(fd).map_err(channel_error)?,
            memfds: Memfds::new()?,
            fds: heapless::Vec::new(),
        })
    }

    #[inline]
    fn send(&mut self, frame: &mut [u8], nfds: usize) -> io::Result<()> {
        let data = &frame[HEADROOM..];
        let fds = self.memfds.borrowed();
        self.channel.send(data, &fds[..nfds]).map_err(channel_error)
    }

    #[inline]
    fn recv(&mut self, frame: &mut [u8]) -> io::Result<(usize, usize)> {
        let buf = &mut frame[HEADROOM..];
        let got = if POLL {
            loop {
                wait_readable(self.channel.as_fd())?;
                match self.channel.try_recv(buf, &mut self.fds) {
                    Err(ChannelError::WouldBlock) => {}
                    done => break done,
                }
            }
        } else {
            self.channel.recv(buf, &mut self.fds)
        };
        let got = got.map_err(channel_error)?;
        // Close the frames here, as the raw floor does right after its
        // `recvmsg`; fds left in the vector would instead be discarded by
        // the next receive, which sets `SO_LINGER` on each first.
        self.fds.clear();
        Ok((got.data_len, got.fd_count))
    }
}

/// `ipc_unixsocket::Channel::send_frame`/`recv_frame`: the header in the
/// room in front of the data, one iovec segment each way, blocking.
pub struct CrateFrame {
    channel: Channel<MAX_FDS>,
    memfds: Memfds,
    fds: heapless::Vec<OwnedFd, MAX_FDS>,
}

impl End for CrateFrame {
    const DGRAM: bool = false;

    fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        Ok(Self {
            channel: Channel::adopt(fd).map_err(channel_error)?,
            memfds: Memfds::new()?,
            fds: heapless::Vec::new(),
        })
    }

    #[inline]
    fn send(&mut self, frame: &mut [u8], nfds: usize) -> io::Result<()> {
        let fds = self.memfds.borrowed();
        self.channel
            .send_frame(frame, &fds[..nfds])
            .map_err(channel_error)
    }

    #[inline]
    fn recv(&mut self, frame: &mut [u8]) -> io::Result<(usize, usize)> {
        let got = self
            .channel
            .recv_frame(frame, &mut self.fds)
            .map_err(channel_error)?;
        self.fds.clear();
        Ok((got.data_len, got.fd_count))
    }
}

// ---------------------------------------------------------------------------
// (3) and (3b): the raw floor.

/// Raw `rustix::net::sendmsg`/`recvmsg` on `SOCK_SEQPACKET` with a stack
/// control buffer and no validation. Sends the same 8-byte header and data
/// as the crate (two iovecs, the same wire record) with the same flags
/// (`MSG_NOSIGNAL`; `MSG_CMSG_CLOEXEC`), so the ratio isolates the crate's
/// own user-space work.
///
/// `HEADER = false` is the bare floor: data alone in one iovec, no header,
/// which shows what the 8-byte header and the second iovec cost the kernel.
pub struct Raw<const POLL: bool, const HEADER: bool = true> {
    fd: OwnedFd,
    memfds: Memfds,
}

impl<const POLL: bool, const HEADER: bool> End for Raw<POLL, HEADER> {
    const DGRAM: bool = false;

    fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        Ok(Self {
            fd,
            memfds: Memfds::new()?,
        })
    }

    #[inline]
    fn send(&mut self, frame: &mut [u8], nfds: usize) -> io::Result<()> {
        let data = &frame[HEADROOM..];
        let len = (data.len() as u32).to_le_bytes();
        let header = [b'I', b'P', 1, nfds as u8, len[0], len[1], len[2], len[3]];
        let with_header = [IoSlice::new(&header), IoSlice::new(data)];
        let bare = [IoSlice::new(data)];
        let iov: &[IoSlice<'_>] = if HEADER { &with_header } else { &bare };
        let fds = self.memfds.borrowed();
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::default();
        if nfds > 0 {
            control = SendAncillaryBuffer::new(&mut space);
            control.push(SendAncillaryMessage::ScmRights(&fds[..nfds]));
        }
        sendmsg(&self.fd, iov, &mut control, SendFlags::NOSIGNAL)?;
        Ok(())
    }

    #[inline]
    fn recv(&mut self, frame: &mut [u8]) -> io::Result<(usize, usize)> {
        let buf = &mut frame[HEADROOM..];
        let mut head = [0u8; 8];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut with_header = [IoSliceMut::new(&mut head), IoSliceMut::new(buf)];
        let mut bare_iov;
        let iov: &mut [IoSliceMut<'_>] = if HEADER {
            &mut with_header
        } else {
            bare_iov = [IoSliceMut::new(with_header[1].as_mut())];
            &mut bare_iov
        };
        let msg = if POLL {
            loop {
                wait_readable(self.fd.as_fd())?;
                match recvmsg(
                    &self.fd,
                    iov,
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
                ) {
                    Err(Errno::AGAIN) => {}
                    done => break done?,
                }
            }
        } else {
            recvmsg(&self.fd, iov, &mut control, RecvFlags::CMSG_CLOEXEC)?
        };
        let mut nfds = 0;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                for fd in fds {
                    nfds += 1;
                    drop(fd);
                }
            }
        }
        let header_len = if HEADER { 8 } else { 0 };
        Ok((msg.bytes.saturating_sub(header_len), nfds))
    }
}

// ---------------------------------------------------------------------------
// (4) libcamera's two-datagram design.

/// libcamera's `IPCUnixSocket` design on `SOCK_DGRAM`: `send()` of a header
/// `{ u32 data; u8 fds; }` (8 bytes with padding), then `sendmsg()` of the
/// body with the fds; the receiver `recv()`s the header, then `recvmsg()`s
/// into a data buffer and control buffer sized from it. Flags 0, as there.
/// Written with rustix, a stack control buffer and a preallocated data
/// buffer, so it measures the design (two datagrams), not libcamera's heap
/// use (its `std::vector` control buffers).
pub struct Libcamera {
    fd: OwnedFd,
    memfds: Memfds,
}

impl End for Libcamera {
    const DGRAM: bool = true;

    fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        Ok(Self {
            fd,
            memfds: Memfds::new()?,
        })
    }

    #[inline]
    fn send(&mut self, frame: &mut [u8], nfds: usize) -> io::Result<()> {
        let data = &frame[HEADROOM..];
        let len = (data.len() as u32).to_ne_bytes();
        let header = [len[0], len[1], len[2], len[3], nfds as u8, 0, 0, 0];
        rustix::net::send(&self.fd, &header, SendFlags::empty())?;
        let iov = [IoSlice::new(data)];
        let fds = self.memfds.borrowed();
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::default();
        if nfds > 0 {
            control = SendAncillaryBuffer::new(&mut space);
            control.push(SendAncillaryMessage::ScmRights(&fds[..nfds]));
        }
        sendmsg(&self.fd, &iov, &mut control, SendFlags::empty())?;
        Ok(())
    }

    #[inline]
    fn recv(&mut self, frame: &mut [u8]) -> io::Result<(usize, usize)> {
        let buf = &mut frame[HEADROOM..];
        let mut header = [0u8; 8];
        let (got, _) = rustix::net::recv(&self.fd, &mut header[..], RecvFlags::empty())?;
        if got != header.len() {
            return Err(io::Error::other("short libcamera header"));
        }
        let data_len = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let want_fds = usize::from(header[4]).min(MAX_FDS);
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let control_len = rustix::cmsg_space!(ScmRights(want_fds));
        let mut control = RecvAncillaryBuffer::new(&mut space[..control_len]);
        let mut iov = [IoSliceMut::new(&mut buf[..data_len])];
        let msg = recvmsg(&self.fd, &mut iov, &mut control, RecvFlags::empty())?;
        let mut nfds = 0;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                for fd in fds {
                    nfds += 1;
                    drop(fd);
                }
            }
        }
        Ok((msg.bytes, nfds))
    }
}

// ---------------------------------------------------------------------------
// (5) std's UnixDatagram, bytes only.

pub struct StdDatagram {
    socket: UnixDatagram,
}

impl End for StdDatagram {
    const DGRAM: bool = true;

    fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        Ok(Self {
            socket: UnixDatagram::from(fd),
        })
    }

    #[inline]
    fn send(&mut self, frame: &mut [u8], nfds: usize) -> io::Result<()> {
        let data = &frame[HEADROOM..];
        debug_assert_eq!(
            nfds, 0,
            "std::os::unix::net::UnixDatagram carries bytes only"
        );
        self.socket.send(data)?;
        Ok(())
    }

    #[inline]
    fn recv(&mut self, frame: &mut [u8]) -> io::Result<(usize, usize)> {
        let buf = &mut frame[HEADROOM..];
        Ok((self.socket.recv(buf)?, 0))
    }
}

// ---------------------------------------------------------------------------
// (6) alternatives from the package registry.

/// `nix::sys::socket::{sendmsg, recvmsg}` with `ControlMessage::ScmRights`
/// on `SOCK_SEQPACKET`. The `cmsg_space!` buffer is allocated once and
/// reused (the best case; nix's docs allocate it per call).
pub struct Nix {
    fd: OwnedFd,
    memfds: Memfds,
    cmsg: Vec<u8>,
}

impl End for Nix {
    const DGRAM: bool = false;

    fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        Ok(Self {
            fd,
            memfds: Memfds::new()?,
            cmsg: nix::cmsg_space!([RawFd; MAX_FDS]),
        })
    }

    #[inline]
    fn send(&mut self, frame: &mut [u8], nfds: usize) -> io::Result<()> {
        let data = &frame[HEADROOM..];
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        let raw = self.memfds.raw();
        let rights = [ControlMessage::ScmRights(&raw[..nfds])];
        let cmsgs: &[ControlMessage<'_>] = if nfds > 0 { &rights } else { &[] };
        sendmsg::<()>(
            self.fd.as_raw_fd(),
            &[io::IoSlice::new(data)],
            cmsgs,
            MsgFlags::empty(),
            None,
        )?;
        Ok(())
    }

    #[inline]
    fn recv(&mut self, frame: &mut [u8]) -> io::Result<(usize, usize)> {
        let buf = &mut frame[HEADROOM..];
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
        let mut iov = [io::IoSliceMut::new(buf)];
        let msg = recvmsg::<()>(
            self.fd.as_raw_fd(),
            &mut iov,
            Some(&mut self.cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut nfds = 0;
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for fd in fds {
                    nfds += 1;
                    // SAFETY: the kernel just installed this fd for us.
                    drop(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        Ok((msg.bytes, nfds))
    }
}

/// `sendfd::{SendWithFd, RecvWithFd}` on `std::os::unix::net::UnixDatagram`
/// (its message-preserving socket type; it has no seqpacket support).
pub struct Sendfd {
    socket: UnixDatagram,
    memfds: Memfds,
}

impl End for Sendfd {
    const DGRAM: bool = true;

    fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        Ok(Self {
            socket: UnixDatagram::from(fd),
            memfds: Memfds::new()?,
        })
    }

    #[inline]
    fn send(&mut self, frame: &mut [u8], nfds: usize) -> io::Result<()> {
        let data = &frame[HEADROOM..];
        use sendfd::SendWithFd;
        let raw = self.memfds.raw();
        self.socket.send_with_fd(data, &raw[..nfds])?;
        Ok(())
    }

    #[inline]
    fn recv(&mut self, frame: &mut [u8]) -> io::Result<(usize, usize)> {
        let buf = &mut frame[HEADROOM..];
        use sendfd::RecvWithFd;
        let mut fds = [-1; MAX_FDS];
        let (bytes, nfds) = self.socket.recv_with_fd(buf, &mut fds)?;
        for &fd in &fds[..nfds] {
            // SAFETY: the kernel just installed this fd for us.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        Ok((bytes, nfds))
    }
}

/// `uds::UnixSeqpacketConn::{send_fds, recv_fds}` on `SOCK_SEQPACKET`.
pub struct Uds {
    conn: uds::UnixSeqpacketConn,
    memfds: Memfds,
}

impl End for Uds {
    const DGRAM: bool = false;

    fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        Ok(Self {
            // SAFETY: we own `fd` and hand its ownership to the connection.
            conn: unsafe { uds::UnixSeqpacketConn::from_raw_fd(fd.into_raw_fd()) },
            memfds: Memfds::new()?,
        })
    }

    #[inline]
    fn send(&mut self, frame: &mut [u8], nfds: usize) -> io::Result<()> {
        let data = &frame[HEADROOM..];
        let raw = self.memfds.raw();
        self.conn.send_fds(data, &raw[..nfds])?;
        Ok(())
    }

    #[inline]
    fn recv(&mut self, frame: &mut [u8]) -> io::Result<(usize, usize)> {
        let buf = &mut frame[HEADROOM..];
        let mut fds = [-1; MAX_FDS];
        let (bytes, _truncated, nfds) = self.conn.recv_fds(buf, &mut fds)?;
        for &fd in &fds[..nfds] {
            // SAFETY: the kernel just installed this fd for us.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        Ok((bytes, nfds))
    }
}
