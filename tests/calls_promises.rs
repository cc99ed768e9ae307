//! The call layer's promises in its corners (issue 17): every exit from
//! `call()` ends the call; records too large for the inbox fail their call
//! at once with the sizes; the caller checks the hello before anything;
//! dropped records are closed and counted; refusals are answered only
//! where an answer is owed. Each test names the defect or planted bug it
//! catches. Peers are threads of this process or raw channels that write
//! records by hand; every wait has its own deadline of a few seconds.

mod calls_protocol;
mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::thread;
use std::time::{Duration, Instant};

use calls_protocol::{CALLS, Isp, MAX_FDS, Reply, Request, memfd};
use common::{Watchdog, open_fds, serial};
use ipc_unixsocket::calls::{
    Attach, Buffers, CallError, CallHeader, Caller, Claims, Differs, Hello, Kind, MaxSize,
    Protocol, Rejection, Responder, Schema, Served, bound,
};
use ipc_unixsocket::{Channel, Error, HEADER_LEN};

/// Deadline of the calls that must not reach it: a test that waits this
/// long has failed, and fails within seconds.
const BOUND: Duration = Duration::from_secs(5);

/// One record of protocol `Isp` as a raw peer writes it: call header, then
/// the postcard body.
fn record(kind: Kind, cookie: u32, body: &[u8]) -> Vec<u8> {
    let mut data = CallHeader { kind, cookie }.encode().to_vec();
    data.extend_from_slice(body);
    data
}

/// `value` as postcard writes it.
fn encode(value: &impl serde::Serialize) -> Vec<u8> {
    let mut buffer = [0u8; 512];
    postcard::to_slice(value, &mut buffer)
        .expect("encode")
        .to_vec()
}

fn hello_body() -> Vec<u8> {
    encode(&Hello::of::<Isp>())
}

/// Receives one record on a raw channel: `(call header, body)`.
fn raw_recv(channel: &Channel<MAX_FDS>) -> (CallHeader, Vec<u8>) {
    let mut data = [0u8; 4096];
    let mut fds = heapless::Vec::<OwnedFd, MAX_FDS>::new();
    let got = channel
        .recv_timeout(&mut data, &mut fds, BOUND)
        .expect("raw receive");
    let header = CallHeader::decode(&data[..got.data_len]).expect("call header");
    (header, data[8..got.data_len].to_vec())
}

/// A caller whose raw peer has said hello. Its buffers live as long as the
/// test binary.
fn greeted_caller() -> (Channel<MAX_FDS>, Caller<'static, Isp, MAX_FDS, CALLS>) {
    let (pipeline, raw) = Channel::<MAX_FDS>::pair().unwrap();
    raw.send(&record(Kind::Hello, 0, &hello_body()), &[])
        .unwrap();
    let out: &'static mut [u8] = Box::leak(Box::new([0u8; 1024]));
    let inbox: &'static mut [u8] = Box::leak(Box::new([0u8; 1024]));
    let caller = Caller::<Isp, MAX_FDS, CALLS>::new(pipeline, out, inbox).unwrap();
    (raw, caller)
}

/// Starts a call with a zero timeout and sees it fail `TimedOut` before
/// anything arrives: a reply to the returned cookie is late.
fn expired_call(caller: &mut Caller<'_, Isp, MAX_FDS, CALLS>) -> u32 {
    let cookie = caller
        .start(&Request::Ping(1), &[], Some(Duration::ZERO))
        .unwrap();
    assert!(matches!(
        caller.try_incoming().unwrap(),
        Some(ipc_unixsocket::calls::Incoming::Failed {
            error: Error::TimedOut,
            ..
        })
    ));
    cookie.get()
}

/// A worker thread serving `channel` with the protocol's handler, its
/// buffers `inbox` bytes long; returns what each serve gave.
fn worker(channel: Channel<MAX_FDS>, inbox: usize) -> thread::JoinHandle<Vec<Served>> {
    thread::spawn(move || {
        let mut out = [0u8; 1024];
        let mut inbox = vec![0u8; inbox];
        let mut responder =
            Responder::<Isp, MAX_FDS>::new(channel, &mut out, &mut inbox).expect("Responder");
        let mut served = Vec::new();
        loop {
            match responder.serve(|call| match call.request {
                Request::Ping(n) => Ok(Reply::Pong(n)),
                Request::Echo { text, bytes } => Ok(Reply::Echoed { text, bytes }),
                // A handler's own failure.
                Request::Note(_) => Err(Error::Os(rustix::io::Errno::INVAL).into()),
                _ => Ok(Reply::Done),
            }) {
                Ok(s) => served.push(s),
                Err(Error::Disconnected) => return served,
                Err(e) => panic!("serve: {e}"),
            }
        }
    })
}

const TEXT: &str = "a text of two hundred bytes, far more than a sixty-four byte inbox \
holds: the kernel delivers its first bytes and says how long it was, and the call \
must fail at once with the sizes, not wait for its deadline.";

