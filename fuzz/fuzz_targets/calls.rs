//! The call layer (`ipc_unixsocket::calls`) against a hostile peer.
//!
//! Each input is a sequence of raw records that the target writes with
//! `sendmsg` (bypassing the crate's sender) from the peer's end of a socket
//! pair, one at a time, with 0 to 12 real fds each, to either
//!
//! - a [`Responder`], which handles each with `try_serve`: what it reports
//!   ([`Served`] or the error) and the record it sends back (none, a reply or
//!   an error reply or a handler error, always with the cookie of the
//!   request it answers) must
//!   be exactly what the model below predicts; then a valid request must be
//!   answered as the model says (a reply, or the refusal the junk made
//!   legitimate); or
//! - a [`Caller`] with up to 3 calls `start`ed (some with a zero timeout,
//!   the first one perhaps cancelled), drained with `try_incoming` after
//!   each record: it must deliver exactly what the
//!   model predicts, never a reply or failure for a cookie that is not in
//!   flight, never two for one cookie; then a genuine reply for every call
//!   still in flight must arrive (or, after a hang-up, every such call must
//!   fail with `Disconnected`).
//!
//! In both cases the `late_replies`/`discarded` counters must match the
//! model, every fd delivered must be the file sent in that slot, and the
//! process must hold exactly as many fds after the input as before.
//!
//! The model is written from the documentation of the call layer and the
//! wire formats: the channel's checks come from the `recv` target's oracle
//! ([`expected_outcome`]), the call header from its table in `wire.rs`, and
//! bodies are decoded with postcard directly. A record too large for the
//! inbox still shows its call header: the caller fails the call it
//! answers (`Truncated`), the responder refuses such a request
//! (`TooLarge`, after the hello); and a caller that gets any record before the peer's hello
//! takes the peer for one of another protocol.
//!
//! Input layout (every input is accepted):
//!
//! ```text
//! byte 0          flags: 0x01 fuzz a Caller (else a Responder)
//!                 0x02 the peer sends a matching hello before the junk
//!                 0x04 the peer hangs up after the junk
//!                 0x18 calls to start (Caller): (flags >> 3) & 3
//!                 0x20 the first call started has a zero timeout
//!                 0x40 the last call started has a zero timeout
//!                 0x80 the first call started is cancelled at once
//! then up to 16 records, each:
//!   byte          control: low nibble % 13 = number of fds (0..=12)
//!                 0x10 put a valid v1 header before the data
//!                 0x20 the data starts with a call header (2 more bytes:
//!                      kind, cookie; see `call_header`)
//!                 0x40 the body is a valid postcard value of the kind's
//!                      type, built with `arbitrary` from the source bytes
//!                 0x80 attach only memfds (else /dev/null at even positions)
//!   [kind byte, cookie byte]   with 0x20
//!   2 bytes       source length, u16 LE, at most 1024
//!   length bytes  the source: the body itself, or what builds it
//! ```
#![no_main]

use std::collections::BTreeSet;

use arbitrary::{Arbitrary, Unstructured};
use heapless::Vec as StackVec;
use ipc_unixsocket::calls::{
    CALL_HEADER_LEN, Call, CallError, Caller, Claims, Differs, FdSlot, Hello, Incoming, Protocol,
    Rejection, Responder, Schema, Served,
};
use ipc_unixsocket::{Channel, Error, HEADER_LEN, MAGIC, VERSION};
use ipc_unixsocket_fuzz::{
    Fixtures, MAX_RAW_FDS, expected_outcome, identity, open_fds, send_raw, turns_on_credentials,
};
use libfuzzer_sys::fuzz_target;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use serde::{Deserialize, Serialize};

/// Fd capacity of both ends.
const N: usize = 4;
/// Calls the caller may have in flight.
const CALLS: usize = 4;
/// The endpoints' outgoing buffers: small, so that long echoes do not fit.
const OUT_LEN: usize = 64;
/// The endpoints' incoming buffers.
const INBOX_LEN: usize = 128;
const MAX_RECORDS: usize = 16;
const MAX_SOURCE: usize = 1024;

const CALLER: u8 = 0x01;
const PEER_HELLO: u8 = 0x02;
const HANG_UP: u8 = 0x04;
const FIRST_ZERO: u8 = 0x20;
const LAST_ZERO: u8 = 0x40;
const CANCEL_FIRST: u8 = 0x80;

const V1: u8 = 0x10;
const CALL_HEADER: u8 = 0x20;
const TYPED_BODY: u8 = 0x40;
const ALL_MEMFDS: u8 = 0x80;

// Wire kinds (wire.rs).
const HELLO: u8 = 1;
const REQUEST: u8 = 2;
const REPLY: u8 = 3;
const ERROR_REPLY: u8 = 4;
const EVENT: u8 = 5;
const HANDLER_ERROR: u8 = 6;

/// The cookie of the valid request sent to the responder after the junk.
const LAST_COOKIE: u32 = 0x5eed_0001;

// ---- the protocol ----------------------------------------------------------

#[derive(Debug, PartialEq, Serialize, Deserialize, Schema)]
#[postcard(crate = ipc_unixsocket::calls::postcard_schema)]
enum Request<'a> {
    Ping,
    Echo(&'a [u8]),
    Take([FdSlot; 2]),
    Text {
        text: &'a str,
        slot: Option<FdSlot>,
    },
    Fail,
    Nested {
        a: u64,
        b: i16,
        c: Option<(bool, char)>,
        d: [u8; 3],
    },
    /// The handler fails with `FuzzError::Why` of the text.
    Deny(&'a str),
}

/// The handlers' own error type.
#[derive(Debug, PartialEq, Serialize, Deserialize, Schema)]
#[postcard(crate = ipc_unixsocket::calls::postcard_schema)]
enum FuzzError<'a> {
    Denied(u16),
    Why(&'a str),
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Schema)]
#[postcard(crate = ipc_unixsocket::calls::postcard_schema)]
enum Reply<'a> {
    Pong,
    Echo(&'a [u8]),
    Fds([FdSlot; 2]),
    Len(u32),
    Sum(u64),
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Schema)]
#[postcard(crate = ipc_unixsocket::calls::postcard_schema)]
enum Event<'a> {
    Tick(u32),
    Blob(&'a [u8]),
    Fd(FdSlot),
}

