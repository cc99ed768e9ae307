//! After set-up, the call layer allocates nothing, in either process: a
//! `Responder` in a child process and a `Caller` in the parent exchange
//! 100,000 calls, every request carrying one or two memfds and every reply
//! carrying one back, with an event (and an fd) from the responder every
//! [`EVENT_EVERY`] calls; half through the blocking `Caller::call` and
//! `Responder::serve`, half through `Caller::start`/`Caller::poll` and
//! `Responder::try_serve` in `poll` loops on both sides.
//!
//! A counting global allocator wraps `System` in both processes (the child
//! is this binary, re-executed by `common::harness`). Each side counts from
//! the end of a warm-up of [`WARMUP`] calls; the child reports its count in
//! the reply to the last request ([`Request::Finish`]) and in its exit
//! status, and the parent asserts both counts are zero.
//!
//! Runs with `harness = false` under `common::harness` (libtest-mimic, one
//! test at a time on the main thread): no runner thread shares the parent
//! while it counts, and the child runs before any argument parsing or
//! thread of the runner. The watchdog allocates nothing once armed.

mod common;

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::process::ExitCode;

use std::time::Duration;

use common::{harness, identity, memfd, wait_child};
use ipc_unixsocket::calls::{
    Attach, Call, CallError, Caller, Claims, Cookie, FdSlot, Incoming, NoError, Protocol,
    Responder, Schema, Served,
};
use ipc_unixsocket::{Channel, Error};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::{FdFlags, fcntl_setfd};
use serde::{Deserialize, Serialize};

const TEST_NAME: &str = "hundred_thousand_calls_with_fds_allocate_nothing_in_either_process";

/// Calls counted, after the warm-up; the first half blocking, the second
/// through `start`/`poll`.
const CALLS: u32 = 100_000;
/// Calls made before counting starts (half of each kind).
const WARMUP: u32 = 1_000;
/// The responder emits an event (with an fd) after every this many calls.
const EVENT_EVERY: u32 = 100;
/// Calls the parent keeps in flight in its `poll` loop.
const DEPTH: usize = 4;
/// Deadline of every call: only a hang reaches it.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Fds a record carries at most.
const MAX_FDS: usize = 2;
/// Each end's two buffers.
const BUFFER: usize = 256;

// Child exit statuses other than 0.
const EXIT_SET_UP: u8 = 2;
const EXIT_SERVE: u8 = 3;
const EXIT_ALLOCATED: u8 = 4;
const EXIT_FAILURES: u8 = 5;

// ---- counting allocator ------------------------------------------------------

#[global_allocator]
static GLOBAL: common::counting::Counting = common::counting::Counting;

/// `(allocations, bytes)` so far in this process.
fn counters() -> (u64, u64) {
    let (allocations, bytes) = common::counting::counters();
    (allocations as u64, bytes as u64)
}

/// The allocator is installed and counts: otherwise "0" would prove nothing.
fn allocator_counts() -> bool {
    let before = counters();
    let boxed = std::hint::black_box(Box::new([0u8; 100]));
    let after = counters();
    drop(boxed);
    after.0 > before.0 && after.1 >= before.1 + 100
}

// ---- the protocol --------------------------------------------------------------

/// `(st_dev, st_ino)` of a file, as `common::identity` returns it.
type FileId = (u64, u64);

#[derive(Debug, Serialize, Deserialize, Schema)]
enum Request {
    /// Process frame `seq` in `buffer` (and with `params`, if any): the
    /// responder checks the files are the ones named, writes `seq` at
    /// offset 0 of the buffer and sends the buffer back.
    Process {
        seq: u32,
        buffer: FdSlot,
        buffer_id: FileId,
        params: Option<(FdSlot, FileId)>,
    },
    /// The last request: report the allocations counted since the warm-up.
    Finish,
}

#[derive(Debug, Serialize, Deserialize, Schema)]
enum Reply {
    /// Frame `seq` is done; `buffer` is the buffer the request carried.
    Done { seq: u32, buffer: FdSlot },
    /// The child's counts since its warm-up.
    Finished {
        allocations: u64,
        bytes: u64,
        failures: u32,
        requests: u32,
        events: u32,
    },
}

#[derive(Debug, Serialize, Deserialize, Schema)]
enum Event {
    /// `requests` calls served so far; `stats` is the responder's memfd.
    Stats {
        requests: u32,
        stats: FdSlot,
        stats_id: FileId,
    },
}

struct Frames;

impl Protocol for Frames {
    const NAME: &'static str = "zero-alloc.frames";
    const VERSION: u32 = 1;
    type Request<'a> = Request;
    type Reply<'a> = Reply;
    type Event<'a> = Event;
    type Error<'a> = ipc_unixsocket::calls::NoError;
}

