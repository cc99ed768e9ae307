//! Typed calls over a [`Channel`] (feature `calls`): requests
//! and replies matched by cookie, events, deadlines, and fds referenced from
//! inside the message, with Rust types serialized by [postcard] and no heap.
//!
//! This is what libcamera's IPA proxies do over `IPCPipeUnixSocket`. A
//! [`Protocol`] ties four serde types together (request, reply, event,
//! handler error) with a name and a version. The pipeline holds a
//! [`Caller`], the worker a [`Responder`]; each sends a hello when it is
//! made, with the name, the version and a hash of each type's schema
//! ([`Schema`], postcard-schema's), and a peer whose name, version or types
//! differ is an [`Error::ProtocolMismatch`](crate::Error) on both sides
//! before any request is handled ([`Differs`] says which types). Every
//! message is one record of wire format v1 whose data is an 8-byte
//! [`CallHeader`] and the postcard body ("calls v2", see the README), sent
//! and received as one iovec segment from buffers the caller supplies.
//!
//! An fd travels as an [`FdSlot`], its index in the record's fd list: the
//! sender [`Attach`]es borrowed fds and writes the slots into the message,
//! the receiver [`Claims`] each slot as an `OwnedFd`; whatever is not
//! claimed is closed.
//!
//! A handler fails with the protocol's own [`Protocol::Error`] type, which
//! reaches the caller typed as [`CallError::Handler`]; the crate's own
//! failures (timeouts, refusals, a dead peer) are [`CallError::Ipc`].
//!
//! # A poll loop
//!
//! A pipeline drives its frame timer and its worker from one `poll`: the
//! caller is an fd like the timer ([`AsFd`](rustix::fd::AsFd)),
//! [`Caller::until_next_deadline`] bounds the wait, and
//! [`Caller::try_incoming`] reports, without blocking, what came. A call
//! that failed (here: its worker died, or it timed out) means a new worker.
//! A thread stands in for the worker process here; it dies after two
//! frames the first time.
//!
//! ```
//! use std::time::Duration;
//! use ipc_unixsocket::{Channel, Error};
//! use ipc_unixsocket::calls::{Caller, Incoming, NoError, Protocol, Responder};
//! use rustix::event::{PollFd, PollFlags, Timespec, poll};
//! use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags};
//!
//! struct Stats;
//! impl Protocol for Stats {
//!     const NAME: &'static str = "stats";
//!     const VERSION: u32 = 1;
//!     type Request<'a> = u32; // a frame number
//!     type Reply<'a> = u32; // its statistics
//!     type Event<'a> = ();
//!     type Error<'a> = NoError;
//! }
//!
//! /// Starts a worker that answers `frames` calls, then dies.
//! fn spawn_worker(frames: usize) -> Result<Channel<0>, Error> {
//!     let (pipeline, worker) = Channel::<0>::pair()?;
//!     std::thread::spawn(move || {
//!         let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
//!         let mut responder = Responder::<Stats, 0>::new(worker, &mut out, &mut inbox)?;
//!         responder.serve(|_| Ok(0))?; // the hello
//!         for _ in 0..frames {
//!             responder.serve(|call| Ok(call.request * 10))?;
//!         }
//!         Ok::<(), Error>(())
//!     });
//!     Ok(pipeline)
//! }
//!
//! let timespec = |d: Duration| Timespec { tv_sec: d.as_secs() as _, tv_nsec: d.subsec_nanos() as _ };
//! let timer = rustix::time::timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::CLOEXEC)?;
//! let tick = Itimerspec { it_interval: timespec(Duration::from_millis(5)), it_value: timespec(Duration::from_millis(5)) };
//! rustix::time::timerfd_settime(&timer, TimerfdTimerFlags::empty(), &tick)?;
//!
//! let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
//! let (mut frame, mut done, mut restarts) = (0, Vec::new(), 0);
//! let mut lives = [2, 100].into_iter(); // frames each worker answers
//! 'worker: while done.len() < 5 {
//!     let channel = spawn_worker(lives.next().expect("a worker left"))?;
//!     let mut caller = Caller::<Stats, 0, 4>::new(channel, &mut out, &mut inbox)?;
//!     while done.len() < 5 {
//!         let wait = caller.until_next_deadline().unwrap_or(Duration::from_secs(5));
//!         let mut fds = [PollFd::new(&timer, PollFlags::IN), PollFd::new(&caller, PollFlags::IN)];
//!         match poll(&mut fds, Some(&timespec(wait))) {
//!             Ok(_) | Err(rustix::io::Errno::INTR) => {}
//!             Err(errno) => return Err(errno.into()),
//!         }
//!         if fds[0].revents().contains(PollFlags::IN) {
//!             rustix::io::read(&timer, &mut [0u8; 8])?;
//!             frame += 1;
//!             match caller.start(&frame, &[], Some(Duration::from_secs(5))) {
//!                 Ok(_cookie) => {}
//!                 Err(Error::TooManyCalls { .. }) => {} // the worker lags: skip a frame
//!                 Err(Error::Disconnected) => { restarts += 1; continue 'worker; }
//!                 Err(error) => return Err(error.into()),
//!             }
//!         }
//!         loop {
//!             match caller.try_incoming() {
//!                 Ok(Some(Incoming::Reply { reply, .. })) => done.push(reply),
//!                 Ok(Some(Incoming::Failed { .. })) | Err(Error::Disconnected) => {
//!                     restarts += 1; // its frames are lost: a new worker
//!                     continue 'worker;
//!                 }
//!                 Ok(Some(other)) => println!("{other:?}"),
//!                 Ok(None) => break,
//!                 Err(error) => return Err(error.into()),
//!             }
//!         }
//!     }
//! }
//! assert_eq!(restarts, 1);
//! assert_eq!(done.len(), 5);
//! assert!(done.iter().all(|stats| stats % 10 == 0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [postcard]: https://docs.rs/postcard

