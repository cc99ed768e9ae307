//! The responding side: the worker's end of a typed protocol.

use core::fmt;
use core::marker::PhantomData;
use core::time::Duration;

use rustix::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use super::sizes::{caller_inbox, caller_out};
use super::{
    Arrived, Attach, BODY, CallError, Claims, Endpoint, Kind, Peer, Protocol, Rejection, Wait,
    decode, encode, encode_rejection, send,
};
use crate::channel::{discard_all, monotonic_now};
use crate::{Channel, Error};

/// The responding end of protocol `P` over a channel: receive one request,
/// decode it, hand it with its fds to a handler, send the handler's reply;
/// and emit events at any time. For the worker's own main loop: blocking
/// [`serve`](Self::serve), non-blocking [`try_serve`](Self::try_serve),
/// and the socket for `poll` ([`AsFd`]).
///
/// A request that does not decode, names an unknown variant, or whose
/// handler fails on a bad fd slot gets an error reply (the caller sees
/// [`Error::Rejected`]), and the responder keeps serving.
///
/// # Example
///
/// See [`Caller::call`](super::Caller::call).
pub struct Responder<'b, P: Protocol, const MAX_FDS: usize> {
    end: Endpoint<'b, MAX_FDS>,
    discarded: u32,
    send_timeout: Option<Duration>,
    protocol: PhantomData<fn() -> P>,
}

/// What one [`Responder::serve`] did. New outcomes may be added
/// (`#[non_exhaustive]`): a `match` on it needs a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Served {
    /// The caller's hello named the same protocol.
    Hello,
    /// A request was handled and its reply sent.
    Replied {
        /// The request's cookie.
        cookie: u32,
    },
    /// A one-way request was handled (no reply).
    OneWay,
    /// The handler failed with the protocol's error type, which was sent
    /// to the caller (or, one-way, dropped).
    HandlerError {
        /// The request's cookie (0 for a one-way request).
        cookie: u32,
    },
    /// A request was refused with an error reply (or, one-way, dropped).
    Refused {
        /// The request's cookie (0 for a one-way request).
        cookie: u32,
        /// Why.
        rejection: Rejection,
    },
    /// A record that is not a request (or is malformed) was dropped, with
    /// its fds.
    Ignored,
}

/// What a handler returns: the reply, or why it failed (the protocol's
/// own error, or one of the crate's).
type Handled<'a, P> = Result<<P as Protocol>::Reply<'a>, CallError<<P as Protocol>::Error<'a>>>;

/// One request as a [`Responder`]'s handler gets it: the decoded request
/// (borrowing from the incoming buffer), the fds it came with, room for the
/// fds of the reply, and a way to send events before the reply.
pub struct Call<'a, 'c, 'f, P: Protocol, const MAX_FDS: usize> {
    /// The request.
    pub request: P::Request<'a>,
    /// Its fds, to be claimed by slot; those not claimed are closed when
    /// the handler returns.
    pub fds: &'c mut Claims<MAX_FDS>,
    /// The fds the reply will carry: attach them and put the slots in the
    /// reply.
    pub reply_fds: &'c mut Attach<'f, MAX_FDS>,
    /// Sends events now, before the reply (the caller, waiting for the
    /// reply, gets them first).
    pub events: Emitter<'c, P, MAX_FDS>,
}

/// Sends events of protocol `P` on a responder's channel, from inside a
/// handler ([`Call::events`]).
///
/// # Example
///
/// See [`Emitter::emit`].
pub struct Emitter<'c, P: Protocol, const MAX_FDS: usize> {
    channel: &'c Channel<MAX_FDS>,
    out: &'c mut [u8],
    timeout: Option<Duration>,
    protocol: PhantomData<fn() -> P>,
}