#[test]
fn a_reply_larger_than_the_inbox_fails_its_call_at_once_with_the_sizes() {
    // Defect 7: the 200-byte reply into a 64-byte inbox was dropped and the
    // call waited for its whole deadline (TimedOut, discarded() == 1).
    let _watchdog = Watchdog::for_test();
    assert!(TEXT.len() > 180);
    let (pipeline, worker_end) = Channel::<MAX_FDS>::pair().unwrap();
    let worker = worker(worker_end, 1024);
    let (mut out, mut inbox) = ([0u8; 1024], [0u8; 64]);
    let mut caller = Caller::<Isp, MAX_FDS, CALLS>::new(pipeline, &mut out, &mut inbox).unwrap();
    let echo = Request::Echo {
        text: TEXT,
        bytes: &[],
    };
    match caller.call(&echo, &[], BOUND, |_, _| {}) {
        Err(CallError::Ipc(Error::Truncated { len, capacity })) => {
            assert!(len > TEXT.len(), "{len}");
            assert_eq!(capacity, 64 - HEADER_LEN);
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert_eq!(caller.in_flight(), 0);
    assert_eq!(caller.discarded(), 0);
    // The channel goes on.
    let (pong, _) = caller
        .call(&Request::Ping(7), &[], BOUND, |_, _| {})
        .unwrap();
    assert_eq!(pong, Reply::Pong(7));
    drop(caller);
    worker.join().unwrap();
}

#[test]
fn a_request_larger_than_the_responder_inbox_is_refused_too_large() {
    // Defect 7: the responder ignored it and the caller timed out.
    let _watchdog = Watchdog::for_test();
    let (pipeline, worker_end) = Channel::<MAX_FDS>::pair().unwrap();
    let worker = worker(worker_end, 64);
    let (mut out, mut inbox) = ([0u8; 1024], [0u8; 1024]);
    let mut caller = Caller::<Isp, MAX_FDS, CALLS>::new(pipeline, &mut out, &mut inbox).unwrap();
    let echo = Request::Echo {
        text: TEXT,
        bytes: &[],
    };
    assert_eq!(
        caller.call(&echo, &[], BOUND, |_, _| {}).unwrap_err(),
        Error::Rejected(Rejection::TooLarge)
    );
    let (pong, _) = caller
        .call(&Request::Ping(8), &[], BOUND, |_, _| {})
        .unwrap();
    assert_eq!(pong, Reply::Pong(8));
    drop(caller);
    let served = worker.join().unwrap();
    assert!(
        served.contains(&Served::Refused {
            cookie: 1,
            rejection: Rejection::TooLarge
        }),
        "{served:?}"
    );
}

#[test]
fn a_hello_larger_than_the_inbox_is_a_protocol_mismatch() {
    // Defect 7: with an inbox too small for the hello, the worker's
    // protocol was never checked and calls succeeded. An inbox too small
    // for this protocol's own hello is now refused when the caller is
    // made (issue 19.1); a peer's longer hello still arrives truncated.
    let _watchdog = Watchdog::for_test();
    let (pipeline, _raw) = Channel::<MAX_FDS>::pair().unwrap();
    // ("test.isp", 3, 4 schema hashes) needs 1 + 8, 5 counted at its
    // largest, and 32.
    let (mut out, mut small) = ([0u8; 1024], [0u8; HEADER_LEN + 8 + 45]);
    assert_eq!(
        Caller::<Isp, MAX_FDS, CALLS>::new(pipeline, &mut out, &mut small).unwrap_err(),
        Error::BufferTooSmall {
            len: HEADER_LEN + 8 + 45,
            needed: HEADER_LEN + 8 + 46
        }
    );
    let (pipeline, raw) = Channel::<MAX_FDS>::pair().unwrap();
    let long_name = "test.isp".repeat(8);
    raw.send(
        &record(
            Kind::Hello,
            0,
            &encode(&Hello {
                name: &long_name,
                ..Hello::of::<Isp>()
            }),
        ),
        &[],
    )
    .unwrap();
    let mut inbox = [0u8; HEADER_LEN + 8 + 46];
    let mut caller = Caller::<Isp, MAX_FDS, CALLS>::new(pipeline, &mut out, &mut inbox).unwrap();
    assert!(matches!(
        caller.call(&Request::Ping(1), &[], BOUND, |_, _| {}),
        Err(CallError::Ipc(Error::ProtocolMismatch { .. }))
    ));
    assert_eq!(caller.in_flight(), 0);
}

#[test]
fn replies_before_the_peers_hello_are_a_protocol_mismatch() {
    // Defect 8: a raw peer that never says hello got its replies delivered.
    let _watchdog = Watchdog::for_test();
    let (pipeline, raw) = Channel::<MAX_FDS>::pair().unwrap();
    let peer = thread::spawn(move || {
        let (hello, _) = raw_recv(&raw);
        assert_eq!(hello.kind, Kind::Hello);
        let (request, _) = raw_recv(&raw);
        let body = encode(&Reply::Pong(5));
        raw.send(&record(Kind::Reply, request.cookie, &body), &[])
            .unwrap();
        raw
    });
    let (mut out, mut inbox) = ([0u8; 1024], [0u8; 1024]);
    let mut caller = Caller::<Isp, MAX_FDS, CALLS>::new(pipeline, &mut out, &mut inbox).unwrap();
    let answer = caller.call(&Request::Ping(5), &[], BOUND, |_, _| {});
    assert_eq!(
        answer.map(|(reply, _)| reply).map_err(Error::from),
        Err(Error::ProtocolMismatch {
            same_name: false,
            peer_version: 0,
            differs: Differs::NONE,
        })
    );
    assert_eq!(caller.in_flight(), 0);
    drop(peer.join().unwrap());
}

#[test]
fn a_timed_out_call_ends_at_its_deadline_not_later() {
    // Planted bug: a call that waited twice its deadline passed every test.
    let _watchdog = Watchdog::for_test();
    let (raw, mut caller) = greeted_caller();
    let deadline = Duration::from_millis(500);
    let started = Instant::now();
    let answer = caller.call(&Request::Ping(1), &[], deadline, |_, _| {});
    let waited = started.elapsed();
    assert_eq!(
        answer.map(|(reply, _)| reply).map_err(Error::from),
        Err(Error::TimedOut)
    );
    assert!(waited >= deadline, "returned early: {waited:?}");
    // The bound the issue asks for: well under twice the deadline.
    assert!(waited < deadline * 19 / 10, "waited {waited:?}");
    assert_eq!(caller.in_flight(), 0);
    drop(raw);
}

#[test]
fn late_reply_fds_are_closed_when_the_reply_is_read() {
    // Planted bug: a late reply's fds stayed open until the next receive.
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let (raw, mut caller) = greeted_caller();
    let cookie = expired_call(&mut caller);
    let baseline = open_fds();
    {
        let file = memfd(b"late");
        let body = encode(&Reply::Pong(1));
        raw.send(&record(Kind::Reply, cookie, &body), &[file.as_fd()])
            .unwrap();
    }
    assert_eq!(open_fds(), baseline, "the sender's copy is closed");
    assert!(caller.try_incoming().unwrap().is_none());
    assert_eq!(caller.late_replies(), 1);
    assert_eq!(open_fds(), baseline, "the late reply's fd is closed");
}

/// A responder on a raw pipeline: the raw end has sent the hello when
/// `greet`, and the responder has served it. Its buffers live as long as
/// the test binary.
fn raw_pipeline(greet: bool) -> (Channel<MAX_FDS>, Responder<'static, Isp, MAX_FDS>) {
    let (raw, worker_end) = Channel::<MAX_FDS>::pair().unwrap();
    let out: &'static mut [u8] = Box::leak(Box::new([0u8; 1024]));
    let inbox: &'static mut [u8] = Box::leak(Box::new([0u8; 1024]));
    let mut responder = Responder::<Isp, MAX_FDS>::new(worker_end, out, inbox).unwrap();
    let (hello, _) = raw_recv(&raw);
    assert_eq!(hello.kind, Kind::Hello);
    if greet {
        raw.send(&record(Kind::Hello, 0, &hello_body()), &[])
            .unwrap();
        assert_eq!(responder.serve(|_| Ok(Reply::Done)), Ok(Served::Hello));
    }
    (raw, responder)
}

#[test]
fn requests_before_the_callers_hello_are_refused_unexpected() {
    // Planted bug: requests that arrived before the hello were served.
    let _watchdog = Watchdog::for_test();
    let (raw, mut responder) = raw_pipeline(false);
    let body = encode(&Request::Ping(3));
    raw.send(&record(Kind::Request, 9, &body), &[]).unwrap();
    assert_eq!(
        responder.serve(|_| panic!("served before the hello")),
        Ok(Served::Refused {
            cookie: 9,
            rejection: Rejection::Unexpected
        })
    );
    let (reply, body) = raw_recv(&raw);
    assert_eq!((reply.kind, reply.cookie), (Kind::ErrorReply, 9));
    assert_eq!(body, [Rejection::Unexpected as u8]);
}

#[test]
fn a_handler_error_is_refused_and_serving_goes_on() {
    // Planted bug: a handler error ended serve and sent no reply.
    let _watchdog = Watchdog::for_test();
    let (pipeline, worker_end) = Channel::<MAX_FDS>::pair().unwrap();
    let worker = worker(worker_end, 1024);
    let (mut out, mut inbox) = ([0u8; 1024], [0u8; 1024]);
    let mut caller = Caller::<Isp, MAX_FDS, CALLS>::new(pipeline, &mut out, &mut inbox).unwrap();
    assert_eq!(
        caller
            .call(&Request::Note("fail"), &[], BOUND, |_, _| {})
            .unwrap_err(),
        Error::Rejected(Rejection::HandlerFailed)
    );
    let (pong, _) = caller
        .call(&Request::Ping(2), &[], BOUND, |_, _| {})
        .unwrap();
    assert_eq!(pong, Reply::Pong(2));
    drop(caller);
    let served = worker.join().unwrap();
    assert_eq!(
        served[1],
        Served::Refused {
            cookie: 1,
            rejection: Rejection::HandlerFailed
        }
    );
}

#[test]
fn records_the_responder_drops_are_counted_and_their_fds_closed() {
    // Planted bugs: well-formed events, replies and error replies sent to
    // the responder were not counted; a record with a bad call header kept
    // its fds open after serve returned Ignored.
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let (raw, mut responder) = raw_pipeline(true);
    let baseline = open_fds();
    let event = encode(&calls_protocol::Event::Progress { seq: 1 });
    let reply = encode(&Reply::Pong(1));
    let sent = [
        record(Kind::Event, 0, &event),
        record(Kind::Reply, 4, &reply),
        record(Kind::ErrorReply, 5, &[Rejection::BadBody as u8]),
        vec![9, 0, 0, 0, 1, 0, 0, 0], // no such kind
    ];
    for data in &sent {
        let file = memfd(b"dropped");
        raw.send(data, &[file.as_fd()]).unwrap();
    }
    for _ in &sent {
        assert_eq!(
            responder.serve(|_| panic!("not a request")),
            Ok(Served::Ignored)
        );
        assert_eq!(open_fds(), baseline, "the dropped record's fd is closed");
    }
    assert_eq!(responder.discarded(), 4);
}

#[test]
fn a_refused_one_way_request_gets_no_reply() {
    // Planted bug: a refused one-way request got an error reply.
    let _watchdog = Watchdog::for_test();
    let (raw, mut responder) = raw_pipeline(true);
    raw.send(&record(Kind::Request, 0, &[]), &[]).unwrap();
    assert_eq!(
        responder.serve(|_| panic!("a bad body was served")),
        Ok(Served::Refused {
            cookie: 0,
            rejection: Rejection::BadBody
        })
    );
    let mut data = [0u8; 64];
    let mut fds = heapless::Vec::<OwnedFd, MAX_FDS>::new();
    assert_eq!(raw.try_recv(&mut data, &mut fds), Err(Error::WouldBlock));
}

#[test]
fn claiming_the_slot_one_past_the_fds_is_a_bad_slot() {
    // Planted bug: `claim(slot == len)` was reported as already claimed
    // (only a doc example caught it).
    let file = memfd(b"one");
    let mut attach = Attach::<2>::new();
    let _first = attach.attach(file.as_fd()).unwrap();
    let second = attach.attach(file.as_fd()).unwrap();
    let mut received = heapless::Vec::<OwnedFd, 2>::new();
    received.push(memfd(b"only")).unwrap();
    let mut claims = Claims::from(received);
    assert_eq!(
        claims.claim(second).unwrap_err(),
        Error::BadFdSlot { slot: 1, fds: 1 }
    );
}

#[test]
fn recv_frame_into_exactly_the_header_takes_an_empty_message() {
    // Planted bug: a frame of exactly HEADER_LEN bytes was refused.
    let (a, b) = Channel::<0>::pair().unwrap();
    a.send(b"", &[]).unwrap();
    let mut frame = [0u8; HEADER_LEN];
    let got = b
        .recv_frame(&mut frame, &mut heapless::Vec::<OwnedFd, 0>::new())
        .unwrap();
    assert_eq!(got.data_len, 0);
}

/// Defect 2: a `call()` that failed with an error the call layer does not
/// handle itself (here `Os(EPERM)` from `ppoll`, as under a seccomp filter
/// that refuses it) stayed in flight for ever, and every later `call()`
/// was `CallsInFlight`. The filter is installed on a thread of its own
/// (seccomp filters belong to the thread that installs them).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[test]
fn a_call_that_fails_in_its_wait_leaves_no_call_in_flight() {
    let _watchdog = Watchdog::for_test();
    let (pipeline, raw) = Channel::<MAX_FDS>::pair().unwrap();
    raw.send(&record(Kind::Hello, 0, &hello_body()), &[])
        .unwrap();
    // `setsockopt` too: with it, the call waits in a `recvmsg` under
    // `SO_RCVTIMEO` and needs a `poll` only for the deadline's last
    // milliseconds.
    let refused: Vec<i64> = [libc::SYS_ppoll, libc::SYS_pselect6, libc::SYS_setsockopt]
        .into_iter()
        .chain(poll_number())
        .collect();
    let program = refusing(&refused);
    let confined = thread::spawn(move || {
        seccompiler::apply_filter(&program).unwrap();
        let (mut out, mut inbox) = ([0u8; 1024], [0u8; 1024]);
        let mut caller =
            Caller::<Isp, MAX_FDS, CALLS>::new(pipeline, &mut out, &mut inbox).unwrap();
        let first = caller
            .call(&Request::Ping(1), &[], BOUND, |_, _| {})
            .map(|_| ())
            .map_err(Error::from);
        let in_flight = caller.in_flight();
        let second = caller
            .call(&Request::Ping(2), &[], BOUND, |_, _| {})
            .map(|_| ())
            .map_err(Error::from);
        (first, in_flight, second)
    });
    let (first, in_flight, second) = confined.join().unwrap();
    assert_eq!(first, Err(Error::Os(rustix::io::Errno::PERM)));
    assert_eq!(in_flight, 0, "the failed call is no longer in flight");
    assert_eq!(second, Err(Error::Os(rustix::io::Errno::PERM)));
    drop(raw);
}

/// A seccomp filter that refuses the system calls `refused` with `EPERM`
/// and allows the rest, for the thread that applies it.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn refusing(refused: &[i64]) -> seccompiler::BpfProgram {
    use seccompiler::{SeccompAction, SeccompFilter};
    let rules = refused.iter().map(|&nr| (nr, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        std::env::consts::ARCH.try_into().unwrap(),
    )
    .unwrap();
    filter.try_into().unwrap()
}

/// `poll(2)`, where the architecture has it (x86_64; aarch64 has only
/// `ppoll`).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn poll_number() -> Option<i64> {
    #[cfg(target_arch = "x86_64")]
    return Some(libc::SYS_poll);
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// Also examined in issue 17: `Caller::poll()` drained dropped records
/// without a bound (one `poll()` took 460 ms under a flood of late
/// replies). Now one `poll()` drops at most 32 and returns `None`, the
/// channel still readable; the next ones go on.
#[test]
fn one_poll_drops_a_bounded_number_of_records() {
    let _watchdog = Watchdog::for_test();
    let (raw, mut caller) = greeted_caller();
    let cookie = expired_call(&mut caller);
    let body = encode(&Reply::Pong(1));
    for _ in 0..100 {
        raw.send(&record(Kind::Reply, cookie, &body), &[]).unwrap();
    }
    let mut seen = Vec::new();
    while caller.late_replies() < 100 {
        assert!(caller.try_incoming().unwrap().is_none());
        seen.push(caller.late_replies());
        assert!(seen.len() <= 4, "{seen:?}");
    }
    assert_eq!(seen, [32, 64, 96, 100]);
}

/// Mutant 1 of the audit: a late reply's fds left open survived
/// `late_reply_fds_are_closed_when_the_reply_is_read`, because the next
/// receive of the same `poll` closes them; they stay open only when the
/// 32-drop bound ends the poll. So: 32 late replies with an fd each.
#[test]
fn late_reply_fds_are_closed_also_when_the_drop_bound_ends_the_poll() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let (raw, mut caller) = greeted_caller();
    let cookie = expired_call(&mut caller);
    let baseline = open_fds();
    let body = encode(&Reply::Pong(1));
    // 32 late replies: the 32nd ends the poll without another receive.
    for _ in 0..32 {
        let file = memfd(b"late");
        raw.send(&record(Kind::Reply, cookie, &body), &[file.as_fd()])
            .unwrap();
    }
    assert_eq!(open_fds(), baseline, "the sender's copies are closed");
    assert!(caller.try_incoming().unwrap().is_none());
    assert_eq!(caller.late_replies(), 32);
    assert_eq!(open_fds(), baseline, "every late reply's fd is closed");
}

/// Mutant 30: a request too large for the inbox, before the hello, is
/// refused like any request before the hello (`Unexpected`), not
/// `TooLarge`.
#[test]
fn a_too_large_request_before_the_hello_is_refused_unexpected() {
    let _watchdog = Watchdog::for_test();
    let (raw, mut responder) = raw_pipeline(false);
    raw.send(&record(Kind::Request, 9, &[0u8; 2000]), &[])
        .unwrap();
    assert_eq!(
        responder.serve(|_| panic!("served before the hello")),
        Ok(Served::Refused {
            cookie: 9,
            rejection: Rejection::Unexpected
        })
    );
}

/// Mutant 31: an event too large for the inbox is reported
/// (`BadEvent(Truncated)`), not dropped in silence.
#[test]
fn an_event_larger_than_the_inbox_is_a_bad_event() {
    let _watchdog = Watchdog::for_test();
    let (pipeline, raw) = Channel::<MAX_FDS>::pair().unwrap();
    raw.send(&record(Kind::Hello, 0, &hello_body()), &[])
        .unwrap();
    let (mut out, mut inbox) = ([0u8; 1024], [0u8; 64]);
    let mut caller = Caller::<Isp, MAX_FDS, CALLS>::new(pipeline, &mut out, &mut inbox).unwrap();
    raw.send(&record(Kind::Event, 0, &[0u8; 200]), &[]).unwrap();
    let got = format!("{:?}", caller.try_incoming());
    assert!(got.starts_with("Ok(Some(BadEvent(Truncated"), "{got}");
}

/// Mutant 33: the hello is sent without waiting for room, so `Caller::new`
/// on a channel the peer has stopped reading returns `WouldBlock` at once.
#[test]
fn the_hello_does_not_wait_for_room() {
    let (pipeline, _worker_end) = Channel::<MAX_FDS>::pair().unwrap();
    while pipeline.try_send(b"filler", &[]).is_ok() {}
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let (mut out, mut inbox) = ([0u8; 1024], [0u8; 1024]);
        let made = Caller::<Isp, MAX_FDS, CALLS>::new(pipeline, &mut out, &mut inbox).map(|_| ());
        let _ = tx.send(made);
    });
    assert_eq!(
        rx.recv_timeout(BOUND).expect("Caller::new blocked"),
        Err(Error::WouldBlock)
    );
}