use core::fmt::{self, Debug, Display};
use core::time::Duration;

use heapless::Vec;
use rustix::event::PollFlags;
use rustix::fd::{BorrowedFd, OwnedFd};
use rustix::net::sockopt::{self, Timeout};
use serde::{Deserialize, Serialize};

use crate::channel::{discard_all, monotonic_now, wait_ready};
use crate::{Channel, Error, HEADER_LEN};

mod bytes;
mod caller;
mod responder;
mod sizes;
mod slots;
mod wire;

pub use bytes::Bytes;
pub use caller::{Caller, Cookie, Incoming};
pub use postcard::experimental::max_size::MaxSize;
/// The postcard-schema crate whose [`Schema`] the protocol's types derive.
/// The derive names `::postcard_schema`; a crate that does not depend on it
/// itself points the derive here:
///
/// ```
/// use ipc_unixsocket::calls::Schema;
///
/// #[derive(serde::Serialize, Schema)]
/// #[postcard(crate = ipc_unixsocket::calls::postcard_schema)]
/// struct Gain(u16);
/// ```
pub use postcard_schema;
pub use postcard_schema::Schema;
pub use responder::{Call, Emitter, Responder, Served};
pub use sizes::{Buffers, bound};
pub use slots::{Attach, Claims, FdSlot};
pub use wire::{CALL_HEADER_LEN, CallHeader, Differs, Hello, Kind, Rejection};