impl<P: Protocol, const MAX_FDS: usize> Emitter<'_, P, MAX_FDS> {
    /// Sends `event` with `fds`, waiting while the socket is full.
    ///
    /// # Errors
    ///
    /// [`Error::EncodeFailed`] if it does not fit the outgoing buffer, and
    /// the channel's send errors.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use ipc_unixsocket::Channel;
    /// use ipc_unixsocket::calls::{Caller, Protocol, Responder};
    ///
    /// struct Frames;
    /// impl Protocol for Frames {
    ///     const NAME: &'static str = "frames";
    ///     const VERSION: u32 = 1;
    ///     type Request<'a> = u32; // process this frame
    ///     type Reply<'a> = u32; // its mean luma
    ///     type Event<'a> = u16; // the gain for the next frame
    ///     type Error<'a> = ipc_unixsocket::calls::NoError;
    /// }
    ///
    /// let (pipeline, worker) = Channel::<0>::pair()?;
    /// let (mut wout, mut win) = ([0u8; 64], [0u8; 64]);
    /// let mut responder = Responder::<Frames, 0>::new(worker, &mut wout, &mut win)?;
    /// let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
    /// let mut caller = Caller::<Frames, 0, 1>::new(pipeline, &mut out, &mut inbox)?;
    /// let frame = caller.start(&7, &[], None)?;
    /// for _ in 0..2 { // the hello, then the request
    ///     responder.serve(|mut call| {
    ///         call.events.emit(&640, &[])?;
    ///         Ok(118)
    ///     })?;
    /// }
    /// let mut seen = Vec::new();
    /// while let Some(incoming) = caller.try_incoming()? {
    ///     seen.push(format!("{incoming:?}"));
    /// }
    /// assert!(seen[0].starts_with("Event { event: 640"));
    /// assert_eq!(seen[1], format!("Reply {{ cookie: {frame:?}, reply: 118, fds: 0 }}"));
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn emit(&mut self, event: &P::Event<'_>, fds: &[BorrowedFd<'_>]) -> Result<(), Error> {
        let len = encode(self.out, Kind::Event, 0, event)?;
        send(self.channel, &mut self.out[..len], fds, wait(self.timeout))
    }
}

impl<P: Protocol, const MAX_FDS: usize> fmt::Debug for Emitter<'_, P, MAX_FDS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emitter")
            .field("channel", self.channel)
            .finish_non_exhaustive()
    }
}

impl<P: Protocol, const MAX_FDS: usize> fmt::Debug for Call<'_, '_, '_, P, MAX_FDS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("request", &self.request)
            .field("fds", &self.fds.len())
            .field("reply_fds", &self.reply_fds.as_slice().len())
            .finish()
    }
}

impl<'b, P: Protocol, const MAX_FDS: usize> Responder<'b, P, MAX_FDS> {
    /// Takes the channel and two buffers (outgoing and incoming records,
    /// each at least 16 bytes) and sends the hello.
    ///
    /// The buffers must hold the largest record of the protocol that each
    /// carries: the hellos, and the bounded types' `MAX_*` sizes
    /// ([`Buffers::RESPONDER_OUT`](super::Buffers::RESPONDER_OUT) and
    /// [`Buffers::RESPONDER_INBOX`](super::Buffers::RESPONDER_INBOX)).
    /// [`with_arrays`](Self::with_arrays) checks this at compile time.
    ///
    /// # Errors
    ///
    /// [`Error::NoHeaderRoom`] for a buffer under 16 bytes,
    /// [`Error::BufferTooSmall`] for one smaller than the protocol needs,
    /// [`Error::EncodeFailed`] if the hello does not fit, or what sending
    /// it returns.
    ///
    /// # Example
    ///
    /// See [`Caller::call`](super::Caller::call).
    pub fn new(
        channel: Channel<MAX_FDS>,
        out: &'b mut [u8],
        inbox: &'b mut [u8],
    ) -> Result<Self, Error> {
        let needs = [caller_inbox::<P>(), caller_out::<P>()];
        Ok(Self {
            end: Endpoint::new::<P>(channel, out, inbox, needs)?,
            discarded: 0,
            send_timeout: None,
            protocol: PhantomData,
        })
    }

