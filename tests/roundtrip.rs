//! Messages that go through: data and fds in both directions, the empty and
//! the largest message, `Payload`, close-on-exec, non-blocking and timed
//! receives, disconnection, `bind`'s socket check and the sender's fd limit.
//!
//! Every test that makes a blocking call holds a watchdog: a lost record
//! fails it instead of hanging the binary.

mod common;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use common::{Watchdog, identity, memfd, read_all};
use ipc_unixsocket::{Channel, Error, HEADER_LEN, Payload, Received};
use rustix::fs::{MemfdFlags, memfd_create};
use rustix::io::{FdFlags, fcntl_getfd, fcntl_setfd};
use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair, sockopt};

/// Sends `data` with `fds` from `from` and checks that `to` receives the same
/// bytes and the same files (identity and contents), in order.
fn assert_round_trip<const N: usize>(
    from: &Channel<N>,
    to: &Channel<N>,
    data: &[u8],
    fds: &[OwnedFd],
) {
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    from.send(data, &borrowed).expect("send");

    let mut buf = vec![0u8; data.len() + 16];
    let mut got_fds = heapless::Vec::<OwnedFd, N>::new();
    let got = to.recv(&mut buf, &mut got_fds).expect("recv");
    assert_eq!(
        got,
        Received {
            data_len: data.len(),
            fd_count: fds.len()
        }
    );
    assert_eq!(&buf[..got.data_len], data);
    assert_eq!(got_fds.len(), fds.len());
    for (sent, received) in fds.iter().zip(&got_fds) {
        assert_eq!(identity(received), identity(sent), "same file, same order");
        assert_eq!(read_all(received.as_fd()), read_all(sent.as_fd()));
    }
}

#[test]
fn round_trips_data_and_fds_in_both_directions() {
    let _watchdog = Watchdog::for_test();
    let (a, b) = Channel::<4>::pair().unwrap();
    let files = [memfd(b"first"), memfd(b"second file"), memfd(b"")];
    // Distinct files, so an fd delivered in the wrong slot would be noticed.
    assert_ne!(identity(&files[0]), identity(&files[1]));

    assert_round_trip(&a, &b, b"hello, worker", &files);
    assert_round_trip(&b, &a, b"hello, pipeline", &files[1..]);
    assert_round_trip(&a, &b, b"data only", &[]);
    let four = [memfd(b"1"), memfd(b"22"), memfd(b"333"), memfd(b"4444")];
    assert_round_trip(&b, &a, &[], &four);
}

#[test]
fn round_trips_empty_message() {
    let _watchdog = Watchdog::for_test();
    let (a, b) = Channel::<2>::pair().unwrap();
    a.send(&[], &[]).unwrap();
    // A zero-length buffer is enough for an empty message.
    let mut fds = heapless::Vec::<OwnedFd, 2>::new();
    let got = b.recv(&mut [], &mut fds).unwrap();
    assert_eq!(
        got,
        Received {
            data_len: 0,
            fd_count: 0
        }
    );
    assert!(fds.is_empty());
    // The empty message was one whole record: nothing else is queued.
    assert_eq!(b.try_recv(&mut [], &mut fds), Err(Error::WouldBlock));
}

