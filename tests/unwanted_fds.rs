//! The fds the crate closes itself (those of rejected records, fds past the
//! capacity, fds left in the caller's vector, and fds of control messages it
//! does not deliver) are closed without waiting and without leaking.
//!
//! A hostile peer can pass a TCP socket with unsent data and `SO_LINGER`
//! set: a plain `close()` of the last reference then blocks for the linger
//! time. The crate sets `SO_LINGER {on, 0}` first on such a socket (linger
//! on with a non-zero time), which turns the close into an abort: the
//! kernel sends a RST at once. The tests observe the RST on the other end
//! of the TCP connection (`SO_ERROR` is `ECONNRESET`); a blocking close
//! instead waits out the linger time and sends no RST, so the check fails.
//!
//! Any other socket is closed as it is: its options belong to the open file
//! description, which the sender may still hold, and a `SO_LINGER {on, 0}`
//! set there would turn the sender's own later close into a reset too.

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use common::{header, memfd, open_fds, send_raw, serial};
use ipc_unixsocket::{Channel, Error, Received};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::net::sockopt;

/// How long a close of the hostile socket would block without the fix.
const LINGER: Duration = Duration::from_secs(5);

/// A connected loopback TCP pair: the client end (to be passed over the
/// channel) has unsent data queued and `SO_LINGER {on, LINGER}`; the server
/// end never reads, so the data cannot drain.
fn lingering_socket() -> (OwnedFd, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    client.set_nonblocking(true).expect("nonblocking");
    let chunk = [0x5a_u8; 65536];
    loop {
        match client.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the TCP send buffer: {e}"),
        }
    }
    client.set_nonblocking(false).expect("blocking");
    sockopt::set_socket_linger(&client, Some(LINGER)).expect("SO_LINGER");
    (OwnedFd::from(client), server)
}

/// True once the server end of the connection has been reset: the client
/// end was closed abortively. Waits up to twice the linger time, which a
/// blocking close that ends in a FIN (not a RST) never satisfies.
fn was_reset(server: &TcpStream) -> bool {
    let mut watch = [PollFd::new(server, PollFlags::ERR)];
    let limit = Timespec {
        tv_sec: 2 * LINGER.as_secs() as i64,
        tv_nsec: 0,
    };
    poll(&mut watch, Some(&limit)).expect("poll");
    sockopt::socket_error(server).expect("SO_ERROR") == Err(Errno::CONNRESET)
}

#[test]
fn rejected_record_with_a_lingering_tcp_socket_is_closed_at_once() {
    let _serial = serial();
    let baseline = open_fds();
    let (writer, reader) = Channel::<2>::pair().expect("socketpair");
    let (hostile, server) = lingering_socket();
    let mut bad = header(1, 0);
    bad[0] = b'X';
    send_raw(&writer, &bad, &[hostile.as_fd()]);
    drop(hostile); // the channel's copy is now the last one
    writer.send(b"next", &[]).expect("send");

    let mut data = [0u8; 16];
    let mut fds = heapless::Vec::<OwnedFd, 2>::new();
    assert_eq!(
        reader.try_recv(&mut data, &mut fds),
        Err(Error::BadMagic { found: *b"XP" })
    );
    assert!(was_reset(&server), "the hostile socket was not aborted");
    assert_eq!(
        reader.try_recv(&mut data, &mut fds),
        Ok(Received {
            data_len: 4,
            fd_count: 0
        })
    );
    drop((writer, reader, server));
    assert_eq!(open_fds(), baseline);
}

#[test]
fn recv_timeout_closes_a_rejected_lingering_socket_at_once() {
    let _serial = serial();
    let baseline = open_fds();
    let (writer, reader) = Channel::<2>::pair().expect("socketpair");
    let (hostile, server) = lingering_socket();
    // Declares 2 fds, carries 1: a count mismatch.
    send_raw(&writer, &header(2, 0), &[hostile.as_fd()]);
    drop(hostile);

    let mut data = [0u8; 16];
    let mut fds = heapless::Vec::<OwnedFd, 2>::new();
    assert_eq!(
        reader.recv_timeout(&mut data, &mut fds, Duration::from_millis(10)),
        Err(Error::FdCountMismatch {
            declared: 2,
            received: 1,
            truncated: false
        })
    );
    assert!(was_reset(&server), "the hostile socket was not aborted");
    drop((writer, reader, server));
    assert_eq!(open_fds(), baseline);
}

