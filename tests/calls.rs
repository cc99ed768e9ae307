//! Typed calls (`ipc_unixsocket::calls`) end to end, with the worker on a
//! thread of this process: cookies, late replies, events, rejections, fd
//! slots, hellos, the limits of the call table, and a property test.
//! The worker as a separate process (killed, hung): `tests/calls_process.rs`.
//!
//! Synchronisation is by the sockets themselves, `mpsc` channels and joins;
//! nothing sleeps. Tests that count fds take `common::serial()` first.

mod calls_protocol;
mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use calls_protocol::{
    BUF, CALLS, Event, Forged, Isp, MAX_FDS, Reply, Request, Wire, WorkerLog, contents, fnv, memfd,
    run_worker,
};
use common::{Watchdog, open_fds, serial};
use ipc_unixsocket::calls::{
    Attach, CallError, CallHeader, Caller, Claims, Cookie, Differs, FdSlot, Hello, Incoming, Kind,
    Protocol, Rejection, Responder, Schema, Served,
};
use ipc_unixsocket::{Channel, Error};
use rustix::event::{PollFd, PollFlags, poll};

type TestCaller<'b> = Caller<'b, Isp, MAX_FDS, CALLS>;

/// Far beyond what any reply takes here (a round trip between threads
/// takes microseconds); reaching it fails the test, within seconds rather
/// than at the watchdog.
const LONG: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Helpers.

/// A worker thread serving `channel`; `Slow` requests wait at a gate that
/// opens once per `go` message, and tell `entered` when they reach it.
struct Worker {
    thread: thread::JoinHandle<WorkerLog>,
    go: mpsc::Sender<()>,
    entered: mpsc::Receiver<()>,
}

impl Worker {
    fn spawn(channel: Channel<MAX_FDS>) -> Self {
        let (go, gate) = mpsc::channel();
        let (enter, entered) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("worker".into())
            .spawn(move || {
                run_worker(channel, move || {
                    let _ = enter.send(());
                    let _ = gate.recv();
                })
            })
            .expect("spawn worker");
        Self {
            thread,
            go,
            entered,
        }
    }

    /// Waits until a `Slow` request is at the gate.
    fn wait_at_gate(&self) {
        self.entered
            .recv_timeout(LONG)
            .expect("the worker never reached its gate");
    }

    /// Lets one `Slow` request through.
    fn open_gate(&self) {
        self.go.send(()).expect("worker gone");
    }

    /// Joins the worker (the caller must be dropped first).
    fn join(self) -> WorkerLog {
        drop(self.go);
        self.thread.join().expect("worker panicked")
    }
}

/// Waits until the caller's socket is readable or the first call deadline
/// has passed; fails the test if neither happens within `LONG`.
fn wait_for(caller: &TestCaller<'_>) {
    wait_readable(caller.as_fd(), caller.until_next_deadline());
}

fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, deadline_in: Option<Duration>) {
    let bound = deadline_in.map_or(LONG, |left| left.min(LONG));
    let timeout = rustix::event::Timespec {
        tv_sec: bound.as_secs() as _,
        tv_nsec: bound.subsec_nanos() as _,
    };
    let mut watch = [PollFd::new(&fd, PollFlags::IN)];
    match poll(&mut watch, Some(&timeout)) {
        Ok(0) if deadline_in.is_none() => panic!("nothing arrived within {LONG:?}"),
        Ok(_) | Err(rustix::io::Errno::INTR) => {}
        Err(errno) => panic!("poll: {errno}"),
    }
}

/// The next thing `poll` reports, mapped by `map` (which may claim fds);
/// waits for it as a main loop would.
fn next<T>(caller: &mut TestCaller<'_>, map: impl FnOnce(Incoming<'_, Isp, MAX_FDS>) -> T) -> T {
    let mut map = Some(map);
    loop {
        if let Some(incoming) = caller.try_incoming().expect("poll") {
            return map.take().unwrap()(incoming);
        }
        wait_for(caller);
    }
}

/// What the tests compare `try_incoming`'s reports by: owned, with fd contents.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Reply { cookie: Cookie, reply: String },
    Exported { cookie: Cookie, contents: Vec<u8> },
    Event(String),
    Frame { seq: u32, contents: Vec<u8> },
    Failed { cookie: Cookie, error: Error },
    BadEvent(Error),
}

fn seen(incoming: Incoming<'_, Isp, MAX_FDS>) -> Seen {
    match incoming {
        Incoming::Reply {
            cookie,
            reply: Reply::Exported { file },
            mut fds,
        } => Seen::Exported {
            cookie,
            contents: contents(fds.claim(file).expect("exported fd").as_fd()),
        },
        Incoming::Reply { cookie, reply, .. } => Seen::Reply {
            cookie,
            reply: format!("{reply:?}"),
        },
        Incoming::Event {
            event: Event::Frame { seq, buffer },
            mut fds,
        } => Seen::Frame {
            seq,
            contents: contents(fds.claim(buffer).expect("frame fd").as_fd()),
        },
        Incoming::Event { event, .. } => Seen::Event(format!("{event:?}")),
        Incoming::Failed { cookie, error } => Seen::Failed { cookie, error },
        Incoming::BadEvent(error) => Seen::BadEvent(error),
        other => panic!("an outcome these tests do not know: {other:?}"),
    }
}

/// A blocking `Ping(n)` that must come back as `Pong(n)`.
fn ping<P>(caller: &mut Caller<'_, P, MAX_FDS, CALLS>, request: &P::Request<'_>, n: u32)
where
    P: for<'a> Protocol<Reply<'a> = Reply<'a>>,
{
    let (reply, fds) = caller
        .call(request, &[], LONG, |event, _| {
            panic!("unexpected {event:?}")
        })
        .expect("ping");
    assert_eq!(reply, Reply::Pong(n));
    assert!(fds.is_empty());
}