#[test]
fn largest_message_is_sndbuf_minus_32_minus_header() {
    let _watchdog = Watchdog::for_test();
    let (a, b) = Channel::<1>::pair().unwrap();
    // Measured on Linux 6.18 with net.core.wmem_default = 212992: a record
    // (header + data) may be at most SO_SNDBUF - 32 bytes
    // (net/unix/af_unix.c, unix_dgram_sendmsg), so 212952 data bytes go
    // through and 212953 get EMSGSIZE. Check the default and a smaller,
    // explicitly set buffer (the kernel doubles the value set).
    for set in [None, Some(8192)] {
        if let Some(size) = set {
            sockopt::set_socket_send_buffer_size(&a, size).unwrap();
        }
        let sndbuf = sockopt::socket_send_buffer_size(&a).unwrap();
        let largest = sndbuf - 32 - ipc_unixsocket::HEADER_LEN;
        let data: Vec<u8> = (0..=largest).map(|i| (i % 251) as u8).collect();
        let file = memfd(b"rides along");

        a.send(&data[..largest], &[file.as_fd()])
            .expect("largest message");
        let mut buf = vec![0u8; largest + 1];
        let mut fds = heapless::Vec::<OwnedFd, 1>::new();
        let got = b.recv(&mut buf, &mut fds).unwrap();
        assert_eq!(
            got,
            Received {
                data_len: largest,
                fd_count: 1
            }
        );
        assert!(buf[..largest] == data[..largest], "data intact");
        assert_eq!(identity(&fds[0]), identity(&file));

        assert_eq!(
            a.send(&data, &[]),
            Err(Error::SendTooLarge { len: largest + 1 }),
            "one byte more than the largest message (SO_SNDBUF = {sndbuf})"
        );
        assert_eq!(
            a.try_send(&data, &[file.as_fd()]),
            Err(Error::SendTooLarge { len: largest + 1 })
        );
        // The refused message left nothing behind.
        assert_eq!(b.try_recv(&mut buf, &mut fds), Err(Error::WouldBlock));
    }
}

#[test]
fn payload_round_trips_data_and_fds() {
    let _watchdog = Watchdog::for_test();
    let (a, b) = Channel::<2>::pair().unwrap();
    let mut out = Payload::<{ HEADER_LEN + 32 }, 2>::new();
    out.extend_from_slice(b"frame 7 stats").unwrap();
    out.fds.push(memfd(b"luma")).unwrap();
    out.fds.push(memfd(b"histogram")).unwrap();
    out.send(&a).unwrap();

    let mut back = Payload::<{ HEADER_LEN + 32 }, 2>::new();
    let got = back.recv(&b).unwrap();
    assert_eq!(
        got,
        Received {
            data_len: 13,
            fd_count: 2
        }
    );
    assert_eq!(back.data(), out.data());
    assert_eq!(back.fds.len(), 2);
    for (sent, received) in out.fds.iter().zip(&back.fds) {
        assert_eq!(identity(received), identity(sent));
    }
    assert_eq!(read_all(back.fds[1].as_fd()), b"histogram");

    // The sender kept its fds and can send the payload again; the receiver's
    // previous contents are replaced, not appended to.
    out.clear();
    out.extend_from_slice(b"frame").unwrap();
    out.send(&a).unwrap();
    assert_eq!(
        back.try_recv(&b).unwrap(),
        Received {
            data_len: 5,
            fd_count: 2
        }
    );
    assert_eq!(back.data(), b"frame");
    assert_eq!(back.fds.len(), 2);

    // Nothing queued: the payload is left empty.
    assert_eq!(back.try_recv(&b), Err(Error::WouldBlock));
    assert!(back.data().is_empty() && back.fds.is_empty());
}

#[test]
fn received_fds_are_close_on_exec() {
    let _watchdog = Watchdog::for_test();
    let (a, b) = Channel::<2>::pair().unwrap();
    // Sent fds without FD_CLOEXEC: the flag on the received fds must come
    // from the receiver (MSG_CMSG_CLOEXEC), not from the sender's fds.
    let inheritable = memfd_create("inheritable", MemfdFlags::empty()).unwrap();
    let (pipe_read, _pipe_write) = rustix::pipe::pipe().unwrap();
    fcntl_setfd(&pipe_read, FdFlags::empty()).unwrap();
    for fd in [inheritable.as_fd(), pipe_read.as_fd()] {
        assert!(!fcntl_getfd(fd).unwrap().contains(FdFlags::CLOEXEC));
    }

    a.send(b"fds", &[inheritable.as_fd(), pipe_read.as_fd()])
        .unwrap();
    let mut fds = heapless::Vec::<OwnedFd, 2>::new();
    b.recv(&mut [0; 8], &mut fds).unwrap();
    assert_eq!(fds.len(), 2);
    for fd in &fds {
        assert!(fcntl_getfd(fd).unwrap().contains(FdFlags::CLOEXEC));
    }
    // The same through try_recv and recv_timeout.
    a.send(b"fds", &[inheritable.as_fd()]).unwrap();
    b.try_recv(&mut [0; 8], &mut fds).unwrap();
    assert!(fcntl_getfd(&fds[0]).unwrap().contains(FdFlags::CLOEXEC));
    a.send(b"fds", &[pipe_read.as_fd()]).unwrap();
    b.recv_timeout(&mut [0; 8], &mut fds, Duration::ZERO)
        .unwrap();
    assert!(fcntl_getfd(&fds[0]).unwrap().contains(FdFlags::CLOEXEC));
}

