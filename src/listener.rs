//! Named sockets: a [`Listener`] that accepts many clients on a filesystem
//! path or a Linux abstract name, each connection a [`Channel`] with the
//! client's credentials; and the client side, [`Channel::connect`] and its
//! variants.
//!
//! The client side lives here rather than in `channel.rs` so that every rule
//! about socket names (paths, abstract names, their length) is written once,
//! next to the listener that binds them.

use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;

use rustix::event::{PollFd, PollFlags, poll};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, Stat, chmodat, fchmod, fstat, lstat};
use rustix::fs::{openat, unlink};
use rustix::io::{Errno, retry_on_intr};
use rustix::net::sockopt::{self, Timeout};
use rustix::net::{
    AddressFamily, SocketAddrUnix, SocketFlags, SocketType, accept_with, bind, connect, listen,
    socket_with,
};
use rustix::path::{Arg, DecInt};

use crate::channel::{Channel, monotonic_now};
use crate::header::MAX_FDS_PER_MESSAGE;
use crate::{Credentials, Error};

/// The `listen` backlog: connections the kernel queues before `accept`.
/// The kernel caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 128;

/// A connection [`Listener::accept`] admitted: the channel to the client and
/// the client's credentials.
///
/// # Example
///
/// ```
/// use ipc_unixsocket::{Accepted, Channel, Listener};
///
/// let name = format!("ipc-doc-accepted-{}", std::process::id());
/// let listener = Listener::<1>::bind_abstract(name.as_bytes())?;
/// let _client = Channel::<1>::connect_abstract(name.as_bytes())?;
/// let Accepted { channel, peer } = listener.accept()?;
/// assert_eq!(peer.pid, Some(rustix::process::getpid()));
/// # drop(channel);
/// # Ok::<(), ipc_unixsocket::Error>(())
/// ```
#[derive(Debug)]
pub struct Accepted<const MAX_FDS: usize> {
    /// The daemon's end of the connection.
    pub channel: Channel<MAX_FDS>,
    /// The pid, uid and gid of the process that called `connect`, as the
    /// kernel recorded them at that moment (`SO_PEERCRED`). The uid and gid
    /// are reliable; the pid may belong to another process by the time you
    /// read it if the client has exited.
    pub peer: Credentials,
}

/// A listening `AF_UNIX` `SOCK_SEQPACKET` socket bound to a filesystem path
/// or a Linux abstract name; every connection it accepts is a
/// [`Channel<MAX_FDS>`](Channel) together with the client's credentials.
///
/// The listening socket is close-on-exec and non-blocking: [`accept`]
/// waits with `poll`, and [`try_accept`] returns [`Error::WouldBlock`] on an
/// empty queue, so a `poll` loop that watches the listener (it implements
/// [`AsFd`]) never blocks in `accept` when a client gave up in between.
///
/// A policy decides who is admitted: [`accept_with`] and
/// [`try_accept_with`] take a closure that sees each client's credentials;
/// a refused client's connection is closed at once, without a byte read
/// from it, counted ([`refused`]) and logged.
///
/// On drop, a listener bound to a path removes its socket file, but only if
/// the file at the path is still the one it created (same device and inode).
///
/// `MAX_FDS` is the accepted channels' `MAX_FDS`, at most 253.
///
/// [`accept`]: Listener::accept
/// [`try_accept`]: Listener::try_accept
/// [`accept_with`]: Listener::accept_with
/// [`try_accept_with`]: Listener::try_accept_with
/// [`refused`]: Listener::refused
///
/// # Example
///
/// ```
/// use ipc_unixsocket::{Channel, Listener, Mode};
///
/// let dir = std::env::temp_dir().join(format!("ipc-doc-listener-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("camera.sock");
/// let daemon = Listener::<4>::bind(&path, Mode::from_raw_mode(0o600))?;
///
/// let client = Channel::<4>::connect(&path)?;
/// let accepted = daemon.accept()?;
/// client.send(b"subscribe", &[])?;
/// let mut data = [0u8; 16];
/// let mut fds = heapless::Vec::<rustix::fd::OwnedFd, 4>::new();
/// let got = accepted.channel.recv(&mut data, &mut fds)?;
/// assert_eq!(&data[..got.data_len], b"subscribe");
///
/// drop(daemon); // removes camera.sock
/// assert!(!path.exists());
/// # std::fs::remove_dir(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Listener<const MAX_FDS: usize> {
    fd: OwnedFd,
    file: Option<SocketFile>,
    refused: AtomicUsize,
}

