//! The calling side: the pipeline's end of a typed protocol.

use core::fmt;
use core::marker::PhantomData;
use core::time::Duration;

use heapless::Vec;
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use super::sizes::{caller_inbox, caller_out};
use super::{Arrived, CallError, Claims, Endpoint, Kind, Peer, Protocol, Rejection, Wait, decode};
use crate::channel::{discard_all, monotonic_now};
use crate::{Channel, Error};

/// A call in flight: its cookie and its deadline (`CLOCK_MONOTONIC`).
#[derive(Clone, Copy, Debug)]
struct Pending {
    cookie: u32,
    deadline: Option<Duration>,
}

/// The calling end of protocol `P` over a channel: blocking [`call`]s, and
/// for a `poll` main loop, calls [`start`]ed without waiting whose replies,
/// timeouts and failures come back from [`try_incoming`], together with the
/// responder's events, and can be [`cancel`]led. At most `CALLS` calls are
/// in flight at once.
///
/// The caller sends with `MSG_DONTWAIT` (or waits for room until the
/// call's deadline), so a worker that stops reading cannot block it; and
/// everything it receives is checked: replies are matched to calls by
/// cookie, a reply that comes after its call timed out is dropped and
/// counted ([`late_replies`]), and when the worker dies every call in flight
/// ends with [`Error::Disconnected`] at once.
///
/// The two buffers hold one outgoing and one incoming record each (the
/// 16 header bytes and the body); replies and events borrow from the
/// incoming one.
///
/// [`call`]: Self::call
/// [`start`]: Self::start
/// [`try_incoming`]: Self::try_incoming
/// [`cancel`]: Self::cancel
/// [`late_replies`]: Self::late_replies
///
/// # Example
///
/// See [`Caller::call`].
pub struct Caller<'b, P: Protocol, const MAX_FDS: usize, const CALLS: usize> {
    end: Endpoint<'b, MAX_FDS>,
    pending: Vec<Pending, CALLS>,
    next_cookie: u32,
    late: u32,
    discarded: u32,
    disconnected: bool,
    protocol: PhantomData<fn() -> P>,
}

/// The cookie of a call [`start`](Caller::start)ed without waiting: how
/// its reply or failure is recognised in [`Caller::try_incoming`], and how
/// it is [`cancel`](Caller::cancel)led. Dropping it unused is a warning
/// (`#[must_use]`): a started call whose cookie is lost can neither be
/// matched nor cancelled.
///
/// # Example
///
/// ```
/// use ipc_unixsocket::Channel;
/// use ipc_unixsocket::calls::{Caller, Cookie, Protocol};
///
/// struct Ping;
/// impl Protocol for Ping {
///     const NAME: &'static str = "ping";
///     const VERSION: u32 = 1;
///     type Request<'a> = ();
///     type Reply<'a> = ();
///     type Event<'a> = ();
///     type Error<'a> = ipc_unixsocket::calls::NoError;
/// }
///
/// let (pipeline, _worker) = Channel::<0>::pair()?;
/// let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
/// let mut caller = Caller::<Ping, 0, 2>::new(pipeline, &mut out, &mut inbox)?;
/// let first: Cookie = caller.start(&(), &[], None)?;
/// let second = caller.start(&(), &[], None)?;
/// assert_ne!(first, second);
/// assert_eq!(first.get(), 1); // the number on the wire
/// # Ok::<(), ipc_unixsocket::Error>(())
/// ```
///
/// A cookie dropped unused fails a crate that denies `unused_must_use`:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// # use ipc_unixsocket::{Channel, calls::{Caller, Protocol}};
/// # struct Ping;
/// # impl Protocol for Ping {
/// #     const NAME: &'static str = "ping";
/// #     const VERSION: u32 = 1;
/// #     type Request<'a> = ();
/// #     type Reply<'a> = ();
/// #     type Event<'a> = ();
/// #     type Error<'a> = ipc_unixsocket::calls::NoError;
/// # }
/// # fn main() -> Result<(), ipc_unixsocket::Error> {
/// # let (pipeline, _worker) = Channel::<0>::pair()?;
/// # let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
/// # let mut caller = Caller::<Ping, 0, 2>::new(pipeline, &mut out, &mut inbox)?;
/// caller.start(&(), &[], None)?;
/// # Ok(())
/// # }
/// ```
#[must_use = "a started call is matched and cancelled by its cookie"]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Cookie(u32);

impl Cookie {
    /// The cookie as it travels in the call header (never 0).
    ///
    /// # Example
    ///
    /// See [`Cookie`].
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call {}", self.0)
    }
}