#[test]
fn try_recv_on_empty_channel_would_block() {
    let _watchdog = Watchdog::for_test();
    let (a, b) = Channel::<1>::pair().unwrap();
    let mut data = [0u8; 8];
    let mut fds = heapless::Vec::<OwnedFd, 1>::new();
    assert_eq!(b.try_recv(&mut data, &mut fds), Err(Error::WouldBlock));
    assert_eq!(a.try_recv(&mut data, &mut fds), Err(Error::WouldBlock));
    // Still connected and usable, and the socket was not left non-blocking:
    // a blocking recv waits for (and gets) the next message.
    a.send(b"later", &[]).unwrap();
    assert_eq!(b.recv(&mut data, &mut fds).unwrap().data_len, 5);
    assert_eq!(&data[..5], b"later");
    assert_eq!(b.try_recv(&mut data, &mut fds), Err(Error::WouldBlock));
}

#[test]
fn try_send_on_full_channel_would_block_and_every_message_arrives_in_order() {
    let (a, b) = Channel::<1>::pair().unwrap();
    let mut message = [0u8; 100];
    let mut sent: u32 = 0;
    loop {
        message[..4].copy_from_slice(&sent.to_le_bytes());
        match a.try_send(&message, &[]) {
            Ok(()) => sent += 1,
            Err(Error::WouldBlock) => break,
            Err(e) => panic!("try_send: {e}"),
        }
        assert!(sent < 1_000_000, "the socket buffer never filled up");
    }
    assert!(sent > 0);

    let mut data = [0u8; 128];
    let mut fds = heapless::Vec::<OwnedFd, 1>::new();
    for expected in 0..sent {
        let got = b.try_recv(&mut data, &mut fds).unwrap();
        assert_eq!(got.data_len, message.len());
        assert_eq!(
            u32::from_le_bytes(data[..4].try_into().unwrap()),
            expected,
            "messages arrive in the order they were sent"
        );
    }
    // The message refused with WouldBlock was not sent.
    assert_eq!(b.try_recv(&mut data, &mut fds), Err(Error::WouldBlock));
    // Drained: there is room again.
    a.try_send(b"room again", &[]).unwrap();
    assert_eq!(b.try_recv(&mut data, &mut fds).unwrap().data_len, 10);
}

#[test]
fn recv_drains_queued_messages_then_reports_disconnected() {
    let _watchdog = Watchdog::for_test();
    let (a, b) = Channel::<1>::pair().unwrap();
    let file = memfd(b"queued fd");
    a.send(b"one", &[]).unwrap();
    a.send(b"two", &[file.as_fd()]).unwrap();
    a.send(&[], &[]).unwrap();
    drop(a);

    let mut data = [0u8; 8];
    let mut fds = heapless::Vec::<OwnedFd, 1>::new();
    assert_eq!(b.recv(&mut data, &mut fds).unwrap().data_len, 3);
    assert_eq!(&data[..3], b"one");
    let got = b.recv(&mut data, &mut fds).unwrap();
    assert_eq!(&data[..got.data_len], b"two");
    assert_eq!(identity(&fds[0]), identity(&file));
    // A queued empty message is still a message, not the end.
    assert_eq!(
        b.recv(&mut data, &mut fds),
        Ok(Received {
            data_len: 0,
            fd_count: 0
        })
    );
    assert_eq!(b.recv(&mut data, &mut fds), Err(Error::Disconnected));
    // And it stays that way, for every kind of receive.
    assert_eq!(b.recv(&mut data, &mut fds), Err(Error::Disconnected));
    assert_eq!(b.try_recv(&mut data, &mut fds), Err(Error::Disconnected));
    assert_eq!(
        b.recv_timeout(&mut data, &mut fds, Duration::from_secs(60)),
        Err(Error::Disconnected)
    );
}

