//! The crate's promises with the peer inside the confinement a camera
//! pipeline puts its untrusted worker in.
//!
//! The crate exists for a pipeline process talking to an untrusted,
//! sandboxed worker; these tests run that worker sandboxed. Each confined
//! peer is this test binary re-executed with a role (`--child ROLE ...`,
//! see `common::harness`) that confines *itself* at its start, the way a
//! worker does before it touches anything the pipeline sends:
//!
//! - a new pid namespace (`unshare(CLONE_NEWPID)`, then `fork`: the
//!   grandchild is pid 1 there), with the worker or a `Listener` inside;
//! - a seccomp filter: the allowlist of `docs/seccomp-allowlist.md`
//!   (default action kill, or `EPERM`), and the same list without
//!   `getsockopt`/`setsockopt`, or without `ppoll`;
//! - a mount namespace without `/proc`;
//! - uid and gid 65534 with no capabilities and `no_new_privs`;
//! - an `RLIMIT_NOFILE` just above the fds it has open;
//! - all of these at once (`camera_sandbox_worker_serves_calls`).
//!
//! The promises checked there: a peer's death is `Disconnected`, no fd
//! leaks (counted with `/proc/self/fd` in the parent, by probing fds
//! 0..1024 with `fcntl(F_GETFD)` in a child, which may have no `/proc` or
//! may not read its own), credentials are reported, malformed records and
//! fds past the limit are typed errors, and calls end at their deadlines.
//!
//! Channel fds reach a child at fixed numbers (3, 4, ...), placed by
//! `dup2` in `Command::pre_exec`: the parent never clears `FD_CLOEXEC`.
//! Every wait on a peer has its own deadline ([`PEER_WAIT`]); nothing
//! sleeps, nothing is timed. A kernel that refuses a namespace (`EPERM`,
//! `EINVAL`, `ENOSYS` from `unshare`) makes the child print `skipped:
//! REASON` and exit 77, and the test passes; seccomp tests skip on
//! architectures seccompiler does not build filters for.
//!
//! A child under a seccomp filter may only `write` to fd 2: its panic hook
//! prints the message in one `write` and exits 101 (std's report and
//! `abort` are refused). Children that set an fd limit first close the fds
//! they inherited by accident (`close_strays`).
//!
//! `SANDBOX_STRACE=FILE` runs the calls worker (and the confined caller)
//! under `strace -f -o FILE`: how the allowlist was measured (see
//! `docs/seccomp-allowlist.md`).

mod calls_protocol;
mod common;

use std::ffi::CStr;
use std::fmt::Display;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitCode, ExitStatus};
use std::time::Duration;

use calls_protocol::{
    BUF, CALLS, Event, Isp, MAX_FDS, Reply, Request, contents, fnv, handle, memfd,
};
use common::{harness, open_fds, send_raw, wait_child};
use ipc_unixsocket::calls::{Attach, Caller, Rejection, Responder};
use ipc_unixsocket::{Channel, Credentials, Error, Listener, Mode};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Gid, Pid, Uid, getgid, getuid};

type TestCaller<'b> = Caller<'b, Isp, MAX_FDS, CALLS>;

/// Bound of every wait on a peer: a receive, a call, a `poll`.
const PEER_WAIT: Duration = Duration::from_secs(10);
/// Bound of a child's exit once its part is done.
const CHILD_WAIT: Duration = Duration::from_secs(20);
/// Exit status of a child whose kernel refused a namespace.
const SKIP: u8 = 77;
/// Calls the confined worker serves before the deadline and the hang-up.
const CALLS_SERVED: u32 = 30;
/// Deadline of the call the worker holds at its gate.
const SHORT: Duration = Duration::from_millis(200);
/// The unprivileged uid and gid a worker drops to (`nobody`).
const NOBODY: u32 = 65534;

const TESTS: &[(&str, fn())] = &[
    (
        "pidns_worker_sees_no_pid_and_its_death_is_disconnected",
        pidns_worker_sees_no_pid_and_its_death_is_disconnected,
    ),
    (
        "pidns_pipeline_death_is_disconnected_at_the_worker",
        pidns_pipeline_death_is_disconnected_at_the_worker,
    ),
    (
        "pidns_listener_policy_sees_no_pid_and_can_refuse",
        pidns_listener_policy_sees_no_pid_and_can_refuse,
    ),
    ("calls_worker_unconfined", calls_worker_unconfined),
    (
        "seccomp_allowlist_kill_worker_serves_calls",
        seccomp_allowlist_kill_worker_serves_calls,
    ),
    (
        "seccomp_allowlist_eperm_worker_serves_calls",
        seccomp_allowlist_eperm_worker_serves_calls,
    ),
    (
        "seccomp_kill_worker_first_deadline_after_the_filter",
        seccomp_kill_worker_first_deadline_after_the_filter,
    ),
    (
        "camera_sandbox_worker_serves_calls",
        camera_sandbox_worker_serves_calls,
    ),
    (
        "seccomp_kill_filter_is_in_force",
        seccomp_kill_filter_is_in_force,
    ),
    (
        "seccomp_no_sockopt_worker_sees_disconnected",
        seccomp_no_sockopt_worker_sees_disconnected,
    ),
    (
        "seccomp_no_sockopt_caller_call_fails_disconnected_none_in_flight",
        seccomp_no_sockopt_caller_call_fails_disconnected_none_in_flight,
    ),
    (
        "seccomp_no_poll_caller_call_fails_typed_none_in_flight",
        seccomp_no_poll_caller_call_fails_typed_none_in_flight,
    ),
    (
        "no_proc_listener_bind_gets_its_mode_under_umask",
        no_proc_listener_bind_gets_its_mode_under_umask,
    ),
    (
        "no_proc_channel_receives_rejects_and_disconnects",
        no_proc_channel_receives_rejects_and_disconnects,
    ),
    (
        "nobody_without_capabilities_is_reported_and_keeps_the_promises",
        nobody_without_capabilities_is_reported_and_keeps_the_promises,
    ),
    (
        "fd_limit_is_a_typed_error_without_leak_and_the_channel_goes_on",
        fd_limit_is_a_typed_error_without_leak_and_the_channel_goes_on,
    ),
];

fn main() -> ExitCode {
    harness::main(child_main, || {
        TESTS
            .iter()
            .map(|(name, run)| harness::test(name, common::TEST_BOUND, *run))
            .collect()
    })
}

// ===========================================================================
// The parent's side: the pipeline.

/// A confined child, killed and reaped if the test fails before it ends.
struct Peer {
    child: Child,
    role: String,
}

