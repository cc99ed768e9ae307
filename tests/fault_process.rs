//! Faults that are about processes: a peer killed with `SIGKILL` mid-stream,
//! `SIGPIPE`, a receiver at its `RLIMIT_NOFILE` limit; and what a spawned
//! process inherits (close-on-exec) or is credited with (`SO_PEERCRED`).
//!
//! This test binary has its own `main` (`harness = false` in Cargo.toml).
//! The processes under test are this binary re-executed with
//! `--child ROLE ...`: the survivor of a kill, the victim it kills (a second
//! child, started by the survivor), the receiver whose fd limit is lowered.
//! Re-exec rather than fork because the parent test process may have other
//! threads (fork in a threaded process may only call async-signal-safe
//! functions until exec), and rather than libtest's `--exact` trick because
//! the properties under test are process-wide and must be exact in the
//! child: its `SIGPIPE` disposition is the default (so a stray `SIGPIPE`
//! kills it and shows in its wait status), its `RLIMIT_NOFILE` is lowered
//! for it alone, its `/proc/self/fd` count is not disturbed by other tests'
//! threads, and it inherits exactly the channel fd it is given. A panic in
//! a child exits with status 101, which fails the test that started it.
//!
//! Synchronisation is by pipes, sockets, `waitpid` and
//! `/proc/self/task/TID/syscall`, never by sleeping. Nothing waits for
//! ever: a child that does not exit within `common::TEST_BOUND` is killed
//! and fails its test, and each test runs under a watchdog.

mod common;

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use common::{TEST_BOUND, harness, identity, memfd, open_fds, read_all, wait_child};
use ipc_unixsocket::{Channel, Error, Received};
use rustix::io::{Errno, FdFlags, IoSlice, fcntl_setfd};
use rustix::net::{
    AddressFamily, SendAncillaryBuffer, SendFlags, SocketFlags, SocketType, sendmsg, socketpair,
};
use rustix::process::{Pid, Resource, Rlimit, Signal, getrlimit, kill_process, setrlimit};

type Fds<const N: usize> = heapless::Vec<OwnedFd, N>;

/// Capacity of the channels in this file (the fd-exhaustion one has 8).
const CAP: usize = 4;

/// Messages the peer queues before it is killed.
const BURST: u32 = 50;

// ---------------------------------------------------------------------------
// The test list, run by `common::harness` (libtest-mimic), one at a time.

struct Test {
    name: &'static str,
    run: fn(),
    ignore: Option<&'static str>,
}

const TESTS: &[Test] = &[
    Test {
        name: "control_sigpipe_deaths_are_detected",
        run: control_sigpipe_deaths_are_detected,
        ignore: None,
    },
    Test {
        name: "sigkill_peer_then_send_first_then_drain",
        run: || expect_success(&["survivor", "send-first"]),
        ignore: None,
    },
    Test {
        name: "sigkill_peer_then_recv_first_drains_the_queue",
        run: || expect_success(&["survivor", "recv-first"]),
        ignore: None,
    },
    Test {
        name: "sigkill_peer_with_unread_data_then_recv_first_drains_the_queue",
        run: || expect_success(&["survivor", "recv-first-unread"]),
        ignore: None,
    },
    Test {
        name: "sigkill_peer_mid_stream_while_it_sends",
        run: || expect_success(&["survivor", "stream"]),
        ignore: None,
    },
    Test {
        name: "sigkill_wakes_a_survivor_blocked_in_recv",
        run: || expect_success(&["survivor", "blocked-recv"]),
        ignore: None,
    },
    Test {
        name: "sigkill_wakes_a_survivor_blocked_in_send",
        run: || expect_success(&["survivor", "blocked-send"]),
        ignore: None,
    },
    Test {
        name: "socketpair_peer_credentials_name_the_creator_not_the_worker",
        run: socketpair_peer_credentials_name_the_creator_not_the_worker,
        ignore: None,
    },
    Test {
        name: "channel_and_received_fds_do_not_survive_exec",
        run: channel_and_received_fds_do_not_survive_exec,
        ignore: None,
    },
    Test {
        name: "fd_exhaustion_at_rlimit_nofile",
        run: || expect_success(&["fd-exhaustion"]),
        ignore: None,
    },
];

