//! An owned, fixed-capacity message: libcamera's `Payload` without the heap.

use core::fmt;

use heapless::Vec;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::{Channel, Error, HEADER_LEN, Received};

/// A record of up to `RECORD` bytes (the 8-byte header and up to
/// `RECORD - HEADER_LEN` data bytes) and up to `FDS` owned file descriptors,
/// stored inline.
///
/// The data sits right behind room for the header, so a payload is sent with
/// [`Channel::send_frame`] and received with [`Channel::recv_frame`]: one
/// iovec segment each way, and no copy.
///
/// # Example
///
/// ```
/// use ipc_unixsocket::{Channel, HEADER_LEN, Payload};
///
/// let (a, b) = Channel::<2>::pair()?;
/// let mut out = Payload::<{ HEADER_LEN + 64 }, 2>::new();
/// out.extend_from_slice(b"stats")?;
/// out.fds.push(rustix::io::dup(rustix::stdio::stdout())?).unwrap();
/// out.send(&a)?;
///
/// let mut back = Payload::<{ HEADER_LEN + 64 }, 2>::new();
/// back.recv(&b)?;
/// assert_eq!(back.data(), b"stats");
/// assert_eq!(back.fds.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Payload<const RECORD: usize, const FDS: usize> {
    /// Header room, then the data.
    frame: [u8; RECORD],
    /// Number of data bytes behind the header room.
    data_len: usize,
    /// The message's file descriptors, in order.
    pub fds: Vec<OwnedFd, FDS>,
}

impl<const RECORD: usize, const FDS: usize> Payload<RECORD, FDS> {
    /// The most data bytes the payload holds: `RECORD - HEADER_LEN`.
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{HEADER_LEN, Payload};
    ///
    /// assert_eq!(Payload::<{ HEADER_LEN + 4096 }, 8>::DATA_CAPACITY, 4096);
    /// ```
    pub const DATA_CAPACITY: usize = RECORD - HEADER_LEN;

    /// An empty payload. `RECORD` must be at least [`HEADER_LEN`] (checked
    /// at compile time).
    ///
    /// # Example
    ///
    /// ```
    /// let p = ipc_unixsocket::Payload::<16, 1>::new();
    /// assert!(p.data().is_empty() && p.fds.is_empty());
    /// ```
    #[must_use]
    pub const fn new() -> Self {
        const {
            assert!(
                RECORD >= HEADER_LEN,
                "a payload's RECORD must have room for the 8-byte header"
            );
        }
        Self {
            frame: [0; RECORD],
            data_len: 0,
            fds: Vec::new(),
        }
    }

    /// The data bytes.
    ///
    /// # Example
    ///
    /// ```
    /// let mut p = ipc_unixsocket::Payload::<16, 0>::new();
    /// p.extend_from_slice(b"abc")?;
    /// assert_eq!(p.data(), b"abc");
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    #[must_use]
    pub fn data(&self) -> &[u8] {
        &self.frame[HEADER_LEN..][..self.data_len]
    }

    /// The data bytes, to change in place.
    ///
    /// # Example
    ///
    /// ```
    /// let mut p = ipc_unixsocket::Payload::<16, 0>::new();
    /// p.extend_from_slice(b"abc")?;
    /// p.data_mut()[0] = b'x';
    /// assert_eq!(p.data(), b"xbc");
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.frame[HEADER_LEN..][..self.data_len]
    }

    /// Appends `bytes` to the data.
    ///
    /// # Errors
    ///
    /// [`Error::SendTooLarge`] (with the length the data would have) if it
    /// would exceed [`DATA_CAPACITY`](Self::DATA_CAPACITY); the payload is
    /// unchanged.
    ///
    /// # Example
    ///
    /// ```
    /// let mut p = ipc_unixsocket::Payload::<12, 0>::new();
    /// p.extend_from_slice(b"abcd")?;
    /// assert!(p.extend_from_slice(b"e").is_err());
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let len = self.data_len + bytes.len();
        let room = self
            .frame
            .get_mut(HEADER_LEN + self.data_len..HEADER_LEN + len);
        let room = room.ok_or(Error::SendTooLarge { len })?;
        room.copy_from_slice(bytes);
        self.data_len += bytes.len();
        Ok(())
    }

    /// Empties the data; the fds stay.
    ///
    /// # Example
    ///
    /// ```
    /// let mut p = ipc_unixsocket::Payload::<16, 0>::new();
    /// p.extend_from_slice(b"abc")?;
    /// p.clear();
    /// assert!(p.data().is_empty());
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn clear(&mut self) {
        self.data_len = 0;
    }

    /// Sends the payload as one message with [`Channel::send_frame`]. The
    /// payload keeps its fds. `FDS` must not exceed the channel's `MAX_FDS`
    /// (checked at compile time).
    ///
    /// # Errors
    ///
    /// As [`Channel::send_frame`].
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Channel, Payload};
    ///
    /// let (a, _b) = Channel::<4>::pair()?;
    /// Payload::<16, 4>::new().send(&a)?;
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn send<const MAX_FDS: usize>(&mut self, channel: &Channel<MAX_FDS>) -> Result<(), Error> {
        const {
            assert!(
                FDS <= MAX_FDS,
                "payload holds more fds than the channel carries"
            )
        };
        let mut borrowed = Vec::<BorrowedFd<'_>, FDS>::new();
        for fd in &self.fds {
            // Cannot fail: both vectors have capacity FDS.
            let _ = borrowed.push(fd.as_fd());
        }
        let frame = &mut self.frame[..HEADER_LEN + self.data_len];
        channel.send_frame(frame, &borrowed)
    }

    /// Replaces the payload with the next message, blocking until one
    /// arrives ([`Channel::recv_frame`], with an fd capacity of `FDS`, which
    /// must not exceed the channel's `MAX_FDS`: checked at compile time). On
    /// error the payload is left empty.
    ///
    /// # Errors
    ///
    /// As [`Channel::recv_frame`].
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Channel, Payload};
    ///
    /// let (a, b) = Channel::<1>::pair()?;
    /// a.send(b"hi", &[])?;
    /// let mut p = Payload::<16, 1>::new();
    /// p.recv(&b)?;
    /// assert_eq!(p.data(), b"hi");
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn recv<const MAX_FDS: usize>(
        &mut self,
        channel: &Channel<MAX_FDS>,
    ) -> Result<Received, Error> {
        let got = channel.recv_frame(&mut self.frame, &mut self.fds);
        self.data_len = got.map_or(0, |got| got.data_len);
        got
    }

    /// Like [`recv`](Self::recv), but returns [`Error::WouldBlock`] at once
    /// when nothing is queued ([`Channel::try_recv_frame`]).
    ///
    /// # Errors
    ///
    /// As [`Channel::try_recv_frame`].
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Channel, Error, Payload};
    ///
    /// let (_a, b) = Channel::<1>::pair()?;
    /// let mut p = Payload::<16, 1>::new();
    /// assert_eq!(p.try_recv(&b), Err(Error::WouldBlock));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn try_recv<const MAX_FDS: usize>(
        &mut self,
        channel: &Channel<MAX_FDS>,
    ) -> Result<Received, Error> {
        let got = channel.try_recv_frame(&mut self.frame, &mut self.fds);
        self.data_len = got.map_or(0, |got| got.data_len);
        got
    }
}

impl<const RECORD: usize, const FDS: usize> Default for Payload<RECORD, FDS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const RECORD: usize, const FDS: usize> fmt::Debug for Payload<RECORD, FDS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload")
            .field("data", &self.data())
            .field("fds", &self.fds)
            .finish()
    }
}
