//! Typed calls with the worker in another process: killed with `SIGKILL`
//! mid-call, or alive and never answering.
//!
//! This test binary has its own `main` (`harness = false` in Cargo.toml,
//! run by `common::harness`). The worker is this binary re-executed with
//! `--child worker FD`: it serves `FD` as protocol `Isp`
//! (`tests/calls_protocol`), and a `Slow` request waits in its handler,
//! after printing `gate` on stdout, until its stdin reaches end-of-file.
//! So the parent knows when the worker is inside a call (the line), can
//! kill it there, or leave it hung until the test closes its stdin.
//! Nothing sleeps; a child that does not exit within `TEST_BOUND` is killed
//! and fails its test.

mod calls_protocol;
mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdout, ExitCode, Stdio};
use std::time::{Duration, Instant};

use calls_protocol::{BUF, CALLS, Isp, MAX_FDS, Request, run_worker};
use common::{TEST_BOUND, harness, wait_child};
use ipc_unixsocket::calls::{Caller, Cookie, Incoming};
use ipc_unixsocket::{Channel, Error};
use rustix::event::{PollFd, PollFlags, poll};
use rustix::io::{FdFlags, fcntl_setfd};

type TestCaller<'b> = Caller<'b, Isp, MAX_FDS, CALLS>;

/// A deadline far away: a call that ends with `Disconnected` did not wait
/// for it; a stuck test still fails within seconds, not at the watchdog.
const FAR: Duration = Duration::from_secs(10);

const TESTS: &[(&str, fn())] = &[
    (
        "sigkill_mid_call_returns_disconnected_not_timed_out",
        sigkill_mid_call_returns_disconnected_not_timed_out,
    ),
    (
        "sigkill_fails_every_started_call_then_poll",
        sigkill_fails_every_started_call_then_poll,
    ),
    (
        "hung_worker_call_times_out_not_before_the_deadline",
        hung_worker_call_times_out_not_before_the_deadline,
    ),
    (
        "hung_worker_started_calls_time_out_not_before_their_deadlines",
        hung_worker_started_calls_time_out_not_before_their_deadlines,
    ),
];

fn main() -> ExitCode {
    harness::main(child_main, || {
        TESTS
            .iter()
            .map(|(name, run)| harness::test(name, TEST_BOUND + Duration::from_secs(60), *run))
            .collect()
    })
}

// ---------------------------------------------------------------------------
// The worker process.

fn child_main(args: &[String]) -> ExitCode {
    let [role, fd] = args else {
        panic!("usage: --child worker FD, not {args:?}");
    };
    assert_eq!(role, "worker");
    let raw: i32 = fd.parse().expect("fd number");
    // SAFETY: the parent cleared FD_CLOEXEC on exactly this fd and passed
    // its number; nothing else in this process owns or closes it.
    let channel = Channel::adopt(unsafe { OwnedFd::from_raw_fd(raw) }).expect("bind");
    let log = run_worker(channel, || {
        println!("gate");
        let mut rest = Vec::new();
        std::io::stdin().read_to_end(&mut rest).expect("stdin");
    });
    // The caller went away; anything else ended the worker early.
    assert_eq!(
        log.served.last(),
        Some(&Err(Error::Disconnected)),
        "{log:?}"
    );
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------------------
// The parent's side.

struct Worker {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    /// Starts a worker on the remote end of a fresh channel.
    fn spawn() -> (Channel<MAX_FDS>, Self) {
        let (local, remote) = Channel::<MAX_FDS>::create().unwrap();
        fcntl_setfd(&remote, FdFlags::empty()).unwrap();
        let mut child = harness::child_command(["worker", &remote.as_raw_fd().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn worker");
        drop(remote);
        let stdout = BufReader::new(child.stdout.take().unwrap());
        (local, Self { child, stdout })
    }

    /// Waits for the worker to be inside a `Slow` call.
    fn wait_at_gate(&mut self) {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "gate\n", "the worker never reached its gate");
    }

    fn sigkill(mut self) {
        self.child.kill().unwrap();
        let status = wait_child(&mut self.child, "killed worker", TEST_BOUND);
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    }

    /// Opens the gate for good (end-of-file on stdin): with the caller gone,
    /// the worker's reply fails and it exits 0.
    fn finish(mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "worker died");
        drop(self.child.stdin.take());
        let status = wait_child(&mut self.child, "worker", TEST_BOUND);
        assert!(status.success(), "worker: {status}");
    }
}

/// The next thing `poll` reports, waiting for the socket or the first
/// deadline as a main loop would.
fn next<T>(caller: &mut TestCaller<'_>, map: impl FnOnce(Incoming<'_, Isp, MAX_FDS>) -> T) -> T {
    let mut map = Some(map);
    loop {
        if let Some(incoming) = caller.try_incoming().expect("poll") {
            return map.take().unwrap()(incoming);
        }
        let left = caller.until_next_deadline();
        let bound = left.map_or(TEST_BOUND, |left| left.min(TEST_BOUND));
        let timeout = rustix::event::Timespec {
            tv_sec: bound.as_secs() as _,
            tv_nsec: bound.subsec_nanos() as _,
        };
        let mut watch = [PollFd::new(caller, PollFlags::IN)];
        match poll(&mut watch, Some(&timeout)) {
            Ok(0) if left.is_none() => panic!("nothing arrived within {TEST_BOUND:?}"),
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(errno) => panic!("poll: {errno}"),
        }
    }
}

