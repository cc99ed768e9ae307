//! Every way a received record is rejected. Each record is sent raw (with
//! `common::send_raw`, bypassing the crate's sender), carries real fds where
//! that makes sense, and is followed by a good message that must arrive
//! intact. The good message is queued BEFORE the rejected record is
//! received and is then taken with `try_recv`, so a rejection that also
//! consumed the record after it fails here (and cannot hang). No fd may
//! leak: the fds that came with a rejected record are closed by the receive
//! that rejected it.
//!
//! `/proc/self/fd` counts the whole process, so every test takes
//! `common::serial()` first.

mod common;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use common::platform::{self, FdLimit};
use common::{Watchdog, header, identity, memfd, open_fds, read_all, send_raw, serial};
use ipc_unixsocket::{Channel, Error, Received};

const GOOD: &[u8] = b"a good message after the rejected record";

/// `count` distinct memfds, each holding its own index.
fn memfds(count: usize) -> Vec<OwnedFd> {
    (0..count)
        .map(|i| memfd(format!("file {i}").as_bytes()))
        .collect()
}

fn borrow(fds: &[OwnedFd]) -> Vec<BorrowedFd<'_>> {
    fds.iter().map(AsFd::as_fd).collect()
}

/// A header followed by `data_len` bytes of data.
fn record(head: [u8; 8], data_len: usize) -> Vec<u8> {
    let mut bytes = head.to_vec();
    bytes.extend((0..data_len).map(|i| i as u8));
    bytes
}

/// Queues a good message (with one fd when the channel carries any) behind
/// whatever `from` has queued already. Returns the sender's copy of its fd.
fn queue_good_message<const N: usize>(from: &Channel<N>) -> OwnedFd {
    let file = memfd(b"the good message's fd");
    let sent: &[BorrowedFd<'_>] = if N > 0 { &[file.as_fd()] } else { &[] };
    from.send(GOOD, sent).expect("send the good message");
    file
}

/// Checks that the good message queued by [`queue_good_message`] is the
/// next record, intact and alone. It is already queued, so `try_recv`: a
/// receive that swallowed it makes this fail with `WouldBlock` at once.
fn assert_good_message_arrives<const N: usize>(to: &Channel<N>, file: &OwnedFd) {
    let mut data = [0u8; 64];
    let mut fds = heapless::Vec::<OwnedFd, N>::new();
    let got = to
        .try_recv(&mut data, &mut fds)
        .expect("the good message queued after the rejected record");
    assert_eq!(
        got,
        Received {
            data_len: GOOD.len(),
            fd_count: usize::from(N > 0)
        }
    );
    assert_eq!(&data[..got.data_len], GOOD);
    if N > 0 {
        assert_eq!(identity(&fds[0]), identity(file));
        assert_eq!(read_all(fds[0].as_fd()), b"the good message's fd");
    }
    assert_eq!(to.try_recv(&mut data, &mut fds), Err(Error::WouldBlock));
}

/// Sends `bytes` as one raw record with `fds_sent` fresh memfds to a
/// `Channel<N>`, queues a good message behind it, receives the record into
/// a `data_capacity`-byte buffer, and checks that it is rejected with
/// `expected`, that the fds it carried are closed, and that the good
/// message comes next. The caller holds the `serial()` guard.
fn assert_rejected<const N: usize>(
    bytes: &[u8],
    fds_sent: usize,
    data_capacity: usize,
    expected: Error,
) {
    assert_rejected_with::<N, ()>(|| (), bytes, fds_sent, data_capacity, expected);
}

/// [`assert_rejected`], with `during` held for the receive of the rejected
/// record alone: made right before it, dropped right after it.
fn assert_rejected_with<const N: usize, G>(
    during: impl Fn() -> G,
    bytes: &[u8],
    fds_sent: usize,
    data_capacity: usize,
    expected: Error,
) {
    assert!(expected.is_rejected_record());
    let baseline = open_fds();
    let (raw, receiver) = Channel::<N>::pair().unwrap();
    let files = memfds(fds_sent);
    send_raw(&raw, bytes, &borrow(&files));
    let good = queue_good_message(&raw);
    // From here the record's fds exist only in flight: receiving installs
    // them in this process, and rejecting must close them again.
    drop(files);
    let queued = open_fds();

    let mut data = vec![0u8; data_capacity];
    let mut fds = heapless::Vec::<OwnedFd, N>::new();
    let held = during();
    let got = receiver.recv(&mut data, &mut fds);
    drop(held);
    assert_eq!(
        got,
        Err(expected),
        "record {bytes:02x?} with {fds_sent} fds into Channel<{N}> and {data_capacity} bytes"
    );
    assert!(fds.is_empty(), "a rejected record hands out no fds");
    assert_eq!(
        open_fds(),
        queued,
        "every fd of the rejected record ({fds_sent} sent) is closed"
    );

    assert_good_message_arrives(&receiver, &good);
    drop((raw, receiver, good));
    assert_eq!(open_fds(), baseline, "nothing leaked");
}

#[test]
fn accepts_a_valid_raw_record() {
    // The yardstick for every rejection below: the same raw path with a
    // correct header delivers data and fds.
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let baseline = open_fds();
    let (raw, receiver) = Channel::<4>::pair().unwrap();
    let files = memfds(3);
    send_raw(&raw, &record(header(3, 5), 5), &borrow(&files));
    let mut data = [0u8; 16];
    let mut fds = heapless::Vec::<OwnedFd, 4>::new();
    assert_eq!(
        receiver.recv(&mut data, &mut fds),
        Ok(Received {
            data_len: 5,
            fd_count: 3
        })
    );
    assert_eq!(&data[..5], &[0, 1, 2, 3, 4]);
    for (sent, got) in files.iter().zip(&fds) {
        assert_eq!(identity(got), identity(sent));
    }
    drop((files, fds, raw, receiver));
    assert_eq!(open_fds(), baseline);
}

#[test]
fn rejects_empty_record_from_live_peer_as_short_record() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    // A 0-byte record reads like end-of-file on SOCK_SEQPACKET, but the peer
    // is still there: this is a short record, not a disconnection.
    assert_rejected::<1>(&[], 0, 16, Error::ShortRecord { len: 0 });
    assert_rejected::<0>(&[], 0, 16, Error::ShortRecord { len: 0 });
    // Through try_recv too.
    let (raw, receiver) = Channel::<1>::pair().unwrap();
    send_raw(&raw, &[], &[]);
    let good = queue_good_message(&raw);
    let mut fds = heapless::Vec::<OwnedFd, 1>::new();
    assert_eq!(
        receiver.try_recv(&mut [0; 16], &mut fds),
        Err(Error::ShortRecord { len: 0 })
    );
    assert_good_message_arrives(&receiver, &good);
}

