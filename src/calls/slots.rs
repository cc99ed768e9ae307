//! Fd slots: an fd travels in a typed message as its index in the same
//! record's fd list, the way libcamera's generated serializers do it.

use heapless::Vec;
use rustix::fd::{BorrowedFd, OwnedFd};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::channel::discard;

/// The index of an fd in the fd list of the record that carries the
/// message. Put one in a request, reply or event where the message needs an
/// fd; get it from [`Attach::attach`] on the sending side and turn it back
/// into the fd with [`Claims::claim`] on the receiving side.
///
/// A slot decoded from the peer is only a number until it is claimed, and
/// claiming checks it.
///
/// # Example
///
/// ```
/// use ipc_unixsocket::calls::{Attach, FdSlot};
///
/// let file = rustix::fs::memfd_create("frame", rustix::fs::MemfdFlags::CLOEXEC)?;
/// let mut fds = Attach::<2>::new();
/// let slot: FdSlot = fds.attach(rustix::fd::AsFd::as_fd(&file))?;
/// assert_eq!(slot.index(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(transparent)]
pub struct FdSlot(u8);

impl FdSlot {
    /// The slot's index in the record's fd list.
    ///
    /// # Example
    ///
    /// ```
    /// let mut fds = ipc_unixsocket::calls::Attach::<1>::new();
    /// let slot = fds.attach(rustix::stdio::stdout())?;
    /// assert_eq!(slot.index(), 0);
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    #[must_use]
    pub const fn index(self) -> u8 {
        self.0
    }
}

/// The fds a message will carry, borrowed until it is sent: each
/// [`attach`](Self::attach) appends one and returns its slot.
///
/// # Example
///
/// ```
/// use ipc_unixsocket::calls::Attach;
///
/// let mut fds = Attach::<2>::new();
/// let first = fds.attach(rustix::stdio::stdout())?;
/// let second = fds.attach(rustix::stdio::stderr())?;
/// assert_eq!((first.index(), second.index()), (0, 1));
/// assert!(fds.attach(rustix::stdio::stdin()).is_err()); // full
/// # Ok::<(), ipc_unixsocket::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct Attach<'f, const N: usize> {
    fds: Vec<BorrowedFd<'f>, N>,
}

impl<'f, const N: usize> Attach<'f, N> {
    /// No fds yet.
    ///
    /// # Example
    ///
    /// ```
    /// assert!(ipc_unixsocket::calls::Attach::<4>::new().as_slice().is_empty());
    /// ```
    #[must_use]
    pub const fn new() -> Self {
        Self { fds: Vec::new() }
    }

    /// Appends `fd` and returns the slot to write into the message.
    ///
    /// # Errors
    ///
    /// [`Error::SendTooManyFds`] when `N` fds are attached already.
    ///
    /// # Example
    ///
    /// ```
    /// let mut fds = ipc_unixsocket::calls::Attach::<1>::new();
    /// assert_eq!(fds.attach(rustix::stdio::stdout())?.index(), 0);
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn attach(&mut self, fd: BorrowedFd<'f>) -> Result<FdSlot, Error> {
        let index = self.fds.len();
        let full = Error::SendTooManyFds {
            count: index + 1,
            max: N,
        };
        let slot = u8::try_from(index).map_err(|_| full)?;
        self.fds.push(fd).map_err(|_| full)?;
        Ok(FdSlot(slot))
    }

    /// The attached fds, in slot order.
    ///
    /// # Example
    ///
    /// ```
    /// let mut fds = ipc_unixsocket::calls::Attach::<1>::new();
    /// fds.attach(rustix::stdio::stdout())?;
    /// assert_eq!(fds.as_slice().len(), 1);
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    #[must_use]
    pub fn as_slice(&self) -> &[BorrowedFd<'f>] {
        &self.fds
    }
}

/// The fds that came with a received message, to be claimed by slot.
/// Every fd not claimed is closed when the `Claims` is dropped (sockets
/// without lingering, as the channel closes the fds it does not deliver).
///
/// # Example
///
/// ```
/// use ipc_unixsocket::{Error, calls::{Attach, Claims}};
///
/// let mut attach = Attach::<2>::new();
/// let slot = attach.attach(rustix::stdio::stdout())?;
/// // What a receiver gets: the record's fds, in order.
/// let mut received = heapless::Vec::<rustix::fd::OwnedFd, 2>::new();
/// received.push(rustix::io::dup(rustix::stdio::stdout())?).unwrap();
/// let mut claims = Claims::from(received);
/// let fd = claims.claim(slot)?;
/// assert_eq!(claims.claim(slot).unwrap_err(), Error::FdSlotClaimed { slot: 0 });
/// # drop(fd);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct Claims<const N: usize> {
    fds: Vec<Option<OwnedFd>, N>,
}

impl<const N: usize> Claims<N> {
    /// Takes the fd in `slot`.
    ///
    /// # Errors
    ///
    /// [`Error::BadFdSlot`] if the record carried no fd at that index,
    /// [`Error::FdSlotClaimed`] if it was claimed before.
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Error, calls::{Attach, Claims}};
    ///
    /// let mut attach = Attach::<1>::new();
    /// let slot = attach.attach(rustix::stdio::stdout())?;
    /// let mut none = Claims::<1>::default();
    /// assert_eq!(none.claim(slot).unwrap_err(), Error::BadFdSlot { slot: 0, fds: 0 });
    /// # Ok::<(), Error>(())
    /// ```
    pub fn claim(&mut self, slot: FdSlot) -> Result<OwnedFd, Error> {
        let fds = self.fds.len();
        match self.fds.get_mut(usize::from(slot.0)) {
            None => Err(Error::BadFdSlot { slot: slot.0, fds }),
            Some(fd) => fd.take().ok_or(Error::FdSlotClaimed { slot: slot.0 }),
        }
    }

    /// Number of fds the message came with, claimed or not.
    ///
    /// # Example
    ///
    /// ```
    /// assert_eq!(ipc_unixsocket::calls::Claims::<4>::default().len(), 0);
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// True when the message came with no fd.
    ///
    /// # Example
    ///
    /// ```
    /// assert!(ipc_unixsocket::calls::Claims::<4>::default().is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }
}

impl<const N: usize> From<Vec<OwnedFd, N>> for Claims<N> {
    fn from(received: Vec<OwnedFd, N>) -> Self {
        let mut fds = Vec::new();
        for fd in received {
            // Cannot fail: both vectors have capacity N.
            let _ = fds.push(Some(fd));
        }
        Self { fds }
    }
}

impl<const N: usize> Drop for Claims<N> {
    fn drop(&mut self) {
        while let Some(fd) = self.fds.pop() {
            if let Some(fd) = fd {
                discard(fd);
            }
        }
    }
}