    /// [`new`](Self::new) with arrays whose sizes are checked against the
    /// protocol at compile time, like
    /// [`Caller::with_arrays`](super::Caller::with_arrays).
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
    /// use ipc_unixsocket::calls::{Buffers, NoError, Protocol, Responder, bound};
    ///
    /// struct Stats;
    /// impl Protocol for Stats {
    ///     const NAME: &'static str = "stats";
    ///     const VERSION: u32 = 1;
    ///     type Request<'a> = u32;
    ///     type Reply<'a> = [u64; 16];
    ///     type Event<'a> = ();
    ///     type Error<'a> = NoError;
    ///     const MAX_REQUEST: Option<usize> = bound::<u32>();
    ///     const MAX_REPLY: Option<usize> = bound::<[u64; 16]>();
    ///     const MAX_EVENT: Option<usize> = bound::<()>();
    ///     const MAX_ERROR: Option<usize> = bound::<NoError>();
    /// }
    ///
    /// let (_pipeline, worker) = Channel::<0>::pair()?;
    /// let mut out = [0u8; Buffers::<Stats>::RESPONDER_OUT];
    /// let mut inbox = [0u8; Buffers::<Stats>::RESPONDER_INBOX];
    /// let responder = Responder::<Stats, 0>::with_arrays(worker, &mut out, &mut inbox)?;
    /// # let _ = responder;
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn with_arrays<const OUT: usize, const INBOX: usize>(
        channel: Channel<MAX_FDS>,
        out: &'b mut [u8; OUT],
        inbox: &'b mut [u8; INBOX],
    ) -> Result<Self, Error> {
        const {
            assert!(
                OUT >= caller_inbox::<P>().min(),
                "the outgoing array is smaller than the protocol's hello or largest reply, handler error or event"
            );
            assert!(
                INBOX >= caller_out::<P>().min(),
                "the incoming array is smaller than the hello or the protocol's largest request"
            );
        }
        Self::new(channel, out, inbox)
    }

    /// Waits for the next record and handles it: a request goes to
    /// `handler` with its fds (claim them by slot; whatever is not claimed
    /// is closed when the handler returns) and an [`Attach`] for the
    /// reply's fds; the reply is sent with them.
    ///
    /// The handler returns the reply, or an error:
    /// [`CallError::Handler`] with the protocol's error type is sent to the
    /// caller as it is (without the reply's fds); of the crate's errors
    /// ([`CallError::Ipc`], what `?` makes of them), [`Error::BadFdSlot`]
    /// and [`Error::FdSlotClaimed`] (from [`Claims::claim`]) are refused as
    /// [`Rejection::BadFdSlot`], anything else as
    /// [`Rejection::HandlerFailed`].
    ///
    /// # Errors
    ///
    /// [`Error::ProtocolMismatch`] when the caller's hello names another
    /// protocol (requests after it are refused), [`Error::Disconnected`]
    /// when the caller is gone, and the channel's other errors (rejected
    /// records are [`Served::Ignored`], not errors).
    ///
    /// # Example
    ///
    /// See [`Caller::call`](super::Caller::call).
    pub fn serve<'f>(
        &mut self,
        handler: impl for<'a, 'c> FnOnce(Call<'a, 'c, 'f, P, MAX_FDS>) -> Handled<'a, P>,
    ) -> Result<Served, Error> {
        match self.end.receive(Wait::Forever) {
            Ok(arrived) => self.handle(arrived, handler),
            Err(error) => self.refuse_record(error),
        }
    }

    /// Like [`serve`](Self::serve), but returns `Ok(None)` at once when no
    /// record is queued.
    ///
    /// # Errors
    ///
    /// As [`serve`](Self::serve).
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::Channel;
    /// use ipc_unixsocket::calls::{Protocol, Responder};
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
    /// let (_pipeline, worker) = Channel::<0>::pair()?;
    /// let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
    /// let mut responder = Responder::<Ping, 0>::new(worker, &mut out, &mut inbox)?;
    /// assert_eq!(responder.try_serve(|_| Ok(()))?, None);
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn try_serve<'f>(
        &mut self,
        handler: impl for<'a, 'c> FnOnce(Call<'a, 'c, 'f, P, MAX_FDS>) -> Handled<'a, P>,
    ) -> Result<Option<Served>, Error> {
        match self.end.receive(Wait::Now) {
            Ok(arrived) => self.handle(arrived, handler).map(Some),
            Err(Error::WouldBlock) => Ok(None),
            Err(error) => self.refuse_record(error).map(Some),
        }
    }