/// Mutant 34: `Responder::set_send_timeout` bounds each send: events to a
/// pipeline that never reads end with `TimedOut`.
#[test]
fn the_responders_send_timeout_bounds_each_send() {
    let (_raw, mut responder) = raw_pipeline(true);
    responder.set_send_timeout(Some(Duration::from_millis(100)));
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let end = loop {
            if let Err(e) = responder.emit(&calls_protocol::Event::Progress { seq: 1 }, &[]) {
                break e;
            }
        };
        let _ = tx.send(end);
    });
    assert_eq!(
        rx.recv_timeout(BOUND).expect("emit blocked"),
        Error::TimedOut
    );
}

/// Mutant 37: rejected records (no call header) count toward the 32-drop
/// bound of one `poll` like late replies do.
#[test]
fn one_poll_drops_a_bounded_number_of_rejected_records() {
    let _watchdog = Watchdog::for_test();
    let (raw, mut caller) = greeted_caller();
    assert!(caller.try_incoming().unwrap().is_none()); // the hello
    for _ in 0..100 {
        raw.send(b"junk", &[]).unwrap(); // no call header: rejected
    }
    let mut seen = Vec::new();
    while caller.discarded() < 100 {
        assert!(caller.try_incoming().unwrap().is_none());
        seen.push(caller.discarded());
        assert!(seen.len() <= 4, "{seen:?}");
    }
    assert_eq!(seen, [32, 64, 96, 100]);
}

