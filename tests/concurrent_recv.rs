//! Several threads receiving from one channel while empty records and a
//! hang-up are told apart (issue 17, defect 4).
//!
//! After a 0-byte read without control messages the channel has to decide
//! whether it was an empty record or end-of-file, and does so with
//! `SO_PASSCRED` (see `Channel::peer_is_gone`). The option belongs to the
//! socket, which every receiving thread shares: a receive running at that
//! moment on another thread gets credentials with its record. The control
//! buffer has room for them besides the fds, so that record loses nothing.
//! (The code before this fix turned the option on and off again around a
//! peek, and had no such room: a `Channel<1>` record with one fd then came
//! with the credentials instead of its fd, `FdsTruncated { declared: 1,
//! received: 0 }`; 124 of 9,000 fd-carrying records were lost that way.)
//!
//! A limit these tests also pin: an empty record read before `SO_PASSCRED`
//! is on (so without credentials) is decided by a peek at what is queued
//! when the decision is made. If the other threads have drained the queue
//! meanwhile and the peer has hung up, that empty record reads as
//! `Disconnected`, although records came after it. At most one such record
//! per thread that is not the one taking the last record: `threads - 1`.
//!
//! Not run under qemu-user (`.ci/cross` runs an explicit list of test
//! binaries): telling an empty record from end-of-file relies on
//! `MSG_CTRUNC` from a peek with `SO_PASSCRED`, which qemu drops, as for
//! `tests/hangup.rs`.

mod common;

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Watchdog, identity, memfd, open_fds, send_raw, serial};
use ipc_unixsocket::{Channel, Error, Received};

/// Empty records and fd-carrying records queued per round (each).
const PER_ROUND: usize = 30;

/// fd-carrying records over all rounds of one test.
const FD_RECORDS: usize = 9_000;

/// Bound for one receive: every record is queued before the receivers
/// start, so only a lost wake-up or a stuck receive reaches it.
const RECV_BOUND: Duration = Duration::from_secs(5);

/// What one receiving thread saw in one round.
#[derive(Default)]
struct Seen {
    /// Indices of the fd-carrying records received intact (with their fd).
    delivered: Vec<u32>,
    /// `ShortRecord { len: 0 }`: the empty records.
    empty: usize,
    /// Every other outcome, by its `Debug` form, and every record taken by
    /// a receive that began after some thread's `Disconnected`.
    unexpected: Vec<String>,
    /// Whether this thread's receives ended with `Disconnected`, and a
    /// second receive after it was `Disconnected` too.
    ended_disconnected: bool,
}

/// One thread's receives until `Disconnected` (or its timeout). `gone` is
/// set by the first thread to see `Disconnected`: a receive that begins
/// after it must see `Disconnected` too, as nothing may be left queued.
fn drain(reader: &Channel<1>, file: &OwnedFd, gone: &AtomicBool) -> Seen {
    let mut seen = Seen::default();
    let mut data = [0u8; 16];
    let mut fds = heapless::Vec::<OwnedFd, 1>::new();
    loop {
        let after_disconnected = gone.load(Ordering::SeqCst);
        let got = reader.recv_timeout(&mut data, &mut fds, RECV_BOUND);
        if after_disconnected && got != Err(Error::Disconnected) {
            seen.unexpected
                .push(format!("{got:?} after another thread's Disconnected"));
        }
        match got {
            Ok(Received {
                data_len: 4,
                fd_count: 1,
            }) if identity(&fds[0]) == identity(file) => {
                let index = u32::from_le_bytes(data[..4].try_into().expect("4 bytes"));
                seen.delivered.push(index);
                fds.clear();
            }
            Err(Error::ShortRecord { len: 0 }) => seen.empty += 1,
            Err(Error::Disconnected) => {
                gone.store(true, Ordering::SeqCst);
                let again = reader.try_recv(&mut data, &mut fds);
                seen.ended_disconnected = again == Err(Error::Disconnected);
                if !seen.ended_disconnected {
                    seen.unexpected
                        .push(format!("{again:?} after Disconnected"));
                }
                return seen;
            }
            other => {
                seen.unexpected.push(format!("{other:?}"));
                if matches!(other, Err(Error::TimedOut)) {
                    return seen;
                }
            }
        }
    }
}

