//! Signals: blocking calls interrupted by a handler installed without
//! `SA_RESTART` must resume, and `recv_timeout` must keep its deadline.
//!
//! The signal (`SIGUSR1`) is aimed at the blocked thread with
//! `pthread_kill`, and only once `/proc/self/task/TID/syscall` shows that
//! thread blocked in the expected system call; the handler counts
//! deliveries so each interruption is confirmed before the next step. No
//! sleeping is used to synchronise (one test paces its signals with a short
//! sleep: that is load, not synchronisation). The handler and its counters
//! are process-wide, so every test holds `common::serial()`, and a
//! watchdog so that a wait that never ends fails instead of hanging.

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::signals::{
    Interrupted, OnTarget, install_handler_without_sa_restart, interrupt, interrupt_wait,
    interrupt_while_blocked, this_thread, wait_until_blocked_in,
};
use common::{ShutdownOnPanic, Watchdog, identity, memfd, serial};
use ipc_unixsocket::{Channel, Error, Received};
use rustix::event::{PollFd, PollFlags};
use rustix::io::{Errno, IoSliceMut};
use rustix::net::{RecvAncillaryBuffer, RecvFlags, recvmsg};

type Fds<const N: usize> = heapless::Vec<OwnedFd, N>;

const ROUNDS: usize = 20;

/// Control: the setup really interrupts a blocked `recvmsg`. A raw
/// `recvmsg` that does not retry fails with `EINTR` on the first signal, so
/// a `Channel::recv` that stopped retrying would fail the next test.
#[test]
fn control_raw_recvmsg_fails_with_eintr() {
    let _guard = serial();
    let _watchdog = Watchdog::for_test();
    install_handler_without_sa_restart();
    let (tx, rx) = Channel::<1>::pair().unwrap();
    let (ids_tx, ids_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let receiver = scope.spawn(|| {
            ids_tx.send(this_thread()).unwrap();
            let mut data = [0u8; 16];
            let mut space = [std::mem::MaybeUninit::uninit(); 64];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            recvmsg(
                &rx,
                &mut [IoSliceMut::new(&mut data)],
                &mut control,
                RecvFlags::empty(),
            )
            .map(|msg| msg.bytes)
        });
        let _unblock = ShutdownOnPanic(rx.as_fd());
        let thread = ids_rx.recv().unwrap();
        let done = || receiver.is_finished();
        assert!(wait_until_blocked_in(
            thread.tid,
            &[libc::SYS_recvmsg],
            &done
        ));
        assert!(interrupt(thread, &done));
        assert_eq!(receiver.join().unwrap(), Err(Errno::INTR));
    });
    drop(tx);
}

#[test]
fn blocking_recv_resumes_after_signals_without_sa_restart() {
    let _guard = serial();
    let _watchdog = Watchdog::for_test();
    install_handler_without_sa_restart();
    let (tx, rx) = Channel::<1>::pair().unwrap();
    let file = memfd(b"frame");
    let (ids_tx, ids_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let receiver = scope.spawn(|| {
            ids_tx.send(this_thread()).unwrap();
            let mut data = [0u8; 64];
            let mut fds = Fds::<1>::new();
            let got = rx.recv(&mut data, &mut fds);
            (got, data, fds)
        });
        let _unblock = ShutdownOnPanic(rx.as_fd());
        let thread = ids_rx.recv().unwrap();
        let on_target = OnTarget::new(thread);
        let done = || receiver.is_finished();
        let resumed = interrupt_while_blocked(thread, &[libc::SYS_recvmsg], ROUNDS, &done);
        if !resumed {
            let (got, ..) = receiver.join().unwrap();
            panic!("recv returned instead of resuming after a signal: {got:?}");
        }
        // `interrupt` counts deliveries anywhere in the process; each one
        // must have been handled by the receiver, interrupting its recvmsg.
        assert_eq!(
            on_target.count(),
            ROUNDS,
            "signals handled by the thread blocked in recv"
        );
        // Only now does the message exist; recv must return it.
        tx.send(b"after the signals", &[file.as_fd()]).unwrap();
        let (got, data, fds) = receiver.join().unwrap();
        assert_eq!(
            got,
            Ok(Received {
                data_len: 17,
                fd_count: 1
            })
        );
        assert_eq!(&data[..17], b"after the signals");
        assert_eq!(identity(&fds[0]), identity(&file));
    });
}