/// What [`Caller::try_incoming`] hands back. New kinds of outcome may be
/// added (`#[non_exhaustive]`): a `match` on it needs a `_` arm.
#[non_exhaustive]
pub enum Incoming<'a, P: Protocol, const MAX_FDS: usize> {
    /// The reply to the call with this cookie, and the fds it came with.
    Reply {
        /// The call's cookie, as [`Caller::start`] returned it.
        cookie: Cookie,
        /// The reply, borrowing from the caller's incoming buffer.
        reply: P::Reply<'a>,
        /// The reply's fds, to be claimed by slot.
        fds: Claims<MAX_FDS>,
    },
    /// An event from the responder, and the fds it came with.
    Event {
        /// The event, borrowing from the caller's incoming buffer.
        event: P::Event<'a>,
        /// The event's fds, to be claimed by slot.
        fds: Claims<MAX_FDS>,
    },
    /// The handler of the call with this cookie failed with the protocol's
    /// error type (the record's fds, if any, are closed).
    HandlerError {
        /// The call's cookie.
        cookie: Cookie,
        /// The handler's error, borrowing from the caller's incoming
        /// buffer.
        error: P::Error<'a>,
    },
    /// The call with this cookie ended without a reply: its deadline
    /// passed ([`Error::TimedOut`]), the responder refused it
    /// ([`Error::Rejected`]), its reply did not decode ([`Error::BadBody`],
    /// [`Error::UnknownVariant`]), the peer speaks another protocol
    /// ([`Error::ProtocolMismatch`]), or the peer is gone
    /// ([`Error::Disconnected`]).
    Failed {
        /// The call's cookie.
        cookie: Cookie,
        /// Why it ended.
        error: Error,
    },
    /// An event arrived that did not decode as `P::Event`; its fds are
    /// closed.
    BadEvent(Error),
}

impl<P: Protocol, const MAX_FDS: usize> fmt::Debug for Incoming<'_, P, MAX_FDS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reply { cookie, reply, fds } => f
                .debug_struct("Reply")
                .field("cookie", cookie)
                .field("reply", reply)
                .field("fds", &fds.len())
                .finish(),
            Self::Event { event, fds } => f
                .debug_struct("Event")
                .field("event", event)
                .field("fds", &fds.len())
                .finish(),
            Self::HandlerError { cookie, error } => f
                .debug_struct("HandlerError")
                .field("cookie", cookie)
                .field("error", error)
                .finish(),
            Self::Failed { cookie, error } => f
                .debug_struct("Failed")
                .field("cookie", cookie)
                .field("error", error)
                .finish(),
            Self::BadEvent(error) => f.debug_tuple("BadEvent").field(error).finish(),
        }
    }
}

/// What one step of the receive loop found, before any body is decoded.
enum Step {
    /// A reply, or the handler's error ([`Kind::HandlerError`]).
    Reply {
        cookie: u32,
        arrived: Arrived,
    },
    Event(Arrived),
    BadEvent(Error),
    Failed {
        cookie: u32,
        error: Error,
    },
    Nothing,
}

impl<'b, P: Protocol, const MAX_FDS: usize, const CALLS: usize> Caller<'b, P, MAX_FDS, CALLS> {
    /// Takes the channel and two buffers (outgoing and incoming records,
    /// each at least 16 bytes) and sends the hello, without waiting for
    /// room (a fresh channel always has it).
    ///
    /// `CALLS`, the calls that may be in flight at once, must be at least 1:
    /// zero fails to compile.
    ///
    /// The buffers must hold the largest record of the protocol that each
    /// carries: the hellos, and the bounded types' `MAX_*` sizes
    /// ([`Buffers::CALLER_OUT`](super::Buffers::CALLER_OUT) and
    /// [`Buffers::CALLER_INBOX`](super::Buffers::CALLER_INBOX)).
    /// [`with_arrays`](Self::with_arrays) checks this at compile time.
    ///
    /// # Errors
    ///
    /// [`Error::NoHeaderRoom`] for a buffer under 16 bytes,
    /// [`Error::BufferTooSmall`] for one smaller than the protocol needs,
    /// [`Error::EncodeFailed`] if the hello does not fit, or what sending
    /// it returns ([`Error::WouldBlock`] if the peer has stopped reading).
    ///
    /// # Example
    ///
    /// See [`Caller::call`]. A table for no call is refused when built:
    ///
    /// ```compile_fail
    /// # use ipc_unixsocket::{Channel, calls::{Caller, Protocol}};
    /// # struct P;
    /// # impl Protocol for P {
    /// #     const NAME: &'static str = "p";
    /// #     const VERSION: u32 = 1;
    /// #     type Request<'a> = u8;
    /// #     type Reply<'a> = u8;
    /// #     type Event<'a> = u8;
    /// #     type Error<'a> = ipc_unixsocket::calls::NoError;
    /// # }
    /// let (a, _b) = Channel::<0>::pair()?;
    /// let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
    /// let caller = Caller::<P, 0, 0>::new(a, &mut out, &mut inbox)?;
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn new(
        channel: Channel<MAX_FDS>,
        out: &'b mut [u8],
        inbox: &'b mut [u8],
    ) -> Result<Self, Error> {
        const {
            assert!(
                CALLS > 0,
                "a Caller needs room for at least one call (CALLS >= 1)"
            );
        }
        let needs = [caller_out::<P>(), caller_inbox::<P>()];
        Ok(Self {
            end: Endpoint::new::<P>(channel, out, inbox, needs)?,
            pending: Vec::new(),
            next_cookie: 1,
            late: 0,
            discarded: 0,
            disconnected: false,
            protocol: PhantomData,
        })
    }