fn main() -> ExitCode {
    harness::main(
        |args| {
            child_main(args);
            ExitCode::SUCCESS
        },
        || {
            TESTS
                .iter()
                .map(|test| {
                    // Outlasts the children's own bound, which fails the test
                    // first.
                    harness::test(test.name, TEST_BOUND + Duration::from_secs(60), test.run)
                        .with_ignored_flag(test.ignore.is_some())
                })
                .collect()
        },
    )
}

// ---------------------------------------------------------------------------
// Parent side: run a child role and judge its wait status.

fn child_command(role: &[&str]) -> Command {
    harness::child_command(role)
}

/// Runs a child role to its end; one still running after `TEST_BOUND` is
/// killed and fails the test.
fn run_child(role: &[&str]) -> ExitStatus {
    let mut child = child_command(role)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {role:?}: {e}"));
    wait_child(&mut child, &format!("child {role:?}"), TEST_BOUND)
}

/// The child must exit 0: not killed by `SIGPIPE` (nor any signal), and
/// none of its assertions failed (a panic exits with 101).
fn expect_success(role: &[&str]) {
    if let Err(failure) = judge(role, run_child(role)) {
        panic!("{failure}");
    }
}

fn judge(role: &[&str], status: ExitStatus) -> Result<(), String> {
    if status.signal() == Some(libc::SIGPIPE) {
        return Err(format!("{role:?} was killed by SIGPIPE"));
    }
    if !status.success() {
        return Err(format!("{role:?} failed: {status}"));
    }
    Ok(())
}

/// Control: in the same kind of child, a raw `send` without `MSG_NOSIGNAL`
/// on a `SOCK_STREAM` socket whose peer is closed is killed by `SIGPIPE`,
/// and `expect_success` reports it; so the survivors' clean exits mean no
/// `SIGPIPE` killed them. On `SOCK_SEQPACKET`, Linux itself never raises
/// `SIGPIPE` (the datagram send path returns `EPIPE` without signalling),
/// which the `raw-seqpacket` probe pins: there the crate's `MSG_NOSIGNAL` is
/// defence in depth, and removing it would not be caught on Linux.
fn control_sigpipe_deaths_are_detected() {
    let role = ["sigpipe-probe", "raw-stream"];
    let status = run_child(&role);
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status}");
    assert_eq!(
        judge(&role, status),
        Err(format!("{role:?} was killed by SIGPIPE"))
    );
    expect_success(&["sigpipe-probe", "raw-seqpacket"]);
    expect_success(&["sigpipe-probe", "crate"]);
}

/// Pins a limit the threat model states: `SO_PEERCRED` on a socketpair
/// records the process that called `socketpair`, on both ends, forever. A
/// worker started with the remote end (here: as uid 65534 when the test
/// runs as root) is not what `peer_credentials()` reports, so it cannot be
/// used to check the worker's uid on a `Channel::pair`/`create` channel;
/// only a socket the worker `connect`s itself names the worker.
fn socketpair_peer_credentials_name_the_creator_not_the_worker() {
    let (channel, remote) = Channel::<CAP>::create().unwrap();
    fcntl_setfd(&remote, FdFlags::empty()).unwrap();
    let fd = remote.as_raw_fd().to_string();
    let mut worker = child_command(&["creds-worker", &fd])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn creds-worker");
    drop(remote);
    let mut data = [0u8; 8];
    let mut fds = Fds::<CAP>::new();
    let got = channel
        .recv_timeout(&mut data, &mut fds, TEST_BOUND)
        .unwrap();
    assert_eq!(got.data_len, 8);
    let worker_pid = i32::from_le_bytes(data[..4].try_into().unwrap());
    let worker_uid = u32::from_le_bytes(data[4..8].try_into().unwrap());
    assert_eq!(worker_pid, worker.id() as i32);
    let peer = channel.peer_credentials().unwrap();
    assert!(wait_child(&mut worker, "creds-worker", TEST_BOUND).success());
    let me = rustix::process::getpid();
    assert_eq!(
        peer.pid,
        Some(me),
        "SO_PEERCRED named the worker, not the creator"
    );
    assert_ne!(
        peer.pid.map(|pid| pid.as_raw_nonzero().get()),
        Some(worker_pid)
    );
    assert_eq!(peer.uid, rustix::process::getuid());
    if rustix::process::getuid().is_root() {
        assert_eq!(worker_uid, 65534);
        assert_ne!(peer.uid.as_raw(), worker_uid);
    }
}