impl Peer {
    /// Starts this binary as `--child ARGS...` with `fds` placed at 3, 4, ...
    fn spawn(args: &[&str], fds: &[BorrowedFd<'_>]) -> Self {
        assert!(fds.len() <= 4, "at most 4 fds");
        let mut raw: [RawFd; 4] = [-1; 4];
        for (at, fd) in fds.iter().enumerate() {
            raw[at] = fd.as_raw_fd();
        }
        let count = fds.len();
        let mut command = match std::env::var_os("SANDBOX_STRACE") {
            Some(file) if ["calls-worker", "caller"].contains(&args[0]) => {
                let mut strace = Command::new("strace");
                strace
                    .args(["-f", "-qq", "-o"])
                    .arg(file)
                    .arg(std::env::current_exe().expect("current_exe"))
                    .arg(harness::CHILD)
                    .args(args);
                strace
            }
            _ => harness::child_command(args),
        };
        // SAFETY: the closure runs in the forked child before `exec` and
        // makes only async-signal-safe calls (`fcntl`, `dup2`) on fd
        // numbers; it allocates nothing (`raw` is a copied array).
        unsafe {
            command.pre_exec(move || place_fds(&raw[..count]));
        }
        let child = command.spawn().expect("spawn the child");
        Self {
            child,
            role: args.join(" "),
        }
    }

    /// Waits for the child's exit (at most [`CHILD_WAIT`]).
    fn finish(&mut self) -> ExitStatus {
        wait_child(&mut self.child, &self.role, CHILD_WAIT)
    }

    /// Waits for a child that must exit 0 (or 77: skipped, returns false).
    fn succeeds(&mut self) -> bool {
        let status = self.finish();
        if status.code() == Some(i32::from(SKIP)) {
            println!("skipped: the {} child could not confine itself", self.role);
            return false;
        }
        assert!(
            status.success(),
            "the {} child: {}",
            self.role,
            ended(status)
        );
        true
    }

    /// Fails the test with `what` and how the child ended.
    fn fail(&mut self, what: impl Display) -> ! {
        let status = self.finish();
        panic!("{what}; the {} child: {}", self.role, ended(status));
    }

    /// The next record on `channel`, or `None` if the child skipped; fails
    /// on anything else.
    fn recv_or_skip<const N: usize, const CAP: usize>(
        &mut self,
        channel: &Channel<N>,
        fds: &mut heapless::Vec<OwnedFd, CAP>,
    ) -> Option<Vec<u8>> {
        let mut data = [0u8; 256];
        match channel.recv_timeout(&mut data, fds, PEER_WAIT) {
            Ok(got) => Some(data[..got.data_len].to_vec()),
            Err(error) => {
                let status = self.finish();
                if status.code() == Some(i32::from(SKIP)) {
                    println!("skipped: the {} child could not confine itself", self.role);
                    return None;
                }
                panic!(
                    "receive from the {} child: {error:?}; it {}",
                    self.role,
                    ended(status)
                );
            }
        }
    }

    /// The next record on `channel`; fails on anything else.
    fn recv<const N: usize, const CAP: usize>(
        &mut self,
        channel: &Channel<N>,
        fds: &mut heapless::Vec<OwnedFd, CAP>,
    ) -> Vec<u8> {
        match self.recv_or_skip(channel, fds) {
            Some(data) => data,
            None => panic!("the {} child skipped half-way", self.role),
        }
    }

    /// Receives the acknowledgement `ack` (a record without fds).
    fn expect_ack<const N: usize>(&mut self, channel: &Channel<N>, ack: &[u8]) {
        let got = self.recv(channel, &mut heapless::Vec::<OwnedFd, 0>::new());
        if got != ack {
            self.fail(format_args!(
                "expected {:?}, got {:?}",
                String::from_utf8_lossy(ack),
                String::from_utf8_lossy(&got)
            ));
        }
    }

    /// `result`'s value, or a failure naming `what` and the child's end.
    fn ok<T>(&mut self, result: Result<T, Error>, what: &str) -> T {
        result.unwrap_or_else(|error| self.fail(format_args!("{what}: {error:?}")))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// In the forked child, before `exec`: puts `fds[i]` at `3 + i`, without
/// `FD_CLOEXEC`. Each is first copied above 64 (close-on-exec) so that no
/// `dup2` overwrites a source still to be placed.
fn place_fds(fds: &[RawFd]) -> std::io::Result<()> {
    let mut high: [RawFd; 4] = [-1; 4];
    for (at, &fd) in fds.iter().enumerate() {
        // SAFETY: F_DUPFD_CLOEXEC makes a new fd; `fd` is open in the
        // parent and so, after fork, here.
        high[at] = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64) };
        if high[at] < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    for (at, &fd) in high[..fds.len()].iter().enumerate() {
        // SAFETY: `dup2` onto 3 + at, a number nothing in this (about to
        // exec) child uses; the new fd has no FD_CLOEXEC.
        if unsafe { libc::dup2(fd, 3 + at as RawFd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn ended(status: ExitStatus) -> String {
    match status.signal() {
        Some(libc::SIGSYS) => {
            format!("was killed by SIGSYS (a system call outside the filter): {status}")
        }
        Some(signal) => format!("was killed by signal {signal}: {status}"),
        None => format!("exited: {status}"),
    }
}

/// The credentials this process gives a socket it creates, pid aside.
fn my_ids() -> (u32, u32) {
    (getuid().as_raw(), getgid().as_raw())
}

/// Parses `"PID UID GID"` (pid 0 for none).
fn parse_ids(text: &str) -> (i32, u32, u32) {
    let mut numbers = text.split(' ');
    let mut next = || numbers.next().expect("three numbers");
    (
        next().parse().expect("pid"),
        next().parse().expect("uid"),
        next().parse().expect("gid"),
    )
}

fn show_ids(credentials: &Credentials) -> String {
    format!(
        "{} {} {}",
        credentials.pid.map_or(0, |pid| pid.as_raw_nonzero().get()),
        credentials.uid.as_raw(),
        credentials.gid.as_raw()
    )
}

/// The `NSpid:` line of `/proc/PID/status`: the pid in each namespace.
fn nspid(pid: i32) -> Vec<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .expect("NSpid line");
    line.split_whitespace()
        .map(|n| n.parse().expect("pid"))
        .collect()
}

// ---------------------------------------------------------------------------
// 1. A new pid namespace.

/// Worker in a new pid namespace: it sees the pipeline's pid as `None`
/// (uid/gid right), the pipeline sees its real pid on the channel it
/// created, and its death is `Disconnected` on both channels.
fn pidns_worker_sees_no_pid_and_its_death_is_disconnected() {
    pidns_worker("exit");
}

/// Worker in a new pid namespace: the pipeline's death (its ends closed) is
/// `Disconnected` at the worker, on both channels.
fn pidns_pipeline_death_is_disconnected_at_the_worker() {
    pidns_worker("wait");
}

fn pidns_worker(ending: &str) {
    let baseline = open_fds();
    {
        let (pipeline, remote) = Channel::<1>::create().unwrap();
        let mut peer = Peer::spawn(&["pidns-worker", ending], &[remote.as_fd()]);
        drop(remote);
        // The middle child reports the worker's pid as its fork returned
        // it; the worker its view of the pipeline and a channel it made.
        let (mut worker_pid, mut report, mut made) = (None, None, None);
        while worker_pid.is_none() || report.is_none() {
            let mut fds = heapless::Vec::<OwnedFd, 1>::new();
            let Some(data) = peer.recv_or_skip(&pipeline, &mut fds) else {
                return;
            };
            let text = String::from_utf8(data).expect("text");
            if let Some(pid) = text.strip_prefix("pid ") {
                worker_pid = Some(pid.parse::<i32>().expect("pid"));
            } else if let Some(ids) = text.strip_prefix("creds ") {
                report = Some(parse_ids(ids));
                made = fds.pop();
            } else {
                peer.fail(format_args!("unexpected record {text:?}"));
            }
        }
        let worker_pid = worker_pid.unwrap();
        let (uid, gid) = my_ids();
        assert_eq!(
            nspid(worker_pid),
            [worker_pid, 1],
            "the worker is pid 1 of a new pid namespace"
        );
        assert_eq!(
            report.unwrap(),
            (0, uid, gid),
            "the worker's peer_credentials() of the pipeline: pid None (0), our uid and gid"
        );
        let made = Channel::<1>::adopt(made.expect("the worker's channel")).unwrap();
        assert_eq!(
            made.peer_credentials().unwrap(),
            Credentials {
                pid: Pid::from_raw(worker_pid),
                uid: Uid::from_raw(uid),
                gid: Gid::from_raw(gid),
            },
            "the pipeline sees the worker's real pid"
        );
        let mut no_fds = heapless::Vec::<OwnedFd, 1>::new();
        let mut data = [0u8; 16];
        if ending == "exit" {
            peer.ok(pipeline.send(b"exit", &[]), "send exit");
            assert_eq!(
                pipeline.recv_timeout(&mut data, &mut no_fds, PEER_WAIT),
                Err(Error::Disconnected),
                "the worker's death on the pipeline's channel"
            );
            assert_eq!(
                made.recv_timeout(&mut data, &mut no_fds, PEER_WAIT),
                Err(Error::Disconnected),
                "the worker's death on the worker's channel"
            );
        } else {
            drop(pipeline);
            drop(made);
        }
        peer.succeeds();
    }
    assert_eq!(open_fds(), baseline, "fds leaked in the pipeline");
}

/// A `Listener` in a new pid namespace, its clients outside: the policy
/// runs for each, sees pid `None` and the right uid/gid, refuses the first
/// (closed at once), and the listener admits the next.
fn pidns_listener_policy_sees_no_pid_and_can_refuse() {
    let baseline = open_fds();
    {
        let name = format!("ipc-sandbox-{}", std::process::id());
        let (status, remote) = Channel::<0>::create().unwrap();
        let mut peer = Peer::spawn(&["pidns-listener", &name], &[remote.as_fd()]);
        drop(remote);
        let (mut listener_pid, mut ready) = (None, false);
        while listener_pid.is_none() || !ready {
            let mut fds = heapless::Vec::<OwnedFd, 0>::new();
            let Some(data) = peer.recv_or_skip(&status, &mut fds) else {
                return;
            };
            match String::from_utf8(data).expect("text").as_str() {
                "ready" => ready = true,
                text => match text.strip_prefix("pid ") {
                    Some(pid) => listener_pid = Some(pid.parse::<i32>().expect("pid")),
                    None => peer.fail(format_args!("unexpected record {text:?}")),
                },
            }
        }
        let refused = Channel::<1>::connect_abstract(name.as_bytes()).unwrap();
        let admitted = Channel::<1>::connect_abstract(name.as_bytes()).unwrap();
        let (mut data, mut fds) = ([0u8; 64], heapless::Vec::<OwnedFd, 1>::new());
        assert_eq!(
            refused.recv_timeout(&mut data, &mut fds, PEER_WAIT),
            Err(Error::Disconnected),
            "a refused client's connection is closed"
        );
        let welcome = peer.recv(&admitted, &mut fds);
        assert_eq!(welcome, b"welcome");
        assert_eq!(
            admitted.peer_credentials().unwrap().pid,
            Pid::from_raw(listener_pid.unwrap()),
            "the client outside sees the listener's real pid"
        );
        let report = String::from_utf8(peer.recv(&status, &mut heapless::Vec::<OwnedFd, 0>::new()))
            .expect("text");
        let (uid, gid) = my_ids();
        assert_eq!(
            report,
            format!("policy saw [0 {uid} {gid}] [0 {uid} {gid}], refused 1"),
            "what the policy saw (pid None is 0) and the refused count"
        );
        drop(admitted);
        peer.succeeds();
    }
    assert_eq!(open_fds(), baseline, "fds leaked in the pipeline");
}

// ---------------------------------------------------------------------------
// 2. seccomp.

/// The calls scenario with no filter: the reference the filtered runs are
/// compared with (and what `SANDBOX_STRACE` measures).
fn calls_worker_unconfined() {
    calls_with_worker("none", "warm", "plain");
}

/// A worker under the allowlist, default action kill the process, serves
/// typed calls (fds both ways, unclaimed fds, events, a malformed record, a
/// refused request, a call held past its deadline) and exits 0 on the
/// pipeline's hang-up (`Disconnected`).
fn seccomp_allowlist_kill_worker_serves_calls() {
    calls_with_worker("kill", "warm", "plain");
}

/// The same with default action `EPERM`.
fn seccomp_allowlist_eperm_worker_serves_calls() {
    calls_with_worker("eperm", "warm", "plain");
}

/// A worker under the kill allowlist whose first deadline wait comes after
/// the filter (it reads no clock itself before): it must not be killed. (On
/// 8370d57 it is: rustix looks for the vDSO at the first clock read, with
/// `prctl(PR_GET_AUXV)` and then `open("/proc/self/auxv")`, neither of
/// which a worker's allowlist has; the crate now reads the clock when it
/// makes a channel.)
fn seccomp_kill_worker_first_deadline_after_the_filter() {
    calls_with_worker("kill", "cold", "plain");
}

/// The whole sandbox at once, as camera firmware runs its worker: no
/// `/proc`, pid 1 of a new pid namespace, `RLIMIT_NOFILE` at the fds it
/// needs, uid 65534 without capabilities, the allowlist with default kill;
/// the calls scenario as above, ending `Disconnected` and exit 0.
fn camera_sandbox_worker_serves_calls() {
    calls_with_worker("kill", "warm", "camera");
}

/// The kill filter is really installed: a system call outside the
/// allowlist (`getppid`) kills the worker with `SIGSYS`. (The `EPERM`
/// filters check themselves in the child: see `seccomp::confine`.)
fn seccomp_kill_filter_is_in_force() {
    if !seccomp::SUPPORTED {
        println!("skipped: seccompiler builds no filter for this architecture");
        return;
    }
    let mut peer = Peer::spawn(&["seccomp-kill-probe"], &[]);
    let status = peer.finish();
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{}", ended(status));
}

/// The allowlist without `getsockopt`/`setsockopt` (`EPERM`): the worker
/// still serves, and the pipeline's hang-up is still `Disconnected` (was
/// `Os(EPERM)` before 8370d57).
fn seccomp_no_sockopt_worker_sees_disconnected() {
    calls_with_worker("nosockopt", "warm", "plain");
}

/// The calls scenario with a worker under `filter` (see
/// `seccomp::confine`) that reads the clock before it (`clock` "warm") or
/// not ("cold"), inside the whole sandbox (`confinement` "camera") or not
/// ("plain").
fn calls_with_worker(filter: &str, clock: &str, confinement: &str) {
    if filter != "none" && !seccomp::SUPPORTED {
        println!("skipped: seccompiler builds no filter for this architecture");
        return;
    }
    let baseline = open_fds();
    {
        let (local, remote) = Channel::<MAX_FDS>::create().unwrap();
        let (opener, gate) = Channel::<0>::create().unwrap();
        let mut peer = Peer::spawn(
            &["calls-worker", filter, clock, confinement],
            &[remote.as_fd(), gate.as_fd()],
        );
        drop((remote, gate));
        let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
        let mut caller = TestCaller::new(local, &mut out, &mut inbox).unwrap();
        // A first ping tells a child that could not confine itself (exit
        // 77: skipped) from one that failed.
        let first = caller
            .call(&Request::Ping(u32::MAX), &[], PEER_WAIT, |_, _| {})
            .map_err(Error::from);
        if let Err(error) = first.map(|_| ()) {
            let status = peer.finish();
            if status.code() == Some(i32::from(SKIP)) {
                println!("skipped: the {} child could not confine itself", peer.role);
                return;
            }
            panic!("the first call: {error:?}; the child {}", ended(status));
        }
        for n in 0..CALLS_SERVED {
            one_call(&mut peer, &mut caller, n);
        }
        // A malformed record with an fd: the worker drops it (counted) and
        // goes on.
        let junk = memfd(b"junk");
        send_raw(&caller, b"XX\x01\x00\x00\x00\x00\x00", &[junk.as_fd()]);
        // A request naming an fd slot past the fds it carries is refused.
        let (a, b) = (memfd(b"a"), memfd(b"b"));
        let mut attach = Attach::<MAX_FDS>::new();
        let (first, second) = (
            attach.attach(a.as_fd()).unwrap(),
            attach.attach(b.as_fd()).unwrap(),
        );
        let refused = caller
            .call(
                &Request::Pair { first, second },
                &attach.as_slice()[..1],
                PEER_WAIT,
                |_, _| {},
            )
            .map_err(Error::from);
        assert_eq!(
            refused.map(|_| ()),
            Err(Error::Rejected(Rejection::BadFdSlot)),
            "a request with a bad fd slot"
        );
        // A call the worker holds at its gate ends at its deadline.
        let held = caller
            .call(&Request::Slow { contents: b"late" }, &[], SHORT, |_, _| {})
            .map_err(Error::from);
        let held = held.map(|_| ());
        if held != Err(Error::TimedOut) {
            peer.fail(format_args!(
                "a call held at the gate: {held:?}, not Err(TimedOut)"
            ));
        }
        assert_eq!(caller.in_flight(), 0);
        peer.ok(opener.send(b"open", &[]), "open the gate");
        // Its late reply is dropped; the next call is answered.
        let (reply, _) = peer.ok(
            caller
                .call(&Request::Ping(7), &[], PEER_WAIT, |_, _| {})
                .map_err(Error::from),
            "the call after the late one",
        );
        assert_eq!(reply, Reply::Pong(7));
        assert_eq!(caller.late_replies(), 1);
        assert_eq!(caller.in_flight(), 0);
        drop(caller);
        peer.succeeds();
    }
    assert_eq!(open_fds(), baseline, "fds leaked in the pipeline");
}

/// Call `n`: a ping (answered after two events, one with an fd), two
/// buffers to digest (one or both), or an export (a memfd back).
fn one_call(peer: &mut Peer, caller: &mut TestCaller<'_>, n: u32) {
    match n % 3 {
        0 => {
            let mut events = Vec::new();
            let got = caller
                .call(
                    &Request::Ping(n),
                    &[],
                    PEER_WAIT,
                    |event, mut fds| match event {
                        Event::Frame { seq, buffer } => {
                            let fd = fds.claim(buffer).expect("the frame's fd");
                            events.push(format!("frame {seq} {:?}", contents(fd.as_fd())));
                        }
                        other => events.push(format!("{other:?}")),
                    },
                )
                .map_err(Error::from);
            let (reply, _) = peer.ok(got, "ping");
            assert_eq!(reply, Reply::Pong(n));
            assert_eq!(
                events,
                [
                    format!("Progress {{ seq: {n} }}"),
                    format!("frame {n} {:?}", b"frame".to_vec())
                ]
            );
        }
        1 => {
            let (a, b) = (
                memfd(format!("a{n}").as_bytes()),
                memfd(format!("b{n}").as_bytes()),
            );
            let mut attach = Attach::<MAX_FDS>::new();
            let slots = [
                Some(attach.attach(a.as_fd()).unwrap()),
                Some(attach.attach(b.as_fd()).unwrap()),
                None,
                None,
            ];
            // Every other time the worker leaves the second fd unclaimed
            // (the crate closes it).
            let claim = if n.is_multiple_of(2) { 1 } else { 2 };
            let request = Request::Buffers { slots, claim };
            let got = caller
                .call(&request, attach.as_slice(), PEER_WAIT, |_, _| {})
                .map_err(Error::from);
            let (reply, _) = peer.ok(got, "buffers");
            let digests = [
                Some(fnv(format!("a{n}").as_bytes())),
                (claim == 2).then(|| fnv(format!("b{n}").as_bytes())),
                None,
                None,
            ];
            assert_eq!(reply, Reply::Digests(digests));
        }
        _ => {
            let text = format!("export {n}");
            let request = Request::Export {
                contents: text.as_bytes(),
            };
            let got = caller
                .call(&request, &[], PEER_WAIT, |_, _| {})
                .map_err(Error::from);
            let (reply, mut fds) = peer.ok(got, "export");
            let Reply::Exported { file } = reply else {
                panic!("export answered {reply:?}");
            };
            let file = fds.claim(file).expect("the exported fd");
            assert_eq!(contents(file.as_fd()), text.as_bytes());
        }
    }
}

/// A `Caller` in a worker under the allowlist without
/// `getsockopt`/`setsockopt`: a call whose responder dies before answering
/// fails `Disconnected`, and `in_flight()` is 0 after it.
fn seccomp_no_sockopt_caller_call_fails_disconnected_none_in_flight() {
    if !seccomp::SUPPORTED {
        println!("skipped: seccompiler builds no filter for this architecture");
        return;
    }
    let baseline = open_fds();
    {
        let (local, remote) = Channel::<MAX_FDS>::create().unwrap();
        let mut peer = Peer::spawn(&["caller", "nosockopt"], &[remote.as_fd()]);
        drop(remote);
        let export = memfd(b"");
        let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
        let mut responder = Responder::<Isp, MAX_FDS>::new(local, &mut out, &mut inbox).unwrap();
        // The hello, then the first call, answered.
        loop {
            if !wait_readable(responder.as_fd(), PEER_WAIT) {
                peer.fail("no request from the confined caller");
            }
            let served = responder
                .try_serve(|call| handle(call, export.as_fd(), &mut || {}, &mut Vec::new()));
            if let Ok(Some(ipc_unixsocket::calls::Served::Replied { .. })) = served {
                break;
            }
            peer.ok(served, "serve");
        }
        // The second request arrives; the responder dies without answering.
        if !wait_readable(responder.as_fd(), PEER_WAIT) {
            peer.fail("no second request from the confined caller");
        }
        drop(responder);
        peer.succeeds();
    }
    assert_eq!(open_fds(), baseline, "fds leaked in the pipeline");
}

/// A `Caller` in a worker under the allowlist without `ppoll` and
/// `setsockopt` (`EPERM`):
/// a call whose wait fails returns that error, typed (`Os(EPERM)`), and
/// leaves `in_flight()` at 0.
fn seccomp_no_poll_caller_call_fails_typed_none_in_flight() {
    if !seccomp::SUPPORTED {
        println!("skipped: seccompiler builds no filter for this architecture");
        return;
    }
    let baseline = open_fds();
    {
        let (local, remote) = Channel::<MAX_FDS>::create().unwrap();
        // The responder's hello is queued before the caller starts: the
        // caller's call fails at once and it may exit before we would send.
        let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
        let responder = Responder::<Isp, MAX_FDS>::new(local, &mut out, &mut inbox).unwrap();
        let mut peer = Peer::spawn(&["caller", "nopoll"], &[remote.as_fd()]);
        drop(remote);
        peer.succeeds();
        drop(responder);
    }
    assert_eq!(open_fds(), baseline, "fds leaked in the pipeline");
}

// ---------------------------------------------------------------------------
// 3. No /proc.

/// Without `/proc`, under umask 0o077: `Listener::bind(path, 0o660)` works,
/// the socket file has mode 0o660, a client is served, and dropping the
/// listener removes the file; no fd leaks in the child.
fn no_proc_listener_bind_gets_its_mode_under_umask() {
    let dir = std::env::temp_dir().join(format!("ipc-sandbox-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut peer = Peer::spawn(&["noproc-listener", dir.to_str().unwrap()], &[]);
    let done = peer.succeeds();
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    std::fs::remove_dir_all(&dir).unwrap();
    if done {
        assert!(left.is_empty(), "the listener left {left:?}");
    }
}

/// Without `/proc`: a record with an fd is received, a malformed one is
/// `BadMagic` with its fds closed, the pipeline's hang-up is
/// `Disconnected`, and no fd leaks (probed with `fcntl`).
fn no_proc_channel_receives_rejects_and_disconnects() {
    let baseline = open_fds();
    {
        let (pipeline, remote) = Channel::<2>::create().unwrap();
        let mut peer = Peer::spawn(&["noproc-channel"], &[remote.as_fd()]);
        drop(remote);
        drive_promises(&mut peer, pipeline);
    }
    assert_eq!(open_fds(), baseline, "fds leaked in the pipeline");
}

/// The pipeline's half of `check_promises`: a record with an fd, a
/// malformed record with two, then the hang-up; the child must exit 0.
fn drive_promises(peer: &mut Peer, channel: Channel<2>) {
    let pixels = memfd(b"pixels");
    // The child may have skipped (exit 77) before this first record: the
    // send then fails with `Disconnected`, which is a skip, not a failure.
    if let Err(error) = channel.send(b"frame", &[pixels.as_fd()]) {
        if !peer.succeeds() {
            return;
        }
        panic!(
            "send frame: {error:?}; the {} child exited 0 before it",
            peer.role
        );
    }
    if peer
        .recv_or_skip(&channel, &mut heapless::Vec::<OwnedFd, 0>::new())
        .as_deref()
        != Some(b"got")
    {
        return; // skipped (or failed above)
    }
    let (a, b) = (memfd(b"a"), memfd(b"b"));
    send_raw(
        &channel,
        b"XX\x01\x02\x00\x00\x00\x00",
        &[a.as_fd(), b.as_fd()],
    );
    peer.expect_ack(&channel, b"rejected");
    drop(channel);
    peer.succeeds();
}

// ---------------------------------------------------------------------------
// 4. uid 65534, no capabilities.

/// A worker at uid/gid 65534 with no capabilities: the pipeline sees uid
/// and gid 65534 and its pid on the channel it made; receive, rejection and
/// `Disconnected` hold there, with no fd leak.
fn nobody_without_capabilities_is_reported_and_keeps_the_promises() {
    let baseline = open_fds();
    {
        let (pipeline, remote) = Channel::<2>::create().unwrap();
        let mut peer = Peer::spawn(&["nobody"], &[remote.as_fd()]);
        drop(remote);
        let mut fds = heapless::Vec::<OwnedFd, 1>::new();
        let Some(data) = peer.recv_or_skip(&pipeline, &mut fds) else {
            return;
        };
        assert_eq!(data, b"mine");
        let made = Channel::<2>::adopt(fds.pop().expect("the worker's channel")).unwrap();
        assert_eq!(
            made.peer_credentials().unwrap(),
            Credentials {
                pid: Pid::from_raw(peer.child.id() as i32),
                uid: Uid::from_raw(NOBODY),
                gid: Gid::from_raw(NOBODY),
            }
        );
        drive_promises(&mut peer, made);
        drop(pipeline);
    }
    assert_eq!(open_fds(), baseline, "fds leaked in the pipeline");
}

// ---------------------------------------------------------------------------
// 5. RLIMIT_NOFILE.

/// A worker whose `RLIMIT_NOFILE` leaves room for 2 more fds gets a record
/// with 4: a typed error (`FdsTruncated` or `TooManyFds`), no fd leaked,
/// and the next record (2 fds) is received.
fn fd_limit_is_a_typed_error_without_leak_and_the_channel_goes_on() {
    let baseline = open_fds();
    {
        let (pipeline, remote) = Channel::<8>::create().unwrap();
        let mut peer = Peer::spawn(&["fd-limit"], &[remote.as_fd()]);
        drop(remote);
        let files: Vec<OwnedFd> = (0..4).map(|n| memfd(format!("{n}").as_bytes())).collect();
        let four: Vec<BorrowedFd<'_>> = files.iter().map(AsFd::as_fd).collect();
        peer.ok(pipeline.send(b"four", &four), "send four");
        peer.expect_ack(&pipeline, b"rejected");
        peer.ok(pipeline.send(b"after", &four[..2]), "send two");
        peer.expect_ack(&pipeline, b"got");
        drop(pipeline);
        peer.succeeds();
    }
    assert_eq!(open_fds(), baseline, "fds leaked in the pipeline");
}

// ===========================================================================
// The children: each confines itself, then does its part. A failed check
// panics (exit 101, message on stderr).

fn child_main(args: &[String]) -> ExitCode {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["pidns-worker", ending] => pidns_worker_child(ending),
        ["pidns-listener", name] => pidns_listener_child(name),
        ["calls-worker", filter, clock, confinement] => {
            calls_worker_child(filter, clock, confinement)
        }
        ["caller", filter] => caller_child(filter),
        ["seccomp-kill-probe"] => {
            seccomp::confine("kill");
            // SAFETY: getppid has no arguments; here it must kill us.
            unsafe { libc::syscall(libc::SYS_getppid) };
            panic!("getppid outside the allowlist did not kill the process");
        }
        ["noproc-listener", dir] => noproc_listener_child(dir),
        ["noproc-channel"] => noproc_channel_child(),
        ["nobody"] => nobody_child(),
        ["fd-limit"] => fd_limit_child(),
        other => panic!("unknown child role {other:?}"),
    }
}

/// The fd the parent placed at `at`.
fn inherited(at: RawFd) -> OwnedFd {
    // SAFETY: the parent's `place_fds` put an open fd at `at` for this
    // process; nothing else here owns that number.
    unsafe { OwnedFd::from_raw_fd(at) }
}

/// The open fds among 0..1024, found with `fcntl(F_GETFD)`: works without
/// `/proc` and without the right to read one's own `/proc/self/fd`.
fn probe_fds() -> Vec<RawFd> {
    (0..1024)
        .filter(|&fd| {
            // SAFETY: F_GETFD only reads the fd's flags; any number is a
            // valid argument (a closed one is EBADF).
            unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
        })
        .collect()
}

/// Waits until `fd` is readable (or hung up), at most `bound`.
fn wait_readable(fd: BorrowedFd<'_>, bound: Duration) -> bool {
    let timeout = Timespec {
        tv_sec: bound.as_secs() as _,
        tv_nsec: bound.subsec_nanos() as _,
    };
    loop {
        let mut watch = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut watch, Some(&timeout)) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => panic!("poll: {errno}"),
        }
    }
}

/// `Err(exit 77)` after printing why, if the kernel refuses `unshare`.
fn unshare(flags: libc::c_int, what: &str) -> Result<(), ExitCode> {
    // SAFETY: `unshare` takes flags by value; this process is single
    // threaded (a child role runs before the runner starts any thread), as
    // CLONE_NEWNS and CLONE_NEWPID require.
    if unsafe { libc::unshare(flags) } == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EPERM | libc::EINVAL | libc::ENOSYS) => {
            println!("skipped: unshare({what}) refused: {error}");
            Err(ExitCode::from(SKIP))
        }
        _ => panic!("unshare({what}): {error}"),
    }
}

/// Checks a libc return value.
fn check(rc: libc::c_int, what: &str) {
    assert!(rc == 0, "{what}: {}", std::io::Error::last_os_error());
}

/// Moves into a new pid namespace and forks: the grandchild, pid 1 there,
/// runs `worker` with `channel`; this process sends `"pid N"` (the
/// worker's pid here) on `channel` if `report`, closes its copies of
/// everything the worker has, and exits as the worker did.
fn in_new_pid_namespace<const N: usize>(
    channel: Channel<N>,
    report: bool,
    worker: impl FnOnce(Channel<N>) -> ExitCode,
) -> ExitCode {
    if let Err(skip) = unshare(libc::CLONE_NEWPID, "CLONE_NEWPID") {
        return skip;
    }
    // SAFETY: single-threaded (see `unshare`), so the child may go on.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: plain integer arguments; dies with its parent.
        check(
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) },
            "PR_SET_PDEATHSIG",
        );
        assert_eq!(std::process::id(), 1, "pid in the new namespace");
        return worker(channel);
    }
    if report {
        channel
            .send(format!("pid {pid}").as_bytes(), &[])
            .expect("send the worker's pid");
    }
    drop((channel, worker));
    let mut status = 0;
    loop {
        // SAFETY: `status` is a live int the kernel writes.
        let rc = unsafe { libc::waitpid(pid, &raw mut status, 0) };
        if rc == pid {
            break;
        }
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EINTR),
            "waitpid"
        );
    }
    if libc::WIFEXITED(status) {
        ExitCode::from(libc::WEXITSTATUS(status) as u8)
    } else {
        eprintln!("the worker was killed by signal {}", libc::WTERMSIG(status));
        ExitCode::from(128 + libc::WTERMSIG(status) as u8)
    }
}