#[test]
fn rejects_short_records_and_closes_their_fds() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let valid = header(0, 0);
    for len in 0..8 {
        assert_rejected::<4>(&valid[..len], 2, 16, Error::ShortRecord { len });
        assert_rejected::<4>(&valid[..len], 0, 16, Error::ShortRecord { len });
    }
    // Shortness comes first, whatever the bytes say.
    assert_rejected::<4>(b"XX\x07", 1, 16, Error::ShortRecord { len: 3 });
}

#[test]
fn rejects_bad_magic_and_closes_its_fds() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    for magic in [*b"XP", *b"IQ", *b"PI", [0, 0]] {
        let mut bytes = record(header(1, 3), 3);
        bytes[..2].copy_from_slice(&magic);
        assert_rejected::<2>(&bytes, 1, 16, Error::BadMagic { found: magic });
    }
}

#[test]
fn rejects_unsupported_version_and_closes_its_fds() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    for version in [0, 2, 255] {
        let mut bytes = record(header(2, 4), 4);
        bytes[2] = version;
        assert_rejected::<2>(&bytes, 2, 16, Error::UnsupportedVersion { version });
    }
}

#[test]
fn rejects_data_len_larger_than_record_and_closes_its_fds() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    assert_rejected::<2>(
        &record(header(1, 10), 5),
        1,
        16,
        Error::LengthMismatch {
            declared: 10,
            actual: 5,
        },
    );
    assert_rejected::<2>(
        &record(header(0, u32::MAX), 0),
        0,
        16,
        Error::LengthMismatch {
            declared: u32::MAX,
            actual: 0,
        },
    );
}

#[test]
fn rejects_data_len_smaller_than_record_and_closes_its_fds() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    assert_rejected::<2>(
        &record(header(1, 3), 5),
        1,
        16,
        Error::LengthMismatch {
            declared: 3,
            actual: 5,
        },
    );
    assert_rejected::<2>(
        &record(header(2, 0), 1),
        2,
        16,
        Error::LengthMismatch {
            declared: 0,
            actual: 1,
        },
    );
}