#[test]
fn recv_drains_queued_messages_when_peer_closed_with_unread_messages() {
    let _watchdog = Watchdog::for_test();
    let (a, b) = Channel::<1>::pair().unwrap();
    a.send(b"one", &[]).unwrap();
    a.send(b"two", &[]).unwrap();
    // `a` never reads this; closing `a` with it unread makes the kernel set
    // ECONNRESET as a pending socket error on `b`.
    b.send(b"never read", &[]).unwrap();
    drop(a);

    let mut data = [0u8; 16];
    let mut fds = heapless::Vec::<OwnedFd, 1>::new();
    assert_eq!(b.recv(&mut data, &mut fds).map(|g| g.data_len), Ok(3));
    assert_eq!(&data[..3], b"one");
    assert_eq!(b.recv(&mut data, &mut fds).map(|g| g.data_len), Ok(3));
    assert_eq!(&data[..3], b"two");
    assert_eq!(b.recv(&mut data, &mut fds), Err(Error::Disconnected));

    // The same through the non-blocking receive.
    let (a, b) = Channel::<1>::pair().unwrap();
    a.send(b"queued", &[]).unwrap();
    b.send(b"never read", &[]).unwrap();
    drop(a);
    assert_eq!(b.try_recv(&mut data, &mut fds).map(|g| g.data_len), Ok(6));
    assert_eq!(&data[..6], b"queued");
    assert_eq!(b.try_recv(&mut data, &mut fds), Err(Error::Disconnected));
}

#[test]
fn send_to_closed_peer_is_disconnected() {
    let _watchdog = Watchdog::for_test();
    let (a, b) = Channel::<1>::pair().unwrap();
    drop(b);
    let file = memfd(b"nobody");
    assert_eq!(a.send(b"anyone?", &[]), Err(Error::Disconnected));
    assert_eq!(
        a.send(b"anyone?", &[file.as_fd()]),
        Err(Error::Disconnected)
    );
    assert_eq!(a.try_send(&[], &[]), Err(Error::Disconnected));

    // The other direction, with messages still queued at the closed end.
    let (a, b) = Channel::<1>::pair().unwrap();
    a.send(b"unread", &[file.as_fd()]).unwrap();
    drop(b);
    assert_eq!(a.send(b"anyone?", &[]), Err(Error::Disconnected));
    assert_eq!(a.try_send(b"anyone?", &[]), Err(Error::Disconnected));
}

#[test]
fn recv_timeout_expires_with_timed_out() {
    let _watchdog = Watchdog::for_test();
    let (a, b) = Channel::<1>::pair().unwrap();
    let mut data = [0u8; 8];
    let mut fds = heapless::Vec::<OwnedFd, 1>::new();
    assert_eq!(
        b.recv_timeout(&mut data, &mut fds, Duration::from_millis(20)),
        Err(Error::TimedOut)
    );
    assert_eq!(
        b.recv_timeout(&mut data, &mut fds, Duration::ZERO),
        Err(Error::TimedOut)
    );
    // Timing out consumed nothing and broke nothing.
    a.send(b"late", &[]).unwrap();
    assert_eq!(b.recv(&mut data, &mut fds).unwrap().data_len, 4);
    assert_eq!(&data[..4], b"late");
}

#[test]
fn recv_timeout_returns_a_queued_message() {
    let _watchdog = Watchdog::for_test();
    let (a, b) = Channel::<1>::pair().unwrap();
    let file = memfd(b"queued");
    a.send(b"ready", &[file.as_fd()]).unwrap();
    a.send(b"also ready", &[]).unwrap();

    let mut data = [0u8; 16];
    let mut fds = heapless::Vec::<OwnedFd, 1>::new();
    // Already queued: even a zero timeout returns it.
    let got = b.recv_timeout(&mut data, &mut fds, Duration::ZERO).unwrap();
    assert_eq!(
        got,
        Received {
            data_len: 5,
            fd_count: 1
        }
    );
    assert_eq!(&data[..5], b"ready");
    assert_eq!(identity(&fds[0]), identity(&file));
    let got = b
        .recv_timeout(&mut data, &mut fds, Duration::from_secs(60))
        .unwrap();
    assert_eq!(&data[..got.data_len], b"also ready");
    assert!(fds.is_empty(), "fds of the previous message are cleared");
}