/// A protocol: the request, reply, event and error types one side sends
/// the other, with a name and a version that both ends compare in their
/// hellos, together with a hash of each type's schema: two builds whose
/// types differ (a field added, a variant renamed) and that share a name
/// and version fail their hellos ([`Error::ProtocolMismatch`] with the
/// types that differ), so a forgotten version bump is caught before any
/// request runs.
///
/// The types are serde types, usually enums, that also derive [`Schema`]
/// (postcard-schema's derive: the crate that uses it depends on
/// `postcard-schema` with its `derive` feature, without `alloc`); they may
/// borrow `&[u8]` and `&str` from the receive buffer (the lifetime `'a`),
/// so nothing is copied out of it.
///
/// # Example
///
/// ```
/// use ipc_unixsocket::calls::{FdSlot, Protocol, Schema};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize, Schema)]
/// enum Request<'a> {
///     Configure { buffers: [FdSlot; 2] },
///     Process { buffer: u32, note: &'a str },
/// }
///
/// #[derive(Debug, Serialize, Deserialize, Schema)]
/// enum Reply {
///     Configured,
///     Stats { exposure_us: u32 },
/// }
///
/// #[derive(Debug, Serialize, Deserialize, Schema)]
/// enum Event<'a> {
///     SetSensorControls { gain: u16 },
///     Metadata(&'a [u8]),
/// }
///
/// /// How a handler may fail: the caller gets it typed.
/// #[derive(Debug, Serialize, Deserialize, Schema)]
/// enum Failure {
///     NoSuchBuffer(u32),
/// }
///
/// struct Ipa;
/// impl Protocol for Ipa {
///     const NAME: &'static str = "example.ipa";
///     const VERSION: u32 = 1;
///     type Request<'a> = Request<'a>;
///     type Reply<'a> = Reply;
///     type Event<'a> = Event<'a>;
///     type Error<'a> = Failure;
/// }
/// ```
pub trait Protocol {
    /// The protocol's name, compared in the hellos.
    const NAME: &'static str;
    /// The protocol's version, compared in the hellos.
    const VERSION: u32;
    /// What the caller sends.
    type Request<'a>: Serialize + Deserialize<'a> + Debug + Schema;
    /// What the responder answers a request with.
    type Reply<'a>: Serialize + Deserialize<'a> + Debug + Schema;
    /// What the responder sends unasked.
    type Event<'a>: Serialize + Deserialize<'a> + Debug + Schema;
    /// What a handler may fail with, sent to the caller as a
    /// [`Kind::HandlerError`] record and handed over as
    /// [`CallError::Handler`]. [`NoError`] for a protocol whose handlers
    /// fail only with the crate's errors.
    type Error<'a>: Serialize + Deserialize<'a> + Debug + Schema;
    /// The largest encoded request, when the type has a bound:
    /// [`bound`]`::<Request>()` for a type that derives [`MaxSize`]. `None`
    /// (the default) for a type without one (slices, strings): its buffers
    /// are then the user's choice, and a record too large for them fails
    /// its call at once with the sizes ([`Error::Truncated`],
    /// [`Rejection::TooLarge`]). With a bound, [`Buffers`] gives the sizes
    /// and a buffer too small is refused when the end is made.
    const MAX_REQUEST: Option<usize> = None;
    /// The largest encoded reply, when the type has a bound (see
    /// [`MAX_REQUEST`](Self::MAX_REQUEST)).
    const MAX_REPLY: Option<usize> = None;
    /// The largest encoded event, when the type has a bound (see
    /// [`MAX_REQUEST`](Self::MAX_REQUEST)).
    const MAX_EVENT: Option<usize> = None;
    /// The largest encoded handler error, when the type has a bound (see
    /// [`MAX_REQUEST`](Self::MAX_REQUEST)).
    const MAX_ERROR: Option<usize> = None;
}

/// How a call failed, on both sides: the handler's own error, typed, or
/// one of the crate's. A handler returns it (`?` turns a crate [`Error`]
/// into [`CallError::Ipc`]); [`Caller::call`] returns it, and compares
/// equal to the [`Error`] it carries.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use ipc_unixsocket::{Channel, Error};
/// use ipc_unixsocket::calls::{CallError, Caller, Protocol, Responder, Schema};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize, Schema)]
/// enum Refusal { TooDark { luma: u8 } }
///
/// struct Exposure;
/// impl Protocol for Exposure {
///     const NAME: &'static str = "exposure";
///     const VERSION: u32 = 1;
///     type Request<'a> = u8; // the frame's mean luma
///     type Reply<'a> = u32; // the next exposure, in µs
///     type Event<'a> = ();
///     type Error<'a> = Refusal;
/// }
///
/// let (pipeline, worker) = Channel::<0>::pair()?;
/// let worker = std::thread::spawn(move || {
///     let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
///     let mut responder = Responder::<Exposure, 0>::new(worker, &mut out, &mut inbox)?;
///     for _ in 0..3 { // the hello, then two requests
///         responder.serve(|call| match call.request {
///             luma if luma < 10 => Err(CallError::Handler(Refusal::TooDark { luma })),
///             luma => Ok(10_000 / u32::from(luma)),
///         })?;
///     }
///     Ok::<(), Error>(())
/// });
/// let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
/// let mut caller = Caller::<Exposure, 0, 1>::new(pipeline, &mut out, &mut inbox)?;
/// let refused = caller.call(&3, &[], Duration::from_secs(5), |_, _| {});
/// assert_eq!(refused.unwrap_err(), CallError::Handler(Refusal::TooDark { luma: 3 }));
/// let (exposure, _fds) = caller
///     .call(&100, &[], Duration::from_secs(5), |_, _| {})
///     .expect("the next call works"); // `?` needs `Refusal: Display` too
/// assert_eq!(exposure, 100);
/// worker.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CallError<E> {
    /// The handler failed with the protocol's own error type.
    Handler(E),
    /// The call layer failed: timed out, refused, the peer gone, ...
    Ipc(Error),
}

