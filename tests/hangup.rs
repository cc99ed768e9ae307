//! End-of-file against 0-byte records, and the peer's death at any moment:
//! `Disconnected` is final and true (nothing is left to read), and a peer's
//! death never surfaces as `Os(ECONNRESET)`.
//!
//! After its first 0-byte read without control messages, the channel turns
//! `SO_PASSCRED` on for good: from then on every record carries
//! credentials and end-of-file none. So only that first empty record, if
//! it is also the last record before the hang-up, reads as end-of-file.

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use common::{open_fds, send_raw, serial};
use ipc_unixsocket::{Channel, Error, Received};
use rustix::net::sockopt;

/// Receives with `try_recv` until two `Disconnected` in a row, at most 8
/// times, and returns every outcome.
fn drain<const N: usize>(reader: &Channel<N>) -> Vec<Result<Received, Error>> {
    let mut data = [0u8; 64];
    let mut fds = heapless::Vec::<OwnedFd, N>::new();
    let mut outcomes: Vec<Result<Received, Error>> = Vec::new();
    while outcomes.len() < 8 && !outcomes.ends_with(&[Err(Error::Disconnected); 2]) {
        outcomes.push(reader.try_recv(&mut data, &mut fds));
    }
    outcomes
}

const EMPTY: Result<Received, Error> = Err(Error::ShortRecord { len: 0 });
const GONE: Result<Received, Error> = Err(Error::Disconnected);

#[test]
fn empty_records_queued_before_a_hang_up_are_all_read_before_disconnected() {
    let _serial = serial();
    let devnull = std::fs::File::open("/dev/null").expect("open /dev/null");
    let baseline = open_fds();
    {
        let (writer, reader) = Channel::<4>::pair().expect("socketpair");
        send_raw(&writer, b"", &[]);
        send_raw(&writer, b"", &[]);
        send_raw(&writer, b"", &[devnull.as_fd()]);
        drop(writer);
        assert_eq!(drain(&reader), [EMPTY, EMPTY, EMPTY, GONE, GONE]);
        assert!(
            sockopt::socket_passcred(&reader).expect("SO_PASSCRED"),
            "SO_PASSCRED stays on after the first empty read"
        );
    }
    assert_eq!(open_fds(), baseline, "every fd closed");
}

#[test]
fn only_a_first_empty_record_that_is_also_the_last_reads_as_end_of_file() {
    // The documented limit: the first empty record without fds is read
    // before SO_PASSCRED is on, so it carries no credentials; if it was the
    // last record before the hang-up, the kernel reports it and end-of-file
    // alike, and it is taken for end-of-file.
    let _serial = serial();
    let last = Ok(Received {
        data_len: 10,
        fd_count: 0,
    });
    let (writer, reader) = Channel::<4>::pair().expect("socketpair");
    send_raw(&writer, b"", &[]);
    drop(writer);
    assert_eq!(drain(&reader), [GONE, GONE]);

    let (writer, reader) = Channel::<4>::pair().expect("socketpair");
    writer.send(b"last words", &[]).expect("send");
    send_raw(&writer, b"", &[]);
    drop(writer);
    assert_eq!(drain(&reader), [last, GONE, GONE]);

    // Every later empty record carries credentials: a record, even the
    // last one.
    let (writer, reader) = Channel::<4>::pair().expect("socketpair");
    send_raw(&writer, b"", &[]);
    send_raw(&writer, b"", &[]);
    drop(writer);
    assert_eq!(drain(&reader), [EMPTY, EMPTY, GONE, GONE]);

    let (writer, reader) = Channel::<4>::pair().expect("socketpair");
    send_raw(&writer, b"", &[]);
    writer.send(b"last words", &[]).expect("send");
    send_raw(&writer, b"", &[]);
    send_raw(&writer, b"", &[]);
    drop(writer);
    assert_eq!(drain(&reader), [EMPTY, last, EMPTY, EMPTY, GONE, GONE]);
}

#[test]
fn with_so_passcred_on_even_a_last_empty_record_is_a_record() {
    // With the option on, every record carries credentials, which end-of-
    // file never does, from the first record on; the option stays on.
    let _serial = serial();
    let (writer, reader) = Channel::<4>::pair().expect("socketpair");
    sockopt::set_socket_passcred(&reader, true).expect("SO_PASSCRED");
    send_raw(&writer, b"", &[]);
    drop(writer);
    assert_eq!(drain(&reader), [EMPTY, GONE, GONE]);
    assert!(sockopt::socket_passcred(&reader).expect("SO_PASSCRED"));
}

#[test]
fn a_valid_message_after_empty_records_is_delivered_before_disconnected() {
    let _serial = serial();
    let (writer, reader) = Channel::<4>::pair().expect("socketpair");
    send_raw(&writer, b"", &[]);
    writer.send(b"last words", &[]).expect("send");
    drop(writer);
    let last = Ok(Received {
        data_len: 10,
        fd_count: 0,
    });
    assert_eq!(drain(&reader), [EMPTY, last, GONE, GONE]);
}

/// The race of the issue: the peer sends an empty record, the receiver's
/// `recvmsg` takes it, and the peer dies with records of ours unread
/// (which leaves a one-shot `ECONNRESET` on our socket) before the receiver
/// has decided whether the empty read was end-of-file. The peer's close is
/// spread over a range of delays after its send, so that in some rounds it
/// lands inside that decision; the outcome must always be `ShortRecord` or
/// `Disconnected`, never `Os(ECONNRESET)`.
#[test]
fn a_peer_dying_right_after_an_empty_record_is_never_an_os_error() {
    const ROUNDS: u32 = 60_000;
    let _serial = serial();
    let baseline = open_fds();
    let mut outcomes = std::collections::BTreeMap::<String, u32>::new();
    let (to_peer, from_main) = std::sync::mpsc::channel::<(Channel<1>, u32)>();
    let peer = std::thread::spawn(move || {
        for (end, spin) in from_main {
            send_raw(&end, b"", &[]);
            for _ in 0..spin {
                std::hint::spin_loop();
            }
            drop(end); // dies with our record unread: ECONNRESET for us
        }
    });
    let mut data = [0u8; 16];
    let mut fds = heapless::Vec::<OwnedFd, 1>::new();
    for round in 0..ROUNDS {
        let (ours, theirs) = Channel::<1>::pair().expect("socketpair");
        ours.send(b"unread", &[]).expect("send");
        to_peer.send((theirs, round % 2000)).expect("peer alive");
        let first = ours.recv_timeout(&mut data, &mut fds, Duration::from_secs(10));
        assert!(first == EMPTY || first == GONE, "round {round}: {first:?}");
        let second = ours.recv_timeout(&mut data, &mut fds, Duration::from_secs(10));
        assert_eq!(second, GONE, "round {round}: after {first:?}");
        *outcomes.entry(format!("{first:?}")).or_default() += 1;
    }
    drop(to_peer);
    peer.join().expect("peer thread");
    println!("first outcomes over {ROUNDS} rounds: {outcomes:?}");
    assert_eq!(open_fds(), baseline);
}
