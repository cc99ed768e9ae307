//! The protocol the `calls` tests speak: an image-processing worker in the
//! style of libcamera's IPA proxies. Requests borrow `&str`/`&[u8]` from the
//! receive buffer and carry fds as [`FdSlot`]s; replies and events do the
//! same. Shared by `tests/calls.rs` (worker on a thread) and
//! `tests/calls_process.rs` (worker in a child process).
#![allow(dead_code)] // each test crate uses a different subset

use std::os::fd::{AsFd, BorrowedFd};

use ipc_unixsocket::calls::{
    Call, CallError, FdSlot, NoError, Protocol, Responder, Schema, Served,
};
use ipc_unixsocket::{Channel, Error};
use serde::de::Deserializer;
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

/// Fds per record, both ways.
pub const MAX_FDS: usize = 4;
/// Calls a caller keeps in flight.
pub const CALLS: usize = 4;
/// Size of each end's outgoing and incoming buffer.
pub const BUF: usize = 1024;

/// What the pipeline asks the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Schema)]
pub enum Request<'a> {
    /// Answered with `Reply::Pong` of the same number.
    Ping(u32),
    /// Answered with `Reply::Echoed` of the same fields.
    Echo { text: &'a str, bytes: &'a [u8] },
    /// Buffers by slot, in any order; the handler claims the first `claim`
    /// entries that are `Some` and answers with the FNV-1a digest of each
    /// claimed fd's contents at the same index (`None` for the others).
    Buffers {
        slots: [Option<FdSlot>; MAX_FDS],
        claim: u8,
    },
    /// Claims `first`, then `second`: a bad slot in either refuses it.
    Pair { first: FdSlot, second: FdSlot },
    /// Answered with `Reply::Exported`: a memfd holding `contents`.
    Export { contents: &'a [u8] },
    /// Waits at the worker's gate (the test decides when it opens; a hung
    /// worker never opens it), then answers as `Export`.
    Slow { contents: &'a [u8] },
    /// A one-way note; its reply (if one were sent) would be `Done`.
    Note(&'a str),
}

/// What the worker answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Schema)]
pub enum Reply<'a> {
    Pong(u32),
    Echoed { text: &'a str, bytes: &'a [u8] },
    Digests([Option<u64>; MAX_FDS]),
    Exported { file: FdSlot },
    Done,
}

/// What the worker sends unasked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Schema)]
pub enum Event<'a> {
    Progress { seq: u32 },
    Metadata(&'a [u8]),
    Frame { seq: u32, buffer: FdSlot },
}

/// The protocol both ends normally speak.
pub struct Isp;

impl Protocol for Isp {
    const NAME: &'static str = "test.isp";
    const VERSION: u32 = 3;
    type Request<'a> = Request<'a>;
    type Reply<'a> = Reply<'a>;
    type Event<'a> = Event<'a>;
    type Error<'a> = NoError;
}

/// The same protocol (name and version) as a pipeline that can also send
/// forged request bodies: what a caller built against another definition
/// of the types would send.
pub struct Forged;

impl Protocol for Forged {
    const NAME: &'static str = Isp::NAME;
    const VERSION: u32 = Isp::VERSION;
    type Request<'a> = Wire<'a>;
    type Reply<'a> = Reply<'a>;
    type Event<'a> = Event<'a>;
    type Error<'a> = NoError;
}

/// A request as `Forged` sends it: a real one, or body bytes verbatim.
#[derive(Debug)]
pub enum Wire<'a> {
    Typed(Request<'a>),
    /// Serialized as a tuple of `u8`, which postcard writes as the bytes
    /// themselves (no length, no tag).
    Bytes(&'a [u8]),
}

impl Serialize for Wire<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Wire::Typed(request) => request.serialize(serializer),
            Wire::Bytes(bytes) => {
                let mut tuple = serializer.serialize_tuple(bytes.len())?;
                for byte in *bytes {
                    tuple.serialize_element(byte)?;
                }
                tuple.end()
            }
        }
    }
}

/// The schema of the request it stands for: `Forged` is `Isp` to a peer.
impl Schema for Wire<'_> {
    const SCHEMA: &'static postcard_schema::schema::NamedType =
        <Request<'static> as Schema>::SCHEMA;
}

impl<'de: 'a, 'a> Deserialize<'de> for Wire<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Request::deserialize(deserializer).map(Wire::Typed)
    }
}