impl<E> From<Error> for CallError<E> {
    fn from(error: Error) -> Self {
        Self::Ipc(error)
    }
}

impl<E> PartialEq<Error> for CallError<E> {
    fn eq(&self, other: &Error) -> bool {
        matches!(self, Self::Ipc(error) if error == other)
    }
}

impl<E: Display> Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Handler(error) => write!(f, "the handler failed: {error}"),
            Self::Ipc(error) => Display::fmt(error, f),
        }
    }
}

impl<E: Debug + Display> core::error::Error for CallError<E> {}

/// The error type of a protocol whose handlers fail only with the crate's
/// errors: it has no value, so a [`CallError<NoError>`] is always
/// [`CallError::Ipc`] and converts into [`Error`] with `?`.
///
/// # Example
///
/// ```
/// use ipc_unixsocket::{Error, calls::{CallError, NoError}};
///
/// fn timed_out() -> Result<(), CallError<NoError>> {
///     Err(Error::TimedOut.into())
/// }
/// fn caller() -> Result<(), Error> {
///     timed_out()?; // no handler error to lose
///     Ok(())
/// }
/// assert_eq!(caller(), Err(Error::TimedOut));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NoError {}

impl Schema for NoError {
    const SCHEMA: &'static postcard_schema::schema::NamedType =
        &postcard_schema::schema::NamedType {
            name: "NoError",
            ty: &postcard_schema::schema::DataModelType::Enum(&[]),
        };
}

impl Display for NoError {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

impl From<CallError<NoError>> for Error {
    fn from(error: CallError<NoError>) -> Self {
        match error {
            CallError::Ipc(error) => error,
            CallError::Handler(never) => match never {},
        }
    }
}

/// Where the body of a message starts in a frame: after the v1 header's
/// room and the call header.
const BODY: usize = HEADER_LEN + CALL_HEADER_LEN;

/// How long a receive may wait.
#[derive(Clone, Copy)]
enum Wait {
    /// Not at all.
    Now,
    /// Until this `CLOCK_MONOTONIC` instant.
    Until(Duration),
    /// For ever.
    Forever,
}

/// A record of the call layer that has arrived: its header, and the length
/// of its body, which is in the inbox at `BODY..`. Its fds are in the
/// endpoint's `fds`.
#[derive(Clone, Copy)]
struct Arrived {
    header: CallHeader,
    body_len: usize,
    /// `Some(Error::Truncated { .. })` when the record did not fit the
    /// inbox: only its first bytes (the call header) arrived, its fds are
    /// closed, and it has no body.
    too_large: Option<Error>,
}

/// What both ends share: the channel, the two buffers, the fds of the last
/// record received, what the peer's hello said, and the socket's receive
/// timeout.
struct Endpoint<'b, const MAX_FDS: usize> {
    channel: Channel<MAX_FDS>,
    out: &'b mut [u8],
    inbox: &'b mut [u8],
    fds: Vec<OwnedFd, MAX_FDS>,
    peer: Peer,
    timeout: ReceiveTimeout,
}

