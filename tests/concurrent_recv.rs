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
//! Not run under qemu-user (`.ci/cross` runs an explicit list of test
//! binaries): telling an empty record from end-of-file relies on
//! `MSG_CTRUNC` from a peek with `SO_PASSCRED`, which qemu drops, as for
//! `tests/hangup.rs`.

mod common;

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
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
    /// Every other outcome before `Disconnected`, by its `Debug` form.
    unexpected: Vec<String>,
    /// Whether this thread's receives ended with `Disconnected`, and a
    /// second receive after it was `Disconnected` too.
    ended_disconnected: bool,
}

/// One thread's receives until `Disconnected` (or an outcome that is not
/// one of the three expected ones, or its timeout).
fn drain(reader: &Channel<1>, file: &OwnedFd) -> Seen {
    let mut seen = Seen::default();
    let mut data = [0u8; 16];
    let mut fds = heapless::Vec::<OwnedFd, 1>::new();
    loop {
        match reader.recv_timeout(&mut data, &mut fds, RECV_BOUND) {
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
/// Every fd-carrying record must arrive once with its fd, every empty
/// record as `ShortRecord { len: 0 }`, nothing else, and every thread must
/// end with `Disconnected`. Since every record was queued before the
/// hang-up, and end-of-file is reported only once the queue is empty, the
/// exact counts also show that `Disconnected` came only after the queue
/// was drained: no empty record was taken for end-of-file (the last record
/// carries an fd, and the first empty one is never the last).
fn concurrent_receivers_lose_no_fd_carrying_record(threads: usize) {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let file = memfd(b"carried by every record");
    let baseline = open_fds();
    let rounds = FD_RECORDS / PER_ROUND;
    let mut outcomes = BTreeMap::<String, usize>::new();
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

            let seen = Mutex::new(Vec::new());
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(|| {
                        let mine = drain(&reader, &file);
                        seen.lock().expect("no panic holding it").push(mine);
                    });
                }
            });
            let seen = seen.into_inner().expect("no panic holding it");

            let mut delivered: Vec<u32> = seen.iter().flat_map(|s| s.delivered.clone()).collect();
            delivered.sort_unstable();
            lost += PER_ROUND.saturating_sub(delivered.len());
            let empty: usize = seen.iter().map(|s| s.empty).sum();
            for outcome in seen.iter().flat_map(|s| &s.unexpected) {
                *outcomes.entry(outcome.clone()).or_default() += 1;
            }
            let all: Vec<u32> = (0..PER_ROUND as u32).collect();
            if delivered != all
                || empty != PER_ROUND
                || seen
                    .iter()
                    .any(|s| !s.ended_disconnected || !s.unexpected.is_empty())
            {
                // Go on to count the losses over every round, then fail.
                *outcomes
                    .entry(format!(
                        "round with {} of {PER_ROUND} fd-carrying records and {empty} empty ones",
                        delivered.len()
                    ))
                    .or_default() += 1;
            }
        }
        assert_eq!(open_fds(), baseline, "round {round}: an fd leaked");
    }
    assert!(
        outcomes.is_empty() && lost == 0,
        "{threads} threads, {rounds} rounds: {lost} of {FD_RECORDS} fd-carrying records lost; \
         unexpected outcomes: {outcomes:#?}"
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
