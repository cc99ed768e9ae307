//! After set-up, the channel allocates nothing: not on the `send`/`recv`
//! happy path, not in `try_send` or `try_recv` (`WouldBlock` included), not
//! in `recv_timeout` (`TimedOut` included), not through `Payload`, and not
//! on any rejection path or `Disconnected`.
//!
//! A counting global allocator wraps `System`; its counters are
//! process-wide. Runs with `harness = false` under `common::harness`
//! (libtest-mimic, one test at a time on the main thread, which each test
//! checks first), so no test-harness thread can allocate while a loop is
//! measured: every allocation counted during a measured region is one the
//! channel made.
//! Raw records for the rejection paths are built and queued outside the
//! measured regions. Each test runs under a watchdog (armed before
//! measuring; it allocates nothing once armed), so a lost record fails it
//! instead of hanging it.

mod common;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::ExitCode;

use std::time::Duration;

use common::{header, identity, memfd, open_fds, send_raw};
use ipc_unixsocket::{Channel, Error, HEADER_LEN, Payload, Received};

const ROUND_TRIPS: u32 = 10_000;

#[global_allocator]
static GLOBAL: common::counting::Counting = common::counting::Counting;

use common::counting::counters;

const TESTS: &[(&str, fn())] = &[
    (
        "ten_thousand_round_trips_with_fds_allocate_nothing",
        ten_thousand_round_trips_with_fds_allocate_nothing,
    ),
    (
        "try_send_and_try_recv_allocate_nothing_including_would_block",
        try_send_and_try_recv_allocate_nothing_including_would_block,
    ),
    (
        "recv_timeout_allocates_nothing_including_timed_out",
        recv_timeout_allocates_nothing_including_timed_out,
    ),
    (
        "payload_send_recv_and_try_recv_allocate_nothing",
        payload_send_recv_and_try_recv_allocate_nothing,
    ),
    (
        "every_rejection_and_disconnected_allocate_nothing",
        every_rejection_and_disconnected_allocate_nothing,
    ),
];

/// Each test under a watchdog, one at a time on the main thread.
fn main() -> ExitCode {
    let trials = TESTS.iter().map(|&(name, test)| {
        common::harness::test(name, common::TEST_BOUND, move || {
            // The counters are process-wide: a test on a runner thread
            // would share the process with the runner's main thread.
            assert_eq!(
                std::thread::current().name(),
                Some("main"),
                "{name} must run on the main thread"
            );
            test();
        })
    });
    common::harness::run(trials.collect())
}

/// Runs `region` and returns what it allocated: `(allocations, bytes)`.
fn measure(region: impl FnOnce()) -> (usize, usize) {
    let start = counters();
    region();
    let end = counters();
    (end.0 - start.0, end.1 - start.1)
}

fn assert_allocated_nothing(what: &str, allocated: (usize, usize)) {
    assert_eq!(
        allocated,
        (0, 0),
        "{what} allocated {} times, {} bytes",
        allocated.0,
        allocated.1
    );
}