#[test]
fn rejects_fd_count_mismatch_and_closes_its_fds() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    // Fewer fds than declared.
    assert_rejected::<4>(
        &record(header(2, 1), 1),
        1,
        16,
        Error::FdCountMismatch {
            declared: 2,
            received: 1,
            truncated: false,
        },
    );
    assert_rejected::<4>(
        &record(header(1, 0), 0),
        0,
        16,
        Error::FdCountMismatch {
            declared: 1,
            received: 0,
            truncated: false,
        },
    );
    // More fds than declared, within the capacity.
    assert_rejected::<4>(
        &record(header(0, 2), 2),
        1,
        16,
        Error::FdCountMismatch {
            declared: 0,
            received: 1,
            truncated: false,
        },
    );
    assert_rejected::<4>(
        &record(header(3, 2), 2),
        4,
        16,
        Error::FdCountMismatch {
            declared: 3,
            received: 4,
            truncated: false,
        },
    );
    // More fds than declared, beyond the capacity and the control buffer's
    // room past it: the kernel delivers what fits and sets MSG_CTRUNC
    // (`truncated`); the header declares no more than that, so it lies.
    let sent = platform::fds_fitting(4) + 1;
    let (received, truncated) = platform::delivery(sent, 4);
    assert!(truncated && received > 3);
    assert_rejected::<4>(
        &record(header(3, 2), 2),
        sent,
        16,
        Error::FdCountMismatch {
            declared: 3,
            received,
            truncated: true,
        },
    );
    // Past the capacity but within that room: every fd arrives, no
    // MSG_CTRUNC, so the count is exact (and the header wrong).
    let sent = platform::fds_fitting(4);
    assert_rejected::<4>(
        &record(header(3, 2), 2),
        sent,
        16,
        Error::FdCountMismatch {
            declared: 3,
            received: sent,
            truncated: false,
        },
    );
}

#[test]
fn rejects_truncated_record_with_its_real_length_and_closes_its_fds() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    assert_rejected::<2>(
        &record(header(2, 100), 100),
        2,
        16,
        Error::Truncated {
            len: 100,
            capacity: 16,
        },
    );
    assert_rejected::<2>(
        &record(header(0, 17), 17),
        0,
        16,
        Error::Truncated {
            len: 17,
            capacity: 16,
        },
    );
    assert_rejected::<2>(
        &record(header(1, 1), 1),
        1,
        0,
        Error::Truncated {
            len: 1,
            capacity: 0,
        },
    );
    // The boundary: data of exactly the buffer's size is not truncated.
    let (raw, receiver) = Channel::<2>::pair().unwrap();
    send_raw(&raw, &record(header(0, 16), 16), &[]);
    let mut fds = heapless::Vec::<OwnedFd, 2>::new();
    assert_eq!(
        receiver
            .recv(&mut [0; 16], &mut fds)
            .map(|got| got.data_len),
        Ok(16)
    );
}

#[test]
fn rejects_too_many_fds_via_msg_ctrunc_and_closes_them() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    // More fds than the control buffer holds (the capacity, the room for
    // credentials and the alignment slack): the kernel installs what fits
    // and sets MSG_CTRUNC; the header's count cannot be refuted and is over
    // the capacity.
    let fit = platform::fds_fitting(4);
    for sent in [fit + 1, fit + 6] {
        assert_eq!(platform::delivery(sent, 4), (fit, true));
        assert_rejected::<4>(
            &record(header(sent as u8, 5), 5),
            sent,
            16,
            Error::TooManyFds {
                count: sent,
                capacity: 4,
            },
        );
    }
}

/// Space for one `SCM_RIGHTS` fd exactly: `CMSG_SPACE(4)` bytes, aligned
/// for `cmsghdr`.
#[cfg(target_pointer_width = "64")]
#[repr(C, align(8))]
struct OneFdSpace([std::mem::MaybeUninit<u8>; 24]);

#[cfg(target_pointer_width = "64")]
#[test]
fn kernel_delivers_two_fds_into_the_alignment_slack_of_one() {
    // The alignment slack, checked against the kernel directly: a control
    // buffer of CMSG_SPACE(4) = 24 bytes on 64-bit receives two fds and no
    // MSG_CTRUNC. (The crate's buffer adds room for credentials to that:
    // see the next test.)
    use rustix::io::IoSliceMut;
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, recvmsg};

    let _serial = serial();

    let _watchdog = Watchdog::for_test();
    assert_eq!(
        std::mem::size_of::<OneFdSpace>(),
        rustix::cmsg_space!(ScmRights(1)) - std::mem::size_of::<usize>(),
        "CMSG_SPACE(sizeof(int)) without rustix's extra alignment unit"
    );
    let (raw, receiver) = Channel::<1>::pair().unwrap();
    let files = memfds(2);
    send_raw(&raw, &record(header(2, 0), 0), &borrow(&files));

    let mut space = OneFdSpace([std::mem::MaybeUninit::uninit(); 24]);
    let mut control = RecvAncillaryBuffer::new(&mut space.0);
    let mut head = [0u8; 8];
    let msg = recvmsg(
        &receiver,
        &mut [IoSliceMut::new(&mut head)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .unwrap();
    assert!(!msg.flags.contains(ReturnFlags::CTRUNC));
    let mut received = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            received.extend(rights);
        }
    }
    assert_eq!(received.len(), 2);
    assert_eq!(identity(&received[1]), identity(&files[1]));
}

