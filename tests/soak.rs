//! Soak: two processes stream messages at each other, full duplex, with
//! random sizes, random fd counts and sequence numbers, and check that
//! nothing is lost, duplicated, reordered or corrupted, and that the fd
//! count and RSS of both processes are the same at the end as after a
//! warm-up.
//!
//! `IPC_SOAK_MESSAGES` sets the number of messages in EACH direction
//! (default 20,000, a few seconds; `.ci/run` sets 1,000,000), and
//! `IPC_SOAK_SEED` the PRNG seed (default fixed). The figures are printed.
//!
//! This binary has its own `main` (`harness = false`, run by
//! `common::harness`): the peer is this binary re-executed with `--child`,
//! so it is a real second process with its own fd table and RSS to
//! measure, started with exactly one inherited fd (fork is avoided: the
//! parent may have threads). Each process runs a sender thread and a
//! receiver thread on the same channel; the main thread measures while both
//! are parked at a barrier.
//!
//! A test fails, it never hangs: a panic in any thread ends its process at
//! once (its peer then sees the channel close and fails too), and a
//! watchdog fails a process in which no message moved for
//! `common::PROGRESS_BOUND` (a lost last record, a stuck peer).

mod common;

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::{ExitCode, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::{
    PROGRESS_BOUND, Watchdog, exit_on_any_panic, harness, identity, memfd, open_fds, wait_child,
};
use ipc_unixsocket::{Channel, Error, Received};
use libtest_mimic::Trial;
use rustix::io::{FdFlags, fcntl_setfd};

type Fds = heapless::Vec<OwnedFd, CAP>;

/// Fds per message at most; also the size of each side's fd pool.
const CAP: usize = 8;
/// Largest message.
const MAX_DATA: usize = 64 * 1024;
const DEFAULT_MESSAGES: u64 = 20_000;
const DEFAULT_SEED: u64 = 0x5eed_cafe_f00d_0001;
/// Anonymous RSS (heap, stacks: where a leak grows) may differ by this much
/// between warm-up and end: a few pages of allocator and stack noise. A
/// leak of one byte per message over the million-message run, or of 13
/// bytes per message over the default run, would exceed it. The bound is
/// on `RssAnon`, not `VmRSS`: `VmRSS` also counts pages of the test
/// binary's own code that are first touched after warm-up (faulted in by
/// 64 KiB at a time), which grew it by 140-204 KiB with no leak at all.
const RSS_SLACK_KIB: u64 = 256;
const TEST_NAME: &str = "soak_full_duplex_two_processes";

/// xorshift64: small, seeded, reproducible on both sides.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Message `seq` of a stream: its length, data and which pool fds it
/// carries, all drawn from the stream's PRNG in order, so the receiver,
/// running the same PRNG, knows exactly what message `seq` must be.
struct Plan {
    len: usize,
    fds: [usize; CAP],
    fd_count: usize,
}

fn plan(rng: &mut XorShift) -> Plan {
    let r = rng.next();
    let size = r >> 8;
    let len = match r % 100 {
        0..=59 => size % 64,
        60..=89 => size % 2048,
        90..=98 => size % 16384,
        _ => size % (MAX_DATA as u64 + 1),
    } as usize;
    let fd_count = match (r >> 40) % 16 {
        0..=7 => 0,
        8..=11 => 1,
        12..=13 => 2,
        14 => 3 + ((r >> 48) % (CAP as u64 - 3)) as usize,
        _ => CAP,
    };
    let mut fds = [0; CAP];
    for slot in &mut fds[..fd_count] {
        *slot = (rng.next() % CAP as u64) as usize;
    }
    Plan { len, fds, fd_count }
}

/// The data of message `seq`: its sequence number first (as much of it as
/// fits), then bytes that depend on `seq` and position.
fn fill(seq: u64, buf: &mut [u8]) {
    let stamp = seq.to_le_bytes();
    let head = buf.len().min(8);
    buf[..head].copy_from_slice(&stamp[..head]);
    let salt = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56;
    for (i, byte) in buf.iter_mut().enumerate().skip(8) {
        *byte = (salt as u8).wrapping_add(i as u8);
    }
}

/// What one direction carried.
#[derive(Default)]
struct Totals {
    bytes: u64,
    fds: u64,
}

/// fd count, RSS and anonymous RSS (KiB) of this process.
#[derive(Clone, Copy, Debug)]
struct Snapshot {
    fds: usize,
    rss_kib: u64,
    anon_kib: u64,
}

fn snapshot() -> Snapshot {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
    };
    Snapshot {
        fds: open_fds(),
        rss_kib: kib("VmRSS:"),
        anon_kib: kib("RssAnon:"),
    }
}