fn pidns_worker_child(ending: &str) -> ExitCode {
    let channel = Channel::<1>::adopt(inherited(3)).expect("adopt fd 3");
    in_new_pid_namespace(channel, true, |channel| {
        let pipeline = channel
            .peer_credentials()
            .expect("peer_credentials of the pipeline");
        let (mine, theirs) = Channel::<1>::create().expect("create");
        let report = format!("creds {}", show_ids(&pipeline));
        channel
            .send(report.as_bytes(), &[theirs.as_fd()])
            .expect("send the report");
        drop(theirs);
        let (mut data, mut fds) = ([0u8; 16], heapless::Vec::<OwnedFd, 1>::new());
        if ending == "exit" {
            let got = channel
                .recv_timeout(&mut data, &mut fds, PEER_WAIT)
                .expect("the exit command");
            assert_eq!(&data[..got.data_len], b"exit");
        } else {
            let on_theirs = channel.recv_timeout(&mut data, &mut fds, PEER_WAIT);
            let on_mine = mine.recv_timeout(&mut data, &mut fds, PEER_WAIT);
            assert_eq!(
                (on_theirs, on_mine),
                (Err(Error::Disconnected), Err(Error::Disconnected)),
                "the pipeline's hang-up on its channel and on the worker's"
            );
        }
        ExitCode::SUCCESS
    })
}