    /// [`new`](Self::new) with arrays whose sizes are checked against the
    /// protocol at compile time: an array smaller than the hello or than a
    /// bounded type's largest record (`Protocol::MAX_*`) fails to build.
    /// Size them with [`Buffers`](super::Buffers).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new), but never [`Error::BufferTooSmall`] or
    /// [`Error::NoHeaderRoom`].
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::Channel;
    /// use ipc_unixsocket::calls::{Buffers, Caller, NoError, Protocol, bound};
    ///
    /// struct Stats;
    /// impl Protocol for Stats {
    ///     const NAME: &'static str = "stats";
    ///     const VERSION: u32 = 1;
    ///     type Request<'a> = u32; // a frame number
    ///     type Reply<'a> = [u64; 16]; // its histogram
    ///     type Event<'a> = ();
    ///     type Error<'a> = NoError;
    ///     const MAX_REQUEST: Option<usize> = bound::<u32>();
    ///     const MAX_REPLY: Option<usize> = bound::<[u64; 16]>();
    ///     const MAX_EVENT: Option<usize> = bound::<()>();
    ///     const MAX_ERROR: Option<usize> = bound::<NoError>();
    /// }
    ///
    /// let (pipeline, _worker) = Channel::<0>::pair()?;
    /// let mut out = [0u8; Buffers::<Stats>::CALLER_OUT];
    /// let mut inbox = [0u8; Buffers::<Stats>::CALLER_INBOX]; // 16 + 160
    /// let caller = Caller::<Stats, 0, 1>::with_arrays(pipeline, &mut out, &mut inbox)?;
    /// # let _ = caller;
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    ///
    /// A reply that outgrows the inbox fails where it is built:
    ///
    /// ```compile_fail
    /// # use ipc_unixsocket::Channel;
    /// # use ipc_unixsocket::calls::{Caller, NoError, Protocol, bound};
    /// # struct Stats;
    /// # impl Protocol for Stats {
    /// #     const NAME: &'static str = "stats";
    /// #     const VERSION: u32 = 1;
    /// #     type Request<'a> = u32;
    /// #     type Reply<'a> = [u64; 16];
    /// #     type Event<'a> = ();
    /// #     type Error<'a> = NoError;
    /// #     const MAX_REPLY: Option<usize> = bound::<[u64; 16]>();
    /// # }
    /// # fn main() -> Result<(), ipc_unixsocket::Error> {
    /// let (pipeline, _worker) = Channel::<0>::pair()?;
    /// let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]); // 64 < 16 + 160
    /// let caller = Caller::<Stats, 0, 1>::with_arrays(pipeline, &mut out, &mut inbox)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_arrays<const OUT: usize, const INBOX: usize>(
        channel: Channel<MAX_FDS>,
        out: &'b mut [u8; OUT],
        inbox: &'b mut [u8; INBOX],
    ) -> Result<Self, Error> {
        const {
            assert!(
                OUT >= caller_out::<P>().min(),
                "the outgoing array is smaller than the protocol's hello or largest request"
            );
            assert!(
                INBOX >= caller_inbox::<P>().min(),
                "the incoming array is smaller than the hello or the protocol's largest reply, handler error or event"
            );
        }
        Self::new(channel, out, inbox)
    }

    /// Sends `request` with `fds` and waits for its reply, at most
    /// `timeout` (the deadline is fixed on entry and covers the send too).
    /// Events that arrive meanwhile go to `on_event`, in order, with their
    /// fds. The reply borrows from the incoming buffer.
    ///
    /// For one call at a time: with calls [`start`](Self::start)ed and not
    /// yet finished, it returns [`Error::CallsInFlight`] (their replies
    /// would have nowhere to go).
    ///
    /// The wait for the reply is one blocking `recvmsg` under the socket's
    /// receive timeout (`SO_RCVTIMEO`), set by a `setsockopt` only when the
    /// time left calls for another value (so a steady `timeout` sets it
    /// once), to end well inside the deadline: the kernel counts it in
    /// ticks. The deadline's last 30 ms or so, and every wait where
    /// `setsockopt` is refused (a seccomp filter), are a `ppoll` bounded by
    /// the exact time left and a non-blocking `recvmsg`. A signal never
    /// extends the wait. The option stays on the socket while the caller
    /// has it: a receive without a deadline wakes when it expires and
    /// waits again; [`into_channel`](Self::into_channel) takes it off.
    ///
    /// # Errors
    ///
    /// [`CallError::Handler`] with the protocol's error when the handler
    /// failed with it (the next call works as usual); otherwise
    /// [`CallError::Ipc`] with one of these (a `CallError` compares equal
    /// to the [`Error`] it carries, and with [`NoError`](super::NoError)
    /// it converts into [`Error`] with `?`):
    /// [`Error::TimedOut`] at the deadline, [`Error::Disconnected`] as soon
    /// as the peer is gone, [`Error::Rejected`] if the responder refused
    /// the request ([`Rejection::TooLarge`] if it did not fit the
    /// responder's inbox), [`Error::Truncated`] at once if the reply does
    /// not fit the inbox (with its length and the room there was),
    /// [`Error::ProtocolMismatch`] if the peer's hello named another
    /// protocol, did not fit the inbox, or something came before it, [`Error::BadBody`]/[`Error::UnknownVariant`] for a reply
    /// that does not decode, [`Error::EncodeFailed`] for a request that does
    /// not fit the outgoing buffer, and the channel's errors.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use ipc_unixsocket::Channel;
    /// use ipc_unixsocket::calls::{Caller, Protocol, Responder};
    /// use serde::{Deserialize, Serialize};
    ///
    /// struct Echo;
    /// impl Protocol for Echo {
    ///     const NAME: &'static str = "echo";
    ///     const VERSION: u32 = 1;
    ///     type Request<'a> = &'a str;
    ///     type Reply<'a> = &'a str;
    ///     type Event<'a> = ();
    ///     type Error<'a> = ipc_unixsocket::calls::NoError;
    /// }
    ///
    /// let (pipeline, worker) = Channel::<0>::pair()?;
    /// let worker = std::thread::spawn(move || -> Result<(), ipc_unixsocket::Error> {
    ///     let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
    ///     let mut responder = Responder::<Echo, 0>::new(worker, &mut out, &mut inbox)?;
    ///     responder.serve(|call| Ok(call.request))?; // the hello
    ///     responder.serve(|call| Ok(call.request))?; // the call
    ///     Ok(())
    /// });
    ///
    /// let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
    /// let mut caller = Caller::<Echo, 0, 4>::new(pipeline, &mut out, &mut inbox)?;
    /// let (reply, _fds) = caller.call(&"ping", &[], Duration::from_secs(5), |_, _| {})?;
    /// assert_eq!(reply, "ping");
    /// worker.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn call<'s>(
        &'s mut self,
        request: &P::Request<'_>,
        fds: &[BorrowedFd<'_>],
        timeout: Duration,
        mut on_event: impl FnMut(P::Event<'_>, Claims<MAX_FDS>),
    ) -> Result<(P::Reply<'s>, Claims<MAX_FDS>), CallError<P::Error<'s>>> {
        if !self.pending.is_empty() {
            return Err(Error::CallsInFlight.into());
        }
        // `Duration::MAX`: no deadline, and no clock read.
        let deadline = match timeout {
            Duration::MAX => None,
            timeout => monotonic_now().checked_add(timeout),
        };
        let wait = deadline.map_or(Wait::Forever, Wait::Until);
        let mine = self.send_request(request, fds, deadline, wait)?;
        let outcome = self.wait_for(mine, deadline, wait, &mut on_event);
        // Every way out of the wait, error or not, ends the call.
        self.finish(mine);
        let arrived = outcome?;
        let fds = self.end.claims();
        if arrived.header.kind == Kind::HandlerError {
            drop(fds);
            return Err(match decode(self.end.body(arrived)) {
                Ok(error) => CallError::Handler(error),
                Err(error) => CallError::Ipc(error),
            });
        }
        Ok((decode(self.end.body(arrived))?, fds))
    }

    /// Steps until the reply to `mine` arrives, the call fails, or its own
    /// `deadline` passes (checked here, whatever the table of calls holds).
    fn wait_for(
        &mut self,
        mine: u32,
        deadline: Option<Duration>,
        wait: Wait,
        on_event: &mut impl FnMut(P::Event<'_>, Claims<MAX_FDS>),
    ) -> Result<Arrived, Error> {
        loop {
            match self.step(wait)? {
                Step::Reply { cookie, arrived } if cookie == mine => return Ok(arrived),
                Step::Failed { cookie, error } if cookie == mine => return Err(error),
                Step::Event(arrived) => {
                    let fds = self.end.claims();
                    match decode(self.end.body(arrived)) {
                        Ok(event) => on_event(event, fds),
                        Err(_) => self.discarded += 1,
                    }
                }
                Step::BadEvent(_) => self.discarded += 1,
                Step::Reply { .. } | Step::Failed { .. } | Step::Nothing => {}
            }
            if deadline.is_some_and(|deadline| monotonic_now() >= deadline) {
                return Err(Error::TimedOut);
            }
        }
    }

    /// Sends `request` with `fds` as a call whose reply (or failure) will
    /// come back from [`try_incoming`](Self::try_incoming) with the
    /// returned cookie. Never blocks: a full socket is
    /// [`Error::WouldBlock`] and no call is started. `timeout` (`None` for
    /// none) is counted from now.
    ///
    /// # Errors
    ///
    /// [`Error::TooManyCalls`] with `CALLS` calls in flight,
    /// [`Error::Disconnected`] once the peer is gone, [`Error::WouldBlock`],
    /// [`Error::EncodeFailed`], and the channel's send errors.
    ///
    /// # Example
    ///
    /// See [`Caller::try_incoming`].
    pub fn start(
        &mut self,
        request: &P::Request<'_>,
        fds: &[BorrowedFd<'_>],
        timeout: Option<Duration>,
    ) -> Result<Cookie, Error> {
        if self.pending.is_full() {
            return Err(Error::TooManyCalls { max: CALLS });
        }
        let deadline = timeout.and_then(|t| monotonic_now().checked_add(t));
        self.send_request(request, fds, deadline, Wait::Now)
            .map(Cookie)
    }

    /// Ends the started call `cookie` without waiting for its reply, and
    /// returns whether it was in flight. The request has been sent and may
    /// still be handled: when its reply comes, it is dropped with its fds
    /// and counted in [`late_replies`](Self::late_replies), like the reply
    /// of a call that timed out. No system call.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use ipc_unixsocket::{Channel, Error};
    /// use ipc_unixsocket::calls::{Caller, Protocol, Responder};
    ///
    /// struct Double;
    /// impl Protocol for Double {
    ///     const NAME: &'static str = "double";
    ///     const VERSION: u32 = 1;
    ///     type Request<'a> = u32;
    ///     type Reply<'a> = u32;
    ///     type Event<'a> = ();
    ///     type Error<'a> = ipc_unixsocket::calls::NoError;
    /// }
    ///
    /// let (pipeline, worker) = Channel::<0>::pair()?;
    /// let (mut wout, mut win) = ([0u8; 64], [0u8; 64]);
    /// let mut responder = Responder::<Double, 0>::new(worker, &mut wout, &mut win)?;
    /// let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
    /// let mut caller = Caller::<Double, 0, 1>::new(pipeline, &mut out, &mut inbox)?;
    ///
    /// let slow = caller.start(&20, &[], None)?;
    /// assert!(caller.cancel(slow));
    /// assert!(!caller.cancel(slow)); // no longer in flight
    /// for _ in 0..2 { // the hello, then the cancelled request
    ///     responder.serve(|call| Ok(call.request * 2))?;
    /// }
    /// assert!(caller.try_incoming()?.is_none()); // its reply is dropped...
    /// assert_eq!(caller.late_replies(), 1); // ...and counted
    /// # Ok::<(), Error>(())
    /// ```
    pub fn cancel(&mut self, cookie: Cookie) -> bool {
        self.finish(cookie.0)
    }

    /// Gives the channel back, for another protocol or another owner.
    /// Calls in flight are abandoned: their replies, if they come, are
    /// records on the channel like any other. If a call with a deadline
    /// set the socket's receive timeout (see [`call`](Self::call)), one
    /// `setsockopt` takes it off, so the channel's blocking receives block
    /// for ever again; otherwise no system call. (Should a seccomp filter
    /// installed since refuse that `setsockopt`, the timeout stays, and a
    /// blocking receive on the channel returns [`Error::WouldBlock`] when it
    /// expires.)
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::Channel;
    /// use ipc_unixsocket::calls::{Caller, Protocol};
    ///
    /// struct Ping;
    /// impl Protocol for Ping {
    ///     const NAME: &'static str = "ping";
    ///     const VERSION: u32 = 1;
    ///     type Request<'a> = ();
    ///     type Reply<'a> = ();
    ///     type Event<'a> = ();
    ///     type Error<'a> = ipc_unixsocket::calls::NoError;
    /// }
    ///
    /// let (pipeline, worker) = Channel::<0>::pair()?;
    /// let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
    /// let caller = Caller::<Ping, 0, 1>::new(pipeline, &mut out, &mut inbox)?;
    /// let pipeline: Channel<0> = caller.into_channel();
    /// pipeline.send(b"raw again", &[])?;
    /// # let _ = worker;
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    #[must_use]
    pub fn into_channel(self) -> Channel<MAX_FDS> {
        self.end.into_channel()
    }

    /// Sends `request` with `fds` as a one-way message (cookie 0): the
    /// responder handles it and sends no reply. Never blocks.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] once the peer is gone, [`Error::WouldBlock`],
    /// [`Error::EncodeFailed`], and the channel's send errors.
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::Channel;
    /// use ipc_unixsocket::calls::{Caller, Protocol};
    ///
    /// struct Log;
    /// impl Protocol for Log {
    ///     const NAME: &'static str = "log";
    ///     const VERSION: u32 = 1;
    ///     type Request<'a> = &'a str;
    ///     type Reply<'a> = ();
    ///     type Event<'a> = ();
    ///     type Error<'a> = ipc_unixsocket::calls::NoError;
    /// }
    ///
    /// let (pipeline, _worker) = Channel::<0>::pair()?;
    /// let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
    /// let mut caller = Caller::<Log, 0, 1>::new(pipeline, &mut out, &mut inbox)?;
    /// caller.notify(&"frame 7 dropped", &[])?;
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn notify(
        &mut self,
        request: &P::Request<'_>,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), Error> {
        self.check_peer()?;
        let len = self.end.encode(Kind::Request, 0, request)?;
        self.end.send(len, fds, Wait::Now)
    }

    /// The next thing that happened, or `None` when nothing is left to
    /// report right now: a reply, an event, a handler's own error
    /// ([`Incoming::HandlerError`]), or a call that ended without a reply.
    /// Never blocks; call it until `None` each time the channel is
    /// readable or [`until_next_deadline`](Self::until_next_deadline) has
    /// passed.
    ///
    /// Replies to calls that are no longer in flight are dropped and
    /// counted; records that are not replies or events are dropped and
    /// counted ([`discarded`](Self::discarded)); their fds are closed as
    /// they are read. One `poll` drops at most 32 such records before it
    /// returns `None`, so a flood of them cannot hold the loop: the channel
    /// then stays readable and the next call goes on. A reply too large
    /// for the inbox fails its call ([`Error::Truncated`]), an event too
    /// large is [`Incoming::BadEvent`]. When the peer is gone,
    /// every call in flight comes back as [`Incoming::Failed`] with
    /// [`Error::Disconnected`], then `poll` returns that error.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] once the peer is gone and every call in
    /// flight has been reported; [`Error::ProtocolMismatch`] from the
    /// peer's hello; and the channel's errors other than rejected records.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use ipc_unixsocket::{Channel, Error};
    /// use ipc_unixsocket::calls::{Caller, Incoming, Protocol, Responder};
    ///
    /// struct Double;
    /// impl Protocol for Double {
    ///     const NAME: &'static str = "double";
    ///     const VERSION: u32 = 1;
    ///     type Request<'a> = u32;
    ///     type Reply<'a> = u32;
    ///     type Event<'a> = ();
    ///     type Error<'a> = ipc_unixsocket::calls::NoError;
    /// }
    ///
    /// let (pipeline, worker) = Channel::<0>::pair()?;
    /// let (mut wout, mut win) = ([0u8; 64], [0u8; 64]);
    /// let mut responder = Responder::<Double, 0>::new(worker, &mut wout, &mut win)?;
    /// let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
    /// let mut caller = Caller::<Double, 0, 2>::new(pipeline, &mut out, &mut inbox)?;
    ///
    /// let a = caller.start(&20, &[], Some(Duration::from_secs(5)))?;
    /// let b = caller.start(&21, &[], Some(Duration::from_secs(5)))?;
    /// for _ in 0..3 { // the hello, then both requests
    ///     responder.serve(|call| Ok(call.request * 2))?;
    /// }
    /// let mut replies = Vec::new();
    /// while let Some(incoming) = caller.try_incoming()? {
    ///     if let Incoming::Reply { cookie, reply, .. } = incoming {
    ///         replies.push((cookie, reply));
    ///     }
    /// }
    /// assert_eq!(replies, [(a, 40), (b, 42)]);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn try_incoming(&mut self) -> Result<Option<Incoming<'_, P, MAX_FDS>>, Error> {
        let found = match self.step(Wait::Now)? {
            Step::Nothing => return Ok(None),
            found => found,
        };
        let fds = self.end.claims();
        Ok(Some(match found {
            Step::Reply { cookie, arrived } if arrived.header.kind == Kind::HandlerError => {
                let cookie = Cookie(cookie);
                drop(fds);
                match decode(self.end.body(arrived)) {
                    Ok(error) => Incoming::HandlerError { cookie, error },
                    Err(error) => Incoming::Failed { cookie, error },
                }
            }
            Step::Reply { cookie, arrived } => {
                let cookie = Cookie(cookie);
                match decode(self.end.body(arrived)) {
                    Ok(reply) => Incoming::Reply { cookie, reply, fds },
                    Err(error) => Incoming::Failed { cookie, error },
                }
            }
            Step::Event(arrived) => match decode(self.end.body(arrived)) {
                Ok(event) => Incoming::Event { event, fds },
                Err(error) => Incoming::BadEvent(error),
            },
            Step::Failed { cookie, error } => Incoming::Failed {
                cookie: Cookie(cookie),
                error,
            },
            Step::BadEvent(error) => Incoming::BadEvent(error),
            Step::Nothing => return Ok(None),
        }))
    }

    /// The deadline of the call that ends first (`CLOCK_MONOTONIC`, as
    /// `clock_gettime` reads it), if any call in flight has one.
    ///
    /// # Example
    ///
    /// See [`until_next_deadline`](Self::until_next_deadline).
    #[must_use]
    pub fn next_deadline(&self) -> Option<Duration> {
        self.pending.iter().filter_map(|p| p.deadline).min()
    }

    /// How long the main loop's `poll` may wait before
    /// [`try_incoming`](Self::try_incoming) has a timeout to report: the
    /// time left until [`next_deadline`](Self::next_deadline), `None` when
    /// no call in flight has a deadline. It does not wait itself.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use ipc_unixsocket::Channel;
    /// use ipc_unixsocket::calls::{Caller, Protocol};
    ///
    /// struct Ping;
    /// impl Protocol for Ping {
    ///     const NAME: &'static str = "ping";
    ///     const VERSION: u32 = 1;
    ///     type Request<'a> = ();
    ///     type Reply<'a> = ();
    ///     type Event<'a> = ();
    ///     type Error<'a> = ipc_unixsocket::calls::NoError;
    /// }
    ///
    /// let (pipeline, _worker) = Channel::<0>::pair()?;
    /// let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
    /// let mut caller = Caller::<Ping, 0, 1>::new(pipeline, &mut out, &mut inbox)?;
    /// assert_eq!(caller.until_next_deadline(), None);
    /// let _call = caller.start(&(), &[], Some(Duration::from_millis(50)))?;
    /// assert!(caller.until_next_deadline().unwrap() <= Duration::from_millis(50));
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    #[must_use]
    pub fn until_next_deadline(&self) -> Option<Duration> {
        self.next_deadline()
            .map(|deadline| deadline.saturating_sub(monotonic_now()))
    }

    /// The old name of [`try_incoming`](Self::try_incoming), which it
    /// calls.
    ///
    /// # Errors
    ///
    /// As [`try_incoming`](Self::try_incoming).
    ///
    /// # Example
    ///
    /// See [`try_incoming`](Self::try_incoming).
    #[deprecated(
        since = "0.2.0",
        note = "renamed `try_incoming`: `poll` read as if it waited, beside `rustix::event::poll` in the same loop"
    )]
    pub fn poll(&mut self) -> Result<Option<Incoming<'_, P, MAX_FDS>>, Error> {
        self.try_incoming()
    }

    /// The old name of [`until_next_deadline`](Self::until_next_deadline).
    ///
    /// # Example
    ///
    /// See [`until_next_deadline`](Self::until_next_deadline).
    #[deprecated(
        since = "0.2.0",
        note = "renamed `until_next_deadline`: it does not wait, unlike `Channel::recv_timeout`"
    )]
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.until_next_deadline()
    }

    /// Number of calls in flight.
    ///
    /// # Example
    ///
    /// See [`until_next_deadline`](Self::until_next_deadline).
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Replies, error replies and handler errors that arrived for no call
    /// in flight (after their call timed out or was
    /// [`cancel`](Self::cancel)led, or with a cookie never used), dropped
    /// with their fds.
    ///
    /// # Example
    ///
    /// See [`until_next_deadline`](Self::until_next_deadline).
    #[must_use]
    pub fn late_replies(&self) -> u32 {
        self.late
    }

    /// Records dropped that were neither replies nor events the caller
    /// could use: malformed records, requests, and events that did not
    /// decode during a blocking [`call`](Self::call).
    ///
    /// # Example
    ///
    /// See [`until_next_deadline`](Self::until_next_deadline).
    #[must_use]
    pub fn discarded(&self) -> u32 {
        self.discarded
    }

    /// Fails at once if the peer is gone or speaks another protocol.
    fn check_peer(&self) -> Result<(), Error> {
        if self.disconnected {
            return Err(Error::Disconnected);
        }
        match self.end.peer {
            Peer::Mismatched(error) => Err(error),
            Peer::Unknown | Peer::Matched => Ok(()),
        }
    }

    /// Encodes and sends a request with a fresh cookie and records it as in
    /// flight.
    fn send_request(
        &mut self,
        request: &P::Request<'_>,
        fds: &[BorrowedFd<'_>],
        deadline: Option<Duration>,
        wait: Wait,
    ) -> Result<u32, Error> {
        self.check_peer()?;
        let cookie = self.fresh_cookie();
        let len = self.end.encode(Kind::Request, cookie, request)?;
        self.end.send(len, fds, wait)?;
        // Cannot fail: callers check that the table has room.
        let _ = self.pending.push(Pending { cookie, deadline });
        Ok(cookie)
    }

    /// A cookie that is neither 0 nor in flight.
    fn fresh_cookie(&mut self) -> u32 {
        loop {
            let cookie = self.next_cookie;
            self.next_cookie = self.next_cookie.wrapping_add(1);
            if cookie != 0 && !self.pending.iter().any(|p| p.cookie == cookie) {
                return cookie;
            }
        }
    }

    /// Removes the call with `cookie` from the table; false if none.
    fn finish(&mut self, cookie: u32) -> bool {
        match self.pending.iter().position(|p| p.cookie == cookie) {
            Some(at) => {
                self.pending.remove(at);
                true
            }
            None => false,
        }
    }

    /// One step: a call that ended (deadline, dead peer), or the next
    /// record sorted by kind, or nothing, waiting as `wait` allows. Bodies
    /// are not decoded here.
    fn step(&mut self, wait: Wait) -> Result<Step, Error> {
        // Records dropped without a word to the caller (late replies,
        // stray requests, rejected records) in this step: a non-blocking
        // step returns after this many, so a flood of them cannot hold the
        // caller's loop; the socket stays readable for the next step.
        const DROPS_PER_STEP: u32 = 32;
        let mut drops = 0;
        loop {
            if drops == DROPS_PER_STEP && matches!(wait, Wait::Now) {
                return Ok(Step::Nothing);
            }
            // A dead peer, or one that speaks another protocol, ends every
            // call in flight, one per step, and then every step.
            let ended = match self.end.peer {
                Peer::Mismatched(error) => Some(error),
                _ if self.disconnected => Some(Error::Disconnected),
                _ => None,
            };
            if let Some(error) = ended {
                return match self.pending.pop() {
                    Some(call) => Ok(Step::Failed {
                        cookie: call.cookie,
                        error,
                    }),
                    None => Err(error),
                };
            }
            if let Some(expired) = self.expire() {
                return Ok(expired);
            }
            // Wait no longer than the first deadline.
            let wait = match (wait, self.next_deadline()) {
                (Wait::Now, _) => Wait::Now,
                (Wait::Forever, Some(first)) => Wait::Until(first),
                (Wait::Until(until), Some(first)) => Wait::Until(until.min(first)),
                (wait, None) => wait,
            };
            let arrived = match self.end.receive(wait) {
                Ok(arrived) => arrived,
                Err(Error::WouldBlock) => return Ok(Step::Nothing),
                // A call whose deadline passed is reported first; else the
                // wait's own deadline passed.
                Err(Error::TimedOut) => return Ok(self.expire().unwrap_or(Step::Nothing)),
                Err(Error::Disconnected) => {
                    self.disconnected = true;
                    continue;
                }
                Err(error) if error.is_rejected_record() => {
                    self.discarded += 1;
                    drops += 1;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let cookie = arrived.header.cookie;
            if self.end.peer == Peer::Unknown && arrived.header.kind != Kind::Hello {
                // The responder says hello before anything else, and records
                // arrive in order: this peer does not speak the protocol.
                discard_all(&mut self.end.fds);
                warn!(
                    "calls: a record of kind {} before the peer's hello",
                    arrived.header.kind
                );
                self.end.peer = Peer::Mismatched(Error::ProtocolMismatch {
                    same_name: false,
                    peer_version: 0,
                    differs: super::Differs::NONE,
                });
                continue;
            }
            if let Some(error) = arrived.too_large {
                // Only the record's first bytes arrived (its fds are
                // closed): enough to tell whose it was and to say so now.
                match arrived.header.kind {
                    Kind::Reply | Kind::ErrorReply | Kind::HandlerError if self.finish(cookie) => {
                        return Ok(Step::Failed { cookie, error });
                    }
                    Kind::Reply | Kind::ErrorReply | Kind::HandlerError => self.late += 1,
                    Kind::Event => return Ok(Step::BadEvent(error)),
                    Kind::Hello => {
                        let _ = self.end.hello::<P>(arrived);
                    }
                    Kind::Request => self.discarded += 1,
                }
                drops += 1;
                continue;
            }
            match arrived.header.kind {
                // A mismatch is reported at the top of the loop.
                Kind::Hello => {
                    let _ = self.end.hello::<P>(arrived);
                }
                Kind::Reply | Kind::ErrorReply | Kind::HandlerError if !self.finish(cookie) => {
                    discard_all(&mut self.end.fds);
                    self.late += 1;
                    drops += 1;
                }
                Kind::Reply | Kind::HandlerError => return Ok(Step::Reply { cookie, arrived }),
                Kind::ErrorReply => {
                    discard_all(&mut self.end.fds);
                    let code = self.end.body(arrived).first().copied().unwrap_or(0);
                    return Ok(Step::Failed {
                        cookie,
                        error: Error::Rejected(Rejection::from_byte(code)),
                    });
                }
                Kind::Event => return Ok(Step::Event(arrived)),
                Kind::Request => {
                    discard_all(&mut self.end.fds);
                    self.discarded += 1;
                    drops += 1;
                }
            }
        }
    }

    /// Ends the first call in flight whose deadline has passed.
    fn expire(&mut self) -> Option<Step> {
        // No clock read for a table without deadlines.
        if self.pending.iter().all(|p| p.deadline.is_none()) {
            return None;
        }
        let now = monotonic_now();
        let at = self
            .pending
            .iter()
            .position(|p| p.deadline.is_some_and(|d| d <= now))?;
        let call = self.pending.remove(at);
        Some(Step::Failed {
            cookie: call.cookie,
            error: Error::TimedOut,
        })
    }
}

impl<P: Protocol, const MAX_FDS: usize, const CALLS: usize> fmt::Debug
    for Caller<'_, P, MAX_FDS, CALLS>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("protocol", &P::NAME)
            .field("version", &P::VERSION)
            .field("channel", &self.end.channel)
            .field("in_flight", &self.pending.len())
            .field("late_replies", &self.late)
            .field("discarded", &self.discarded)
            .finish_non_exhaustive()
    }
}

impl<P: Protocol, const MAX_FDS: usize, const CALLS: usize> AsFd for Caller<'_, P, MAX_FDS, CALLS> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.end.channel.as_fd()
    }
}

impl<P: Protocol, const MAX_FDS: usize, const CALLS: usize> AsRawFd
    for Caller<'_, P, MAX_FDS, CALLS>
{
    fn as_raw_fd(&self) -> RawFd {
        self.end.channel.as_raw_fd()
    }
}