#[test]
fn rejects_too_many_fds_in_alignment_slack_and_closes_them() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    // A Channel<1>'s control buffer (CMSG_SPACE(12) + CMSG_SPACE(4): room
    // for credentials and one fd, plus the alignment slack on 64-bit) holds
    // more fds than one while no credentials arrive, so the kernel delivers
    // them without MSG_CTRUNC; the receiver must count the extra ones,
    // close them and reject.
    assert_eq!(platform::delivery(2, 1), (2, false));
    assert_rejected::<1>(
        &record(header(2, 3), 3),
        2,
        16,
        Error::TooManyFds {
            count: 2,
            capacity: 1,
        },
    );
    assert_eq!(platform::delivery(4, 3), (4, false));
    assert_rejected::<3>(
        &record(header(4, 0), 0),
        4,
        16,
        Error::TooManyFds {
            count: 4,
            capacity: 3,
        },
    );
    // As many as the buffer holds: all of them arrive, counted exactly.
    let fit = platform::fds_fitting(1);
    assert_rejected::<1>(
        &record(header(fit as u8, 0), 0),
        fit,
        16,
        Error::TooManyFds {
            count: fit,
            capacity: 1,
        },
    );
}

#[test]
fn rejects_fd_count_mismatch_before_too_many_fds_in_alignment_slack() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    // A header declaring three over a record carrying two, to a Channel<1>.
    // Where the control buffer has room past the capacity (the room for
    // credentials, on every target while none arrive) both arrive without
    // MSG_CTRUNC, so exactly two were sent: FdCountMismatch comes before
    // TooManyFds in the documented order. Without such room one would
    // arrive with MSG_CTRUNC: more than one was sent, so the header's three
    // could not be refuted, and it is over the capacity: TooManyFds.
    let expected = match platform::delivery(2, 1) {
        (2, false) => Error::FdCountMismatch {
            declared: 3,
            received: 2,
            truncated: false,
        },
        (1, true) => Error::TooManyFds {
            count: 3,
            capacity: 1,
        },
        other => panic!("a Channel<1> cannot receive two fds as {other:?}"),
    };
    assert_rejected::<1>(&record(header(3, 0), 0), 2, 16, expected);
    // As many fds as the control buffer holds (its room past the capacity
    // included) arrive
    // without MSG_CTRUNC, so the count is exact and the header's three is
    // wrong: FdCountMismatch before TooManyFds, on every layout.
    let fit = platform::fds_fitting(1);
    assert_rejected::<1>(
        &record(header(3, 0), 0),
        fit,
        16,
        Error::FdCountMismatch {
            declared: 3,
            received: fit,
            truncated: false,
        },
    );
    // One fd more than the buffer holds: it is full, with MSG_CTRUNC, so at
    // least one more was sent than the header (declaring what arrived)
    // says: it lies.
    assert_rejected::<1>(
        &record(header(fit as u8, 0), 0),
        fit + 1,
        16,
        Error::FdCountMismatch {
            declared: fit as u8,
            received: fit,
            truncated: true,
        },
    );
}

#[test]
fn rejects_fds_truncated_within_capacity_and_closes_the_installed_ones() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    // With RLIMIT_NOFILE lowered so that the process can open only `free`
    // more fds, the kernel installs that many of a record's fds and cuts
    // off the rest (MSG_CTRUNC): a record declaring (and carrying) more is
    // cut short, which is FdsTruncated, not TooManyFds, as long as it is
    // within the capacity. The installed fds are closed again, and the good
    // message behind it (received with the limit restored) carries one fd.
    // The control buffer has room for every fd here, credentials or not:
    // only the limit truncates.
    const N: usize = 16;
    let free = 5;
    for sent in [free + 1, N] {
        assert_rejected_with::<N, _>(
            || FdLimit::leaving(free),
            &record(header(sent as u8, 3), 3),
            sent,
            16,
            Error::FdsTruncated {
                declared: sent as u8,
                received: free,
            },
        );
    }
    // Control: exactly as many as can be opened go through, under the same
    // limit.
    let baseline = open_fds();
    let (raw, receiver) = Channel::<N>::pair().unwrap();
    let files = memfds(free);
    send_raw(&raw, &record(header(free as u8, 3), 3), &borrow(&files));
    let mut data = [0u8; 16];
    let mut fds = heapless::Vec::<OwnedFd, N>::new();
    let limit = FdLimit::leaving(free);
    let got = receiver.recv(&mut data, &mut fds);
    drop(limit);
    assert_eq!(
        got,
        Ok(Received {
            data_len: 3,
            fd_count: free
        })
    );
    for (sent, got) in files.iter().zip(&fds) {
        assert_eq!(identity(got), identity(sent));
    }
    drop((files, fds, raw, receiver));
    assert_eq!(open_fds(), baseline);
}