struct Fuzz;

impl Protocol for Fuzz {
    const NAME: &'static str = "fuzz.calls";
    const VERSION: u32 = 3;
    type Request<'a> = Request<'a>;
    type Reply<'a> = Reply<'a>;
    type Event<'a> = Event<'a>;
    type Error<'a> = FuzzError<'a>;
}

// Mirrors of the protocol's types with the same postcard encoding, built by
// `arbitrary` (an `FdSlot` is a transparent `u8`).

/// A slot, mostly in range.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(transparent)]
struct Slot(u8);

impl<'a> Arbitrary<'a> for Slot {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Self(u8::arbitrary(u)? % 6))
    }
}

#[derive(Debug, Arbitrary, Serialize)]
enum RequestM {
    Ping,
    Echo(#[serde(with = "bytes")] Vec<u8>),
    Take([Slot; 2]),
    Text {
        text: String,
        slot: Option<Slot>,
    },
    Fail,
    Nested {
        a: u64,
        b: i16,
        c: Option<(bool, char)>,
        d: [u8; 3],
    },
    Deny(String),
}

#[derive(Debug, Arbitrary, Serialize)]
enum ErrorM {
    Denied(u16),
    Why(String),
}

#[derive(Debug, Arbitrary, Serialize)]
enum ReplyM {
    Pong,
    Echo(#[serde(with = "bytes")] Vec<u8>),
    Fds([Slot; 2]),
    Len(u32),
    Sum(u64),
}

#[derive(Debug, Arbitrary, Serialize)]
enum EventM {
    Tick(u32),
    Blob(#[serde(with = "bytes")] Vec<u8>),
    Fd(Slot),
}

#[derive(Debug, Arbitrary)]
enum HelloM {
    Good,
    OtherVersion(u32),
    OtherName(String),
    /// A calls v1 hello: no schema hashes.
    Any(String, u32),
    /// Another build of the protocol: the same name and version.
    OtherSchemas([[u8; 8]; 4]),
}

/// `Vec<u8>` serialized as bytes, as `&[u8]` deserializes.
mod bytes {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
}

/// The slot with index `i`.
fn slot(i: u8) -> FdSlot {
    postcard::from_bytes(&[i]).expect("a slot is a u8")
}

/// `value` in postcard.
fn to_postcard<T: Serialize>(value: &T) -> Vec<u8> {
    let mut buf = vec![0u8; 4 * MAX_SOURCE + 64];
    let used = postcard::to_slice(value, &mut buf)
        .expect("the buffer holds any value built from a source")
        .len();
    buf.truncate(used);
    buf
}

/// Variants of the protocol's enums (postcard writes an enum as the
/// variant's index, a varint, then its fields).
const REQUEST_VARIANTS: u32 = 7;
const REPLY_VARIANTS: u32 = 5;
const EVENT_VARIANTS: u32 = 3;
const ERROR_VARIANTS: u32 = 2;

/// What a body decodes to, as the call layer must see it: the whole body
/// (trailing bytes are an error); for an enum of `variants` variants, a
/// body that does not decode and starts with an index past them is an
/// unknown variant.
fn predict_decode<'a, T: Deserialize<'a>>(
    body: &'a [u8],
    variants: Option<u32>,
) -> Result<T, Error> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((value, [])) => Ok(value),
        Ok(_) => Err(Error::BadBody),
        Err(_) => match (variants, postcard::take_from_bytes::<u32>(body)) {
            (Some(count), Ok((index, _))) if index >= count => Err(Error::UnknownVariant),
            _ => Err(Error::BadBody),
        },
    }
}

/// The outcome of a hello with `body`: `None` for a match.
fn predict_hello(body: &[u8]) -> Option<Error> {
    let ours = Hello::of::<Fuzz>();
    match predict_decode::<Hello<'_>>(body, None) {
        Ok(hello) if hello == ours => None,
        Ok(Hello {
            name,
            version,
            schemas,
        }) if name == Fuzz::NAME && version == Fuzz::VERSION => Some(Error::ProtocolMismatch {
            same_name: true,
            peer_version: version,
            differs: Differs {
                request: schemas[0] != ours.schemas[0],
                reply: schemas[1] != ours.schemas[1],
                event: schemas[2] != ours.schemas[2],
                error: schemas[3] != ours.schemas[3],
            },
        }),
        Ok(Hello { name, version, .. }) => Some(Error::ProtocolMismatch {
            same_name: name == Fuzz::NAME,
            peer_version: version,
            differs: Differs::NONE,
        }),
        Err(_) => Some(Error::ProtocolMismatch {
            same_name: false,
            peer_version: 0,
            differs: Differs::NONE,
        }),
    }
}

// ---- input ---------------------------------------------------------------

struct RawRecord {
    bytes: Vec<u8>,
    fds: usize,
    all_memfds: bool,
}

/// The 8 bytes of a call header from the input's kind byte `k` and the
/// cookie: mostly a valid kind with zero reserved bytes; `k >= 0xf0` puts
/// `k & 0x0f` as the kind byte (0 and 7..=15 are unknown), `0xe0..0xf0` a
/// valid kind with a non-zero reserved byte.
fn call_header(k: u8, cookie: u32) -> [u8; CALL_HEADER_LEN] {
    let c = cookie.to_le_bytes();
    let (kind, reserved) = match k {
        0xf0.. => (k & 0x0f, 0),
        0xe0.. => (k % 6 + 1, 1),
        _ => (k % 6 + 1, 0),
    };
    [kind, reserved, 0, 0, c[0], c[1], c[2], c[3]]
}