/// Slots 0..n of a throwaway `Attach`: slot numbers the test can put in a
/// request without sending that many fds.
fn slots(n: usize) -> Vec<FdSlot> {
    let file = memfd(b"");
    let mut attach = Attach::<MAX_FDS>::new();
    (0..n)
        .map(|_| attach.attach(file.as_fd()).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------
// A raw worker: the call layer's wire format written by hand, for replies
// in an order `Responder` never produces.

fn raw_send<T: serde::Serialize + ?Sized>(
    channel: &Channel<MAX_FDS>,
    kind: Kind,
    cookie: u32,
    body: &T,
    fds: &[std::os::fd::BorrowedFd<'_>],
) {
    let mut data = [0u8; BUF];
    data[..8].copy_from_slice(&CallHeader { kind, cookie }.encode());
    let used = postcard::to_slice(body, &mut data[8..]).unwrap().len();
    channel.send(&data[..8 + used], fds).expect("raw send");
}

/// Receives one call record: its header, body, and fds.
fn raw_recv(channel: &Channel<MAX_FDS>) -> (CallHeader, Vec<u8>, Vec<OwnedFd>) {
    let mut data = [0u8; BUF];
    let mut fds = heapless::Vec::<OwnedFd, MAX_FDS>::new();
    let got = channel
        .recv_timeout(&mut data, &mut fds, LONG)
        .expect("raw recv");
    let header = CallHeader::decode(&data[..got.data_len]).expect("call header");
    (
        header,
        data[8..got.data_len].to_vec(),
        fds.into_iter().collect(),
    )
}

/// Exchanges hellos as `Isp` on a raw channel.
fn raw_hello(channel: &Channel<MAX_FDS>) {
    let (header, body, _) = raw_recv(channel);
    assert_eq!(header.kind, Kind::Hello);
    assert_eq!(
        postcard::from_bytes::<Hello<'_>>(&body).unwrap(),
        Hello::of::<Isp>()
    );
    raw_send(channel, Kind::Hello, 0, &Hello::of::<Isp>(), &[]);
}

/// Receives one `Export` request: its cookie and contents.
fn raw_export_request(channel: &Channel<MAX_FDS>) -> (u32, Vec<u8>) {
    let (header, body, fds) = raw_recv(channel);
    assert_eq!(header.kind, Kind::Request);
    assert!(fds.is_empty());
    match postcard::from_bytes::<Request<'_>>(&body).unwrap() {
        Request::Export { contents } => (header.cookie, contents.to_vec()),
        other => panic!("unexpected {other:?}"),
    }
}

/// Sends `Exported` for `cookie` with a memfd holding `bytes`.
fn raw_export_reply(channel: &Channel<MAX_FDS>, cookie: u32, bytes: &[u8]) {
    let file = memfd(bytes);
    let mut attach = Attach::<MAX_FDS>::new();
    let reply = Reply::Exported {
        file: attach.attach(file.as_fd()).unwrap(),
    };
    raw_send(channel, Kind::Reply, cookie, &reply, attach.as_slice());
}

// ---------------------------------------------------------------------------
// 1. Cookies.

/// Three started calls answered last first: each reply (and the fd it
/// carries) comes back with the cookie of the request it answers. Fails if
/// replies were matched by order, or the fds went with the wrong reply.
#[test]
fn out_of_order_replies_are_matched_by_cookie() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let (pipeline, worker) = Channel::<MAX_FDS>::pair().unwrap();
    let raw = thread::spawn(move || {
        raw_hello(&worker);
        let asked: Vec<_> = (0..3).map(|_| raw_export_request(&worker)).collect();
        for (cookie, contents) in asked.iter().rev() {
            raw_export_reply(&worker, *cookie, contents);
        }
        worker
    });
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = TestCaller::new(pipeline, &mut out, &mut inbox).unwrap();
    let sent: Vec<(Cookie, &[u8])> = [&b"first"[..], b"second", b"third"]
        .into_iter()
        .map(|contents| {
            let cookie = caller
                .start(&Request::Export { contents }, &[], Some(LONG))
                .unwrap();
            (cookie, contents)
        })
        .collect();
    let got: Vec<Seen> = (0..3).map(|_| next(&mut caller, seen)).collect();
    let expected: Vec<Seen> = sent
        .iter()
        .rev()
        .map(|(cookie, contents)| Seen::Exported {
            cookie: *cookie,
            contents: contents.to_vec(),
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(caller.in_flight(), 0);
    assert_eq!(caller.late_replies(), 0);
    drop(raw.join().unwrap());
}

/// A blocking call skips a reply with a cookie it never used (counted as a
/// late reply, its fd closed) and returns its own. Fails if `call` took
/// the first reply whatever its cookie, or kept the stray fd open.
#[test]
fn a_blocking_call_ignores_a_reply_with_another_cookie() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let (pipeline, worker) = Channel::<MAX_FDS>::pair().unwrap();
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let baseline = open_fds();
    let raw = thread::spawn(move || {
        raw_hello(&worker);
        let (cookie, contents) = raw_export_request(&worker);
        raw_export_reply(&worker, cookie.wrapping_add(100), b"stray");
        raw_export_reply(&worker, cookie, &contents);
        worker
    });
    let mut caller = TestCaller::new(pipeline, &mut out, &mut inbox).unwrap();
    let request = Request::Export { contents: b"mine" };
    let (reply, mut fds) = caller.call(&request, &[], LONG, |_, _| {}).unwrap();
    let Reply::Exported { file } = reply else {
        panic!("unexpected {reply:?}");
    };
    assert_eq!(contents(fds.claim(file).unwrap().as_fd()), b"mine");
    assert_eq!(caller.late_replies(), 1);
    drop(fds);
    // The raw worker's memfds are closed once it has sent them.
    let worker = raw.join().unwrap();
    assert_eq!(open_fds(), baseline, "the stray reply's fd is still open");
    drop((caller, worker));
}

// ---------------------------------------------------------------------------
// 2. Late replies.

/// `call` times out (not before its deadline); the reply that comes after
/// is dropped, counted, its fd closed, and the next call gets its own
/// reply. Fails if the late reply were delivered to the next call, not
/// counted, or its fd kept.
#[test]
fn late_reply_after_call_timeout_is_dropped_counted_and_closed() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let (pipeline, channel) = Channel::<MAX_FDS>::pair().unwrap();
    let worker = Worker::spawn(channel);
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = TestCaller::new(pipeline, &mut out, &mut inbox).unwrap();
    let timeout = Duration::from_millis(100);
    let began = Instant::now();
    let late = caller.call(
        &Request::Slow { contents: b"late" },
        &[],
        timeout,
        |_, _| {},
    );
    assert_eq!(late.unwrap_err(), Error::TimedOut);
    assert!(began.elapsed() >= timeout, "timed out before its deadline");
    worker.wait_at_gate();
    let baseline = open_fds();
    worker.open_gate();
    let (reply, fds) = caller
        .call(&Request::Ping(2), &[], LONG, |_, _| {})
        .unwrap();
    assert_eq!(reply, Reply::Pong(2));
    assert!(fds.is_empty());
    assert_eq!(caller.late_replies(), 1);
    assert_eq!(caller.discarded(), 0);
    assert_eq!(open_fds(), baseline, "the late reply's fd is still open");
    drop(caller);
    let log = worker.join();
    assert_eq!(log.served.len(), 4, "{log:?}"); // hello, slow, ping, gone
}

/// The same with `start`/`poll`: the call comes back `Failed{TimedOut}`;
/// the late reply is dropped by `poll` (nothing reported), counted, its fd
/// closed; the next started call gets its own reply.
#[test]
fn late_reply_after_started_call_timeout_is_dropped_counted_and_closed() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let (pipeline, channel) = Channel::<MAX_FDS>::pair().unwrap();
    let worker = Worker::spawn(channel);
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = TestCaller::new(pipeline, &mut out, &mut inbox).unwrap();
    let timeout = Duration::from_millis(100);
    let began = Instant::now();
    let slow = caller
        .start(&Request::Slow { contents: b"late" }, &[], Some(timeout))
        .unwrap();
    let failed = next(&mut caller, seen);
    assert!(began.elapsed() >= timeout, "timed out before its deadline");
    assert_eq!(
        failed,
        Seen::Failed {
            cookie: slow,
            error: Error::TimedOut
        }
    );
    assert_eq!(caller.in_flight(), 0);
    worker.wait_at_gate();
    let baseline = open_fds();
    worker.open_gate();
    wait_readable(caller.as_fd(), None);
    assert!(
        caller.try_incoming().unwrap().is_none(),
        "a late reply was reported"
    );
    assert_eq!(caller.late_replies(), 1);
    assert_eq!(open_fds(), baseline, "the late reply's fd is still open");
    let ping = caller.start(&Request::Ping(5), &[], Some(LONG)).unwrap();
    assert_eq!(
        next(&mut caller, seen),
        Seen::Reply {
            cookie: ping,
            reply: "Pong(5)".into()
        }
    );
    drop(caller);
    worker.join();
}

