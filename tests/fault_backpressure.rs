//! Full socket: the peer stops reading. `try_send` must say `WouldBlock`
//! without losing or half-sending anything, and a blocking `send` must
//! resume once the peer reads again.
//!
//! Synchronisation is by the sockets and by `/proc/self/task/TID/syscall`
//! (which names the system call a thread is blocked in), never by sleeping.
//! Every test counts fds, so every test holds `common::serial()`, and a
//! watchdog, so that a lost record fails the test instead of hanging it.

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;

use common::signals::wait_until_blocked_in;
use common::{ShutdownOnPanic, Watchdog, identity, memfd, open_fds, serial};
use ipc_unixsocket::{Channel, Error, Received};

type Fds<const N: usize> = heapless::Vec<OwnedFd, N>;

/// Message `seq`: its number then `seq % 1500` filler bytes, so sizes vary;
/// every third message carries the memfd.
fn message(seq: u32, buf: &mut [u8]) -> usize {
    let len = 4 + (seq as usize * 37) % 1500;
    buf[..4].copy_from_slice(&seq.to_le_bytes());
    for (i, byte) in buf[4..len].iter_mut().enumerate() {
        *byte = (seq as usize + i) as u8;
    }
    len
}

fn fds_for(seq: u32) -> usize {
    usize::from(seq.is_multiple_of(3))
}

/// Sends with `try_send` until `WouldBlock`; returns how many went out.
fn fill(tx: &Channel<1>, file: &OwnedFd) -> u32 {
    let mut buf = [0u8; 2048];
    let mut seq = 0;
    loop {
        let len = message(seq, &mut buf);
        let fds = [file.as_fd()];
        match tx.try_send(&buf[..len], &fds[..fds_for(seq)]) {
            Ok(()) => seq += 1,
            Err(Error::WouldBlock) => return seq,
            Err(e) => panic!("try_send #{seq}: {e:?}"),
        }
        assert!(seq < 1_000_000, "the socket never filled up");
    }
}

/// Receives message `seq` and checks it byte for byte, fds included.
fn expect_message(rx: &Channel<1>, seq: u32, file: &OwnedFd) {
    let mut expected = [0u8; 2048];
    let len = message(seq, &mut expected);
    let mut data = [0u8; 2048];
    let mut fds = Fds::<1>::new();
    let got = rx
        .recv(&mut data, &mut fds)
        .unwrap_or_else(|e| panic!("message #{seq}: {e:?}"));
    assert_eq!(
        got,
        Received {
            data_len: len,
            fd_count: fds_for(seq)
        },
        "message #{seq}"
    );
    assert_eq!(&data[..len], &expected[..len], "message #{seq} corrupted");
    for fd in &fds {
        assert_eq!(identity(fd), identity(file));
    }
}

#[test]
fn try_send_would_block_once_the_peer_stops_reading_and_nothing_is_lost() {
    let _guard = serial();
    let _watchdog = Watchdog::for_test();
    let (tx, rx) = Channel::<1>::pair().unwrap();
    let file = memfd(b"frame");
    let baseline = open_fds();

    let sent = fill(&tx, &file);
    assert!(sent > 1, "only {sent} messages fit");
    // Still full: a refused record is refused again, whatever its size.
    assert_eq!(tx.try_send(b"", &[]), Err(Error::WouldBlock));
    assert_eq!(
        tx.try_send(&[0; 1400], &[file.as_fd()]),
        Err(Error::WouldBlock)
    );
    // Refused records hand no fd to anyone.
    assert_eq!(open_fds(), baseline);

    // The peer reads again: every message sent before arrives, in order,
    // intact; none of the refused ones do.
    for seq in 0..sent {
        expect_message(&rx, seq, &file);
    }
    let mut data = [0u8; 8];
    let mut fds = Fds::<1>::new();
    assert_eq!(rx.try_recv(&mut data, &mut fds), Err(Error::WouldBlock));
    assert_eq!(open_fds(), baseline);

    // And there is room again.
    tx.try_send(b"room", &[]).unwrap();
    assert_eq!(rx.try_recv(&mut data, &mut fds).unwrap().data_len, 4);
    println!("socket full after {sent} messages");
}

#[test]
fn blocking_send_resumes_when_space_frees_up() {
    let _guard = serial();
    let _watchdog = Watchdog::for_test();
    let (tx, rx) = Channel::<1>::pair().unwrap();
    let file = memfd(b"frame");
    let baseline = open_fds();
    let sent = fill(&tx, &file);

    let (tid_tx, tid_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            tid_tx
                .send(rustix::thread::gettid().as_raw_nonzero().get())
                .unwrap();
            let mut buf = [0u8; 2048];
            let len = message(sent, &mut buf);
            let fds = [file.as_fd()];
            tx.send(&buf[..len], &fds[..fds_for(sent)])
        });
        // A failed check must not leave the sender blocked in sendmsg.
        let _unblock = ShutdownOnPanic(rx.as_fd());
        let tid = tid_rx.recv().unwrap();
        // The send really blocks: the thread sits in sendmsg.
        let blocked = wait_until_blocked_in(tid, &[libc::SYS_sendmsg], &|| sender.is_finished());
        assert!(
            blocked,
            "send did not block on a full socket: {:?}",
            sender.join()
        );
        // Reading frees space; the blocked send completes on its own, and
        // its message comes after all the others.
        for seq in 0..=sent {
            expect_message(&rx, seq, &file);
        }
        assert_eq!(sender.join().unwrap(), Ok(()));
    });
    let mut data = [0u8; 8];
    let mut fds = Fds::<1>::new();
    assert_eq!(rx.try_recv(&mut data, &mut fds), Err(Error::WouldBlock));
    assert_eq!(open_fds(), baseline);
}

#[test]
fn blocked_send_returns_disconnected_when_the_reader_goes_away() {
    let _guard = serial();
    let _watchdog = Watchdog::for_test();
    let (tx, rx) = Channel::<1>::pair().unwrap();
    let file = memfd(b"frame");
    fill(&tx, &file);
    let (tid_tx, tid_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            tid_tx
                .send(rustix::thread::gettid().as_raw_nonzero().get())
                .unwrap();
            tx.send(b"never read", &[file.as_fd()])
        });
        let tid = tid_rx.recv().unwrap();
        let blocked = wait_until_blocked_in(tid, &[libc::SYS_sendmsg], &|| sender.is_finished());
        assert!(blocked, "send did not block: {:?}", sender.join());
        // The reader closes without reading: the blocked sender wakes up
        // with Disconnected instead of hanging (or raising SIGPIPE; the
        // process-level check is in fault_process).
        drop(rx);
        assert_eq!(sender.join().unwrap(), Err(Error::Disconnected));
    });
    assert_eq!(tx.send(b"again", &[]), Err(Error::Disconnected));
}