/// Mutant 38: a hello too large for the inbox is a mismatch by itself,
/// with no request behind it.
#[test]
fn a_hello_larger_than_the_inbox_alone_is_a_mismatch() {
    let _watchdog = Watchdog::for_test();
    let (pipeline, raw) = Channel::<MAX_FDS>::pair().unwrap();
    let long_name = "test.isp".repeat(8);
    let hello = Hello {
        name: &long_name,
        ..Hello::of::<Isp>()
    };
    raw.send(&record(Kind::Hello, 0, &encode(&hello)), &[])
        .unwrap();
    // Room for this protocol's own hello, not for the peer's longer one.
    let (mut out, mut inbox) = ([0u8; 1024], [0u8; HEADER_LEN + 8 + 46]);
    let mut caller = Caller::<Isp, MAX_FDS, CALLS>::new(pipeline, &mut out, &mut inbox).unwrap();
    let got = caller.try_incoming().map(|incoming| incoming.is_some());
    assert!(
        matches!(got, Err(Error::ProtocolMismatch { .. })),
        "{got:?}"
    );
}

// ---------------------------------------------------------------------------
// Buffer sizes from the protocol's types (issue 19.1).

/// A protocol whose every type has a bound.
struct Bounded;

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, MaxSize, Schema)]
enum BoundedRequest {
    Ask { frame: u32, offset: i64 },
    Quiet,
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, MaxSize, Schema)]
enum Denied {
    Code(u64),
}