fn pidns_listener_child(name: &str) -> ExitCode {
    let status = Channel::<0>::adopt(inherited(3)).expect("adopt fd 3");
    in_new_pid_namespace(status, true, |status| {
        let listener = Listener::<1>::bind_abstract(name.as_bytes()).expect("bind_abstract");
        status.send(b"ready", &[]).expect("send ready");
        let mut seen = Vec::new();
        let accepted = loop {
            assert!(
                wait_readable(listener.as_fd(), PEER_WAIT),
                "no client within {PEER_WAIT:?}"
            );
            let policy = |peer: &Credentials| {
                seen.push(format!("[{}]", show_ids(peer)));
                seen.len() > 1
            };
            match listener.try_accept_with(policy) {
                Ok(accepted) => break accepted,
                Err(Error::WouldBlock) => {}
                Err(error) => panic!("try_accept_with: {error:?}"),
            }
        };
        let report = format!(
            "policy saw {}, refused {}",
            seen.join(" "),
            listener.refused()
        );
        status.send(report.as_bytes(), &[]).expect("send report");
        let channel = accepted.channel;
        channel.send(b"welcome", &[]).expect("send welcome");
        let (mut data, mut fds) = ([0u8; 16], heapless::Vec::<OwnedFd, 1>::new());
        assert_eq!(
            channel.recv_timeout(&mut data, &mut fds, PEER_WAIT),
            Err(Error::Disconnected),
            "the client's hang-up"
        );
        ExitCode::SUCCESS
    })
}