struct Report {
    warm: Snapshot,
    end: Snapshot,
    sent: Totals,
    received: Totals,
    elapsed: Duration,
}

/// One side of the soak: sends `messages` messages drawn from `seed_out`
/// and receives `messages` drawn from `seed_in`, at the same time, kicking
/// `watchdog` at every message.
fn run_side(
    channel: &Channel<CAP>,
    watchdog: &Watchdog,
    messages: u64,
    seed_out: u64,
    seed_in: u64,
) -> Report {
    let warm_up = (messages / 10).min(10_000);
    let pool: Vec<OwnedFd> = (0..CAP).map(|i| memfd(&[i as u8])).collect();
    // Warm-up point, measurement done; end point, measurement done.
    let barriers = [
        Barrier::new(3),
        Barrier::new(3),
        Barrier::new(3),
        Barrier::new(3),
    ];
    let started = Instant::now();
    let (sent, received, warm, end, elapsed) = std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            let pool_fds: Vec<_> = pool.iter().map(AsFd::as_fd).collect();
            channel.send(b"pool", &pool_fds).expect("send pool");
            let mut rng = XorShift::new(seed_out);
            let mut buf = vec![0u8; MAX_DATA];
            let mut totals = Totals::default();
            for seq in 0..messages {
                if seq == warm_up {
                    barriers[0].wait();
                    barriers[1].wait();
                }
                let plan = plan(&mut rng);
                fill(seq, &mut buf[..plan.len]);
                let mut fds = heapless::Vec::<_, CAP>::new();
                for &index in &plan.fds[..plan.fd_count] {
                    fds.push(pool_fds[index]).unwrap();
                }
                channel
                    .send(&buf[..plan.len], &fds)
                    .unwrap_or_else(|e| panic!("send #{seq}: {e:?}"));
                totals.bytes += plan.len as u64;
                totals.fds += plan.fd_count as u64;
                watchdog.kick();
            }
            barriers[2].wait();
            barriers[3].wait();
            totals
        });
        let receiver = scope.spawn(|| {
            let mut data = vec![0u8; MAX_DATA];
            let mut expected = vec![0u8; MAX_DATA];
            let mut fds = Fds::new();
            let got = channel.recv(&mut data, &mut fds).expect("recv pool");
            assert_eq!((&data[..got.data_len], got.fd_count), (&b"pool"[..], CAP));
            let peer_pool: Vec<_> = fds.iter().map(identity).collect();
            fds.clear();
            let mut rng = XorShift::new(seed_in);
            let mut totals = Totals::default();
            for seq in 0..messages {
                if seq == warm_up {
                    fds.clear();
                    barriers[0].wait();
                    barriers[1].wait();
                }
                let plan = plan(&mut rng);
                let got = channel
                    .recv(&mut data, &mut fds)
                    .unwrap_or_else(|e| panic!("message #{seq}: {e:?}"));
                assert_eq!(
                    got,
                    Received {
                        data_len: plan.len,
                        fd_count: plan.fd_count
                    },
                    "message #{seq}: lost, duplicated or reordered"
                );
                fill(seq, &mut expected[..plan.len]);
                if data[..plan.len] != expected[..plan.len] {
                    let at = (0..plan.len).find(|&i| data[i] != expected[i]).unwrap();
                    panic!("message #{seq}: data differs at byte {at} of {}", plan.len);
                }
                for (fd, &index) in fds.iter().zip(&plan.fds[..plan.fd_count]) {
                    assert_eq!(identity(fd), peer_pool[index], "message #{seq}: wrong fd");
                }
                totals.bytes += plan.len as u64;
                totals.fds += plan.fd_count as u64;
                watchdog.kick();
            }
            fds.clear();
            barriers[2].wait();
            barriers[3].wait();
            totals
        });
        barriers[0].wait();
        let warm = snapshot();
        barriers[1].wait();
        barriers[2].wait();
        let elapsed = started.elapsed();
        let end = snapshot();
        barriers[3].wait();
        (
            sender.join().unwrap(),
            receiver.join().unwrap(),
            warm,
            end,
            elapsed,
        )
    });
    Report {
        warm,
        end,
        sent,
        received,
        elapsed,
    }
}