/// The socket file a path-bound listener created, to be removed on drop.
#[derive(Debug)]
struct SocketFile {
    addr: SocketAddrUnix,
    id: (u64, u64),
}

impl<const MAX_FDS: usize> Listener<MAX_FDS> {
    /// Binds a listener to the filesystem path `path`, whose socket file
    /// gets the permission bits `mode` whatever the process's umask.
    ///
    /// Makes `socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC |
    /// SOCK_NONBLOCK)`, `fchmod(mode)` on the socket before `bind` (the
    /// kernel creates the file with those bits less the umask, so it is
    /// never more open than `mode`), `bind`, then, if the umask took bits
    /// away, a `chmod` of the new file, and only then `listen` (backlog
    /// 128): nobody can connect before the file has its final mode. The
    /// `chmod` goes through an `O_PATH | O_NOFOLLOW` fd checked to be the
    /// socket file just created, so it never follows a symbolic link
    /// someone put in its place: `fchmodat2(fd, "", AT_EMPTY_PATH)` on Linux
    /// 6.6 and later, which needs no `/proc`; on older kernels through
    /// `/proc/self/fd/N`, so there, with `/proc` not mounted and a umask
    /// that removes requested bits, `bind` fails with `Os(ENOENT)` (set the
    /// umask to 0 around it, or mount `/proc`).
    ///
    /// If the path is taken:
    /// - by a socket file nobody listens on (a daemon died without removing
    ///   it: a probe `connect` is refused with `ECONNREFUSED`), the file is
    ///   removed and the bind retried once;
    /// - by a socket a live listener holds, [`Error::AddressInUse`] (the
    ///   probe connection lands in that listener's queue and hangs up at
    ///   once);
    /// - by anything else (regular file, directory, symbolic link even to a
    ///   socket, FIFO, device), [`Error::NotASocket`]; it is never removed.
    ///
    /// The directory must not be writable by anyone you do not trust:
    /// whoever can write it can replace the socket file at any time (see
    /// the README's threat model). In particular, the socket file's
    /// identity (device and inode, by which drop removes it) is read with
    /// `lstat` right after `bind`: nothing proves that file is this
    /// listener's socket, so someone who swaps it in that moment makes drop
    /// remove their file instead (and only if it is a socket). Two daemons
    /// started at the same moment on the same stale path race; serialise
    /// their start (a lock file, the service manager) if that can happen.
    ///
    /// # Errors
    ///
    /// [`Error::NameTooLong`] if `path` does not fit a `sockaddr_un`;
    /// [`Error::AddressInUse`], [`Error::NotASocket`] as above;
    /// [`Error::Os`] for anything else (`ENOENT` for a missing directory,
    /// `EACCES`, or `EINVAL` for a path with a NUL byte).
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Error, Listener, Mode};
    ///
    /// let dir = std::env::temp_dir().join(format!("ipc-doc-bind-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("camera.sock");
    /// let first = Listener::<1>::bind(&path, Mode::from_raw_mode(0o660))?;
    /// assert_eq!(
    ///     Listener::<1>::bind(&path, Mode::from_raw_mode(0o660)).unwrap_err(),
    ///     Error::AddressInUse
    /// );
    /// # drop(first);
    /// # std::fs::remove_dir(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "listen")]
    pub fn bind(path: impl Arg, mode: Mode) -> Result<Self, Error> {
        let addr = path_addr(path)?;
        let fd = listening_socket()?;
        fchmod(&fd, mode)?;
        bind_replacing_stale(&fd, &addr)?;
        let path = path_of(&addr);
        let stat = lstat(path)?;
        let mut listener = Self::new(fd);
        if !is_socket(&stat) {
            return Err(Error::AddressInUse); // replaced in between; not ours
        }
        listener.file = Some(SocketFile {
            id: file_id(&stat),
            addr: addr.clone(),
        });
        // From here on, dropping `listener` removes the file on error.
        if stat.st_mode & 0o7777 != mode.bits() {
            set_mode(path, file_id(&stat), mode)?;
        }
        listen(&listener.fd, BACKLOG)?;
        Ok(listener)
    }

    /// Binds a listener to the Linux abstract socket name `name` (the bytes
    /// after the leading NUL of `sun_path`; no file is created).
    ///
    /// An abstract name has no permissions at all: any process in the same
    /// network namespace can connect. Use a policy
    /// ([`accept_with`](Self::accept_with)) to decide who is served.
    ///
    /// # Errors
    ///
    /// [`Error::NameTooLong`] for more than 107 bytes,
    /// [`Error::AddressInUse`] if another socket has the name,
    /// [`Error::Os`] for anything else.
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Error, Listener};
    ///
    /// let name = format!("ipc-doc-abstract-{}", std::process::id());
    /// let first = Listener::<1>::bind_abstract(name.as_bytes())?;
    /// assert_eq!(
    ///     Listener::<1>::bind_abstract(name.as_bytes()).unwrap_err(),
    ///     Error::AddressInUse
    /// );
    /// # drop(first);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn bind_abstract(name: &[u8]) -> Result<Self, Error> {
        let addr = abstract_addr(name)?;
        let fd = listening_socket()?;
        match bind(&fd, &addr) {
            Err(Errno::ADDRINUSE) => return Err(Error::AddressInUse),
            bound => bound?,
        }
        listen(&fd, BACKLOG)?;
        Ok(Self::new(fd))
    }

    fn new(fd: OwnedFd) -> Self {
        const {
            assert!(
                MAX_FDS <= MAX_FDS_PER_MESSAGE,
                "MAX_FDS must be at most 253 (SCM_MAX_FD)"
            );
        }
        Self {
            fd,
            file: None,
            refused: AtomicUsize::new(0),
        }
    }

    /// Accepts the next connection, waiting for one; every client is
    /// admitted.
    ///
    /// Same as [`accept_with(|_| true)`](Self::accept_with).
    ///
    /// # Errors
    ///
    /// As [`accept_with`](Self::accept_with).
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Channel, Listener};
    ///
    /// let name = format!("ipc-doc-accept-{}", std::process::id());
    /// let listener = Listener::<0>::bind_abstract(name.as_bytes())?;
    /// let client = Channel::<0>::connect_abstract(name.as_bytes())?;
    /// let accepted = listener.accept()?;
    /// accepted.channel.send(b"welcome", &[])?;
    /// # drop(client);
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    #[doc(alias = "accept4")]
    pub fn accept(&self) -> Result<Accepted<MAX_FDS>, Error> {
        self.accept_with(|_| true)
    }

    /// Like [`accept`](Self::accept), but returns [`Error::WouldBlock`] at
    /// once when no connection is queued.
    ///
    /// # Errors
    ///
    /// As [`try_accept_with`](Self::try_accept_with).
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Error, Listener};
    ///
    /// let name = format!("ipc-doc-try-accept-{}", std::process::id());
    /// let listener = Listener::<0>::bind_abstract(name.as_bytes())?;
    /// assert_eq!(listener.try_accept().unwrap_err(), Error::WouldBlock);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn try_accept(&self) -> Result<Accepted<MAX_FDS>, Error> {
        self.try_accept_with(|_| true)
    }

    /// Accepts the next connection that `policy` admits, waiting for one.
    ///
    /// Each queued connection is taken with `accept4(SOCK_CLOEXEC)`, and its
    /// client's credentials are read with `SO_PEERCRED` and shown to
    /// `policy`. When it returns `false` the connection is closed at once,
    /// without reading from it, the [`refused`](Self::refused) counter goes
    /// up, a `warn` is logged (with the `defmt` feature), and the next
    /// connection is considered. Waits with `poll` while the queue is
    /// empty; `EINTR` is retried.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if `accept4`, `getsockopt` or `poll` fail. At the fd
    /// limit (`EMFILE`, `ENFILE`) the connection stays queued and the
    /// listener stays readable: a `poll` loop that goes on after the error
    /// must stop watching the listener until an fd is freed (a client
    /// leaves), or it spins; `examples/camera_daemon.rs` does so. The
    /// client's pid in [`Credentials`] is `None` when it is not visible in
    /// this pid namespace; that is never an error.
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Channel, Listener};
    /// use rustix::process::getuid;
    ///
    /// let name = format!("ipc-doc-policy-{}", std::process::id());
    /// let listener = Listener::<1>::bind_abstract(name.as_bytes())?;
    /// let allowed = [getuid()];
    /// let client = Channel::<1>::connect_abstract(name.as_bytes())?;
    /// let accepted = listener.accept_with(|peer| allowed.contains(&peer.uid))?;
    /// assert_eq!(listener.refused(), 0);
    /// # drop((client, accepted));
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn accept_with(
        &self,
        mut policy: impl FnMut(&Credentials) -> bool,
    ) -> Result<Accepted<MAX_FDS>, Error> {
        loop {
            match self.try_accept_with(&mut policy) {
                Err(Error::WouldBlock) => {}
                done => return done,
            }
            let mut watch = [PollFd::new(&self.fd, PollFlags::IN)];
            match poll(&mut watch, None) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
    }

    /// Like [`accept_with`](Self::accept_with), but never waits: refuses
    /// queued connections until one is admitted, and returns
    /// [`Error::WouldBlock`] once the queue is empty.
    ///
    /// # Errors
    ///
    /// [`Error::WouldBlock`]; otherwise as
    /// [`accept_with`](Self::accept_with).
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Channel, Error, Listener};
    ///
    /// let name = format!("ipc-doc-try-policy-{}", std::process::id());
    /// let listener = Listener::<1>::bind_abstract(name.as_bytes())?;
    /// let _client = Channel::<1>::connect_abstract(name.as_bytes())?;
    /// assert_eq!(listener.try_accept_with(|_| false).unwrap_err(), Error::WouldBlock);
    /// assert_eq!(listener.refused(), 1);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn try_accept_with(
        &self,
        mut policy: impl FnMut(&Credentials) -> bool,
    ) -> Result<Accepted<MAX_FDS>, Error> {
        loop {
            let fd = match retry_on_intr(|| accept_with(&self.fd, SocketFlags::CLOEXEC)) {
                Ok(fd) => fd,
                Err(Errno::AGAIN) => return Err(Error::WouldBlock),
                Err(errno) => return Err(errno.into()),
            };
            let peer = crate::credentials::peer_credentials(&fd)?;
            if policy(&peer) {
                debug!("accept: {}", peer);
                return Ok(Accepted {
                    channel: Channel::from_fd(fd),
                    peer,
                });
            }
            drop(fd);
            self.refused.fetch_add(1, Ordering::Relaxed);
            warn!("accept: policy refused {}; closed the connection", peer);
        }
    }

    /// Number of connections the policy has refused so far (wrapping).
    ///
    /// # Example
    ///
    /// ```
    /// let name = format!("ipc-doc-refused-{}", std::process::id());
    /// let listener = ipc_unixsocket::Listener::<0>::bind_abstract(name.as_bytes())?;
    /// assert_eq!(listener.refused(), 0);
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    #[must_use]
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }
}