/// Rounds of: the peer queues [`PER_ROUND`] empty records and as many
/// records with one fd each (interleaved, an empty one first), then hangs
/// up; `threads` threads drain one `Channel<1>` until `Disconnected`.
///
/// Every fd-carrying record must arrive exactly once with its fd; every
/// outcome must be one of those records, `ShortRecord { len: 0 }` or
/// `Disconnected`; every thread must end with `Disconnected` (twice in a
/// row), and no receive that began after a `Disconnected` may take a
/// record: `Disconnected` only once the queue is drained. Every empty
/// record reads as `ShortRecord { len: 0 }` but for at most `threads - 1`
/// per round taken for end-of-file (the limit in the module's docs); the
/// rounds where that happened are printed.
fn concurrent_receivers_lose_no_fd_carrying_record(threads: usize) {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let file = memfd(b"carried by every record");
    let baseline = open_fds();
    let rounds = FD_RECORDS / PER_ROUND;
    let mut failures = BTreeMap::<String, usize>::new();
    let mut empty_taken_for_end_of_file = BTreeMap::<usize, usize>::new();
    let mut lost = 0;
    for round in 0..rounds {
        {
            let (writer, reader) = Channel::<1>::pair().expect("socketpair");
            for index in 0..PER_ROUND as u32 {
                send_raw(&writer, b"", &[]);
                writer
                    .send(&index.to_le_bytes(), &[file.as_fd()])
                    .expect("queue a record with one fd");
            }
            drop(writer); // the hang-up, behind every record

            let gone = AtomicBool::new(false);
            let seen = Mutex::new(Vec::new());
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(|| {
                        let mine = drain(&reader, &file, &gone);
                        seen.lock().expect("no panic holding it").push(mine);
                    });
                }
            });
            let seen = seen.into_inner().expect("no panic holding it");

            let mut delivered: Vec<u32> = seen.iter().flat_map(|s| s.delivered.clone()).collect();
            delivered.sort_unstable();
            lost += PER_ROUND.saturating_sub(delivered.len());
            for outcome in seen.iter().flat_map(|s| &s.unexpected) {
                *failures.entry(outcome.clone()).or_default() += 1;
            }
            if seen.iter().any(|s| !s.ended_disconnected) {
                *failures
                    .entry("a thread that did not end with Disconnected".into())
                    .or_default() += 1;
            }
            if delivered != (0..PER_ROUND as u32).collect::<Vec<_>>() {
                *failures
                    .entry(format!(
                        "a round delivering {} of {PER_ROUND} fd-carrying records",
                        delivered.len()
                    ))
                    .or_default() += 1;
            }
            let empty: usize = seen.iter().map(|s| s.empty).sum();
            let missing = PER_ROUND.saturating_sub(empty);
            if empty > PER_ROUND || missing > threads - 1 {
                *failures
                    .entry(format!("a round with {empty} of {PER_ROUND} empty records"))
                    .or_default() += 1;
            } else if missing > 0 {
                *empty_taken_for_end_of_file.entry(missing).or_default() += 1;
            }
        }
        assert_eq!(open_fds(), baseline, "round {round}: an fd leaked");
    }
    println!(
        "{threads} threads, {rounds} rounds: rounds where n empty records read as \
         end-of-file, by n: {empty_taken_for_end_of_file:?}"
    );
    assert!(
        failures.is_empty() && lost == 0,
        "{threads} threads, {rounds} rounds: {lost} of {FD_RECORDS} fd-carrying records lost; \
         failures: {failures:#?}"
    );
}

#[test]
fn two_threads_draining_a_channel_lose_no_fd_carrying_record_to_empty_records() {
    concurrent_receivers_lose_no_fd_carrying_record(2);
}

#[test]
fn four_threads_draining_a_channel_lose_no_fd_carrying_record_to_empty_records() {
    concurrent_receivers_lose_no_fd_carrying_record(4);
}