#[test]
fn bind_refuses_a_pipe() {
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    assert_eq!(
        Channel::<1>::adopt(reader).unwrap_err(),
        Error::NotSeqpacketSocket
    );
    assert_eq!(
        Channel::<1>::adopt(writer).unwrap_err(),
        Error::NotSeqpacketSocket
    );
}

#[test]
fn bind_refuses_a_regular_file() {
    let file = std::fs::File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    assert_eq!(
        Channel::<1>::adopt(file.into()).unwrap_err(),
        Error::NotSeqpacketSocket
    );
}

fn unix_socket_pair(kind: SocketType) -> (OwnedFd, OwnedFd) {
    socketpair(AddressFamily::UNIX, kind, SocketFlags::CLOEXEC, None).unwrap()
}

#[test]
fn bind_refuses_a_stream_socket() {
    let (one, _other) = unix_socket_pair(SocketType::STREAM);
    assert_eq!(
        Channel::<1>::adopt(one).unwrap_err(),
        Error::NotSeqpacketSocket
    );
}

#[test]
fn bind_refuses_a_datagram_socket() {
    let (one, _other) = unix_socket_pair(SocketType::DGRAM);
    assert_eq!(
        Channel::<1>::adopt(one).unwrap_err(),
        Error::NotSeqpacketSocket
    );
}

#[test]
fn bind_accepts_a_seqpacket_socket_and_sets_close_on_exec() {
    let _watchdog = Watchdog::for_test();
    // From create(), as a child process would inherit it (flag cleared).
    let (local, remote) = Channel::<2>::create().unwrap();
    fcntl_setfd(&remote, FdFlags::empty()).unwrap();
    let bound = Channel::<2>::adopt(remote).unwrap();
    assert!(fcntl_getfd(&bound).unwrap().contains(FdFlags::CLOEXEC));
    assert_round_trip(&local, &bound, b"to the worker", &[memfd(b"x")]);
    assert_round_trip(&bound, &local, b"to the pipeline", &[memfd(b"y")]);

    // A plain socketpair made without the crate.
    let (one, other) = unix_socket_pair(SocketType::SEQPACKET);
    let (one, other) = (
        Channel::<2>::adopt(one).unwrap(),
        Channel::<2>::adopt(other).unwrap(),
    );
    assert_round_trip(&one, &other, b"bound both ends", &[]);
}

#[test]
fn send_refuses_more_than_max_fds_before_any_syscall() {
    let _watchdog = Watchdog::for_test();
    let (a, b) = Channel::<2>::pair().unwrap();
    let files = [memfd(b"1"), memfd(b"2"), memfd(b"3")];
    let fds: Vec<BorrowedFd<'_>> = files.iter().map(AsFd::as_fd).collect();
    assert_eq!(
        a.send(b"three", &fds),
        Err(Error::SendTooManyFds { count: 3, max: 2 })
    );
    assert_eq!(
        a.try_send(b"three", &fds),
        Err(Error::SendTooManyFds { count: 3, max: 2 })
    );
    let (c, _d) = Channel::<0>::pair().unwrap();
    assert_eq!(
        c.send(&[], &fds[..1]),
        Err(Error::SendTooManyFds { count: 1, max: 0 })
    );

    // Nothing reached the peer.
    let mut data = [0u8; 8];
    let mut received = heapless::Vec::<OwnedFd, 0>::new();
    assert_eq!(b.try_recv(&mut data, &mut received), Err(Error::WouldBlock));
    // Exactly MAX_FDS is fine.
    assert_round_trip(&a, &b, b"two", &files[..2]);
}

#[test]
fn peer_credentials_name_the_process_that_made_the_pair() {
    let (a, b) = Channel::<0>::pair().unwrap();
    for end in [&a, &b] {
        let peer = end.peer_credentials().unwrap();
        assert_eq!(peer.pid, Some(rustix::process::getpid()));
        assert_eq!(peer.uid, rustix::process::getuid());
        assert_eq!(peer.gid, rustix::process::getgid());
    }
}