impl Protocol for Bounded {
    const NAME: &'static str = "test.bounded";
    const VERSION: u32 = u32::MAX; // the largest hello
    type Request<'a> = BoundedRequest;
    type Reply<'a> = [u64; 8];
    type Event<'a> = (u16, i32);
    type Error<'a> = Denied;
    const MAX_REQUEST: Option<usize> = bound::<BoundedRequest>();
    const MAX_REPLY: Option<usize> = bound::<[u64; 8]>();
    const MAX_EVENT: Option<usize> = bound::<(u16, i32)>();
    const MAX_ERROR: Option<usize> = bound::<Denied>();
}

/// A buffer one byte smaller than `Buffers` says is refused when the end
/// is made, with both sizes, on either side and for either buffer; the
/// exact sizes are taken. Fails if `new` skips the check (the old code
/// took any buffer of 16 bytes and failed later, or timed out).
#[test]
fn buffers_smaller_than_the_protocol_needs_are_refused_when_made() {
    type B = Buffers<Bounded>;
    // 16 header bytes and 8 u64 varints; the hello is smaller.
    assert_eq!(B::CALLER_INBOX, 16 + 80);
    // The hello: name, version, 4 schema hashes.
    assert_eq!(B::CALLER_OUT, 16 + 1 + 12 + 5 + 32);
    assert_eq!(
        (B::RESPONDER_OUT, B::RESPONDER_INBOX),
        (B::CALLER_INBOX, B::CALLER_OUT)
    );
    let sizes = [
        (B::CALLER_OUT - 1, B::CALLER_INBOX, B::CALLER_OUT),
        (B::CALLER_OUT, B::CALLER_INBOX - 1, B::CALLER_INBOX),
    ];
    for (out_len, inbox_len, needed) in sizes {
        let (pipeline, _worker) = Channel::<MAX_FDS>::pair().unwrap();
        let (mut out, mut inbox) = (vec![0u8; out_len], vec![0u8; inbox_len]);
        let made = Caller::<Bounded, MAX_FDS, CALLS>::new(pipeline, &mut out, &mut inbox);
        assert_eq!(
            made.unwrap_err(),
            Error::BufferTooSmall {
                len: needed - 1,
                needed
            }
        );
    }
    let sizes = [
        (B::RESPONDER_OUT - 1, B::RESPONDER_INBOX, B::RESPONDER_OUT),
        (B::RESPONDER_OUT, B::RESPONDER_INBOX - 1, B::RESPONDER_INBOX),
    ];
    for (out_len, inbox_len, needed) in sizes {
        let (_pipeline, worker) = Channel::<MAX_FDS>::pair().unwrap();
        let (mut out, mut inbox) = (vec![0u8; out_len], vec![0u8; inbox_len]);
        let made = Responder::<Bounded, MAX_FDS>::new(worker, &mut out, &mut inbox);
        assert_eq!(
            made.unwrap_err(),
            Error::BufferTooSmall {
                len: needed - 1,
                needed
            }
        );
    }
}

