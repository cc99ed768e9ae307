//! An owned, fixed-capacity message: libcamera's `Payload` without the heap.

use heapless::Vec;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::{Channel, Error, Received};

/// Up to `DATA` bytes and `FDS` owned file descriptors, stored inline.
///
/// # Example
///
/// ```
/// use ipc_unixsocket::{Channel, Payload};
///
/// let (a, b) = Channel::<2>::pair()?;
/// let mut out = Payload::<64, 2>::new();
/// out.data.extend_from_slice(b"stats").unwrap();
/// out.fds.push(rustix::io::dup(rustix::stdio::stdout())?).unwrap();
/// out.send(&a)?;
///
/// let mut back = Payload::<64, 2>::new();
/// back.recv(&b)?;
/// assert_eq!(back.data, out.data);
/// assert_eq!(back.fds.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct Payload<const DATA: usize, const FDS: usize> {
    /// The message bytes.
    pub data: Vec<u8, DATA>,
    /// The message's file descriptors, in order.
    pub fds: Vec<OwnedFd, FDS>,
}

impl<const DATA: usize, const FDS: usize> Payload<DATA, FDS> {
    /// An empty payload.
    ///
    /// # Example
    ///
    /// ```
    /// let p = ipc_unixsocket::Payload::<16, 1>::new();
    /// assert!(p.data.is_empty() && p.fds.is_empty());
    /// ```
    #[must_use]
    pub const fn new() -> Self {
        Self {
            data: Vec::new(),
            fds: Vec::new(),
        }
    }

    /// Sends the payload as one message with [`Channel::send`]. The payload
    /// keeps its fds. `FDS` must not exceed the channel's `MAX_FDS` (checked
    /// at compile time).
    ///
    /// # Errors
    ///
    /// As [`Channel::send`].
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Channel, Payload};
    ///
    /// let (a, _b) = Channel::<4>::pair()?;
    /// Payload::<8, 4>::new().send(&a)?;
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn send<const MAX_FDS: usize>(&self, channel: &Channel<MAX_FDS>) -> Result<(), Error> {
        const {
            assert!(
                FDS <= MAX_FDS,
                "payload holds more fds than the channel carries"
            )
        };
        channel.send(&self.data, &self.borrowed_fds())
    }

    /// Replaces the payload with the next message, blocking until one
    /// arrives ([`Channel::recv`]). On error the payload is left empty.
    ///
    /// # Errors
    ///
    /// As [`Channel::recv`].
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Channel, Payload};
    ///
    /// let (a, b) = Channel::<1>::pair()?;
    /// a.send(b"hi", &[])?;
    /// let mut p = Payload::<8, 1>::new();
    /// p.recv(&b)?;
    /// assert_eq!(&p.data[..], b"hi");
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn recv(&mut self, channel: &Channel<FDS>) -> Result<Received, Error> {
        self.fill(|data, fds| channel.recv(data, fds))
    }

    /// Like [`recv`](Self::recv), but returns [`Error::WouldBlock`] at once
    /// when nothing is queued ([`Channel::try_recv`]).
    ///
    /// # Errors
    ///
    /// As [`Channel::try_recv`].
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Channel, Error, Payload};
    ///
    /// let (_a, b) = Channel::<1>::pair()?;
    /// let mut p = Payload::<8, 1>::new();
    /// assert_eq!(p.try_recv(&b), Err(Error::WouldBlock));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn try_recv(&mut self, channel: &Channel<FDS>) -> Result<Received, Error> {
        self.fill(|data, fds| channel.try_recv(data, fds))
    }

    fn fill(
        &mut self,
        recv: impl FnOnce(&mut [u8], &mut Vec<OwnedFd, FDS>) -> Result<Received, Error>,
    ) -> Result<Received, Error> {
        // Cannot fail: the length equals the capacity.
        let _ = self.data.resize(DATA, 0);
        let got = recv(&mut self.data, &mut self.fds);
        self.data.truncate(got.map_or(0, |got| got.data_len));
        got
    }

    fn borrowed_fds(&self) -> Vec<BorrowedFd<'_>, FDS> {
        let mut borrowed = Vec::new();
        for fd in &self.fds {
            // Cannot fail: both vectors have capacity FDS.
            let _ = borrowed.push(fd.as_fd());
        }
        borrowed
    }
}
