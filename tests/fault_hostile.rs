//! Hostile peer: records built with raw `sendmsg` that bypass the crate's
//! sender. Each case must end in a typed error or a correct delivery, with no
//! fd left behind, bounded memory, and a channel that still works.
//!
//! Every test counts fds through `/proc/self/fd`, so every test holds
//! `common::serial()`.

mod common;

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use common::{
    PROGRESS_BOUND, ShutdownOnPanic, Watchdog, header, identity, memfd, open_fds, send_raw, serial,
};
use ipc_unixsocket::{Channel, Error, Received};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::IoSliceMut;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType, UCred, recvmsg, sendmsg, socketpair,
    sockopt,
};

type Fds<const N: usize> = heapless::Vec<OwnedFd, N>;

/// Resident set size of this process in KiB, from `/proc/self/status`.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("VmRSS line");
    line.split_whitespace()
        .nth(1)
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS value")
}

/// Receives one record the way a careless receiver would: a raw `recvmsg`
/// with a control buffer the size of the crate's for `capacity` fds, taking
/// whatever fds the kernel installed. Used as a control: it shows that the
/// provoked record really makes the kernel install fds in this process, so
/// a receiver that forgot to close them would be caught by the fd count.
fn raw_recv_fds(socket: impl AsFd, capacity: usize) -> (usize, Vec<OwnedFd>) {
    // CMSG_SPACE(12) + CMSG_SPACE(capacity * 4) of the target, as
    // src/cmsg.rs lays it out.
    let space_len = common::platform::control_space(capacity);
    let mut space = vec![MaybeUninit::<u8>::uninit(); space_len];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut data = [0u8; 256];
    let msg = recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut data)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .expect("raw recvmsg");
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    (msg.bytes, fds)
}

/// Waits up to 10 s for the read end of a pipe to report end-of-file, which
/// happens only once every copy of the write end (including copies in
/// flight inside socket queues) has been released. Returns whether it did.
fn pipe_reaches_eof(read_end: &OwnedFd) -> bool {
    let mut watch = [PollFd::new(read_end, PollFlags::IN)];
    let timeout = Timespec {
        tv_sec: 10,
        tv_nsec: 0,
    };
    loop {
        match poll(&mut watch, Some(&timeout)) {
            Ok(0) => return false,
            Ok(_) => {
                return watch[0]
                    .revents()
                    .intersects(PollFlags::HUP | PollFlags::ERR);
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => panic!("poll: {e}"),
        }
    }
}

/// The pipe's read end has not reached end-of-file yet (checked without
/// waiting).
fn pipe_still_open(read_end: &OwnedFd) -> bool {
    let mut watch = [PollFd::new(read_end, PollFlags::IN)];
    poll(&mut watch, Some(&Timespec::default())).expect("poll");
    !watch[0].revents().intersects(PollFlags::HUP)
}

fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .expect("socketpair")
}