fn failed(incoming: Incoming<'_, Isp, MAX_FDS>) -> (Cookie, Error) {
    match incoming {
        Incoming::Failed { cookie, error } => (cookie, error),
        other => panic!("expected a failed call, got {other:?}"),
    }
}

/// A blocking call whose worker is killed inside the handler returns
/// `Disconnected`, though its deadline is a minute away; so does every
/// call after it. Fails if the caller missed the hangup and waited for the
/// deadline (`TimedOut`) or for ever (the watchdog).
fn sigkill_mid_call_returns_disconnected_not_timed_out() {
    let (channel, mut worker) = Worker::spawn();
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = TestCaller::new(channel, &mut out, &mut inbox).unwrap();
    let killer = std::thread::spawn(move || {
        worker.wait_at_gate();
        worker.sigkill();
    });
    let request = Request::Slow { contents: b"never" };
    let got = caller.call(&request, &[], FAR, |_, _| {});
    killer.join().expect("killer");
    assert_eq!(got.unwrap_err(), Error::Disconnected);
    let again = caller.call(&Request::Ping(1), &[], FAR, |_, _| {});
    assert_eq!(again.unwrap_err(), Error::Disconnected);
    assert_eq!(caller.in_flight(), 0);
}

/// Three started calls (one inside the handler, two queued behind it) when
/// the worker is killed: `poll` reports each as `Failed{Disconnected}`,
/// then returns `Err(Disconnected)`, and `start` refuses new calls. Fails
/// if a call is lost, reported twice, reported as timed out, or only at its
/// deadline.
fn sigkill_fails_every_started_call_then_poll() {
    let (channel, mut worker) = Worker::spawn();
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = TestCaller::new(channel, &mut out, &mut inbox).unwrap();
    let mut cookies = [
        caller
            .start(&Request::Slow { contents: b"never" }, &[], Some(FAR))
            .unwrap(),
        caller.start(&Request::Ping(1), &[], Some(FAR)).unwrap(),
        caller.start(&Request::Ping(2), &[], None).unwrap(),
    ];
    worker.wait_at_gate();
    worker.sigkill();
    let mut got: Vec<(Cookie, Error)> = (0..3).map(|_| next(&mut caller, failed)).collect();
    got.sort_by_key(|(cookie, _)| *cookie);
    cookies.sort();
    let expected: Vec<(Cookie, Error)> =
        cookies.iter().map(|&c| (c, Error::Disconnected)).collect();
    assert_eq!(got, expected);
    assert_eq!(caller.try_incoming().unwrap_err(), Error::Disconnected);
    assert_eq!(caller.try_incoming().unwrap_err(), Error::Disconnected);
    assert_eq!(
        caller.start(&Request::Ping(3), &[], Some(FAR)).unwrap_err(),
        Error::Disconnected
    );
    assert_eq!(caller.in_flight(), 0);
}

/// A worker that is alive but never answers (stuck in the handler): the
/// call returns `TimedOut`, not before its deadline, and the worker is
/// still running. Fails if the call returned early, with another error, or
/// never (the watchdog).
fn hung_worker_call_times_out_not_before_the_deadline() {
    let (channel, mut worker) = Worker::spawn();
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = TestCaller::new(channel, &mut out, &mut inbox).unwrap();
    let timeout = Duration::from_millis(300);
    let began = Instant::now();
    let got = caller.call(
        &Request::Slow { contents: b"hung" },
        &[],
        timeout,
        |_, _| {},
    );
    let elapsed = began.elapsed();
    assert_eq!(got.unwrap_err(), Error::TimedOut);
    assert!(
        elapsed >= timeout,
        "timed out after {elapsed:?} < {timeout:?}"
    );
    assert_eq!(caller.in_flight(), 0);
    worker.wait_at_gate();
    drop(caller);
    worker.finish();
}

/// Two started calls to a hung worker: one stuck in the handler (deadline
/// 500 ms), one queued behind it (300 ms). Each comes back
/// `Failed{TimedOut}`, the earlier deadline first although started second,
/// neither before its deadline.
fn hung_worker_started_calls_time_out_not_before_their_deadlines() {
    let (channel, mut worker) = Worker::spawn();
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = TestCaller::new(channel, &mut out, &mut inbox).unwrap();
    let (first, second) = (Duration::from_millis(300), Duration::from_millis(500));
    let began = Instant::now();
    let slow = caller
        .start(&Request::Slow { contents: b"hung" }, &[], Some(second))
        .unwrap();
    let queued = caller.start(&Request::Ping(1), &[], Some(first)).unwrap();
    let a = next(&mut caller, failed);
    let after_first = began.elapsed();
    assert_eq!(a, (queued, Error::TimedOut));
    assert!(after_first >= first, "{after_first:?} < {first:?}");
    let b = next(&mut caller, failed);
    let after_second = began.elapsed();
    assert_eq!(b, (slow, Error::TimedOut));
    assert!(after_second >= second, "{after_second:?} < {second:?}");
    assert!(caller.try_incoming().unwrap().is_none());
    worker.wait_at_gate();
    drop(caller);
    worker.finish();
}