/// Arrays of exactly the sizes `Buffers` gives carry the largest value of
/// every type: a request, a reply, an event and a handler error each at
/// its longest encoding. Fails if a bound undercounts (the record would be
/// `EncodeFailed` at the sender or `Truncated` at the receiver).
#[test]
fn buffers_sized_from_the_types_carry_their_largest_values() {
    let _watchdog = Watchdog::for_test();
    let (pipeline, worker) = Channel::<MAX_FDS>::pair().unwrap();
    let largest = BoundedRequest::Ask {
        frame: u32::MAX,
        offset: i64::MIN,
    };
    let server = thread::spawn(move || {
        let mut out = [0u8; Buffers::<Bounded>::RESPONDER_OUT];
        let mut inbox = [0u8; Buffers::<Bounded>::RESPONDER_INBOX];
        let mut responder =
            Responder::<Bounded, MAX_FDS>::with_arrays(worker, &mut out, &mut inbox).unwrap();
        let mut served = Vec::new();
        for _ in 0..3 {
            served.push(responder.serve(|mut call| match call.request {
                BoundedRequest::Ask { frame, .. } if frame == u32::MAX => {
                    call.events.emit(&(u16::MAX, i32::MIN), &[])?;
                    Ok([u64::MAX; 8])
                }
                _ => Err(CallError::Handler(Denied::Code(u64::MAX))),
            }));
        }
        served
    });
    let mut out = [0u8; Buffers::<Bounded>::CALLER_OUT];
    let mut inbox = [0u8; Buffers::<Bounded>::CALLER_INBOX];
    let mut caller =
        Caller::<Bounded, MAX_FDS, CALLS>::with_arrays(pipeline, &mut out, &mut inbox).unwrap();
    let mut events = Vec::new();
    let (reply, _) = caller
        .call(&largest, &[], BOUND, |event, _| events.push(event))
        .unwrap();
    assert_eq!((reply, events), ([u64::MAX; 8], vec![(u16::MAX, i32::MIN)]));
    let denied = caller.call(&BoundedRequest::Quiet, &[], BOUND, |_, _| {});
    assert_eq!(
        denied.unwrap_err(),
        CallError::Handler(Denied::Code(u64::MAX))
    );
    drop(caller);
    let served = server.join().unwrap();
    assert_eq!(
        served,
        [
            Ok(Served::Hello),
            Ok(Served::Replied { cookie: 1 }),
            Ok(Served::HandlerError { cookie: 2 })
        ]
    );
}

