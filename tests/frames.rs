//! The one-segment path: `send_frame` and `recv_frame` (and `Payload`, which
//! uses them) put the same records on the wire as `send`/`recv`, and every
//! rejection rule applies to `recv_frame` exactly as to `recv`, with the
//! rejected record's fds closed and the next record intact.

mod common;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use common::platform::FdLimit;
use common::{header, identity, memfd, open_fds, read_all, send_raw, serial};
use ipc_unixsocket::{Channel, Error, HEADER_LEN, Payload, Received};

const CAP: usize = 2;
const GOOD: &[u8] = b"the good message queued behind";

/// `count` distinct memfds.
fn memfds(count: usize) -> Vec<OwnedFd> {
    (0..count).map(|i| memfd(&[i as u8])).collect()
}

fn borrow(fds: &[OwnedFd]) -> Vec<BorrowedFd<'_>> {
    fds.iter().map(AsFd::as_fd).collect()
}

/// How a rejection case prepares the receive.
#[derive(Clone, Copy)]
enum Setup {
    Plain,
    /// `RLIMIT_NOFILE` lowered for the receive of the rejected record, so
    /// that only this many more fds can be installed (`MSG_CTRUNC` past
    /// them).
    FdLimit(usize),
}

/// Sends `bytes` raw with `fds_sent` memfds, then a good message with one
/// fd, both before receiving; `recv_frame` into a frame with `data_room`
/// bytes behind the header must reject the first with `expected`, close
/// its fds, and deliver the good message intact.
fn assert_frame_rejects(
    bytes: &[u8],
    fds_sent: usize,
    data_room: usize,
    setup: Setup,
    expected: Error,
) {
    assert!(expected.is_rejected_record());
    let _serial = serial();
    let good_fd = memfd(b"good");
    let baseline = open_fds();
    {
        let (raw, receiver) = Channel::<CAP>::pair().expect("socketpair");
        let files = memfds(fds_sent);
        send_raw(&raw, bytes, &borrow(&files));
        drop(files);
        raw.send(GOOD, &[good_fd.as_fd()])
            .expect("queue the good message");

        let mut frame = vec![0u8; HEADER_LEN + data_room.max(GOOD.len())];
        let mut fds = heapless::Vec::<OwnedFd, CAP>::new();
        let limit = match setup {
            Setup::Plain => None,
            Setup::FdLimit(free) => Some(FdLimit::leaving(free)),
        };
        let rejected = receiver.recv_frame(&mut frame[..HEADER_LEN + data_room], &mut fds);
        drop(limit);
        assert_eq!(rejected, Err(expected));
        assert!(fds.is_empty(), "fds left after {expected:?}");

        let got = receiver.try_recv_frame(&mut frame, &mut fds);
        assert_eq!(
            got,
            Ok(Received {
                data_len: GOOD.len(),
                fd_count: 1
            }),
            "the record behind {expected:?}"
        );
        assert_eq!(&frame[HEADER_LEN..][..GOOD.len()], GOOD);
        assert_eq!(identity(&fds[0]), identity(&good_fd));
        assert_eq!(
            receiver.try_recv_frame(&mut frame, &mut fds),
            Err(Error::WouldBlock)
        );
    }
    assert_eq!(open_fds(), baseline, "an fd leaked after {expected:?}");
}

#[test]
fn short_record() {
    let expected = Error::ShortRecord { len: 5 };
    assert_frame_rejects(b"IP\x01\x00\x00", 1, 16, Setup::Plain, expected);
}

#[test]
fn empty_record_from_a_live_peer() {
    let expected = Error::ShortRecord { len: 0 };
    assert_frame_rejects(b"", 1, 16, Setup::Plain, expected);
}

#[test]
fn bad_magic() {
    let mut bytes = header(1, 0);
    bytes[..2].copy_from_slice(b"XY");
    let expected = Error::BadMagic { found: *b"XY" };
    assert_frame_rejects(&bytes, 1, 16, Setup::Plain, expected);
}

#[test]
fn unsupported_version() {
    let mut bytes = header(1, 0);
    bytes[2] = 9;
    let expected = Error::UnsupportedVersion { version: 9 };
    assert_frame_rejects(&bytes, 1, 16, Setup::Plain, expected);
}

#[test]
fn length_mismatch() {
    let mut bytes = header(0, 10).to_vec();
    bytes.extend_from_slice(b"four");
    let expected = Error::LengthMismatch {
        declared: 10,
        actual: 4,
    };
    assert_frame_rejects(&bytes, 0, 16, Setup::Plain, expected);
}

#[test]
fn fd_count_mismatch() {
    let expected = Error::FdCountMismatch {
        declared: 2,
        received: 1,
        truncated: false,
    };
    assert_frame_rejects(&header(2, 0), 1, 16, Setup::Plain, expected);
}

#[test]
fn truncated_reports_the_frame_room_behind_the_header() {
    let mut bytes = header(1, 40).to_vec();
    bytes.extend_from_slice(&[7; 40]);
    let expected = Error::Truncated {
        len: 40,
        capacity: 39,
    };
    assert_frame_rejects(&bytes, 1, 39, Setup::Plain, expected);
}