fn ten_thousand_round_trips_with_fds_allocate_nothing() {
    // The allocator is installed and counts: otherwise "0" would prove
    // nothing.
    let before = counters();
    let boxed = std::hint::black_box(Box::new([0u8; 100]));
    let after = counters();
    assert!(after.0 > before.0 && after.1 >= before.1 + 100);
    drop(boxed);

    // Set-up: channel ends, the two memfds that travel, receive buffers.
    let (pipeline, worker) = Channel::<2>::pair().unwrap();
    let frames = [memfd(b"frame buffer 0"), memfd(b"frame buffer 1")];
    let frame_ids = [identity(&frames[0]), identity(&frames[1])];
    let sent_fds = [frames[0].as_fd(), frames[1].as_fd()];
    let mut worker_data = [0u8; 64];
    let mut worker_fds = heapless::Vec::<OwnedFd, 2>::new();
    let mut pipeline_data = [0u8; 64];
    let mut pipeline_fds = heapless::Vec::<OwnedFd, 2>::new();
    let fds_before = open_fds();
    let two_fds_and_4_bytes = Ok(Received {
        data_len: 4,
        fd_count: 2,
    });

    let start = counters();
    let mut failures = 0u32;
    for i in 0..ROUND_TRIPS {
        let request = i.to_le_bytes();
        // Pipeline to worker: a sequence number and two frame buffers.
        if pipeline.send(&request, &sent_fds).is_err() {
            failures += 1;
        }
        let got = worker.recv(&mut worker_data, &mut worker_fds);
        if got != two_fds_and_4_bytes || worker_data[..4] != request || worker_fds.len() != 2 {
            failures += 1;
            continue;
        }
        // The worker got the frame buffers themselves, in order (fstat does
        // not allocate).
        for (fd, id) in worker_fds.iter().zip(frame_ids) {
            match rustix::fs::fstat(fd) {
                Ok(stat) if (stat.st_dev, stat.st_ino) == id => {}
                _ => failures += 1,
            }
        }
        // Worker to pipeline: the sequence number and the fds it received.
        let reply = [worker_fds[0].as_fd(), worker_fds[1].as_fd()];
        if worker.send(&worker_data[..4], &reply).is_err() {
            failures += 1;
        }
        let got = pipeline.recv(&mut pipeline_data, &mut pipeline_fds);
        if got != two_fds_and_4_bytes || pipeline_data[..4] != request || pipeline_fds.len() != 2 {
            failures += 1;
            continue;
        }
        // The same files came back, in order.
        for (fd, id) in pipeline_fds.iter().zip(frame_ids) {
            match rustix::fs::fstat(fd) {
                Ok(stat) if (stat.st_dev, stat.st_ino) == id => {}
                _ => failures += 1,
            }
        }
    }
    let end = counters();

    assert_eq!(failures, 0, "round trips that went wrong");
    let (allocations, bytes) = (end.0 - start.0, end.1 - start.1);
    assert_eq!(
        (allocations, bytes),
        (0, 0),
        "{ROUND_TRIPS} round trips allocated {allocations} times, {bytes} bytes"
    );
    // Received fds are replaced, not accumulated: only the last message's
    // fds are still open on each side.
    assert_eq!(open_fds(), fds_before + 4);
    drop((worker_fds, pipeline_fds));
    assert_eq!(open_fds(), fds_before);
}

/// Two memfds and their identities, made before any measuring.
fn frames() -> ([OwnedFd; 2], [(u64, u64); 2]) {
    let frames = [memfd(b"frame buffer 0"), memfd(b"frame buffer 1")];
    let ids = [identity(&frames[0]), identity(&frames[1])];
    (frames, ids)
}

/// The fds match `ids`, in order (fstat does not allocate).
fn same_files(fds: &[OwnedFd], ids: &[(u64, u64)]) -> bool {
    fds.len() == ids.len()
        && fds.iter().zip(ids).all(|(fd, id)| {
            matches!(rustix::fs::fstat(fd), Ok(stat) if (stat.st_dev, stat.st_ino) == *id)
        })
}

fn try_send_and_try_recv_allocate_nothing_including_would_block() {
    const ROUNDS: u32 = 20;
    let (tx, rx) = Channel::<2>::pair().unwrap();
    let (frames, ids) = frames();
    let sent_fds = [frames[0].as_fd(), frames[1].as_fd()];
    let mut data = [0u8; 64];
    let mut fds = heapless::Vec::<OwnedFd, 2>::new();
    let mut failures = 0u32;
    let mut would_block = 0u32;
    let allocated = measure(|| {
        for _ in 0..ROUNDS {
            // Fill the socket until try_send says WouldBlock...
            let mut sent = 0u32;
            loop {
                match tx.try_send(&sent.to_le_bytes(), &sent_fds) {
                    Ok(()) => sent += 1,
                    Err(Error::WouldBlock) => break,
                    Err(_) => {
                        failures += 1;
                        break;
                    }
                }
            }
            would_block += 1;
            // ...then drain it until try_recv says WouldBlock.
            for seq in 0..sent {
                let got = rx.try_recv(&mut data, &mut fds);
                if got
                    != Ok(Received {
                        data_len: 4,
                        fd_count: 2,
                    })
                    || data[..4] != seq.to_le_bytes()
                    || !same_files(&fds, &ids)
                {
                    failures += 1;
                }
            }
            if rx.try_recv(&mut data, &mut fds) == Err(Error::WouldBlock) {
                would_block += 1;
            } else {
                failures += 1;
            }
        }
    });
    assert_eq!(failures, 0, "messages that went wrong");
    assert_eq!(would_block, 2 * ROUNDS, "both WouldBlock paths were taken");
    assert_allocated_nothing("try_send and try_recv, WouldBlock included", allocated);
}