/// Close-on-exec: both ends of a channel (from `pair`, and from `adopt` of an
/// fd whose flag was cleared), and every fd received, carry `FD_CLOEXEC`,
/// and a process spawned afterwards holds none of them.
fn channel_and_received_fds_do_not_survive_exec() {
    let (a, b) = Channel::<CAP>::pair().unwrap();
    let (_local, remote) = Channel::<CAP>::create().unwrap();
    fcntl_setfd(&remote, FdFlags::empty()).unwrap();
    let bound = Channel::<CAP>::adopt(remote).unwrap();
    let file = rustix::fs::memfd_create("no-cloexec", rustix::fs::MemfdFlags::empty()).unwrap();
    assert!(
        !rustix::io::fcntl_getfd(&file)
            .unwrap()
            .contains(FdFlags::CLOEXEC)
    );
    a.send(b"frame", &[file.as_fd(), file.as_fd()]).unwrap();
    let mut data = [0u8; 8];
    let mut fds = Fds::<CAP>::new();
    b.recv(&mut data, &mut fds).unwrap();
    // The received copies are now the only fds of the sent file.
    drop(file);
    // An fd without FD_CLOEXEC, which the child must see: proof that the
    // listing would show a leaked fd.
    let inherited = rustix::fs::memfd_create("inherited", rustix::fs::MemfdFlags::empty()).unwrap();
    let ours: Vec<std::os::fd::BorrowedFd<'_>> = [a.as_fd(), b.as_fd(), bound.as_fd()]
        .into_iter()
        .chain(fds.iter().map(AsFd::as_fd))
        .collect();
    for fd in &ours {
        let flags = rustix::io::fcntl_getfd(fd).unwrap();
        assert!(
            flags.contains(FdFlags::CLOEXEC),
            "fd {} lacks FD_CLOEXEC",
            fd.as_raw_fd()
        );
    }
    let output = child_command(&["list-fds"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(output.status.success());
    let listed = String::from_utf8(output.stdout).unwrap();
    for fd in &ours {
        let (dev, ino) = identity(fd);
        assert!(
            !listed.lines().any(|line| line == format!("{dev} {ino}")),
            "fd {} leaked into a spawned process",
            fd.as_raw_fd()
        );
    }
    let (dev, ino) = identity(&inherited);
    assert!(listed.lines().any(|line| line == format!("{dev} {ino}")));
}

// ---------------------------------------------------------------------------
// Child side.

fn child_main(args: &[String]) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["sigpipe-probe", how] => sigpipe_probe(how),
        ["survivor", scenario] => survivor(scenario),
        ["victim", fd, mode] => victim(adopt(fd), mode),
        ["fd-exhaustion"] => fd_exhaustion(),
        ["creds-worker", fd] => creds_worker(adopt(fd)),
        ["list-fds"] => list_fds(),
        other => panic!("unknown child role {other:?}"),
    }
}

/// Restores the default `SIGPIPE` disposition, which the Rust runtime sets
/// to "ignore" at start-up: from here on a `SIGPIPE` kills this process.
fn default_sigpipe() {
    // SAFETY: `signal` with `SIG_DFL` installs no handler; this process has
    // one thread at this point, so nothing races with the change.
    let previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    assert_ne!(previous, libc::SIG_ERR);
}

/// Adopts the channel fd inherited from the parent, given by number.
fn adopt(fd: &str) -> Channel<CAP> {
    let raw: i32 = fd.parse().expect("fd number");
    // SAFETY: the parent cleared FD_CLOEXEC on exactly this fd and passed
    // its number; nothing else in this process owns or closes it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    Channel::adopt(fd).expect("adopt inherited channel fd")
}

fn sigpipe_probe(how: &str) {
    default_sigpipe();
    let raw_send = |socket: &OwnedFd| {
        let mut control = SendAncillaryBuffer::default();
        sendmsg(
            socket,
            &[IoSlice::new(b"x")],
            &mut control,
            SendFlags::empty(),
        )
    };
    match how {
        "raw-stream" => {
            let (a, b) = socketpair(
                AddressFamily::UNIX,
                SocketType::STREAM,
                SocketFlags::CLOEXEC,
                None,
            )
            .unwrap();
            drop(b);
            // No MSG_NOSIGNAL: the kernel raises SIGPIPE and this process
            // dies before the call returns.
            let result = raw_send(&a);
            panic!("survived a raw stream send to a closed peer: {result:?}");
        }
        "raw-seqpacket" => {
            let (a, b) = socketpair(
                AddressFamily::UNIX,
                SocketType::SEQPACKET,
                SocketFlags::CLOEXEC,
                None,
            )
            .unwrap();
            drop(b);
            assert_eq!(raw_send(&a), Err(Errno::PIPE));
        }
        "crate" => {
            let (a, b) = Channel::<CAP>::pair().unwrap();
            drop(b);
            assert_eq!(a.send(b"x", &[]), Err(Error::Disconnected));
            assert_eq!(a.try_send(b"x", &[]), Err(Error::Disconnected));
        }
        other => panic!("{other}"),
    }
}