#[test]
fn recv_timeout_returns_a_message_sent_after_signals() {
    let _guard = serial();
    let _watchdog = Watchdog::for_test();
    install_handler_without_sa_restart();
    let (tx, rx) = Channel::<1>::pair().unwrap();
    let (ids_tx, ids_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let receiver = scope.spawn(|| {
            ids_tx.send(this_thread()).unwrap();
            let mut data = [0u8; 64];
            let mut fds = Fds::<1>::new();
            let got = rx.recv_timeout(&mut data, &mut fds, Duration::from_secs(600));
            (got, data)
        });
        let _unblock = ShutdownOnPanic(rx.as_fd());
        let thread = ids_rx.recv().unwrap();
        let done = || receiver.is_finished();
        if !interrupt_while_blocked(thread, &[libc::SYS_ppoll], ROUNDS, &done) {
            let (got, _) = receiver.join().unwrap();
            panic!("recv_timeout returned instead of resuming after a signal: {got:?}");
        }
        tx.send(b"late", &[]).unwrap();
        let (got, data) = receiver.join().unwrap();
        assert_eq!(
            got,
            Ok(Received {
                data_len: 4,
                fd_count: 0
            })
        );
        assert_eq!(&data[..4], b"late");
    });
}

const TIMEOUT: Duration = Duration::from_millis(300);

#[test]
fn recv_timeout_keeps_its_deadline_across_interruptions() {
    // Not a speed limit: interrupting merely stops after this long, and a
    // recv_timeout that restarted its full timeout on every EINTR would
    // still be waiting then (see the control below).
    const GIVE_UP: Duration = Duration::from_secs(60);
    let _guard = serial();
    let _watchdog = Watchdog::for_test();
    install_handler_without_sa_restart();
    let (_tx, rx) = Channel::<1>::pair().unwrap();
    let run = interrupt_wait(
        &[libc::SYS_ppoll],
        || {
            let mut data = [0u8; 16];
            let mut fds = Fds::<1>::new();
            rx.recv_timeout(&mut data, &mut fds, TIMEOUT)
        },
        Duration::ZERO,
        GIVE_UP,
    );
    println!(
        "recv_timeout({TIMEOUT:?}) interrupted {} times, returned {:?} after {:?}",
        run.interruptions, run.result, run.elapsed
    );
    assert!(
        !run.gave_up,
        "recv_timeout({TIMEOUT:?}) was still waiting after {GIVE_UP:?} of interruptions: \
         its deadline restarts on EINTR"
    );
    assert_eq!(run.result, Err(Error::TimedOut));
    assert!(
        run.elapsed >= TIMEOUT,
        "recv_timeout returned after {:?}, before its {TIMEOUT:?} deadline",
        run.elapsed
    );
    assert!(run.interruptions >= 1, "the wait was never interrupted");
}