/// The calls worker on fd 3 (gate at fd 4), under `filter` (see
/// `seccomp::confine`), warming the clock or not (`clock`), and with
/// `confinement` "camera" inside the whole sandbox first: a new mount
/// namespace without `/proc`, a new pid namespace (pid 1 there),
/// `RLIMIT_NOFILE` at the fds it needs, uid 65534 without capabilities.
fn calls_worker_child(filter: &str, clock: &str, confinement: &str) -> ExitCode {
    let channel = Channel::<MAX_FDS>::adopt(inherited(3)).expect("adopt fd 3");
    let gate = Channel::<0>::adopt(inherited(4)).expect("adopt fd 4");
    if confinement != "camera" {
        return serve_calls(channel, gate, filter, clock);
    }
    close_strays(5);
    if let Err(skip) = drop_proc() {
        return skip;
    }
    in_new_pid_namespace(channel, false, move |channel| {
        // Room for the set-up's memfds and one record's fds, no more.
        let room = 2 * CALLS + 1 + MAX_FDS;
        limit_fds(room as u64);
        if getuid().as_raw() != 0 {
            println!("skipped: dropping to uid {NOBODY} needs root");
            return ExitCode::from(SKIP);
        }
        drop_privileges();
        serve_calls(channel, gate, filter, clock)
    })
}