#[test]
fn too_many_fds() {
    // Four fds past a capacity of two: while no credentials arrive, the
    // control buffer's room for them holds the other two (every target),
    // so all four arrive, no MSG_CTRUNC, the header's count is exact and
    // over the capacity; the crate closes all four.
    assert_eq!(common::platform::delivery(4, CAP), (4, false));
    let expected = Error::TooManyFds {
        count: 4,
        capacity: CAP,
    };
    assert_frame_rejects(&header(4, 0), 4, 16, Setup::Plain, expected);
}

#[test]
fn fds_truncated() {
    // CAP fds declared and sent, within the capacity, but the process can
    // open only one more fd (RLIMIT_NOFILE): the kernel installs one, cuts
    // off the rest (MSG_CTRUNC), and the installed one must be closed.
    let expected = Error::FdsTruncated {
        declared: CAP as u8,
        received: 1,
    };
    assert_frame_rejects(&header(CAP as u8, 0), CAP, 16, Setup::FdLimit(1), expected);
}

#[test]
fn no_header_room_is_refused_before_any_system_call() {
    let _serial = serial();
    let (a, b) = Channel::<1>::pair().expect("socketpair");
    let mut small = [0u8; HEADER_LEN - 1];
    assert_eq!(
        a.send_frame(&mut small, &[]),
        Err(Error::NoHeaderRoom {
            len: HEADER_LEN - 1
        })
    );
    a.send(b"queued", &[]).expect("send");
    let mut fds = heapless::Vec::<OwnedFd, 1>::new();
    assert_eq!(
        b.recv_frame(&mut small, &mut fds),
        Err(Error::NoHeaderRoom {
            len: HEADER_LEN - 1
        })
    );
    // Nothing was consumed: the queued message is still there.
    let mut frame = [0u8; HEADER_LEN + 8];
    assert_eq!(
        b.try_recv_frame(&mut frame, &mut fds).map(|r| r.data_len),
        Ok(6)
    );
    assert_eq!(
        b.try_recv_frame(&mut frame, &mut fds),
        Err(Error::WouldBlock)
    );
}

#[test]
fn frames_and_split_buffers_put_the_same_records_on_the_wire() {
    let _serial = serial();
    let (a, b) = Channel::<CAP>::pair().expect("socketpair");
    let files = memfds(CAP);
    let mut frame = [0u8; HEADER_LEN + 64];
    frame[HEADER_LEN..][..5].copy_from_slice(b"frame");
    a.send_frame(&mut frame[..HEADER_LEN + 5], &borrow(&files))
        .expect("send_frame");
    a.send(b"split", &borrow(&files)).expect("send");
    a.send_frame(&mut frame[..HEADER_LEN], &[])
        .expect("empty frame");

    // Received raw, all three are a header and the data, byte for byte.
    let mut raw = [0u8; 64];
    for (data, fd_count) in [(&b"frame"[..], CAP), (b"split", CAP), (b"", 0)] {
        let len = rustix::net::recv(&b, &mut raw, rustix::net::RecvFlags::empty())
            .expect("raw recv")
            .0;
        let mut expected = header(fd_count as u8, data.len() as u32).to_vec();
        expected.extend_from_slice(data);
        assert_eq!(&raw[..len], &expected[..]);
    }
    // The other way round: `send` into `recv_frame`, `send_frame` into
    // `recv`, fds intact.
    a.send(b"split", &borrow(&files)).expect("send");
    let mut fds = heapless::Vec::<OwnedFd, CAP>::new();
    let got = b.recv_frame(&mut frame, &mut fds).expect("recv_frame");
    assert_eq!(&frame[HEADER_LEN..][..got.data_len], b"split");
    assert_eq!(read_all(fds[1].as_fd()), [1]);

    frame[HEADER_LEN..][..5].copy_from_slice(b"frame");
    a.send_frame(&mut frame[..HEADER_LEN + 5], &borrow(&files))
        .expect("send_frame");
    let mut data = [0u8; 16];
    let got = b
        .recv_timeout(&mut data, &mut fds, Duration::from_secs(10))
        .expect("recv");
    assert_eq!(&data[..got.data_len], b"frame");
    assert_eq!(identity(&fds[0]), identity(&files[0]));
}

#[test]
fn recv_frame_timeout_times_out_and_then_delivers() {
    let _serial = serial();
    let (a, b) = Channel::<0>::pair().expect("socketpair");
    let mut frame = [0u8; HEADER_LEN + 4];
    let mut fds = heapless::Vec::<OwnedFd, 0>::new();
    assert_eq!(
        b.recv_frame_timeout(&mut frame, &mut fds, Duration::from_millis(1)),
        Err(Error::TimedOut)
    );
    a.send(b"late", &[]).expect("send");
    assert_eq!(
        b.recv_frame_timeout(&mut frame, &mut fds, Duration::from_secs(10))
            .map(|r| r.data_len),
        Ok(4)
    );
}

#[test]
fn payload_rejects_data_past_its_record() {
    let _serial = serial();
    let mut payload = Payload::<{ HEADER_LEN + 4 }, 0>::new();
    assert_eq!(Payload::<{ HEADER_LEN + 4 }, 0>::DATA_CAPACITY, 4);
    payload.extend_from_slice(b"abc").expect("fits");
    assert_eq!(
        payload.extend_from_slice(b"de"),
        Err(Error::SendTooLarge { len: 5 })
    );
    assert_eq!(payload.data(), b"abc", "unchanged after the refusal");
    payload.extend_from_slice(b"d").expect("fits exactly");
    assert_eq!(payload.data(), b"abcd");
}