fn describe(who: &str, messages: u64, report: &Report) -> String {
    let rate = (2 * messages) as f64 / report.elapsed.as_secs_f64();
    format!(
        "{who}: sent {messages} messages ({} bytes, {} fds), received {messages} ({} bytes, {} fds) \
         in {:.2?} ({rate:.0} msgs/s both ways); fds after warm-up {}, at end {}; VmRSS after \
         warm-up {} KiB, at end {} KiB; RssAnon after warm-up {} KiB, at end {} KiB",
        report.sent.bytes,
        report.sent.fds,
        report.received.bytes,
        report.received.fds,
        report.elapsed,
        report.warm.fds,
        report.end.fds,
        report.warm.rss_kib,
        report.end.rss_kib,
        report.warm.anon_kib,
        report.end.anon_kib,
    )
}

fn check(who: &str, report: &Report) {
    assert_eq!(
        report.end.fds, report.warm.fds,
        "{who}: fd count changed during the soak"
    );
    assert!(
        report.end.anon_kib <= report.warm.anon_kib + RSS_SLACK_KIB,
        "{who}: RssAnon grew from {} KiB to {} KiB",
        report.warm.anon_kib,
        report.end.anon_kib
    );
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
        Err(_) => default,
    }
}

/// The pipeline side: starts the peer, soaks, then checks the hang-up.
fn soak() {
    let messages = env_u64("IPC_SOAK_MESSAGES", DEFAULT_MESSAGES);
    let seed = env_u64("IPC_SOAK_SEED", DEFAULT_SEED);
    let (seed_down, seed_up) = (seed, seed.rotate_left(32) ^ 0xa5a5_a5a5_a5a5_a5a5);
    println!("soak: {messages} messages each way, seed {seed:#x}");
    let watchdog = Watchdog::new(TEST_NAME, PROGRESS_BOUND);

    let (channel, remote) = Channel::<CAP>::create().unwrap();
    fcntl_setfd(&remote, FdFlags::empty()).unwrap();
    let mut peer = harness::child_command([
        &remote.as_raw_fd().to_string(),
        &messages.to_string(),
        &seed_up.to_string(),
        &seed_down.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .spawn()
    .expect("spawn soak peer");
    drop(remote);

    let report = run_side(&channel, &watchdog, messages, seed_down, seed_up);
    // Tell the peer we are done sending, without closing: it checks that
    // nothing follows the last message, then exits. Its few lines of
    // output fit in the pipe, so it never waits for us to read them.
    rustix::net::shutdown(&channel, rustix::net::Shutdown::Write).unwrap();
    let status = wait_child(&mut peer, "soak peer", PROGRESS_BOUND);
    let mut peer_lines = String::new();
    std::io::Read::read_to_string(&mut peer.stdout.take().unwrap(), &mut peer_lines).unwrap();
    println!("{}", describe("pipeline", messages, &report));
    print!("{peer_lines}");
    assert!(status.success(), "soak peer failed: {status}");
    // The peer's end is closed now; nothing followed its last message.
    let mut data = [0u8; 16];
    let mut fds = Fds::new();
    assert_eq!(channel.recv(&mut data, &mut fds), Err(Error::Disconnected));
    check("pipeline", &report);
}

/// The worker side, in the child process.
fn peer(args: &[String]) {
    let [fd, messages, seed_out, seed_in] = args else {
        panic!("usage: --child FD MESSAGES SEED_OUT SEED_IN");
    };
    let parse = |s: &String| -> u64 { s.parse().unwrap() };
    // SAFETY: the parent cleared FD_CLOEXEC on exactly this fd and passed
    // its number; nothing else in this process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd.parse().unwrap()) };
    let channel = Channel::<CAP>::adopt(fd).unwrap();
    let messages = parse(messages);
    let watchdog = Watchdog::new("soak peer", PROGRESS_BOUND);
    let report = run_side(
        &channel,
        &watchdog,
        messages,
        parse(seed_out),
        parse(seed_in),
    );
    // Nothing after the last message: the parent shut its side down.
    let mut data = [0u8; 16];
    let mut fds = Fds::new();
    assert_eq!(channel.recv(&mut data, &mut fds), Err(Error::Disconnected));
    println!("{}", describe("worker", messages, &report));
    std::io::stdout().flush().unwrap();
    check("worker", &report);
}

fn main() -> ExitCode {
    harness::main(
        |args| {
            exit_on_any_panic("soak peer");
            peer(args);
            ExitCode::SUCCESS
        },
        // Its own watchdog, kicked at every message, bounds the soak.
        || {
            vec![Trial::test(TEST_NAME, || {
                exit_on_any_panic(TEST_NAME);
                soak();
                Ok(())
            })]
        },
    )
}