fn recv_timeout_allocates_nothing_including_timed_out() {
    const ROUNDS: u32 = 200;
    let (tx, rx) = Channel::<2>::pair().unwrap();
    let (frames, ids) = frames();
    let sent_fds = [frames[0].as_fd(), frames[1].as_fd()];
    let mut data = [0u8; 64];
    let mut fds = heapless::Vec::<OwnedFd, 2>::new();
    let mut failures = 0u32;
    let allocated = measure(|| {
        for i in 0..ROUNDS {
            if tx.send(&i.to_le_bytes(), &sent_fds).is_err() {
                failures += 1;
            }
            let got = rx.recv_timeout(&mut data, &mut fds, Duration::from_secs(60));
            if got
                != Ok(Received {
                    data_len: 4,
                    fd_count: 2,
                })
                || data[..4] != i.to_le_bytes()
                || !same_files(&fds, &ids)
            {
                failures += 1;
            }
            // TimedOut at once, and after a real wait in poll.
            for timeout in [Duration::ZERO, Duration::from_millis(1)] {
                if rx.recv_timeout(&mut data, &mut fds, timeout) != Err(Error::TimedOut) {
                    failures += 1;
                }
            }
        }
    });
    assert_eq!(failures, 0, "receives that went wrong");
    assert_allocated_nothing("recv_timeout, TimedOut included", allocated);
}

fn payload_send_recv_and_try_recv_allocate_nothing() {
    const ROUNDS: u32 = 1_000;
    let (a, b) = Channel::<2>::pair().unwrap();
    let (frames, ids) = frames();
    let mut out = Payload::<{ HEADER_LEN + 64 }, 2>::new();
    out.extend_from_slice(b"frame stats").unwrap();
    for frame in &frames {
        out.fds.push(frame.try_clone().unwrap()).unwrap();
    }
    let mut back = Payload::<{ HEADER_LEN + 64 }, 2>::new();
    let mut failures = 0u32;
    let expected = Ok(Received {
        data_len: 11,
        fd_count: 2,
    });
    let allocated = measure(|| {
        for _ in 0..ROUNDS {
            if out.send(&a).is_err() || back.recv(&b) != expected {
                failures += 1;
            }
            if back.data() != b"frame stats" || !same_files(&back.fds, &ids) {
                failures += 1;
            }
            if out.send(&a).is_err() || back.try_recv(&b) != expected {
                failures += 1;
            }
            if back.try_recv(&b) != Err(Error::WouldBlock) {
                failures += 1;
            }
        }
    });
    assert_eq!(failures, 0, "payloads that went wrong");
    assert_allocated_nothing("Payload send, recv and try_recv", allocated);
}

/// One way a record is rejected: the raw record, the fds sent with it, the
/// receiver's data capacity, and the error expected.
struct Rejection {
    record: Vec<u8>,
    fds: usize,
    data_capacity: usize,
    expected: fn(&Error) -> bool,
}

/// Records queued per measured batch, and batches per rejection.
const BATCH: usize = 30;
const BATCHES: usize = 4;

/// Queues `BATCH` copies of `rejection` (outside the measured region), then
/// receives them, rotating through recv, try_recv and recv_timeout, inside
/// it; a good message queued after each batch must come next. `during` is
/// held over each batch's receives (made and dropped outside the measured
/// region). Returns what the receives allocated.
fn rejection_allocs<const N: usize, G>(
    rejection: &Rejection,
    during: impl Fn() -> G,
) -> (usize, usize) {
    let (raw, rx) = Channel::<N>::pair().unwrap();
    let file = memfd(b"attached");
    let attached: Vec<BorrowedFd<'_>> = vec![file.as_fd(); rejection.fds];
    let mut data = [0u8; 256];
    let mut fds = heapless::Vec::<OwnedFd, N>::new();
    let mut total = (0, 0);
    let mut failures = 0u32;
    for _ in 0..BATCHES {
        for _ in 0..BATCH {
            send_raw(&raw, &rejection.record, &attached);
        }
        raw.send(b"good", &[]).unwrap();
        let data = &mut data[..rejection.data_capacity];
        let held = during();
        let allocated = measure(|| {
            for i in 0..BATCH {
                let got = match i % 3 {
                    0 => rx.recv(data, &mut fds),
                    1 => rx.try_recv(data, &mut fds),
                    _ => rx.recv_timeout(data, &mut fds, Duration::from_secs(60)),
                };
                if !matches!(&got, Err(error) if (rejection.expected)(error)) || !fds.is_empty() {
                    failures += 1;
                }
            }
            if rx.try_recv(data, &mut fds)
                != Ok(Received {
                    data_len: 4,
                    fd_count: 0,
                })
            {
                failures += 1;
            }
        });
        drop(held);
        total = (total.0 + allocated.0, total.1 + allocated.1);
    }
    assert_eq!(failures, 0, "records not rejected as expected");
    total
}