/// A protocol whose handler error is a borrowed string, without a bound.
struct Chatty;

impl Protocol for Chatty {
    const NAME: &'static str = "test.chatty";
    const VERSION: u32 = 1;
    type Request<'a> = &'a str;
    type Reply<'a> = u8;
    type Event<'a> = ();
    type Error<'a> = &'a str;
}

/// A handler error that does not fit the responder's outgoing buffer is
/// refused as `HandlerFailed` at once (the call does not wait for its
/// deadline), and one that fits arrives typed. Fails if the oversized
/// error is dropped without an answer (the call would time out) or sent
/// truncated.
#[test]
fn a_handler_error_too_large_for_the_out_buffer_is_refused_as_handler_failed() {
    let _watchdog = Watchdog::for_test();
    let (pipeline, worker) = Channel::<MAX_FDS>::pair().unwrap();
    let server = thread::spawn(move || {
        // Room for the hello ("test.chatty": 1 + 11, the version at its
        // largest 5, the schema hashes 32) and no more: 49 body bytes.
        let (mut out, mut inbox) = ([0u8; 16 + 49], [0u8; 256]);
        let mut responder =
            Responder::<Chatty, MAX_FDS>::new(worker, &mut out, &mut inbox).unwrap();
        (0..3)
            .map(|_| responder.serve(|call| Err(CallError::Handler(call.request))))
            .collect::<Vec<_>>()
    });
    let (mut out, mut inbox) = ([0u8; 256], [0u8; 256]);
    let mut caller = Caller::<Chatty, MAX_FDS, CALLS>::new(pipeline, &mut out, &mut inbox).unwrap();
    let long = "x".repeat(60);
    let started = Instant::now();
    let refused = caller.call(&long.as_str(), &[], BOUND, |_, _| {});
    assert_eq!(
        refused.unwrap_err(),
        CallError::Ipc(Error::Rejected(Rejection::HandlerFailed))
    );
    assert!(started.elapsed() < BOUND, "waited for the deadline");
    let short = caller.call(&"no sensor", &[], BOUND, |_, _| {});
    assert_eq!(short.unwrap_err(), CallError::Handler("no sensor"));
    drop(caller);
    let served = server.join().unwrap();
    assert_eq!(
        served,
        [
            Ok(Served::Hello),
            Ok(Served::Refused {
                cookie: 1,
                rejection: Rejection::HandlerFailed
            }),
            Ok(Served::HandlerError { cookie: 2 })
        ]
    );
}

// ---------------------------------------------------------------------------
// A call's wait for its reply: one `recvmsg` under `SO_RCVTIMEO`.

/// A call waiting for its reply, interrupted by a signal each time it is
/// seen blocked (in `recvmsg` under `SO_RCVTIMEO`, or in the `poll` of the
/// deadline's last milliseconds), as fast as the signals are handled,
/// still ends `TimedOut` at its deadline. A wait that retried the
/// interrupted `recvmsg` would wait the whole receive timeout again each
/// time and would still be waiting when the signals stop.
#[test]
fn a_call_keeps_its_deadline_across_interruptions() {
    // Not a speed limit: only a wait that restarts on every signal is
    // still waiting then (its receive timeout is under 200 ms).
    const GIVE_UP: Duration = Duration::from_secs(10);
    const TIMEOUT: Duration = Duration::from_millis(300);
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    common::signals::install_handler_without_sa_restart();
    let (raw, mut caller) = greeted_caller();
    let run = common::signals::interrupt_wait(
        &[libc::SYS_recvmsg, libc::SYS_ppoll],
        || {
            caller
                .call(&Request::Ping(1), &[], TIMEOUT, |_, _| {})
                .map(|_| ())
                .map_err(Error::from)
        },
        Duration::ZERO,
        GIVE_UP,
    );
    println!(
        "call({TIMEOUT:?}) interrupted {} times: {:?} after {:?}",
        run.interruptions, run.result, run.elapsed
    );
    assert!(
        !run.gave_up,
        "the call was still waiting after {GIVE_UP:?} of signals: it restarts its wait on EINTR"
    );
    assert_eq!(run.result, Err(Error::TimedOut));
    assert!(run.elapsed >= TIMEOUT, "returned early: {:?}", run.elapsed);
    assert!(run.interruptions >= 1, "the wait was never interrupted");
    assert_eq!(caller.in_flight(), 0);
    drop(raw);
}