/// A raw record whose control data is an `SCM_CREDENTIALS` message (this
/// process's own pid, uid and gid, which the kernel checks) followed, when
/// `fds` is not empty, by an `SCM_RIGHTS` message.
fn send_raw_with_credentials(socket: impl AsFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    let mut space = vec![
        MaybeUninit::uninit();
        rustix::cmsg_space!(ScmCredentials(1), ScmRights(fds.len().max(1)))
    ];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let me = UCred {
        pid: rustix::process::getpid(),
        uid: rustix::process::getuid(),
        gid: rustix::process::getgid(),
    };
    assert!(control.push(SendAncillaryMessage::ScmCredentials(me)));
    if !fds.is_empty() {
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    }
    let sent = sendmsg(
        socket,
        &[rustix::io::IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .expect("sendmsg with SCM_CREDENTIALS");
    assert_eq!(sent, bytes.len());
}

/// Sends a valid message with `N` fds through the crate and checks that it
/// arrives intact: the channel is still usable after whatever came before.
fn assert_still_usable<const N: usize>(tx: &Channel<N>, rx: &Channel<N>, file: &OwnedFd) {
    let fds = vec![file.as_fd(); N];
    tx.send(b"still usable", &fds).expect("send after fault");
    let mut data = [0u8; 64];
    let mut got = Fds::<N>::new();
    let received = rx.recv(&mut data, &mut got).expect("recv after fault");
    assert_eq!(
        received,
        Received {
            data_len: 12,
            fd_count: N
        }
    );
    assert_eq!(&data[..12], b"still usable");
    assert_eq!(got.len(), N);
    for fd in &got {
        assert_eq!(identity(fd), identity(file));
    }
}

/// One raw record carrying 253 copies of an fd, against a receiver of
/// capacity `N`, with the header declaring `declared` fds.
fn max_fds_against_capacity<const N: usize>(declared: u8, expected: fn(usize) -> Error) {
    let (tx, rx) = Channel::<N>::pair().unwrap();
    let file = memfd(b"payload");
    let many = vec![file.as_fd(); ipc_unixsocket::MAX_FDS_PER_MESSAGE];
    let baseline = open_fds();

    // Control: the kernel really installs fds for such a record (capacity
    // plus alignment slack), so a receiver that kept them would raise the
    // count checked below.
    send_raw(&tx, &header(declared, 0), &many);
    let (_, installed) = raw_recv_fds(&rx, N);
    assert!(!installed.is_empty(), "control: no fd was installed");
    assert_eq!(open_fds(), baseline + installed.len());
    let installed_count = installed.len();
    drop(installed);
    assert_eq!(open_fds(), baseline);

    send_raw(&tx, &header(declared, 0), &many);
    let mut data = [0u8; 64];
    let mut fds = Fds::<N>::new();
    let result = rx.recv(&mut data, &mut fds);
    let error = result.expect_err("253 fds accepted against a small capacity");
    assert!(error.is_rejected_record(), "{error:?}");
    assert_eq!(
        error,
        expected(installed_count),
        "capacity {N}, declared {declared}"
    );
    assert!(fds.is_empty());
    assert_eq!(open_fds(), baseline, "fds left behind (capacity {N})");
    assert_still_usable(&tx, &rx, &file);
    drop(fds);
    assert_eq!(open_fds(), baseline);
}

#[test]
fn max_fds_on_one_record_against_a_small_capacity() {
    let _guard = serial();
    let _watchdog = Watchdog::for_test();
    // The header tells the truth: 253 fds.
    max_fds_against_capacity::<1>(253, |_| Error::TooManyFds {
        count: 253,
        capacity: 1,
    });
    max_fds_against_capacity::<4>(253, |_| Error::TooManyFds {
        count: 253,
        capacity: 4,
    });
    // The header claims 255, more than the kernel can even carry.
    max_fds_against_capacity::<4>(255, |_| Error::TooManyFds {
        count: 255,
        capacity: 4,
    });
    // The header lies and claims a count that fits the capacity.
    max_fds_against_capacity::<4>(4, |installed| Error::FdCountMismatch {
        declared: 4,
        received: installed,
        truncated: true,
    });
    max_fds_against_capacity::<1>(0, |installed| Error::FdCountMismatch {
        declared: 0,
        received: installed,
        truncated: true,
    });
}

#[test]
fn max_fds_on_one_record_are_all_delivered_to_a_full_capacity() {
    let _guard = serial();
    let _watchdog = Watchdog::for_test();
    let (tx, rx) = Channel::<253>::pair().unwrap();
    let file = memfd(b"payload");
    let many = vec![file.as_fd(); 253];
    let baseline = open_fds();
    send_raw(&tx, &header(253, 0), &many);
    let mut data = [0u8; 8];
    let mut fds = Fds::<253>::new();
    let got = rx.recv(&mut data, &mut fds).unwrap();
    assert_eq!(
        got,
        Received {
            data_len: 0,
            fd_count: 253
        }
    );
    assert_eq!(open_fds(), baseline + 253);
    assert!(fds.iter().all(|fd| identity(fd) == identity(&file)));
    drop(fds);
    assert_eq!(open_fds(), baseline);
}

#[test]
fn rejected_socket_fd_releases_the_fds_in_flight_inside_it() {
    let _guard = serial();
    let _watchdog = Watchdog::for_test();
    let (tx, rx) = Channel::<2>::pair().unwrap();
    let baseline = open_fds();
    let (read_end, write_end) = rustix::pipe::pipe().unwrap();
    {
        // Inner socket pair: `inner_tx`'s record to `inner_rx` carries the
        // pipe's write end, so `inner_rx` is a socket with an fd in flight.
        let (inner_tx, inner_rx) = seqpacket_pair();
        send_raw(&inner_tx, &header(1, 0), &[write_end.as_fd()]);
        drop(write_end);
        // Unsupported version, with the socket attached.
        send_raw(&tx, b"IP\x02\x01\0\0\0\0", &[inner_rx.as_fd()]);
    }
    // Control: the write end is alive in flight, so no end-of-file yet; it
    // comes only when the receiver closes the socket it was handed.
    assert!(pipe_still_open(&read_end));

    let mut data = [0u8; 8];
    let mut fds = Fds::<2>::new();
    assert_eq!(
        rx.recv(&mut data, &mut fds),
        Err(Error::UnsupportedVersion { version: 2 })
    );
    assert!(fds.is_empty());
    assert!(
        pipe_reaches_eof(&read_end),
        "an fd in flight inside a rejected socket fd was never released"
    );
    drop(read_end);
    assert_eq!(open_fds(), baseline);
    let file = memfd(b"x");
    assert_still_usable(&tx, &rx, &file);
}

#[test]
fn socket_fd_with_fds_in_flight_is_delivered_intact() {
    let _guard = serial();
    let _watchdog = Watchdog::for_test();
    let (tx, rx) = Channel::<2>::pair().unwrap();
    let baseline = open_fds();
    let (read_end, write_end) = rustix::pipe::pipe().unwrap();
    let write_identity = identity(&write_end);
    {
        let (inner_tx, inner_rx) = seqpacket_pair();
        // First inner record lies about its fds; the second is valid and
        // carries the pipe's write end.
        send_raw(&inner_tx, &[header(1, 2).as_slice(), b"no"].concat(), &[]);
        send_raw(
            &inner_tx,
            &[header(1, 2).as_slice(), b"in"].concat(),
            &[write_end.as_fd()],
        );
        drop(write_end);
        send_raw(&tx, &header(1, 0), &[inner_rx.as_fd()]);
    }
    let mut data = [0u8; 8];
    let mut fds = Fds::<2>::new();
    let got = rx.recv(&mut data, &mut fds).unwrap();
    assert_eq!(got.fd_count, 1);
    let inner =
        Channel::<1>::adopt(fds.pop().unwrap()).expect("delivered fd is a SEQPACKET socket");
    let mut inner_fds = Fds::<1>::new();
    assert_eq!(
        inner.recv(&mut data, &mut inner_fds),
        Err(Error::FdCountMismatch {
            declared: 1,
            received: 0,
            truncated: false
        })
    );
    let got = inner.recv(&mut data, &mut inner_fds).unwrap();
    assert_eq!(&data[..got.data_len], b"in");
    assert_eq!(identity(&inner_fds[0]), write_identity);
    assert!(pipe_still_open(&read_end));
    // The inner socket's peer is gone: its queue is drained, so Disconnected
    // (and recv closed the fds it was handed, the write end included).
    assert_eq!(
        inner.recv(&mut data, &mut inner_fds),
        Err(Error::Disconnected)
    );
    assert!(inner_fds.is_empty());
    drop(inner);
    assert!(pipe_reaches_eof(&read_end));
    drop(read_end);
    assert_eq!(open_fds(), baseline);
}

#[test]
fn rejected_socket_fd_in_a_reference_cycle_is_collected() {
    let _guard = serial();
    let _watchdog = Watchdog::for_test();
    let (tx, rx) = Channel::<2>::pair().unwrap();
    let baseline = open_fds();
    let (read_end, write_end) = rustix::pipe::pipe().unwrap();
    {
        let (inner_a, inner_b) = seqpacket_pair();
        // inner_b's queue holds the pipe's write end and inner_b itself;
        // inner_a's queue holds inner_a: once every fd in a process is
        // closed, only the kernel's unix garbage collector can free them.
        send_raw(&inner_a, &header(1, 0), &[write_end.as_fd()]);
        send_raw(&inner_a, &header(1, 0), &[inner_b.as_fd()]);
        send_raw(&inner_b, &header(1, 0), &[inner_a.as_fd()]);
        drop(write_end);
        // Bad magic, with both ends of the cycle attached.
        send_raw(
            &tx,
            b"XX\x01\x02\0\0\0\0",
            &[inner_a.as_fd(), inner_b.as_fd()],
        );
    }
    assert!(pipe_still_open(&read_end));
    let mut data = [0u8; 8];
    let mut fds = Fds::<2>::new();
    assert_eq!(
        rx.recv(&mut data, &mut fds),
        Err(Error::BadMagic { found: *b"XX" })
    );
    assert!(fds.is_empty());
    assert_eq!(open_fds(), baseline + 1);
    // The kernel's unix garbage collector runs when a socket with sockets
    // in flight is released. Release one, as a busy system soon would:
    // without it the test depends on other processes passing sockets.
    {
        let (nudge_a, nudge_b) = seqpacket_pair();
        send_raw(&nudge_a, &header(1, 0), &[nudge_b.as_fd()]);
    }
    assert!(
        pipe_reaches_eof(&read_end),
        "the cycle was never collected: a copy of a socket fd is still open"
    );
    let file = memfd(b"x");
    assert_still_usable(&tx, &rx, &file);
}

/// What a receiver of capacity `N` with `SO_PASSCRED` enabled does with
/// records carrying `k` fds: one line per `k`, `Ok` or the error.
fn passcred_outcomes<const N: usize>(sender_adds_credentials: bool) -> Vec<(usize, String)> {
    let (tx, rx) = Channel::<N>::pair().unwrap();
    sockopt::set_socket_passcred(&rx, true).unwrap();
    let file = memfd(b"creds");
    let baseline = open_fds();
    let mut outcomes = Vec::new();
    let mut counts = vec![0, 1, 2, N / 2, N];
    counts.retain(|&k| k <= N);
    counts.sort_unstable();
    counts.dedup();
    for k in counts {
        let fds = vec![file.as_fd(); k];
        let record = [header(k as u8, 5).as_slice(), b"creds"].concat();
        if sender_adds_credentials {
            send_raw_with_credentials(&tx, &record, &fds);
        } else {
            send_raw(&tx, &record, &fds);
        }
        let mut data = [0u8; 16];
        let mut got = Fds::<N>::new();
        match rx.recv(&mut data, &mut got) {
            Ok(received) => {
                // Correct delivery: the data and every fd, nothing else.
                assert_eq!(
                    received,
                    Received {
                        data_len: 5,
                        fd_count: k
                    }
                );
                assert_eq!(&data[..5], b"creds");
                assert_eq!(got.len(), k);
                assert!(got.iter().all(|fd| identity(fd) == identity(&file)));
                assert_eq!(open_fds(), baseline + k);
                outcomes.push((k, "Ok".to_string()));
            }
            Err(error) => {
                assert!(error.is_rejected_record(), "k={k}: {error:?}");
                outcomes.push((k, format!("{error:?}")));
            }
        }
        drop(got);
        assert_eq!(
            open_fds(),
            baseline,
            "capacity {N}, {k} fds: fd left behind"
        );
    }
    // The channel works again as soon as SO_PASSCRED is off.
    sockopt::set_socket_passcred(&rx, false).unwrap();
    assert_still_usable(&tx, &rx, &file);
    outcomes
}

#[test]
fn scm_credentials_from_the_peer_are_dropped_without_so_passcred() {
    let _guard = serial();
    let _watchdog = Watchdog::for_test();
    let (tx, rx) = Channel::<2>::pair().unwrap();
    // The hostile end may enable SO_PASSCRED on its own socket: only the
    // receiver's setting decides whether credentials are delivered.
    sockopt::set_socket_passcred(&tx, true).unwrap();
    let file = memfd(b"creds");
    let baseline = open_fds();
    let mut data = [0u8; 16];
    let mut got = Fds::<2>::new();
    send_raw_with_credentials(&tx, &header(0, 0), &[]);
    assert_eq!(
        rx.recv(&mut data, &mut got),
        Ok(Received {
            data_len: 0,
            fd_count: 0
        })
    );
    send_raw_with_credentials(&tx, &header(2, 0), &[file.as_fd(), file.as_fd()]);
    assert_eq!(
        rx.recv(&mut data, &mut got),
        Ok(Received {
            data_len: 0,
            fd_count: 2
        })
    );
    assert!(got.iter().all(|fd| identity(fd) == identity(&file)));
    drop(got);
    assert_eq!(open_fds(), baseline);
}

#[test]
fn scm_credentials_with_so_passcred_is_delivered_or_rejected_without_leaks() {
    let _guard = serial();
    let _watchdog = Watchdog::for_test();
    for sender_adds_credentials in [false, true] {
        let table = [
            (1, passcred_outcomes::<1>(sender_adds_credentials)),
            (4, passcred_outcomes::<4>(sender_adds_credentials)),
            (8, passcred_outcomes::<8>(sender_adds_credentials)),
            (10, passcred_outcomes::<10>(sender_adds_credentials)),
            (16, passcred_outcomes::<16>(sender_adds_credentials)),
        ];
        for (capacity, outcomes) in table {
            for (k, outcome) in outcomes {
                println!(
                    "SO_PASSCRED, sender adds SCM_CREDENTIALS: {sender_adds_credentials}, \
                     capacity {capacity}, {k} fds: {outcome}"
                );
            }
        }
    }
}

/// With `SO_PASSCRED` on (the channel turns it on after its first 0-byte
/// read), the kernel writes an `SCM_CREDENTIALS` message
/// (`CMSG_SPACE(sizeof(struct ucred))`, 32 bytes on 64-bit, 24 on 32-bit)
/// first into the crate's control buffer, which has room for it besides
/// the `CMSG_SPACE(4 * N)` of the fds: every record the capacity holds is
/// delivered; past it, `TooManyFds` with the fds that did fit closed.
#[test]
fn with_so_passcred_on_every_capacity_still_receives_its_fds() {
    fn predicted(capacity: usize, k: usize) -> String {
        let space = common::platform::control_space(capacity);
        let credentials = common::platform::cmsg_space(size_of::<libc::ucred>());
        // Without room for the credentials the kernel truncates every record;
        // with no fds declared and none received, the header is surely wrong.
        if space < credentials && k == 0 {
            return "FdCountMismatch { declared: 0, received: 0, truncated: true }".to_string();
        }
        let fit = common::platform::fds_fitting_in(space.saturating_sub(credentials));
        if space >= credentials && k <= fit {
            "Ok".to_string()
        } else if k > capacity {
            format!("TooManyFds {{ count: {k}, capacity: {capacity} }}")
        } else {
            format!("FdsTruncated {{ declared: {k}, received: {fit} }}")
        }
    }
    let _guard = serial();
    let _watchdog = Watchdog::for_test();
    let table = [
        (1, passcred_outcomes::<1>(false)),
        (2, passcred_outcomes::<2>(false)),
        (4, passcred_outcomes::<4>(false)),
        (8, passcred_outcomes::<8>(false)),
        (10, passcred_outcomes::<10>(false)),
        (16, passcred_outcomes::<16>(false)),
    ];
    for (capacity, outcomes) in table {
        for (k, outcome) in outcomes {
            assert_eq!(
                outcome,
                predicted(capacity, k),
                "capacity {capacity}, {k} fds"
            );
        }
    }
}

#[test]
fn zero_byte_record_from_a_live_peer_is_short_not_disconnected() {
    let _guard = serial();
    let _watchdog = Watchdog::for_test();
    let (tx, rx) = Channel::<2>::pair().unwrap();
    let file = memfd(b"zero");
    let baseline = open_fds();
    let mut data = [0u8; 16];
    let mut fds = Fds::<2>::new();

    // Control: on SOCK_SEQPACKET a raw recvmsg reports this record exactly
    // like end-of-file (0 bytes), so the crate must tell the two apart.
    send_raw(&tx, &[], &[]);
    let (bytes, raw_fds) = raw_recv_fds(&rx, 2);
    assert_eq!((bytes, raw_fds.len()), (0, 0));

    // Every receive flavour.
    send_raw(&tx, &[], &[]);
    assert_eq!(
        rx.recv(&mut data, &mut fds),
        Err(Error::ShortRecord { len: 0 })
    );
    send_raw(&tx, &[], &[]);
    assert_eq!(
        rx.try_recv(&mut data, &mut fds),
        Err(Error::ShortRecord { len: 0 })
    );
    send_raw(&tx, &[], &[]);
    assert_eq!(
        rx.recv_timeout(&mut data, &mut fds, std::time::Duration::from_secs(30)),
        Err(Error::ShortRecord { len: 0 })
    );
    // A 0-byte record with fds: rejected, and its fds closed.
    send_raw(&tx, &[], &[file.as_fd(), file.as_fd()]);
    assert_eq!(
        rx.recv(&mut data, &mut fds),
        Err(Error::ShortRecord { len: 0 })
    );
    assert!(fds.is_empty());
    assert_eq!(open_fds(), baseline);

    // Good messages still arrive, in order, after the empty records.
    tx.send(b"after", &[file.as_fd()]).unwrap();
    let got = rx.recv(&mut data, &mut fds).unwrap();
    assert_eq!(&data[..got.data_len], b"after");
    assert_eq!(identity(&fds[0]), identity(&file));
    fds.clear();

    // An empty record queued before a good one, then the peer closes: the
    // empty record is still malformed (something is queued behind it), the
    // good one arrives, and only then is the peer reported gone.
    send_raw(&tx, &[], &[]);
    tx.send(b"last", &[]).unwrap();
    drop(tx);
    assert_eq!(
        rx.recv(&mut data, &mut fds),
        Err(Error::ShortRecord { len: 0 })
    );
    let got = rx.recv(&mut data, &mut fds).unwrap();
    assert_eq!(&data[..got.data_len], b"last");
    assert_eq!(rx.recv(&mut data, &mut fds), Err(Error::Disconnected));
    assert_eq!(rx.recv(&mut data, &mut fds), Err(Error::Disconnected));
    assert_eq!(rx.try_recv(&mut data, &mut fds), Err(Error::Disconnected));
    assert_eq!(open_fds(), baseline - 1); // tx is closed
}

/// The records of the flood, in a fixed rotation: valid ones carrying a
/// sequence number and 0-2 fds, and every kind of malformed one with fds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum FloodKind {
    Valid,
    BadMagic,
    Empty,
    Short,
    Oversized,
    MaxFds,
}

const ROTATION: [FloodKind; 10] = [
    FloodKind::Valid,
    FloodKind::BadMagic,
    FloodKind::Valid,
    FloodKind::Empty,
    FloodKind::Valid,
    FloodKind::Short,
    FloodKind::Valid,
    FloodKind::Oversized,
    FloodKind::Valid,
    FloodKind::MaxFds,
];

const FLOOD_DATA: usize = 64;

#[test]
fn flood_of_records_keeps_memory_and_fds_bounded() {
    const RECORDS: usize = 100_000;
    const WARM_UP: usize = 10_000;
    let _guard = serial();
    // Kicked at every record: a flood stuck for this long has lost one.
    let watchdog = Watchdog::new(
        "flood_of_records_keeps_memory_and_fds_bounded",
        PROGRESS_BOUND,
    );
    let (tx, rx) = Channel::<2>::pair().unwrap();
    let file = memfd(b"flood");
    // Valid records carry these two, in this order: a swap would show.
    let pair = [memfd(b"flood 0"), memfd(b"flood 1")];
    let pair_identities = [identity(&pair[0]), identity(&pair[1])];
    let mut data = [0u8; FLOOD_DATA];
    let mut fds = Fds::<2>::new();
    let mut counts = std::collections::HashMap::<FloodKind, usize>::new();
    let mut next_seq = 0u64;
    let mut warm = None;
    let mut records = 0usize;

    let sent_valid = std::thread::scope(|scope| {
        // The peer: as fast as it can send, held back only by the socket
        // buffer.
        let flooder = scope.spawn(|| {
            let many = vec![file.as_fd(); 253];
            let two = [pair[0].as_fd(), pair[1].as_fd()];
            let mut seq = 0u64;
            for i in 0..RECORDS {
                match ROTATION[i % ROTATION.len()] {
                    FloodKind::Valid => {
                        let fds = &two[..i % 3];
                        let record =
                            [header(fds.len() as u8, 8).as_slice(), &seq.to_le_bytes()].concat();
                        send_raw(&tx, &record, fds);
                        seq += 1;
                    }
                    FloodKind::BadMagic => send_raw(&tx, b"PI\x01\x02\0\0\0\0", &many[..2]),
                    FloodKind::Empty => send_raw(&tx, &[], &[]),
                    FloodKind::Short => send_raw(&tx, b"IP\x01", &many[..1]),
                    FloodKind::Oversized => {
                        let record = [header(1, 200).as_slice(), &[7u8; 200]].concat();
                        send_raw(&tx, &record, &many[..1]);
                    }
                    FloodKind::MaxFds => send_raw(&tx, &header(253, 0), &many),
                }
            }
            // A final valid record marks the end.
            let end = [header(0, 8).as_slice(), &u64::MAX.to_le_bytes()].concat();
            send_raw(&tx, &end, &[]);
            seq
        });

        // A failed check below must not leave the flooder blocked in
        // sendmsg on a full socket, with the scope joining it for ever:
        // shutting the socket down wakes it with EPIPE.
        let _unblock = ShutdownOnPanic(rx.as_fd());
        loop {
            let kind = match rx.recv(&mut data, &mut fds) {
                Ok(got) => {
                    assert_eq!(got.data_len, 8);
                    let seq = u64::from_le_bytes(data[..8].try_into().unwrap());
                    if seq == u64::MAX {
                        break;
                    }
                    assert_eq!(seq, next_seq, "valid records lost, duplicated or reordered");
                    next_seq += 1;
                    for (fd, expected) in fds.iter().zip(pair_identities) {
                        assert_eq!(identity(fd), expected, "record #{seq}: wrong fd");
                    }
                    FloodKind::Valid
                }
                Err(Error::BadMagic { found }) => {
                    assert_eq!(found, *b"PI");
                    FloodKind::BadMagic
                }
                Err(Error::ShortRecord { len: 0 }) => FloodKind::Empty,
                Err(Error::ShortRecord { len: 3 }) => FloodKind::Short,
                Err(Error::Truncated {
                    len: 200,
                    capacity: FLOOD_DATA,
                }) => FloodKind::Oversized,
                Err(Error::TooManyFds {
                    count: 253,
                    capacity: 2,
                }) => FloodKind::MaxFds,
                Err(other) => panic!("unexpected {other:?} after {records} records"),
            };
            assert!(kind == FloodKind::Valid || fds.is_empty());
            *counts.entry(kind).or_default() += 1;
            records += 1;
            watchdog.kick();
            if records == WARM_UP {
                fds.clear();
                warm = Some((open_fds(), rss_kib()));
            }
        }
        flooder.join().unwrap()
    });
    fds.clear();
    let (fds_warm, rss_warm) = warm.unwrap();
    let fds_end = open_fds();
    let rss_end = rss_kib();
    println!(
        "flood: {records} records {counts:?}; fds after warm-up {fds_warm}, at end {fds_end}; \
         VmRSS after warm-up {rss_warm} KiB, at end {rss_end} KiB"
    );
    assert_eq!(records, RECORDS);
    assert_eq!(next_seq, sent_valid);
    for kind in ROTATION {
        let expected = RECORDS / ROTATION.len() * ROTATION.iter().filter(|&&k| k == kind).count();
        assert_eq!(counts[&kind], expected, "{kind:?}");
    }
    assert_eq!(fds_end, fds_warm, "fds leaked during the flood");
    // The crate allocates nothing; allow 1 MiB for the allocator and the
    // test harness. A leak of 11 bytes per record would exceed it.
    assert!(
        rss_end <= rss_warm + 1024,
        "VmRSS grew from {rss_warm} KiB to {rss_end} KiB during the flood"
    );
    // Nothing else is queued, and the peer's hang-up is reported.
    drop(tx);
    assert_eq!(rx.recv(&mut data, &mut fds), Err(Error::Disconnected));
}