fn every_rejection_and_disconnected_allocate_nothing() {
    let body = |data_len: u32, len: usize| {
        let mut record = header(1, data_len).to_vec();
        record.resize(8 + len, 7);
        record
    };
    let mut bad_magic = body(3, 3);
    bad_magic[..2].copy_from_slice(b"XX");
    let mut bad_version = body(3, 3);
    bad_version[2] = 2;
    // One fd more than a Channel<2>'s control buffer holds (its room for
    // credentials included): TooManyFds through MSG_CTRUNC.
    let past_the_buffer = common::platform::fds_fitting(2) + 1;
    let cases: [(&str, Rejection); 9] = [
        (
            "ShortRecord (3 bytes)",
            Rejection {
                record: b"IP\x01".to_vec(),
                fds: 1,
                data_capacity: 64,
                expected: |e| matches!(e, Error::ShortRecord { len: 3 }),
            },
        ),
        (
            "ShortRecord (empty)",
            Rejection {
                record: Vec::new(),
                fds: 0,
                data_capacity: 64,
                expected: |e| matches!(e, Error::ShortRecord { len: 0 }),
            },
        ),
        (
            "BadMagic",
            Rejection {
                record: bad_magic,
                fds: 1,
                data_capacity: 64,
                expected: |e| matches!(e, Error::BadMagic { .. }),
            },
        ),
        (
            "UnsupportedVersion",
            Rejection {
                record: bad_version,
                fds: 1,
                data_capacity: 64,
                expected: |e| matches!(e, Error::UnsupportedVersion { version: 2 }),
            },
        ),
        (
            "LengthMismatch",
            Rejection {
                record: body(10, 5),
                fds: 1,
                data_capacity: 64,
                expected: |e| matches!(e, Error::LengthMismatch { .. }),
            },
        ),
        (
            "FdCountMismatch",
            Rejection {
                record: body(3, 3),
                fds: 2,
                data_capacity: 64,
                expected: |e| matches!(e, Error::FdCountMismatch { .. }),
            },
        ),
        (
            "Truncated",
            Rejection {
                record: body(100, 100),
                fds: 1,
                data_capacity: 16,
                expected: |e| matches!(e, Error::Truncated { len: 100, .. }),
            },
        ),
        (
            "TooManyFds",
            Rejection {
                record: {
                    let mut record = header(5, 3).to_vec();
                    record.extend_from_slice(b"abc");
                    record
                },
                fds: 5,
                data_capacity: 64,
                expected: |e| matches!(e, Error::TooManyFds { count: 5, .. }),
            },
        ),
        (
            "TooManyFds (MSG_CTRUNC)",
            Rejection {
                record: {
                    let mut record = header(past_the_buffer as u8, 3).to_vec();
                    record.extend_from_slice(b"abc");
                    record
                },
                fds: past_the_buffer,
                data_capacity: 64,
                expected: |e| matches!(e, Error::TooManyFds { capacity: 2, .. }),
            },
        ),
    ];
    for (what, rejection) in &cases {
        assert_allocated_nothing(what, rejection_allocs::<2, ()>(rejection, || ()));
    }
    // FdsTruncated: with RLIMIT_NOFILE lowered so that only 5 more fds can
    // be opened, the kernel installs 5 of the 16 and cuts off the rest
    // (MSG_CTRUNC), within the capacity of a Channel<16> (see
    // rejections.rs). Each rejection closes the 5 again, so the limit holds
    // for the whole batch.
    let truncated = Rejection {
        record: {
            let mut record = header(16, 3).to_vec();
            record.extend_from_slice(b"abc");
            record
        },
        fds: 16,
        data_capacity: 64,
        expected: |e| {
            matches!(
                e,
                Error::FdsTruncated {
                    declared: 16,
                    received: 5
                }
            )
        },
    };
    let limit = || common::platform::FdLimit::leaving(5);
    assert_allocated_nothing("FdsTruncated", rejection_allocs::<16, _>(&truncated, limit));

    // Disconnected, through every receive, again and again.
    let (tx, rx) = Channel::<2>::pair().unwrap();
    drop(tx);
    let mut data = [0u8; 64];
    let mut fds = heapless::Vec::<OwnedFd, 2>::new();
    let mut failures = 0u32;
    let allocated = measure(|| {
        for _ in 0..100 {
            for got in [
                rx.recv(&mut data, &mut fds),
                rx.try_recv(&mut data, &mut fds),
                rx.recv_timeout(&mut data, &mut fds, Duration::from_secs(60)),
            ] {
                if got != Err(Error::Disconnected) {
                    failures += 1;
                }
            }
        }
    });
    assert_eq!(failures, 0, "receives that did not say Disconnected");
    assert_allocated_nothing("Disconnected", allocated);
}