/// The receive timeout a call set on the socket is taken off by
/// `into_channel`: the channel given back blocks for ever, as it did.
#[test]
fn into_channel_takes_off_the_receive_timeout_a_call_set() {
    use rustix::net::sockopt::{Timeout, socket_timeout};
    let _watchdog = Watchdog::for_test();
    let (raw, mut caller) = greeted_caller();
    let peer = thread::spawn(move || {
        assert_eq!(raw_recv(&raw).0.kind, Kind::Hello);
        let (header, _) = raw_recv(&raw);
        let reply = record(Kind::Reply, header.cookie, &encode(&Reply::Pong(7)));
        raw.send(&reply, &[]).unwrap();
        raw
    });
    let (reply, _) = caller
        .call(&Request::Ping(7), &[], BOUND, |_, _| {})
        .unwrap();
    assert_eq!(reply, Reply::Pong(7));
    let set = socket_timeout(&caller, Timeout::Recv).unwrap();
    assert!(
        set.is_some_and(|set| set < BOUND),
        "the call waited under SO_RCVTIMEO inside its deadline: {set:?}"
    );
    let channel = caller.into_channel();
    assert_eq!(socket_timeout(&channel, Timeout::Recv).unwrap(), None);
    drop(peer.join().unwrap());
}

/// A call without a deadline (`Duration::MAX`) on a caller whose earlier
/// call set `SO_RCVTIMEO` still waits for its reply when the option
/// expires first: the expiry is a wake-up, not an error.
#[test]
fn a_call_without_deadline_outlasts_the_receive_timeout_an_earlier_call_set() {
    use rustix::net::sockopt::{Timeout, socket_timeout};
    let _watchdog = Watchdog::for_test();
    let (raw, mut caller) = greeted_caller();
    let peer = thread::spawn(move || {
        assert_eq!(raw_recv(&raw).0.kind, Kind::Hello);
        let (header, _) = raw_recv(&raw);
        raw.send(
            &record(Kind::Reply, header.cookie, &encode(&Reply::Pong(1))),
            &[],
        )
        .unwrap();
        let (header, _) = raw_recv(&raw);
        // Not synchronisation: the reply must come after the caller's
        // receive timeout (under 50 ms) has expired at least once.
        thread::sleep(Duration::from_millis(200));
        raw.send(
            &record(Kind::Reply, header.cookie, &encode(&Reply::Pong(2))),
            &[],
        )
        .unwrap();
        raw
    });
    let (reply, _) = caller
        .call(
            &Request::Ping(1),
            &[],
            Duration::from_millis(100),
            |_, _| {},
        )
        .unwrap();
    assert_eq!(reply, Reply::Pong(1));
    let set = socket_timeout(&caller, Timeout::Recv).unwrap();
    assert!(
        set.is_some_and(|set| set < Duration::from_millis(100)),
        "{set:?}"
    );
    let (reply, _) = caller
        .call(&Request::Ping(2), &[], Duration::MAX, |_, _| {})
        .unwrap();
    assert_eq!(reply, Reply::Pong(2));
    assert_eq!(caller.in_flight(), 0);
    drop(peer.join().unwrap());
}

/// Where `setsockopt` is refused (a filter returning `EPERM`), a call with
/// a deadline waits with `poll` instead: it gets its reply, and a call
/// that gets none ends at its deadline (a receive believed to be under
/// `SO_RCVTIMEO` would block for ever).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[test]
fn a_call_whose_setsockopt_is_refused_waits_with_poll() {
    let _watchdog = Watchdog::for_test();
    let (pipeline, raw) = Channel::<MAX_FDS>::pair().unwrap();
    raw.send(&record(Kind::Hello, 0, &hello_body()), &[])
        .unwrap();
    let peer = thread::spawn(move || {
        assert_eq!(raw_recv(&raw).0.kind, Kind::Hello);
        // The first ping is answered, the second is not.
        let (header, _) = raw_recv(&raw);
        let reply = record(Kind::Reply, header.cookie, &encode(&Reply::Pong(1)));
        raw.send(&reply, &[]).unwrap();
        raw_recv(&raw);
        raw
    });
    let program = refusing(&[libc::SYS_setsockopt]);
    let (done, ended) = std::sync::mpsc::channel();
    let confined = thread::spawn(move || {
        seccompiler::apply_filter(&program).unwrap();
        let (mut out, mut inbox) = ([0u8; 1024], [0u8; 1024]);
        let mut caller =
            Caller::<Isp, MAX_FDS, CALLS>::new(pipeline, &mut out, &mut inbox).unwrap();
        let mut replies = Vec::new();
        for (n, timeout) in [(1, BOUND), (2, Duration::from_millis(300))] {
            replies.push(
                match caller.call(&Request::Ping(n), &[], timeout, |_, _| {}) {
                    Ok((Reply::Pong(n), _)) => Ok(n),
                    Ok((other, _)) => panic!("unexpected {other:?}"),
                    Err(error) => Err(Error::from(error)),
                },
            );
        }
        done.send((replies, caller.in_flight())).unwrap();
    });
    // A wait that does not end at its deadline fails here, not by the
    // watchdog (the blocked thread is left behind).
    let (replies, in_flight) = ended
        .recv_timeout(BOUND * 2)
        .expect("the calls did not end by their deadlines");
    confined.join().unwrap();
    assert_eq!(replies, [Ok(1), Err(Error::TimedOut)]);
    assert_eq!(in_flight, 0);
    drop(peer.join().unwrap());
}