// ---------------------------------------------------------------------------
// 3. Events.

fn frame_event(responder: &mut Responder<'_, Isp, MAX_FDS>, seq: u32) {
    let file = memfd(format!("frame {seq}").as_bytes());
    let mut attach = Attach::<MAX_FDS>::new();
    let buffer = attach.attach(file.as_fd()).unwrap();
    responder
        .emit(&Event::Frame { seq, buffer }, attach.as_slice())
        .unwrap();
}

/// Events sent before, between and after replies all arrive, in order,
/// with their fds: to `on_event` during blocking calls (an event sent after
/// a reply goes to the next call), and interleaved with replies from
/// `poll`. Fails if an event is lost, reordered, or taken for a reply.
#[test]
fn events_interleaved_with_replies_arrive_in_order() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let (pipeline, channel) = Channel::<MAX_FDS>::pair().unwrap();
    let worker = thread::spawn(move || {
        let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
        let mut r = Responder::<Isp, MAX_FDS>::new(channel, &mut out, &mut inbox).unwrap();
        let serve = |r: &mut Responder<'_, Isp, MAX_FDS>| {
            let served = r.serve(|call| match call.request {
                Request::Ping(n) => Ok(Reply::Pong(n)),
                other => panic!("unexpected {other:?}"),
            });
            assert!(matches!(served, Ok(Served::Replied { .. })), "{served:?}");
        };
        assert_eq!(r.serve(|_| unreachable!()), Ok(Served::Hello));
        // Blocking call 1: two events before the reply, one after.
        r.emit(&Event::Progress { seq: 0 }, &[]).unwrap();
        frame_event(&mut r, 1);
        serve(&mut r);
        r.emit(&Event::Metadata(b"after reply 1"), &[]).unwrap();
        // Blocking call 2.
        r.emit(&Event::Progress { seq: 3 }, &[]).unwrap();
        serve(&mut r);
        // Three started calls.
        frame_event(&mut r, 4);
        serve(&mut r);
        r.emit(&Event::Progress { seq: 5 }, &[]).unwrap();
        r.emit(&Event::Progress { seq: 6 }, &[]).unwrap();
        serve(&mut r);
        serve(&mut r);
        frame_event(&mut r, 7);
        assert_eq!(r.serve(|_| unreachable!()), Err(Error::Disconnected));
    });
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = TestCaller::new(pipeline, &mut out, &mut inbox).unwrap();
    let mut events = Vec::new();
    let mut on_event = |event: Event<'_>, mut fds: Claims<MAX_FDS>| {
        events.push(match event {
            Event::Frame { seq, buffer } => Seen::Frame {
                seq,
                contents: contents(fds.claim(buffer).unwrap().as_fd()),
            },
            other => Seen::Event(format!("{other:?}")),
        });
    };
    let (reply, _) = caller
        .call(&Request::Ping(1), &[], LONG, &mut on_event)
        .unwrap();
    assert_eq!(reply, Reply::Pong(1));
    let (reply, _) = caller
        .call(&Request::Ping(2), &[], LONG, &mut on_event)
        .unwrap();
    assert_eq!(reply, Reply::Pong(2));
    assert_eq!(
        events,
        [
            Seen::Event("Progress { seq: 0 }".into()),
            Seen::Frame {
                seq: 1,
                contents: b"frame 1".to_vec()
            },
            Seen::Event(format!("{:?}", Event::Metadata(b"after reply 1"))),
            Seen::Event("Progress { seq: 3 }".into()),
        ]
    );
    let cookies: Vec<Cookie> = (10..13)
        .map(|n| caller.start(&Request::Ping(n), &[], Some(LONG)).unwrap())
        .collect();
    let got: Vec<Seen> = (0..7).map(|_| next(&mut caller, seen)).collect();
    let pong = |at: usize| Seen::Reply {
        cookie: cookies[at],
        reply: format!("Pong({})", 10 + at),
    };
    assert_eq!(
        got,
        [
            Seen::Frame {
                seq: 4,
                contents: b"frame 4".to_vec()
            },
            pong(0),
            Seen::Event("Progress { seq: 5 }".into()),
            Seen::Event("Progress { seq: 6 }".into()),
            pong(1),
            pong(2),
            Seen::Frame {
                seq: 7,
                contents: b"frame 7".to_vec()
            },
        ]
    );
    assert!(caller.try_incoming().unwrap().is_none());
    drop(caller);
    worker.join().unwrap();
}

// ---------------------------------------------------------------------------
// 6. Rejections.

/// An undecodable body (short, invalid UTF-8, trailing bytes) and fd slots out of range or claimed twice are each refused
/// with the matching `Rejected(..)`; the fds of the refused requests are
/// closed; and both ends keep going (the next call succeeds). Fails if a
/// rejection is misreported, a refused request's fds stay open, or either
/// side stops serving.
#[test]
fn rejected_requests_are_reported_and_both_sides_keep_going() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let (pipeline, channel) = Channel::<MAX_FDS>::pair().unwrap();
    let worker = Worker::spawn(channel);
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = Caller::<Forged, MAX_FDS, CALLS>::new(pipeline, &mut out, &mut inbox).unwrap();
    let file = memfd(b"slot 0");
    let s = slots(3);
    // Warm up: the worker has made its export memfd and served the hello.
    ping(&mut caller, &Wire::Typed(Request::Ping(99)), 99);
    let baseline = open_fds();
    let cases: [(&str, Wire<'_>, Rejection); 5] = [
        // Echo (variant 1) whose text claims 5 bytes and has 1.
        ("short body", Wire::Bytes(&[1, 5, b'a']), Rejection::BadBody),
        (
            "invalid UTF-8",
            Wire::Bytes(&[1, 2, 0xff, 0xfe, 0]),
            Rejection::BadBody,
        ),
        // Ping(1) and a byte more.
        ("trailing byte", Wire::Bytes(&[0, 1, 9]), Rejection::BadBody),
        (
            "slot out of range",
            Wire::Typed(Request::Pair {
                first: s[0],
                second: s[2],
            }),
            Rejection::BadFdSlot,
        ),
        (
            "slot claimed twice",
            Wire::Typed(Request::Pair {
                first: s[0],
                second: s[0],
            }),
            Rejection::BadFdSlot,
        ),
    ];
    let mut failures = Vec::new();
    for (n, (what, request, rejection)) in cases.iter().enumerate() {
        let got = caller.call(request, &[file.as_fd()], LONG, |_, _| {});
        let got = got
            .map(|(reply, _)| format!("{reply:?}"))
            .map_err(Error::from);
        if got != Err(Error::Rejected(*rejection)) {
            failures.push(format!(
                "{what}: expected Rejected({rejection:?}), got {got:?}"
            ));
        }
        // Counted once the next call is answered: a request refused before
        // its handler runs has its fds closed after the error reply is sent.
        ping(&mut caller, &Wire::Typed(Request::Ping(n as u32)), n as u32);
        assert_eq!(
            open_fds(),
            baseline,
            "{what}: the request's fd is still open"
        );
    }
    drop(caller);
    let log = worker.join();
    let refused: Vec<Rejection> = log
        .served
        .iter()
        .filter_map(|served| match served {
            Ok(Served::Refused { rejection, .. }) => Some(*rejection),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), cases.len(), "{log:?}");
    assert_eq!(log.served.len(), 2 + 2 * cases.len() + 1, "{log:?}");
    assert!(failures.is_empty(), "{failures:#?}\nworker: {refused:?}");
}