/// The socket's `SO_RCVTIMEO`, as this end set it.
///
/// A receive with a deadline (a `call` waiting for its reply) is one
/// blocking `recvmsg` under `SO_RCVTIMEO`, not a `poll` and then a
/// `recvmsg`: the bench measured the `poll` alone at 1.08–1.14x the
/// channel round trip, `SO_RCVTIMEO` at 1.00–1.01x. The option is set
/// only when the time left calls for another value, so a steady timeout
/// costs one `setsockopt` for the life of the caller.
///
/// The kernel counts the option in ticks (1 to 10 ms) on a timer wheel
/// that may fire up to an eighth late, while the deadline is exact. So
/// the timeout is set well inside the time left ([`Self::usable`]);
/// when it expires first, or when too little time is left for it, the
/// rest of the wait is a `poll` with the exact time left. A deadline is
/// never overshot for the option's sake.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ReceiveTimeout {
    /// Not set by this end: receives block for ever.
    Unset,
    /// Set to this.
    Set(Duration),
    /// `setsockopt` failed (a seccomp filter, say): `poll` from now on.
    Refused,
}

impl ReceiveTimeout {
    /// Two ticks of the coarsest common kernel clock (`HZ` = 100): the
    /// rounding up to a tick and a tick of timer-wheel lateness.
    const MARGIN: Duration = Duration::from_millis(30);
    /// Below this, the option is not worth a system call: `poll`.
    const SHORTEST: Duration = Duration::from_millis(1);

    /// The longest receive timeout that ends before `left` has passed:
    /// `left` less the margin, less the timer wheel's eighth.
    fn usable(left: Duration) -> Option<Duration> {
        let usable = left.checked_sub(Self::MARGIN)? / 8 * 7;
        (usable >= Self::SHORTEST).then_some(usable)
    }
}

/// What is known of the peer's protocol.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Peer {
    /// Its hello has not arrived yet.
    Unknown,
    /// Its hello named the same protocol.
    Matched,
    /// Its hello named another protocol; the error says how.
    Mismatched(Error),
}

impl<'b, const MAX_FDS: usize> Endpoint<'b, MAX_FDS> {
    /// Takes the channel and the buffers, checks them against what the
    /// protocol's bounds need (`out_min` and `inbox_min`), and sends this
    /// end's hello.
    fn new<P: Protocol>(
        channel: Channel<MAX_FDS>,
        out: &'b mut [u8],
        inbox: &'b mut [u8],
        [out_min, inbox_min]: [sizes::Needed; 2],
    ) -> Result<Self, Error> {
        for buffer in [&*out, &*inbox] {
            if buffer.len() < BODY {
                return Err(Error::NoHeaderRoom { len: buffer.len() });
            }
        }
        for (buffer, needed) in [(&*out, out_min), (&*inbox, inbox_min)] {
            if buffer.len() < needed.min() {
                return Err(Error::BufferTooSmall {
                    len: buffer.len(),
                    needed: needed.min(),
                });
            }
        }
        let mut end = Self {
            channel,
            out,
            inbox,
            fds: Vec::new(),
            peer: Peer::Unknown,
            timeout: ReceiveTimeout::Unset,
        };
        // `const`: the schema hashes are computed by the compiler, not at
        // run time in every binary (1,760 bytes of ARMv7 code otherwise).
        let len = end.encode(Kind::Hello, 0, &const { Hello::of::<P>() })?;
        // The first record on the channel: it does not wait for room (a
        // full socket here means the peer has stopped reading).
        end.send(len, &[], Wait::Now)?;
        Ok(end)
    }

    /// Gives the channel back, closing the fds of a record not yet claimed,
    /// with the receive timeout this end set taken off again.
    fn into_channel(self) -> Channel<MAX_FDS> {
        let Self {
            channel,
            mut fds,
            timeout,
            ..
        } = self;
        discard_all(&mut fds);
        if timeout != ReceiveTimeout::Unset {
            // Where it was set, the same call does not fail now (a seccomp
            // filter installed since could refuse it: documented on
            // `Caller::into_channel`).
            let _ = sockopt::set_socket_timeout(&channel, Timeout::Recv, None);
        }
        channel
    }