/// A body of `kind`'s type built from `source`.
fn typed_body(kind: u8, source: &[u8]) -> Vec<u8> {
    let mut u = Unstructured::new(source);
    match kind {
        HELLO => {
            let hello = HelloM::arbitrary(&mut u).unwrap_or(HelloM::Good);
            match hello {
                HelloM::Good => to_postcard(&Hello::of::<Fuzz>()),
                HelloM::OtherVersion(version) => to_postcard(&Hello {
                    version,
                    ..Hello::of::<Fuzz>()
                }),
                HelloM::OtherName(name) => to_postcard(&Hello {
                    name: &name,
                    ..Hello::of::<Fuzz>()
                }),
                HelloM::Any(name, v) => to_postcard(&(name, v)),
                HelloM::OtherSchemas(schemas) => to_postcard(&Hello {
                    schemas,
                    ..Hello::of::<Fuzz>()
                }),
            }
        }
        REPLY => to_postcard(&ReplyM::arbitrary(&mut u).unwrap_or(ReplyM::Pong)),
        ERROR_REPLY => vec![u8::arbitrary(&mut u).unwrap_or(0)],
        EVENT => to_postcard(&EventM::arbitrary(&mut u).unwrap_or(EventM::Tick(0))),
        HANDLER_ERROR => to_postcard(&ErrorM::arbitrary(&mut u).unwrap_or(ErrorM::Denied(0))),
        _ => to_postcard(&RequestM::arbitrary(&mut u).unwrap_or(RequestM::Ping)),
    }
}

/// Parses the records; `cookie` turns the input's cookie byte into a
/// cookie.
fn parse(mut input: &[u8], cookie: impl Fn(u8) -> u32) -> Vec<RawRecord> {
    let mut records = Vec::new();
    while records.len() < MAX_RECORDS {
        let Some((&control, rest)) = input.split_first() else {
            break;
        };
        input = rest;
        let mut data = Vec::new();
        let mut kind = REQUEST;
        if control & CALL_HEADER != 0 {
            let [k, c] = match input.split_first_chunk::<2>() {
                Some((&kc, rest)) => {
                    input = rest;
                    kc
                }
                None => [0, 0],
            };
            let header = call_header(k, cookie(c));
            kind = header[0];
            data.extend_from_slice(&header);
        }
        let len = match input.split_first_chunk::<2>() {
            Some((&l, rest)) => {
                input = rest;
                usize::from(u16::from_le_bytes(l)).min(MAX_SOURCE)
            }
            None => 0,
        };
        let take = len.min(input.len());
        let source = &input[..take];
        input = &input[take..];
        if control & TYPED_BODY != 0 {
            data.extend_from_slice(&typed_body(kind, source));
        } else {
            data.extend_from_slice(source);
        }

        let fds = usize::from(control & 0x0f) % (MAX_RAW_FDS + 1);
        let mut bytes = Vec::with_capacity(HEADER_LEN + data.len());
        if control & V1 != 0 {
            let data_len = u32::try_from(data.len()).expect("short");
            bytes.extend_from_slice(&[MAGIC[0], MAGIC[1], VERSION, fds as u8]);
            bytes.extend_from_slice(&data_len.to_le_bytes());
        }
        bytes.extend_from_slice(&data);
        records.push(RawRecord {
            bytes,
            fds,
            all_memfds: control & ALL_MEMFDS != 0,
        });
    }
    records
}

/// A record as the call layer sees it once the channel has taken it.
struct Seen<'r> {
    kind: u8,
    cookie: u32,
    body: &'r [u8],
    /// `Some(Truncated { .. })` when the record did not fit the inbox: only
    /// its call header arrived, its fds are closed, it has no body.
    too_large: Option<Error>,
}

/// What the receiving end must make of `record` before the call layer
/// looks at the kind: `Err` for a record it drops (counted as discarded),
/// else its call header and body. `credentials` says whether the receiver
/// has turned `SO_PASSCRED` on (it does at its first empty record), and is
/// updated for the records after this one.
fn predict_record<'r>(record: &'r RawRecord, credentials: &mut bool) -> Result<Seen<'r>, ()> {
    let capacity = INBOX_LEN - HEADER_LEN;
    let outcome = expected_outcome(&record.bytes, record.fds, N, capacity, *credentials);
    *credentials |= turns_on_credentials(&record.bytes, record.fds);
    let (data, too_large) = match outcome {
        Ok((data_len, _)) => (&record.bytes[HEADER_LEN..][..data_len], None),
        // The kernel delivers the record's first bytes: the call header.
        Err(error @ Error::Truncated { .. }) => (&record.bytes[HEADER_LEN..], Some(error)),
        Err(_) => return Err(()),
    };
    match data.first_chunk::<CALL_HEADER_LEN>() {
        Some(&[kind @ HELLO..=HANDLER_ERROR, 0, 0, 0, c0, c1, c2, c3]) => Ok(Seen {
            kind,
            cookie: u32::from_le_bytes([c0, c1, c2, c3]),
            body: if too_large.is_some() {
                &[]
            } else {
                &data[CALL_HEADER_LEN..]
            },
            too_large,
        }),
        _ => Err(()),
    }
}

fn sent_fds<'f>(fixtures: &'f Fixtures, record: &RawRecord) -> Vec<BorrowedFd<'f>> {
    (0..record.fds)
        .map(|k| fixtures.pick(k, record.all_memfds))
        .collect()
}