// ---------------------------------------------------------------------------
// 7. Unclaimed fds.

/// A handler that claims none, one, two or all three of a request's fds:
/// the fds it claims carry the contents sent in their slots, and every fd
/// (claimed and dropped, or unclaimed) is closed once the call returns;
/// likewise a reply's fds that the caller does not claim. Fails if `Claims`
/// leaked what was not claimed.
#[test]
fn unclaimed_fds_are_closed_on_both_sides() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let (pipeline, channel) = Channel::<MAX_FDS>::pair().unwrap();
    let worker = Worker::spawn(channel);
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = TestCaller::new(pipeline, &mut out, &mut inbox).unwrap();
    let files: Vec<(OwnedFd, Vec<u8>)> = (0..3)
        .map(|n| {
            let bytes = format!("buffer {n}").into_bytes();
            (memfd(&bytes), bytes)
        })
        .collect();
    // Warm up: the worker has made its export memfd and served the hello.
    ping(&mut caller, &Request::Ping(0), 0);
    let baseline = open_fds();
    for claim in 0..=3u8 {
        let mut attach = Attach::<MAX_FDS>::new();
        let taken: Vec<FdSlot> = files
            .iter()
            .map(|(fd, _)| attach.attach(fd.as_fd()).unwrap())
            .collect();
        // Listed last first: the handler claims by slot, not by position.
        let slots = [Some(taken[2]), Some(taken[1]), Some(taken[0]), None];
        let request = Request::Buffers { slots, claim };
        let (reply, _) = caller
            .call(&request, attach.as_slice(), LONG, |_, _| {})
            .unwrap();
        let expected: Vec<Option<u64>> = (0..MAX_FDS)
            .map(|at| (at < usize::from(claim)).then(|| fnv(&files[2 - at].1)))
            .collect();
        assert_eq!(reply, Reply::Digests(expected.try_into().unwrap()));
        assert_eq!(open_fds(), baseline, "claiming {claim} of 3 fds leaked");
    }
    // A reply's fd the caller leaves unclaimed.
    let (reply, fds) = caller
        .call(&Request::Export { contents: b"x" }, &[], LONG, |_, _| {})
        .unwrap();
    assert!(matches!(reply, Reply::Exported { .. }));
    assert_eq!(fds.len(), 1);
    drop(fds);
    assert_eq!(open_fds(), baseline, "an unclaimed reply fd leaked");
    drop(caller);
    worker.join();
}

// ---------------------------------------------------------------------------
// 8. Hellos.

struct OtherName;
impl Protocol for OtherName {
    const NAME: &'static str = "test.other";
    const VERSION: u32 = Isp::VERSION;
    type Request<'a> = Request<'a>;
    type Reply<'a> = Reply<'a>;
    type Event<'a> = Event<'a>;
    type Error<'a> = ipc_unixsocket::calls::NoError;
}

struct NextVersion;
impl Protocol for NextVersion {
    const NAME: &'static str = Isp::NAME;
    const VERSION: u32 = Isp::VERSION + 1;
    type Request<'a> = Request<'a>;
    type Reply<'a> = Reply<'a>;
    type Event<'a> = Event<'a>;
    type Error<'a> = ipc_unixsocket::calls::NoError;
}

/// A responder of protocol `P` against an `Isp` caller: its `serve`
/// returns the mismatch for the caller's hello and then refuses every
/// request without calling the handler; the caller's `call` returns the
/// mismatch (and again for the next call), and `poll` reports a started
/// call as failed with it and then returns it.
fn mismatch<P: Protocol + 'static>(same_name: bool) {
    let (pipeline, channel) = Channel::<MAX_FDS>::pair().unwrap();
    let (report, reports) = mpsc::channel();
    let worker = thread::spawn(move || {
        let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
        let mut r = Responder::<P, MAX_FDS>::new(channel, &mut out, &mut inbox).unwrap();
        loop {
            let served = r.serve(|_| panic!("a request was handled despite the mismatch"));
            if served == Err(Error::Disconnected) {
                return;
            }
            report.send(served).unwrap();
        }
    });
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = TestCaller::new(pipeline, &mut out, &mut inbox).unwrap();
    let theirs = Error::ProtocolMismatch {
        same_name,
        peer_version: P::VERSION,
        differs: Differs::NONE,
    };
    let ours = Error::ProtocolMismatch {
        same_name,
        peer_version: Isp::VERSION,
        differs: Differs::NONE,
    };
    let first = caller.call(&Request::Ping(1), &[], LONG, |_, _| {});
    assert_eq!(first.unwrap_err(), theirs);
    let second = caller.call(&Request::Ping(2), &[], LONG, |_, _| {});
    assert_eq!(second.unwrap_err(), theirs);
    assert_eq!(caller.try_incoming().unwrap_err(), theirs);
    // The worker's side: the hello, then the one request that was sent
    // before the caller saw the worker's hello, refused unhandled.
    let served = || reports.recv_timeout(LONG).expect("worker stopped");
    assert_eq!(served(), Err(ours));
    let refused = served();
    assert!(
        matches!(
            refused,
            Ok(Served::Refused {
                rejection: Rejection::ProtocolMismatch,
                ..
            })
        ),
        "{refused:?}"
    );
    drop(caller);
    worker.join().unwrap();
    assert!(reports.try_recv().is_err(), "the worker served more");

    // start/poll: the started call fails with the mismatch, then poll does.
    let (pipeline, channel) = Channel::<MAX_FDS>::pair().unwrap();
    let (mut wout, mut winbox) = ([0u8; BUF], [0u8; BUF]);
    let mut r = Responder::<P, MAX_FDS>::new(channel, &mut wout, &mut winbox).unwrap();
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = TestCaller::new(pipeline, &mut out, &mut inbox).unwrap();
    let cookie = caller.start(&Request::Ping(3), &[], Some(LONG)).unwrap();
    assert_eq!(r.serve(|_| panic!("handled")), Err(ours));
    assert_eq!(
        next(&mut caller, seen),
        Seen::Failed {
            cookie,
            error: theirs
        }
    );
    assert_eq!(caller.try_incoming().unwrap_err(), theirs);
    assert_eq!(
        caller
            .start(&Request::Ping(4), &[], Some(LONG))
            .unwrap_err(),
        theirs
    );
}

#[test]
fn protocol_mismatch_other_name_fails_both_sides() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    mismatch::<OtherName>(false);
}

#[test]
fn protocol_mismatch_same_name_other_version_fails_both_sides() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    mismatch::<NextVersion>(true);
}