    /// Writes the call header and `body` (postcard) into the out buffer and
    /// returns the frame's length.
    fn encode<T: Serialize + ?Sized>(
        &mut self,
        kind: Kind,
        cookie: u32,
        body: &T,
    ) -> Result<usize, Error> {
        encode(self.out, kind, cookie, body)
    }

    /// Sends the first `len` bytes of the out buffer with `fds`, waiting
    /// for room in the socket as `wait` allows.
    fn send(&mut self, len: usize, fds: &[BorrowedFd<'_>], wait: Wait) -> Result<(), Error> {
        send(&self.channel, &mut self.out[..len], fds, wait)
    }

    /// Receives one record into the inbox and decodes its call header.
    fn receive(&mut self, wait: Wait) -> Result<Arrived, Error> {
        let got = match wait {
            Wait::Now => self.channel.try_recv_frame(self.inbox, &mut self.fds),
            Wait::Forever => self.channel.recv_frame(self.inbox, &mut self.fds),
            Wait::Until(deadline) => self.recv_until(deadline),
        };
        let (data_len, too_large) = match got {
            Ok(got) => (got.data_len, None),
            // The kernel delivered the record's first bytes (the inbox has
            // room for the call header) and the channel closed its fds:
            // the call header still says whose record it was.
            Err(error @ Error::Truncated { .. }) => (CALL_HEADER_LEN, Some(error)),
            Err(error) => return Err(error),
        };
        let data = &self.inbox[HEADER_LEN..][..data_len];
        match CallHeader::decode(data) {
            Ok(header) => Ok(Arrived {
                header,
                body_len: data_len - CALL_HEADER_LEN,
                too_large,
            }),
            Err(error) => {
                discard_all(&mut self.fds);
                Err(too_large.unwrap_or(error))
            }
        }
    }

    /// Waits for a record until `deadline`: a blocking receive under
    /// `SO_RCVTIMEO` while enough time is left (see [`ReceiveTimeout`]),
    /// then `poll` and a non-blocking receive. (An end waiting with a
    /// deadline has usually just sent a request, so its reply is not there
    /// yet: polling first saves the receive that would find nothing.)
    fn recv_until(&mut self, deadline: Duration) -> Result<crate::Received, Error> {
        loop {
            let left = deadline.saturating_sub(monotonic_now());
            if left.is_zero() {
                return Err(Error::TimedOut);
            }
            if self.set_timeout_within(left) {
                // The option's expiry and a signal are both `WouldBlock`:
                // the time left is computed again.
                match self.channel.recv_frame_timed(self.inbox, &mut self.fds) {
                    Err(Error::WouldBlock) => continue,
                    done => return done,
                }
            }
            wait_ready(&self.channel, PollFlags::IN, Some(deadline))?;
            match self.channel.try_recv_frame(self.inbox, &mut self.fds) {
                Err(Error::WouldBlock) => {}
                done => return done,
            }
        }
    }

    /// Makes the socket's receive timeout end within `left` (setting it if
    /// the one set is too long, or under half of what could be used);
    /// false when a `poll` must wait instead.
    fn set_timeout_within(&mut self, left: Duration) -> bool {
        let Some(usable) = ReceiveTimeout::usable(left) else {
            return false;
        };
        match self.timeout {
            ReceiveTimeout::Refused => false,
            ReceiveTimeout::Set(set) if set <= usable && set >= usable / 2 => true,
            _ => {
                // Three quarters: a steady timeout finds it usable again on
                // the next call, whose time left differs by microseconds.
                let set = usable / 4 * 3;
                self.timeout =
                    match sockopt::set_socket_timeout(&self.channel, Timeout::Recv, Some(set)) {
                        Ok(()) => ReceiveTimeout::Set(set),
                        Err(_) => ReceiveTimeout::Refused,
                    };
                self.timeout != ReceiveTimeout::Refused
            }
        }
    }

    /// The body of the record that arrived last.
    fn body(&self, arrived: Arrived) -> &[u8] {
        &self.inbox[BODY..][..arrived.body_len]
    }

    /// The fds of the record that arrived last, to be claimed.
    fn claims(&mut self) -> Claims<MAX_FDS> {
        Claims::from(core::mem::take(&mut self.fds))
    }

    /// Checks the peer's hello, remembers the outcome and returns it.
    fn hello<P: Protocol>(&mut self, arrived: Arrived) -> Result<(), Error> {
        discard_all(&mut self.fds);
        let unreadable = Peer::Mismatched(Error::ProtocolMismatch {
            same_name: false,
            peer_version: 0,
            differs: Differs::NONE,
        });
        // A hello that does not fit the inbox cannot be checked: that is a
        // failure of the protocol, not something to pass over. So is a
        // hello of "calls v1", without the schema hashes.
        let outcome = match arrived.too_large {
            Some(_) => unreadable,
            None => match decode_hello(self.body(arrived)) {
                Ok(Hello {
                    name,
                    version,
                    schemas,
                }) if name == P::NAME && version == P::VERSION => {
                    let differs = Differs::between(&const { Hello::of::<P>() }.schemas, &schemas);
                    if differs == Differs::NONE {
                        Peer::Matched
                    } else {
                        Peer::Mismatched(Error::ProtocolMismatch {
                            same_name: true,
                            peer_version: version,
                            differs,
                        })
                    }
                }
                Ok(Hello { name, version, .. }) => Peer::Mismatched(Error::ProtocolMismatch {
                    same_name: name == P::NAME,
                    peer_version: version,
                    differs: Differs::NONE,
                }),
                Err(_) => unreadable,
            },
        };
        self.peer = outcome;
        match outcome {
            Peer::Mismatched(error) => Err(error),
            _ => Ok(()),
        }
    }
}

/// Writes the call header and `body` (postcard) into `out` (after the v1
/// header's room) and returns the frame's length.
fn encode<T: Serialize + ?Sized>(
    out: &mut [u8],
    kind: Kind,
    cookie: u32,
    body: &T,
) -> Result<usize, Error> {
    let (head, rest) = out.split_at_mut(BODY);
    head[HEADER_LEN..].copy_from_slice(&CallHeader { kind, cookie }.encode());
    let used = postcard::to_slice(body, rest).map_err(|_| Error::EncodeFailed)?;
    Ok(BODY + used.len())
}

/// Writes an error reply for `cookie` into `out` and returns the frame's
/// length. `out` holds at least `BODY` bytes (checked when the endpoint is
/// made); a buffer of exactly `BODY` bytes gets an empty body, which the
/// caller reads as [`Rejection::Other`].
fn encode_rejection(out: &mut [u8], cookie: u32, rejection: Rejection) -> usize {
    let header = CallHeader {
        kind: Kind::ErrorReply,
        cookie,
    };
    out[HEADER_LEN..BODY].copy_from_slice(&header.encode());
    match out.get_mut(BODY) {
        Some(byte) => {
            *byte = rejection as u8;
            BODY + 1
        }
        None => BODY,
    }
}

/// Sends `frame` with `fds`, waiting for room in the socket as `wait`
/// allows (`poll` for `POLLOUT`, up to the deadline).
fn send<const MAX_FDS: usize>(
    channel: &Channel<MAX_FDS>,
    frame: &mut [u8],
    fds: &[BorrowedFd<'_>],
    wait: Wait,
) -> Result<(), Error> {
    loop {
        match channel.try_send_frame(frame, fds) {
            Err(Error::WouldBlock) => {}
            done => return done,
        }
        let deadline = match wait {
            Wait::Now => return Err(Error::WouldBlock),
            Wait::Forever => None,
            Wait::Until(deadline) => Some(deadline),
        };
        wait_ready(channel, PollFlags::OUT, deadline)?;
    }
}

/// Decodes a whole body: trailing bytes are as wrong as missing ones.
///
/// A body that does not decode is [`Error::UnknownVariant`] when `T` is an
/// enum and the body starts with a variant index past its variants (postcard
/// writes an enum as the index, a varint, then the variant's fields), and
/// [`Error::BadBody`] otherwise. postcard reports both alike, so the enum's
/// variant count is read from its `Deserialize` impl on this error path.
fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Error> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((value, [])) => Ok(value),
        Ok(_) => Err(Error::BadBody),
        Err(_) => match (variants::<T>(), postcard::take_from_bytes::<u32>(body)) {
            (Some(count), Ok((index, _))) if index as usize >= count => Err(Error::UnknownVariant),
            _ => Err(Error::BadBody),
        },
    }
}