fuzz_target!(|input: &[u8]| {
    let fixtures = Fixtures::get();
    let baseline = open_fds();
    let (flags, rest) = match input.split_first() {
        Some((&flags, rest)) => (flags, rest),
        None => (0, &[][..]),
    };
    if flags & CALLER != 0 {
        fuzz_caller(fixtures, flags, rest);
    } else {
        fuzz_responder(fixtures, flags, rest);
    }
    assert_eq!(
        open_fds(),
        baseline,
        "the process's fd count changed: an fd leaked or was closed twice"
    );
});

/// Sends a valid record of the call layer from the peer.
fn send_call<T: Serialize>(
    peer: &Channel<N>,
    kind: u8,
    cookie: u32,
    body: &T,
    fds: &[BorrowedFd<'_>],
) {
    let mut data = call_header(kind - 1, cookie).to_vec();
    data.extend_from_slice(&to_postcard(body));
    peer.try_send(&data, fds).expect("the peer's send");
}

/// Receives one record at the peer: its call header, body and fds.
fn recv_call(peer: &Channel<N>) -> Option<(u8, u32, Vec<u8>, StackVec<OwnedFd, N>)> {
    let mut data = [0u8; 4096];
    let mut fds = StackVec::new();
    match peer.try_recv(&mut data, &mut fds) {
        Ok(got) => {
            let data = &data[..got.data_len];
            let Some(&[kind, 0, 0, 0, c0, c1, c2, c3]) = data.first_chunk::<CALL_HEADER_LEN>()
            else {
                panic!("a record without a valid call header from the call layer: {data:02x?}");
            };
            let cookie = u32::from_le_bytes([c0, c1, c2, c3]);
            Some((kind, cookie, data[CALL_HEADER_LEN..].to_vec(), fds))
        }
        Err(Error::WouldBlock) => None,
        Err(error) => panic!("the peer's receive: {error}"),
    }
}

fn assert_same_files(got: &[OwnedFd], sent: &[BorrowedFd<'_>], what: &str) {
    assert_eq!(got.len(), sent.len(), "fd count: {what}");
    for (k, (got, sent)) in got.iter().zip(sent).enumerate() {
        assert_eq!(identity(got), identity(sent), "fd {k}: {what}");
    }
}

/// Claims every slot of `claims` and checks it is the file sent there.
fn assert_claims(mut claims: Claims<N>, sent: &[BorrowedFd<'_>], what: &str) {
    assert_eq!(claims.len(), sent.len(), "fd count: {what}");
    for (k, sent) in sent.iter().enumerate() {
        let fd = claims
            .claim(slot(k as u8))
            .expect("every slot claimable once");
        assert_eq!(identity(&fd), identity(sent), "fd {k}: {what}");
    }
    assert!(claims.claim(slot(0)).is_err());
}

// ---- the responder --------------------------------------------------------

/// What the fuzz handler saw: each slot it claimed and the file it got.
#[derive(Default)]
struct Log {
    ran: bool,
    claimed: Vec<(u8, (u64, u64))>,
}

/// The handler: claims the slots a request names and answers it; the
/// reply's fds are two fixed memfds.
fn handler<'a>(
    call: Call<'a, '_, 'static, Fuzz, N>,
    fixtures: &'static Fixtures,
    log: &mut Log,
) -> Result<Reply<'a>, CallError<FuzzError<'a>>> {
    log.ran = true;
    let mut claim = |slot: FdSlot| -> Result<(), Error> {
        let fd = call.fds.claim(slot)?;
        log.claimed.push((slot.index(), identity(&fd)));
        Ok(())
    };
    match call.request {
        Request::Ping => Ok(Reply::Pong),
        Request::Echo(bytes) => Ok(Reply::Echo(bytes)),
        Request::Take([a, b]) => {
            claim(a)?;
            claim(b)?;
            let first = call.reply_fds.attach(fixtures.memfds[10].as_fd())?;
            let second = call.reply_fds.attach(fixtures.memfds[11].as_fd())?;
            Ok(Reply::Fds([first, second]))
        }
        Request::Text { text, slot } => {
            if let Some(slot) = slot {
                claim(slot)?;
            }
            Ok(Reply::Len(text.len() as u32))
        }
        Request::Fail => Err(Error::EncodeFailed.into()),
        Request::Nested { a, b, .. } => Ok(Reply::Sum(a.wrapping_add(b as u64))),
        Request::Deny(why) => Err(CallError::Handler(FuzzError::Why(why))),
    }
}

/// What the responder's handler must do with `request` and `fds` fds: the
/// reply and the files it carries, or its own error, or the rejection.
fn predict_handler<'a>(
    request: &Request<'a>,
    fds: usize,
) -> Result<Result<(Reply<'a>, usize), FuzzError<'a>>, Rejection> {
    let slot_ok = |s: FdSlot| usize::from(s.index()) < fds;
    let reply = match *request {
        Request::Ping => (Reply::Pong, 0),
        Request::Echo(bytes) => (Reply::Echo(bytes), 0),
        Request::Take([a, b]) => {
            if !slot_ok(a) || !slot_ok(b) || a == b {
                return Err(Rejection::BadFdSlot);
            }
            (Reply::Fds([slot(0), slot(1)]), 2)
        }
        Request::Text { text, slot } => {
            if slot.is_some_and(|s| !slot_ok(s)) {
                return Err(Rejection::BadFdSlot);
            }
            (Reply::Len(text.len() as u32), 0)
        }
        Request::Fail => return Err(Rejection::HandlerFailed),
        Request::Nested { a, b, .. } => (Reply::Sum(a.wrapping_add(b as u64)), 0),
        Request::Deny(why) => return Ok(Err(FuzzError::Why(why))),
    };
    Ok(Ok(reply))
}

/// Whether `body` fits the responder's outgoing buffer (a reply or handler
/// error that does not is refused as a handler failure; a one-way request
/// has nothing to encode).
fn fits<T: Serialize>(body: &T) -> bool {
    let mut room = [0u8; OUT_LEN - HEADER_LEN - CALL_HEADER_LEN];
    postcard::to_slice(body, &mut room).is_ok()
}

/// The peer's view of the responder's protocol state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PeerState {
    Unknown,
    Matched,
    Mismatched,
}

/// What the responder must do with one request.
enum Expect<'a> {
    Reply(Reply<'a>, usize),
    /// The handler's own error, sent back (or, one-way, not).
    Denied(FuzzError<'a>),
    Refused(Rejection),
    OneWay,
}

/// Predicts the handling of a request with `cookie` and `body` in `state`.
fn predict_request<'a>(state: PeerState, body: &'a [u8], fds: usize, cookie: u32) -> Expect<'a> {
    let outcome = match state {
        PeerState::Unknown => Err(Rejection::Unexpected),
        PeerState::Mismatched => Err(Rejection::ProtocolMismatch),
        PeerState::Matched => match predict_decode::<Request<'_>>(body, Some(REQUEST_VARIANTS)) {
            Err(Error::UnknownVariant) => Err(Rejection::UnknownVariant),
            Err(_) => Err(Rejection::BadBody),
            Ok(request) => predict_handler(&request, fds),
        },
    };
    match outcome {
        Ok(Ok(_)) if cookie == 0 => Expect::OneWay,
        Ok(Err(error)) if cookie == 0 || fits(&error) => Expect::Denied(error),
        Ok(Err(_)) => Expect::Refused(Rejection::HandlerFailed),
        Ok(Ok((reply, _))) if !fits(&reply) => Expect::Refused(Rejection::HandlerFailed),
        Ok(Ok((reply, fds))) => Expect::Reply(reply, fds),
        Err(rejection) => Expect::Refused(rejection),
    }
}