/// Closes every fd from `first` on, as a worker does at its start: fds
/// inherited from whoever ran the tests (a jobserver's, say) would
/// otherwise leave room below an fd limit.
fn close_strays(first: u32) {
    // SAFETY: closes fds `first` and up, which nothing here owns.
    let closed = unsafe { libc::close_range(first, u32::MAX, 0) };
    assert_eq!(
        closed,
        0,
        "close_range: {}",
        std::io::Error::last_os_error()
    );
}

/// Sets `RLIMIT_NOFILE` to the highest open fd + 1 + `room`.
fn limit_fds(room: u64) {
    let highest = *probe_fds().last().expect("some fd") as u64;
    let old = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let limit = rustix::process::Rlimit {
        current: Some(highest + 1 + room),
        maximum: old.maximum,
    };
    rustix::process::setrlimit(rustix::process::Resource::Nofile, limit).expect("setrlimit");
}

/// Serves protocol `Isp` on `channel` until the pipeline hangs up (exit
/// 0), after installing `filter` once set up. `Ping` sends two events
/// first (one with an fd); `Slow` waits at `gate` with `recv_timeout`.
/// With `clock` "warm" the set-up reads the clock once, so that rustix has
/// found the vDSO before the filter.
fn serve_calls(channel: Channel<MAX_FDS>, gate: Channel<0>, filter: &str, clock: &str) -> ExitCode {
    // Set-up: everything that allocates, opens or checks.
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut responder =
        Responder::<Isp, MAX_FDS>::new(channel, &mut out, &mut inbox).expect("Responder::new");
    let exports: Vec<OwnedFd> = (0..2 * CALLS).map(|_| memfd(b"")).collect();
    let frame = memfd(b"frame");
    let mut notes = Vec::with_capacity(16);
    let mut open_gate = || {
        let mut data = [0u8; 8];
        let got = gate.recv_timeout(
            &mut data,
            &mut heapless::Vec::<OwnedFd, 0>::new(),
            PEER_WAIT,
        );
        assert_eq!(got.map(|got| got.data_len), Ok(4), "the gate did not open");
    };
    if clock == "warm" {
        let _ = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    }
    set_up_done();
    seccomp::confine(filter);
    for turn in 0.. {
        assert!(
            wait_readable(responder.as_fd(), PEER_WAIT),
            "no record from the pipeline within {PEER_WAIT:?}"
        );
        let export = exports[turn % exports.len()].as_fd();
        let frame = frame.as_fd();
        let served = responder.try_serve(|mut call| {
            if let Request::Ping(seq) = call.request {
                call.events.emit(&Event::Progress { seq }, &[])?;
                let mut attach = Attach::<MAX_FDS>::new();
                let buffer = attach.attach(frame)?;
                call.events
                    .emit(&Event::Frame { seq, buffer }, attach.as_slice())?;
            }
            handle(call, export, &mut open_gate, &mut notes)
        });
        match served {
            Ok(_) => {}
            Err(Error::Disconnected) => {
                assert_eq!(responder.discarded(), 1, "the malformed record");
                return ExitCode::SUCCESS;
            }
            Err(error) => panic!("serve: {error:?}"),
        }
    }
    unreachable!()
}