/// Decodes a hello body as [`decode`]`::<Hello>` does (the same bodies
/// decode, to the same hello; any other is [`Error::BadBody`]), with less
/// code: postcard decodes the name and the version, and the 32 bytes that
/// must follow are the schema hashes as they are (postcard writes a `u8`
/// array as its bytes, without a length). serde's visitor for four 8-byte
/// arrays cost 0.7 KB of every worker.
fn decode_hello(body: &[u8]) -> Result<Hello<'_>, Error> {
    let Ok(((name, version), rest)) = postcard::take_from_bytes::<(&str, u32)>(body) else {
        return Err(Error::BadBody);
    };
    let (hashes, []) = rest.as_chunks::<8>() else {
        return Err(Error::BadBody);
    };
    let schemas = <[[u8; 8]; 4]>::try_from(hashes).map_err(|_| Error::BadBody)?;
    Ok(Hello {
        name,
        version,
        schemas,
    })
}

/// The number of variants of `T` if it deserializes as an enum (serde's
/// derive passes the variant names to `deserialize_enum`).
fn variants<'a, T: Deserialize<'a>>() -> Option<usize> {
    match T::deserialize(VariantCount) {
        Err(Probed::Enum(count)) => Some(count),
        _ => None,
    }
}

/// A deserializer that only learns whether it is asked for an enum, and
/// how many variants that enum has.
struct VariantCount;