    /// Sends `event` with `fds`, waiting while the socket is full.
    ///
    /// # Errors
    ///
    /// [`Error::EncodeFailed`] if it does not fit the outgoing buffer, and
    /// the channel's send errors.
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::Channel;
    /// use ipc_unixsocket::calls::{Protocol, Responder};
    ///
    /// struct Sensor;
    /// impl Protocol for Sensor {
    ///     const NAME: &'static str = "sensor";
    ///     const VERSION: u32 = 1;
    ///     type Request<'a> = ();
    ///     type Reply<'a> = ();
    ///     type Event<'a> = u16; // the gain for the next frame
    ///     type Error<'a> = ipc_unixsocket::calls::NoError;
    /// }
    ///
    /// let (_pipeline, worker) = Channel::<0>::pair()?;
    /// let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
    /// let mut responder = Responder::<Sensor, 0>::new(worker, &mut out, &mut inbox)?;
    /// responder.emit(&640, &[])?;
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn emit(&mut self, event: &P::Event<'_>, fds: &[BorrowedFd<'_>]) -> Result<(), Error> {
        Emitter {
            channel: &self.end.channel,
            out: self.end.out,
            timeout: self.send_timeout,
            protocol: PhantomData::<fn() -> P>,
        }
        .emit(event, fds)
    }

    /// Records dropped: malformed records, and records that are not
    /// requests or hellos.
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::Channel;
    /// use ipc_unixsocket::calls::{Protocol, Responder};
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
    /// let mut responder = Responder::<Ping, 0>::new(worker, &mut out, &mut inbox)?;
    /// pipeline.send(b"not a call", &[])?;
    /// responder.serve(|_| Ok(()))?;
    /// assert_eq!(responder.discarded(), 1);
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    #[must_use]
    pub fn discarded(&self) -> u32 {
        self.discarded
    }

    /// A record the channel rejected, or that had no call header: counted.
    /// Bounds every send of this responder (replies, error replies and
    /// events, also those of [`Call::events`]) to `timeout` each: a caller
    /// that has stopped reading then costs the worker at most that long per
    /// record, and the send fails with [`Error::TimedOut`]. `None` (the
    /// default) waits for room as long as it takes.
    ///
    /// # Example
    ///
    /// ```
    /// use core::time::Duration;
    /// use ipc_unixsocket::Channel;
    /// use ipc_unixsocket::calls::{Protocol, Responder};
    ///
    /// struct Ping;
    /// impl Protocol for Ping {
    ///     const NAME: &'static str = "ping";
    ///     const VERSION: u32 = 1;
    ///     type Request<'a> = u8;
    ///     type Reply<'a> = u8;
    ///     type Event<'a> = ();
    ///     type Error<'a> = ipc_unixsocket::calls::NoError;
    /// }
    ///
    /// let (_pipeline, worker) = Channel::<0>::pair()?;
    /// let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
    /// let mut responder = Responder::<Ping, 0>::new(worker, &mut out, &mut inbox)?;
    /// responder.set_send_timeout(Some(Duration::from_millis(200)));
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn set_send_timeout(&mut self, timeout: Option<Duration>) {
        self.send_timeout = timeout;
    }

    /// Gives the channel back, for another protocol or another owner. No
    /// system call.
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::Channel;
    /// use ipc_unixsocket::calls::{Protocol, Responder};
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
    /// let (_pipeline, worker) = Channel::<0>::pair()?;
    /// let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
    /// let responder = Responder::<Ping, 0>::new(worker, &mut out, &mut inbox)?;
    /// let worker: Channel<0> = responder.into_channel();
    /// # let _ = worker;
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    #[must_use]
    pub fn into_channel(self) -> Channel<MAX_FDS> {
        self.end.into_channel()
    }

    fn refuse_record(&mut self, error: Error) -> Result<Served, Error> {
        if error.is_rejected_record() {
            self.discarded += 1;
            Ok(Served::Ignored)
        } else {
            Err(error)
        }
    }

    fn handle<'f>(
        &mut self,
        arrived: Arrived,
        handler: impl for<'a, 'c> FnOnce(Call<'a, 'c, 'f, P, MAX_FDS>) -> Handled<'a, P>,
    ) -> Result<Served, Error> {
        let cookie = arrived.header.cookie;
        let timeout = self.send_timeout;
        match arrived.header.kind {
            Kind::Hello => return self.end.hello::<P>(arrived).map(|()| Served::Hello),
            Kind::Request => {}
            Kind::Reply | Kind::ErrorReply | Kind::Event | Kind::HandlerError => {
                discard_all(&mut self.end.fds);
                self.discarded += 1;
                return Ok(Served::Ignored);
            }
        }
        let refused = match self.end.peer {
            // Only its first bytes arrived, and its fds are closed.
            Peer::Matched if arrived.too_large.is_some() => Some(Rejection::TooLarge),
            Peer::Matched => None,
            Peer::Mismatched(_) => Some(Rejection::ProtocolMismatch),
            Peer::Unknown => Some(Rejection::Unexpected),
        };
        if let Some(rejection) = refused {
            discard_all(&mut self.end.fds);
            return refuse(&self.end.channel, self.end.out, cookie, rejection, timeout);
        }
        let mut claims = self.end.claims();
        let mut attach = Attach::new();
        let Endpoint {
            channel,
            out,
            inbox,
            ..
        } = &mut self.end;
        let request = match decode::<P::Request<'_>>(&inbox[BODY..][..arrived.body_len]) {
            Ok(request) => request,
            Err(error) => {
                // The request's fds are closed before the refusal goes out.
                drop(claims);
                let rejection = match error {
                    Error::UnknownVariant => Rejection::UnknownVariant,
                    _ => Rejection::BadBody,
                };
                return refuse(channel, out, cookie, rejection, timeout);
            }
        };
        let reply = handler(Call {
            request,
            fds: &mut claims,
            reply_fds: &mut attach,
            events: Emitter {
                channel,
                out,
                timeout,
                protocol: PhantomData,
            },
        });
        // Whatever the handler did not claim is closed now.
        drop(claims);
        let reply = match reply {
            Ok(reply) => reply,
            Err(CallError::Handler(_)) if cookie == 0 => {
                return Ok(Served::HandlerError { cookie });
            }
            Err(CallError::Handler(error)) => {
                let Ok(len) = encode(out, Kind::HandlerError, cookie, &error) else {
                    return refuse(channel, out, cookie, Rejection::HandlerFailed, timeout);
                };
                send(channel, &mut out[..len], &[], wait(timeout))?;
                return Ok(Served::HandlerError { cookie });
            }
            Err(CallError::Ipc(Error::BadFdSlot { .. } | Error::FdSlotClaimed { .. })) => {
                return refuse(channel, out, cookie, Rejection::BadFdSlot, timeout);
            }
            Err(CallError::Ipc(_)) => {
                return refuse(channel, out, cookie, Rejection::HandlerFailed, timeout);
            }
        };
        if cookie == 0 {
            return Ok(Served::OneWay);
        }
        let Ok(len) = encode(out, Kind::Reply, cookie, &reply) else {
            return refuse(channel, out, cookie, Rejection::HandlerFailed, timeout);
        };
        send(channel, &mut out[..len], attach.as_slice(), wait(timeout))?;
        Ok(Served::Replied { cookie })
    }
}