fn main() -> ExitCode {
    harness::main(
        |args| responder(args.first().and_then(|fd| fd.parse().ok())),
        || vec![harness::test(TEST_NAME, 5 * common::TEST_BOUND, parent)],
    )
}

// ---- child: the responder ----------------------------------------------------------

/// What the child's handler keeps between requests.
struct Worker {
    /// Requests handled (`Process` only).
    requests: u32,
    /// Events emitted.
    events: u32,
    /// Things that went wrong (a wrong file, a failed write).
    failures: u32,
    /// Counters at the end of the warm-up.
    warm: Option<(u64, u64)>,
    /// Set by the handler of `Finish`.
    finished: bool,
}

fn responder(fd: Option<RawFd>) -> ExitCode {
    let Some(fd) = fd else {
        return ExitCode::from(EXIT_SET_UP);
    };
    // SAFETY: the parent passed this fd number on the command line after
    // clearing FD_CLOEXEC on it, so it is open in this process, and nothing
    // else here owns it.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let Ok(channel) = Channel::<MAX_FDS>::adopt(fd) else {
        return ExitCode::from(EXIT_SET_UP);
    };
    if !allocator_counts() {
        return ExitCode::from(EXIT_SET_UP);
    }
    let stats = memfd(b"responder stats");
    let stats_id = identity(&stats);
    let (mut out, mut inbox) = ([0u8; BUFFER], [0u8; BUFFER]);
    let Ok(mut responder) = Responder::<Frames, MAX_FDS>::new(channel, &mut out, &mut inbox) else {
        return ExitCode::from(EXIT_SET_UP);
    };
    let mut worker = Worker {
        requests: 0,
        events: 0,
        failures: 0,
        warm: None,
        finished: false,
    };
    let half = (WARMUP + CALLS) / 2;
    loop {
        if worker.warm.is_none() && worker.requests == WARMUP {
            worker.warm = Some(counters());
        }
        // The buffer fd the reply sends back: claimed by the handler, kept
        // open until the reply is sent.
        let mut keep = None;
        let (keep_ref, worker_ref) = (&mut keep, &mut worker);
        let served = if worker_ref.requests < half {
            responder.serve(move |call| handle(call, keep_ref, worker_ref))
        } else {
            // The worker's own poll loop.
            let mut watch = [PollFd::new(&responder, PollFlags::IN)];
            match poll(&mut watch, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(_) => return ExitCode::from(EXIT_SERVE),
            }
            match responder.try_serve(move |call| handle(call, keep_ref, worker_ref)) {
                Ok(None) => continue,
                Ok(Some(served)) => Ok(served),
                Err(error) => Err(error),
            }
        };
        drop(keep);
        match served {
            Ok(Served::Hello | Served::Replied { .. }) => {}
            Ok(_) => worker.failures += 1,
            Err(_) => return ExitCode::from(EXIT_SERVE),
        }
        if worker.finished {
            break;
        }
        if worker.requests > 0 && worker.requests.is_multiple_of(EVENT_EVERY) {
            let mut attach = Attach::<MAX_FDS>::new();
            let sent = attach.attach(stats.as_fd()).and_then(|slot| {
                let event = Event::Stats {
                    requests: worker.requests,
                    stats: slot,
                    stats_id,
                };
                responder.emit(&event, attach.as_slice())
            });
            match sent {
                Ok(()) => worker.events += 1,
                Err(_) => return ExitCode::from(EXIT_SERVE),
            }
        }
    }
    let (allocations, _) = since(worker.warm);
    if allocations != 0 {
        ExitCode::from(EXIT_ALLOCATED)
    } else if worker.failures != 0 {
        ExitCode::from(EXIT_FAILURES)
    } else {
        ExitCode::SUCCESS
    }
}

/// Counted since `warm` (everything, if the warm-up never ended).
fn since(warm: Option<(u64, u64)>) -> (u64, u64) {
    let (start, end) = (warm.unwrap_or((0, 0)), counters());
    (end.0 - start.0, end.1 - start.1)
}

/// The child's handler: checks the files, marks the buffer with the frame
/// number and sends it back.
fn handle<'a, 'f>(
    call: Call<'a, '_, 'f, Frames, MAX_FDS>,
    keep: &'f mut Option<OwnedFd>,
    worker: &mut Worker,
) -> Result<Reply, CallError<NoError>> {
    match call.request {
        Request::Process {
            seq,
            buffer,
            buffer_id,
            params,
        } => {
            worker.requests += 1;
            if let Some((slot, id)) = params {
                let params = call.fds.claim(slot)?;
                if identity(&params) != id {
                    worker.failures += 1;
                }
            }
            let fd = call.fds.claim(buffer)?;
            if identity(&fd) != buffer_id {
                worker.failures += 1;
            }
            if rustix::io::pwrite(&fd, &seq.to_le_bytes(), 0) != Ok(4) {
                worker.failures += 1;
            }
            let fd: &'f OwnedFd = keep.insert(fd);
            let buffer = call.reply_fds.attach(fd.as_fd())?;
            Ok(Reply::Done { seq, buffer })
        }
        Request::Finish => {
            worker.finished = true;
            let (allocations, bytes) = since(worker.warm);
            Ok(Reply::Finished {
                allocations,
                bytes,
                failures: worker.failures,
                requests: worker.requests,
                events: worker.events,
            })
        }
    }
}