/// Control: the same harness catches both ways of getting the deadline
/// wrong, shown with two naive waits written against raw `ppoll`.
#[test]
fn control_naive_deadlines_are_caught() {
    fn naive_wait(channel: &Channel<1>, on_eintr_give_up: bool) -> Result<(), Error> {
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: TIMEOUT.as_nanos() as i64,
        };
        loop {
            let mut watch = [PollFd::new(channel, PollFlags::IN)];
            match rustix::event::poll(&mut watch, Some(&timeout)) {
                Ok(0) => return Err(Error::TimedOut),
                Ok(_) => return Ok(()),
                // Returns early, reporting a timeout that has not passed.
                Err(Errno::INTR) if on_eintr_give_up => return Err(Error::TimedOut),
                // Restarts the full timeout: never returns while interrupted.
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
    let _guard = serial();
    let _watchdog = Watchdog::for_test();
    install_handler_without_sa_restart();
    let (_tx, rx) = Channel::<1>::pair().unwrap();

    let restarting = interrupt_wait(
        &[libc::SYS_ppoll],
        || naive_wait(&rx, false),
        Duration::ZERO,
        10 * TIMEOUT,
    );
    assert!(restarting.gave_up, "a restarting wait was not caught");

    let early = interrupt_wait(
        &[libc::SYS_ppoll],
        || naive_wait(&rx, true),
        Duration::ZERO,
        10 * TIMEOUT,
    );
    assert!(!early.gave_up);
    assert_eq!(early.result, Err(Error::TimedOut));
    assert!(early.elapsed < TIMEOUT, "an early return was not caught");
}

/// A generous upper bound on a timed wait: the deadline plus one second.
/// A correct `recv_timeout` returns within milliseconds of its deadline;
/// only a wait that overshoots by whole timeouts comes near this.
const LATEST: Duration = Duration::from_millis(1300);

/// Signals arrive every `PACE` or so while the receiver waits: about ten
/// during `TIMEOUT`.
const PACE: Duration = Duration::from_millis(30);

/// The paced run counts only if the receiver really was interrupted this
/// many times while it waited.
const SEVERAL: usize = 4;

fn assert_times_out_in_time(what: &str, result: Result<Received, Error>, elapsed: Duration) {
    assert_eq!(result, Err(Error::TimedOut), "{what}");
    assert!(
        elapsed >= TIMEOUT,
        "{what}: returned after {elapsed:?}, before its {TIMEOUT:?} deadline"
    );
    assert!(
        elapsed < LATEST,
        "{what}: returned after {elapsed:?}, more than a second after its {TIMEOUT:?} deadline"
    );
}

/// Runs `wait` (a `recv_timeout(TIMEOUT)`) with signals every `PACE`, until
/// a run in which it was interrupted at least `SEVERAL` times (a machine
/// too loaded to deliver them in time gets another try).
fn paced_run(
    wait: &(dyn Fn() -> Result<Received, Error> + Sync),
) -> Interrupted<Result<Received, Error>> {
    const TRIES: usize = 5;
    for _ in 0..TRIES {
        // Interrupting stops after 10 s: long enough for any wait that
        // restarts its timeout on the first 50 interruptions to show it.
        let run = interrupt_wait(&[libc::SYS_ppoll], wait, PACE, Duration::from_secs(10));
        if run.interruptions >= SEVERAL {
            return run;
        }
        println!(
            "paced run interrupted only {} times; again",
            run.interruptions
        );
    }
    panic!("the waiting receiver was never interrupted {SEVERAL} times in {TRIES} tries");
}

#[test]
fn recv_timeout_without_a_record_returns_within_a_second_of_its_deadline() {
    let _guard = serial();
    let _watchdog = Watchdog::for_test();
    let (_tx, rx) = Channel::<1>::pair().unwrap();
    let mut data = [0u8; 16];
    let mut fds = Fds::<1>::new();
    let start = Instant::now();
    let result = rx.recv_timeout(&mut data, &mut fds, TIMEOUT);
    assert_times_out_in_time("no record, no signal", result, start.elapsed());
}

#[test]
fn recv_timeout_interrupted_every_30_ms_returns_within_a_second_of_its_deadline() {
    let _guard = serial();
    let _watchdog = Watchdog::for_test();
    install_handler_without_sa_restart();
    let (_tx, rx) = Channel::<1>::pair().unwrap();
    let run = paced_run(&|| {
        let mut data = [0u8; 16];
        let mut fds = Fds::<1>::new();
        rx.recv_timeout(&mut data, &mut fds, TIMEOUT)
    });
    println!(
        "recv_timeout({TIMEOUT:?}) interrupted {} times, about every {PACE:?}: {:?} after {:?}",
        run.interruptions, run.result, run.elapsed
    );
    assert_times_out_in_time("signals every 30 ms", run.result, run.elapsed);
}

/// Control: the two bounds above catch a wait that sleeps ten times the
/// time left, and one that restarts its full timeout on each of its first
/// 50 interruptions (which the as-fast-as-possible test cannot see: 50
/// signals take only milliseconds there).
#[test]
fn control_overlong_waits_are_caught() {
    fn slow_wait(channel: &Channel<1>, restarts: usize, stretch: u32) -> Result<Received, Error> {
        let mut deadline = Instant::now() + TIMEOUT;
        let mut restarts_left = restarts;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::TimedOut);
            }
            let left = left * stretch;
            let timeout = rustix::event::Timespec {
                tv_sec: left.as_secs() as _,
                tv_nsec: left.subsec_nanos() as _,
            };
            let mut watch = [PollFd::new(channel, PollFlags::IN)];
            match rustix::event::poll(&mut watch, Some(&timeout)) {
                Ok(0) => return Err(Error::TimedOut),
                Ok(_) => unreachable!("nothing is sent"),
                Err(Errno::INTR) if restarts_left > 0 => {
                    restarts_left -= 1;
                    deadline = Instant::now() + TIMEOUT;
                }
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let _guard = serial();
    let _watchdog = Watchdog::for_test();
    install_handler_without_sa_restart();
    let (_tx, rx) = Channel::<1>::pair().unwrap();

    let start = Instant::now();
    let result = slow_wait(&rx, 0, 10);
    let late =
        std::panic::catch_unwind(|| assert_times_out_in_time("10x", result, start.elapsed()));
    assert!(
        late.is_err(),
        "a wait of ten times the time left was not caught"
    );

    let run = paced_run(&|| slow_wait(&rx, 50, 1));
    let late =
        std::panic::catch_unwind(|| assert_times_out_in_time("restarts", run.result, run.elapsed));
    assert!(
        late.is_err(),
        "a wait restarting on 50 interruptions was not caught"
    );
}

#[test]
fn blocking_send_resumes_after_signals_without_sa_restart() {
    let _guard = serial();
    let _watchdog = Watchdog::for_test();
    install_handler_without_sa_restart();
    let (tx, rx) = Channel::<0>::pair().unwrap();
    // Fill the socket; records are numbered.
    let mut sent = 0u32;
    loop {
        match tx.try_send(&sent.to_le_bytes(), &[]) {
            Ok(()) => sent += 1,
            Err(Error::WouldBlock) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    let (ids_tx, ids_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            ids_tx.send(this_thread()).unwrap();
            tx.send(&sent.to_le_bytes(), &[])
        });
        let _unblock = ShutdownOnPanic(rx.as_fd());
        let thread = ids_rx.recv().unwrap();
        let done = || sender.is_finished();
        if !interrupt_while_blocked(thread, &[libc::SYS_sendmsg], ROUNDS, &done) {
            panic!(
                "send returned instead of resuming after a signal: {:?}",
                sender.join().unwrap()
            );
        }
        // The peer reads again: every record arrives once, in order, the
        // interrupted one last.
        let mut data = [0u8; 8];
        let mut fds = Fds::<0>::new();
        for seq in 0..=sent {
            let got = rx.recv(&mut data, &mut fds).unwrap();
            assert_eq!(got.data_len, 4);
            assert_eq!(u32::from_le_bytes(data[..4].try_into().unwrap()), seq);
        }
        assert_eq!(sender.join().unwrap(), Ok(()));
        assert_eq!(rx.try_recv(&mut data, &mut fds), Err(Error::WouldBlock));
    });
}