#[test]
fn lingering_socket_past_the_capacity_is_closed_at_once() {
    let _serial = serial();
    let baseline = open_fds();
    let (writer, reader) = Channel::<1>::pair().expect("socketpair");
    let (hostile, server) = lingering_socket();
    let file = memfd(b"frame");
    // Two fds to a capacity of one. Where the control buffer has room past
    // the capacity (the credentials' room, and the alignment slack on
    // 64-bit: every target, while no credentials arrive) the socket goes
    // second: it lands past the capacity and the crate must close it.
    // Without such room the second fd would never be installed
    // (MSG_CTRUNC) and the kernel would close it inside recvmsg, so the
    // socket goes first: it is installed, the record is over the capacity,
    // and the crate must close it. Either way the record is rejected.
    let fds = if common::platform::slack(1) > 0 {
        [file.as_fd(), hostile.as_fd()]
    } else {
        [hostile.as_fd(), file.as_fd()]
    };
    send_raw(&writer, &header(2, 0), &fds);
    drop(hostile);

    let mut data = [0u8; 16];
    let mut fds = heapless::Vec::<OwnedFd, 1>::new();
    let got = reader.try_recv(&mut data, &mut fds);
    assert_eq!(
        got,
        Err(Error::TooManyFds {
            count: 2,
            capacity: 1
        })
    );
    assert!(was_reset(&server), "the hostile socket was not aborted");
    drop((writer, reader, server, file));
    assert_eq!(open_fds(), baseline);
}

#[test]
fn lingering_socket_left_in_the_vector_is_closed_at_once_by_the_next_recv() {
    let _serial = serial();
    let baseline = open_fds();
    let (writer, reader) = Channel::<1>::pair().expect("socketpair");
    let (hostile, server) = lingering_socket();
    send_raw(&writer, &header(1, 0), &[hostile.as_fd()]);
    drop(hostile);
    writer.send(b"second", &[]).expect("send");

    let mut data = [0u8; 16];
    let mut fds = heapless::Vec::<OwnedFd, 1>::new();
    assert_eq!(
        reader.try_recv(&mut data, &mut fds),
        Ok(Received {
            data_len: 0,
            fd_count: 1
        })
    );
    // The caller leaves the delivered socket in the vector; the next
    // receive clears the vector and so closes it.
    assert_eq!(
        reader.try_recv(&mut data, &mut fds).map(|r| r.data_len),
        Ok(6)
    );
    assert!(fds.is_empty());
    assert!(was_reset(&server), "the hostile socket was not aborted");
    drop((writer, reader, server));
    assert_eq!(open_fds(), baseline);
}

/// A connected loopback TCP pair with every option as the kernel made it
/// (no `SO_LINGER`): the client end and the server end.
fn plain_tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    (client, server)
}

/// The sender passes its own TCP socket (no linger time) in a record that
/// the receiver does not keep: `first` receives it and must give
/// `expected`, and the receive of the `next` record behind it must
/// deliver. The socket the receiver closes shares its open file
/// description (and so its socket options) with the sender's, which the
/// sender keeps using: it writes its last words and closes the connection
/// the ordinary way, and the TCP peer must read those words and then
/// end-of-file, not a reset (`ECONNRESET`) that also drops unread data.
fn senders_close_after_the_receiver_discards_its_socket<const N: usize>(
    what: &str,
    record: &[u8],
    expected: Result<Received, Error>,
) {
    let baseline = open_fds();
    let (writer, reader) = Channel::<N>::pair().expect("socketpair");
    let (mut ours, mut peer) = plain_tcp_pair();
    send_raw(&writer, record, &[ours.as_fd()]);
    writer.send(b"next", &[]).expect("send");

    let mut data = [0u8; 16];
    let mut fds = heapless::Vec::<OwnedFd, N>::new();
    assert_eq!(reader.try_recv(&mut data, &mut fds), expected, "{what}");
    assert_eq!(
        reader.try_recv(&mut data, &mut fds),
        Ok(Received {
            data_len: 4,
            fd_count: 0
        }),
        "{what}: the record behind"
    );
    assert!(fds.is_empty(), "{what}");
    let linger = sockopt::socket_linger(&ours).expect("SO_LINGER");

    ours.write_all(b"last words").expect("write the last words");
    drop(ours); // an ordinary close: FIN after the data
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut got = Vec::new();
    let end = std::io::Read::read_to_end(&mut peer, &mut got);
    assert_eq!(
        (end.map_err(|e| e.kind()), String::from_utf8_lossy(&got)),
        (Ok(10), "last words".into()),
        "{what}: the TCP peer reads the last words, then end-of-file"
    );
    assert_eq!(
        linger, None,
        "{what}: the sender's SO_LINGER changed under it"
    );
    drop((writer, reader, peer));
    assert_eq!(open_fds(), baseline, "{what}");
}