/// A request naming a variant the responder's `Request` does not have (as
/// from a caller built against a newer definition) is refused as
/// `Rejection::UnknownVariant`, and the worker keeps serving. Fails if it
/// is reported as anything else (`BadBody`, say).
#[test]
fn unknown_variant_is_rejected_as_unknown_variant() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let (pipeline, channel) = Channel::<MAX_FDS>::pair().unwrap();
    let worker = Worker::spawn(channel);
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = Caller::<Forged, MAX_FDS, CALLS>::new(pipeline, &mut out, &mut inbox).unwrap();
    // Variant 100 of a 7-variant enum, then a field.
    let got = caller.call(&Wire::Bytes(&[100, 1]), &[], LONG, |_, _| {});
    let got = got
        .map(|(reply, _)| format!("{reply:?}"))
        .map_err(Error::from);
    ping(&mut caller, &Wire::Typed(Request::Ping(1)), 1);
    drop(caller);
    let log = worker.join();
    assert_eq!(got, Err(Error::Rejected(Rejection::UnknownVariant)));
    assert!(
        matches!(
            log.served[1],
            Ok(Served::Refused {
                rejection: Rejection::UnknownVariant,
                ..
            })
        ),
        "{log:?}"
    );
}

// ---------------------------------------------------------------------------
// The call table and one-way messages.

/// A blocking `call` while a started call is in flight is refused with
/// `CallsInFlight`, sends nothing, and the started call still gets its
/// reply. Fails if `call` sent its request or took the other's reply.
#[test]
fn call_with_started_calls_in_flight_is_calls_in_flight() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let (pipeline, channel) = Channel::<MAX_FDS>::pair().unwrap();
    let worker = Worker::spawn(channel);
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = TestCaller::new(pipeline, &mut out, &mut inbox).unwrap();
    let started = caller.start(&Request::Ping(1), &[], Some(LONG)).unwrap();
    let refused = caller.call(&Request::Ping(2), &[], LONG, |_, _| {});
    assert_eq!(refused.unwrap_err(), Error::CallsInFlight);
    assert_eq!(caller.in_flight(), 1);
    assert_eq!(
        next(&mut caller, seen),
        Seen::Reply {
            cookie: started,
            reply: "Pong(1)".into()
        }
    );
    ping(&mut caller, &Request::Ping(3), 3);
    drop(caller);
    let log = worker.join();
    // The hello, Ping(1), Ping(3), the hangup: Ping(2) was never sent.
    assert_eq!(log.served.len(), 4, "{log:?}");
}

/// `start` with `CALLS` calls in flight is refused with `TooManyCalls`
/// and sends nothing; once the replies are in, `start` works again. Fails
/// if the table overflowed or the refused request was sent.
#[test]
fn start_with_the_table_full_is_too_many_calls() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let (pipeline, channel) = Channel::<MAX_FDS>::pair().unwrap();
    let worker = Worker::spawn(channel);
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = TestCaller::new(pipeline, &mut out, &mut inbox).unwrap();
    let cookies: Vec<Cookie> = (0..CALLS as u32)
        .map(|n| caller.start(&Request::Ping(n), &[], Some(LONG)).unwrap())
        .collect();
    let refused = caller.start(&Request::Ping(99), &[], Some(LONG));
    assert_eq!(refused.unwrap_err(), Error::TooManyCalls { max: CALLS });
    assert_eq!(caller.in_flight(), CALLS);
    for (n, cookie) in cookies.iter().enumerate() {
        assert_eq!(
            next(&mut caller, seen),
            Seen::Reply {
                cookie: *cookie,
                reply: format!("Pong({n})")
            }
        );
    }
    let again = caller.start(&Request::Ping(7), &[], Some(LONG)).unwrap();
    assert_eq!(
        next(&mut caller, seen),
        Seen::Reply {
            cookie: again,
            reply: "Pong(7)".into()
        }
    );
    drop(caller);
    let log = worker.join();
    assert_eq!(log.served.len(), 1 + CALLS + 1 + 1, "{log:?}");
}

/// A request larger than the outgoing buffer is `EncodeFailed` from
/// `call`, `start` and `notify`, nothing is sent or left in flight, and the
/// next call works. Fails if a truncated request went out.
#[test]
fn request_larger_than_the_buffer_is_encode_failed() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let (pipeline, channel) = Channel::<MAX_FDS>::pair().unwrap();
    let worker = Worker::spawn(channel);
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = TestCaller::new(pipeline, &mut out, &mut inbox).unwrap();
    let big = vec![7u8; BUF];
    let request = Request::Echo {
        text: "too big",
        bytes: &big,
    };
    let called = caller.call(&request, &[], LONG, |_, _| {});
    assert_eq!(called.unwrap_err(), Error::EncodeFailed);
    assert_eq!(
        caller.start(&request, &[], Some(LONG)).unwrap_err(),
        Error::EncodeFailed
    );
    assert_eq!(
        caller.notify(&request, &[]).unwrap_err(),
        Error::EncodeFailed
    );
    assert_eq!(caller.in_flight(), 0);
    ping(&mut caller, &Request::Ping(1), 1);
    drop(caller);
    let log = worker.join();
    assert_eq!(log.served.len(), 3, "{log:?}"); // hello, ping, hangup
}

/// One-way notes are handled in order and answered with nothing: the next
/// call's reply is the only record that comes back. Fails if a note is
/// lost, or a reply to it arrives (it would be counted late, or be left
/// for `poll`).
#[test]
fn notify_is_handled_and_gets_no_reply() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let (pipeline, channel) = Channel::<MAX_FDS>::pair().unwrap();
    let worker = Worker::spawn(channel);
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = TestCaller::new(pipeline, &mut out, &mut inbox).unwrap();
    caller
        .notify(&Request::Note("frame 7 dropped"), &[])
        .unwrap();
    caller.notify(&Request::Note("frame 8 late"), &[]).unwrap();
    ping(&mut caller, &Request::Ping(1), 1);
    let cookie = caller.start(&Request::Ping(2), &[], Some(LONG)).unwrap();
    assert_eq!(
        next(&mut caller, seen),
        Seen::Reply {
            cookie,
            reply: "Pong(2)".into()
        }
    );
    assert!(caller.try_incoming().unwrap().is_none());
    assert_eq!((caller.late_replies(), caller.discarded()), (0, 0));
    drop(caller);
    let log = worker.join();
    assert_eq!(log.notes, ["frame 7 dropped", "frame 8 late"]);
    let one_way = log
        .served
        .iter()
        .filter(|s| **s == Ok(Served::OneWay))
        .count();
    assert_eq!(one_way, 2, "{log:?}");
}

/// Records that are not calls, sent raw to each end (no v1 header; a v1
/// record without a call header; a request sent to the caller), each with
/// fds: each end counts them in `discarded()`, closes their fds, and the
/// next call works. Fails if junk is taken for a reply or request, not
/// counted, or its fds leak.
#[test]
fn junk_records_are_discarded_with_their_fds_closed() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let (pipeline, channel) = Channel::<MAX_FDS>::pair().unwrap();
    // Second handles on both sockets, to write junk into them.
    let to_caller =
        Channel::<MAX_FDS>::adopt(channel.as_fd().try_clone_to_owned().unwrap()).unwrap();
    let to_worker =
        Channel::<MAX_FDS>::adopt(pipeline.as_fd().try_clone_to_owned().unwrap()).unwrap();
    let worker = Worker::spawn(channel);
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = TestCaller::new(pipeline, &mut out, &mut inbox).unwrap();
    ping(&mut caller, &Request::Ping(0), 0);
    let (a, b) = (memfd(b"junk a"), memfd(b"junk b"));
    let baseline = open_fds();
    for junk in [&to_caller, &to_worker] {
        common::send_raw(junk, b"no header at all", &[a.as_fd()]);
        junk.send(b"junk!junk!", &[a.as_fd(), b.as_fd()]).unwrap();
    }
    let mut request = [0u8; 9];
    request[..8].copy_from_slice(
        &CallHeader {
            kind: Kind::Request,
            cookie: 1,
        }
        .encode(),
    );
    to_caller.send(&request, &[b.as_fd()]).unwrap();
    ping(&mut caller, &Request::Ping(1), 1);
    assert_eq!(caller.discarded(), 3);
    assert_eq!(caller.late_replies(), 0);
    assert_eq!(open_fds(), baseline, "fds of junk records leaked");
    drop((caller, to_caller, to_worker));
    let log = worker.join();
    assert_eq!(log.discarded, 2, "{log:?}");
}