/// Message `seq` from the peer: its number as data, and (every other one)
/// a memfd holding the number too.
fn burst_message(seq: u32) -> ([u8; 4], Option<OwnedFd>) {
    let bytes = seq.to_le_bytes();
    (bytes, seq.is_multiple_of(2).then(|| memfd(&bytes)))
}

fn check_burst_message(seq: u32, got: Result<Received, Error>, data: &[u8], fds: &Fds<CAP>) {
    let expected_fds = usize::from(seq.is_multiple_of(2));
    assert_eq!(
        got,
        Ok(Received {
            data_len: 4,
            fd_count: expected_fds
        }),
        "message #{seq}"
    );
    assert_eq!(data[..4], seq.to_le_bytes(), "message #{seq}");
    for fd in fds {
        assert_eq!(read_all(fd.as_fd()), seq.to_le_bytes(), "fd of #{seq}");
    }
}

/// The peer. `burst`: queue `BURST` messages, say "ready", then block.
/// `idle`: say "ready" and block. `stream`: send numbered messages until
/// killed. Blocking is a read of stdin, which the survivor never writes and
/// closes only after killing it (or by dying itself).
fn victim(channel: Channel<CAP>, mode: &str) {
    let block = || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    };
    match mode {
        "burst" => {
            for seq in 0..BURST {
                let (data, fd) = burst_message(seq);
                let fds: Vec<_> = fd.iter().map(AsFd::as_fd).collect();
                channel.send(&data, &fds).unwrap();
            }
            println!("ready");
            block();
        }
        "idle" => {
            println!("ready");
            block();
        }
        "stream" => {
            println!("ready");
            for seq in 0u32.. {
                let (data, fd) = burst_message(seq);
                let fds: Vec<_> = fd.iter().map(AsFd::as_fd).collect();
                if channel.send(&data, &fds) == Err(Error::Disconnected) {
                    return;
                }
            }
        }
        other => panic!("{other}"),
    }
}