#[test]
fn discarding_a_passed_tcp_socket_leaves_the_senders_close_ordinary() {
    let _serial = serial();
    let _watchdog = common::Watchdog::for_test();
    senders_close_after_the_receiver_discards_its_socket::<1>(
        "a rejected record (declares 0 fds, carries 1)",
        &header(0, 0),
        Err(Error::FdCountMismatch {
            declared: 0,
            received: 1,
            truncated: false,
        }),
    );
    senders_close_after_the_receiver_discards_its_socket::<0>(
        "an fd past the capacity (Channel<0>)",
        &header(1, 0),
        Err(Error::TooManyFds {
            count: 1,
            capacity: 0,
        }),
    );
    senders_close_after_the_receiver_discards_its_socket::<1>(
        "an fd left in the vector, closed by the next receive",
        &header(1, 0),
        Ok(Received {
            data_len: 0,
            fd_count: 1,
        }),
    );
}

/// `SO_PASSPIDFD` (Linux 6.5) is not in rustix: set it with libc.
fn set_passpidfd(socket: impl AsFd) {
    const SO_PASSPIDFD: libc::c_int = 76;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket fd, and a pointer to a live c_int with its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PASSPIDFD,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt(SO_PASSPIDFD) needs Linux 6.5 or later: {}",
        std::io::Error::last_os_error()
    );
}

/// For a record of `fds` fds to a `Channel<CAP>` with `SO_PASSPIDFD` on
/// (and `SO_PASSCRED` too when `passcred`): whether the pidfd message fits
/// in the control buffer. The kernel writes the credentials first (into
/// the room the crate keeps for them), then the fds, then the pidfd
/// message, if `CMSG_LEN(4)` bytes are left.
fn pidfd_fits<const CAP: usize>(fds: usize, passcred: bool) -> bool {
    use common::platform::{cmsg_len, cmsg_space, control_space};
    let credentials = if passcred {
        cmsg_space(size_of::<libc::ucred>())
    } else {
        0
    };
    let rights = if fds == 0 { 0 } else { cmsg_space(4 * fds) };
    credentials + rights + cmsg_len(4) <= control_space(CAP)
}

#[test]
fn so_passpidfd_pidfds_are_closed_and_never_leak() {
    const CAP: usize = 8;
    let _serial = serial();
    let file = memfd(b"frame");
    let baseline = open_fds();
    // Without credentials, the credentials' room leaves space for the pidfd
    // beside every record the capacity holds; with them (`SO_PASSCRED`,
    // which the channel turns on itself after its first empty read), the
    // pidfd is cut off when the fds fill the rest.
    assert!(
        pidfd_fits::<CAP>(CAP, false),
        "the pidfd fits beside CAP fds"
    );
    assert!(
        !pidfd_fits::<CAP>(CAP, true),
        "the pidfd costs fds on this target"
    );
    for passcred in [false, true] {
        let (writer, reader) = Channel::<CAP>::pair().expect("socketpair");
        set_passpidfd(&reader);
        if passcred {
            sockopt::set_socket_passcred(&reader, true).expect("SO_PASSCRED");
        }
        let with_channel = open_fds();

        let mut data = [0u8; 64];
        let mut fds = heapless::Vec::<OwnedFd, CAP>::new();
        for round in 0..100 {
            let count = round % (CAP + 1);
            let sent: Vec<_> = (0..count).map(|_| file.as_fd()).collect();
            writer.send(b"frame", &sent).expect("send");
            let got = reader.try_recv(&mut data, &mut fds);
            let expected = if pidfd_fits::<CAP>(count, passcred) {
                Ok(Received {
                    data_len: 5,
                    fd_count: count,
                })
            } else {
                // Every fd arrived but the pidfd was cut off: MSG_CTRUNC,
                // which the receiver cannot tell from more fds sent than
                // declared.
                Err(Error::FdCountMismatch {
                    declared: count as u8,
                    received: count,
                    truncated: true,
                })
            };
            assert_eq!(got, expected, "SO_PASSCRED {passcred}, round {round}");
            fds.clear();
            assert_eq!(
                open_fds(),
                with_channel,
                "SO_PASSCRED {passcred}, round {round}: an fd leaked"
            );
        }
        // Rejected records and empty records carry a pidfd too.
        send_raw(&writer, b"XX", &[]);
        send_raw(&writer, b"", &[]);
        assert_eq!(
            reader.try_recv(&mut data, &mut fds),
            Err(Error::ShortRecord { len: 2 })
        );
        assert_eq!(
            reader.try_recv(&mut data, &mut fds),
            Err(Error::ShortRecord { len: 0 })
        );
        assert_eq!(open_fds(), with_channel);
        drop((writer, reader));
        assert_eq!(open_fds(), baseline);
    }
}