// ---------------------------------------------------------------------------
// 9. Property: random requests with random fds.

/// One random request and what its reply must be.
#[derive(Debug, Clone)]
enum Case {
    Ping(u32),
    Echo(String, Vec<u8>),
    /// Buffer contents, the order their slots are listed in, how many the
    /// handler claims.
    Buffers(Vec<Vec<u8>>, Vec<usize>, u8),
    Export(Vec<u8>),
}

fn case() -> impl proptest::strategy::Strategy<Value = Case> {
    use proptest::collection::vec;
    use proptest::prelude::*;
    let buffers = vec(vec(any::<u8>(), 0..300), 0..=MAX_FDS).prop_flat_map(|files| {
        let n = files.len();
        (
            Just(files),
            Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
            0..=n as u8,
        )
    });
    prop_oneof![
        any::<u32>().prop_map(Case::Ping),
        (".{0,40}", vec(any::<u8>(), 0..300)).prop_map(|(t, b)| Case::Echo(t, b)),
        buffers.prop_map(|(files, order, claim)| Case::Buffers(files, order, claim)),
        vec(any::<u8>(), 0..300).prop_map(Case::Export),
    ]
}

/// The fds a case sends, and the request that names them.
struct Prepared {
    files: Vec<OwnedFd>,
}

impl Case {
    fn prepare(&self) -> Prepared {
        let files = match self {
            Case::Buffers(files, ..) => files.iter().map(|c| memfd(c)).collect(),
            _ => Vec::new(),
        };
        Prepared { files }
    }

    /// Calls `send` with the request and its fds.
    fn send<T>(
        &self,
        prepared: &Prepared,
        send: impl FnOnce(&Request<'_>, &[std::os::fd::BorrowedFd<'_>]) -> T,
    ) -> T {
        let mut attach = Attach::<MAX_FDS>::new();
        let taken: Vec<FdSlot> = prepared
            .files
            .iter()
            .map(|fd| attach.attach(fd.as_fd()).unwrap())
            .collect();
        let request = match self {
            Case::Ping(n) => Request::Ping(*n),
            Case::Echo(text, bytes) => Request::Echo { text, bytes },
            Case::Buffers(_, order, claim) => {
                let mut slots = [None; MAX_FDS];
                for (at, file) in order.iter().enumerate() {
                    slots[at] = Some(taken[*file]);
                }
                Request::Buffers {
                    slots,
                    claim: *claim,
                }
            }
            Case::Export(contents) => Request::Export { contents },
        };
        send(&request, attach.as_slice())
    }

    /// Checks a reply (and its fds) against the case.
    fn check(&self, reply: Reply<'_>, mut fds: Claims<MAX_FDS>) -> Result<(), String> {
        let ok = match (self, reply) {
            (Case::Ping(n), Reply::Pong(m)) => *n == m && fds.is_empty(),
            (Case::Echo(t, b), Reply::Echoed { text, bytes }) => {
                t == text && b.as_slice() == bytes && fds.is_empty()
            }
            (Case::Buffers(files, order, claim), Reply::Digests(digests)) => {
                let expected: Vec<Option<u64>> = (0..MAX_FDS)
                    .map(|at| (at < usize::from(*claim)).then(|| fnv(&files[order[at]])))
                    .collect();
                digests.as_slice() == expected && fds.is_empty()
            }
            (Case::Export(c), Reply::Exported { file }) => {
                fds.len() == 1 && fds.claim(file).is_ok_and(|fd| contents(fd.as_fd()) == *c)
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("{self:?} answered with {reply:?}"))
        }
    }
}

/// Random batches of up to `CALLS` requests with 0..MAX_FDS memfds each,
/// sent one by one with `call` and then all at once with `start` and
/// collected with `poll` (matched by cookie): every reply is the one its
/// request asks for, the worker read each buffer through its slot (the
/// digests), exported fds carry their contents, and no fd leaks over the
/// whole run. Fails on any mismatch.
#[test]
fn random_requests_round_trip_through_call_and_start() {
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let (pipeline, channel) = Channel::<MAX_FDS>::pair().unwrap();
    let worker = Worker::spawn(channel);
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let caller = std::cell::RefCell::new(TestCaller::new(pipeline, &mut out, &mut inbox).unwrap());
    ping(&mut caller.borrow_mut(), &Request::Ping(0), 0);
    let baseline = open_fds();
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let batches = proptest::collection::vec(case(), 1..=CALLS);
    let result = runner.run(&batches, |batch| {
        let mut caller = caller.borrow_mut();
        // A failed case may have left calls in flight: collect them.
        while caller.in_flight() > 0 {
            next(&mut caller, |_| ());
        }
        for case in &batch {
            let prepared = case.prepare();
            let (reply, fds) = case
                .send(&prepared, |request, fds| {
                    caller.call(request, fds, LONG, |e, _| panic!("event {e:?}"))
                })
                .map_err(|e| TestCaseError::fail(format!("{case:?}: call: {e:?}")))?;
            case.check(reply, fds).map_err(TestCaseError::fail)?;
        }
        let mut started = Vec::new();
        for case in &batch {
            let prepared = case.prepare();
            let cookie = case
                .send(&prepared, |request, fds| {
                    caller.start(request, fds, Some(LONG))
                })
                .map_err(|e| TestCaseError::fail(format!("{case:?}: start: {e:?}")))?;
            started.push((cookie, case));
        }
        for _ in 0..batch.len() {
            next(&mut caller, |incoming| match incoming {
                Incoming::Reply { cookie, reply, fds } => {
                    let Some(at) = started.iter().position(|(c, _)| *c == cookie) else {
                        return Err(format!("reply for cookie {cookie} not in flight"));
                    };
                    let (_, case) = started.remove(at);
                    case.check(reply, fds)
                }
                other => Err(format!("{other:?}")),
            })
            .map_err(TestCaseError::fail)?;
        }
        Ok(())
    });
    let caller = caller.into_inner();
    assert_eq!((caller.late_replies(), caller.discarded()), (0, 0));
    if let Err(failure) = result {
        panic!("{failure}");
    }
    assert_eq!(open_fds(), baseline, "fds leaked over the run");
    drop(caller);
    worker.join();
}

// ---------------------------------------------------------------------------
// 10. Cancel, and the channel given back (issue 19.4).