// ---- parent: the caller ------------------------------------------------------------

/// The files the parent sends: frame buffers and parameter blocks.
struct Files {
    buffers: [OwnedFd; DEPTH],
    buffer_ids: [FileId; DEPTH],
    params: [OwnedFd; 2],
    param_ids: [FileId; 2],
}

/// What the parent saw.
#[derive(Default)]
struct Seen {
    replies: u32,
    events: u32,
    failures: u32,
    /// The `requests` field of the last event.
    last_event: u32,
}

impl Seen {
    fn event(&mut self, event: &Event, mut fds: Claims<MAX_FDS>) {
        let Event::Stats {
            requests,
            stats,
            stats_id,
        } = *event;
        self.events += 1;
        if requests != self.last_event + EVENT_EVERY {
            self.failures += 1;
        }
        self.last_event = requests;
        match fds.claim(stats) {
            Ok(fd) if identity(&fd) == stats_id => {}
            _ => self.failures += 1,
        }
    }

    /// The reply to frame `seq`, sent with `buffer` (index into
    /// `files.buffers`).
    fn reply(
        &mut self,
        files: &Files,
        seq: u32,
        buffer: usize,
        reply: &Reply,
        mut fds: Claims<MAX_FDS>,
    ) {
        self.replies += 1;
        let Reply::Done {
            seq: got,
            buffer: slot,
        } = *reply
        else {
            self.failures += 1;
            return;
        };
        if got != seq || fds.len() != 1 {
            self.failures += 1;
        }
        let Ok(fd) = fds.claim(slot) else {
            self.failures += 1;
            return;
        };
        // The same file came back, and the child wrote the frame number
        // into it.
        let mut mark = [0u8; 4];
        if identity(&fd) != files.buffer_ids[buffer]
            || rustix::io::pread(&fd, &mut mark, 0) != Ok(4)
            || mark != seq.to_le_bytes()
        {
            self.failures += 1;
        }
    }
}

/// The request for frame `seq`: a buffer (chosen by `seq`) and, for odd
/// frames, a parameter block too. Returns the request and the buffer's
/// index.
fn request<'f>(files: &'f Files, seq: u32, attach: &mut Attach<'f, MAX_FDS>) -> (Request, usize) {
    let k = seq as usize % DEPTH;
    let buffer = attach.attach(files.buffers[k].as_fd()).expect("attach");
    let params = (seq % 2 == 1).then(|| {
        let p = seq as usize / 2 % 2;
        let slot = attach.attach(files.params[p].as_fd()).expect("attach");
        (slot, files.param_ids[p])
    });
    let request = Request::Process {
        seq,
        buffer,
        buffer_id: files.buffer_ids[k],
        params,
    };
    (request, k)
}

/// Frames `from..to` through the blocking `call`.
fn blocking_calls(
    caller: &mut Caller<'_, Frames, MAX_FDS, DEPTH>,
    files: &Files,
    seen: &mut Seen,
    from: u32,
    to: u32,
) {
    for seq in from..to {
        let mut attach = Attach::new();
        let (request, k) = request(files, seq, &mut attach);
        let got = caller.call(&request, attach.as_slice(), TIMEOUT, |event, fds| {
            seen.event(&event, fds);
        });
        match got {
            Ok((reply, fds)) => seen.reply(files, seq, k, &reply, fds),
            Err(_) => seen.failures += 1,
        }
    }
}