/// Makes a panic in a filtered child print its message with one `write`
/// to fd 2 and exit 101 at once: std's own report (a backtrace, `abort`)
/// needs system calls the filter refuses, and would end in a bare SIGSEGV
/// or SIGSYS with nothing said.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn report_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = format!("\nchild (filtered): {info}\n");
        let _ = rustix::io::write(rustix::stdio::stderr(), message.as_bytes());
        // SAFETY: ends the process at once (exit_group), running nothing.
        unsafe { libc::_exit(101) };
    }));
}

/// Marks the end of a worker's set-up for `strace` (its name becomes
/// `serving`): the allowlist counts the system calls after it.
fn set_up_done() {
    let name: &CStr = c"serving";
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16
    // bytes, which `name` is, for the duration of the call.
    check(
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) },
        "PR_SET_NAME",
    );
}

/// A `Caller` under `filter`. "nosockopt" (the allowlist without
/// `getsockopt`/`setsockopt`): one call answered, then one whose responder
/// dies before answering. "nopoll" (without `ppoll` and `setsockopt`): a
/// call whose wait fails.
fn caller_child(filter: &str) -> ExitCode {
    let channel = Channel::<MAX_FDS>::adopt(inherited(3)).expect("adopt fd 3");
    let (mut out, mut inbox) = ([0u8; BUF], [0u8; BUF]);
    let mut caller = TestCaller::new(channel, &mut out, &mut inbox).expect("Caller::new");
    let _ = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    set_up_done();
    seccomp::confine(filter);
    if filter == "nopoll" {
        let failed = caller
            .call(&Request::Ping(1), &[], PEER_WAIT, |_, _| {})
            .map_err(Error::from)
            .map(|_| ());
        let in_flight = caller.in_flight();
        assert!(
            failed == Err(Error::Os(rustix::io::Errno::PERM)) && in_flight == 0,
            "a call whose wait is refused: {failed:?} (want Err(Os(EPERM))), \
             in_flight() = {in_flight} (want 0)"
        );
        return ExitCode::SUCCESS;
    }
    let (reply, _) = caller
        .call(&Request::Ping(1), &[], PEER_WAIT, |_, _| {})
        .map_err(Error::from)
        .expect("the first call");
    assert_eq!(reply, Reply::Pong(1));
    let second = caller
        .call(&Request::Ping(2), &[], PEER_WAIT, |_, _| {})
        .map_err(Error::from)
        .map(|_| ());
    let in_flight = caller.in_flight();
    assert!(
        second == Err(Error::Disconnected) && in_flight == 0,
        "a call whose responder died: {second:?} (want Err(Disconnected)), \
         in_flight() = {in_flight} (want 0)"
    );
    ExitCode::SUCCESS
}

/// A new mount namespace without `/proc`.
fn drop_proc() -> Result<(), ExitCode> {
    unshare(libc::CLONE_NEWNS, "CLONE_NEWNS")?;
    // SAFETY: null source, type and data with MS_REC | MS_PRIVATE change
    // only the propagation of "/" (a static C string) in this namespace.
    let private = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if private != 0 {
        // In a chroot "/" may not be a mount point (EINVAL). Unmounting
        // /proc with shared propagation could unmount it elsewhere too.
        let error = std::io::Error::last_os_error();
        println!("skipped: cannot make / private in a new mount namespace: {error}");
        return Err(ExitCode::from(SKIP));
    }
    // SAFETY: a static C string and a flag.
    if unsafe { libc::umount2(c"/proc".as_ptr(), libc::MNT_DETACH) } != 0 {
        // Fine if there was no /proc to begin with.
        let error = std::io::Error::last_os_error();
        assert!(
            std::fs::symlink_metadata("/proc/self").is_err(),
            "umount /proc: {error}"
        );
    }
    assert!(
        std::fs::symlink_metadata("/proc/self").is_err(),
        "/proc/self is still there"
    );
    Ok(())
}

fn noproc_listener_child(dir: &str) -> ExitCode {
    if let Err(skip) = drop_proc() {
        return skip;
    }
    rustix::process::umask(Mode::from_raw_mode(0o077));
    let before = probe_fds();
    let path = std::path::Path::new(dir).join("worker.sock");
    let listener = Listener::<1>::bind(&path, Mode::from_raw_mode(0o660)).unwrap_or_else(|error| {
        panic!("Listener::bind({path:?}, 0o660) without /proc, umask 0o077: {error:?}")
    });
    let mode = std::fs::symlink_metadata(&path)
        .expect("the socket file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o660, "the socket file's mode");
    let client = Channel::<1>::connect(&path).expect("connect");
    let accepted = listener.try_accept().expect("accept the queued client");
    client.send(b"hello", &[]).expect("send");
    let (mut data, mut fds) = ([0u8; 16], heapless::Vec::<OwnedFd, 1>::new());
    let got = accepted
        .channel
        .recv_timeout(&mut data, &mut fds, PEER_WAIT)
        .expect("receive");
    assert_eq!(&data[..got.data_len], b"hello");
    drop((client, accepted, listener));
    assert!(!path.exists(), "the listener removed its socket file");
    assert_eq!(probe_fds(), before, "fds leaked");
    ExitCode::SUCCESS
}

fn noproc_channel_child() -> ExitCode {
    if let Err(skip) = drop_proc() {
        return skip;
    }
    let channel = Channel::<2>::adopt(inherited(3)).expect("adopt fd 3");
    check_promises(&channel);
    ExitCode::SUCCESS
}

/// The worker's half of `drive_promises`: each step checked, acknowledged,
/// and the fds probed.
fn check_promises(channel: &Channel<2>) {
    let before = probe_fds();
    let (mut data, mut fds) = ([0u8; 64], heapless::Vec::<OwnedFd, 2>::new());
    let got = channel
        .recv_timeout(&mut data, &mut fds, PEER_WAIT)
        .expect("the record with an fd");
    assert_eq!(&data[..got.data_len], b"frame");
    assert_eq!(fds.len(), 1);
    assert_eq!(contents(fds[0].as_fd()), b"pixels");
    fds.clear();
    assert_eq!(probe_fds(), before, "fds after the record");
    channel.send(b"got", &[]).expect("ack");
    assert_eq!(
        channel.recv_timeout(&mut data, &mut fds, PEER_WAIT),
        Err(Error::BadMagic { found: *b"XX" }),
        "the malformed record"
    );
    assert!(fds.is_empty());
    assert_eq!(probe_fds(), before, "a rejected record's fds are closed");
    channel.send(b"rejected", &[]).expect("ack");
    assert_eq!(
        channel.recv_timeout(&mut data, &mut fds, PEER_WAIT),
        Err(Error::Disconnected),
        "the pipeline's hang-up"
    );
    assert_eq!(probe_fds(), before, "fds at the end");
}

/// Drops to uid and gid 65534, no groups, no capabilities, no_new_privs.
fn drop_privileges() {
    // SAFETY: an empty list (null pointer, length 0).
    check(
        unsafe { libc::setgroups(0, std::ptr::null()) },
        "setgroups([])",
    );
    // SAFETY: plain integer arguments.
    check(
        unsafe { libc::setresgid(NOBODY, NOBODY, NOBODY) },
        "setresgid",
    );
    // SAFETY: plain integer arguments.
    check(
        unsafe { libc::setresuid(NOBODY, NOBODY, NOBODY) },
        "setresuid",
    );
    // SAFETY: plain integer arguments.
    check(
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
        "PR_SET_NO_NEW_PRIVS",
    );
    let caps = rustix::thread::capabilities(None).expect("capget");
    assert!(
        caps.effective.is_empty() && caps.permitted.is_empty(),
        "capabilities left: {caps:?}"
    );
    // The same, as the kernel shows it, where there is a /proc.
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
                .to_string()
        };
        assert_eq!(
            field("CapEff:"),
            "0000000000000000",
            "effective capabilities"
        );
        assert_eq!(
            field("CapPrm:"),
            "0000000000000000",
            "permitted capabilities"
        );
        assert_eq!(field("NoNewPrivs:"), "1");
    }
    assert_eq!((getuid().as_raw(), getgid().as_raw()), (NOBODY, NOBODY));
}

