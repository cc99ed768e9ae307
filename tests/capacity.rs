//! Per-call fd capacity: each receive takes its capacity from the fd vector
//! it is given (any `CAP <= MAX_FDS`), sizes its control buffer for it, and
//! rejects a record with more fds than that, closing every one of them.

mod common;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use common::{Watchdog, header, identity, memfd, open_fds, send_raw, serial};
use ipc_unixsocket::{Channel, Error, HEADER_LEN, Payload, Received};

const MAX: usize = 8;

/// How one receive is made.
#[derive(Clone, Copy, Debug)]
enum Via {
    Recv,
    Frame,
    Payload,
}

/// Sends `count` distinct memfds (with the crate's sender, up to `MAX`; raw
/// beyond that, with a header that tells the truth), queues a good message
/// behind, and receives with capacity `CAP`. A record within the capacity
/// must arrive with its fds in order; one beyond it must be `TooManyFds`
/// with every fd closed; either way the good message follows intact.
fn receive_with_capacity<const CAP: usize>(count: usize, via: Via) {
    let files: Vec<OwnedFd> = (0..count).map(|i| memfd(&[i as u8])).collect();
    let good = memfd(b"good");
    let baseline = open_fds();
    {
        let (tx, rx) = Channel::<MAX>::pair().expect("socketpair");
        let borrowed: Vec<BorrowedFd<'_>> = files.iter().map(AsFd::as_fd).collect();
        if count <= MAX {
            tx.send(b"frame", &borrowed).expect("send");
        } else {
            let mut record = header(count as u8, 5).to_vec();
            record.extend_from_slice(b"frame");
            send_raw(&tx, &record, &borrowed);
        }
        tx.send(b"next", &[good.as_fd()])
            .expect("send the good message");

        let mut data = [0u8; 16];
        let mut frame = [0u8; HEADER_LEN + 16];
        let mut fds = heapless::Vec::<OwnedFd, CAP>::new();
        let mut payload = Payload::<{ HEADER_LEN + 16 }, CAP>::new();
        let (got, delivered): (_, &[OwnedFd]) = match via {
            Via::Recv => (rx.recv(&mut data, &mut fds), &fds),
            Via::Frame => (rx.recv_frame(&mut frame, &mut fds), &fds),
            Via::Payload => (payload.recv(&rx), &payload.fds),
        };
        if count <= CAP {
            assert_eq!(
                got,
                Ok(Received {
                    data_len: 5,
                    fd_count: count
                }),
                "{count} fds, capacity {CAP}, {via:?}"
            );
            let ids: Vec<_> = delivered.iter().map(identity).collect();
            let sent: Vec<_> = files.iter().map(identity).collect();
            assert_eq!(ids, sent, "fds in order");
        } else {
            assert_eq!(
                got,
                Err(Error::TooManyFds {
                    count,
                    capacity: CAP
                }),
                "{count} fds, capacity {CAP}, {via:?}"
            );
            assert!(delivered.is_empty());
        }

        // The good message is next, whatever came before.
        let mut one = heapless::Vec::<OwnedFd, 1>::new();
        assert_eq!(
            rx.try_recv(&mut data, &mut one),
            Ok(Received {
                data_len: 4,
                fd_count: 1
            })
        );
        assert_eq!(identity(&one[0]), identity(&good));
        assert_eq!(rx.try_recv(&mut data, &mut one), Err(Error::WouldBlock));
    }
    assert_eq!(
        open_fds(),
        baseline,
        "{count} fds, capacity {CAP}, {via:?}: an fd leaked"
    );
}

fn every_count<const CAP: usize>() {
    let _serial = serial();
    let _watchdog = Watchdog::for_test();
    // Up to MAX + 3: past the channel's MAX_FDS too (a raw sender).
    for count in 0..=MAX + 3 {
        for via in [Via::Recv, Via::Frame, Via::Payload] {
            receive_with_capacity::<CAP>(count, via);
        }
    }
}

#[test]
fn capacity_zero_accepts_no_fd() {
    every_count::<0>();
}

#[test]
fn capacity_one_closes_the_fd_in_the_alignment_slack() {
    every_count::<1>();
}

#[test]
fn odd_capacity() {
    every_count::<3>();
}

#[test]
fn full_capacity_is_the_channels_max_fds() {
    every_count::<MAX>();
}

#[test]
fn capacities_differ_from_call_to_call_on_one_channel() {
    let _serial = serial();
    let file = memfd(b"frame");
    let baseline = open_fds();
    {
        let (tx, rx) = Channel::<MAX>::pair().expect("socketpair");
        let mut data = [0u8; 8];
        let mut none = heapless::Vec::<OwnedFd, 0>::new();
        let mut two = heapless::Vec::<OwnedFd, 2>::new();
        tx.send(b"a", &[file.as_fd()]).expect("send");
        tx.send(b"b", &[file.as_fd()]).expect("send");
        assert_eq!(
            rx.try_recv(&mut data, &mut none),
            Err(Error::TooManyFds {
                count: 1,
                capacity: 0
            })
        );
        assert_eq!(rx.try_recv(&mut data, &mut two).map(|r| r.fd_count), Ok(1));
    }
    assert_eq!(open_fds(), baseline);
}