/// Starts the peer with the remote end of a fresh channel and waits for its
/// "ready" line.
fn spawn_victim(mode: &str) -> (Channel<CAP>, Child) {
    let (local, remote) = Channel::<CAP>::create().unwrap();
    fcntl_setfd(&remote, FdFlags::empty()).unwrap();
    let fd = remote.as_raw_fd().to_string();
    let mut child = child_command(&["victim", &fd, mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn victim");
    drop(remote);
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    (local, child)
}

fn sigkill(child: &mut Child) {
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
}

/// After the peer's death: every receive flavour says `Disconnected`, again
/// and again.
fn assert_disconnected_for_good(channel: &Channel<CAP>) {
    let mut data = [0u8; 16];
    let mut fds = Fds::<CAP>::new();
    for _ in 0..3 {
        assert_eq!(channel.recv(&mut data, &mut fds), Err(Error::Disconnected));
    }
    assert_eq!(
        channel.try_recv(&mut data, &mut fds),
        Err(Error::Disconnected)
    );
    assert_eq!(
        channel.recv_timeout(&mut data, &mut fds, Duration::from_secs(600)),
        Err(Error::Disconnected)
    );
}

fn assert_send_disconnected(channel: &Channel<CAP>) {
    let file = memfd(b"to nobody");
    // The first send may meet the pending ECONNRESET, later ones EPIPE.
    for _ in 0..3 {
        assert_eq!(
            channel.send(b"anyone?", &[file.as_fd()]),
            Err(Error::Disconnected)
        );
    }
    assert_eq!(channel.try_send(b"anyone?", &[]), Err(Error::Disconnected));
}

fn drain_burst(channel: &Channel<CAP>) {
    let mut data = [0u8; 16];
    let mut fds = Fds::<CAP>::new();
    for seq in 0..BURST {
        let got = channel.recv(&mut data, &mut fds);
        check_burst_message(seq, got, &data, &fds);
    }
}

/// The process that outlives its peer. Its `SIGPIPE` disposition is the
/// default, so a `SIGPIPE` would kill it and fail the test.
fn survivor(scenario: &str) {
    default_sigpipe();
    let baseline = open_fds();
    match scenario {
        // The dead peer left 3 of our records unread (so the kernel reports
        // ECONNRESET once); we send first, then drain.
        "send-first" | "recv-first-unread" => {
            let (channel, mut victim) = spawn_victim("burst");
            for _ in 0..3 {
                channel.send(b"unread", &[]).unwrap();
            }
            sigkill(&mut victim);
            drop(victim);
            if scenario == "send-first" {
                assert_send_disconnected(&channel);
                drain_burst(&channel);
            } else {
                drain_burst(&channel);
                assert_send_disconnected(&channel);
            }
            assert_disconnected_for_good(&channel);
        }
        // The dead peer had nothing of ours queued; we receive first.
        "recv-first" => {
            let (channel, mut victim) = spawn_victim("burst");
            sigkill(&mut victim);
            drop(victim);
            drain_burst(&channel);
            assert_disconnected_for_good(&channel);
            assert_send_disconnected(&channel);
        }
        // The peer is killed while it streams as fast as it can (blocked in
        // sendmsg or between sends): whatever was queued arrives whole and
        // in sequence, then Disconnected.
        "stream" => {
            let (channel, mut victim) = spawn_victim("stream");
            let mut data = [0u8; 16];
            let mut fds = Fds::<CAP>::new();
            let mut seq = 0;
            while seq < 2_000 {
                let got = channel.recv(&mut data, &mut fds);
                check_burst_message(seq, got, &data, &fds);
                seq += 1;
            }
            sigkill(&mut victim);
            drop(victim);
            loop {
                match channel.recv(&mut data, &mut fds) {
                    Err(Error::Disconnected) => break,
                    got => check_burst_message(seq, got, &data, &fds),
                }
                seq += 1;
            }
            println!(
                "stream: peer killed after 2000 messages were read; {} more were queued and \
                 drained, none lost, duplicated or torn",
                seq - 2_000
            );
            assert_disconnected_for_good(&channel);
            assert_send_disconnected(&channel);
        }
        // We are blocked in recv (nothing queued) when the peer is killed.
        "blocked-recv" => {
            let (channel, mut victim) = spawn_victim("idle");
            let killer = kill_when_blocked(&victim, libc::SYS_recvmsg);
            let mut data = [0u8; 16];
            let mut fds = Fds::<CAP>::new();
            assert_eq!(channel.recv(&mut data, &mut fds), Err(Error::Disconnected));
            killer.join().unwrap();
            assert_eq!(victim.wait().unwrap().signal(), Some(libc::SIGKILL));
            drop(victim);
            assert_disconnected_for_good(&channel);
            assert_send_disconnected(&channel);
        }
        // We are blocked in send (the peer stopped reading and the socket
        // is full) when the peer is killed.
        "blocked-send" => {
            let (channel, mut victim) = spawn_victim("idle");
            let mut sent = 0;
            while channel.try_send(&[0; 512], &[]).is_ok() {
                sent += 1;
            }
            assert!(sent > 0);
            let killer = kill_when_blocked(&victim, libc::SYS_sendmsg);
            assert_eq!(channel.send(&[0; 512], &[]), Err(Error::Disconnected));
            killer.join().unwrap();
            assert_eq!(victim.wait().unwrap().signal(), Some(libc::SIGKILL));
            drop(victim);
            assert_send_disconnected(&channel);
            assert_disconnected_for_good(&channel);
        }
        other => panic!("{other}"),
    }
    // Every fd received from the dead peer was closed; the channel, the
    // victim's pipes and the memfds are gone too.
    assert_eq!(open_fds(), baseline);
}

/// Prints `dev ino` for every fd this process holds.
fn list_fds() {
    let entries: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for raw in entries {
        // SAFETY: `raw` was listed in /proc/self/fd just now and this
        // single-threaded process closes nothing meanwhile, except the
        // directory handle, whose fstat then fails and is skipped.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
        if let Ok(stat) = rustix::fs::fstat(fd) {
            println!("{} {}", stat.st_dev, stat.st_ino);
        }
    }
}

/// Drops to uid/gid 65534 when root, then sends its pid and uid.
fn creds_worker(channel: Channel<CAP>) {
    if rustix::process::getuid().is_root() {
        // SAFETY: plain system-call wrappers; this process has one thread,
        // so changing its credentials affects exactly this thread/process.
        unsafe {
            assert_eq!(libc::setgid(65534), 0);
            assert_eq!(libc::setuid(65534), 0);
        }
    }
    let pid = rustix::process::getpid().as_raw_nonzero().get();
    let uid = rustix::process::getuid().as_raw();
    let mut data = [0u8; 8];
    data[..4].copy_from_slice(&pid.to_le_bytes());
    data[4..].copy_from_slice(&uid.to_le_bytes());
    channel.send(&data, &[]).unwrap();
}

/// A thread that SIGKILLs `victim` once this (single-threaded until now)
/// process's main thread is blocked in system call `nr`.
fn kill_when_blocked(victim: &Child, nr: libc::c_long) -> std::thread::JoinHandle<()> {
    let pid = Pid::from_raw(victim.id() as i32).unwrap();
    let main_tid = rustix::thread::gettid().as_raw_nonzero().get();
    std::thread::spawn(move || {
        let path = format!("/proc/self/task/{main_tid}/syscall");
        loop {
            let line = std::fs::read_to_string(&path).unwrap();
            if common::platform::syscall_of(&line) == Some(nr) {
                break;
            }
            std::thread::yield_now();
        }
        kill_process(pid, Signal::KILL).unwrap();
    })
}

/// Number of fds this process can still open, found by opening them all.
fn free_fd_slots(file: &OwnedFd) -> usize {
    let mut taken = Vec::new();
    loop {
        match rustix::io::fcntl_dupfd_cloexec(file, 0) {
            Ok(fd) => taken.push(fd),
            Err(Errno::MFILE) => return taken.len(),
            Err(e) => panic!("dup: {e}"),
        }
    }
}

/// A receiver at its `RLIMIT_NOFILE` limit gets a record whose fds cannot
/// all be installed.
fn fd_exhaustion() {
    let (tx, rx) = Channel::<8>::pair().unwrap();
    let file = memfd(b"exhaust");
    let four = [file.as_fd(); 4];
    let baseline = open_fds();

    // Lower the soft limit to just above the highest fd in use, then take
    // every remaining slot.
    let highest = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    let hard = getrlimit(Resource::Nofile).maximum;
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(highest + 1 + 16),
            maximum: hard,
        },
    )
    .unwrap();
    let mut filler = Vec::new();
    while let Ok(fd) = rustix::io::fcntl_dupfd_cloexec(&file, 0) {
        filler.push(fd);
    }
    assert_eq!(free_fd_slots(&file), 0);

    let mut data = [0u8; 32];
    let mut fds = Fds::<8>::new();

    // Two slots free, four fds in the record: the kernel installs two and
    // sets MSG_CTRUNC; the crate rejects the record and closes those two.
    filler.truncate(filler.len() - 2);
    tx.send(b"four fds", &four).unwrap();
    let got = rx.recv(&mut data, &mut fds);
    assert_eq!(
        got,
        Err(Error::FdsTruncated {
            declared: 4,
            received: 2
        })
    );
    assert!(got.unwrap_err().is_rejected_record());
    assert!(fds.is_empty());
    assert_eq!(free_fd_slots(&file), 2, "fds of the rejected record leaked");

    // No slot free at all: nothing installed, still a typed error.
    filler.push(rustix::io::fcntl_dupfd_cloexec(&file, 0).unwrap());
    filler.push(rustix::io::fcntl_dupfd_cloexec(&file, 0).unwrap());
    tx.send(b"one fd", &[file.as_fd()]).unwrap();
    assert_eq!(
        rx.recv(&mut data, &mut fds),
        Err(Error::FdsTruncated {
            declared: 1,
            received: 0
        })
    );
    assert_eq!(free_fd_slots(&file), 0);
    // Records without fds still pass at the limit.
    tx.send(b"no fds", &[]).unwrap();
    let got = rx.recv(&mut data, &mut fds).unwrap();
    assert_eq!(&data[..got.data_len], b"no fds");

    // Free the fds: the channel keeps working, fds and all.
    drop(filler);
    tx.send(b"four fds", &four).unwrap();
    let got = rx.recv(&mut data, &mut fds).unwrap();
    assert_eq!(
        got,
        Received {
            data_len: 8,
            fd_count: 4
        }
    );
    assert!(fds.iter().all(|fd| identity(fd) == identity(&file)));
    fds.clear();
    assert_eq!(open_fds(), baseline);
}