/// FNV-1a, 64 bits: what `Reply::Digests` reports of each buffer.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The whole contents of an fd, read from offset 0 without moving its
/// offset and without opening another fd.
pub fn contents(fd: BorrowedFd<'_>) -> Vec<u8> {
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let got = rustix::io::pread(fd, &mut chunk, all.len() as u64).expect("pread");
        if got == 0 {
            return all;
        }
        all.extend_from_slice(&chunk[..got]);
    }
}

/// Replaces the contents of `fd` (a memfd) with `bytes`.
pub fn overwrite(fd: BorrowedFd<'_>, bytes: &[u8]) {
    rustix::fs::ftruncate(fd, 0).expect("ftruncate");
    assert_eq!(rustix::io::pwrite(fd, bytes, 0), Ok(bytes.len()));
}

/// A close-on-exec memfd holding `bytes`.
pub fn memfd(bytes: &[u8]) -> std::os::fd::OwnedFd {
    let fd = rustix::fs::memfd_create("calls-test", rustix::fs::MemfdFlags::CLOEXEC)
        .expect("memfd_create");
    overwrite(fd.as_fd(), bytes);
    fd
}

/// The worker's handler. `export` is the memfd `Export`/`Slow` replies
/// carry (made once, before anything is counted); `gate` is where `Slow`
/// waits; one-way notes are appended to `notes`.
pub fn handle<'a, 'f>(
    call: Call<'a, '_, 'f, Isp, MAX_FDS>,
    export: BorrowedFd<'f>,
    gate: &mut dyn FnMut(),
    notes: &mut Vec<String>,
) -> Result<Reply<'a>, CallError<NoError>> {
    match call.request {
        Request::Ping(n) => Ok(Reply::Pong(n)),
        Request::Echo { text, bytes } => Ok(Reply::Echoed { text, bytes }),
        Request::Buffers { slots, claim } => {
            let mut digests = [None; MAX_FDS];
            let wanted = slots
                .iter()
                .enumerate()
                .filter_map(|(at, s)| Some((at, (*s)?)));
            for (at, slot) in wanted.take(usize::from(claim)) {
                let fd = call.fds.claim(slot)?;
                digests[at] = Some(fnv(&contents(fd.as_fd())));
            }
            Ok(Reply::Digests(digests))
        }
        Request::Pair { first, second } => {
            let first = call.fds.claim(first)?;
            let second = call.fds.claim(second)?;
            Ok(Reply::Digests([
                Some(fnv(&contents(first.as_fd()))),
                Some(fnv(&contents(second.as_fd()))),
                None,
                None,
            ]))
        }
        Request::Export { contents } => {
            overwrite(export, contents);
            Ok(Reply::Exported {
                file: call.reply_fds.attach(export)?,
            })
        }
        Request::Slow { contents } => {
            gate();
            overwrite(export, contents);
            Ok(Reply::Exported {
                file: call.reply_fds.attach(export)?,
            })
        }
        Request::Note(note) => {
            notes.push(note.to_string());
            Ok(Reply::Done)
        }
    }
}

/// What a worker did, for the test to check once it has ended.
#[derive(Debug, Default)]
pub struct WorkerLog {
    /// What each `serve` returned, in order.
    pub served: Vec<Result<Served, Error>>,
    /// The one-way notes handled.
    pub notes: Vec<String>,
    /// `Responder::discarded` at the end.
    pub discarded: u32,
}

/// Serves `channel` as protocol `Isp` until the caller is gone (or `serve`
/// fails with an error other than a protocol mismatch).
pub fn run_worker(channel: Channel<MAX_FDS>, mut gate: impl FnMut()) -> WorkerLog {
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut responder =
        Responder::<Isp, MAX_FDS>::new(channel, &mut out, &mut inbox).expect("Responder::new");
    // A ring of memfds for `Export`/`Slow` replies, one per serve: the
    // caller may hold the fds of `CALLS` replies at once, and each must
    // keep its own contents. Made once, before anything is counted.
    let exports: Vec<_> = (0..2 * CALLS).map(|_| memfd(b"")).collect();
    let mut log = WorkerLog::default();
    for turn in 0.. {
        let export = exports[turn % exports.len()].as_fd();
        let notes = &mut log.notes;
        let served = responder.serve(|call| handle(call, export, &mut gate, notes));
        let end = matches!(served, Err(error) if !matches!(error, Error::ProtocolMismatch { .. }));
        log.served.push(served);
        if end {
            break;
        }
    }
    log.discarded = responder.discarded();
    log
}