fn fuzz_responder(fixtures: &'static Fixtures, flags: u8, input: &[u8]) {
    let records = parse(input, u32::from);
    let (peer, end) = Channel::<N>::pair().expect("socketpair");
    let (mut out, mut inbox) = ([0u8; OUT_LEN], [0u8; INBOX_LEN]);
    let mut responder =
        Responder::<Fuzz, N>::new(end, &mut out, &mut inbox).expect("the responder");

    // Its hello.
    let (kind, cookie, body, fds) = recv_call(&peer).expect("the responder's hello");
    assert_eq!((kind, cookie), (HELLO, 0));
    assert_eq!(predict_hello(&body), None, "the responder's hello");
    assert!(fds.is_empty());

    let mut state = PeerState::Unknown;
    let mut discarded = 0u32;
    let mut credentials = false;
    if flags & PEER_HELLO != 0 {
        send_call(&peer, HELLO, 0, &Hello::of::<Fuzz>(), &[]);
        let got = responder.try_serve(|call| handler(call, fixtures, &mut Log::default()));
        assert_eq!(got, Ok(Some(Served::Hello)));
        state = PeerState::Matched;
    }

    let reply_fds = [fixtures.memfds[10].as_fd(), fixtures.memfds[11].as_fd()];
    for (i, record) in records.iter().enumerate() {
        let sent = sent_fds(fixtures, record);
        send_raw(&peer, &record.bytes, &sent);
        let mut log = Log::default();
        let got = responder.try_serve(|call| handler(call, fixtures, &mut log));
        let what = format!(
            "record {i}: {} bytes starting {:02x?}, {} fds, state {state:?}",
            record.bytes.len(),
            &record.bytes[..record.bytes.len().min(24)],
            record.fds
        );
        let back = recv_call(&peer);

        let Ok(Seen {
            kind,
            cookie,
            body,
            too_large,
        }) = predict_record(record, &mut credentials)
        else {
            discarded += 1;
            assert_eq!(got, Ok(Some(Served::Ignored)), "{what}");
            assert!(back.is_none(), "{what}");
            assert!(!log.ran, "{what}");
            continue;
        };
        match kind {
            // Only its call header arrived: refused as the state says (a
            // request before the hello is unexpected, whatever its size),
            // and answered, not counted as dropped.
            REQUEST if too_large.is_some() => {
                let rejection = match state {
                    PeerState::Unknown => Rejection::Unexpected,
                    PeerState::Mismatched => Rejection::ProtocolMismatch,
                    PeerState::Matched => Rejection::TooLarge,
                };
                check_handled(
                    Expect::Refused(rejection),
                    cookie,
                    got,
                    back,
                    &reply_fds,
                    &what,
                );
                assert!(!log.ran, "{what}");
            }
            HELLO => {
                let mismatch = match too_large {
                    Some(_) => Some(Error::ProtocolMismatch {
                        same_name: false,
                        peer_version: 0,
                        differs: Differs::NONE,
                    }),
                    None => predict_hello(body),
                };
                match mismatch {
                    None => assert_eq!(got, Ok(Some(Served::Hello)), "{what}"),
                    Some(error) => assert_eq!(got, Err(error), "{what}"),
                }
                state = if mismatch.is_none() {
                    PeerState::Matched
                } else {
                    PeerState::Mismatched
                };
                assert!(back.is_none(), "{what}");
            }
            REPLY | ERROR_REPLY | EVENT | HANDLER_ERROR => {
                discarded += 1;
                assert_eq!(got, Ok(Some(Served::Ignored)), "{what}");
                assert!(back.is_none(), "{what}");
            }
            _ => {
                check_handled(
                    predict_request(state, body, record.fds, cookie),
                    cookie,
                    got,
                    back,
                    &reply_fds,
                    &what,
                );
                // The handler got the files sent in the slots it claimed.
                for &(index, id) in &log.claimed {
                    assert_eq!(id, identity(sent[usize::from(index)]), "{what}");
                }
            }
        }
        assert!(log.claimed.len() <= record.fds);
    }

    // A valid request after the junk is handled as the state says.
    let take = Request::Take([slot(1), slot(0)]);
    let good = [fixtures.memfds[2].as_fd(), fixtures.memfds[3].as_fd()];
    send_call(&peer, REQUEST, LAST_COOKIE, &take, &good);
    let mut log = Log::default();
    let got = responder.try_serve(|call| handler(call, fixtures, &mut log));
    let back = recv_call(&peer);
    let body = to_postcard(&take);
    check_handled(
        predict_request(state, &body, 2, LAST_COOKIE),
        LAST_COOKIE,
        got,
        back,
        &reply_fds,
        "the valid request after the junk",
    );
    if state == PeerState::Matched {
        assert_eq!(
            log.claimed,
            [(1, identity(good[1])), (0, identity(good[0]))],
            "the files of the valid request"
        );
    }

    let got = responder.try_serve(|call| handler(call, fixtures, &mut Log::default()));
    assert_eq!(got, Ok(None), "nothing left");
    if flags & HANG_UP != 0 {
        drop(peer);
        let got = responder.try_serve(|call| handler(call, fixtures, &mut Log::default()));
        assert_eq!(got, Err(Error::Disconnected));
    }
    assert_eq!(responder.discarded(), discarded, "discarded records");
}