/// What [`VariantCount`] learned.
#[derive(Debug)]
enum Probed {
    Enum(usize),
    Other,
}

impl core::fmt::Display for Probed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("variant count probe")
    }
}

impl serde::de::StdError for Probed {}

impl serde::de::Error for Probed {
    fn custom<T: core::fmt::Display>(_: T) -> Self {
        Self::Other
    }
}

impl<'de> serde::Deserializer<'de> for VariantCount {
    type Error = Probed;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
        Err(Probed::Other)
    }

    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Probed> {
        Err(Probed::Enum(variants.len()))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Two {
        A(u8),
        B { x: u16 },
    }

    #[test]
    fn an_index_past_the_variants_is_an_unknown_variant() {
        assert_eq!(decode::<Two>(&[2]), Err(Error::UnknownVariant));
        assert_eq!(decode::<Two>(&[0x80, 0x01, 7]), Err(Error::UnknownVariant));
    }

    #[test]
    fn anything_else_that_does_not_decode_is_a_bad_body() {
        assert_eq!(decode::<Two>(&[]), Err(Error::BadBody));
        assert_eq!(decode::<Two>(&[1]), Err(Error::BadBody)); // B without x
        assert_eq!(decode::<Two>(&[0, 9, 9]), Err(Error::BadBody)); // left over
        assert_eq!(decode::<u32>(&[0xff; 6]), Err(Error::BadBody)); // not an enum
        assert_eq!(decode::<Two>(&[0, 9]), Ok(Two::A(9)));
        assert_eq!(decode::<Two>(&[1, 3]), Ok(Two::B { x: 3 })); // varint u16
    }

    #[test]
    fn a_hello_decodes_by_hand_as_postcard_decodes_it() {
        let hello = Hello {
            name: "ping",
            version: 300,
            schemas: [[1, 2, 3, 4, 5, 6, 7, 8], [9; 8], [0; 8], [0xff; 8]],
        };
        let mut buffer = [0u8; 64];
        let len = postcard::to_slice(&hello, &mut buffer).unwrap().len();
        let same = |body: &[u8]| assert_eq!(decode_hello(body), decode::<Hello<'_>>(body));
        assert_eq!(decode_hello(&buffer[..len]), Ok(hello));
        for cut in 0..=len + 1 {
            same(&buffer[..cut]); // cut short, whole, a byte left over
        }
        let mut not_utf8 = buffer;
        not_utf8[1] = 0xff;
        same(&not_utf8[..len]);
        let mut overlong = buffer;
        overlong[5..10].fill(0xff); // the version's varint runs past 5 bytes
        same(&overlong[..len]);
    }
}