impl<const MAX_FDS: usize> Drop for Listener<MAX_FDS> {
    /// Removes the socket file if the path still names the file this
    /// listener created (same device and inode, still a socket).
    fn drop(&mut self) {
        if let Some(file) = &self.file {
            let path = path_of(&file.addr);
            if let Ok(stat) = lstat(path)
                && is_socket(&stat)
                && file_id(&stat) == file.id
            {
                let _ = unlink(path);
            }
        }
    }
}

impl<const MAX_FDS: usize> AsFd for Listener<MAX_FDS> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl<const MAX_FDS: usize> AsRawFd for Listener<MAX_FDS> {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The client side: connecting to a [`Listener`].
impl<const MAX_FDS: usize> Channel<MAX_FDS> {
    /// Connects to the listener at the filesystem path `path`, waiting as
    /// long as its backlog is full.
    ///
    /// Makes `socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)` and `connect`
    /// (retried on `EINTR`). A Unix-socket `connect` completes at once when
    /// the listener's queue has room; it only waits while the queue is
    /// full. Connecting needs write permission on the socket file and
    /// search permission on every directory of the path.
    ///
    /// # Errors
    ///
    /// [`Error::NameTooLong`]; [`Error::Os`] with `ENOENT` (no such file),
    /// `ECONNREFUSED` (nobody listens there), `EACCES`, or `EPROTOTYPE` (the
    /// listener is not `SOCK_SEQPACKET`).
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Channel, Error};
    /// use rustix::io::Errno;
    ///
    /// let missing = Channel::<0>::connect("/nonexistent/camera.sock");
    /// assert_eq!(missing.unwrap_err(), Error::Os(Errno::NOENT));
    /// ```
    pub fn connect(path: impl Arg) -> Result<Self, Error> {
        connect_to(&path_addr(path)?, None).map(Self::from_fd)
    }