/// Checks what `try_serve` reported (`got`) and what the peer received
/// (`back`) for a request with `cookie` against `expect`.
fn check_handled(
    expect: Expect<'_>,
    cookie: u32,
    got: Result<Option<Served>, Error>,
    back: Option<(u8, u32, Vec<u8>, StackVec<OwnedFd, N>)>,
    reply_fds: &[BorrowedFd<'_>],
    what: &str,
) {
    match expect {
        Expect::OneWay => {
            assert_eq!(got, Ok(Some(Served::OneWay)), "{what}");
            assert!(back.is_none(), "a reply to a one-way request: {what}");
        }
        Expect::Denied(error) => {
            assert_eq!(got, Ok(Some(Served::HandlerError { cookie })), "{what}");
            match back {
                None => assert_eq!(cookie, 0, "no handler error sent: {what}"),
                Some((kind, back_cookie, body, fds)) => {
                    assert_ne!(cookie, 0, "a handler error for a one-way request: {what}");
                    assert_eq!((kind, back_cookie), (HANDLER_ERROR, cookie), "{what}");
                    assert_eq!(
                        predict_decode::<FuzzError<'_>>(&body, Some(ERROR_VARIANTS)),
                        Ok(error),
                        "{what}"
                    );
                    assert!(fds.is_empty(), "{what}");
                }
            }
        }
        Expect::Refused(rejection) => {
            assert_eq!(
                got,
                Ok(Some(Served::Refused { cookie, rejection })),
                "{what}"
            );
            match back {
                None => assert_eq!(cookie, 0, "no error reply: {what}"),
                Some((kind, back_cookie, body, fds)) => {
                    assert_ne!(cookie, 0, "an error reply to a one-way request: {what}");
                    assert_eq!((kind, back_cookie), (ERROR_REPLY, cookie), "{what}");
                    assert_eq!(body, [rejection as u8], "{what}");
                    assert!(fds.is_empty(), "{what}");
                }
            }
        }
        Expect::Reply(reply, nfds) => {
            assert_eq!(got, Ok(Some(Served::Replied { cookie })), "{what}");
            let (kind, back_cookie, body, fds) = back.expect("a reply");
            assert_eq!((kind, back_cookie), (REPLY, cookie), "{what}");
            assert_eq!(
                predict_decode::<Reply<'_>>(&body, Some(REPLY_VARIANTS)),
                Ok(reply),
                "{what}"
            );
            assert_same_files(&fds, &reply_fds[..nfds], what);
        }
    }
}

// ---- the caller -------------------------------------------------------------

/// What the caller must deliver: in order, except that the calls a dead
/// peer ends come in any order. Replies and events are kept as their
/// `Debug` text (they borrow from the caller's buffer), with their fd
/// count.
#[derive(Debug, PartialEq)]
enum Delivery {
    Reply(u32, String, usize),
    /// The handler's own error, as its `Debug` text.
    Denied(u32, String),
    Event(String, usize),
    Failed(u32, Error),
    BadEvent(Error),
}

/// The model of a caller.
struct Model {
    /// Cookies of the calls in flight.
    pending: BTreeSet<u32>,
    /// Every cookie `start` returned.
    started: Vec<u32>,
    /// Every cookie a reply or failure was delivered for.
    delivered: BTreeSet<u32>,
    /// Set when the peer is dead to the caller (a mismatched hello, or a
    /// hang-up): every later poll fails with it.
    dead: Option<Error>,
    /// Whether the peer's matching hello has arrived: any other record
    /// before it makes the peer one of another protocol.
    hello: bool,
    /// The caller has turned `SO_PASSCRED` on (after an empty record).
    credentials: bool,
    late: u32,
    discarded: u32,
}

fn fuzz_caller(fixtures: &'static Fixtures, flags: u8, input: &[u8]) {
    let (peer, end) = Channel::<N>::pair().expect("socketpair");
    let (mut out, mut inbox) = ([0u8; OUT_LEN], [0u8; INBOX_LEN]);
    let mut caller = Caller::<Fuzz, N, CALLS>::new(end, &mut out, &mut inbox).expect("the caller");
    let (kind, cookie, body, fds) = recv_call(&peer).expect("the caller's hello");
    assert_eq!((kind, cookie), (HELLO, 0));
    assert_eq!(predict_hello(&body), None, "the caller's hello");
    assert!(fds.is_empty());

    if flags & PEER_HELLO != 0 {
        send_call(&peer, HELLO, 0, &Hello::of::<Fuzz>(), &[]);
    }

    // Start the calls, and see them arrive.
    let mut model = Model {
        pending: BTreeSet::new(),
        started: Vec::new(),
        delivered: BTreeSet::new(),
        dead: None,
        hello: flags & PEER_HELLO != 0,
        credentials: false,
        late: 0,
        discarded: 0,
    };
    let calls = usize::from((flags >> 3) & 3);
    let mut zero = BTreeSet::new();
    let mut cookies = Vec::new();
    for k in 0..calls {
        let zero_timeout =
            (k == 0 && flags & FIRST_ZERO != 0) || (k + 1 == calls && flags & LAST_ZERO != 0);
        let text = format!("call {k}");
        let request = Request::Text {
            text: &text,
            slot: (k % 2 == 1).then(|| slot(0)),
        };
        let fds = [fixtures.memfds[k].as_fd()];
        let fds = &fds[..k % 2];
        let timeout = zero_timeout.then_some(core::time::Duration::ZERO);
        let started = caller.start(&request, fds, timeout).expect("start");
        cookies.push(started);
        let cookie = started.get();
        assert!(
            cookie != 0 && !model.started.contains(&cookie),
            "a fresh cookie"
        );
        model.started.push(cookie);
        model.pending.insert(cookie);
        if zero_timeout {
            zero.insert(cookie);
        }
        let (kind, got_cookie, body, got_fds) = recv_call(&peer).expect("the request");
        assert_eq!((kind, got_cookie), (REQUEST, cookie));
        assert_eq!(
            predict_decode::<Request<'_>>(&body, Some(REQUEST_VARIANTS)),
            Ok(request)
        );
        assert_same_files(&got_fds, fds, "the request's fds");
    }
    assert_eq!(caller.in_flight(), calls);
    if let (Some(&first), true) = (cookies.first(), flags & CANCEL_FIRST != 0) {
        // Cancelled: its reply, if the input sends one, is late.
        assert!(caller.cancel(first), "the first call was in flight");
        assert!(!caller.cancel(first), "cancelled twice");
        model.pending.remove(&first.get());
        zero.remove(&first.get());
    }

    // Zero timeouts end at once, in any order.
    let mut timed_out = Vec::new();
    let end = drain_until_dead(&mut caller, &mut timed_out, &[], "the first poll");
    assert_eq!(end, Ok(()), "the first poll");
    model.deliver(&timed_out, "the first poll");
    let want: Vec<Delivery> = zero
        .iter()
        .map(|&c| Delivery::Failed(c, Error::TimedOut))
        .collect();
    assert_eq!(sorted(timed_out), want, "zero timeouts");
    for cookie in &zero {
        model.pending.remove(cookie);
    }
    assert_eq!(caller.in_flight(), model.pending.len());

    let started = model.started.clone();
    let records = parse(input, |c| {
        if c & 0x80 != 0 || started.is_empty() {
            u32::from(c & 0x7f)
        } else {
            started[usize::from(c) % started.len()]
        }
    });
    for (i, record) in records.iter().enumerate() {
        let sent = sent_fds(fixtures, record);
        send_raw(&peer, &record.bytes, &sent);
        let what = format!(
            "record {i}: {} bytes starting {:02x?}, {} fds, pending {:?}",
            record.bytes.len(),
            &record.bytes[..record.bytes.len().min(24)],
            record.fds,
            model.pending,
        );
        let want = predict_caller(&mut model, record);
        let mut got = Vec::new();
        let end = drain_until_dead(&mut caller, &mut got, &sent, &what);
        check_caller(&mut model, got, want, end, &what);
        assert_eq!(caller.in_flight(), model.pending.len(), "{what}");
    }

    if flags & HANG_UP != 0 {
        drop(peer);
        let mut got = Vec::new();
        let end = drain_until_dead(&mut caller, &mut got, &[], "the hang-up");
        // A caller already dead to a mismatched hello has nothing left to
        // end; otherwise every call in flight fails, in any order.
        let want: Vec<Delivery> = match model.dead {
            Some(_) => Vec::new(),
            None => model
                .pending
                .iter()
                .map(|&c| Delivery::Failed(c, Error::Disconnected))
                .collect(),
        };
        model.deliver(&got, "the hang-up");
        let dead = model.dead.unwrap_or(Error::Disconnected);
        model.pending.clear();
        assert_eq!(sorted(got), want, "after the hang-up");
        assert_eq!(end, Err(dead), "after the hang-up");
        assert!(caller.try_incoming().err() == Some(dead), "dead for good");
    } else if let Some(error) = model.dead {
        assert!(caller.try_incoming().err() == Some(error), "dead for good");
    } else {
        // A genuine peer says hello first, if it has not yet; then a
        // genuine reply for every call still in flight arrives.
        if !model.hello {
            send_call(&peer, HELLO, 0, &Hello::of::<Fuzz>(), &[]);
            assert!(matches!(caller.try_incoming(), Ok(None)), "the hello");
            model.hello = true;
        }
        let reply_fd = [fixtures.memfds[5].as_fd()];
        for &cookie in &model.pending {
            send_call(&peer, REPLY, cookie, &Reply::Len(cookie), &reply_fd);
            match caller.try_incoming() {
                Ok(Some(Incoming::Reply {
                    cookie: got,
                    reply,
                    fds,
                })) => {
                    assert_eq!(got.get(), cookie, "the genuine reply's cookie");
                    assert!(model.delivered.insert(cookie), "delivered twice: {cookie}");
                    assert_eq!(reply, Reply::Len(cookie));
                    assert_claims(fds, &reply_fd, "the genuine reply");
                }
                other => panic!("the genuine reply for {cookie}: got {other:?}"),
            }
            assert!(matches!(caller.try_incoming(), Ok(None)));
        }
        model.pending.clear();
        assert_eq!(caller.in_flight(), 0);
    }
    assert_eq!(caller.late_replies(), model.late, "late replies");
    assert_eq!(caller.discarded(), model.discarded, "discarded records");
}

/// Deliveries sorted, for comparing those whose order is free.
fn sorted(mut deliveries: Vec<Delivery>) -> Vec<Delivery> {
    deliveries.sort_by_key(|d| match d {
        Delivery::Failed(c, _) => *c,
        _ => 0,
    });
    deliveries
}

/// Polls until `None` (`Ok`) or an error (`Err`), recording what came.
/// Replies and events are recorded with their fd count once their fds
/// were checked against `sent` (a reply or event carries the record's
/// fds).
fn drain_until_dead(
    caller: &mut Caller<'_, Fuzz, N, CALLS>,
    got: &mut Vec<Delivery>,
    sent: &[BorrowedFd<'_>],
    what: &str,
) -> Result<(), Error> {
    for _ in 0..64 {
        match caller.try_incoming() {
            Ok(None) => return Ok(()),
            Err(error) => return Err(error),
            Ok(Some(incoming)) => got.push(match incoming {
                Incoming::Reply { cookie, reply, fds } => {
                    let n = fds.len();
                    assert_claims(fds, sent, what);
                    Delivery::Reply(cookie.get(), format!("{reply:?}"), n)
                }
                Incoming::Event { event, fds } => {
                    let n = fds.len();
                    assert_claims(fds, sent, what);
                    Delivery::Event(format!("{event:?}"), n)
                }
                Incoming::HandlerError { cookie, error } => {
                    Delivery::Denied(cookie.get(), format!("{error:?}"))
                }
                Incoming::Failed { cookie, error } => Delivery::Failed(cookie.get(), error),
                Incoming::BadEvent(error) => Delivery::BadEvent(error),
                other => panic!("an outcome the model does not know: {other:?}"),
            }),
        }
    }
    panic!("poll never ran dry: {what}");
}

/// What the caller must deliver for `record`, updating the model.
fn predict_caller(model: &mut Model, record: &RawRecord) -> Vec<Delivery> {
    if model.dead.is_some() {
        // Nothing more is read.
        return Vec::new();
    }
    let Ok(Seen {
        kind,
        cookie,
        body,
        too_large,
    }) = predict_record(record, &mut model.credentials)
    else {
        model.discarded += 1;
        return Vec::new();
    };
    let unreadable = Error::ProtocolMismatch {
        same_name: false,
        peer_version: 0,
        differs: Differs::NONE,
    };
    let mismatch = match (kind, too_large) {
        (HELLO, Some(_)) => Some(unreadable),
        (HELLO, None) => predict_hello(body),
        // The peer says hello before anything else.
        _ if !model.hello => Some(unreadable),
        _ => None,
    };
    if let Some(error) = mismatch {
        model.dead = Some(error);
        let failed = model
            .pending
            .iter()
            .map(|&c| Delivery::Failed(c, error))
            .collect();
        model.pending.clear();
        return failed;
    }
    if let Some(error) = too_large {
        return match kind {
            REPLY | ERROR_REPLY | HANDLER_ERROR if model.pending.remove(&cookie) => {
                vec![Delivery::Failed(cookie, error)]
            }
            REPLY | ERROR_REPLY | HANDLER_ERROR => {
                model.late += 1;
                Vec::new()
            }
            EVENT => vec![Delivery::BadEvent(error)],
            _ => {
                model.discarded += 1;
                Vec::new()
            }
        };
    }
    match kind {
        HELLO => {
            model.hello = true;
            Vec::new()
        }
        REPLY | ERROR_REPLY | HANDLER_ERROR if !model.pending.remove(&cookie) => {
            model.late += 1;
            Vec::new()
        }
        HANDLER_ERROR => vec![
            match predict_decode::<FuzzError<'_>>(body, Some(ERROR_VARIANTS)) {
                Ok(error) => Delivery::Denied(cookie, format!("{error:?}")),
                Err(error) => Delivery::Failed(cookie, error),
            },
        ],
        REPLY => vec![
            match predict_decode::<Reply<'_>>(body, Some(REPLY_VARIANTS)) {
                Ok(reply) => Delivery::Reply(cookie, format!("{reply:?}"), record.fds),
                Err(error) => Delivery::Failed(cookie, error),
            },
        ],
        ERROR_REPLY => {
            let code = body.first().copied().unwrap_or(0);
            vec![Delivery::Failed(
                cookie,
                Error::Rejected(Rejection::from_byte(code)),
            )]
        }
        EVENT => vec![
            match predict_decode::<Event<'_>>(body, Some(EVENT_VARIANTS)) {
                Ok(event) => Delivery::Event(format!("{event:?}"), record.fds),
                Err(error) => Delivery::BadEvent(error),
            },
        ],
        _ => {
            model.discarded += 1;
            Vec::new()
        }
    }
}

/// Compares what the caller delivered for one record with the model.
fn check_caller(
    model: &mut Model,
    got: Vec<Delivery>,
    want: Vec<Delivery>,
    end: Result<(), Error>,
    what: &str,
) {
    model.deliver(&got, what);
    match model.dead {
        Some(error) => {
            // A mismatched hello ends every call, in any order.
            assert_eq!(sorted(got), sorted(want), "{what}");
            assert_eq!(end, Err(error), "{what}");
        }
        None => {
            assert_eq!(got, want, "{what}");
            assert_eq!(end, Ok(()), "{what}");
        }
    }
}

impl Model {
    /// Records the cookies of `got`: each one `start` returned, none
    /// delivered before.
    fn deliver(&mut self, got: &[Delivery], what: &str) {
        for delivery in got {
            if let Delivery::Reply(c, ..) | Delivery::Denied(c, _) | Delivery::Failed(c, _) =
                delivery
            {
                assert!(self.started.contains(c), "cookie {c} never started: {what}");
                assert!(
                    self.delivered.insert(*c),
                    "cookie {c} delivered twice: {what}"
                );
            }
        }
    }
}