/// A cancelled call is no longer in flight, and its reply (with an fd) is
/// dropped by `try_incoming` like a late reply: nothing reported, counted,
/// its fd closed; the next call gets its own reply. Fails if `cancel`
/// leaves the call in the table (its reply would be reported) or if the
/// dropped reply's fd stays open.
#[test]
fn cancelled_call_reply_is_dropped_counted_and_its_fds_closed() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let (pipeline, channel) = Channel::<MAX_FDS>::pair().unwrap();
    let worker = Worker::spawn(channel);
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = TestCaller::new(pipeline, &mut out, &mut inbox).unwrap();
    let slow = caller
        .start(
            &Request::Slow {
                contents: b"cancelled",
            },
            &[],
            Some(LONG),
        )
        .unwrap();
    worker.wait_at_gate();
    // The worker's hello, read now so that the next readable is the reply.
    assert!(caller.try_incoming().unwrap().is_none());
    assert!(caller.cancel(slow), "the call was in flight");
    assert!(!caller.cancel(slow), "cancelled twice");
    assert_eq!(caller.in_flight(), 0);
    assert_eq!(caller.until_next_deadline(), None, "its deadline is gone");
    let baseline = open_fds();
    worker.open_gate();
    wait_readable(caller.as_fd(), None);
    assert!(
        caller.try_incoming().unwrap().is_none(),
        "a cancelled call's reply was reported"
    );
    assert_eq!(caller.late_replies(), 1);
    assert_eq!(caller.discarded(), 0);
    assert_eq!(
        open_fds(),
        baseline,
        "the cancelled reply's fd is still open"
    );
    let ping = caller.start(&Request::Ping(6), &[], Some(LONG)).unwrap();
    assert_eq!(
        next(&mut caller, seen),
        Seen::Reply {
            cookie: ping,
            reply: "Pong(6)".into()
        }
    );
    drop(caller);
    let log = worker.join();
    assert_eq!(log.served.len(), 4, "{log:?}"); // hello, slow, ping, gone
}

/// Cancelling one of several calls leaves the others alone: their replies
/// arrive with their cookies. Fails if `cancel` removes another call (or
/// every call) from the table.
#[test]
fn cancel_ends_only_the_call_it_names() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let (pipeline, channel) = Channel::<MAX_FDS>::pair().unwrap();
    let worker = Worker::spawn(channel);
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = TestCaller::new(pipeline, &mut out, &mut inbox).unwrap();
    let cookies: Vec<Cookie> = (20..23)
        .map(|n| caller.start(&Request::Ping(n), &[], Some(LONG)).unwrap())
        .collect();
    assert!(caller.cancel(cookies[1]));
    assert_eq!(caller.in_flight(), 2);
    let got: Vec<Seen> = (0..2).map(|_| next(&mut caller, seen)).collect();
    assert_eq!(
        got,
        [
            Seen::Reply {
                cookie: cookies[0],
                reply: "Pong(20)".into()
            },
            Seen::Reply {
                cookie: cookies[2],
                reply: "Pong(22)".into()
            },
        ]
    );
    assert_eq!(caller.late_replies(), 1, "the cancelled call's reply");
    drop(caller);
    worker.join();
}

/// Both ends give their channel back, still connected: raw records go
/// through it both ways, and a new caller and responder made on the two
/// channels speak again. Fails if `into_channel` closed or swapped the
/// socket.
#[test]
fn into_channel_gives_back_the_connected_channel() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let (pipeline, worker) = Channel::<MAX_FDS>::pair().unwrap();
    let (mut wout, mut win) = ([0u8; BUF], [0u8; BUF]);
    let mut responder = Responder::<Isp, MAX_FDS>::new(worker, &mut wout, &mut win).unwrap();
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = TestCaller::new(pipeline, &mut out, &mut inbox).unwrap();
    let _ping = caller.start(&Request::Ping(1), &[], Some(LONG)).unwrap();
    for _ in 0..2 {
        responder.serve(|_| Ok(Reply::Pong(1))).unwrap(); // hello, ping
    }
    assert!(matches!(next(&mut caller, seen), Seen::Reply { .. }));
    let (pipeline, worker) = (caller.into_channel(), responder.into_channel());
    let mut data = [0u8; 16];
    let mut fds = heapless::Vec::<OwnedFd, MAX_FDS>::new();
    pipeline.send(b"raw", &[]).unwrap();
    let got = worker.recv_timeout(&mut data, &mut fds, LONG).unwrap();
    assert_eq!(&data[..got.data_len], b"raw");
    worker.send(b"back", &[]).unwrap();
    let got = pipeline.recv_timeout(&mut data, &mut fds, LONG).unwrap();
    assert_eq!(&data[..got.data_len], b"back");
    let worker = Worker::spawn(worker);
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = TestCaller::new(pipeline, &mut out, &mut inbox).unwrap();
    ping(&mut caller, &Request::Ping(9), 9);
    drop(caller);
    worker.join();
}

// ---------------------------------------------------------------------------
// 11. Typed application errors (issue 19.3).

/// A protocol whose handler fails with its own error type, which borrows
/// from the receive buffer like a reply.
struct Strict;

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, Schema)]
enum StrictRequest<'a> {
    Ping(u32),
    /// Fails with `Refusal { reason: text, code }` unless `text` is "ok".
    Check {
        text: &'a str,
        code: u16,
    },
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, Schema)]
struct Refusal<'a> {
    reason: &'a str,
    code: u16,
}

impl Protocol for Strict {
    const NAME: &'static str = "test.strict";
    const VERSION: u32 = 1;
    type Request<'a> = StrictRequest<'a>;
    type Reply<'a> = u32;
    type Event<'a> = ();
    type Error<'a> = Refusal<'a>;
}

/// Serves `Strict` until the caller is gone; a failing `Check` first
/// attaches a memfd to its reply (which must not travel with the error).
fn strict_worker(channel: Channel<MAX_FDS>) -> thread::JoinHandle<Vec<Served>> {
    let spare = memfd(b"never sent");
    thread::spawn(move || {
        let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
        let mut responder = Responder::<Strict, MAX_FDS>::new(channel, &mut out, &mut inbox)
            .expect("Responder::new");
        let mut served = Vec::new();
        loop {
            let got = responder.serve(|call| match call.request {
                StrictRequest::Ping(n) => Ok(n),
                StrictRequest::Check { text: "ok", .. } => Ok(0),
                StrictRequest::Check { text, code } => {
                    call.reply_fds.attach(spare.as_fd())?;
                    Err(CallError::Handler(Refusal { reason: text, code }))
                }
            });
            match got {
                Ok(s) => served.push(s),
                Err(Error::Disconnected) => return served,
                Err(e) => panic!("serve: {e}"),
            }
        }
    })
}