    /// Like [`connect`](Self::connect), but to the Linux abstract socket
    /// name `name`.
    ///
    /// # Errors
    ///
    /// [`Error::NameTooLong`] for more than 107 bytes; [`Error::Os`] with
    /// `ECONNREFUSED` when nobody listens on the name.
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::{Channel, Error};
    /// use rustix::io::Errno;
    ///
    /// let nobody = Channel::<0>::connect_abstract(b"ipc-doc-nobody-listens-here");
    /// assert_eq!(nobody.unwrap_err(), Error::Os(Errno::CONNREFUSED));
    /// ```
    pub fn connect_abstract(name: &[u8]) -> Result<Self, Error> {
        connect_to(&abstract_addr(name)?, None).map(Self::from_fd)
    }

    /// Like [`connect`](Self::connect), but gives up with
    /// [`Error::TimedOut`] when the listener's backlog stays full until
    /// `timeout` has passed.
    ///
    /// The wait is the kernel's: `SO_SNDTIMEO` is set to the time left
    /// before each `connect` (a full backlog then fails with `EAGAIN` when
    /// it expires), the deadline is fixed on entry against
    /// `CLOCK_MONOTONIC` so that signals neither extend nor shorten it, and
    /// `SO_SNDTIMEO` is cleared again before the channel is returned.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect), plus [`Error::TimedOut`].
    ///
    /// # Example
    ///
    /// ```
    /// use core::time::Duration;
    /// use ipc_unixsocket::{Channel, Listener};
    ///
    /// let name = format!("ipc-doc-connect-timeout-{}", std::process::id());
    /// let path = std::env::temp_dir().join(name);
    /// let listener = Listener::<0>::bind(&path, ipc_unixsocket::Mode::from_raw_mode(0o600))?;
    /// let client = Channel::<0>::connect_timeout(&path, Duration::from_secs(1))?;
    /// # drop((client, listener));
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn connect_timeout(path: impl Arg, timeout: Duration) -> Result<Self, Error> {
        connect_to(&path_addr(path)?, Some(timeout)).map(Self::from_fd)
    }