/// Sends an error reply for `cookie` (none for a one-way request).
fn refuse<const MAX_FDS: usize>(
    channel: &Channel<MAX_FDS>,
    out: &mut [u8],
    cookie: u32,
    rejection: Rejection,
    timeout: Option<Duration>,
) -> Result<Served, Error> {
    if cookie != 0 {
        let len = encode_rejection(out, cookie, rejection);
        send(channel, &mut out[..len], &[], wait(timeout))?;
    }
    Ok(Served::Refused { cookie, rejection })
}

impl<P: Protocol, const MAX_FDS: usize> fmt::Debug for Responder<'_, P, MAX_FDS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("protocol", &P::NAME)
            .field("version", &P::VERSION)
            .field("channel", &self.end.channel)
            .field("discarded", &self.discarded)
            .finish_non_exhaustive()
    }
}

impl<P: Protocol, const MAX_FDS: usize> AsFd for Responder<'_, P, MAX_FDS> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.end.channel.as_fd()
    }
}

impl<P: Protocol, const MAX_FDS: usize> AsRawFd for Responder<'_, P, MAX_FDS> {
    fn as_raw_fd(&self) -> RawFd {
        self.end.channel.as_raw_fd()
    }
}

/// How long a send may wait for room: until `timeout` from now, or for
/// ever.
fn wait(timeout: Option<Duration>) -> Wait {
    timeout
        .and_then(|timeout| monotonic_now().checked_add(timeout))
        .map_or(Wait::Forever, Wait::Until)
}