/// Frames `from..to` through `start` and `poll`, [`DEPTH`] in flight, in a
/// `poll` loop bounded by `poll_timeout`.
fn polled_calls(
    caller: &mut Caller<'_, Frames, MAX_FDS, DEPTH>,
    files: &Files,
    seen: &mut Seen,
    from: u32,
    to: u32,
) {
    // `(cookie, seq, buffer)` of the calls in flight.
    let mut flying = heapless::Vec::<(Cookie, u32, usize), DEPTH>::new();
    let mut next = from;
    let mut done = from;
    while done < to {
        while next < to && !flying.is_full() {
            let mut attach = Attach::new();
            let (request, k) = request(files, next, &mut attach);
            match caller.start(&request, attach.as_slice(), Some(TIMEOUT)) {
                Ok(cookie) => {
                    let _ = flying.push((cookie, next, k));
                    next += 1;
                }
                Err(Error::WouldBlock) => break,
                Err(_) => {
                    seen.failures += 1;
                    return;
                }
            }
        }
        if caller.in_flight() != flying.len() {
            seen.failures += 1;
            return;
        }
        let timeout = caller.until_next_deadline().map(|left| Timespec {
            tv_sec: left.as_secs() as _,
            tv_nsec: left.subsec_nanos() as _,
        });
        let mut watch = [PollFd::new(&*caller, PollFlags::IN)];
        match poll(&mut watch, timeout.as_ref()) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => {
                seen.failures += 1;
                return;
            }
        }
        loop {
            match caller.try_incoming() {
                Ok(None) => break,
                Ok(Some(Incoming::Reply { cookie, reply, fds })) => {
                    match flying.iter().position(|&(c, ..)| c == cookie) {
                        Some(at) => {
                            let (_, seq, k) = flying.swap_remove(at);
                            seen.reply(files, seq, k, &reply, fds);
                        }
                        None => seen.failures += 1,
                    }
                    done += 1;
                }
                Ok(Some(Incoming::Event { event, fds })) => seen.event(&event, fds),
                Ok(Some(_)) | Err(_) => {
                    seen.failures += 1;
                    return;
                }
            }
        }
    }
}

fn parent() {
    assert!(allocator_counts(), "the counting allocator is installed");
    let (channel, remote) = Channel::<MAX_FDS>::create().unwrap();
    // Inheritable by the child only: no other thread runs in this process.
    fcntl_setfd(&remote, FdFlags::empty()).unwrap();
    let mut child = harness::child_command([remote.as_raw_fd().to_string()])
        .spawn()
        .expect("spawn the responder");
    drop(remote);

    let buffers: [OwnedFd; DEPTH] = std::array::from_fn(|k| memfd(&[k as u8; 64]));
    let params = [memfd(b"params 0"), memfd(b"params 1")];
    let files = Files {
        buffer_ids: std::array::from_fn(|k| identity(&buffers[k])),
        param_ids: [identity(&params[0]), identity(&params[1])],
        buffers,
        params,
    };
    let (mut out, mut inbox) = ([0u8; BUFFER], [0u8; BUFFER]);
    let mut caller = Caller::<Frames, MAX_FDS, DEPTH>::new(channel, &mut out, &mut inbox).unwrap();
    let mut seen = Seen::default();

    // Warm-up: both kinds of call.
    blocking_calls(&mut caller, &files, &mut seen, 0, WARMUP / 2);
    polled_calls(&mut caller, &files, &mut seen, WARMUP / 2, WARMUP);
    assert_eq!(seen.failures, 0, "warm-up calls that went wrong");

    // Counted: the child counts from its WARMUP-th request on.
    let start = counters();
    let half = WARMUP + CALLS / 2;
    blocking_calls(&mut caller, &files, &mut seen, WARMUP, half);
    polled_calls(&mut caller, &files, &mut seen, half, WARMUP + CALLS);
    let end = counters();
    let parent = (end.0 - start.0, end.1 - start.1);

    let (reply, _) = caller
        .call(&Request::Finish, &[], TIMEOUT, |event, fds| {
            seen.event(&event, fds);
        })
        .expect("the child's counts");
    let Reply::Finished {
        allocations,
        bytes,
        failures,
        requests,
        events,
    } = reply
    else {
        panic!("not the child's counts: {reply:?}");
    };
    drop(caller);
    let status = wait_child(&mut child, "the responder", common::TEST_BOUND);

    eprintln!(
        "{CALLS} calls after {WARMUP} of warm-up: parent allocated {} times ({} bytes), \
         child {allocations} times ({bytes} bytes); {} replies, {} events ({events} emitted)",
        parent.0, parent.1, seen.replies, seen.events
    );
    assert_eq!(seen.failures, 0, "calls, replies or events that went wrong");
    assert_eq!(failures, 0, "requests the child found wrong");
    assert_eq!(requests, WARMUP + CALLS, "requests the child handled");
    assert_eq!(seen.replies, WARMUP + CALLS, "replies");
    assert_eq!(seen.events, (WARMUP + CALLS) / EVENT_EVERY, "events");
    assert_eq!(events, seen.events, "events emitted and received");
    assert_eq!(
        parent,
        (0, 0),
        "the caller allocated {} times, {} bytes",
        parent.0,
        parent.1
    );
    assert_eq!(
        (allocations, bytes),
        (0, 0),
        "the responder allocated {allocations} times, {bytes} bytes"
    );
    assert_eq!(status.code(), Some(0), "responder exit status: {status}");
}