    /// Like [`connect_abstract`](Self::connect_abstract), with a deadline as
    /// [`connect_timeout`](Self::connect_timeout) has.
    ///
    /// # Errors
    ///
    /// As [`connect_abstract`](Self::connect_abstract), plus
    /// [`Error::TimedOut`].
    ///
    /// # Example
    ///
    /// ```
    /// use core::time::Duration;
    /// use ipc_unixsocket::{Channel, Listener};
    ///
    /// let name = format!("ipc-doc-abstract-timeout-{}", std::process::id());
    /// let listener = Listener::<0>::bind_abstract(name.as_bytes())?;
    /// let client = Channel::<0>::connect_abstract_timeout(name.as_bytes(), Duration::from_secs(1))?;
    /// # drop((client, listener));
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn connect_abstract_timeout(name: &[u8], timeout: Duration) -> Result<Self, Error> {
        connect_to(&abstract_addr(name)?, Some(timeout)).map(Self::from_fd)
    }
}

/// A blocking, close-on-exec `SOCK_SEQPACKET` socket connected to `addr`,
/// waiting at most `timeout` while the listener's backlog is full.
fn connect_to(addr: &SocketAddrUnix, timeout: Option<Duration>) -> Result<OwnedFd, Error> {
    let fd = socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // No deadline at all when the timeout overflows the clock.
    let deadline = timeout.and_then(|timeout| monotonic_now().checked_add(timeout));
    loop {
        if let Some(deadline) = deadline {
            let left = deadline
                .checked_sub(monotonic_now())
                .filter(|left| !left.is_zero())
                .ok_or(Error::TimedOut)?;
            sockopt::set_socket_timeout(&fd, Timeout::Send, Some(left))?;
        }
        match connect(&fd, addr) {
            Ok(()) => break,
            // The listener's queue stayed full until SO_SNDTIMEO expired:
            // the loop sees whether the deadline has passed.
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) if deadline.is_some() => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    if deadline.is_some() {
        // The channel's sends must block, not time out.
        sockopt::set_socket_timeout(&fd, Timeout::Send, None)?;
    }
    Ok(fd)
}

fn listening_socket() -> Result<OwnedFd, Error> {
    Ok(socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?)
}

fn path_addr(path: impl Arg) -> Result<SocketAddrUnix, Error> {
    SocketAddrUnix::new(path).map_err(name_error)
}

fn abstract_addr(name: &[u8]) -> Result<SocketAddrUnix, Error> {
    SocketAddrUnix::new_abstract_name(name).map_err(name_error)
}

fn name_error(errno: Errno) -> Error {
    match errno {
        Errno::NAMETOOLONG => Error::NameTooLong,
        errno => errno.into(),
    }
}

/// The path of an address made by [`path_addr`] (never empty: an empty
/// path is a NUL byte).
fn path_of(addr: &SocketAddrUnix) -> &[u8] {
    addr.path_bytes().unwrap_or_default()
}

fn is_socket(stat: &Stat) -> bool {
    FileType::from_raw_mode(stat.st_mode) == FileType::Socket
}

/// `(st_dev, st_ino)`: a file's identity.
// `From` keeps this compiling on a target whose fields are narrower.
#[allow(clippy::useless_conversion)]
fn file_id(stat: &Stat) -> (u64, u64) {
    (u64::from(stat.st_dev), u64::from(stat.st_ino))
}

/// `bind`s `fd` to `addr`, replacing a stale socket file; refuses a live
/// listener's socket and anything that is not a socket.
fn bind_replacing_stale(fd: &OwnedFd, addr: &SocketAddrUnix) -> Result<(), Error> {
    match bind(fd, addr) {
        Err(Errno::ADDRINUSE) => {}
        bound => return Ok(bound?),
    }
    let path = path_of(addr);
    let stat = lstat(path)?;
    if !is_socket(&stat) {
        return Err(Error::NotASocket);
    }
    let probe = socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    match retry_on_intr(|| connect(&probe, addr)) {
        Err(Errno::CONNREFUSED) => {}
        // Accepted, queue full, or a listening socket of another type.
        Ok(()) | Err(Errno::AGAIN | Errno::PROTOTYPE) => return Err(Error::AddressInUse),
        Err(errno) => return Err(errno.into()),
    }
    drop(probe);
    // Remove only the file that was probed.
    let now = lstat(path)?;
    if !is_socket(&now) || file_id(&now) != file_id(&stat) {
        return Err(Error::AddressInUse);
    }
    unlink(path)?;
    debug!("bind: removed a stale socket file");
    match bind(fd, addr) {
        Err(Errno::ADDRINUSE) => Err(Error::AddressInUse),
        bound => Ok(bound?),
    }
}

/// Sets the mode of the socket file at `path`, which must still be the
/// socket with identity `id`, without following a symbolic link: through
/// an `O_PATH | O_NOFOLLOW` fd and its `/proc/self/fd` entry (what glibc's
/// `lchmod` does).
fn set_mode(path: &[u8], id: (u64, u64), mode: Mode) -> Result<(), Error> {
    let file = openat(
        CWD,
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let stat = fstat(&file)?;
    if !is_socket(&stat) || file_id(&stat) != id {
        return Err(Error::AddressInUse);
    }
    // Linux 6.6 and later change the mode of the file an `O_PATH` fd
    // refers to; older kernels need `/proc`.
    match chmod_o_path(&file, mode) {
        Err(Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP) => {}
        changed => return Ok(changed?),
    }
    let fds = openat(
        CWD,
        c"/proc/self/fd",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    chmodat(&fds, DecInt::from_fd(&file), mode, AtFlags::empty())?;
    Ok(())
}

/// `fchmodat2(fd, "", mode, AT_EMPTY_PATH)`: the mode of the file `fd` (an
/// `O_PATH` fd) refers to, without following anything. rustix has no
/// `fchmodat2`, so this is a raw `libc::syscall`; the number is 452 on every
/// architecture the crate is built for (the kernel's common table).
#[allow(unsafe_code)]
fn chmod_o_path(fd: &OwnedFd, mode: Mode) -> Result<(), Errno> {
    const SYS_FCHMODAT2: libc::c_long = 452;
    // SAFETY: fchmodat2 reads only its arguments: a live fd borrowed for
    // the call, a NUL-terminated empty path that outlives it, and two
    // integers; it writes no memory of this process.
    let rc = unsafe {
        libc::syscall(
            SYS_FCHMODAT2,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::c_uint::from(mode.bits()),
            libc::AT_EMPTY_PATH,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw_os_error(crate::credentials::errno()))
    }
}