#[test]
fn accepts_the_maximum_of_253_fds() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    let baseline = open_fds();
    let (raw, receiver) = Channel::<253>::pair().unwrap();
    let files = memfds(253);
    let mut data = [0u8; 16];
    let mut fds = heapless::Vec::<OwnedFd, 253>::new();

    // Raw, and through the crate's sender.
    send_raw(&raw, &record(header(253, 4), 4), &borrow(&files));
    raw.send(b"max!", &borrow(&files)).unwrap();
    for _ in 0..2 {
        assert_eq!(
            receiver.recv(&mut data, &mut fds),
            Ok(Received {
                data_len: 4,
                fd_count: 253
            })
        );
        assert_eq!(fds.len(), 253);
        for (sent, got) in files.iter().zip(&fds) {
            assert_eq!(identity(got), identity(sent));
        }
    }
    assert_eq!(read_all(fds[252].as_fd()), b"file 252");
    drop((files, fds));
    let good = queue_good_message(&raw);
    assert_good_message_arrives(&receiver, &good);
    drop((raw, receiver, good));
    assert_eq!(open_fds(), baseline);
}

#[test]
fn rejects_253_fds_over_capacity_and_closes_them() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    assert_rejected::<4>(
        &record(header(253, 1), 1),
        253,
        16,
        Error::TooManyFds {
            count: 253,
            capacity: 4,
        },
    );
    assert_rejected::<252>(
        &record(header(253, 1), 1),
        253,
        16,
        Error::TooManyFds {
            count: 253,
            capacity: 252,
        },
    );
}

#[test]
fn checks_rules_in_documented_order() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    // One record breaking every rule after the first; fixing one fault at a
    // time must reveal the next rule in order. Channel<4>, 16-byte buffer,
    // 100 data bytes, one fd more sent than the control buffer holds (what
    // fits is delivered, MSG_CTRUNC).
    let sent = platform::fds_fitting(4) + 1;
    let (received, truncated) = platform::delivery(sent, 4);
    assert!(truncated && received > 3);
    let mut bytes = record(header(3, 50), 100);
    bytes[..3].copy_from_slice(b"XX\x02");
    assert_rejected::<4>(&bytes, sent, 16, Error::BadMagic { found: *b"XX" });
    bytes[..2].copy_from_slice(b"IP");
    assert_rejected::<4>(&bytes, sent, 16, Error::UnsupportedVersion { version: 2 });
    bytes[2] = 1;
    assert_rejected::<4>(
        &bytes,
        sent,
        16,
        Error::LengthMismatch {
            declared: 50,
            actual: 100,
        },
    );
    bytes[4..8].copy_from_slice(&100u32.to_le_bytes());
    assert_rejected::<4>(
        &bytes,
        sent,
        16,
        Error::FdCountMismatch {
            declared: 3,
            received,
            truncated: true,
        },
    );
    bytes[3] = sent as u8;
    assert_rejected::<4>(
        &bytes,
        sent,
        16,
        Error::Truncated {
            len: 100,
            capacity: 16,
        },
    );
    assert_rejected::<4>(
        &bytes,
        sent,
        100,
        Error::TooManyFds {
            count: sent,
            capacity: 4,
        },
    );
    // And with the last fault fixed, the record goes through.
    let baseline = open_fds();
    let (raw, receiver) = Channel::<4>::pair().unwrap();
    let files = memfds(4);
    bytes[3] = 4;
    send_raw(&raw, &bytes, &borrow(&files));
    let mut data = [0u8; 100];
    let mut fds = heapless::Vec::<OwnedFd, 4>::new();
    assert_eq!(
        receiver.recv(&mut data, &mut fds),
        Ok(Received {
            data_len: 100,
            fd_count: 4
        })
    );
    assert_eq!(&data[..], &bytes[8..]);
    drop((files, fds, raw, receiver));
    assert_eq!(open_fds(), baseline);
}