fn nobody_child() -> ExitCode {
    if getuid().as_raw() != 0 {
        println!("skipped: dropping to uid {NOBODY} needs root");
        return ExitCode::from(SKIP);
    }
    drop_privileges();
    let pipeline = Channel::<2>::adopt(inherited(3)).expect("adopt fd 3");
    let (mine, theirs) = Channel::<2>::create().expect("create");
    pipeline.send(b"mine", &[theirs.as_fd()]).expect("send");
    drop(theirs);
    check_promises(&mine);
    ExitCode::SUCCESS
}

/// `RLIMIT_NOFILE` = highest open fd + 1 + 2: room for 2 more fds.
fn fd_limit_child() -> ExitCode {
    let channel = Channel::<8>::adopt(inherited(3)).expect("adopt fd 3");
    close_strays(4);
    let before = probe_fds();
    assert!(before.iter().all(|&fd| fd <= 3), "open fds: {before:?}");
    limit_fds(2);
    let (mut data, mut fds) = ([0u8; 64], heapless::Vec::<OwnedFd, 8>::new());
    let got = channel.recv_timeout(&mut data, &mut fds, PEER_WAIT);
    assert!(
        matches!(
            got,
            Err(Error::FdsTruncated {
                declared: 4,
                received: 2
            } | Error::TooManyFds { .. })
        ),
        "a record with 4 fds where 2 fit: {got:?}"
    );
    assert!(fds.is_empty());
    assert_eq!(probe_fds(), before, "fds after the truncated record");
    channel.send(b"rejected", &[]).expect("ack");
    let got = channel
        .recv_timeout(&mut data, &mut fds, PEER_WAIT)
        .expect("the next record, with 2 fds");
    assert_eq!(&data[..got.data_len], b"after");
    let seen: Vec<Vec<u8>> = fds.iter().map(|fd| contents(fd.as_fd())).collect();
    assert_eq!(seen, [b"0".to_vec(), b"1".to_vec()]);
    fds.clear();
    assert_eq!(probe_fds(), before, "fds after the next record");
    channel.send(b"got", &[]).expect("ack");
    assert_eq!(
        channel.recv_timeout(&mut data, &mut fds, PEER_WAIT),
        Err(Error::Disconnected)
    );
    ExitCode::SUCCESS
}

// ===========================================================================
// The seccomp filters.

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod seccomp {
    use std::collections::BTreeMap;

    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule,
    };

    pub const SUPPORTED: bool = true;

    /// The allowlist of `docs/seccomp-allowlist.md`: name and number.
    pub const ALLOWLIST: &[(&str, libc::c_long)] = &[
        // The crate: receive, send, wait, close, socket options.
        ("recvmsg", libc::SYS_recvmsg),
        ("sendmsg", libc::SYS_sendmsg),
        ("ppoll", libc::SYS_ppoll),
        ("close", libc::SYS_close),
        ("getsockopt", libc::SYS_getsockopt),
        ("setsockopt", libc::SYS_setsockopt),
        ("clock_gettime", libc::SYS_clock_gettime),
        // Rust's std: the fd check before a close (debug builds), and the
        // main thread's exit.
        ("fcntl", libc::SYS_fcntl),
        ("sigaltstack", libc::SYS_sigaltstack),
        ("munmap", libc::SYS_munmap),
        ("exit_group", libc::SYS_exit_group),
        // This worker's handler: memfd contents.
        ("pread64", libc::SYS_pread64),
        ("pwrite64", libc::SYS_pwrite64),
        ("ftruncate", libc::SYS_ftruncate),
    ];

    /// Installs `filter`: "none"; "kill" or "eperm", the allowlist with
    /// that default action; "nosockopt", the allowlist less
    /// `getsockopt`/`setsockopt`, default `EPERM`; "nopoll", less `ppoll`
    /// and `setsockopt` (with `setsockopt`, a call would wait in a
    /// `recvmsg` under `SO_RCVTIMEO` and reach `ppoll` only in its
    /// deadline's last milliseconds).
    pub fn confine(filter: &str) {
        let (default, denied): (SeccompAction, &[&str]) = match filter {
            "none" => return,
            "kill" => (SeccompAction::KillProcess, &[]),
            "eperm" => (SeccompAction::Errno(libc::EPERM as u32), &[]),
            "nosockopt" => (
                SeccompAction::Errno(libc::EPERM as u32),
                &["getsockopt", "setsockopt"],
            ),
            "nopoll" => (
                SeccompAction::Errno(libc::EPERM as u32),
                &["ppoll", "setsockopt"],
            ),
            other => panic!("unknown filter {other:?}"),
        };
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWLIST
            .iter()
            .filter(|(name, _)| !denied.contains(name))
            .map(|&(_, number)| (number, Vec::new()))
            .collect();
        // Not for the crate, which never writes: `write` to fd 2 only, for
        // this test's own panic messages (see `report_panics`).
        let to_stderr = SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, 2);
        let to_stderr = SeccompRule::new(vec![to_stderr.expect("condition")]).expect("rule");
        rules.insert(libc::SYS_write, vec![to_stderr]);
        super::report_panics();
        let arch = std::env::consts::ARCH.try_into().expect("arch");
        let kills = default == SeccompAction::KillProcess;
        let filter =
            SeccompFilter::new(rules, default, SeccompAction::Allow, arch).expect("filter");
        let program: BpfProgram = filter.try_into().expect("compile the filter");
        seccompiler::apply_filter(&program).expect("install the filter");
        if !kills {
            // The filter is in force: a call outside the list, and each
            // denied one, fails with EPERM (not EBADF for fd -1).
            assert_eq!(refused(libc::SYS_getppid), Some(libc::EPERM), "getppid");
            // (ppoll with these arguments would wait for ever if allowed.)
            for name in denied.iter().filter(|name| name.ends_with("sockopt")) {
                let number = ALLOWLIST.iter().find(|(n, _)| n == name).unwrap().1;
                assert_eq!(refused(number), Some(libc::EPERM), "{name}");
            }
        }
    }

    /// The errno of system call `number` with arguments (-1, 0, 0, 0, 0),
    /// `None` if it succeeded.
    fn refused(number: libc::c_long) -> Option<i32> {
        // SAFETY: with fd -1 and null pointers the call touches no memory
        // (getppid ignores them; getsockopt/setsockopt fail).
        let rc = unsafe { libc::syscall(number, -1, 0, 0, 0, 0) };
        (rc == -1).then(|| std::io::Error::last_os_error().raw_os_error().unwrap())
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod seccomp {
    pub const SUPPORTED: bool = false;

    pub fn confine(filter: &str) {
        assert_eq!(filter, "none", "no seccomp filter on this architecture");
    }
}