/// The handler's error reaches a blocking call intact (a borrowed string
/// and a code), apart from the crate's errors, without the fds the handler
/// had attached; the next call works; a one-way request whose handler
/// fails gets no answer at all. Fails if the error travels as a rejection
/// (`Rejected(HandlerFailed)`, what it was before), loses its fields, leaks
/// an fd, or leaves a record behind that a later call would trip on.
#[test]
fn a_handler_error_reaches_a_call_typed_and_the_next_call_works() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let baseline = open_fds();
    let (pipeline, channel) = Channel::<MAX_FDS>::pair().unwrap();
    let worker = strict_worker(channel);
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = Caller::<Strict, MAX_FDS, CALLS>::new(pipeline, &mut out, &mut inbox).unwrap();
    let refused = StrictRequest::Check {
        text: "no such sensor",
        code: 404,
    };
    match caller.call(&refused, &[], LONG, |_, _| {}) {
        Err(CallError::Handler(refusal)) => assert_eq!(
            refusal,
            Refusal {
                reason: "no such sensor",
                code: 404
            }
        ),
        other => panic!("expected the handler's error, got {other:?}"),
    }
    assert_eq!(caller.in_flight(), 0);
    caller
        .notify(
            &StrictRequest::Check {
                text: "one way",
                code: 1,
            },
            &[],
        )
        .unwrap();
    let (reply, fds) = caller
        .call(&StrictRequest::Ping(7), &[], LONG, |_, _| {})
        .unwrap();
    assert_eq!((reply, fds.len()), (7, 0));
    assert_eq!((caller.late_replies(), caller.discarded()), (0, 0));
    drop(fds);
    drop(caller);
    let served = worker.join().unwrap();
    assert_eq!(
        served,
        [
            Served::Hello,
            Served::HandlerError { cookie: 1 },
            Served::HandlerError { cookie: 0 },
            Served::Replied { cookie: 2 },
        ]
    );
    assert_eq!(open_fds(), baseline, "an fd leaked");
}

/// The same through `start`/`try_incoming`: `Incoming::HandlerError` with
/// the call's cookie and the error intact, beside the replies of the other
/// calls; and a handler error that comes after its call was cancelled is
/// dropped and counted like a late reply. Fails if the error is reported
/// as `Failed`, under another cookie, or after a cancel.
#[test]
fn a_handler_error_reaches_try_incoming_typed_and_a_late_one_is_dropped() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let (pipeline, channel) = Channel::<MAX_FDS>::pair().unwrap();
    let worker = strict_worker(channel);
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = Caller::<Strict, MAX_FDS, CALLS>::new(pipeline, &mut out, &mut inbox).unwrap();
    let bad = StrictRequest::Check {
        text: "dark",
        code: 3,
    };
    let first = caller.start(&bad, &[], Some(LONG)).unwrap();
    let ping = caller
        .start(&StrictRequest::Ping(5), &[], Some(LONG))
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        match caller.try_incoming().unwrap() {
            Some(Incoming::HandlerError { cookie, error }) => {
                got.push(format!("{cookie:?} {error:?}"))
            }
            Some(Incoming::Reply { cookie, reply, .. }) => got.push(format!("{cookie:?} {reply}")),
            Some(other) => panic!("unexpected {other:?}"),
            None => wait_readable(caller.as_fd(), None),
        }
    }
    assert_eq!(
        got,
        [
            format!("{first:?} Refusal {{ reason: \"dark\", code: 3 }}"),
            format!("{ping:?} 5"),
        ]
    );
    let cancelled = caller.start(&bad, &[], Some(LONG)).unwrap();
    assert!(caller.cancel(cancelled));
    // A call after it: its reply comes after the cancelled call's error.
    let (reply, _) = caller
        .call(&StrictRequest::Ping(8), &[], LONG, |_, _| {})
        .unwrap();
    assert_eq!(reply, 8);
    assert_eq!(caller.late_replies(), 1, "the cancelled call's error");
    drop(caller);
    worker.join().unwrap();
}

// ---------------------------------------------------------------------------
// 12. Identity from the types (issue 19.2).

#[derive(Debug, serde::Serialize, serde::Deserialize, Schema)]
struct AskV1 {
    frame: u32,
}

#[derive(Debug, serde::Serialize, serde::Deserialize, Schema)]
struct AskV2 {
    frame: u32,
    crop: bool,
}

#[derive(Debug, serde::Serialize, serde::Deserialize, Schema)]
struct GainV1 {
    gain: u16,
}

#[derive(Debug, serde::Serialize, serde::Deserialize, Schema)]
struct GainV2 {
    gain: u16,
    exposure: u32,
}

/// Three builds of one protocol: one name, one version, and one field
/// added to the reply (`Build2`) or to the request (`Build3`) without a
/// version bump.
macro_rules! build {
    ($name:ident, $request:ty, $reply:ty) => {
        struct $name;
        impl Protocol for $name {
            const NAME: &'static str = "test.build";
            const VERSION: u32 = 7;
            type Request<'a> = $request;
            type Reply<'a> = $reply;
            type Event<'a> = ();
            type Error<'a> = ipc_unixsocket::calls::NoError;
        }
    };
}
build!(Build1, AskV1, GainV1);
build!(Build2, AskV1, GainV2);
build!(Build3, AskV2, GainV1);

/// A caller of build `A` against a responder of build `B`: both fail with
/// `ProtocolMismatch` naming the types that differ, the responder on the
/// caller's hello and the caller on its first call, and no handler runs.
fn builds_refuse_each_other<A: Protocol, B: Protocol>(request: &A::Request<'_>, differs: Differs) {
    let _watchdog = Watchdog::for_test();
    let (pipeline, worker) = Channel::<MAX_FDS>::pair().unwrap();
    let expected = Error::ProtocolMismatch {
        same_name: true,
        peer_version: 7,
        differs,
    };
    let (report, served) = mpsc::channel();
    let server = thread::spawn(move || {
        let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
        let mut responder = Responder::<B, MAX_FDS>::new(worker, &mut out, &mut inbox).unwrap();
        let mut ran = 0;
        loop {
            match responder.serve(|_| {
                ran += 1;
                Err(Error::EncodeFailed.into())
            }) {
                Err(Error::Disconnected) => return ran,
                other => report.send(other).unwrap(),
            }
        }
    });
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = Caller::<A, MAX_FDS, CALLS>::new(pipeline, &mut out, &mut inbox).unwrap();
    match caller.call(request, &[], LONG, |_, _| {}) {
        Err(error) => assert!(error == expected, "{error:?}"),
        Ok(_) => panic!("the call went through"),
    }
    // The caller's hello, then its request, refused without a handler
    // (read before the caller goes, or the refusal would find it gone).
    let next = || served.recv_timeout(LONG).expect("the responder's report");
    assert_eq!(next(), Err(expected));
    assert_eq!(
        next(),
        Ok(Served::Refused {
            cookie: 1,
            rejection: Rejection::ProtocolMismatch
        })
    );
    drop(caller);
    assert_eq!(server.join().unwrap(), 0, "a handler ran");
    assert!(expected.to_string().contains(&differs.to_string()));
}

/// One field added to the reply type, same name and version: both sides
/// fail with `ProtocolMismatch { differs: reply }` before any request runs.
/// Fails on the old hello (name and version only), where the call went
/// through and the reply was misread.
#[test]
fn a_reply_type_changed_without_a_version_bump_is_a_mismatch_naming_it() {
    let reply = Differs {
        reply: true,
        ..Differs::NONE
    };
    builds_refuse_each_other::<Build1, Build2>(&AskV1 { frame: 1 }, reply);
}

/// The same for a field added to the request type.
#[test]
fn a_request_type_changed_without_a_version_bump_is_a_mismatch_naming_it() {
    let request = Differs {
        request: true,
        ..Differs::NONE
    };
    let ask = AskV2 {
        frame: 1,
        crop: true,
    };
    builds_refuse_each_other::<Build3, Build1>(&ask, request);
}
